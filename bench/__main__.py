"""Run the benchmarks: ``python -m bench [--quick] [--only NAME ...] [--out DIR]``.

Writes ``<out>/latest.json``, ``<out>/latest.md`` and PNG plots; prints the table.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from bench.core import ROOT, Result, Settings, machine

SCENARIOS = [
    "initial_sync",
    "steady_sync",
    "cdc_throughput",
    "trigger_overhead",
    "compaction",
    "query",
    "query_engines",
    "serving",
    "history_lookup",
    "s3_requests",
    "scaling",
    "startup",
]


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def markdown(results: list[Result], meta: dict) -> str:
    lines = [
        f"Run {meta['finished']} ({'quick' if meta['quick'] else 'full'}, {meta['seconds']:.0f} s) on "
        f"{meta['machine']['cores']} cores ({meta['machine']['cpu']}), Python {meta['machine']['python']}, "
        f"pyarrow {meta['machine']['pyarrow']}, deltalake {meta['machine']['deltalake']}, "
        f"datafusion {meta['machine']['datafusion']}.",
        "",
        "| scenario | measure | value | limit | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        met = "" if r.met is None else ("yes" if r.met else "**no**")
        lines.append(
            f"| {r.scenario} | {r.metric} | {_fmt(r.value)} {r.unit} | {_fmt(r.limit)} | "
            f"{_fmt(r.ratio)} | {r.target} | {met} |"
        )
    return "\n".join(lines) + "\n"


def plots(results: list[Result], out: Path) -> list[str]:
    """Latency distributions per storage tier, throughput against size."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    steady = next((r for r in results if r.scenario == "steady sync" and "raw_seconds" in r.details), None)
    if steady is not None:
        raw = steady.details["raw_seconds"]
        fig, ax = plt.subplots(figsize=(8, 4.5))
        names = list(raw)
        ax.boxplot([[v * 1000 for v in raw[n]] for n in names], tick_labels=names, showfliers=True)
        ax.set_yscale("log")
        ax.set_ylabel("latency per sync (ms, log scale)")
        ax.set_title("Steady sync, 10 rows per cycle: latency by storage tier")
        fig.tight_layout()
        fig.savefig(out / "steady_sync_latency.png", dpi=110)
        plt.close(fig)
        written.append("steady_sync_latency.png")
    scaling = [r for r in results if r.scenario == "scaling" and "rows" in r.details]
    if scaling:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for metric in sorted({r.details.get("series", r.metric) for r in scaling}):
            points = sorted(
                (r.details["rows"], r.value) for r in scaling if r.details.get("series", r.metric) == metric
            )
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=metric)
        ax.set_xscale("log")
        ax.set_xlabel("rows")
        ax.set_ylabel("rows/s")
        ax.set_title("Throughput against size")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "scaling_throughput.png", dpi=110)
        plt.close(fig)
        written.append("scaling_throughput.png")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: the whole run in under 2 minutes")
    parser.add_argument("--only", nargs="*", choices=SCENARIOS, help="run only these scenarios")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="where results are written")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    chosen = args.only or SCENARIOS
    started = time.perf_counter()
    results: list[Result] = []
    failures: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="rhei-bench-") as work:
        settings = Settings(quick=args.quick, workdir=Path(work))
        info = machine()
        try:
            for name in chosen:
                module = importlib.import_module(f"bench.scenarios.{name}")
                print(f"== {name}", flush=True)
                scenario_started = time.perf_counter()
                try:
                    got = module.run(settings)
                except Exception:
                    failures[name] = traceback.format_exc()
                    print(failures[name], file=sys.stderr)
                    continue
                for r in got:
                    print(
                        f"   {r.metric}: {_fmt(r.value)} {r.unit} (limit {_fmt(r.limit)}, ratio {_fmt(r.ratio)}) "
                        f"{'' if r.met is None else ('met' if r.met else 'NOT met')}",
                        flush=True,
                    )
                results.extend(got)
                print(f"   ({time.perf_counter() - scenario_started:.0f} s)", flush=True)
        finally:
            settings.close()
    meta = {
        "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "quick": args.quick,
        "seconds": time.perf_counter() - started,
        "machine": info,
        "failures": failures,
    }
    table = markdown(results, meta)
    images = plots(results, args.out)
    (args.out / "latest.md").write_text(table + "".join(f"\n![{i}]({i})\n" for i in images))
    (args.out / "latest.json").write_text(
        json.dumps({"meta": meta, "results": [r.to_dict() for r in results]}, indent=1)
    )
    print()
    print(table)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
