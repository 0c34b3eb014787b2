"""Hostile clients and faults: slowloris, floods, weak TLS, reloads under load. Nothing lost, nothing let through."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Server, start_server, stop_server
from tests.helpers import review_for, shared_review
from webhook.certs import CertPaths

READ_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def strict_server(dev_certs: CertPaths, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with a short request-read timeout and a small connection limit, to test both quickly."""
    log = tmp_path_factory.mktemp("strict") / "server.log"
    server = start_server(
        dev_certs.tls_crt,
        dev_certs.tls_key,
        dev_certs.ca_crt,
        None,
        log,
        "--request-read-timeout",
        str(READ_TIMEOUT),
        "--max-connections",
        "100",
    )
    yield server
    stop_server(server)


def tls_socket(server: Server) -> ssl.SSLSocket:
    host, port = server.url.removeprefix("https://").split(":")
    ctx = ssl.create_default_context(cafile=str(server.ca))
    return ctx.wrap_socket(socket.create_connection((host, int(port)), timeout=10), server_hostname=host)


def closed_within(sock: ssl.SSLSocket, seconds: float) -> bool:
    """True if the server closes the connection (EOF or reset) within `seconds`."""
    sock.settimeout(seconds)
    try:
        return sock.recv(1024) == b""
    except (ConnectionError, ssl.SSLError):
        return True
    except TimeoutError:
        return False


def raw_review(fixture: str) -> tuple[bytes, bytes]:
    """The head and body of a POST /mutate of a recorded review, to write on a raw socket."""
    body = json.dumps(shared_review(fixture)).encode()
    head = f"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode(), body


def read_status(reader: Any) -> int:
    """Read one whole HTTP/1.1 response (with Content-Length) and return its status."""
    status = int(reader.readline().split()[1])
    length = 0
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    reader.read(length)
    return status


def test_an_idle_connection_that_sends_nothing_is_closed(strict_server: Server) -> None:
    with tls_socket(strict_server) as sock:
        assert closed_within(sock, READ_TIMEOUT + 3)


def test_slowloris_headers_are_cut_off(strict_server: Server) -> None:
    head = b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Slow: " + b"a" * 1000
    started = time.monotonic()
    with tls_socket(strict_server) as sock:
        closed = False
        for byte in head:  # one byte every 50 ms, never finishing the head
            try:
                sock.sendall(bytes([byte]))
            except (ConnectionError, ssl.SSLError):
                closed = True
                break
            if closed_within(sock, 0.05):
                closed = True
                break
        assert closed
    assert time.monotonic() - started < READ_TIMEOUT + 3


def test_a_stalled_body_is_cut_off(strict_server: Server) -> None:
    with tls_socket(strict_server) as sock:
        sock.sendall(
            b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"apiVersion":'
        )
        assert closed_within(sock, READ_TIMEOUT + 3)


def test_each_request_on_a_kept_alive_connection_gets_its_own_read_deadline(strict_server: Server) -> None:
    """The guard's timer is per connection: a request that began after it was set is timed from its start."""
    head, body = raw_review("deployment-elasticsearch.json")
    with tls_socket(strict_server) as sock:
        reader = sock.makefile("rb")
        sock.sendall(head + body)
        assert read_status(reader) == 200
        time.sleep(0.7 * READ_TIMEOUT)
        sock.sendall(head)  # the second request begins before the first's deadline passes ...
        time.sleep(0.6 * READ_TIMEOUT)  # ... and is still within its own when that deadline passes
        sock.sendall(body)
        assert read_status(reader) == 200, "a request within its own deadline was cut"
        sock.sendall(head + body[:10])  # a third request that stalls is still cut off
        started = time.monotonic()
        assert closed_within(sock, READ_TIMEOUT + 3)
        assert time.monotonic() - started > 0.5 * READ_TIMEOUT


def test_a_bare_line_break_after_an_answer_starts_the_read_deadline(strict_server: Server) -> None:
    """httptools skips a CRLF between requests without beginning a message, and uvicorn's keep-alive timer
    stops at the first byte: without the guard's clock, a client could hold its connection forever."""
    head, body = raw_review("pod-plain.json")
    with tls_socket(strict_server) as sock:
        reader = sock.makefile("rb")
        sock.sendall(head + body)
        assert read_status(reader) == 200
        sock.sendall(b"\r\n")
        assert closed_within(sock, READ_TIMEOUT + 3)


def test_a_huge_request_head_is_refused(strict_server: Server) -> None:
    with tls_socket(strict_server) as sock:
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Junk: " + b"j" * 200_000 + b"\r\n\r\n")
        assert closed_within(sock, 3)


def test_stalled_clients_do_not_starve_real_ones(strict_server: Server) -> None:
    stalled = [tls_socket(strict_server) for _ in range(40)]
    try:
        for sock in stalled:
            sock.sendall(b"POST /mutate HTTP/1.1\r\nHost: x\r\n")
        with strict_server.client() as client:
            review = shared_review("deployment-elasticsearch.json")
            started = time.monotonic()
            for _ in range(20):
                assert client.post("/mutate", json=review).status_code == 200
            assert time.monotonic() - started < 5
    finally:
        for sock in stalled:
            sock.close()


def test_chunked_body_over_the_limit_is_413(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(4):
            yield b" " * (1024 * 1024)

    response = client.post("/mutate", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413


def test_huge_annotation_value_is_denied_not_crashed(client: httpx.Client) -> None:
    pod = {
        "metadata": {"annotations": {"podpatterns.io/log-tail": "/var/log/" + "a" * 1_000_000}},
        "spec": {"containers": [{"name": "a", "image": "b"}]},
    }
    answer = client.post("/mutate", json=review_for(pod)).json()["response"]
    assert answer["allowed"] is False and "longer than" in answer["status"]["message"]


def test_json_with_huge_strings_and_many_keys_is_answered(client: httpx.Client) -> None:
    pod = {
        "metadata": {"annotations": {f"k{i}": "v" * 100 for i in range(5000)}},
        "spec": {"containers": [{"name": "a", "image": "b", "args": ["x" * 500_000]}]},
    }
    response = client.post("/mutate", json=review_for(pod))
    assert response.status_code == 200 and response.json()["response"]["allowed"] is True


def openssl_handshake(server: Server, *args: str) -> bool:
    host_port = server.url.removeprefix("https://")
    result = subprocess.run(
        ["openssl", "s_client", "-connect", host_port, "-CAfile", str(server.ca), *args],
        input=b"",
        capture_output=True,
        timeout=20,
    )
    return result.returncode == 0 and b"Verify return code: 0" in result.stdout


@pytest.mark.parametrize("cipher", ["AES128-SHA", "AES256-GCM-SHA384", "ECDHE-ECDSA-AES128-SHA"])
def test_weak_tls12_ciphers_are_refused(server: Server, cipher: str) -> None:
    assert not openssl_handshake(server, "-tls1_2", "-cipher", cipher)


def test_modern_tls_is_accepted(server: Server) -> None:
    assert openssl_handshake(server, "-tls1_3")
    assert openssl_handshake(server, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256")


def test_config_reload_under_load_fails_no_request(tmp_path: Path, dev_certs: CertPaths) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("nativeSidecars: true\n")
    server = start_server(dev_certs.tls_crt, dev_certs.tls_key, dev_certs.ca_crt, config, tmp_path / "log")
    stop, statuses = threading.Event(), []

    def load() -> None:
        with server.client() as c:
            review = shared_review("deployment-elasticsearch.json")
            while not stop.is_set():
                response = c.post("/mutate", json=review)
                statuses.append(response.status_code if response.json()["response"]["allowed"] else -1)

    try:
        worker = threading.Thread(target=load)
        worker.start()
        for text in ("nativeSidecars: false\n", "nativeSidecars: [not, a, bool]\n", "nativeSidecars: true\n"):
            time.sleep(2.5)  # past the reload interval
            config.write_text(text)
        time.sleep(2.5)
        stop.set()
        worker.join()
        with server.client() as c:
            metrics = c.get("/metrics").text
            assert c.get("/readyz").status_code == 200
    finally:
        stop_server(server)
    assert len(statuses) > 50 and set(statuses) == {200}
    assert "podpatterns_config_reload_failures_total 1.0" in metrics
    assert "podpatterns_config_reloads_total 2.0" in metrics
    log = [json.loads(line) for line in (tmp_path / "log").read_text().splitlines() if line.startswith("{")]
    assert any(e["msg"].startswith("injector config reload failed") and "nativeSidecars" in e["error"] for e in log)


def test_a_large_review_written_in_one_go_is_not_mistaken_for_a_huge_head(strict_server: Server) -> None:
    """The API server writes head and body together: a body read with the head must not count as head."""
    pod = {
        "metadata": {"name": "big", "annotations": {"podpatterns.io/log-tail": "/var/log/app/a.log"}},
        "spec": {
            "containers": [
                {"name": "a", "image": "b", "env": [{"name": f"E{i:05d}", "value": "v" * 40} for i in range(6000)]}
            ]
        },
    }
    body = json.dumps(review_for(pod)).encode()
    assert len(body) > 300_000
    head = (
        b"POST /mutate?timeout=10s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    for _ in range(5):
        with tls_socket(strict_server) as sock:
            sock.sendall(head + body)
            response = b""
            while b"\r\n\r\n" not in response:
                chunk = sock.recv(65536)
                assert chunk, "the server closed the connection"
                response += chunk
        assert response.startswith(b"HTTP/1.1 200")
