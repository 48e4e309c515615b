"""What ml_train and ml_backtest share: choosing the price series and drawing a progress bar."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core.management.base import CommandError
from django.utils import timezone

from apps.ml import data, synthetic
from apps.ml.data import PricePoint


def add_series_arguments(parser) -> None:
    parser.add_argument(
        "--synthetic", choices=sorted(synthetic.GENERATORS), help="train on a generated series instead"
    )
    parser.add_argument("--bars", type=int, default=4000, help="length of the synthetic series")
    parser.add_argument("--seed", type=int, default=None, help=f"default ML_SEED ({settings.ML_SEED})")
    parser.add_argument("--token-id", type=int, help="one stored pair: the priced token (chain.Token id)")
    parser.add_argument("--quote-token-id", type=int, help="its quote token (default: USD)")
    parser.add_argument("--days", type=int, default=settings.ML_TRAIN_DAYS, help="stored history to use")


def series_from_options(options) -> dict[str, list[PricePoint]]:
    seed = settings.ML_SEED if options["seed"] is None else options["seed"]
    bar = settings.ML_BAR_SECONDS
    if options["synthetic"]:
        points = synthetic.GENERATORS[options["synthetic"]](n=options["bars"], seed=seed, bar_seconds=bar)
        return {f"synthetic:{options['synthetic']}:seed={seed}:bars={options['bars']}": points}
    end = timezone.now()
    start = end - timedelta(days=options["days"])
    if options["token_id"]:
        pairs = [(options["token_id"], options["quote_token_id"])]
    else:
        pairs = data.pairs_with_prices(since=start)
    series = {}
    for token_id, quote_token_id in pairs:
        points = data.price_series(
            token_id=token_id, quote_token_id=quote_token_id, start=start, end=end, bar_seconds=bar
        )
        if points:
            series[f"token:{token_id}/{quote_token_id or 'USD'}"] = points
    if not series:
        raise CommandError(
            f"no stored prices in the last {options['days']} days; "
            "run the market worker first, or use --synthetic signal for a demo"
        )
    return series


def progress_bar(write, *, width: int = 30):
    def show(step: int, total: int, train_loss: float, val_loss: float) -> None:
        done = int(width * step / total)
        end = "\n" if step == total else ""
        bar = f"[{'#' * done}{'.' * (width - done)}]"
        write(f"\r  {bar} epoch {step}/{total} loss {train_loss:.4f} val {val_loss:.4f}{end}")

    return show
