"""Faults under load: certificate rotation, config reload (good and bad), SIGTERM, and a sustained soak.

    python -m bench.faults [--soak-seconds 120] [--clients 4]

Starts a real `podpatterns serve` on 127.0.0.1 with fresh certificates, drives it with keep-alive HTTPS
clients (loopback only, bounded in time), injects each fault while the load runs, and prints requests
sent, failed and p99 latency per phase, plus the server's RSS during the soak (flat = no leak).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bench import servers
from webhook import certs

ROOT = Path(__file__).resolve().parent.parent
REVIEW = (ROOT / "tests" / "fixtures" / "admission-reviews" / "deployment-elasticsearch.json").read_bytes()
BODY = orjson.dumps(orjson.loads(REVIEW))


@dataclass
class Phase:
    name: str
    latencies: list[float] = field(default_factory=list)
    failed: int = 0
    failed_at: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def row(self) -> str:
        sent = len(self.latencies) + self.failed
        p99 = statistics.quantiles(self.latencies, n=100)[98] * 1000 if len(self.latencies) >= 100 else float("nan")
        return f"{self.name:<28} {sent:>9} {self.failed:>7} {p99:>9.2f}  {'; '.join(self.notes)}"


class Load:
    """N client threads posting the typical review as fast as they can, recording into the current phase."""

    def __init__(self, url: str, ca: Path, clients: int) -> None:
        self.url, self.ca, self.clients = url, ca, clients
        self.phase = Phase("warm-up")
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        headers = {"Content-Type": "application/json"}
        with httpx.Client(base_url=self.url, verify=ctx, timeout=10, trust_env=False) as client:
            while not self.stop.is_set():
                phase, started = self.phase, time.perf_counter()
                try:
                    ok = client.post("/mutate?timeout=10s", content=BODY, headers=headers).status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    phase.latencies.append(time.perf_counter() - started)
                else:
                    phase.failed += 1
                    phase.failed_at.append(time.monotonic())

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=15)

    def run_phase(self, name: str, seconds: float) -> Phase:
        self.phase = Phase(name)
        time.sleep(seconds)
        return self.phase


def start(live: Path, ca: Path, config: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = servers.free_port()
    process = subprocess.Popen(
        [*servers.command("ours", port, live / "tls.crt", live / "tls.key", 1), "--config", str(config)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    url = f"https://127.0.0.1:{port}"
    ctx = ssl.create_default_context(cafile=str(ca))
    for _ in range(200):
        try:
            if httpx.get(url + "/readyz", verify=ctx, trust_env=False).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"server did not start: {log.read_text()}")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rotate(work: Path, paths: certs.CertPaths, live: Path) -> int:
    ca_key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate(paths.ca_crt.read_bytes())
    key, cert = certs.generate_serving_cert(ca_key, ca_cert, ["localhost"], ["127.0.0.1"])  # type: ignore[arg-type]
    # Like kubelet: write the new pair beside, then swap both in.
    (work / "new.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (work / "new.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.replace(work / "new.key", live / "tls.key")
    os.replace(work / "new.crt", live / "tls.crt")
    return cert.serial_number


def served_serial(url: str, ca: Path) -> int:
    host, port = url.removeprefix("https://").split(":")
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection((host, int(port))) as raw, ctx.wrap_socket(raw, server_hostname=host) as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True) or b"").serial_number


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--soak-seconds", type=float, default=120)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="podpatterns-faults-"))
    paths = certs.write_certs(work / "issued", dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    live = work / "live"
    live.mkdir()
    shutil.copy(paths.tls_crt, live / "tls.crt")
    shutil.copy(paths.tls_key, live / "tls.key")
    config = work / "config.yaml"
    config.write_text("nativeSidecars: true\n")
    process, url = start(live, paths.ca_crt, config, work / "server.log")
    phases: list[Phase] = []
    try:
        with Load(url, paths.ca_crt, args.clients) as load:
            load.run_phase("warm-up", 2)
            phases.append(load.run_phase("steady", 5))

            load.phase = phase = Phase("certificate rotation")
            new_serial = rotate(work, paths, live)
            deadline = time.monotonic() + 10
            while served_serial(url, paths.ca_crt) != new_serial and time.monotonic() < deadline:
                time.sleep(0.1)
            phase.notes.append(f"new cert served after {10 - (deadline - time.monotonic()):.1f}s")
            time.sleep(3)
            phases.append(phase)

            load.phase = phase = Phase("config reload (good, bad)")
            config.write_text("nativeSidecars: false\n")
            time.sleep(3)
            config.write_text("nativeSidecars: [broken\n")
            time.sleep(3)
            with httpx.Client(verify=ssl.create_default_context(cafile=str(paths.ca_crt)), trust_env=False) as c:
                metrics = c.get(url + "/metrics").text
                ready = c.get(url + "/readyz").status_code
            failures = [ln for ln in metrics.splitlines() if ln.startswith("podpatterns_config_reload_failures_total")]
            phase.notes.append(f"{failures[0] if failures else 'no reload-failure metric'}; readyz {ready}")
            phases.append(phase)

            load.phase = phase = Phase(f"soak {args.soak_seconds:.0f}s")
            samples = []
            end = time.monotonic() + args.soak_seconds
            while time.monotonic() < end:
                samples.append(rss_mb(process.pid))
                time.sleep(min(5, max(0.1, end - time.monotonic())))
            phase.notes.append(f"RSS {samples[0]:.1f} -> {max(samples):.1f} MB (max), last {samples[-1]:.1f} MB")
            phases.append(phase)

            load.phase = phase = Phase("SIGTERM")
            process.send_signal(signal.SIGTERM)
            started = time.monotonic()
            code = process.wait(timeout=30)
            exited = time.monotonic()
            cut = sum(1 for t in phase.failed_at if t < exited - 0.05)  # failed while the server still ran
            phase.notes.append(
                f"exited {code} after {exited - started:.1f}s; {cut} failed before exit, "
                "the rest are new requests refused after the listener closed"
            )
            phase.failed = cut
            phases.append(phase)
    finally:
        if process.poll() is None:
            process.kill()
    print(f"{'phase':<28} {'requests':>9} {'failed':>7} {'p99 ms':>9}  notes")
    for phase in phases:
        print(phase.row())
    shutil.rmtree(work, ignore_errors=True)
    return 0 if all(p.failed == 0 for p in phases if p.name != "SIGTERM") else 1


if __name__ == "__main__":
    sys.exit(main())
