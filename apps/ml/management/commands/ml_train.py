"""Train the advisory models (one per horizon) on stored prices or a synthetic series."""

from __future__ import annotations

import json

from django.conf import settings
from django.core.management.base import BaseCommand

from apps.ml.commandline import add_series_arguments, progress_bar, series_from_options


class Command(BaseCommand):
    help = "Train advisory models (fixed seeds, CPU or CUDA chosen automatically) and record a ModelVersion."

    def add_arguments(self, parser):
        add_series_arguments(parser)
        parser.add_argument(
            "--horizon", type=int, action="append", help=f"bars ahead (default {settings.ML_HORIZONS})"
        )
        parser.add_argument("--epochs", type=int, default=settings.ML_TRAIN_EPOCHS)
        parser.add_argument("--hidden", type=int, default=32)
        parser.add_argument("--no-activate", action="store_true", help="record the model without using it")

    def handle(self, *args, **options):
        # torch is imported here, only when the command runs (manage.py help must not load it).
        from apps.ml.training import model_train

        series = series_from_options(options)
        for horizon in options["horizon"] or settings.ML_HORIZONS:
            self.stdout.write(f"training horizon {horizon} on {', '.join(series)}")
            bar = progress_bar(lambda text: (self.stdout.write(text, ending=""), self.stdout.flush()))
            version = model_train(
                series=series,
                horizon=horizon,
                epochs=options["epochs"],
                seed=options["seed"],
                hidden=options["hidden"],
                activate=not options["no_activate"],
                progress=bar,
            )
            m = version.metrics
            self.stdout.write("")
            self.stdout.write(
                f"{version} on {version.device}: held-out accuracy {m['model']['accuracy']:.3f} "
                f"(flat {m['flat']['accuracy']:.3f}, last sign {m['last_sign']['accuracy']:.3f}), "
                f"Brier {m['model']['brier']:.4f} (flat {m['flat']['brier']:.4f}, last sign "
                f"{m['last_sign']['brier']:.4f}), skill {version.brier_skill:+.4f}; "
                f"weights {version.weights_file} sha256 {version.weights_sha256}"
            )
            self.stdout.write(
                json.dumps(
                    {
                        "model_version": version.pk,
                        "horizon": horizon,
                        "metrics": {
                            k: {kk: vv for kk, vv in v.items() if kk != "calibration"}
                            if isinstance(v, dict)
                            else v
                            for k, v in m.items()
                        },
                    }
                )
            )
