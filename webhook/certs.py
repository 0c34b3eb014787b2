"""TLS material for the webhook: a private CA and the serving certificate it signs.

The Kubernetes API server only calls an admission webhook over HTTPS, verifying the serving
certificate against the ``caBundle`` of the MutatingWebhookConfiguration. This module makes that pair
(ECDSA P-256, SANs only, no CN fallback needed), writes it in the layout of a ``kubernetes.io/tls``
Secret, and renders the Secret manifest and ``caBundle`` value. It backs ``podpatterns certs`` (a
cluster without cert-manager) and ``podpatterns serve --dev`` (self-signed files for a laptop).

Layout written by :func:`write_certs`::

    out_dir/ca.crt      CA certificate (public: the caBundle)
    out_dir/tls.crt     serving certificate
    out_dir/tls.key     serving key, 0600
    out_dir/ca/ca.key   CA key, 0600, in its own 0700 directory
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import ipaddress
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey

# Certificates start slightly in the past: a node whose clock lags would otherwise reject a fresh cert.
CLOCK_SKEW = dt.timedelta(minutes=5)
# ensure_dev_certs regenerates before this, so a dev server never starts with a cert about to lapse.
DEV_MIN_REMAINING = dt.timedelta(days=7)
DEV_SERVICE = ("podpatterns", "podpatterns")
DEV_DNS_NAMES = ("localhost",)
DEV_IP_ADDRESSES = ("127.0.0.1", "::1")

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_CN_MAX = 64  # X.520 upper bound on commonName; cryptography refuses longer values.


@dataclass(frozen=True)
class CertPaths:
    """Where :func:`write_certs` put each file."""

    ca_crt: Path
    tls_crt: Path
    tls_key: Path
    ca_key: Path


def service_dns_names(service: str, namespace: str) -> list[str]:
    """Every name the API server may use for a Service: short, namespaced and fully qualified."""
    for label in (service, namespace):
        if not _DNS_LABEL.fullmatch(label):
            raise ValueError(f"{label!r} is not a DNS label (lowercase alphanumerics and '-', max 63)")
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]


def _new_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _validity(days: int) -> tuple[dt.datetime, dt.datetime]:
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    now = dt.datetime.now(dt.UTC)
    return now - CLOCK_SKEW, now + dt.timedelta(days=days)


def generate_ca(common_name: str = "podpatterns CA", days: int = 3650) -> tuple[PrivateKey, x509.Certificate]:
    """A self-signed CA that may sign leaves only (pathlen 0), never further CAs."""
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    not_before, not_after = _validity(days)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        # Critical flags: strict verifiers (Python 3.13 VERIFY_X509_STRICT, Go) insist on them.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def generate_serving_cert(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str] = (),
    days: int = 365,
) -> tuple[PrivateKey, x509.Certificate]:
    """A server-auth leaf for ``dns_names``/``ip_addresses``, signed by the CA.

    The leaf never outlives its CA: past that date it would fail verification anyway.
    """
    if not dns_names:
        raise ValueError("a serving certificate needs at least one DNS name")
    key = _new_key()
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    # Clients match hostnames against SANs only; CN is informational. RFC 5280 wants the SAN extension
    # critical when the subject is empty, which is the case when the first name is too long for a CN.
    cn = dns_names[0]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if len(cn) <= _CN_MAX else [])
    not_before, not_after = _validity(days)
    not_after = min(not_after, ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # keyEncipherment is an RSA key-transport bit; an ECDSA key only signs.
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=not subject)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_authority_key_id(ca_key, ca_cert), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _authority_key_id(ca_key: PrivateKey, ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    # Reuse the CA's own SKI when it has one, so chain building matches byte for byte.
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write via a temp file in the same directory and rename over ``path``.

    A reader (the webhook's file watcher) sees either the old file or the new one, never half a key;
    the mode is set before any byte lands, so a key is never briefly world-readable.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_certs(out_dir: Path, *, dns_names: Sequence[str], ip_addresses: Sequence[str], days: int = 365) -> CertPaths:
    """Generate a fresh CA and serving cert and write them to ``out_dir`` (layout in the module doc)."""
    ca_key, ca_cert = generate_ca()
    tls_key, tls_cert = generate_serving_cert(ca_key, ca_cert, dns_names, ip_addresses, days=days)
    paths = CertPaths(
        ca_crt=out_dir / "ca.crt",
        tls_crt=out_dir / "tls.crt",
        tls_key=out_dir / "tls.key",
        ca_key=out_dir / "ca" / "ca.key",
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    # The CA key sits apart so that mounting or `kubectl create secret tls --from-file` on out_dir's
    # tls.* never ships it; mkdir's mode is masked by umask and ignored for an existing dir, hence chmod.
    paths.ca_key.parent.mkdir(mode=0o700, exist_ok=True)
    paths.ca_key.parent.chmod(0o700)
    _write_atomic(paths.ca_key, _key_pem(ca_key), 0o600)
    _write_atomic(paths.ca_crt, _cert_pem(ca_cert), 0o644)
    # Key before cert: a watcher keyed on tls.crt then finds the matching key already in place.
    _write_atomic(paths.tls_key, _key_pem(tls_key), 0o600)
    _write_atomic(paths.tls_crt, _cert_pem(tls_cert), 0o644)
    return paths


def _dev_files_usable(paths: CertPaths) -> bool:
    """True when the serving files in place can serve localhost for at least DEV_MIN_REMAINING."""
    try:
        ca_cert = x509.load_pem_x509_certificate(paths.ca_crt.read_bytes())
        leaf = x509.load_pem_x509_certificate(paths.tls_crt.read_bytes())
        key = serialization.load_pem_private_key(paths.tls_key.read_bytes(), password=None)
        leaf.verify_directly_issued_by(ca_cert)
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, TypeError, x509.ExtensionNotFound, InvalidSignature):
        return False
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
        return False  # a tls.key from another generation would fail at load_cert_chain
    if "localhost" not in sans.get_values_for_type(x509.DNSName):
        return False
    if ipaddress.ip_address("127.0.0.1") not in sans.get_values_for_type(x509.IPAddress):
        return False
    now = dt.datetime.now(dt.UTC)
    return all(c.not_valid_before_utc <= now <= c.not_valid_after_utc - DEV_MIN_REMAINING for c in (leaf, ca_cert))


def ensure_dev_certs(out_dir: Path) -> CertPaths:
    """Reuse the dev certs in ``out_dir`` if still good, else write new ones (for ``serve --dev``).

    Reuse keeps a CA the developer already trusts (curl --cacert, a kind cluster's caBundle) stable
    across restarts. Regeneration replaces the CA too, so such clients must pick up the new ca.crt.
    """
    paths = CertPaths(
        ca_crt=out_dir / "ca.crt",
        tls_crt=out_dir / "tls.crt",
        tls_key=out_dir / "tls.key",
        ca_key=out_dir / "ca" / "ca.key",
    )
    if _dev_files_usable(paths):
        return paths
    return write_certs(
        out_dir,
        dns_names=[*DEV_DNS_NAMES, *service_dns_names(*DEV_SERVICE)],
        ip_addresses=list(DEV_IP_ADDRESSES),
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def secret_manifest(name: str, namespace: str, tls_crt: bytes, tls_key: bytes, ca_crt: bytes | None = None) -> str:
    """A ``kubernetes.io/tls`` Secret as YAML; ``ca.crt`` is the key cert-manager uses for the CA."""
    data = {"tls.crt": _b64(tls_crt), "tls.key": _b64(tls_key)}
    if ca_crt is not None:
        data["ca.crt"] = _b64(ca_crt)
    manifest = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "kubernetes.io/tls",
        "data": data,
    }
    return yaml.safe_dump(manifest, sort_keys=False)


def ca_bundle(ca_crt: bytes) -> str:
    """The ``caBundle`` value: base64 of the CA PEM on one line.

    The PEM is parsed first: a wrong bundle makes the API server fail every admission call.
    """
    x509.load_pem_x509_certificates(ca_crt)
    return _b64(ca_crt)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def register_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``podpatterns certs`` to the main parser's subcommands."""
    parser = subparsers.add_parser(
        "certs",
        help="generate a CA and serving certificate for the webhook Service",
        description=(
            "Write ca.crt, tls.crt, tls.key (and ca/ca.key, kept out of the Secret) to --out. "
            "A new CA is made on every run. Use one --print-* flag at a time to pipe stdout to kubectl."
        ),
    )
    parser.add_argument("--service", required=True, help="webhook Service name")
    parser.add_argument("--namespace", required=True, help="namespace of the Service")
    parser.add_argument("--out", required=True, type=Path, help="directory to write the files to")
    parser.add_argument("--days", type=_positive_int, default=365, help="serving cert validity (default 365)")
    parser.add_argument(
        "--print-secret", metavar="SECRET_NAME", help="print a kubernetes.io/tls Secret manifest to stdout"
    )
    parser.add_argument(
        "--print-ca-bundle", action="store_true", help="print the caBundle value (base64 CA PEM) to stdout"
    )
    parser.set_defaults(func=run_certs)


def run_certs(args: argparse.Namespace) -> int:
    """Body of ``podpatterns certs``: 0 on success, 2 on bad input or an unwritable directory."""
    try:
        dns_names = service_dns_names(args.service, args.namespace)
    except ValueError as exc:
        sys.stderr.write(f"podpatterns certs: {exc}\n")
        return 2
    out_dir: Path = args.out
    try:
        paths = write_certs(out_dir, dns_names=dns_names, ip_addresses=[], days=args.days)
    except OSError as exc:
        sys.stderr.write(f"podpatterns certs: cannot write to {out_dir}: {exc.strerror or exc}\n")
        return 2
    sys.stderr.write(
        f"wrote CA certificate  {paths.ca_crt}\n"
        f"wrote serving cert    {paths.tls_crt}  (SANs: {', '.join(dns_names)})\n"
        f"wrote serving key     {paths.tls_key}\n"
        f"wrote CA key          {paths.ca_key}  (not part of the Secret; keep it offline or delete it)\n"
    )
    ca_crt = paths.ca_crt.read_bytes()
    if args.print_secret:
        manifest = secret_manifest(
            args.print_secret, args.namespace, paths.tls_crt.read_bytes(), paths.tls_key.read_bytes(), ca_crt
        )
        sys.stdout.write(manifest)
    if args.print_ca_bundle:
        sys.stdout.write(ca_bundle(ca_crt) + "\n")
    return 0
