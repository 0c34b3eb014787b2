"""The test cluster's certificates: one CA, the API server's serving cert, client certs by user and group.

Kubernetes authenticates x509 clients by subject: CN is the user, O the groups. The kubelet registers as
`system:node:<name>` in `system:nodes`, so the real Node authorizer admits it without a bootstrap flow.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from webhook.certs import generate_ca

Key = ec.EllipticCurvePrivateKey


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: Key | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class ClusterPKI:
    """Writes `<name>.crt` / `<name>.key` pairs into one directory, all signed by `ca.crt`."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.ca_key, self.ca_cert = generate_ca("podpatterns test cluster CA", days=30)
        (directory / "ca.crt").write_bytes(_pem(self.ca_cert))
        (directory / "ca.key").write_bytes(_key_pem(self.ca_key))
        (directory / "ca.key").chmod(0o600)

    @property
    def ca(self) -> Path:
        return self.dir / "ca.crt"

    def issue(
        self,
        name: str,
        *,
        common_name: str,
        organizations: Sequence[str] = (),
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str] = (),
        server: bool = False,
        client: bool = False,
    ) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]))  # names go in the SANs
        now = dt.datetime.now(dt.UTC)
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
            [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        )
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.ca_key, hashes.SHA256())
        crt_path, key_path = self.dir / f"{name}.crt", self.dir / f"{name}.key"
        crt_path.write_bytes(_pem(cert))
        key_path.write_bytes(_key_pem(key))
        key_path.chmod(0o600)
        return crt_path, key_path

    def service_account_keys(self) -> tuple[Path, Path]:
        """The key pair that signs (private) and verifies (public) ServiceAccount tokens."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private, public = self.dir / "sa.key", self.dir / "sa.pub"
        private.write_bytes(_key_pem(key))
        private.chmod(0o600)
        public.write_bytes(
            key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        return private, public


def kubeconfig(path: Path, *, server: str, ca: Path, cert: Path, key: Path, user: str) -> Path:
    """A kubeconfig that names files (not inline data), for one user against one server."""
    import yaml

    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "podpatterns-test", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}],
        "contexts": [{"name": "podpatterns-test", "context": {"cluster": "podpatterns-test", "user": user}}],
        "current-context": "podpatterns-test",
    }
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o600)
    return path
