"""Fixtures: the golden injector config, dev certificates, and a real uvicorn HTTPS server."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.helpers import GOLDEN
from webhook.certs import CertPaths, write_certs
from webhook.injection import InjectorConfig, load_config

GOLDEN_CONFIG = GOLDEN / "config.yaml"


@pytest.fixture(scope="session")
def golden_config() -> InjectorConfig:
    return load_config(GOLDEN_CONFIG)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def dev_certs(tmp_path_factory: pytest.TempPathFactory) -> CertPaths:
    return write_certs(tmp_path_factory.mktemp("certs"), dns_names=["localhost"], ip_addresses=["127.0.0.1"])


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    ca: Path
    log: Path

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            verify=ssl.create_default_context(cafile=str(self.ca)),
            timeout=10,
            trust_env=False,
            **kwargs,
        )  # type: ignore[arg-type]


def start_server(cert: Path, key: Path, ca: Path, config: Path | None, log: Path, *extra: str) -> Server:
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "webhook",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
        *extra,
    ]
    if config:
        args += ["--config", str(config)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PODPATTERNS_")}
    process = subprocess.Popen(args, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    server = Server(f"https://127.0.0.1:{port}", process, ca, log)
    deadline = time.monotonic() + 20
    with server.client() as client:
        while True:
            try:
                if client.get("/readyz").status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"server did not start:\n{log.read_text()}")
            time.sleep(0.1)


def stop_server(server: Server) -> int:
    server.process.terminate()
    try:
        return server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        raise


@pytest.fixture(scope="session")
def server(dev_certs: CertPaths, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real `podpatterns serve` process over HTTPS, with the golden config, for the whole session."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    srv = start_server(dev_certs.tls_crt, dev_certs.tls_key, dev_certs.ca_crt, GOLDEN_CONFIG, log)
    yield srv
    stop_server(srv)


@pytest.fixture(scope="session")
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c
