"""The advisory network and its weights files. Imports torch: only the ml worker and the ml
management commands may import this module (tests/ml/test_boundary.py proves the others don't)."""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import tempfile
from pathlib import Path

import torch
from torch import nn


class WeightsChecksumMismatch(Exception):
    """A weights file whose sha256 is not the one recorded when it was trained: never loaded."""


class AdvisorNet(nn.Module):
    """A small MLP: standardised features -> (logit of p_up, log of the expected volatility)."""

    def __init__(self, n_features: int, hidden: int):
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.head = nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.head(self.trunk(x))
        return out[:, 0], out[:, 1]


_threads_set = False


def configure_threads(threads: int) -> None:
    """Keep torch to a few threads: the machine's cores belong to the rest of Custos too."""
    global _threads_set
    torch.set_num_threads(max(1, threads))
    if not _threads_set:
        try:
            torch.set_num_interop_threads(max(1, threads))
        except RuntimeError:
            pass  # already fixed once parallel work ran in this process; intra-op threads still apply
        _threads_set = True


def choose_device(preference: str = "auto") -> torch.device:
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(preference)


def weights_save(net: AdvisorNet, *, directory: Path, name: str) -> tuple[str, str]:
    """Write the state dict atomically; returns (file name, sha256 of exactly the bytes written)."""
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, buffer)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    directory.mkdir(parents=True, exist_ok=True)
    filename = f"{name}-{digest[:16]}.pt"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, directory / filename)
    return filename, digest


def weights_load(*, path: Path, sha256: str, n_features: int, hidden: int) -> AdvisorNet:
    """Load weights only if the file's sha256 matches the recorded one; the bytes hashed are the
    bytes loaded (no second read), and torch.load runs with weights_only."""
    data = Path(path).read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if not hmac.compare_digest(actual, sha256):
        raise WeightsChecksumMismatch(f"{path}: sha256 {actual} does not match the recorded {sha256}")
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    net = AdvisorNet(n_features, hidden)
    net.load_state_dict(state)
    net.eval()
    return net
