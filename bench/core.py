"""What every scenario shares: results, timing, settings, the moto server."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from rhei_lake.lake import Lake
    from rhei_lake.sync.trigger_sync import TriggerSync
    from tests.support.moto_server import MotoServer

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Result:
    """One measured figure, its limit and the target it is held to."""

    scenario: str
    metric: str
    value: float
    unit: str
    limit: float | None = None
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
    higher_is_better: bool = True
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_Size = TypeVar("_Size", int, float)


@dataclass
class Settings:
    quick: bool
    workdir: Path
    seed: int = 7
    _moto: Any = None

    def size(self, quick: _Size, full: _Size) -> _Size:
        return quick if self.quick else full

    @property
    def moto(self) -> MotoServer:
        """A moto S3 server subprocess, started on first use."""
        if self._moto is None:
            sys.path.insert(0, str(ROOT))
            from tests.support.moto_server import start_moto

            self._moto = start_moto()
        return self._moto

    def s3_lake(self, name: str) -> tuple[str, dict[str, str]]:
        bucket = f"bench-{name}-{os.getpid()}-{int(time.time() * 1000) % 100000}"
        self.moto.create_bucket(bucket)
        return f"s3://{bucket}/lake", self.moto.storage_options()

    def close(self) -> None:
        if self._moto is not None:
            self._moto.stop()


@contextmanager
def timer() -> Iterator[Callable[[], float]]:
    """``with timer() as elapsed: ...; elapsed()`` in seconds."""
    started = time.perf_counter()
    end: list[float] = []
    yield lambda: (end[0] if end else time.perf_counter()) - started
    end.append(time.perf_counter())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def summarize(latencies: list[float]) -> dict[str, float]:
    return {
        "p50": percentile(latencies, 0.50),
        "p99": percentile(latencies, 0.99),
        "mean": statistics.fmean(latencies),
        "max": max(latencies),
    }


def machine() -> dict[str, Any]:
    import datafusion
    import deltalake
    import pyarrow

    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        cpu = platform.processor() or "unknown"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "pyarrow": pyarrow.__version__,
        "deltalake": deltalake.__version__,
        "datafusion": datafusion.__version__,
        "load_at_start": load,
        "platform": platform.platform(),
    }


def run_isolated(module: str, function: str, *args: str) -> dict[str, Any]:
    """Run ``module.function(*args)`` in a fresh interpreter; returns its JSON result plus peak RSS (MB).

    Used where memory matters: the peak is the child's own high-water mark,
    including the processes it waited for (rhei_lake's reader process).
    """
    import json

    code = (
        "import json, resource, sys\n"
        f"from {module} import {function} as run\n"
        "out = run(*sys.argv[1:])\n"
        "own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
        "out['peak_rss_mb'] = own + kids\n"
        "print('RESULT ' + json.dumps(out))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{module}.{function} failed:\n{proc.stderr[-3000:]}")
    line = next(text for text in reversed(proc.stdout.splitlines()) if text.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def trigger_sync(lake: Lake) -> TriggerSync:
    """The trigger capture of an HTAP ``lake``, for what a scenario does past the lake's API."""
    from rhei_lake.sync.trigger_sync import TriggerSync

    sync = lake.sync_engine
    if not isinstance(sync, TriggerSync):
        raise TypeError(f"an HTAP lake (trigger capture) expected, not {type(sync).__name__}")
    return sync
