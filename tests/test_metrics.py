"""The operating signals on /metrics, read from a real `podpatterns serve` over HTTPS: build and config
info, the certificate's expiry, requests in flight; and the config fingerprint they carry.

Every value is checked against what it describes (the certificate file's notAfter, the fingerprint of
the config file loaded the same way), and followed through a reload: a rotated certificate, a changed
config file, a refused one.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

import webhook.certs as wc
from tests.conftest import Server, start_server, stop_server
from tests.helpers import review_for, shared_review
from webhook import __version__
from webhook.certs import CertPaths, write_certs
from webhook.fingerprint import canonical_json, config_fingerprint
from webhook.injection import InjectorConfig, load_config, parse_config
from webhook.injection import config as config_module

Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(client: httpx.Client) -> Samples:
    """/metrics parsed by prometheus_client's own text parser: sample name -> [(labels, value)]."""
    response = client.get("/metrics")
    assert response.status_code == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def only(samples: Samples, name: str) -> tuple[dict[str, str], float]:
    assert name in samples, f"{name} not exposed: {sorted(samples)}"
    (sample,) = samples[name]
    return sample


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def not_after(cert: Path) -> float:
    return x509.load_pem_x509_certificate(cert.read_bytes()).not_valid_after_utc.timestamp()


# --- the fingerprint ------------------------------------------------------------------------------------


def test_canonical_json_is_fixed_text() -> None:
    """Sorted keys, no whitespace, ASCII escapes: the bytes (and so the hash) depend on the data only."""
    data = {"b": [1, 2.5, True, None], "a": "é", "c": {"z": 1, "y": {}}}
    assert canonical_json(data) == b'{"a":"\\u00e9","b":[1,2.5,true,null],"c":{"y":{},"z":1}}'
    assert canonical_json(dict(reversed(list(data.items())))) == canonical_json(data)
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_fingerprint_is_16_hex_digits_of_the_sha256_of_the_canonical_dump() -> None:
    config = InjectorConfig()
    expected = hashlib.sha256(canonical_json(config.model_dump(mode="json", by_alias=True))).hexdigest()[:16]
    assert config_fingerprint(config) == expected
    assert re.fullmatch(r"[0-9a-f]{16}", expected)


def test_fingerprint_ignores_how_the_file_is_written(tmp_path: Path) -> None:
    """Comments, order, flow or block style, quoting and spelt-out defaults are the same config."""
    texts = [
        "nativeSidecars: false\nlogTail:\n  image: registry.example.com/busybox:1\n  runAsUser: 1000\n",
        "# the tailer\nlogTail: {runAsUser: 1000, image: 'registry.example.com/busybox:1'}   # pinned\n"
        "nativeSidecars: false\n",
        'logTail:\n    runAsUser: 1000\n    image: "registry.example.com/busybox:1"\nnativeSidecars: false\n'
        "imageAllowlist: []\nexporters: {}\n",
    ]
    fingerprints = set()
    for n, text in enumerate(texts):
        path = tmp_path / f"config-{n}.yaml"
        path.write_text(text)
        fingerprints.add(config_fingerprint(load_config(path)))
    assert len(fingerprints) == 1
    assert config_fingerprint(load_config(None)) == config_fingerprint(parse_config({}))


@pytest.mark.parametrize(
    "change",
    [
        {"nativeSidecars": False},
        {"imageAllowlist": ["registry.example.com/*"]},
        {"tlsProxy": {"image": "registry.example.com/nginx:1"}},
        {"waitFor": {"timeoutSeconds": 301}},
        {"exporters": {"jvm": {"image": "registry.example.com/jmx:1", "port": 9404, "targetPort": 8080}}},
        {"initTemplates": {"migrate": {"containers": [{"name": "migrate", "image": "registry.example.com/m:1"}]}}},
    ],
    ids=["native-sidecars", "allowlist", "tls-proxy-image", "wait-timeout", "custom-exporter", "init-template"],
)
def test_fingerprint_changes_with_any_effective_setting(change: dict[str, object]) -> None:
    assert config_fingerprint(parse_config(change)) != config_fingerprint(parse_config({}))


def test_fingerprint_covers_the_built_in_exporter_presets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The presets are merged under the file's `exporters`: they are part of the config in force."""
    before = config_fingerprint(parse_config({}))
    redis = config_module.BUILTIN_EXPORTERS["redis"]
    # Overriding a preset in the file is a change...
    preset = {"image": "registry.example.com/redis-exporter:2", "port": 9121, "targetPort": 6379}
    override = {"exporters": {"redis": preset}}
    assert config_fingerprint(parse_config(override)) != before
    # ...and so is a podpatterns version whose built-in preset differs, for the same (empty) file.
    monkeypatch.setitem(config_module.BUILTIN_EXPORTERS, "redis", redis.model_copy(update={"port": 9122}))
    assert config_fingerprint(parse_config({})) != before


def test_fingerprint_is_the_same_in_every_process() -> None:
    """No hash seed or dict order leaks in: other interpreters with other seeds agree."""
    code = (
        "from webhook.fingerprint import config_fingerprint; from webhook.injection import load_config; "
        "print(config_fingerprint(load_config('tests/golden/config.yaml')))"
    )
    root = Path(__file__).resolve().parents[1]
    expected = config_fingerprint(load_config(root / "tests" / "golden" / "config.yaml"))
    for seed in ("0", "1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, check=True, timeout=60
        )
        assert out.stdout.strip() == expected


# --- info series ----------------------------------------------------------------------------------------


def test_build_info_names_the_version_and_python(client: httpx.Client) -> None:
    labels, value = only(scrape(client), "podpatterns_build_info")
    assert labels == {"version": __version__, "python": platform.python_version()} and value == 1


def test_config_info_is_the_fingerprint_of_the_served_config(client: httpx.Client) -> None:
    from tests.conftest import GOLDEN_CONFIG

    labels, value = only(scrape(client), "podpatterns_config_info")
    assert labels == {"fingerprint": config_fingerprint(load_config(GOLDEN_CONFIG))} and value == 1


def test_config_info_follows_reloads_and_keeps_the_good_one_on_a_refused_file(
    tmp_path: Path, dev_certs: CertPaths
) -> None:
    config = tmp_path / "config.yaml"

    def write(text: str) -> None:  # a new file swapped in, as kubelet updates a ConfigMap volume
        staged = tmp_path / "staged.yaml"
        staged.write_text(text)
        os.replace(staged, config)

    write("nativeSidecars: true\n")
    server = start_server(dev_certs.tls_crt, dev_certs.tls_key, dev_certs.ca_crt, config, tmp_path / "log")
    try:
        with server.client() as c:

            def fingerprint() -> str:
                return only(scrape(c), "podpatterns_config_info")[0]["fingerprint"]

            def reloads(name: str) -> float:
                return only(scrape(c), name)[1]

            first = fingerprint()
            assert first == config_fingerprint(load_config(config))
            # The same settings written differently: reloaded, same fingerprint.
            write("# reformatted\nnativeSidecars: true   # still\nimageAllowlist: []\n")
            wait_for(lambda: reloads("podpatterns_config_reloads_total") == 1, "the reformatted file to load")
            assert fingerprint() == first
            # A real change: a new fingerprint, the one the same loader gives that file.
            write("nativeSidecars: true\nlogTail:\n  image: registry.example.com/busybox:9\n  runAsUser: 1000\n")
            wait_for(lambda: fingerprint() != first, "the changed config's fingerprint")
            second = fingerprint()
            assert second == config_fingerprint(load_config(config))
            # A refused file: the last good config, and its fingerprint, stay.
            write("logTail:\n  image: 'bad image; rm -rf /'\n")
            wait_for(lambda: reloads("podpatterns_config_reload_failures_total") == 1, "the refused reload")
            assert fingerprint() == second
            assert only(scrape(c), "podpatterns_config_last_reload_success")[1] == 0
        log = server.log.read_text()
        assert f'"fingerprint":"{second}"' in log  # the reload log line names it too
    finally:
        stop_server(server)


# --- the certificate ------------------------------------------------------------------------------------


def test_cert_expiry_is_the_served_certificates_not_after(client: httpx.Client, dev_certs: CertPaths) -> None:
    _, value = only(scrape(client), "podpatterns_tls_cert_expiry_timestamp_seconds")
    assert value == not_after(dev_certs.tls_crt)


def test_cert_expiry_follows_rotation_and_not_a_broken_file(tmp_path: Path) -> None:
    certs = write_certs(tmp_path / "a", dns_names=["localhost"], ip_addresses=["127.0.0.1"], days=30)
    live = tmp_path / "live"
    live.mkdir()
    (live / "tls.crt").write_bytes(certs.tls_crt.read_bytes())
    (live / "tls.key").write_bytes(certs.tls_key.read_bytes())
    server = start_server(live / "tls.crt", live / "tls.key", certs.ca_crt, None, tmp_path / "log")
    try:
        with server.client() as c:

            def expiry() -> float:
                return only(scrape(c), "podpatterns_tls_cert_expiry_timestamp_seconds")[1]

            assert expiry() == not_after(certs.tls_crt)
            # A renewed leaf (90 days, same CA) swapped in the way kubelet updates a mounted Secret.
            ca_key = wc.serialization.load_pem_private_key(certs.ca_key.read_bytes(), None)
            ca_cert = x509.load_pem_x509_certificate(certs.ca_crt.read_bytes())
            key, cert = wc.generate_serving_cert(ca_key, ca_cert, ["localhost"], ["127.0.0.1"], days=90)
            (live / "new.key").write_bytes(wc._key_pem(key))
            (live / "new.crt").write_bytes(wc._cert_pem(cert))
            os.replace(live / "new.key", live / "tls.key")
            os.replace(live / "new.crt", live / "tls.crt")
            renewed = cert.not_valid_after_utc.timestamp()
            assert renewed - not_after(certs.tls_crt) > 59 * 86400
            wait_for(lambda: expiry() == renewed, "the renewed certificate's notAfter")
            # An unusable file is not loaded, so the gauge keeps describing the certificate still served.
            (live / "broken.crt").write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n")
            os.replace(live / "broken.crt", live / "tls.crt")
            wait_for(
                lambda: ({"result": "failure"}, 1.0) in scrape(c)["podpatterns_tls_cert_reloads_total"],
                "the refused certificate reload",
            )
            assert expiry() == renewed
    finally:
        stop_server(server)


# --- requests in flight ---------------------------------------------------------------------------------


def _in_flight(client: httpx.Client) -> float:
    return only(scrape(client), "podpatterns_admission_requests_in_flight")[1]


def _open_review(server: Server, body: bytes) -> ssl.SSLSocket:
    """A POST /mutate whose head and first half of the body are sent; the rest is up to the caller."""
    host, port = server.url.removeprefix("https://").split(":")
    ctx = ssl.create_default_context(cafile=str(server.ca))
    sock = ctx.wrap_socket(socket.create_connection((host, int(port)), timeout=10), server_hostname=host)
    head = (
        f"POST /mutate HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock.sendall(head + body[: len(body) // 2])
    return sock


def test_in_flight_counts_a_review_being_received_and_returns_to_zero(server: Server, client: httpx.Client) -> None:

    assert _in_flight(client) == 0
    body = json.dumps(shared_review("deployment-elasticsearch.json")).encode()
    sock = _open_review(server, body)
    try:
        wait_for(lambda: _in_flight(client) == 1, "the half-sent review to count")
        sock.sendall(body[len(body) // 2 :])
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200")
    finally:
        sock.close()
    wait_for(lambda: _in_flight(client) == 0, "in flight back to 0")
    # A client that gives up mid-body is not counted forever.
    sock = _open_review(server, body)
    wait_for(lambda: _in_flight(client) == 1, "the second half-sent review to count")
    sock.close()
    wait_for(lambda: _in_flight(client) == 0, "in flight back to 0 after the disconnect")
    # And after ordinary reviews, malformed requests and errors alike.
    for request in (review_for({"metadata": {"name": "x"}}), {"not": "a review"}):
        client.post("/mutate", json=request)
    client.post("/mutate", content=b"{}", headers={"Content-Type": "text/plain"})
    assert _in_flight(client) == 0


def test_every_operating_series_exists_from_the_start(client: httpx.Client) -> None:
    """What the chart's alerts and dashboard need before any event, so the first one is an increase."""
    samples = scrape(client)
    for name in (
        "podpatterns_build_info",
        "podpatterns_config_info",
        "podpatterns_tls_cert_expiry_timestamp_seconds",
        "podpatterns_admission_requests_in_flight",
        "podpatterns_config_last_reload_success",
        "podpatterns_config_reload_failures_total",
    ):
        assert len(samples.get(name, [])) == 1, name
    assert {labels["result"] for labels, _ in samples["podpatterns_admission_reviews_total"]} >= {"error", "denied"}
    assert {labels["status"] for labels, _ in samples["podpatterns_malformed_requests_total"]} == {"400", "413", "415"}


def test_readme_lists_every_metric_the_server_exposes(client: httpx.Client) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    names = set()
    for family in text_string_to_metric_families(client.get("/metrics").text):
        if not family.name.endswith("_created"):  # prometheus_client's creation time of each Counter
            names.add(f"{family.name}_total" if family.type == "counter" else family.name)
    missing = sorted(name for name in names if f"`{name}" not in readme)
    assert not missing, f"README.md does not document {missing}"
