"""The TLS ambassador's other modes on the node: mutual TLS in front of HTTP, and tcp mode in front of Redis."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from pathlib import Path

from tests.node import images
from tests.node.cluster import Cluster
from tests.node.pki import ClusterPKI
from tests.node.workloads import (
    POD_SECURITY,
    RESTRICTED,
    container_statuses,
    es_deployment,
    https_get,
    plain_get,
    retry,
    secret_from_files,
    tls_context,
    tls_secret,
    wait_pod,
)


def test_mutual_tls_refuses_clients_without_a_certificate(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    hostname = f"elasticsearch.{namespace}.svc"
    tls = tls_secret(cluster, namespace, "es-tls", tmp_path, [hostname])
    clients = ClusterPKI(tmp_path / "clients")
    client_crt, client_key = clients.issue("client", common_name="kibana", client=True)
    secret_from_files(cluster, namespace, "es-clients", client_crt, client_key, clients.ca)
    stranger = ClusterPKI(tmp_path / "stranger")
    stranger_crt, stranger_key = stranger.issue("client", common_name="mallory", client=True)
    annotations = {"podpatterns.io/tls-proxy": "es-tls", "podpatterns.io/tls-proxy-client-ca": "es-clients"}
    cluster.apply(es_deployment(namespace, annotations))

    # Ready means kubelet's HTTPS probes (no client certificate) reached their open paths.
    pod = wait_pod(cluster, namespace, "app=elasticsearch", timeout=120)
    ip = pod["metadata"] and pod["status"]["podIP"]
    assert all(s["restartCount"] == 0 for s in container_statuses(pod).values())

    with_cert = tls_context(tls.ca, client_crt, client_key)
    status, body, _ = retry(lambda: https_get(ip, 9200, "/_search", context=with_cert, server_hostname=hostname))
    assert status == 200 and "standin" in body

    for context in (tls_context(tls.ca), tls_context(tls.ca, stranger_crt, stranger_key)):
        try:
            status, body, _ = https_get(ip, 9200, "/_search", context=context, server_hostname=hostname)
        except (ssl.SSLError, ConnectionError):
            continue  # refused at the handshake
        assert status in (400, 403) and "standin" not in body
    # The probe path stays open without a certificate, for GET only, exactly as kubelet uses it.
    status, _, _ = https_get(ip, 9200, "/_cluster/health", context=tls_context(tls.ca), server_hostname=hostname)
    assert status == 200


def _resp(command: list[str]) -> bytes:
    return b"".join([f"*{len(command)}\r\n".encode()] + [f"${len(c)}\r\n{c}\r\n".encode() for c in command])


def test_tcp_mode_fronts_a_real_redis_and_its_exporter_follows(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    hostname = f"redis.{namespace}.svc"
    tls = tls_secret(cluster, namespace, "redis-tls", tmp_path, [hostname])
    redis = {
        "name": "redis",
        "image": images.REDIS,
        "command": ["redis-server"],
        "args": [
            "--bind",
            "$(PODPATTERNS_APP_HOST)",
            "--port",
            "$(PODPATTERNS_APP_PORT)",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
        ],
        "ports": [{"name": "redis", "containerPort": 6379}],
        "readinessProbe": {"tcpSocket": {"port": 6379}, "periodSeconds": 2},
        "securityContext": {**RESTRICTED, "readOnlyRootFilesystem": True},
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "500m", "memory": "64Mi"}},
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "redis",
            "namespace": namespace,
            "labels": {"app": "redis"},
            "annotations": {
                "podpatterns.io/tls-proxy": "redis-tls",
                "podpatterns.io/tls-proxy-protocol": "tcp",
                "podpatterns.io/exporter": "redis",
            },
        },
        "spec": {"securityContext": POD_SECURITY, "containers": [redis]},
    }
    cluster.apply(pod)
    pod = wait_pod(cluster, namespace, "app=redis", timeout=120)
    ip = pod["status"]["podIP"]

    def ping() -> bytes:
        with (
            socket.create_connection((ip, 6379), timeout=5) as raw,
            tls_context(tls.ca).wrap_socket(raw, server_hostname=hostname) as conn,
        ):
            conn.sendall(_resp(["SET", "greeting", "hello"]) + _resp(["GET", "greeting"]))
            data = b""
            while data.count(b"\r\n") < 3:
                data += conn.recv(4096)
                return data

    assert retry(ping) == b"+OK\r\n$5\r\nhello\r\n"
    if shutil.which("redis-cli"):
        out = subprocess.run(
            [
                "redis-cli",
                "--tls",
                "--cacert",
                str(tls.ca),
                "--sni",
                hostname,
                "-h",
                ip,
                "-p",
                "6379",
                "GET",
                "greeting",
            ],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        assert out.stdout.strip() == "hello", out.stderr
    # Plain text on the TLS port never reaches redis.
    assert b"+PONG" not in plain_get(ip, 6379, "/")
    # The exporter reached redis on its moved localhost port.
    metrics = retry(lambda: _metrics_with(ip, 9121, b"redis_up 1"), timeout=30)
    assert b"redis_up 1" in metrics
    assert container_statuses(pod)["redis"]["restartCount"] == 0


def _metrics_with(ip: str, port: int, needle: bytes) -> bytes:
    data = plain_get(ip, port, "/metrics")
    if needle not in data:
        raise AssertionError(f"{needle!r} not yet in metrics")
    return data
