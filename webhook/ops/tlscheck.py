"""Does the webhook configuration's caBundle verify the certificate the webhook serves, and until when?
First by dialling a ready endpoint as the API server does (server name <svc>.<ns>.svc); when the pod
network is out of reach (a laptop outside the cluster), by checking the Deployment's TLS Secret instead."""

from __future__ import annotations

import base64
import datetime as dt
import socket
import ssl
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtensionOID

DIAL_TIMEOUT = 3.0


@dataclass(frozen=True)
class Verdict:
    verified: bool | None  # None: could not be checked
    how: str  # what was checked, for the report
    not_after: dt.datetime | None = None


def ca_certificates(ca_bundle_b64: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(base64.b64decode(ca_bundle_b64))


def dial(address: str, port: int, server_name: str, ca_bundle_b64: str) -> Verdict:
    """Raises OSError when the address cannot be reached (the caller then falls back)."""
    context = ssl.create_default_context(cadata=base64.b64decode(ca_bundle_b64).decode("ascii"))
    # The API server's Go verifier decides; Python's stricter X.509 checks (3.13) are not its rules.
    context.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)
    where = f"dialled {address}:{port} as {server_name}"
    with socket.create_connection((address, port), timeout=DIAL_TIMEOUT) as raw:
        try:
            with context.wrap_socket(raw, server_hostname=server_name) as tls:
                der = tls.getpeercert(binary_form=True)
        except ssl.SSLCertVerificationError as exc:
            return Verdict(False, f"{where}: {exc.verify_message}")
    cert = x509.load_der_x509_certificate(der) if der else None
    return Verdict(True, where, cert.not_valid_after_utc if cert else None)


def verify_pem(leaf_pem: bytes, ca_bundle_b64: str, server_name: str, now: dt.datetime | None = None) -> Verdict:
    """The Secret's tls.crt against the caBundle: issued by one of its CAs, names server_name, in date."""
    now = now or dt.datetime.now(dt.UTC)
    chain = x509.load_pem_x509_certificates(leaf_pem)
    leaf = chain[0]
    problems = []
    issuers = [*ca_certificates(ca_bundle_b64), *chain[1:]]
    if not any(_issued_by(leaf, ca) for ca in issuers):
        problems.append("not signed by a CA in the caBundle")
    try:
        names = leaf.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
        dns = names.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        dns = []
    if server_name not in dns:
        problems.append(f"does not name {server_name} (it names {', '.join(dns) or 'nothing'})")
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        problems.append("outside its validity period")
    return Verdict(not problems, "; ".join(problems), leaf.not_valid_after_utc)


def _issued_by(leaf: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        leaf.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):  # a wrong signature, issuer name or key type
        return False
    return True
