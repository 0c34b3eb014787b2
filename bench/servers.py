"""The servers under test, started as users start them, and what they cost (CPU, RSS) read from /proc."""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.workloads import ROOT

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

LABELS = {
    "ours": "podpatterns",
    "floor": "floor (bare ASGI + orjson)",
    "fastapi": "FastAPI + pydantic model",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def command(kind: str, port: int, cert: Path, key: Path, workers: int) -> list[str]:
    common = ["--host", "127.0.0.1", "--port", str(port), "--tls-cert", str(cert), "--tls-key", str(key)]
    if kind == "ours":
        # Exactly as a user runs it: the CLI, its defaults (built-in config), one JSON log line per decision.
        return [sys.executable, "-m", "webhook", "serve", *common, "--workers", str(workers), "--log-level", "info"]
    return [sys.executable, "-m", "bench.refs", kind, *common, "--workers", str(workers)]


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def process_tree(pid: int) -> list[int]:
    tree, out, todo = _children(), [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(tree.get(p, []))
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads, living and dead)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) in MiB."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return {"rss_mb": out.get("VmRSS", 0.0), "peak_rss_mb": out.get("VmHWM", 0.0)}


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@dataclass
class Server:
    kind: str  # ours | floor | fastapi
    workers: int
    port: int
    process: subprocess.Popen[bytes]
    ca: Path
    log: Path
    cpus: set[int] | None = None
    worker_pids: list[int] = field(default_factory=list)

    @property
    def label(self) -> str:
        return LABELS[self.kind]

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/mutate?timeout=10s"

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def pids(self) -> list[int]:
        return process_tree(self.process.pid)

    def cpu(self) -> float:
        """CPU seconds used so far by the whole server (supervisor and workers)."""
        return sum(cpu_seconds(p) for p in self.pids())

    def find_workers(self) -> list[int]:
        if self.workers == 1:
            return [self.process.pid]  # uvicorn serves in-process with one worker
        return [p for p in self.pids() if "spawn_main" in _cmdline(p) and "resource_tracker" not in _cmdline(p)]

    def memory(self) -> list[dict[str, float]]:
        """One entry per worker process."""
        return [memory(p) for p in self.worker_pids or self.find_workers()]

    def post(self, body: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ssl_context(), timeout=timeout)
        try:
            conn.request("POST", "/mutate?timeout=10s", body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def ready(self) -> bool:
        try:
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ssl_context(), timeout=2)
            try:
                conn.request("GET", "/readyz")
                return conn.getresponse().status == 200
            finally:
                conn.close()
        except (OSError, http.client.HTTPException):
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=25)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(kind: str, *, cert: Path, key: Path, ca: Path, workers: int, log: Path, cpus: set[int] | None) -> Server:
    port = free_port()
    args = command(kind, port, cert, key, workers)
    if cpus and shutil.which("taskset"):
        args = ["taskset", "-c", ",".join(str(c) for c in sorted(cpus)), *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PODPATTERNS_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    log.parent.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    server = Server(kind, workers, port, process, ca, log, cpus)
    deadline = time.monotonic() + 30
    while not server.ready():
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"{kind} server did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    if workers > 1:
        while len(server.find_workers()) < workers and time.monotonic() < deadline:
            time.sleep(0.1)
    server.worker_pids = server.find_workers()
    return server
