"""The load generator: Debian's wrk (C, epoll, OpenSSL) with bench/wrk.lua, bounded in time, loopback only."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parent / "wrk.lua"
LOOPBACK = ("127.0.0.1", "::1", "[::1]", "localhost")


class LoadGenError(RuntimeError):
    pass


def wrk_path() -> str | None:
    return shutil.which("wrk")


def wrk_version() -> str:
    path = wrk_path()
    if not path:
        return "not installed"
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).splitlines()[0].strip() if (out.stdout or out.stderr) else "unknown"


@dataclass
class Run:
    """One wrk run: what was offered, what came back, and what the generator itself cost."""

    requests: int
    seconds: float
    rps: float
    errors: dict[str, int]
    latency_us: dict[str, float]
    late_sends: int
    max_lag_ms: float
    gen_cpu_s: float
    gen_cpu_pct: float  # of one core
    rate: float = 0.0  # offered; 0 = closed loop
    connections: int = 0
    threads: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def error_count(self) -> int:
        # bad_answer counts every response that is not 200 with the expected answer, so wrk's own
        # "status" count (HTTP >= 400) is already in it.
        return sum(v for k, v in self.errors.items() if k != "status")

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "rps": round(self.rps, 1),
            "offered_rps": self.rate or None,
            "connections": self.connections,
            "threads": self.threads,
            "errors": self.errors,
            "error_count": self.error_count,
            "latency_ms": {k: round(v / 1000, 3) for k, v in self.latency_us.items()},
            "late_sends": self.late_sends,
            "max_lag_ms": round(self.max_lag_ms, 2),
            "generator_cpu_s": round(self.gen_cpu_s, 3),
            "generator_cpu_pct": round(self.gen_cpu_pct, 1),
            **self.extra,
        }


def run(
    url: str,
    bodies: list[Path],
    *,
    duration: float,
    connections: int,
    threads: int = 1,
    rate: float = 0.0,
    expect: str = '"allowed":true',
    vary: str | None = None,
    cpus: set[int] | None = None,
    log: Path | None = None,
) -> Run:
    """Run wrk against `url` (loopback only) and return its summary."""
    host = url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[0]
    if host not in LOOPBACK:
        raise LoadGenError(f"the benchmark only sends traffic to loopback, not {host}")
    path = wrk_path()
    if not path:
        raise LoadGenError("wrk is not installed: apt-get install wrk")
    seconds = max(1, round(duration))
    with tempfile.NamedTemporaryFile(prefix="wrk-", suffix=".json", delete=False) as tmp:
        out = Path(tmp.name)
    env = {
        **os.environ,
        "BENCH_BODIES": ",".join(str(b) for b in bodies),
        "BENCH_EXPECT": expect,
        "BENCH_RATE": str(rate or 0),
        "BENCH_THREADS": str(threads),
        "BENCH_OUT": str(out),
        "BENCH_VARY": vary or "",
    }
    args = [path, "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--timeout", "10s"]
    args += ["-s", str(SCRIPT), url]
    if cpus and shutil.which("taskset"):
        args = ["taskset", "-c", ",".join(str(c) for c in sorted(cpus)), *args]
    stdout = log.open("ab") if log else subprocess.DEVNULL
    try:
        started = time.monotonic()
        proc = subprocess.Popen(args, env=env, stdout=stdout, stderr=subprocess.STDOUT)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - started
    finally:
        if log:
            stdout.close()  # type: ignore[union-attr]
    try:
        if proc.returncode != 0:
            raise LoadGenError(f"wrk exited with {proc.returncode} (see {log})")
        try:
            summary = json.loads(out.read_text())
        except (OSError, ValueError) as exc:
            raise LoadGenError(f"wrk wrote no summary ({exc}); see {log}") from exc
    finally:
        out.unlink(missing_ok=True)
    secs = summary["duration_us"] / 1e6
    cpu = usage.ru_utime + usage.ru_stime
    return Run(
        requests=summary["requests"],
        seconds=secs,
        rps=summary["requests"] / secs if secs else 0.0,
        errors=summary["errors"],
        latency_us=summary["latency_us"],
        late_sends=summary["late_sends"],
        max_lag_ms=summary["max_lag_ms"],
        gen_cpu_s=cpu,
        gen_cpu_pct=100.0 * cpu / wall if wall else 0.0,
        rate=rate,
        connections=connections,
        threads=threads,
    )
