"""What happens to pod creation while the webhook is down, under each failurePolicy, on a real API server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.node import images
from tests.node.cluster import Cluster
from tests.node.webhook_install import NAMESPACE, RELEASE, Webhook, wait_ready
from tests.node.workloads import POD_SECURITY, RESTRICTED


def _pod(namespace: str, name: str, annotations: dict[str, str]) -> dict:
    container = {
        "name": "app",
        "image": images.BUSYBOX,
        "command": ["sleep", "3600"],
        "ports": [{"name": "http", "containerPort": 8080}],
        "securityContext": RESTRICTED,
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "100m", "memory": "32Mi"}},
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": {"securityContext": POD_SECURITY, "containers": [container]},
    }


def _scale(cluster: Cluster, replicas: int) -> None:
    cluster.kubectl("scale", "deployment", RELEASE, "-n", NAMESPACE, f"--replicas={replicas}")

    def settled() -> bool:
        pods = cluster.get("pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/name=podpatterns")["items"]
        return len(pods) == replicas

    cluster.wait_for(f"{replicas} webhook pods", settled, 120)


@pytest.fixture
def webhook_down(cluster: Cluster, webhook: Webhook) -> Iterator[Webhook]:
    _scale(cluster, 0)
    yield webhook
    webhook.restore()
    _scale(cluster, webhook.values["replicaCount"])
    wait_ready(cluster)


def _create(cluster: Cluster, pod: dict) -> tuple[bool, str]:
    import yaml

    result = cluster.kubectl("create", "-f", "-", input=yaml.safe_dump(pod), check=False)
    return result.returncode == 0, result.stderr + result.stdout


def test_fail_refuses_injection_while_the_webhook_is_down_and_ignore_with_the_policy_guards_tls(
    cluster: Cluster, webhook_down: Webhook, namespace: str
) -> None:
    wants_tls = {"podpatterns.io/tls-proxy": "some-secret"}
    ok, out = _create(cluster, _pod(namespace, "fail-tls", wants_tls))
    assert not ok and "inject.podpatterns.io" in out, out
    # A pod without podpatterns annotations never reaches the webhook (matchConditions): admitted.
    ok, out = _create(cluster, _pod(namespace, "fail-plain", {}))
    assert ok, out

    webhook_down.upgrade(webhook={"failurePolicy": "Ignore"}, validatingAdmissionPolicy={"enabled": True})
    _scale(cluster, 0)  # the upgrade brought the replicas back
    # The ValidatingAdmissionPolicy refuses a pod that asked for the TLS proxy and arrived without it...
    ok, out = _create(cluster, _pod(namespace, "ignore-tls", wants_tls))
    assert not ok and "podpatterns-tls-proxy" in out, out
    # ...while a pod asking for something non-essential starts uninjected (failing open, by choice).
    ok, out = _create(cluster, _pod(namespace, "ignore-exporter", {"podpatterns.io/log-tail": "/var/log/app.log"}))
    assert ok, out
    created = cluster.get("pod", "ignore-exporter", "-n", namespace)
    assert "podpatterns.io/status" not in created["metadata"].get("annotations", {})
