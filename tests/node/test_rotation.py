"""Certificate rotation on the node, with no restart: the app's TLS Secret, and the webhook's own."""

from __future__ import annotations

import base64
import json
import socket
import ssl
from pathlib import Path

from cryptography import x509

from tests.node.cluster import Cluster
from tests.node.webhook_install import NAMESPACE, RELEASE, Webhook
from tests.node.workloads import (
    container_statuses,
    es_deployment,
    https_get,
    retry,
    secret_from_files,
    tls_context,
    tls_secret,
    wait_pod,
)


def _serial(der: bytes) -> int:
    return x509.load_der_x509_certificate(der).serial_number


def test_app_secret_rotation_is_served_without_a_restart(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    hostname = f"elasticsearch.{namespace}.svc"
    tls = tls_secret(cluster, namespace, "es-tls", tmp_path, [hostname])
    cluster.apply(es_deployment(namespace, {"podpatterns.io/tls-proxy": "es-tls"}))
    pod = wait_pod(cluster, namespace, "app=elasticsearch", timeout=120)
    ip = pod["status"]["podIP"]
    first = x509.load_pem_x509_certificate(tls.cert.read_bytes()).serial_number
    _, _, peer = retry(lambda: https_get(ip, 9200, "/", context=tls_context(tls.ca), server_hostname=hostname))
    assert _serial(peer) == first

    # cert-manager renews: same CA, new leaf and key, written into the same Secret.
    new_cert, new_key = tls.pki.issue("renewed", common_name=hostname, dns_names=[hostname], server=True)
    secret_from_files(cluster, namespace, "es-tls", new_cert, new_key, tls.ca)
    renewed = x509.load_pem_x509_certificate(new_cert.read_bytes()).serial_number

    def served_renewed() -> bool:
        _, _, der = https_get(ip, 9200, "/", context=tls_context(tls.ca), server_hostname=hostname)
        return _serial(der) == renewed

    cluster.wait_for("the renewed certificate to be served", served_renewed, 90, interval=1)
    pod = cluster.get("pod", pod["metadata"]["name"], "-n", namespace)
    assert all(s["restartCount"] == 0 for s in container_statuses(pod).values())


def _served_cert(ip: str, port: int) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((ip, port), timeout=5) as raw, context.wrap_socket(raw) as tls:
        return tls.getpeercert(binary_form=True) or b""


def test_webhook_serving_secret_rotation_keeps_admitting(
    cluster: Cluster, webhook: Webhook, namespace: str, tmp_path: Path
) -> None:
    secret_name = f"{RELEASE}-tls"
    before = cluster.get("secret", secret_name, "-n", NAMESPACE)
    restarts = {
        p["metadata"]["name"]: [s["restartCount"] for s in p["status"]["containerStatuses"]] for p in webhook.pods()
    }
    # `helm upgrade` re-issues the chart's leaf under the same CA: the rotation the chart documents.
    webhook.restore()
    after = cluster.get("secret", secret_name, "-n", NAMESPACE)
    assert after["data"]["tls.crt"] != before["data"]["tls.crt"]
    new_leaf = x509.load_pem_x509_certificate(base64.b64decode(after["data"]["tls.crt"]))

    def all_serve_new() -> bool:
        return all(
            x509.load_der_x509_certificate(_served_cert(p["status"]["podIP"], 8443)).serial_number
            == new_leaf.serial_number
            for p in webhook.pods()
        )

    cluster.wait_for("webhook pods to serve the new leaf", all_serve_new, 120, interval=2)
    now = {p["metadata"]["name"]: [s["restartCount"] for s in p["status"]["containerStatuses"]] for p in webhook.pods()}
    assert now == restarts, "the webhook pods restarted (or were replaced) to rotate their certificate"

    tls_secret(cluster, namespace, "es-tls", tmp_path, [f"elasticsearch.{namespace}.svc"])
    cluster.apply(es_deployment(namespace, {"podpatterns.io/tls-proxy": "es-tls"}))
    pod = wait_pod(cluster, namespace, "app=elasticsearch", timeout=120)
    assert "podpatterns-tls-proxy" in container_statuses(pod)
    assert json.loads(pod["metadata"]["annotations"]["podpatterns.io/status"])["features"] == ["tls-proxy"]
