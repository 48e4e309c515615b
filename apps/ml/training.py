"""Training: price series -> features and labels -> a small MLP, scored on held-out data against the
naive baselines, saved with the sha256 of its weights. Imports torch (ml worker and commands only)."""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from django.conf import settings
from torch import nn

from apps.ml import evaluation, services
from apps.ml.data import PricePoint
from apps.ml.features import Bars, FeatureSpec, feature_matrix, labels, last_returns, resample
from apps.ml.model import AdvisorNet, choose_device, configure_threads, weights_save
from apps.ml.models import ModelVersion

VOL_FLOOR = 1e-6
TRAIN_SHARE = 0.70
VALIDATION_SHARE = 0.15
Progress = Callable[[int, int, float, float], None]


@dataclass
class Rows:
    """Feature rows with their labels, in time order."""

    x: np.ndarray
    up: np.ndarray
    vol: np.ndarray
    last_r: np.ndarray

    def __len__(self) -> int:
        return len(self.up)

    def take(self, start: int, stop: int) -> Rows:
        return Rows(self.x[start:stop], self.up[start:stop], self.vol[start:stop], self.last_r[start:stop])

    @staticmethod
    def concat(parts: Sequence[Rows], n_features: int) -> Rows:
        if not parts:
            return Rows(np.empty((0, n_features)), np.empty(0), np.empty(0), np.empty(0))
        return Rows(
            np.concatenate([p.x for p in parts]),
            np.concatenate([p.up for p in parts]),
            np.concatenate([p.vol for p in parts]),
            np.concatenate([p.last_r for p in parts]),
        )


def rows_from_bars(
    bars: Bars, spec: FeatureSpec, *, horizon: int, with_volume: bool
) -> tuple[list[str], Rows]:
    names, x = feature_matrix(bars, spec, with_volume=with_volume)
    up, vol = labels(bars, spec, horizon=horizon)
    known = ~np.isnan(up)
    return names, Rows(x[known], up[known], vol[known], last_returns(bars, spec)[known])


def split_chronologically(rows: Rows, *, horizon: int) -> tuple[Rows, Rows, Rows]:
    """70 / 15 / 15 in time order; the last `horizon` rows before each cut are dropped, so no
    training label overlaps a later split's labels."""
    n = len(rows)
    a, b = int(n * TRAIN_SHARE), int(n * (TRAIN_SHARE + VALIDATION_SHARE))
    return rows.take(0, max(0, a - horizon)), rows.take(a, max(a, b - horizon)), rows.take(b, n)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - libraries may draw from the global generator
    torch.manual_seed(seed)


def _tensor(a: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(a, dtype=torch.float32, device=device)


def fit(
    train: Rows,
    validation: Rows,
    *,
    mean: np.ndarray,
    std: np.ndarray,
    hidden: int,
    epochs: int,
    seed: int,
    device: torch.device,
    progress: Progress | None = None,
    lr: float = 0.01,
    patience: int = 40,
) -> AdvisorNet:
    """Full-batch Adam on BCE(direction) + MSE(log volatility); keeps the weights of the epoch with the
    lowest validation loss and stops after `patience` epochs without improvement."""
    seed_everything(seed)
    net = AdvisorNet(train.x.shape[1], hidden).to(device)
    optimiser = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-4)
    bce, mse = nn.BCEWithLogitsLoss(), nn.MSELoss()

    def tensors(rows: Rows):
        return (
            _tensor((rows.x - mean) / std, device),
            _tensor(rows.up, device),
            _tensor(np.log(rows.vol + VOL_FLOOR), device),
        )

    xt, upt, volt = tensors(train)
    xv, upv, volv = tensors(validation)

    def loss_of(x, up, logvol):
        logit, pred_logvol = net(x)
        return bce(logit, up) + 0.5 * mse(pred_logvol, logvol)

    best, best_state, since_best = float("inf"), copy.deepcopy(net.state_dict()), 0
    for epoch in range(1, epochs + 1):
        net.train()
        optimiser.zero_grad()
        loss = loss_of(xt, upt, volt)
        loss.backward()
        optimiser.step()
        train_loss = float(loss.detach())
        net.eval()
        with torch.no_grad():
            val_loss = float(loss_of(xv, upv, volv)) if len(validation) else train_loss
        if val_loss < best - 1e-6:
            best, best_state, since_best = val_loss, copy.deepcopy(net.state_dict()), 0
        else:
            since_best += 1
        if progress is not None:
            progress(epoch, epochs, train_loss, val_loss)
        if since_best >= patience:
            break
    net.load_state_dict(best_state)
    net.eval()
    return net.cpu()


def predict(net: AdvisorNet, x_standardised: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(p_up, expected volatility) per row."""
    with torch.no_grad():
        logit, logvol = net(_tensor(x_standardised, torch.device("cpu")))
        return torch.sigmoid(logit).double().numpy(), torch.exp(logvol).double().numpy()


def standardisation(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    return mean, np.where(std > 0, std, 1.0)


@dataclass
class Trained:
    net: AdvisorNet
    names: list[str]
    mean: np.ndarray
    std: np.ndarray
    splits: tuple[Rows, Rows, Rows]
    metrics: dict
    device: str


def train_on_series(
    series: Sequence[Sequence[PricePoint]],
    *,
    horizon: int,
    bar_seconds: int,
    spec: FeatureSpec,
    epochs: int,
    seed: int,
    hidden: int = 32,
    device_preference: str = "auto",
    progress: Progress | None = None,
) -> Trained:
    """Train on the pooled splits of every series (features are scale-free log returns, so pairs
    can share a model) and score on the pooled test split."""
    configure_threads(settings.ML_TORCH_THREADS)
    device = choose_device(device_preference)
    bars = [resample(points, bar_seconds=bar_seconds) for points in series]
    with_volume = bool(bars) and all(b.volumes is not None for b in bars)
    names = spec.names(with_volume=with_volume)
    parts = [
        split_chronologically(
            rows_from_bars(b, spec, horizon=horizon, with_volume=with_volume)[1], horizon=horizon
        )
        for b in bars
    ]
    train, validation, test = (Rows.concat([p[i] for p in parts], len(names)) for i in range(3))
    if len(train) < 50 or len(test) < 10:
        raise ValueError(f"not enough history to train: {len(train)} training and {len(test)} test rows")
    mean, std = standardisation(train.x)
    net = fit(
        train,
        validation,
        mean=mean,
        std=std,
        hidden=hidden,
        epochs=epochs,
        seed=seed,
        device=device,
        progress=progress,
    )
    p_test, vol_test = predict(net, (test.x - mean) / std)
    metrics = evaluation.compare(
        p_test, test.up, test.last_r, evaluation.last_sign_hit_rate(train.last_r, train.up)
    )
    metrics["volatility"] = {
        "mae": float(np.mean(np.abs(vol_test - test.vol))),
        "mae_of_mean": float(np.mean(np.abs(np.mean(train.vol) - test.vol))),
    }
    return Trained(net, names, mean, std, (train, validation, test), metrics, str(device))


def model_train(
    *,
    series: Mapping[str, Sequence[PricePoint]],
    horizon: int,
    bar_seconds: int | None = None,
    spec: FeatureSpec | None = None,
    epochs: int | None = None,
    seed: int | None = None,
    hidden: int = 32,
    name: str = "mlp",
    activate: bool = True,
    device_preference: str | None = None,
    progress: Progress | None = None,
    model_dir: Path | None = None,
) -> ModelVersion:
    """Train, save the weights and record the ModelVersion (with the weights' sha256)."""
    bar_seconds = bar_seconds or settings.ML_BAR_SECONDS
    spec = spec or FeatureSpec()
    seed = settings.ML_SEED if seed is None else seed
    trained = train_on_series(
        list(series.values()),
        horizon=horizon,
        bar_seconds=bar_seconds,
        spec=spec,
        epochs=epochs or settings.ML_TRAIN_EPOCHS,
        seed=seed,
        hidden=hidden,
        device_preference=device_preference or settings.ML_DEVICE,
        progress=progress,
    )
    version_name = f"{name}-h{horizon}"
    filename, digest = weights_save(
        trained.net, directory=Path(model_dir or settings.ML_MODEL_DIR), name=version_name
    )
    starts = [points[0].at for points in series.values() if points]
    ends = [points[-1].at for points in series.values() if points]
    train, validation, test = trained.splits
    return services.model_version_create(
        activate=activate,
        name=version_name,
        architecture="mlp",
        horizon_bars=horizon,
        bar_seconds=bar_seconds,
        features=trained.names,
        feature_spec=spec.as_json(),
        feature_stats={"mean": trained.mean.tolist(), "std": trained.std.tolist()},
        hidden_units=hidden,
        trained_on=sorted(series),
        train_start=min(starts),
        train_end=max(ends),
        samples={"train": len(train), "validation": len(validation), "test": len(test)},
        metrics=trained.metrics,
        seed=seed,
        device=trained.device,
        weights_file=filename,
        weights_sha256=digest,
    )
