"""The TLS ambassador run by a real nginx: syntax, TLS policy, mTLS, TCP, rotation, start checks, IPv6, WebSockets.

Each test lays out a pod's filesystem under a temp dir (the absolute directories of the config and of the start
script are rewritten to it) and starts the proxy with its own container command, the constant start script, run
by busybox's sh and sed as in the alpine image, with /usr/sbin/nginx, on free ports. Debian builds the stream
module as a dynamic module while the production image (nginx-unprivileged) has it built in: these tests load it
through the config field a user of a Debian-based image sets, tlsProxy.loadModules.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import itertools
import json
import os
import pwd
import re
import shutil
import signal
import socket
import socketserver
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.conftest import GOLDEN_CONFIG
from tests.helpers import GOLDEN
from webhook.certs import generate_ca, generate_serving_cert
from webhook.injection import InjectorConfig, InvalidAnnotations, inject, parse_config, tls_proxy
from webhook.injection import annotations as keys
from webhook.injection.nginx_conf import (
    AUTH_CA_DIR,
    CLIENT_CA_DIR,
    EGRESS_CA_DIR,
    EGRESS_CLIENT_DIR,
    TLS_DIR,
    TMP_DIR,
    ProxySpec,
    render,
)
from webhook.offline import _pod_slots, inject_documents, load_documents

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
BUSYBOX = shutil.which("busybox") or "/usr/bin/busybox"
STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
DEBIAN_MODULES = (STREAM_MODULE,)  # what tlsProxy.loadModules says for a Debian nginx
INSTALL_HINT = "run .ci/setup.sh (apt-get install nginx-light libnginx-mod-stream busybox)"
PEM = serialization.Encoding.PEM
Key = ec.EllipticCurvePrivateKey

# As root, nginx's workers would drop to "nobody" and then fail to read a 0600 key at handshake time; production
# runs nginx unprivileged anyway, so do the same: run it as nobody over files nobody owns.
RUN_AS: tuple[int, int] | None = None
if os.geteuid() == 0:
    _nobody = pwd.getpwnam("nobody")
    RUN_AS = (_nobody.pw_uid, _nobody.pw_gid)


# --- certificates ---------------------------------------------------------------------------------------------


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(PEM)


def key_pem(key: Key) -> bytes:
    return key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def issue_client_cert(ca_key: Key, ca_cert: x509.Certificate, name: str) -> tuple[Key, x509.Certificate]:
    """A clientAuth leaf: what a service holding a certificate from the pod's client CA presents."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    usage = dict.fromkeys(
        (
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ),
        False,
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, **usage), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


@dataclass(frozen=True)
class Pki:
    ca: tuple[Key, x509.Certificate]  # signs nginx's serving certificate (the pod's TLS Secret)
    client_ca: tuple[Key, x509.Certificate]  # the pod's client CA (tls-proxy-client-ca)
    other_ca: tuple[Key, x509.Certificate]  # a CA the pod does not trust

    def serving_cert(self) -> tuple[Key, x509.Certificate]:
        return generate_serving_cert(*self.ca, dns_names=["localhost"], ip_addresses=["127.0.0.1", "::1"])


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki(generate_ca("nginx test CA"), generate_ca("client CA"), generate_ca("untrusted CA"))


# --- ports -----------------------------------------------------------------------------------------------------


LISTEN = re.compile(r"^ *listen \[::\]:(\d+) ssl ipv6only=off;$", re.MULTILINE)


def host_has_ipv6() -> bool:
    """What the start script looks at: an IPv6 address in this network namespace (loopback's ::1 will do)."""
    try:
        return bool(Path(tls_proxy.IF_INET6).read_text().strip())
    except OSError:
        return False


def wildcard_socket() -> socket.socket:
    """A socket like nginx's: [::] for both families where there is IPv6, else 0.0.0.0."""
    if not host_has_ipv6():
        return socket.socket()
    s = socket.socket(socket.AF_INET6)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    return s


def bindable(port: int) -> bool:
    # Below 1024 needs root, which nginx does not have here (in the pod, a sysctl opens low ports to it).
    if port < 1024:
        return False
    with wildcard_socket() as s:
        try:
            s.bind(("", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    # nginx binds every address of both families, so probe the wildcard.
    with wildcard_socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


# --- a pod's filesystem and the nginx running in it ------------------------------------------------------------


def chown(path: Path) -> None:
    if RUN_AS:
        os.chown(path, *RUN_AS)


@dataclass
class PodFs:
    """The pod's mounts under one temp dir; nginx runs with it as prefix."""

    root: Path
    pki: Pki
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def mapping(self) -> dict[str, str]:
        return {
            TLS_DIR: str(self.root / "tls"),
            CLIENT_CA_DIR: str(self.root / "client-ca"),
            AUTH_CA_DIR: str(self.root / "auth-ca"),
            EGRESS_CA_DIR: str(self.root / "egress-ca"),
            EGRESS_CLIENT_DIR: str(self.root / "egress-client"),
            TMP_DIR: str(self.root / "tmp"),
        }

    def put(self, path: Path, data: bytes, mode: int = 0o644) -> None:
        """Write via temp + rename, as the kubelet swaps a Secret's files, and hand the file to nginx's user."""
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        tmp.chmod(mode)
        chown(tmp)
        os.replace(tmp, path)

    def install_tls(self, key: Key, cert: x509.Certificate) -> None:
        self.put(self.root / "tls" / "tls.key", key_pem(key), 0o600)  # key first: the cert then finds its key
        self.put(self.root / "tls" / "tls.crt", pem(cert))

    def localize(self, text: str, *, ipv6: bool = True) -> str:
        """A config or the start script with only the pod's absolute directories moved here (one pass: the temp
        dir is under /tmp). ipv6=False points the script at an empty address list: a kernel without IPv6."""
        mapping = self.mapping
        if not ipv6:
            mapping[tls_proxy.IF_INET6] = str(self.root / "if_inet6")
        pattern = re.compile("|".join(re.escape(d) for d in sorted(mapping, key=len, reverse=True)) + r"(?=[/;\s]|$)")
        local = pattern.sub(lambda m: mapping[m.group()], text)
        assert "/etc/podpatterns" not in local
        return local

    def write_conf(self, conf: str) -> Path:
        path = self.root / "nginx" / "nginx.conf"
        self.put(path, self.localize(conf).encode())
        return path

    def args(self, conf: str, *extra: str) -> list[str]:
        return [NGINX, *extra, "-c", str(self.write_conf(conf)), "-p", f"{self.root}/", "-e", "stderr"]

    def check(self, conf: str) -> subprocess.CompletedProcess[str]:
        """`nginx -t`, which binds the listen ports: a port we may not bind is moved to a free one."""
        moved = {port: free_port() for port in {int(p) for p in LISTEN.findall(conf)} if not bindable(port)}
        conf = LISTEN.sub(lambda m: m.group().replace(m.group(1), str(moved.get(int(m.group(1)), m.group(1)))), conf)
        return subprocess.run(self.args(conf, "-t"), capture_output=True, text=True, timeout=10, **run_as())

    def launch(self, spec: ProxySpec, *, ipv6: bool = True) -> subprocess.Popen[bytes]:
        """The proxy container's own command and env, as injected, with the pod's directories moved here."""
        auth_ca = bool(spec.auth and spec.auth.trusted_ca.startswith(AUTH_CA_DIR))
        command = tls_proxy.start_command(mutual_tls=spec.mutual_tls, auth_ca=auth_ca)
        command = [str(self.root / "bin" / "sh"), *(self.localize(part, ipv6=ipv6) for part in command[1:])]
        env = {"PATH": str(self.root / "bin"), tls_proxy.CONF_ENV: self.localize(render(spec))}
        with self.log.open("ab") as out:
            proc = subprocess.Popen(
                command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **run_as()
            )
        self.procs.append(proc)
        return proc

    @property
    def log(self) -> Path:
        return self.root / "nginx.log"

    def start(self, spec: ProxySpec, *, ipv6: bool = True) -> None:
        proc = self.launch(spec, ipv6=ipv6)
        deadline = time.monotonic() + 5
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", spec.listen_port), timeout=1):
                return
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"nginx did not start listening on {spec.listen_port}:\n{self.log.read_text()}")
            time.sleep(0.02)

    def start_fails(self, spec: ProxySpec) -> tuple[int, str]:
        """The exit status and output of a start command that must give up on its own, quickly."""
        proc = self.launch(spec)
        try:
            status = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the proxy started, but should have refused to:\n{self.log.read_text()}")
        return status, self.log.read_text()

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            # The master is gone; its workers share its process group (start_new_session), so none can linger.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)


def run_as() -> dict[str, Any]:
    return {"user": RUN_AS[0], "group": RUN_AS[1], "extra_groups": []} if RUN_AS else {}


@pytest.fixture(scope="module", autouse=True)
def nginx_installed() -> None:
    """Fail, never skip: a missing nginx would otherwise leave the ambassador's config untested in CI."""
    if not Path(NGINX).is_file():
        pytest.fail(f"nginx not found at {NGINX}: {INSTALL_HINT}")
    if not Path(STREAM_MODULE).is_file():
        pytest.fail(f"nginx stream module not found at {STREAM_MODULE}: {INSTALL_HINT}")
    if not Path(BUSYBOX).is_file():
        pytest.fail(f"busybox not found at {BUSYBOX} (the image's sh and sed): {INSTALL_HINT}")


@pytest.fixture
def pod(pki: Pki) -> Iterator[PodFs]:
    # Not tmp_path: pytest's base dir is 0700 root, which nginx running as nobody cannot traverse.
    root = Path(tempfile.mkdtemp(prefix="podpatterns-nginx-"))
    fs = PodFs(root, pki)
    try:
        for sub in ("", "tls", "client-ca", "auth-ca", "egress-ca", "egress-client", "tmp", "nginx", "bin"):
            (root / sub).mkdir(exist_ok=True)
            chown(root / sub)
        # The image's tools: busybox's sh and sed (alpine's are busybox's too), and nginx.
        for tool, target in (("sh", BUSYBOX), ("sed", BUSYBOX), ("nginx", NGINX)):
            os.symlink(target, root / "bin" / tool)
        (root / "if_inet6").touch()  # what a kernel without IPv6 lists
        fs.install_tls(*pki.serving_cert())
        fs.put(root / "client-ca" / "ca.crt", pem(pki.client_ca[1]))
        yield fs
    finally:
        fs.stop()
        shutil.rmtree(root, ignore_errors=True)


# --- the apps behind the proxy ---------------------------------------------------------------------------------


class HttpApp(ThreadingHTTPServer):
    daemon_threads = True
    seen: list[str]


class EchoHandler(BaseHTTPRequestHandler):
    """Answers JSON: the path, X-Forwarded-Proto, and the body's length and sha256."""

    server: HttpApp

    def _answer(self) -> None:
        digest, size, remaining = hashlib.sha256(), 0, int(self.headers.get("Content-Length") or 0)
        while remaining:
            chunk = self.rfile.read(min(remaining, 1 << 16))
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
            remaining -= len(chunk)
        self.server.seen.append(self.path)
        body = json.dumps(
            {
                "path": self.path,
                "proto": self.headers.get("X-Forwarded-Proto"),
                "size": size,
                "sha256": digest.hexdigest(),
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


class TcpEcho(socketserver.ThreadingTCPServer):
    daemon_threads = True
    connections = 0


class TcpEchoHandler(socketserver.BaseRequestHandler):
    server: TcpEcho

    def handle(self) -> None:
        self.server.connections += 1
        while data := self.request.recv(65536):
            self.request.sendall(data)


@contextlib.contextmanager
def serving(server: socketserver.TCPServer) -> Iterator[None]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def http_app() -> Iterator[HttpApp]:
    app = HttpApp(("127.0.0.1", 0), EchoHandler)
    app.seen = []
    with serving(app):
        yield app


@pytest.fixture
def tcp_app() -> Iterator[TcpEcho]:
    app = TcpEcho(("127.0.0.1", 0), TcpEchoHandler)
    with serving(app):
        yield app


def app_port(app: socketserver.TCPServer) -> int:
    return int(app.server_address[1])


# --- clients ---------------------------------------------------------------------------------------------------


def client_context(pki: Pki, pod: PodFs, cert: tuple[Key, x509.Certificate] | None = None) -> ssl.SSLContext:
    """Trusts our CA only; presents `cert` as client certificate when given."""
    ctx = ssl.create_default_context(cadata=pem(pki.ca[1]).decode())
    if cert:
        path = pod.root / f"client-{cert[1].serial_number}.pem"
        path.write_bytes(key_pem(cert[0]) + pem(cert[1]))
        ctx.load_cert_chain(path)
    return ctx


def https(ctx: ssl.SSLContext, port: int) -> httpx.Client:
    return httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=ctx, timeout=10, trust_env=False)


def served_serial(ctx: ssl.SSLContext, port: int) -> int:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der
    return x509.load_der_x509_certificate(der).serial_number


def tls_echo(ctx: ssl.SSLContext, port: int, payload: bytes, host: str = "127.0.0.1") -> bytes:
    """Send payload over TLS and read back as many bytes (fewer if the peer closes)."""
    got = b""
    with (
        socket.create_connection((host, port), timeout=5) as sock,
        ctx.wrap_socket(sock, server_hostname=host) as tls,
    ):
        tls.sendall(payload)
        while len(got) < len(payload) and (chunk := tls.recv(65536)):
            got += chunk
    return got


def raw_get(ctx: ssl.SSLContext, port: int, target: str) -> int:
    """GET with the request target sent byte for byte (httpx would normalize it); returns the status code."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        head = b""
        while b"\r\n" not in head and (chunk := tls.recv(4096)):
            head += chunk
    return int(head.split(b" ", 2)[1])


def client_hello(version: int) -> bytes:
    """A hand-built ClientHello whose only offer is `version` (no supported_versions extension).

    Independent of what the local OpenSSL agrees to send, so it proves the server's floor on any machine.
    """

    def ext(kind: int, data: bytes) -> bytes:
        return kind.to_bytes(2, "big") + len(data).to_bytes(2, "big") + data

    suites = bytes.fromhex("c02bc02fc009c013")  # ECDHE AES-GCM (TLS 1.2) and AES-CBC (TLS 1.0/1.1)
    extensions = (
        ext(0x000A, bytes.fromhex("00020017"))  # supported_groups: P-256
        + ext(0x000B, bytes.fromhex("0100"))  # ec_point_formats: uncompressed
        + ext(0x000D, bytes.fromhex("0006040308040401"))  # signature_algorithms
    )
    body = (
        version.to_bytes(2, "big")
        + os.urandom(32)
        + b"\x00"
        + len(suites).to_bytes(2, "big")
        + suites
        + b"\x01\x00"
        + len(extensions).to_bytes(2, "big")
        + extensions
    )
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + len(handshake).to_bytes(2, "big") + handshake


def first_record(port: int, hello: bytes) -> tuple[int, bytes]:
    """(content type, first two payload bytes) of the server's first TLS record."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(hello)
        data = b""
        while len(data) < 7 and (chunk := sock.recv(7 - len(data))):
            data += chunk
    assert len(data) == 7, f"server closed after {data!r}"
    return data[0], data[5:7]


ALERT, HANDSHAKE = 21, 22
FATAL_PROTOCOL_VERSION = bytes([2, 70])


# --- 1. nginx -t ------------------------------------------------------------------------------------------------


def proxy_conf(pod: dict[str, Any]) -> str | None:
    """The nginx.conf the webhook generated: the proxy container's PODPATTERNS_NGINX_CONF env value."""
    spec = pod.get("spec") or {}
    for container in spec.get("containers", []) + spec.get("initContainers", []):
        if container["name"] == tls_proxy.CONTAINER:
            return next(e["value"] for e in container["env"] if e["name"] == tls_proxy.CONF_ENV)
    return None


def pod_confs(docs: list[Any]) -> list[tuple[str, str]]:
    """(label, nginx.conf) of every pod with a TLS proxy in these documents."""
    found = []
    for index in range(len(docs)):
        for parent, key, label in _pod_slots(docs, index):
            if conf := proxy_conf(parent[key]):
                found.append((label, conf))
    return found


def debian_config() -> InjectorConfig:
    """The golden config as a user of a Debian-based nginx image writes it."""
    data = yaml.safe_load(GOLDEN_CONFIG.read_text())
    data.setdefault("tlsProxy", {})["loadModules"] = list(DEBIAN_MODULES)
    return parse_config(data)


def golden_confs() -> list[Any]:
    """The golden cases' proxies, injected with loadModules for this host's nginx, beside the golden output's."""
    params = []
    for case in sorted(GOLDEN.glob("*.yaml")):
        if case.name == "config.yaml" or case.name.endswith(".injected.yaml"):
            continue
        docs = load_documents(case.read_text())
        injected_before = {label for label, _ in pod_confs(docs)}  # kept as they are: nothing is rendered
        out, _warnings, errors = inject_documents(docs, debian_config())
        assert not errors, errors
        golden = pod_confs(load_documents(case.with_name(case.stem + ".injected.yaml").read_text()))
        for (label, conf), (_, golden_conf) in zip(pod_confs(out), golden, strict=True):
            if label not in injected_before:
                params.append(pytest.param(conf, golden_conf, id=f"{case.stem}:{label}"))
    return params


GOLDEN_CONFS = golden_confs()
SPECS = [
    ProxySpec(8443, 8080, protocol, mtls, paths, load_modules=DEBIAN_MODULES)
    for protocol, mtls, paths in itertools.product(
        ("http", "tcp"), (False, True), ((), ("/healthz",), ("/ready", "/live", "/drain"))
    )
]


def test_golden_outputs_carry_the_tls_proxy_cases() -> None:
    # Guards the parametrization below against silently covering nothing.
    confs = [p.values[0] for p in GOLDEN_CONFS]
    assert len(confs) >= 5
    assert any("stream {" in c for c in confs)
    assert any("ssl_verify_client optional" in c for c in confs)


@pytest.mark.parametrize(("conf", "golden_conf"), GOLDEN_CONFS)
def test_nginx_accepts_every_config_in_the_golden_outputs(pod: PodFs, conf: str, golden_conf: str) -> None:
    # The golden output (the production image: stream built in) is this config without the load_module lines,
    # which open it, in every mode: a wrong module path fails every proxy, not only the tcp ones.
    modules = [f"load_module {module};" for module in DEBIAN_MODULES]
    lines = conf.splitlines()
    assert lines[1 : 1 + len(modules)] == modules
    assert [line for line in lines if line not in modules] == golden_conf.splitlines()
    # An auth gate's host is resolved when nginx starts: the golden ones do not resolve here.
    conf = re.sub(r"proxy_pass https://[a-z0-9.-]+", "proxy_pass https://127.0.0.1", conf)
    pod.put(pod.root / "auth-ca" / "ca.crt", pem(pod.pki.ca[1]))
    result = pod.check(conf)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "spec",
    SPECS,
    ids=lambda s: f"{s.protocol}-mtls{int(s.mutual_tls)}-{'+'.join(s.open_paths) or 'noprobe'}",
)
def test_nginx_accepts_every_rendered_combination(pod: PodFs, spec: ProxySpec) -> None:
    result = pod.check(render(spec))
    assert result.returncode == 0, result.stderr


# --- 2. HTTP mode ------------------------------------------------------------------------------------------------


@pytest.fixture
def http_proxy(pod: PodFs, http_app: HttpApp) -> int:
    port = free_port()
    pod.start(ProxySpec(port, app_port(http_app), "http", mutual_tls=False, load_modules=DEBIAN_MODULES))
    return port


def test_https_request_reaches_the_app_with_forwarded_proto(
    pki: Pki, pod: PodFs, http_app: HttpApp, http_proxy: int
) -> None:
    with https(client_context(pki, pod), http_proxy) as client:
        response = client.get("/hello?x=1")
    assert response.status_code == 200
    assert response.json()["path"] == "/hello?x=1"
    assert response.json()["proto"] == "https"
    assert http_app.seen == ["/hello?x=1"]


def test_plain_http_to_the_tls_port_is_refused(http_app: HttpApp, http_proxy: int) -> None:
    with httpx.Client(timeout=5, trust_env=False) as client:
        response = client.get(f"http://127.0.0.1:{http_proxy}/plain")
    assert response.status_code == 400
    assert http_app.seen == []


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_tls_below_1_2_is_refused_and_1_2_is_the_floor(pki: Pki, pod: PodFs, http_proxy: int) -> None:
    # Through OpenSSL: SECLEVEL=0 lets it offer TLS 1.0/1.1 at all; nginx then answers a protocol_version alert.
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(cadata=pem(pki.ca[1]).decode())
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    old.minimum_version, old.maximum_version = ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError) as refused:
        served_serial(old, http_proxy)
    # NO_PROTOCOLS_AVAILABLE means this OpenSSL would not even try; the hand-built hellos below still prove it.
    assert refused.value.reason in ("TLSV1_ALERT_PROTOCOL_VERSION", "NO_PROTOCOLS_AVAILABLE")
    # Byte level: the same hello is refused as TLS 1.0/1.1 and answered as TLS 1.2.
    assert first_record(http_proxy, client_hello(0x0301)) == (ALERT, FATAL_PROTOCOL_VERSION)
    assert first_record(http_proxy, client_hello(0x0302)) == (ALERT, FATAL_PROTOCOL_VERSION)
    assert first_record(http_proxy, client_hello(0x0303))[0] == HANDSHAKE
    # And what a modern client gets: TLS 1.2 when capped there, TLS 1.3 otherwise.
    ctx = client_context(pki, pod)
    for cap, expected in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.MAXIMUM_SUPPORTED, "TLSv1.3")):
        ctx.maximum_version = cap
        with (
            socket.create_connection(("127.0.0.1", http_proxy), timeout=5) as sock,
            ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.version() == expected


def test_a_large_post_body_streams_through_intact(pki: Pki, pod: PodFs, http_proxy: int) -> None:
    body = os.urandom(8 << 20)
    with https(client_context(pki, pod), http_proxy) as client:
        response = client.post("/upload", content=body)
    assert response.status_code == 200
    assert response.json()["size"] == len(body)
    assert response.json()["sha256"] == hashlib.sha256(body).hexdigest()


# --- 3. mTLS HTTP mode -----------------------------------------------------------------------------------------


@pytest.fixture
def mtls_proxy(pod: PodFs, http_app: HttpApp) -> int:
    port = free_port()
    pod.start(
        ProxySpec(
            port, app_port(http_app), "http", mutual_tls=True, open_paths=("/healthz",), load_modules=DEBIAN_MODULES
        )
    )
    return port


def test_without_a_client_cert_only_the_probe_path_reaches_the_app(
    pki: Pki, pod: PodFs, http_app: HttpApp, mtls_proxy: int
) -> None:
    with https(client_context(pki, pod), mtls_proxy) as kubelet:
        assert kubelet.get("/healthz").status_code == 200
        assert kubelet.get("/data").status_code == 403
    # nginx matches locations on the normalized path: dot segments cannot climb out of the open one.
    assert raw_get(client_context(pki, pod), mtls_proxy, "/healthz/../data") == 403
    assert raw_get(client_context(pki, pod), mtls_proxy, "/healthz/%2E%2E/data") == 403
    assert http_app.seen == ["/healthz"]


@pytest.mark.parametrize(
    "target",
    [
        "/healthz?verbose=1",
        "//healthz",
        "/data/..%2Fhealthz",
        "/data/%2E%2E/healthz",
    ],
)
def test_without_a_client_cert_the_app_sees_only_the_probe_path_itself(
    pki: Pki, pod: PodFs, http_app: HttpApp, mtls_proxy: int, target: str
) -> None:
    # An app that does not decode %2F routes "/data/..%2Fhealthz" under /data: the open door must lead to
    # the probe handler only.
    status = raw_get(client_context(pki, pod), mtls_proxy, target)
    assert all(path.split("?")[0] == "/healthz" for path in http_app.seen), (
        f"{target} reached the app as {http_app.seen}"
    )
    assert status in (200, 400, 403)


def test_a_percent_encoded_probe_path_is_refused_under_mutual_tls() -> None:
    # nginx matches `location = /health%21` against the decoded URI, so kubelet's escaped probe could
    # never pass: the injector refuses such a path instead of shipping a pod that never gets ready.
    pod_ = {
        "metadata": {"annotations": {"podpatterns.io/tls-proxy": "t", "podpatterns.io/tls-proxy-client-ca": "ca"}},
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "app:1",
                    "ports": [{"containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/health%21", "port": 8080}},
                }
            ]
        },
    }
    with pytest.raises(InvalidAnnotations, match="cannot be routed through the proxy"):
        inject(pod_, InjectorConfig())


def test_a_client_cert_from_the_client_ca_reaches_every_path(
    pki: Pki, pod: PodFs, http_app: HttpApp, mtls_proxy: int
) -> None:
    cert = issue_client_cert(*pki.client_ca, "orders")
    with https(client_context(pki, pod, cert), mtls_proxy) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/data").status_code == 200
    assert http_app.seen == ["/healthz", "/data"]


def test_a_client_cert_from_another_ca_is_refused(pki: Pki, pod: PodFs, http_app: HttpApp, mtls_proxy: int) -> None:
    cert = issue_client_cert(*pki.other_ca, "intruder")
    try:
        with https(client_context(pki, pod, cert), mtls_proxy) as client:
            status = client.get("/data").status_code
    except httpx.TransportError:
        status = None  # refused during the handshake
    assert status in (None, 400, 403)
    assert http_app.seen == []


# --- 4. TCP mode -------------------------------------------------------------------------------------------------


def test_tcp_mode_echoes_bytes_through_tls(pki: Pki, pod: PodFs, tcp_app: TcpEcho) -> None:
    port = free_port()
    pod.start(ProxySpec(port, app_port(tcp_app), "tcp", mutual_tls=False, load_modules=DEBIAN_MODULES))
    payload = os.urandom(256 << 10)
    assert tls_echo(client_context(pki, pod), port, payload) == payload


def test_tcp_mode_with_mtls_refuses_a_client_without_a_cert(pki: Pki, pod: PodFs, tcp_app: TcpEcho) -> None:
    port = free_port()
    pod.start(ProxySpec(port, app_port(tcp_app), "tcp", mutual_tls=True, load_modules=DEBIAN_MODULES))
    try:
        # TLS 1.3: the client's handshake completes before the server checks its certificate; the refusal
        # arrives as an alert on the first read.
        got: bytes | None = tls_echo(client_context(pki, pod), port, b"ping")
    except (ssl.SSLError, ConnectionError):
        got = None
    assert not got
    assert tcp_app.connections == 0
    cert = issue_client_cert(*pki.client_ca, "redis-client")
    assert tls_echo(client_context(pki, pod, cert), port, b"ping") == b"ping"
    assert tcp_app.connections == 1


# --- 5. certificate rotation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["http", "tcp"])
def test_a_rotated_certificate_is_served_without_reloading_nginx(
    pki: Pki, pod: PodFs, http_app: HttpApp, protocol: str
) -> None:
    port = free_port()
    pod.start(
        ProxySpec(port, app_port(http_app), protocol, mutual_tls=False, load_modules=DEBIAN_MODULES)
    )  # only handshakes here
    ctx = client_context(pki, pod)
    before = served_serial(ctx, port)
    key, cert = pki.serving_cert()
    pod.install_tls(key, cert)
    deadline = time.monotonic() + 5
    serial = before
    while serial != cert.serial_number and time.monotonic() < deadline:
        # A handshake between the two renames may see the new key with the old cert: retry.
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            serial = served_serial(ctx, port)
        time.sleep(0.05)
    assert serial == cert.serial_number != before
    assert len(pod.procs) == 1 and pod.procs[0].poll() is None  # the same master, never signalled
    assert "signal" not in (pod.root / "nginx.log").read_text()


# --- 6. injection safety ---------------------------------------------------------------------------------------------


def tls_pod(annotations: dict[str, str], probe_path: str = "/healthz") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "api",
            "annotations": {keys.TLS_PROXY: "api-tls", keys.TLS_PROXY_CLIENT_CA: "clients-ca", **annotations},
        },
        "spec": {
            "containers": [
                {
                    "name": "api",
                    "image": "registry.example.com/api:1.0.0",
                    "ports": [{"name": "web", "containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": probe_path, "port": "web"}},
                }
            ]
        },
    }


@pytest.mark.parametrize(
    ("annotations", "probe_path", "named", "hostile"),
    [
        ({keys.TLS_PROXY_PORT: "443; include /etc/passwd"}, "/healthz", keys.TLS_PROXY_PORT, "include /etc/passwd"),
        ({keys.TLS_PROXY_PORT: "web\ninclude /etc/passwd;"}, "/healthz", keys.TLS_PROXY_PORT, "include /etc/passwd"),
        ({keys.TLS_PROXY_APP_PORT: "9201;"}, "/healthz", keys.TLS_PROXY_APP_PORT, "9201;"),
        ({keys.TLS_PROXY_PROTOCOL: "http; }"}, "/healthz", keys.TLS_PROXY_PROTOCOL, "http; }"),
        ({keys.TLS_PROXY_CLIENT_CA: "ca; include x"}, "/healthz", keys.TLS_PROXY_CLIENT_CA, "ca; include x"),
        # With a client CA, a probe path becomes an open `location =`: it must not be able to add directives.
        ({}, "/x;return 200 hi;", keys.TLS_PROXY, "/x;return 200 hi;"),
        ({}, "/x {}", keys.TLS_PROXY, "/x {}"),
    ],
    ids=[
        "port-include",
        "port-newline",
        "app-port-semicolon",
        "protocol-brace",
        "client-ca",
        "probe-return",
        "probe-brace",
    ],
)
def test_hostile_annotation_values_are_refused_naming_the_annotation(
    annotations: dict[str, str], probe_path: str, named: str, hostile: str
) -> None:
    with pytest.raises(InvalidAnnotations) as refused:
        inject(tls_pod(annotations, probe_path), InjectorConfig())
    assert f"annotation {named}=" in str(refused.value)
    assert hostile in str(refused.value)


def test_a_valid_pod_gets_exactly_the_rendered_config_and_nginx_accepts_it(pod: PodFs) -> None:
    # An annotation that tries to smuggle in a config has no effect: the config is only ever rendered.
    smuggled = {keys.PREFIX + "tls-proxy-nginx-conf": "include /etc/passwd;"}
    injected = inject(tls_pod(smuggled), InjectorConfig()).pod
    conf = proxy_conf(injected)
    assert conf is not None
    assert "include" not in conf
    assert conf == render(ProxySpec(8080, 8081, "http", mutual_tls=True, open_paths=("/healthz",)))
    result = pod.check(conf)
    assert result.returncode == 0, result.stderr


# --- 7. the start command checks the Secret -----------------------------------------------------------------------


def garbage_key(pod: PodFs) -> None:
    pod.put(pod.root / "tls" / "tls.key", b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")


def foreign_key(pod: PodFs) -> None:
    pod.put(pod.root / "tls" / "tls.key", key_pem(ec.generate_private_key(ec.SECP256R1())), 0o600)


UNUSABLE: dict[str, tuple[bool, Any, str, str]] = {
    # case: (mutual TLS, break the pod's files, the file the output must name, what it must say)
    "garbage-key": (False, garbage_key, "tls/tls.key", "cannot load certificate key"),
    "key-of-another-cert": (False, foreign_key, "tls/tls.key", "key values mismatch"),
    "garbage-cert": (False, lambda pod: pod.put(pod.root / "tls" / "tls.crt", b"hello\n"), "tls/tls.crt", "tls.crt"),
    "empty-cert": (False, lambda pod: pod.put(pod.root / "tls" / "tls.crt", b""), "tls/tls.crt", "missing or empty"),
    "garbage-ca": (True, lambda pod: pod.put(pod.root / "client-ca" / "ca.crt", b"x\n"), "client-ca/ca.crt", "ca.crt"),
    "missing-ca": (True, lambda pod: (pod.root / "client-ca" / "ca.crt").unlink(), "client-ca/ca.crt", "missing"),
}


@pytest.mark.parametrize("protocol", ["http", "tcp"])
@pytest.mark.parametrize("case", UNUSABLE, ids=str)
def test_the_start_command_refuses_an_unusable_secret_naming_the_file(pod: PodFs, protocol: str, case: str) -> None:
    # nginx reads the pair at each handshake (a variable in ssl_certificate), so by itself it would start with
    # any files at all, and pass its TCP probes; the start command must fail loudly instead.
    mutual_tls, damage, file, said = UNUSABLE[case]
    damage(pod)
    port = free_port()
    status, output = pod.start_fails(ProxySpec(port, 9, protocol, mutual_tls, load_modules=DEBIAN_MODULES))
    assert status != 0
    assert str(pod.root / file) in output and said in output, output
    assert re.search(r"^podpatterns: .*(missing or empty|cannot start)", output, re.MULTILINE), output
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_the_start_command_serves_a_good_pair_after_checking_it(pki: Pki, pod: PodFs, http_app: HttpApp) -> None:
    port = free_port()
    pod.start(ProxySpec(port, app_port(http_app), "http", mutual_tls=False, load_modules=DEBIAN_MODULES))
    check = (pod.root / "tmp" / "nginx-check.conf").read_text()
    assert f"ssl_certificate {pod.root}/tls/tls.crt;" in check  # the literal paths nginx -t loaded
    with https(client_context(pki, pod), port) as client:
        assert client.get("/checked").status_code == 200


# --- 8. IPv6 ------------------------------------------------------------------------------------------------------


def https_on(pki: Pki, pod: PodFs, host: str, port: int) -> int:
    url = f"https://{'[' + host + ']' if ':' in host else host}:{port}/"
    with httpx.Client(verify=client_context(pki, pod), timeout=5, trust_env=False) as client:
        return client.get(url).status_code


@pytest.mark.parametrize("protocol", ["http", "tcp"])
def test_the_proxy_answers_on_ipv4_and_ipv6_when_the_pod_has_both(
    pki: Pki, pod: PodFs, http_app: HttpApp, tcp_app: TcpEcho, protocol: str
) -> None:
    # kubelet probes the pod's IPv6 address on IPv6-primary clusters: one [::] socket serves both families.
    port = free_port()
    app = http_app if protocol == "http" else tcp_app
    pod.start(ProxySpec(port, app_port(app), protocol, mutual_tls=False, load_modules=DEBIAN_MODULES))
    hosts = ["127.0.0.1", "::1"] if host_has_ipv6() else ["127.0.0.1"]
    for host in hosts:
        if protocol == "http":
            assert https_on(pki, pod, host, port) == 200, host
        else:
            assert tls_echo(client_context(pki, pod), port, b"ping", host) == b"ping", host
    if not host_has_ipv6():  # this host has no IPv6: the script must have noticed, as in such a pod
        assert "listening on IPv4 only" in pod.log.read_text()


def test_a_pod_without_ipv6_gets_an_ipv4_socket(pki: Pki, pod: PodFs, http_app: HttpApp) -> None:
    # A kernel with IPv6 disabled lists no address in /proc/net/if_inet6 (or has no such file), and nginx
    # could not open a [::] socket there: the script rewrites the listen line, and says so.
    port = free_port()
    pod.start(ProxySpec(port, app_port(http_app), "http", mutual_tls=False, load_modules=DEBIAN_MODULES), ipv6=False)
    assert "podpatterns: the pod has no IPv6 address: listening on IPv4 only" in pod.log.read_text()
    assert f"listen {port} ssl;" in (pod.root / "tmp" / "nginx.conf").read_text()
    assert https_on(pki, pod, "127.0.0.1", port) == 200
    if host_has_ipv6():
        with pytest.raises(OSError):
            socket.create_connection(("::1", port), timeout=1).close()


def test_this_host_has_ipv6_loopback_for_the_tests_above() -> None:
    # Not a skip: without ::1 the dual-stack branch above would go untested unnoticed; CI runs with it.
    assert host_has_ipv6(), f"{tls_proxy.IF_INET6} lists no address: enable IPv6 (loopback ::1) on this host"


# --- 9. WebSockets --------------------------------------------------------------------------------------------------

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WebSocketApp(socketserver.ThreadingTCPServer):
    daemon_threads = True
    heads: list[dict[str, str]]


class WebSocketHandler(socketserver.BaseRequestHandler):
    """Answers an upgrade with 101, says hello, then echoes bytes; a plain request gets a 200."""

    server: WebSocketApp

    def handle(self) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            if not (chunk := self.request.recv(4096)):
                return
            head += chunk
        lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
        headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
        self.server.heads.append(headers)
        if headers.get("upgrade", "").lower() != "websocket" or "upgrade" not in headers.get("connection", "").lower():
            self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nplain")
            return
        digest = hashlib.sha1((headers["sec-websocket-key"] + WS_GUID).encode()).digest()
        accept = base64.b64encode(digest).decode()
        self.request.sendall(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
        )
        self.request.sendall(b"hello from the app")
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def ws_app() -> Iterator[WebSocketApp]:
    app = WebSocketApp(("127.0.0.1", 0), WebSocketHandler)
    app.heads = []
    with serving(app):
        yield app


def read_exactly(sock: ssl.SSLSocket, size: int) -> bytes:
    data = b""
    while len(data) < size and (chunk := sock.recv(size - len(data))):
        data += chunk
    return data


@contextlib.contextmanager
def websocket(ctx: ssl.SSLContext, port: int) -> Iterator[tuple[ssl.SSLSocket, str, dict[str, str]]]:
    """A raw WebSocket opening handshake over TLS: yields the socket, the status line and the response headers."""
    key = base64.b64encode(os.urandom(16)).decode()
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(
            f"GET /chat HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head and (chunk := tls.recv(1)):
            head += chunk  # byte by byte: what follows the head is the app's, not ours to swallow
        status, *lines = head.decode("latin-1").strip().split("\r\n")
        headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
        digest = hashlib.sha1((key + WS_GUID).encode()).digest()
        assert headers.get("sec-websocket-accept") == base64.b64encode(digest).decode(), head
        yield tls, status, headers


def test_a_websocket_upgrade_passes_through_and_bytes_flow_both_ways(
    pki: Pki, pod: PodFs, ws_app: WebSocketApp
) -> None:
    port = free_port()
    pod.start(ProxySpec(port, app_port(ws_app), "http", mutual_tls=False, load_modules=DEBIAN_MODULES))
    with websocket(client_context(pki, pod), port) as (tls, status, headers):
        assert status.startswith("HTTP/1.1 101 "), status
        assert headers["upgrade"].lower() == "websocket" and headers["connection"].lower() == "upgrade"
        assert read_exactly(tls, 18) == b"hello from the app"  # the app speaks first
        payload = os.urandom(64 << 10)
        tls.sendall(payload)
        assert read_exactly(tls, len(payload)) == payload  # and hears us
    assert ws_app.heads[0]["upgrade"] == "websocket" and ws_app.heads[0]["connection"] == "upgrade"
    # A plain request still reaches the app with no Connection: upgrade (nor any Upgrade header).
    with https(client_context(pki, pod), port) as client:
        assert client.get("/plain").text == "plain"
    assert "upgrade" not in ws_app.heads[1] and "upgrade" not in ws_app.heads[1].get("connection", "")


@pytest.mark.parametrize(("sig", "within"), [(signal.SIGQUIT, 5 + 3), (signal.SIGTERM, 2)], ids=["SIGQUIT", "SIGTERM"])
def test_an_open_websocket_does_not_hold_the_proxy_past_its_shutdown_timeout(
    pki: Pki, pod: PodFs, ws_app: WebSocketApp, sig: signal.Signals, within: float
) -> None:
    # The image's STOPSIGNAL is SIGQUIT (containerd sends it), a graceful stop that waits for open connections:
    # without worker_shutdown_timeout an open WebSocket kept nginx up until the grace period's SIGKILL.
    port = free_port()
    pod.start(ProxySpec(port, app_port(ws_app), "http", mutual_tls=False, load_modules=DEBIAN_MODULES))
    with websocket(client_context(pki, pod), port) as (tls, _status, _headers):
        assert read_exactly(tls, 18) == b"hello from the app"
        started = time.monotonic()
        pod.procs[0].send_signal(sig)
        try:
            pod.procs[0].wait(timeout=within)
        except subprocess.TimeoutExpired:
            pytest.fail(f"nginx still runs {within} s after {sig.name} with a WebSocket open")
    assert time.monotonic() - started < within
