"""Shared by the benchmarks: a stack on free ports, percentiles, table and JSON output."""
from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from llmops.cli.stack import free_port, isolated_settings
from llmops.common.settings import Settings

RESULTS = Path(__file__).parent / "results"


def bench_settings(**overrides) -> Settings:
    """A stack of its own: free ports, a fresh data dir, its own embedded broker."""
    data = Path(tempfile.mkdtemp(prefix="llmops-bench-"))
    return isolated_settings(data, "", kafka_embedded_port=free_port(), **overrides)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    xs = sorted(values)
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def machine() -> dict:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def report(name: str, title: str, columns: list[str], rows: list[list], extra: dict) -> Path:
    widths = [max(len(str(c)), *(len(_fmt(r[i])) for r in rows)) for i, c in enumerate(columns)]
    print(f"\n{title}")
    print("  ".join(str(c).ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(_fmt(v).ljust(w) for v, w in zip(r, widths)))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "machine": machine(), "columns": columns, "rows": rows, **extra},
                               indent=2, default=str))
    print(f"-> {path}")
    return path


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}"
    return str(v)


def mean(xs):
    return statistics.fmean(xs) if xs else float("nan")
