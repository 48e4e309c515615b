"""Walk-forward backtest of the advisory model against the naive baselines, with a PNG chart."""

from __future__ import annotations

import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils import timezone

from apps.ml.commandline import add_series_arguments, series_from_options


class Command(BaseCommand):
    help = "Walk-forward evaluation (accuracy, Brier score, calibration) vs always-flat and last-return sign."

    def add_arguments(self, parser):
        add_series_arguments(parser)
        parser.add_argument("--horizon", type=int, default=1)
        parser.add_argument("--folds", type=int, default=4)
        parser.add_argument("--epochs", type=int, default=settings.ML_TRAIN_EPOCHS)
        parser.add_argument("--out", help="PNG path (default: ML_BACKTEST_DIR/backtest-<time>.png)")

    def handle(self, *args, **options):
        from apps.ml.backtest import chart, walk_forward

        seed = settings.ML_SEED if options["seed"] is None else options["seed"]
        out = {}
        for label, points in series_from_options(options).items():
            self.stdout.write(
                f"walk-forward on {label}: {options['folds']} folds, horizon {options['horizon']}"
            )

            def progress(k, total, fold):
                self.stdout.write(
                    f"  fold {k}/{total}: model acc {fold['model']['accuracy']:.3f}"
                    f" brier {fold['model']['brier']:.4f}"
                    f" | last sign acc {fold['last_sign']['accuracy']:.3f}"
                    f" brier {fold['last_sign']['brier']:.4f}"
                    f" | flat brier {fold['flat']['brier']:.4f}"
                )

            result = walk_forward(
                points,
                horizon=options["horizon"],
                bar_seconds=settings.ML_BAR_SECONDS,
                folds=options["folds"],
                epochs=options["epochs"],
                seed=seed,
                progress=progress,
            )
            stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
            safe = label.replace(":", "_").replace("/", "_").replace("=", "")
            path = Path(options["out"] or Path(settings.ML_BACKTEST_DIR) / f"backtest-{safe}-{stamp}.png")
            if options["out"] and len(out):
                path = path.with_stem(f"{path.stem}-{len(out)}")
            chart(result, path, title=label)
            s = result.summary
            for key in ("model", "last_sign", "flat"):
                self.stdout.write(
                    f"  {key:<9} accuracy {s[key]['accuracy']:.3f}  Brier {s[key]['brier']:.4f}  "
                    f"skill {s[key]['brier_skill']:+.4f}  calibration error {s[key]['calibration_error']:.3f}"
                )
            self.stdout.write(f"  chart: {path}")
            out[label] = {"chart": str(path), **s}
        self.stdout.write(json.dumps(out))
