"""webhook.certs: real certificates checked with cryptography, the openssl CLI and a TLS handshake."""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import http.server
import ipaddress
import shutil
import ssl
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from webhook import certs

SVC_NAMES = [
    "podpatterns",
    "podpatterns.infra",
    "podpatterns.infra.svc",
    "podpatterns.infra.svc.cluster.local",
]


def _load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _ext(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.Extension[x509.ExtensionType]:
    return cert.extensions.get_extension_for_class(kind)


def _write_pair(out: Path, ca_cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, leaf: x509.Certificate) -> None:
    """Put a hand-made CA/leaf pair where ensure_dev_certs looks, bypassing write_certs."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "ca.crt").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    (out / "tls.crt").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (out / "tls.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def _snapshot(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in ("ca.crt", "tls.crt", "tls.key")}


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> certs.CertPaths:
    out = tmp_path_factory.mktemp("certs") / "out"
    return certs.write_certs(out, dns_names=SVC_NAMES, ip_addresses=["127.0.0.1"])


# --- names and generation -------------------------------------------------------------------------


def test_service_dns_names() -> None:
    assert certs.service_dns_names("podpatterns", "infra") == SVC_NAMES


@pytest.mark.parametrize(("service", "namespace"), [("Bad_Name", "ns"), ("svc", "a.b"), ("", "ns")])
def test_service_dns_names_rejects_non_labels(service: str, namespace: str) -> None:
    with pytest.raises(ValueError, match="DNS label"):
        certs.service_dns_names(service, namespace)


def test_ca_is_a_pathlen0_signing_ca() -> None:
    key, ca = certs.generate_ca()
    assert isinstance(key.curve, ec.SECP256R1)
    assert ca.subject == ca.issuer
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "podpatterns CA"
    bc = _ext(ca, x509.BasicConstraints)
    assert bc.critical and bc.value.ca is True and bc.value.path_length == 0
    ku = _ext(ca, x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign and not ku.digital_signature
    ski = _ext(ca, x509.SubjectKeyIdentifier).value
    assert ski.digest == x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest
    ca.verify_directly_issued_by(ca)  # self-signed


def test_serving_cert_fields() -> None:
    ca_key, ca = certs.generate_ca()
    key, leaf = certs.generate_serving_cert(ca_key, ca, SVC_NAMES, ["127.0.0.1", "::1"])
    assert isinstance(key.curve, ec.SECP256R1)
    leaf.verify_directly_issued_by(ca)
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "podpatterns"
    sans = _ext(leaf, x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == SVC_NAMES
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert list(_ext(leaf, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    ku = _ext(leaf, x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_cert_sign
    bc = _ext(leaf, x509.BasicConstraints)
    assert bc.critical and bc.value.ca is False
    aki = _ext(leaf, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == _ext(ca, x509.SubjectKeyIdentifier).value.digest


def test_validity_windows() -> None:
    now = dt.datetime.now(dt.UTC)
    ca_key, ca = certs.generate_ca(days=3650)
    _, leaf = certs.generate_serving_cert(ca_key, ca, ["x"], days=30)
    for cert in (ca, leaf):
        backdate = now - cert.not_valid_before_utc
        assert dt.timedelta(minutes=4) < backdate < dt.timedelta(minutes=6)
    assert abs(ca.not_valid_after_utc - (now + dt.timedelta(days=3650))) < dt.timedelta(minutes=1)
    assert abs(leaf.not_valid_after_utc - (now + dt.timedelta(days=30))) < dt.timedelta(minutes=1)


def test_leaf_never_outlives_its_ca() -> None:
    ca_key, ca = certs.generate_ca(days=10)
    _, leaf = certs.generate_serving_cert(ca_key, ca, ["x"], days=365)
    assert leaf.not_valid_after_utc == ca.not_valid_after_utc


def test_long_first_name_goes_to_san_only() -> None:
    long_name = "a" * 60 + ".example.com"
    ca_key, ca = certs.generate_ca()
    _, leaf = certs.generate_serving_cert(ca_key, ca, [long_name])
    assert len(leaf.subject) == 0
    san = _ext(leaf, x509.SubjectAlternativeName)
    assert san.critical and san.value.get_values_for_type(x509.DNSName) == [long_name]


@pytest.mark.parametrize("kwargs", [{"dns_names": []}, {"dns_names": ["x"], "days": 0}])
def test_serving_cert_rejects_bad_input(kwargs: dict) -> None:
    ca_key, ca = certs.generate_ca()
    with pytest.raises(ValueError):
        certs.generate_serving_cert(ca_key, ca, **kwargs)


# --- files ----------------------------------------------------------------------------------------


def test_written_chain_verifies_with_cryptography(written: certs.CertPaths) -> None:
    ca, leaf = _load_cert(written.ca_crt), _load_cert(written.tls_crt)
    leaf.verify_directly_issued_by(ca)
    key = serialization.load_pem_private_key(written.tls_key.read_bytes(), password=None)
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert key.public_key().public_bytes(*spki) == leaf.public_key().public_bytes(*spki)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")
def test_written_chain_verifies_with_openssl(written: certs.CertPaths) -> None:
    result = subprocess.run(
        ["openssl", "verify", "-purpose", "sslserver", "-CAfile", written.ca_crt, written.tls_crt],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(": OK")


def test_file_layout_and_modes(written: certs.CertPaths) -> None:
    out = written.tls_crt.parent
    assert written == certs.CertPaths(
        ca_crt=out / "ca.crt", tls_crt=out / "tls.crt", tls_key=out / "tls.key", ca_key=out / "ca" / "ca.key"
    )
    assert stat.S_IMODE(written.tls_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(written.ca_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(written.ca_key.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(written.tls_crt.stat().st_mode) == 0o644
    # The serving dir holds only the Secret's files (and the ca/ subdir); no temp files left behind.
    assert sorted(p.name for p in out.iterdir()) == ["ca", "ca.crt", "tls.crt", "tls.key"]
    ca_key_pem = written.ca_key.read_bytes()
    assert all(ca_key_pem not in p.read_bytes() for p in out.iterdir() if p.is_file())
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ca_cert = _load_cert(written.ca_crt)
    assert ca_key.public_key().public_bytes(*spki) == ca_cert.public_key().public_bytes(*spki)


def test_rewrite_replaces_files_in_place(tmp_path: Path) -> None:
    first = certs.write_certs(tmp_path, dns_names=["x"], ip_addresses=[])
    before = first.tls_key.read_bytes()
    second = certs.write_certs(tmp_path, dns_names=["x"], ip_addresses=[])
    assert second == first and second.tls_key.read_bytes() != before
    assert stat.S_IMODE(second.tls_key.stat().st_mode) == 0o600


# --- ensure_dev_certs -----------------------------------------------------------------------------


def test_dev_certs_generated_with_local_and_service_names(tmp_path: Path) -> None:
    paths = certs.ensure_dev_certs(tmp_path / "dev")
    leaf = _load_cert(paths.tls_crt)
    leaf.verify_directly_issued_by(_load_cert(paths.ca_crt))
    sans = _ext(leaf, x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [
        "localhost",
        *certs.service_dns_names("podpatterns", "podpatterns"),
    ]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert paths.ca_key.exists() and paths.ca_key.parent.name == "ca"


def test_dev_certs_reused_when_valid(tmp_path: Path) -> None:
    out = tmp_path / "dev"
    first = certs.ensure_dev_certs(out)
    before = _snapshot(out)
    assert certs.ensure_dev_certs(out) == first
    assert _snapshot(out) == before


def test_dev_certs_regenerated_near_expiry(tmp_path: Path) -> None:
    out = tmp_path / "dev"
    ca_key, ca = certs.generate_ca()
    key, leaf = certs.generate_serving_cert(ca_key, ca, ["localhost"], ["127.0.0.1"], days=1)
    _write_pair(out, ca, key, leaf)
    before = _snapshot(out)
    paths = certs.ensure_dev_certs(out)
    assert _snapshot(out)["tls.crt"] != before["tls.crt"]
    assert _load_cert(paths.tls_crt).not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=300)


def test_dev_certs_regenerated_when_leaf_does_not_verify(tmp_path: Path) -> None:
    out = tmp_path / "dev"
    _, ca = certs.generate_ca()
    other_key, _ = certs.generate_ca()
    key, leaf = certs.generate_serving_cert(other_key, ca, ["localhost"], ["127.0.0.1"])  # wrong signer
    _write_pair(out, ca, key, leaf)
    with pytest.raises(InvalidSignature):  # the setup really is broken
        leaf.verify_directly_issued_by(ca)
    paths = certs.ensure_dev_certs(out)
    _load_cert(paths.tls_crt).verify_directly_issued_by(_load_cert(paths.ca_crt))
    assert paths.tls_crt.read_bytes() != leaf.public_bytes(serialization.Encoding.PEM)


def test_dev_certs_regenerated_when_localhost_not_covered(tmp_path: Path) -> None:
    out = tmp_path / "dev"
    ca_key, ca = certs.generate_ca()
    key, leaf = certs.generate_serving_cert(ca_key, ca, certs.service_dns_names("podpatterns", "podpatterns"))
    _write_pair(out, ca, key, leaf)
    paths = certs.ensure_dev_certs(out)
    sans = _ext(_load_cert(paths.tls_crt), x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)


def test_dev_certs_regenerated_when_key_does_not_match(tmp_path: Path) -> None:
    out = tmp_path / "dev"
    ca_key, ca = certs.generate_ca()
    _, leaf = certs.generate_serving_cert(ca_key, ca, ["localhost"], ["127.0.0.1"])
    stray_key, _ = certs.generate_serving_cert(ca_key, ca, ["localhost"], ["127.0.0.1"])
    _write_pair(out, ca, stray_key, leaf)
    paths = certs.ensure_dev_certs(out)
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(paths.tls_crt, paths.tls_key)


# --- manifests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_ca", [True, False])
def test_secret_manifest(with_ca: bool) -> None:
    text = certs.secret_manifest("podpatterns-tls", "infra", b"CRT\n", b"KEY\n", b"CA\n" if with_ca else None)
    doc = yaml.safe_load(text)
    assert doc["apiVersion"] == "v1" and doc["kind"] == "Secret"
    assert doc["metadata"] == {"name": "podpatterns-tls", "namespace": "infra"}
    assert doc["type"] == "kubernetes.io/tls"
    decoded = {k: base64.b64decode(v, validate=True) for k, v in doc["data"].items()}
    expected = {"tls.crt": b"CRT\n", "tls.key": b"KEY\n"} | ({"ca.crt": b"CA\n"} if with_ca else {})
    assert decoded == expected


def test_ca_bundle_round_trips(written: certs.CertPaths) -> None:
    pem = written.ca_crt.read_bytes()
    bundle = certs.ca_bundle(pem)
    assert "\n" not in bundle
    assert base64.b64decode(bundle, validate=True) == pem


def test_ca_bundle_rejects_non_pem() -> None:
    with pytest.raises(ValueError):
        certs.ca_bundle(b"not a certificate")


# --- CLI ------------------------------------------------------------------------------------------


def _certs_args(out: Path, *extra: str, service: str = "podpatterns", namespace: str = "infra") -> argparse.Namespace:
    """Parse ``podpatterns certs ...`` the way the real CLI will: a parser with register_cli's subcommand."""
    parser = argparse.ArgumentParser(prog="podpatterns")
    certs.register_cli(parser.add_subparsers(dest="command", required=True))
    argv = ["certs", "--service", service, "--namespace", namespace, "--out", str(out), *extra]
    return parser.parse_args(argv)


def test_cli_writes_files_and_prints_secret(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    args = _certs_args(out, "--days", "30", "--print-secret", "podpatterns-tls")
    assert args.func is certs.run_certs
    assert args.func(args) == 0
    captured = capsys.readouterr()
    assert str(out / "tls.crt") in captured.err and str(out / "ca" / "ca.key") in captured.err
    doc = yaml.safe_load(captured.out)
    assert doc["type"] == "kubernetes.io/tls"
    assert doc["metadata"] == {"name": "podpatterns-tls", "namespace": "infra"}
    for key in ("tls.crt", "tls.key", "ca.crt"):
        assert base64.b64decode(doc["data"][key]) == (out / key).read_bytes()
    leaf = _load_cert(out / "tls.crt")
    assert _ext(leaf, x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName) == SVC_NAMES
    assert leaf.not_valid_after_utc < dt.datetime.now(dt.UTC) + dt.timedelta(days=31)


def test_cli_prints_ca_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _certs_args(tmp_path, "--print-ca-bundle")
    assert args.func(args) == 0
    bundle = capsys.readouterr().out.strip()
    assert base64.b64decode(bundle) == (tmp_path / "ca.crt").read_bytes()


def test_cli_unwritable_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    # A path below a regular file cannot be created, even by root (chmod alone would not stop root).
    args = _certs_args(blocker / "x")
    assert args.func(args) == 2
    captured = capsys.readouterr()
    assert f"cannot write to {blocker / 'x'}" in captured.err and captured.out == ""


def test_cli_rejects_bad_service_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _certs_args(tmp_path, service="Bad_Name")
    assert args.func(args) == 2
    assert "DNS label" in capsys.readouterr().err
    assert not (tmp_path / "tls.key").exists()


def test_cli_rejects_non_positive_days(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        _certs_args(tmp_path, "--days", "0")


# --- a real TLS handshake -------------------------------------------------------------------------


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass


@pytest.fixture
def https_url(written: certs.CertPaths) -> Iterator[str]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(written.tls_crt, written.tls_key)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_tls_handshake_trusts_only_our_ca(written: certs.CertPaths, https_url: str) -> None:
    client = ssl.create_default_context(cafile=str(written.ca_crt))
    # The strict X.509 checks Python 3.13 turns on by default (critical basicConstraints, AKI, ...).
    client.verify_flags |= ssl.VERIFY_X509_STRICT
    response = httpx.get(https_url, verify=client, trust_env=False, timeout=5)
    assert response.status_code == 200 and response.text == "hello"

    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(https_url, trust_env=False, timeout=5)


def test_an_unusable_pair_is_reported_once_and_a_good_one_loads(tmp_path: Path) -> None:
    from webhook import tls

    first = certs.write_certs(tmp_path / "a", dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    second = certs.write_certs(tmp_path / "b", dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    live = tmp_path / "live"
    live.mkdir()
    shutil.copy(first.tls_crt, live / "tls.crt")
    shutil.copy(first.tls_key, live / "tls.key")
    reloader = tls.CertReloader(
        tls.server_context(live / "tls.crt", live / "tls.key"), live / "tls.crt", live / "tls.key"
    )
    before = dict(tls.RELOADS)
    assert reloader.check() is None  # nothing changed
    shutil.copy(second.tls_key, live / "tls.key")  # mid-rotation: the new key beside the old certificate
    assert reloader.check() is False and reloader.check() is False
    assert tls.RELOADS["failure"] == before["failure"] + 1  # one unusable pair, counted once
    shutil.copy(second.tls_crt, live / "tls.crt")
    assert reloader.check() is True and reloader.check() is None
    assert tls.RELOADS["success"] == before["success"] + 1
