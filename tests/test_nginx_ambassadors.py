"""The TLS tunnel out (tls-egress) and the auth gate (tls-proxy-auth-url) run by a real nginx.

Same harness as tests/test_nginx.py (a pod's filesystem under a temp dir, the containers' own start
commands run by busybox's sh, Debian's nginx with its dynamic stream module), against local Python TLS
servers: a server behind the tunnel, and an auth service deciding by bearer token.
"""

# ruff: noqa: F811  (fixtures imported from tests/test_nginx.py are parameters here)
from __future__ import annotations

import contextlib
import json
import os
import socket
import socketserver
import ssl
import subprocess
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import GOLDEN
from tests.test_nginx import (  # noqa: F401  (fixtures)
    BUSYBOX,
    DEBIAN_MODULES,
    Key,
    Pki,
    PodFs,
    chown,
    client_context,
    debian_config,
    free_port,
    https,
    issue_client_cert,
    key_pem,
    nginx_installed,
    pem,
    pki,
    pod,
    proxy_conf,
    run_as,
    serving,
)
from webhook.certs import generate_serving_cert
from webhook.injection import tls_egress
from webhook.injection.nginx_conf import (
    AUTH_CA_DIR,
    EGRESS_CA_DIR,
    AuthSpec,
    EgressRoute,
    EgressSpec,
    ProxySpec,
    render,
    render_egress,
)
from webhook.offline import _pod_slots, inject_documents, load_documents

# --- the server behind the tunnel ------------------------------------------------------------------------------


class TlsServer(socketserver.ThreadingTCPServer):
    """Answers one line per connection: what it saw of the TLS session (SNI, client certificate), then echoes."""

    daemon_threads = True
    allow_reuse_address = True
    context: ssl.SSLContext
    sessions: list[dict[str, Any]]


class TlsHandler(socketserver.BaseRequestHandler):
    server: TlsServer

    def handle(self) -> None:
        seen: dict[str, Any] = {}

        def sni(_sock: ssl.SSLSocket, name: str | None, _ctx: ssl.SSLContext) -> None:
            seen["sni"] = name

        self.server.context.sni_callback = sni
        try:
            tls = self.server.context.wrap_socket(self.request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            self.server.sessions.append({"error": str(exc)})
            return
        with tls:
            peer = tls.getpeercert()
            seen["client"] = dict(x[0] for x in peer["subject"])["commonName"] if peer else None
            seen["version"] = tls.version()
            self.server.sessions.append(seen)
            tls.sendall((json.dumps(seen) + "\n").encode())
            while data := tls.recv(65536):
                tls.sendall(data)


@contextlib.contextmanager
def tls_server(cert: tuple[Key, Any], client_ca: Any = None) -> Iterator[TlsServer]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"egress-server-{os.getpid()}-{id(ctx)}.pem"
    path.write_bytes(key_pem(cert[0]) + pem(cert[1]))
    ctx.load_cert_chain(path)
    path.unlink()
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=pem(client_ca).decode())
    server = TlsServer(("127.0.0.1", 0), TlsHandler)
    server.context, server.sessions = ctx, []
    with serving(server):
        yield server


def start_egress(pod: PodFs, spec: EgressSpec) -> subprocess.Popen[bytes]:
    """The tunnel container's own command and env, as injected; returns once nginx listens (its pid file)."""
    command = tls_egress.start_command(own_ca=spec.trusted_ca.startswith(EGRESS_CA_DIR), client_cert=spec.client_cert)
    for tool in ("rm", "cat"):
        with contextlib.suppress(FileExistsError):
            os.symlink(BUSYBOX, pod.root / "bin" / tool)
    env = {
        "PATH": str(pod.root / "bin"),
        tls_egress.CONF_ENV: pod.localize(render_egress(spec)),
        tls_egress.ROUTES_ENV: "test routes",
    }
    (pod.root / "tmp" / "nginx.pid").unlink(missing_ok=True)  # a second tunnel in this pod: wait for its own
    pod.log.touch()
    chown(pod.log)  # nginx reopens /dev/stderr for its access log: as in a pod (runc hands stdio to the user)
    with pod.log.open("ab") as out:
        proc = subprocess.Popen(
            [str(pod.root / "bin" / "sh"), *(pod.localize(part) for part in command[1:])],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **run_as(),
        )
    pod.procs.append(proc)
    return proc


def wait_listening(pod: PodFs, proc: subprocess.Popen[bytes], port: int) -> None:
    """What the startup probe waits for: the pid file, written once nginx listens (`nginx -t` also binds the
    port for a moment, so a connection alone proves nothing)."""
    pid = pod.root / "tmp" / "nginx.pid"
    deadline = time.monotonic() + 5
    while not (pid.exists() and pid.read_text().strip().isdigit()):
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the tunnel did not start:\n{pod.log.read_text()}")
        time.sleep(0.02)
    socket.create_connection(("127.0.0.1", port), timeout=2).close()


def through(port: int, payload: bytes = b"hello db\n") -> tuple[dict[str, Any] | None, bytes]:
    """Plain text to the tunnel: the server's session line (None if the tunnel closed) and the echo."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        data = b""
        with contextlib.suppress(TimeoutError, ConnectionError):
            sock.settimeout(3)
            while data.count(b"\n") < 2 and (chunk := sock.recv(65536)):
                data += chunk
    if not data:
        return None, b""
    line, _, rest = data.partition(b"\n")
    return json.loads(line), rest


def egress(pod: PodFs, target: str, server: TlsServer, *, own_ca: bool, client: bool = False, name: str = "") -> int:
    local = free_port()
    trusted = f"{EGRESS_CA_DIR}/ca.crt" if own_ca else "/nonexistent-system-bundle.crt"
    route = EgressRoute(local, target, int(server.server_address[1]), name)
    proc = start_egress(pod, EgressSpec((route,), trusted, client, load_modules=DEBIAN_MODULES))
    wait_listening(pod, proc, local)
    return local


def test_plain_text_in_verified_tls_out_with_sni(pki: Pki, pod: PodFs) -> None:
    cert = generate_serving_cert(*pki.ca, dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    pod.put(pod.root / "egress-ca" / "ca.crt", pem(pki.ca[1]))
    with tls_server(cert) as server:
        local = egress(pod, "localhost", server, own_ca=True)
        seen, echoed = through(local)
    assert seen is not None, pod.log.read_text()
    assert seen["sni"] == "localhost"
    assert seen["version"] in ("TLSv1.2", "TLSv1.3")
    assert echoed == b"hello db\n"
    log = pod.log.read_text()
    assert "podpatterns: tls-egress test routes" in log
    assert f"tls-egress 127.0.0.1:{local} -> " in log and "status=200" in log


def test_an_ip_target_is_verified_by_the_name_given_after_the_at(pki: Pki, pod: PodFs) -> None:
    # nginx checks a certificate's DNS names only (X509_check_host), never its IP SANs: an IP target names
    # the server with @name, which is verified and sent as SNI.
    cert = generate_serving_cert(*pki.ca, dns_names=["db.example"], ip_addresses=["127.0.0.1"])
    pod.put(pod.root / "egress-ca" / "ca.crt", pem(pki.ca[1]))
    with tls_server(cert) as server:
        plain = egress(pod, "127.0.0.1", server, own_ca=True)
        assert through(plain)[0] is None
        assert 'upstream SSL certificate does not match "127.0.0.1"' in pod.log.read_text()
        local = egress(pod, "127.0.0.1", server, own_ca=True, name="db.example")
        seen, echoed = through(local)
    assert seen is not None and seen["sni"] == "db.example" and echoed == b"hello db\n", pod.log.read_text()


def test_a_server_from_another_ca_is_refused(pki: Pki, pod: PodFs) -> None:
    cert = generate_serving_cert(*pki.other_ca, dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    pod.put(pod.root / "egress-ca" / "ca.crt", pem(pki.ca[1]))
    with tls_server(cert) as server:
        local = egress(pod, "localhost", server, own_ca=True)
        seen, _ = through(local)
    assert seen is None
    assert "certificate verify" in pod.log.read_text() or "verify error" in pod.log.read_text(), pod.log.read_text()


def test_a_certificate_for_another_name_is_refused(pki: Pki, pod: PodFs) -> None:
    cert = generate_serving_cert(*pki.ca, dns_names=["other.example"], ip_addresses=[])
    pod.put(pod.root / "egress-ca" / "ca.crt", pem(pki.ca[1]))
    with tls_server(cert) as server:
        local = egress(pod, "localhost", server, own_ca=True)
        seen, _ = through(local)
    assert seen is None
    assert "does not match" in pod.log.read_text(), pod.log.read_text()


def test_a_client_certificate_is_presented_when_the_server_requires_one(pki: Pki, pod: PodFs) -> None:
    cert = generate_serving_cert(*pki.ca, dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    client_key, client_cert = issue_client_cert(*pki.client_ca, "orders-app")
    pod.put(pod.root / "egress-ca" / "ca.crt", pem(pki.ca[1]))
    pod.put(pod.root / "egress-client" / "tls.key", key_pem(client_key), 0o600)
    pod.put(pod.root / "egress-client" / "tls.crt", pem(client_cert))
    with tls_server(cert, client_ca=pki.client_ca[1]) as server:
        local = egress(pod, "localhost", server, own_ca=True, client=True)
        seen, _ = through(local)
    assert seen is not None and seen["client"] == "orders-app", pod.log.read_text()


def test_without_a_client_certificate_a_server_that_requires_one_refuses(pki: Pki, pod: PodFs) -> None:
    cert = generate_serving_cert(*pki.ca, dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    pod.put(pod.root / "egress-ca" / "ca.crt", pem(pki.ca[1]))
    with tls_server(cert, client_ca=pki.client_ca[1]) as server:
        local = egress(pod, "localhost", server, own_ca=True)
        seen, _ = through(local)
    assert seen is None


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        ("garbage-ca", "egress-ca/ca.crt"),
        ("missing-ca", "missing or empty"),
        ("foreign-key", "key values mismatch"),
        ("unresolvable", "host not found"),
    ],
)
def test_the_start_command_refuses_unusable_files_or_hosts(pki: Pki, pod: PodFs, damage: str, said: str) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    client_key, client_cert = issue_client_cert(*pki.client_ca, "orders-app")
    pod.put(pod.root / "egress-ca" / "ca.crt", b"not a certificate\n" if damage == "garbage-ca" else pem(pki.ca[1]))
    if damage == "missing-ca":
        (pod.root / "egress-ca" / "ca.crt").unlink()
    key = ec.generate_private_key(ec.SECP256R1()) if damage == "foreign-key" else client_key
    pod.put(pod.root / "egress-client" / "tls.key", key_pem(key), 0o600)
    pod.put(pod.root / "egress-client" / "tls.crt", pem(client_cert))
    host = "no-such-host.invalid" if damage == "unresolvable" else "localhost"
    local = free_port()
    spec = EgressSpec((EgressRoute(local, host, 5432),), f"{EGRESS_CA_DIR}/ca.crt", True, DEBIAN_MODULES)
    proc = start_egress(pod, spec)
    try:
        status = proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the tunnel started, but should have refused to:\n{pod.log.read_text()}")
    log = pod.log.read_text()
    assert status != 0 and said in log, log
    assert "podpatterns: " in log
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", local), timeout=1).close()


# --- golden cases: the tunnel alone, and beside the TLS proxy --------------------------------------------------


def egress_confs() -> list[Any]:
    found = []
    for case in sorted(GOLDEN.glob("*.yaml")):
        if case.name == "config.yaml" or case.name.endswith(".injected.yaml"):
            continue
        out, _warnings, errors = inject_documents(load_documents(case.read_text()), debian_config())
        assert not errors
        for index in range(len(out)):
            for parent, key, label in _pod_slots(out, index):
                spec = parent[key].get("spec") or {}
                for c in spec.get("initContainers", []) + spec.get("containers", []):
                    if c["name"] == tls_egress.CONTAINER:
                        conf = next(e["value"] for e in c["env"] if e["name"] == tls_egress.CONF_ENV)
                        found.append(pytest.param(conf, proxy_conf(parent[key]), id=f"{case.stem}:{label}"))
    return found


EGRESS_CONFS = egress_confs()


def test_golden_cases_carry_the_tunnel_alone_and_beside_the_proxy() -> None:
    assert len(EGRESS_CONFS) >= 2
    assert any(p.values[1] is None for p in EGRESS_CONFS)
    assert any(p.values[1] and "auth_request" in p.values[1] for p in EGRESS_CONFS)


@pytest.mark.parametrize(("conf", "beside"), EGRESS_CONFS)
def test_nginx_accepts_the_golden_tunnels_and_their_proxies(
    pki: Pki, pod: PodFs, conf: str, beside: str | None
) -> None:
    # Hosts of the golden cases do not resolve here: check the config with them pointed at 127.0.0.1.
    for name in ("db.example.com", "redis.example.com", "auth.example.com", "oauth2-proxy.example.com"):
        conf = conf.replace(f"proxy_pass {name}:", "proxy_pass 127.0.0.1:")
        beside = beside and beside.replace(f"https://{name}", "https://127.0.0.1")
    # `nginx -t` here writes to a pipe of root's, which nginx's user may not reopen as /dev/stderr.
    conf = conf.replace("access_log /dev/stderr", "access_log /tmp/access.log")
    for sub in ("egress-ca/ca.crt", "auth-ca/ca.crt"):
        pod.put(pod.root / sub, pem(pki.ca[1]))
    client_key, client_cert = issue_client_cert(*pki.client_ca, "app")
    pod.put(pod.root / "egress-client" / "tls.key", key_pem(client_key), 0o600)
    pod.put(pod.root / "egress-client" / "tls.crt", pem(client_cert))
    result = pod.check(conf)
    assert result.returncode == 0, result.stderr
    if beside:
        result = pod.check(beside)
        assert result.returncode == 0, result.stderr


# --- the auth gate -------------------------------------------------------------------------------------------


class AuthService(ThreadingHTTPServer):
    daemon_threads = True
    asked: list[dict[str, Any]]


class AuthHandler(BaseHTTPRequestHandler):
    """Decides by bearer token: good -> 200 + X-Auth-User, boom -> 500, teapot -> 418, else 401 or 403."""

    server: AuthService

    def _decide(self) -> None:
        self.server.asked.append(
            {
                "path": self.path,
                "method": self.command,
                "uri": self.headers.get("X-Original-URI"),
                "original_method": self.headers.get("X-Original-Method"),
                "length": self.headers.get("Content-Length"),
                "cookie": self.headers.get("Cookie"),
                "forged": self.headers.get("X-Auth-User"),
            }
        )
        token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
        status = {"good": 200, "boom": 500, "teapot": 418, "banned": 403}.get(token, 401)
        self.send_response(status)
        if status == 200:
            self.send_header("X-Auth-User", "alice")
        if status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="test"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_HEAD = _decide

    def log_message(self, format: str, *args: Any) -> None:
        pass


class HeaderApp(ThreadingHTTPServer):
    daemon_threads = True
    seen: list[dict[str, Any]]


class HeaderHandler(BaseHTTPRequestHandler):
    server: HeaderApp

    def _answer(self) -> None:
        size = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(size) if size else b""
        seen = {"path": self.path, "user": self.headers.get_all("X-Auth-User"), "size": len(body)}
        self.server.seen.append(seen)
        out = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def auth_service(pki: Pki, pod: PodFs) -> Iterator[AuthService]:
    server = AuthService(("127.0.0.1", 0), AuthHandler)
    server.asked = []
    key, cert = generate_serving_cert(*pki.ca, dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    path = pod.root / "auth-server.pem"
    path.write_bytes(key_pem(key) + pem(cert))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(path)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    with serving(server):
        yield server


@pytest.fixture
def header_app() -> Iterator[HeaderApp]:
    app = HeaderApp(("127.0.0.1", 0), HeaderHandler)
    app.seen = []
    with serving(app):
        yield app


def gated(pki: Pki, pod: PodFs, app: HeaderApp, auth_port: int, *, host: str = "localhost", mtls: bool = False) -> int:
    pod.put(pod.root / "auth-ca" / "ca.crt", pem(pki.ca[1]))
    port = free_port()
    auth = AuthSpec(host, auth_port, "/oauth2/auth", f"{AUTH_CA_DIR}/ca.crt", ("X-Auth-User",))
    spec = ProxySpec(
        port,
        int(app.server_address[1]),
        "http",
        mutual_tls=mtls,
        open_paths=("/healthz",),
        load_modules=DEBIAN_MODULES,
        auth=auth,
    )
    pod.start(spec)
    return port


def test_a_good_token_passes_and_the_app_sees_the_user_from_the_auth_answer(
    pki: Pki, pod: PodFs, header_app: HeaderApp, auth_service: AuthService
) -> None:
    port = gated(pki, pod, header_app, int(auth_service.server_address[1]))
    with https(client_context(pki, pod), port) as client:
        answer = client.post(
            "/orders?id=7",
            content=b"x" * 1000,
            headers={"Authorization": "Bearer good", "Cookie": "session=1", "X-Auth-User": "mallory"},
        )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"path": "/orders?id=7", "user": ["alice"], "size": 1000}
    asked = auth_service.asked[-1]
    assert asked["path"] == "/oauth2/auth"
    assert asked["uri"] == "/orders?id=7" and asked["original_method"] == "POST"
    assert asked["cookie"] == "session=1"
    assert asked["length"] in (None, "0") and asked["forged"] is None  # no body, no client header but ours


def test_without_a_token_the_client_gets_401_with_the_challenge(
    pki: Pki, pod: PodFs, header_app: HeaderApp, auth_service: AuthService
) -> None:
    port = gated(pki, pod, header_app, int(auth_service.server_address[1]))
    with https(client_context(pki, pod), port) as client:
        missing = client.get("/orders")
        banned = client.get("/orders", headers={"Authorization": "Bearer banned"})
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="test"'
    assert banned.status_code == 403
    assert header_app.seen == []


def test_a_forged_user_header_never_reaches_the_app(
    pki: Pki, pod: PodFs, header_app: HeaderApp, auth_service: AuthService
) -> None:
    # The auth service answers 200 with X-Auth-User for good; a header the client sends is replaced, and with an
    # auth answer that carries none (here: none configured to pass) it is removed.
    port = gated(pki, pod, header_app, int(auth_service.server_address[1]))
    with https(client_context(pki, pod), port) as client:
        answer = client.get("/", headers={"Authorization": "Bearer good", "X-Auth-User": "root"})
    assert answer.json()["user"] == ["alice"]


@pytest.mark.parametrize("token", ["boom", "teapot"])
def test_other_answers_of_the_auth_service_are_503(
    pki: Pki, pod: PodFs, header_app: HeaderApp, auth_service: AuthService, token: str
) -> None:
    port = gated(pki, pod, header_app, int(auth_service.server_address[1]))
    with https(client_context(pki, pod), port) as client:
        assert client.get("/", headers={"Authorization": f"Bearer {token}"}).status_code == 503
    assert header_app.seen == []


def test_an_unreachable_auth_service_is_503(pki: Pki, pod: PodFs, header_app: HeaderApp) -> None:
    port = gated(pki, pod, header_app, free_port())  # nothing listens there
    with https(client_context(pki, pod), port) as client:
        assert client.get("/", headers={"Authorization": "Bearer good"}).status_code == 503
    assert header_app.seen == []


def test_an_auth_service_with_a_certificate_for_another_name_is_503(
    pki: Pki, pod: PodFs, header_app: HeaderApp, auth_service: AuthService
) -> None:
    # Certificate for localhost/127.0.0.1, asked as 127.0.0.2 (it resolves, the name does not match).
    port = gated(pki, pod, header_app, int(auth_service.server_address[1]), host="127.0.0.2")
    with https(client_context(pki, pod), port) as client:
        assert client.get("/", headers={"Authorization": "Bearer good"}).status_code == 503


def test_the_probe_path_bypasses_the_gate_for_get_and_head_only(
    pki: Pki, pod: PodFs, header_app: HeaderApp, auth_service: AuthService
) -> None:
    port = gated(pki, pod, header_app, int(auth_service.server_address[1]))
    with https(client_context(pki, pod), port) as kubelet:
        assert kubelet.get("/healthz").status_code == 200
        assert kubelet.post("/healthz").status_code == 403
        assert kubelet.get("/healthz/../orders").status_code == 401
        assert kubelet.get("/_podpatterns_auth").status_code == 404  # internal
    assert auth_service.asked == [next(a for a in auth_service.asked if a["uri"] == "/orders")]


def test_the_gate_works_together_with_mutual_tls(
    pki: Pki, pod: PodFs, header_app: HeaderApp, auth_service: AuthService
) -> None:
    port = gated(pki, pod, header_app, int(auth_service.server_address[1]), mtls=True)
    cert = issue_client_cert(*pki.client_ca, "kibana")
    with https(client_context(pki, pod, cert), port) as client:
        assert client.get("/", headers={"Authorization": "Bearer good"}).status_code == 200
        assert client.get("/").status_code == 401
    with https(client_context(pki, pod), port) as stranger:
        assert stranger.get("/", headers={"Authorization": "Bearer good"}).status_code == 403
        assert stranger.get("/healthz").status_code == 200


def test_the_start_command_refuses_a_garbled_auth_ca(pki: Pki, pod: PodFs, header_app: HeaderApp) -> None:
    pod.put(pod.root / "auth-ca" / "ca.crt", b"garbage\n")
    auth = AuthSpec("127.0.0.1", 443, "/auth", f"{AUTH_CA_DIR}/ca.crt")
    status, output = pod.start_fails(ProxySpec(free_port(), 9, "http", False, load_modules=DEBIAN_MODULES, auth=auth))
    assert status != 0 and "auth-ca/ca.crt" in output and "podpatterns: " in output, output


def test_every_rendered_gate_is_valid_nginx(pki: Pki, pod: PodFs) -> None:
    pod.put(pod.root / "auth-ca" / "ca.crt", pem(pki.ca[1]))
    for mtls in (False, True):
        for headers in ((), ("X-Auth-Request-User", "X-Auth-Request-Email")):
            auth = AuthSpec("127.0.0.1", 4180, "/oauth2/auth", f"{AUTH_CA_DIR}/ca.crt", headers)
            conf = render(ProxySpec(8443, 8080, "http", mtls, ("/healthz",), DEBIAN_MODULES, auth=auth))
            result = pod.check(conf)
            assert result.returncode == 0, result.stderr
    assert httpx  # used above through https()


# --- the core's choices, without nginx -------------------------------------------------------------------------


def _pod(annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "annotations": annotations},
        "spec": {
            "initContainers": [{"name": "migrate", "image": "registry.example.com/m:1"}],
            "containers": [{"name": "app", "image": "registry.example.com/a:1", "ports": [{"containerPort": 8080}]}],
        },
    }


def test_the_tunnel_leads_the_pods_init_containers_natively_and_joins_the_app_classically() -> None:
    from webhook.injection import InjectorConfig, inject

    route = {"podpatterns.io/tls-egress": "15432=db.example.com:5432"}
    native = inject(_pod(route), InjectorConfig()).pod["spec"]
    assert [c["name"] for c in native["initContainers"]] == [tls_egress.CONTAINER, "migrate"]
    assert native["initContainers"][0]["restartPolicy"] == "Always"
    classic = inject(_pod({**route, "podpatterns.io/native-sidecars": "false"}), InjectorConfig()).pod["spec"]
    assert [c["name"] for c in classic["initContainers"]] == ["migrate"]
    assert [c["name"] for c in classic["containers"]] == ["app", tls_egress.CONTAINER]


def test_the_proxy_does_not_move_the_app_onto_a_tunnel_port() -> None:
    from webhook.injection import InjectorConfig, inject

    pod_ = _pod({"podpatterns.io/tls-egress": "8081=db.example.com:5432", "podpatterns.io/tls-proxy": "t"})
    app = inject(pod_, InjectorConfig()).pod["spec"]["containers"][0]
    assert {"name": "PODPATTERNS_APP_PORT", "value": "8082"} in app["env"]


def test_auth_options_without_the_url_are_warnings() -> None:
    from webhook.injection import InjectorConfig, inject

    result = inject(_pod({"podpatterns.io/tls-proxy": "t", "podpatterns.io/tls-proxy-auth-ca": "ca"}), InjectorConfig())
    assert any(
        "tls-proxy-auth-ca has no effect without podpatterns.io/tls-proxy-auth-url" in w for w in result.warnings
    )
    assert "auth_request" not in (proxy_conf(result.pod) or "")
