"""Both ambassador directions on the node: the TLS tunnel out (tls-egress) and the auth gate in (tls-proxy-auth-url)."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.node.cluster import NODE_IP, Cluster
from tests.node.pki import ClusterPKI
from tests.node.workloads import (
    POD_SECURITY,
    app_container,
    container_statuses,
    logs,
    retry,
    secret_from_files,
    tls_context,
    tls_secret,
    wait_logs,
    wait_pod,
)

# A TLS-only server (a database stand-in): requires a client certificate from its CA, greets with the
# client's name and the first line it got.
TLS_SERVER = r"""
import socket, ssl, threading
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("/tls/tls.crt", "/tls/tls.key")
ctx.load_verify_locations("/tls/ca.crt")
ctx.verify_mode = ssl.CERT_REQUIRED
def serve(conn):
    try:
        with ctx.wrap_socket(conn, server_side=True) as tls:
            name = dict(x[0] for x in tls.getpeercert()["subject"])["commonName"]
            line = tls.makefile("rb").readline().decode().strip()
            print(f"served {name}: {line}", flush=True)
            tls.sendall(f"hello {name}: {line}\n".encode())
    except Exception as exc:
        print(f"refused: {exc}", flush=True)
listener = socket.create_server(("0.0.0.0", 6443))
print("listening with TLS on 6443", flush=True)
while True:
    conn, _ = listener.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""

# The app's side: plain text to the tunnel on 127.0.0.1:15432, once (an init container: no retry, so it
# proves the tunnel was up before it ran) or every 2 s.
TUNNEL_CLIENT = r"""
import socket, sys, time
def ask(word):
    with socket.create_connection(("127.0.0.1", 15432), timeout=5) as s:
        s.sendall(word.encode() + b"\n")
        print(s.makefile("rb").readline().decode().strip(), flush=True)
if sys.argv[1] == "once":
    ask("migrate")
else:
    while True:
        try:
            ask("orders")
        except OSError as exc:
            print(f"failed: {exc}", flush=True)
        time.sleep(2)
"""


def test_the_tls_tunnel_carries_plain_text_to_a_tls_only_server(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    db = ClusterPKI(tmp_path / "db")
    server_crt, server_key = db.issue("server", common_name="db.test", dns_names=["db.test"], server=True)
    client_crt, client_key = db.issue("client", common_name="orders-app", client=True)
    secret_from_files(cluster, namespace, "db-server", server_crt, server_key, db.ca)
    secret_from_files(cluster, namespace, "orders-db", client_crt, client_key, db.ca)  # client cert + the CA

    server = app_container("db", TLS_SERVER, volumeMounts=[{"name": "tls", "mountPath": "/tls", "readOnly": True}])
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "db", "namespace": namespace, "labels": {"app": "db"}},
            "spec": {
                "securityContext": POD_SECURITY,
                "containers": [server],
                "volumes": [{"name": "tls", "secret": {"secretName": "db-server"}}],
            },
        }
    )
    db_ip = wait_pod(cluster, namespace, "app=db", timeout=120)["status"]["podIP"]
    wait_logs(cluster, namespace, "db", "db", "listening with TLS")

    # Pods have no DNS here: the server is reached by IP and verified as db.test, its certificate's name.
    route = f"127.0.0.1:15432 -> {db_ip}:6443 (as db.test)"
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "orders",
                "namespace": namespace,
                "labels": {"app": "orders"},
                "annotations": {
                    "podpatterns.io/tls-egress": f"15432={db_ip}:6443@db.test",
                    "podpatterns.io/tls-egress-ca": "orders-db",
                    "podpatterns.io/tls-egress-client-cert": "orders-db",
                },
            },
            "spec": {
                "securityContext": POD_SECURITY,
                "initContainers": [app_container("migrate", TUNNEL_CLIENT, args=["once"])],
                "containers": [app_container("orders", TUNNEL_CLIENT, args=["loop"])],
            },
        }
    )
    pod = wait_pod(cluster, namespace, "app=orders", timeout=120)
    statuses = container_statuses(pod)
    assert statuses["podpatterns-tls-egress"]["restartCount"] == 0
    # The pod's own init container ran after the tunnel was up, through it, at its first attempt.
    assert statuses["migrate"]["restartCount"] == 0
    assert "hello orders-app: migrate" in logs(cluster, namespace, "orders", "migrate")
    wait_logs(cluster, namespace, "orders", "orders", "hello orders-app: orders")
    tunnel = wait_logs(cluster, namespace, "orders", "podpatterns-tls-egress", f"-> {db_ip}:6443 status=200")
    assert f"podpatterns: tls-egress {route}" in tunnel
    assert "with a client certificate" in tunnel
    assert "served orders-app: migrate" in logs(cluster, namespace, "db", "db")
    # Loopback only: the pod IP offers no plain-text way to the server.
    with contextlib.suppress(OSError), socket.create_connection((pod["status"]["podIP"], 15432), timeout=2):
        raise AssertionError("the tunnel listens on the pod IP")


# The app behind the gate: answers with the user the proxy passed on.
GATED_APP = r"""
import json, os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args): pass
    def do_GET(self):
        body = json.dumps({"path": self.path, "user": self.headers.get_all("X-Auth-User")}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
address = (os.environ["PODPATTERNS_APP_HOST"], int(os.environ["PODPATTERNS_APP_PORT"]))
ThreadingHTTPServer(address, Handler).serve_forever()
"""


class AuthHandler(BaseHTTPRequestHandler):
    """oauth2-proxy's /oauth2/auth, by token: 202 with the user, or 401 with a challenge."""

    asked: list[str] = []  # noqa: RUF012  (the test reads what the service was asked)

    def do_GET(self) -> None:
        AuthHandler.asked.append(str(self.headers.get("X-Original-URI")))
        good = self.headers.get("Authorization") == "Bearer s3cret"
        self.send_response(202 if good else 401)
        if good:
            self.send_header("X-Auth-User", "alice")
        else:
            self.send_header("WWW-Authenticate", 'Bearer realm="node"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def auth_service(pki: ClusterPKI) -> Iterator[int]:
    """On the node's address, which pods reach; its certificate names that IP as a DNS name too, because
    nginx checks names (the URL's host) against DNS names only."""
    crt, key = pki.issue("auth", common_name=NODE_IP, dns_names=[NODE_IP], ip_addresses=[NODE_IP], server=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    server = ThreadingHTTPServer((NODE_IP, 0), AuthHandler)
    server.daemon_threads = True
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def get(ip: str, path: str, context: ssl.SSLContext, headers: dict[str, str]) -> tuple[int, str, str]:
    """(status, WWW-Authenticate, body) of a GET over TLS to ip:8443, as web.test."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with (
        socket.create_connection((ip, 8443), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="web.test") as tls,
    ):
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: web.test\r\n{extra}Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    head, _, body = data.decode(errors="replace").partition("\r\n\r\n")
    challenge = next(
        (line.split(":", 1)[1].strip() for line in head.split("\r\n") if line.lower().startswith("www-authenticate:")),
        "",
    )
    return int(head.split(" ", 2)[1]), challenge, body


def test_the_auth_gate_lets_a_good_token_through_and_answers_401_without(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    tls = tls_secret(cluster, namespace, "web-tls", tmp_path, ["web.test"])
    auth_pki = ClusterPKI(tmp_path / "auth")
    secret_from_files(cluster, namespace, "auth-ca", *auth_pki.issue("unused", common_name="unused"), auth_pki.ca)
    with auth_service(auth_pki) as auth_port:
        app = app_container(
            "web",
            GATED_APP,
            ports=[{"name": "https", "containerPort": 8443}],
            readinessProbe={"httpGet": {"path": "/healthz", "port": "https"}, "periodSeconds": 2},
        )
        cluster.apply(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": "web",
                    "namespace": namespace,
                    "labels": {"app": "web"},
                    "annotations": {
                        "podpatterns.io/tls-proxy": "web-tls",
                        "podpatterns.io/tls-proxy-auth-url": f"https://{NODE_IP}:{auth_port}/oauth2/auth",
                        "podpatterns.io/tls-proxy-auth-response-headers": "X-Auth-User",
                        "podpatterns.io/tls-proxy-auth-ca": "auth-ca",
                    },
                },
                "spec": {"securityContext": POD_SECURITY, "containers": [app]},
            }
        )
        # Ready: kubelet's probe (no token) reached /healthz past the gate.
        pod = wait_pod(cluster, namespace, "app=web", timeout=120)
        ip = pod["status"]["podIP"]
        context = tls_context(tls.ca)

        status, _, body = retry(lambda: get(ip, "/orders", context, {"Authorization": "Bearer s3cret"}))
        assert status == 200, body
        assert json.loads(body) == {"path": "/orders", "user": ["alice"]}
        status, challenge, _ = get(ip, "/orders", context, {})
        assert status == 401 and challenge == 'Bearer realm="node"'
        status, _, body = get(ip, "/orders", context, {"Authorization": "Bearer s3cret", "X-Auth-User": "root"})
        assert status == 200 and json.loads(body)["user"] == ["alice"]  # the client's own header is replaced
        assert "/orders" in AuthHandler.asked and "/healthz" not in AuthHandler.asked
        assert container_statuses(pod)["podpatterns-tls-proxy"]["restartCount"] == 0
