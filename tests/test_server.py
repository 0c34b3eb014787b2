"""The real HTTPS service: transport errors, health, metrics, logs, and reloads while requests flow."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import signal
import socket
import ssl
import threading
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from tests.conftest import Server, start_server, stop_server
from tests.helpers import review_for, shared_review
from webhook.certs import write_certs


def test_health_ready_and_metrics(client: httpx.Client) -> None:
    assert client.get("/healthz").text == "ok"
    assert client.get("/readyz").status_code == 200
    replica = shared_review("deployment-elasticsearch.json")
    for n in range(2):  # two replicas of one template: the second is answered from the cache
        replica["request"]["uid"] = f"{replica['request']['uid'][:-1]}{n}"
        assert client.post("/mutate", json=replica).json()["response"]["uid"] == replica["request"]["uid"]
    metrics = client.get("/metrics").text
    assert 'podpatterns_admission_reviews_total{result="patched"}' in metrics
    assert 'podpatterns_injections_total{feature="tls-proxy"}' in metrics
    assert "podpatterns_admission_duration_seconds_bucket" in metrics
    hits = re.search(r'^podpatterns_answer_cache_lookups_total\{outcome="hit"\} (\S+)$', metrics, re.M)
    assert hits and float(hits.group(1)) >= 1, metrics


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b"not json", {}, 400),
        (b'{"apiVersion": "admission.k8s.io/v1", "kind": "Adm', {}, 400),
        (b"[1, 2, 3]", {}, 400),
        (b'{"apiVersion": "v1", "kind": "Pod"}', {}, 400),
        (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}', {}, 400),
        (
            b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"operation": "CREATE"}}',
            {},
            400,
        ),
        (b"[" * 100_000 + b"]" * 100_000, {}, 400),
        (b"\xff\xfe\x00garbage", {}, 400),
        (b"{}", {"Content-Type": "text/plain"}, 415),
        (b"{}", {"Content-Type": ""}, 415),
    ],
    ids=[
        "not-json",
        "truncated",
        "not-object",
        "wrong-kind",
        "no-request",
        "no-uid",
        "deep",
        "not-utf8",
        "text-plain",
        "no-type",
    ],
)
def test_malformed_requests_get_4xx_json(
    client: httpx.Client, body: bytes, headers: dict[str, str], status: int
) -> None:
    response = client.post("/mutate", content=body, headers={"Content-Type": "application/json", **headers})
    assert response.status_code == status
    assert "error" in response.json()
    assert client.get("/healthz").status_code == 200  # and the server keeps serving


def test_create_without_object_is_400(client: httpx.Client) -> None:
    review = review_for({})
    del review["request"]["object"]
    response = client.post("/mutate", json=review)
    assert response.status_code == 400 and "object" in response.json()["error"]


def test_body_over_3_mib_is_413(client: httpx.Client) -> None:
    response = client.post(
        "/mutate", content=b" " * (3 * 1024 * 1024 + 1), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413


def test_gzip_body_is_accepted(client: httpx.Client) -> None:
    review = shared_review("pod-dry-run.json")
    body = gzip.compress(json.dumps(review).encode())
    response = client.post(
        "/mutate", content=body, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
    )
    assert response.status_code == 200 and response.json()["response"]["uid"] == review["request"]["uid"]


def test_a_corrupt_gzip_body_is_a_400(client: httpx.Client) -> None:
    good = gzip.compress(json.dumps(shared_review("pod-dry-run.json")).encode())
    corrupt = good[:10] + bytes(b ^ 0xFF for b in good[10:40]) + good[40:]  # a valid header, broken deflate data
    response = client.post(
        "/mutate", content=corrupt, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
    )
    assert response.status_code == 400 and "could not be read" in response.json()["error"]


@pytest.mark.parametrize("operation", ["UPDATE", "DELETE", "CONNECT"])
def test_other_operations_are_allowed_unchanged(client: httpx.Client, operation: str) -> None:
    review = review_for(
        {
            "metadata": {"annotations": {"podpatterns.io/log-tail": "/var/log/a.log"}},
            "spec": {"containers": [{"name": "a", "image": "b"}]},
        },
        operation=operation,
    )
    answer = client.post("/mutate", json=review).json()["response"]
    assert answer == {"uid": review["request"]["uid"], "allowed": True}


def test_non_pod_objects_are_allowed_unchanged(client: httpx.Client) -> None:
    review = review_for({"metadata": {"name": "x"}})
    review["request"]["kind"] = {"group": "apps", "version": "v1", "kind": "Deployment"}
    answer = client.post("/mutate", json=review).json()["response"]
    assert answer == {"uid": review["request"]["uid"], "allowed": True}


def test_plain_http_is_refused(server: Server) -> None:
    with pytest.raises(httpx.HTTPError):
        httpx.get(server.url.replace("https://", "http://") + "/healthz", timeout=3)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_old_tls_versions_are_refused(server: Server, version: ssl.TLSVersion) -> None:
    ctx = ssl.create_default_context(cafile=str(server.ca))
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    ctx.maximum_version = version
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    with pytest.raises((httpx.ConnectError, ssl.SSLError)):
        httpx.get(server.url + "/healthz", verify=ctx, timeout=3)


def test_decision_log_is_json_without_secret_values(server: Server, client: httpx.Client) -> None:
    pod = {
        "metadata": {"generateName": "es-", "annotations": {"podpatterns.io/tls-proxy": "es-tls"}},
        "spec": {
            "containers": [
                {
                    "name": "es",
                    "image": "es:7",
                    "ports": [{"containerPort": 9200}],
                    "env": [{"name": "PASSWORD", "value": "hunter2-do-not-log"}],
                }
            ]
        },
    }
    review = review_for(pod)
    client.post("/mutate", json=review)
    deadline = time.monotonic() + 5
    while review["request"]["uid"] not in server.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [json.loads(line) for line in server.log.read_text().splitlines() if review["request"]["uid"] in line]
    assert lines and lines[0]["decision"] == "patched" and lines[0]["pod"] == "es-*"
    assert lines[0]["injected"] == ["tls-proxy"] and lines[0]["durationMs"] >= 0
    assert "hunter2" not in server.log.read_text()


def _load(client: httpx.Client, stop: threading.Event, results: list[int]) -> None:
    review = shared_review("deployment-elasticsearch.json")
    while not stop.is_set():
        try:
            results.append(client.post("/mutate", json=review).status_code)
        except httpx.HTTPError:
            results.append(-1)


def _served_serial(server: Server) -> int:
    # A new connection each time, so the handshake shows the certificate in force now.
    host, port = server.url.removeprefix("https://").split(":")
    ctx = ssl.create_default_context(cafile=str(server.ca))
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_certificate_rotation_under_load_fails_no_request(tmp_path: Path) -> None:
    certs = write_certs(tmp_path / "a", dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    live = tmp_path / "live"
    live.mkdir()
    shutil.copy(certs.tls_crt, live / "tls.crt")
    shutil.copy(certs.tls_key, live / "tls.key")
    server = start_server(live / "tls.crt", live / "tls.key", certs.ca_crt, None, tmp_path / "log")
    try:
        before = _served_serial(server)
        stop, results = threading.Event(), []
        with server.client() as c:
            worker = threading.Thread(target=_load, args=(c, stop, results))
            worker.start()
            time.sleep(0.5)
            # A new leaf from the same CA, swapped in like kubelet updates a mounted Secret.
            import webhook.certs as wc

            ca_key = wc.serialization.load_pem_private_key(certs.ca_key.read_bytes(), None)
            ca_cert = x509.load_pem_x509_certificate(certs.ca_crt.read_bytes())
            key, cert = wc.generate_serving_cert(ca_key, ca_cert, ["localhost"], ["127.0.0.1"])
            (live / "new.key").write_bytes(wc._key_pem(key))
            (live / "new.crt").write_bytes(wc._cert_pem(cert))
            os.replace(live / "new.key", live / "tls.key")
            os.replace(live / "new.crt", live / "tls.crt")
            deadline = time.monotonic() + 10
            while _served_serial(server) == before and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(0.5)
            stop.set()
            worker.join()
        assert _served_serial(server) == cert.serial_number != before
        assert len(results) > 20 and set(results) == {200}
        with server.client() as c:
            metrics = c.get("/metrics").text
        reloaded = re.search(r'^podpatterns_tls_cert_reloads_total\{result="success"\} (\S+)$', metrics, re.M)
        assert reloaded and float(reloaded.group(1)) >= 1, metrics
    finally:
        stop_server(server)


def test_config_reload_applies_good_and_keeps_last_good_on_bad(tmp_path: Path, dev_certs) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("nativeSidecars: true\n")
    server = start_server(dev_certs.tls_crt, dev_certs.tls_key, dev_certs.ca_crt, config, tmp_path / "log")
    pod = {
        "metadata": {"annotations": {"podpatterns.io/log-tail": "/var/log/a.log"}},
        "spec": {"containers": [{"name": "a", "image": "b"}]},
    }

    def tailer_image(c: httpx.Client) -> str:
        from tests.helpers import apply_answer

        review = review_for(pod)
        injected = apply_answer(review, c.post("/mutate", json=review).json())
        return injected["spec"]["initContainers"][0]["image"]

    def wait_for(predicate, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline
            time.sleep(0.2)

    try:
        with server.client() as c:
            assert tailer_image(c) == "busybox:1.37.0"
            config.write_text("logTail:\n  image: registry.example.com/busybox:9\n  runAsUser: 1000\n")
            wait_for(lambda: tailer_image(c) == "registry.example.com/busybox:9")
            config.write_text("logTail:\n  image: 'bad image; rm -rf /'\n")
            wait_for(lambda: "podpatterns_config_reload_failures_total 1.0" in c.get("/metrics").text)
            assert tailer_image(c) == "registry.example.com/busybox:9"
            assert c.get("/readyz").status_code == 200
        assert "logTail.image" in server.log.read_text()
    finally:
        stop_server(server)


def test_sigterm_lets_in_flight_requests_finish(tmp_path: Path, dev_certs) -> None:
    server = start_server(dev_certs.tls_crt, dev_certs.tls_key, dev_certs.ca_crt, None, tmp_path / "log")
    stop, results = threading.Event(), []
    with server.client() as c:
        worker = threading.Thread(target=_load, args=(c, stop, results))
        worker.start()
        time.sleep(0.5)
        server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(timeout=20)
        stop.set()
        worker.join()
    assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after its graceful shutdown
    ok = results.index(-1) if -1 in results else len(results)
    assert ok > 5 and all(r == 200 for r in results[:ok])  # everything before the close was answered
