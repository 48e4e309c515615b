"""`make bench`: run every benchmark in bench/, then write bench/report.md and PNG charts.

Each benchmark runs as its own process (its output streams through, so long runs show progress)
and measures its own baseline in the same run; its last output line is a JSON object, from which
this script takes the figures below. The report has one table per benchmark (figure, value,
baseline, ratio, target, met) and is printed at the end. A benchmark that fails to run is reported
as such and makes the command fail; a target that is not met is reported, not hidden.

Run: .venv/bin/python bench/run_all.py [--only signing,pipeline] [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
REPORT = BENCH / "report.md"
CHARTS = BENCH / "charts"


@dataclass
class Row:
    figure: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_label: str = ""
    ratio: float | None = None
    target: str = ""
    met: bool | None = None  # None: no target (reported for information)


# Each benchmark: its command line (full and --quick) and how its JSON becomes rows.
def signing_rows(r: dict) -> list[Row]:
    p, f, k, v, c = r["pkcs11"], r["full_path"], r["keystore"], r["vault_fake_api"], r["child_recycling"]
    return [
        Row(
            "pkcs11 backend signatures",
            p["backend_per_s"],
            "/s",
            p["raw_pkcs11_per_s"],
            "raw python-pkcs11",
            p["ratio"],
            ">= 0.8x",
            p["ratio"] >= 0.8,
        ),
        Row(
            f"full path, batches of {f['batch_size']}",
            f["batched_per_s"],
            "/s",
            f["raw_pkcs11_per_s"],
            "raw python-pkcs11",
            f["ratio"],
            ">= 0.3x",
            f["ratio"] >= 0.3,
        ),
        Row(
            "full path, one request per transaction",
            f["one_request_per_s"],
            "/s",
            f["raw_pkcs11_per_s"],
            "raw python-pkcs11",
            f["one_request_ratio"],
        ),
        Row(
            "keystore backend, scrypt n=2^18",
            k["scrypt_n_262144"]["backend_per_s"],
            "/s",
            k["raw_coincurve_per_s"],
            "raw coincurve",
            k["scrypt_n_262144"]["ratio"],
        ),
        Row(
            "vault backend (local fake API)",
            v["backend_per_s"],
            "/s",
            v["raw_coincurve_per_s"],
            "raw coincurve",
            v["ratio"],
        ),
        Row(
            "fresh fork child per signature",
            c["fork"]["fresh_child_ms_per_signature"],
            "ms",
            c["in_process_ms"],
            "in-process",
            round(c["fork"]["fresh_child_ms_per_signature"] / c["in_process_ms"], 2),
        ),
    ]


def pipeline_rows(r: dict) -> list[Row]:
    """bench/pipeline.py, normal or --slow (its "mode"): one wallet and several, each against the
    plain loop measured just before it; the stalls and the burst p99 of each."""
    slow, one, many = r.get("mode") == "slow", r["one_wallet"], r["wallets"]
    rows = []
    if slow:
        rows.append(
            Row(
                f"plain web3.py loop under the load ({r['cpu_load']})",
                r["web3_loop_swaps_per_s"],
                "swaps/s",
                r["loop_before_load_swaps_per_s"],
                "the same loop without it",
                r["loop_under_load_ratio"],
            )
        )
    rows += [
        Row(
            f"pipeline, one wallet, {r['trades']} swaps",
            r["pipeline_swaps_per_s"],
            "swaps/s",
            r["web3_loop_swaps_per_s"],
            "plain web3.py loop",
            r["ratio_vs_loop"],
            f">= {r['target_ratio_vs_loop']}x",
            r["ratio_vs_loop"] >= r["target_ratio_vs_loop"],
        ),
        Row(
            f"pipeline, {many['wallets']} wallets x {many['trades'] // many['wallets']} swaps",
            many["swaps_per_s"],
            "swaps/s",
            many["web3_loop_swaps_per_s"],
            f"plain web3.py loop, {many['wallets']} keys in turn",
            many["ratio_vs_loop"],
            f">= {r['target_wallets_ratio_vs_loop']}x",
            many["ratio_vs_loop"] >= r["target_wallets_ratio_vs_loop"],
        ),
        Row(
            "pipeline vs the node's ceiling, one wallet",
            r["pipeline_swaps_per_s"],
            "swaps/s",
            r["node_ceiling_swaps_per_s"],
            "pre-signed sends",
            r["ratio_vs_ceiling"],
        ),
    ]
    for label, burst in (("one wallet", one), (f"{many['wallets']} wallets", many)):
        stalls, seconds_ms = burst["stalls"], burst["seconds"] * 1000
        rows += [
            Row(
                f"trades with a step gap > {stalls['gap_threshold_s']:g} s, {label}",
                stalls["trades_over"],
                "trades",
                target="0",
                met=stalls["trades_over"] == 0,
            ),
            Row(
                f"  worst step gap, {label}: {' -> '.join(stalls['worst_steps'])}", stalls["worst_gap_s"], "s"
            ),
            # n / throughput: every request waits at most that long; a stalled one can wait longer.
            Row(
                f"request -> broadcast p99, burst, {label}",
                burst["p99_request_to_broadcast_ms"],
                "ms",
                round(seconds_ms, 1),
                "the burst's duration",
                round(burst["p99_request_to_broadcast_ms"] / seconds_ms, 3),
                f"<= {r['target_p99_vs_duration']}x",
                burst["p99_request_to_broadcast_ms"] <= r["target_p99_vs_duration"] * seconds_ms,
            ),
        ]
    rows += [
        Row(
            f"request -> broadcast p50, paced at {r['paced_rate_per_s']}/s",
            r["paced_p50_request_to_broadcast_ms"],
            "ms",
            target="" if slow else "< 300 ms",
            met=None if slow else r["paced_p50_request_to_broadcast_ms"] < 300,
        ),
        Row("request -> broadcast p99, paced", r["paced_p99_request_to_broadcast_ms"], "ms"),
        # Queued behind the burst's first half: a floor of (n/2)/throughput for any pipeline, and
        # (n/2)/ceiling even for pre-signed sends (bench/pipeline.py's docstring).
        Row(f"request -> broadcast p50, burst of {r['trades']}", r["p50_request_to_broadcast_ms"], "ms"),
        Row(
            "burst p50 floor at the node's ceiling",
            r["burst_p50_floor_ms_at_node_ceiling"],
            "ms",
        ),
    ]
    return rows


def watcher_rows(r: dict) -> list[Row]:
    rows = []
    for size, s in sorted(r["sizes"].items(), key=lambda kv: int(kv[0])):
        big = int(size) >= 1000
        rows.append(
            Row(
                f"tick p50, {size} trades",
                s["tick_ms_p50"],
                "ms",
                s["baseline_ms"],
                "one call per trade",
                round(s["tick_ms_p50"] / s["baseline_ms"], 3) if s["baseline_ms"] else None,
                "< 250 ms" if big else "",
                (s["tick_ms_p50"] < 250) if big else None,
            )
        )
        rows.append(
            Row(
                f"RPC requests per tick, {size} trades",
                s["rpc_requests_per_tick_max"],
                "",
                s["baseline_rpc_requests"],
                "one call per trade",
                round(s["rpc_requests_per_tick_max"] / s["baseline_rpc_requests"], 3)
                if s["baseline_rpc_requests"]
                else None,
                "<= 20" if big else "",
                (s["rpc_requests_per_tick_max"] <= 20) if big else None,
            )
        )
    return rows


def strategies_rows(r: dict) -> list[Row]:
    """bench/strategies.py: each size (ACTIVE strategies, `due` of them due) against the smallest, all
    due; the target (within the ratio) on the largest."""
    base = r["sizes"][str(r["baseline_size"])]
    label = f"{r['baseline_size']} active, all due"
    target = f"<= {r['target_ratio']:g}x"
    rows = []
    for size, s in sorted(r["sizes"].items(), key=lambda kv: int(kv[0])):
        if int(size) == r["baseline_size"]:
            continue
        top = int(size) == r["largest_size"]
        time_ratio = round(s["tick_ms_p50"] / base["tick_ms_p50"], 2)
        statements_ratio = round(s["statements_p50"] / base["statements_p50"], 2)
        rows += [
            Row(
                f"tick p50, {int(size):,} active / {s['due']} due",
                s["tick_ms_p50"],
                "ms",
                base["tick_ms_p50"],
                label,
                time_ratio,
                target if top else "",
                time_ratio <= r["target_ratio"] if top else None,
            ),
            Row(
                f"SQL statements per tick, {int(size):,} active / {s['due']} due",
                s["statements_p50"],
                "",
                base["statements_p50"],
                label,
                statements_ratio,
                target if top else "",
                statements_ratio <= r["target_ratio"] if top else None,
            ),
        ]
    return rows


def api_rows(r: dict) -> list[Row]:
    return [
        Row(
            "GET /api/v1/trades/{id} p99",
            r["trade_detail"]["p99_ms"],
            "ms",
            r["trivial"]["p99_ms"],
            "trivial GET /api/v1/ping",
            r["detail_p99_ratio"],
            "<= 3.0x",
            r["detail_p99_ratio"] <= 3.0,
        ),
        Row(
            "POST /api/v1/trades p99",
            r["trade_create"]["p99_ms"],
            "ms",
            r["trivial_during_create"]["p99_ms"],
            "trivial GET /api/v1/ping",
            r["create_p99_ratio"],
        ),
    ]


def market_rows(r: dict) -> list[Row]:
    return [
        Row(
            "reference price check",
            r["reference_check_per_s"],
            "/s",
            r["pool_only_per_s"],
            "pool reserves only",
            r["ratio"],
        )
    ]


def ml_rows(r: dict) -> list[Row]:
    return [
        Row(
            "inference per pair p50",
            r["per_pair_p50_ms"],
            "ms",
            r["baseline_last_sign_p50_ms"],
            "last-return sign",
            round(r["per_pair_p50_ms"] / r["baseline_last_sign_p50_ms"], 1)
            if r["baseline_last_sign_p50_ms"]
            else None,
            "< 5 ms",
            r["per_pair_p50_ms"] < 5,
        ),
        Row(
            "ml worker RSS",
            r["ml_worker_rss_mib"],
            "MiB",
            r["worker_without_torch_rss_mib"],
            "worker without torch",
            round(r["ml_worker_rss_mib"] / r["worker_without_torch_rss_mib"], 2),
        ),
    ]


def footprint_rows(r: dict) -> list[Row]:
    rows = [
        Row(
            f"core peak PSS, {r['trades']} swaps",
            r["peak_total_mib"],
            "MiB",
            r["at_rest_total_mib"],
            "the same core at rest",
            r["ratio_to_rest"],
            f"< {r['budget_mib']} MiB",
            r["meets_target"],
        )
    ]
    rows += [Row(f"  {name}", mib, "MiB") for name, mib in r["peak_pss_mib"].items()]
    return rows


def chaos_rows(r: dict) -> list[Row]:
    rows = [
        Row(f"{r['trades']} trades over {r['wallets']} wallets, wall time", r["seconds"], "s"),
        Row("settled", r["states"].get("SETTLED", 0), "trades"),
        Row("trades sent back by a reorg", r["trades_sent_back_by_a_reorg"], "trades"),
    ]
    for figure, key in (
        ("lost", "lost"),
        ("not in a terminal state", "not_terminal"),
        ("nonces with two different payloads", "nonces_with_two_payloads"),
        ("settled on an orphaned block", "settled_on_orphaned_block"),
    ):
        rows.append(Row(figure, r[key], "", target="0", met=r[key] == 0))
    rows.append(
        Row(
            "audit chain breaks",
            0 if r["audit_broken_link"] is None else 1,
            "",
            target="0",
            met=r["audit_broken_link"] is None,
        )
    )
    rows += [Row(f"  chaos: {kind}", count, "times") for kind, count in sorted(r["chaos"].items())]
    return rows


BENCHMARKS = {
    "signing": (["bench/signing.py"], ["bench/signing.py", "--seconds", "0.5"], signing_rows),
    "pipeline": (["bench/pipeline.py"], ["bench/pipeline.py", "--trades", "30"], pipeline_rows),
    # The same on a slow machine (a CPU load takes most of both cores; bench/pipeline.py --slow).
    "pipeline-slow": (
        ["bench/pipeline.py", "--slow"],
        ["bench/pipeline.py", "--slow", "--trades", "30"],
        pipeline_rows,
    ),
    "watcher": (
        ["bench/watcher.py"],
        ["bench/watcher.py", "--ticks", "5", "--sizes", "10,1000"],
        watcher_rows,
    ),
    "strategies": (["bench/strategies.py"], ["bench/strategies.py", "--quick"], strategies_rows),
    "api": (["bench/api.py"], ["bench/api.py", "--seconds", "4"], api_rows),
    "market": (["bench/market.py"], ["bench/market.py", "--seconds", "0.5"], market_rows),
    "ml": (["bench/ml.py"], ["bench/ml.py", "--repeats", "100"], ml_rows),
    "footprint": (["bench/footprint.py"], ["bench/footprint.py", "--trades", "40"], footprint_rows),
    "chaos": (["bench/chaos.py"], ["bench/chaos.py", "--trades", "30"], chaos_rows),
}


def run(name: str, argv: list[str]) -> tuple[dict | None, str, float]:
    print(f"\n=== {name}: {' '.join(argv)}", flush=True)
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, *argv], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    assert process.stdout is not None  # noqa: S101 - PIPE above
    for line in process.stdout:
        lines.append(line.rstrip("\n"))
        print("  " + line.rstrip("\n"), flush=True)
    code = process.wait()
    seconds = time.perf_counter() - start
    if code != 0:
        return None, f"exited with {code}: " + " | ".join(lines[-3:]), seconds
    for line in reversed(lines):
        if line.startswith("{"):
            try:
                return json.loads(line), "", seconds
            except json.JSONDecodeError:
                break
    return None, "no JSON object in its output", seconds


def fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 10 else f"{value:,.1f}"
    return f"{value:,}"


def table(rows: list[Row]) -> list[str]:
    out = ["| figure | value | baseline | ratio | target | met |", "|---|---:|---|---:|---|---|"]
    for row in rows:
        baseline = (
            f"{fmt(row.baseline)} {row.unit} ({row.baseline_label})" if row.baseline is not None else ""
        )
        met = "" if row.met is None else ("yes" if row.met else "**no**")
        value = f"{fmt(row.value)} {row.unit}"
        out.append(f"| {row.figure} | {value} | {baseline} | {fmt(row.ratio)} | {row.target} | {met} |")
    return out


def charts(results: dict[str, list[Row]]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    CHARTS.mkdir(exist_ok=True)
    written = []
    for name, rows in results.items():
        pairs = [r for r in rows if r.value is not None and r.baseline is not None]
        if not pairs:
            continue
        fig, ax = plt.subplots(figsize=(8, 0.6 * len(pairs) + 1.4))
        labels = [r.figure.strip() for r in pairs]
        y = range(len(pairs))
        ax.barh([i + 0.2 for i in y], [r.value for r in pairs], height=0.4, label="Custos")
        ax.barh([i - 0.2 for i in y], [r.baseline for r in pairs], height=0.4, label="baseline (same run)")
        ax.set_yticks(list(y), labels, fontsize=8)
        ax.set_xscale("log")
        ax.invert_yaxis()
        ax.legend(fontsize=8)
        ax.set_title(
            f"{name}: value against its baseline (log scale; units per row in report.md)", fontsize=9
        )
        fig.tight_layout()
        path = CHARTS / f"{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path.name)
    targeted = [(n, r) for n, rows in results.items() for r in rows if r.met is not None]
    if targeted:
        fig, ax = plt.subplots(figsize=(8, 0.45 * len(targeted) + 1.2))
        colours = ["tab:green" if r.met else "tab:red" for _, r in targeted]
        ax.barh(range(len(targeted)), [1 for _ in targeted], color=colours)
        ax.set_yticks(
            range(len(targeted)), [f"{n}: {r.figure.strip()} ({r.target})" for n, r in targeted], fontsize=8
        )
        ax.set_xticks([])
        ax.invert_yaxis()
        ax.set_title("targets: green met, red not met", fontsize=9)
        fig.tight_layout()
        fig.savefig(CHARTS / "targets.png", dpi=110)
        plt.close(fig)
        written.append("targets.png")
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for trying the runner")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    results: dict[str, list[Row]] = {}
    failures: dict[str, str] = {}
    durations: dict[str, float] = {}
    for name in names:
        full, quick, rows_of = BENCHMARKS[name]
        data, error, durations[name] = run(name, quick if args.quick else full)
        if data is None:
            failures[name] = error
            continue
        try:
            results[name] = rows_of(data)
        except (KeyError, TypeError, ZeroDivisionError) as exc:
            failures[name] = f"unexpected JSON ({type(exc).__name__}: {exc})"
    written = charts(results) if results else []
    lines = [
        "# Custos benchmarks",
        "",
        f"Written by `make bench` ({'--quick, ' if args.quick else ''}{time.strftime('%Y-%m-%d %H:%M %Z')}). "
        "Every ratio is against a baseline measured in the same run on the same machine.",
        "",
    ]
    for name in names:
        lines.append(f"## {name} ({durations[name]:.0f} s)")
        lines.append("")
        if name in failures:
            lines.append(f"Did not run: {failures[name]}")
        else:
            lines += table(results[name])
            if f"{name}.png" in written:
                lines += ["", f"![{name}](charts/{name}.png)"]
        lines.append("")
    if "targets.png" in written:
        lines += ["## Targets", "", "![targets](charts/targets.png)", ""]
    REPORT.write_text("\n".join(lines))
    print("\n" + "\n".join(lines), flush=True)
    print(f"wrote {REPORT.relative_to(ROOT)} and {len(written)} chart(s) in {CHARTS.relative_to(ROOT)}/")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
