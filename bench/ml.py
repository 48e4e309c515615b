"""ML advisory inference latency on the CPU, and the memory of an ml worker process.

Trains a model on a synthetic series (fixed seed, seconds), then times, per pair, the whole inference
path from price points to a forecast (resample, features, standardise, forward pass), for one pair at
a time and for batches of 100 pairs (one forward pass per batch). The baseline measured in the same
run is the naive last-return-sign forecast over the same points. Memory: the RSS of a fresh process
that loads what the ml worker loads (Django, the Celery app and every task module, torch, the model)
and runs one inference, against the same process without torch (what every other worker carries).
The database is not involved (reads are the market's cost, not the model's). JSON is the last line.
Target: p50 under 5 ms per pair.

Run: .venv/bin/python bench/ml.py [--repeats 300] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import say  # noqa: E402 - after the path setup above

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings.base")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


RSS_PROBE = """
import json, os, sys
os.environ["DJANGO_SETTINGS_MODULE"] = "project.settings.base"
import django
django.setup()
from celery_app import app
app.loader.import_default_modules()
if sys.argv[1] == "ml":
    import numpy as np
    import torch
    torch.set_num_threads(1)
    from apps.ml.model import weights_load
    net = weights_load(path=sys.argv[2], sha256=sys.argv[3], n_features=int(sys.argv[4]), hidden=32)
    with torch.inference_mode():
        net(torch.zeros((100, int(sys.argv[4]))))
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
print(json.dumps({"rss_kib": int(status["VmRSS"].split()[0]), "peak_kib": int(status["VmHWM"].split()[0]),
                  "torch": "torch" in sys.modules}))
"""


def rss_of(kind: str, *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", RSS_PROBE, kind, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import django

    django.setup()
    import numpy as np
    import torch
    from django.conf import settings

    from apps.ml import evaluation, inference, synthetic
    from apps.ml.features import FeatureSpec, feature_matrix, resample
    from apps.ml.model import configure_threads, weights_save
    from apps.ml.training import train_on_series

    settings.ML_TORCH_THREADS = args.threads
    settings.ML_DEVICE = "cpu"
    configure_threads(args.threads)
    spec = FeatureSpec()
    t0 = time.perf_counter()
    trained = train_on_series(
        [synthetic.known_signal_series(n=3000, seed=7)],
        horizon=1,
        bar_seconds=3600,
        spec=spec,
        epochs=300,
        seed=7,
    )
    say(
        f"trained in {time.perf_counter() - t0:.1f}s,"
        f" held-out accuracy {trained.metrics['model']['accuracy']:.3f}"
    )
    mean, std = trained.mean, trained.std
    net = trained.net

    # What inference reads per pair: the lookback window the worker asks the market for.
    window = spec.warmup * 3 + 2
    pairs = [synthetic.known_signal_series(n=window, seed=1000 + i) for i in range(100)]

    def advise_one(points) -> float:
        bars = resample(points, bar_seconds=3600)
        _, x = feature_matrix(bars, spec, with_volume=False)
        z = (x[-1:] - mean) / std
        p, _ = inference.predict_rows(net, z)
        return float(p[0])

    def advise_batch(batch) -> np.ndarray:
        rows = []
        for points in batch:
            _, x = feature_matrix(resample(points, bar_seconds=3600), spec, with_volume=False)
            rows.append(x[-1])
        p, _ = inference.predict_rows(net, (np.asarray(rows) - mean) / std)
        return p

    def baseline_one(points) -> float:
        bars = resample(points, bar_seconds=3600)
        last_r = np.log(bars.prices[-1] / bars.prices[-2])
        return float(evaluation.last_sign_baseline(np.asarray([last_r]), 0.55)[0])

    def forward_only(z) -> None:
        inference.predict_rows(net, z)

    for _ in range(20):  # warm-up
        advise_one(pairs[0])
        baseline_one(pairs[0])
    per_pair, baseline, forward, per_batch = [], [], [], []
    z_one = (feature_matrix(resample(pairs[0], bar_seconds=3600), spec)[1][-1:] - mean) / std
    for i in range(args.repeats):
        points = pairs[i % len(pairs)]
        t = time.perf_counter()
        advise_one(points)
        per_pair.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        baseline_one(points)
        baseline.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        forward_only(z_one)
        forward.append((time.perf_counter() - t) * 1000)
    for _ in range(max(10, args.repeats // 20)):
        t = time.perf_counter()
        advise_batch(pairs)
        per_batch.append((time.perf_counter() - t) * 1000)

    result = {
        "threads": args.threads,
        "torch": torch.__version__,
        "per_pair_p50_ms": round(statistics.median(per_pair), 3),
        "per_pair_p99_ms": round(percentile(per_pair, 0.99), 3),
        "forward_only_p50_ms": round(statistics.median(forward), 3),
        "baseline_last_sign_p50_ms": round(statistics.median(baseline), 3),
        "batch_100_p50_ms": round(statistics.median(per_batch), 3),
        "batch_100_per_pair_p50_ms": round(statistics.median(per_batch) / 100, 3),
    }
    result["per_pair_vs_baseline"] = round(result["per_pair_p50_ms"] / result["baseline_last_sign_p50_ms"], 1)
    result["target_met"] = result["per_pair_p50_ms"] < 5.0

    with tempfile.TemporaryDirectory() as tmp:
        filename, digest = weights_save(net, directory=Path(tmp), name="bench")
        ml = rss_of("ml", str(Path(tmp) / filename), digest, str(len(trained.names)))
    other = rss_of("other")
    assert ml["torch"]
    assert not other["torch"]
    result.update(
        {
            "ml_worker_rss_mib": round(ml["rss_kib"] / 1024, 1),
            "ml_worker_peak_rss_mib": round(ml["peak_kib"] / 1024, 1),
            "worker_without_torch_rss_mib": round(other["rss_kib"] / 1024, 1),
        }
    )
    result["ml_vs_other_worker_rss"] = round(ml["rss_kib"] / other["rss_kib"], 2)

    say(
        f"per pair p50 {result['per_pair_p50_ms']} ms (p99 {result['per_pair_p99_ms']} ms;"
        " forward pass alone "
        f"{result['forward_only_p50_ms']} ms; last-sign baseline {result['baseline_last_sign_p50_ms']} ms, "
        f"x{result['per_pair_vs_baseline']})"
    )
    say(
        f"batch of 100 pairs p50 {result['batch_100_p50_ms']} ms"
        f" ({result['batch_100_per_pair_p50_ms']} ms per pair)"
    )
    say(
        f"ml worker RSS {result['ml_worker_rss_mib']} MiB (peak {result['ml_worker_peak_rss_mib']}) vs "
        f"{result['worker_without_torch_rss_mib']} MiB without torch (x{result['ml_vs_other_worker_rss']})"
    )
    say(f"target p50 < 5 ms per pair: {'met' if result['target_met'] else 'NOT met'}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
