"""What the node tests run and how they look at it: stand-in apps, TLS Secrets, waits on pods, TLS clients.

Apps run as a non-root user under Pod Security "restricted" (their namespaces enforce it), so a pod that
starts proves the injected containers meet it too.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.node import images
from tests.node.cluster import Cluster, ClusterError
from tests.node.pki import ClusterPKI

APP_UID = 1000

RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}
POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": APP_UID,
    "runAsGroup": APP_UID,
    "seccompProfile": {"type": "RuntimeDefault"},
}

# A stand-in for Elasticsearch: binds where the TLS proxy told it to (127.0.0.1:$PODPATTERNS_APP_PORT),
# answers JSON, writes a log line per request, and rotates its log file on GET /_rotate.
ES_STANDIN = r"""
import json, os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
host = os.environ.get("PODPATTERNS_APP_HOST", "0.0.0.0")
port = int(os.environ.get("PODPATTERNS_APP_PORT", "9200"))
log_path = os.environ.get("APP_LOG", "/var/log/app/app.log")
try:
    log = open(log_path, "a", buffering=1)
except OSError:  # no log-tail volume in this pod: log to stdout
    log = sys.stdout
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args): pass
    def do_GET(self):
        global log
        if self.path == "/_rotate" and log is not sys.stdout:
            log.close(); os.rename(log_path, log_path + ".1"); log = open(log_path, "a", buffering=1)
            log.write("rotated\n")
        log.write(f"request {self.command} {self.path} xff={self.headers.get('X-Forwarded-For')}\n")
        body = json.dumps({"cluster_name": "standin", "status": "green", "path": self.path,
                           "version": {"number": "8.15.0"}, "tls": self.headers.get("X-Forwarded-Proto")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_HEAD = do_GET
log.write(f"listening on {host}:{port}\n")
print(f"listening on {host}:{port}", flush=True)
ThreadingHTTPServer((host, port), Handler).serve_forever()
"""


def app_container(name: str, script: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": images.PYTHON,
        "command": ["python3", "-u", "-c", script],
        "securityContext": RESTRICTED,
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "500m", "memory": "128Mi"}},
        **extra,
    }


@dataclass
class TlsMaterial:
    ca: Path
    cert: Path
    key: Path
    pki: ClusterPKI


def tls_secret(cluster: Cluster, namespace: str, name: str, workdir: Path, dns: list[str]) -> TlsMaterial:
    """A kubernetes.io/tls Secret signed by a CA of its own (what cert-manager would write), with ca.crt."""
    pki = ClusterPKI(workdir / name)
    cert, key = pki.issue("tls", common_name=dns[0], dns_names=dns, server=True)
    secret_from_files(cluster, namespace, name, cert, key, pki.ca)
    return TlsMaterial(pki.ca, cert, key, pki)


def secret_from_files(cluster: Cluster, namespace: str, name: str, cert: Path, key: Path, ca: Path) -> None:
    data = {
        k: base64.b64encode(p.read_bytes()).decode() for k, p in (("tls.crt", cert), ("tls.key", key), ("ca.crt", ca))
    }
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": namespace},
            "data": data,
        }
    )


def pods(cluster: Cluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    return cluster.get("pods", "-n", namespace, "-l", selector)["items"]


def describe(cluster: Cluster, namespace: str) -> str:
    """What a failed wait shows: pods, their containers' states and the namespace's events."""
    out = cluster.kubectl("get", "pods", "-n", namespace, "-o", "wide", check=False).stdout
    for pod in cluster.get("pods", "-n", namespace)["items"]:
        for status in (pod["status"].get("initContainerStatuses") or []) + (
            pod["status"].get("containerStatuses") or []
        ):
            state, restarts = json.dumps(status.get("state")), status.get("restartCount")
            out += f"\n{pod['metadata']['name']}/{status['name']}: {state} restarts={restarts}"
    events = cluster.kubectl("get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False).stdout
    return out + "\n" + events[-4000:]


def wait_pod(cluster: Cluster, namespace: str, selector: str, condition: str = "Ready", timeout: float = 90) -> dict:
    """The first pod matching `selector` once it is Ready (or in phase `condition`, e.g. Succeeded)."""

    def check() -> dict | None:
        for pod in pods(cluster, namespace, selector):
            status = pod.get("status") or {}
            if condition in ("Succeeded", "Failed", "Running") and status.get("phase") == condition:
                return pod
            ready = {c["type"]: c["status"] for c in status.get("conditions") or []}
            if ready.get(condition) == "True":
                return pod
        return None

    try:
        return cluster.wait_for(f"pod {selector} {condition} in {namespace}", check, timeout)  # type: ignore[return-value]
    except ClusterError as exc:
        raise ClusterError(f"{exc}\n{describe(cluster, namespace)}") from None


def container_statuses(pod: dict) -> dict[str, dict]:
    status = pod["status"]
    return {s["name"]: s for s in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])}


def logs(cluster: Cluster, namespace: str, pod: str, container: str, *extra: str) -> str:
    return cluster.kubectl("logs", "-n", namespace, pod, "-c", container, *extra, check=False).stdout


def wait_logs(cluster: Cluster, namespace: str, pod: str, container: str, needle: str, timeout: float = 30) -> str:
    found: dict[str, str] = {}

    def check() -> bool:
        found["text"] = logs(cluster, namespace, pod, container)
        return needle in found["text"]

    try:
        cluster.wait_for(f"{needle!r} in logs of {pod}/{container}", check, timeout)
    except ClusterError as exc:
        raise ClusterError(f"{exc}; logs were:\n{found.get('text', '')[-2000:]}") from None
    return found["text"]


def tls_context(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if cert and key:
        context.load_cert_chain(cert, key)
    return context


def https_get(
    ip: str, port: int, path: str, *, context: ssl.SSLContext, server_hostname: str, timeout: float = 5
) -> tuple[int, str, ssl.SSLSocket | None]:
    """GET over TLS to ip:port with SNI and name checking for `server_hostname`; returns (status, body, peer cert)."""
    with (
        socket.create_connection((ip, port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=server_hostname) as tls,
    ):
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {server_hostname}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
        peer = tls.getpeercert(binary_form=True)
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body.decode(errors="replace"), peer  # type: ignore[return-value]


def plain_get(ip: str, port: int, path: str = "/", timeout: float = 5) -> bytes:
    with socket.create_connection((ip, port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
        return data


def port_open(ip: str, port: int, timeout: float = 2) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return True
    except OSError:
        return False


def retry(fn: Any, timeout: float = 20, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(interval)


def es_deployment(namespace: str, annotations: dict[str, str]) -> dict:
    app = app_container(
        "elasticsearch",
        ES_STANDIN,
        ports=[{"name": "http", "containerPort": 9200, "protocol": "TCP"}],
        readinessProbe={"httpGet": {"path": "/_cluster/health", "port": "http"}, "periodSeconds": 2},
        livenessProbe={"httpGet": {"path": "/", "port": 9200}, "periodSeconds": 5},
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "elasticsearch", "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "elasticsearch"}},
            "template": {
                "metadata": {"labels": {"app": "elasticsearch"}, "annotations": annotations},
                "spec": {"securityContext": POD_SECURITY, "containers": [app]},
            },
        },
    }


def services(namespace: str) -> list[dict]:
    def svc(name: str, target: object) -> dict:
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "selector": {"app": "elasticsearch"},
                "ports": [{"name": "https", "port": 9200, "targetPort": target}],
            },
        }

    return [svc("es-by-name", "http"), svc("es-by-number", 9200)]
