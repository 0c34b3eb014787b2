"""Admission as the real API server does it: one webhook call per pod, and no ServiceAccount token in the
containers we inject (the API server's ServiceAccount plugin runs again after webhooks and would add it)."""

from __future__ import annotations

import re

from tests.node import images
from tests.node.cluster import Cluster
from tests.node.workloads import POD_SECURITY, RESTRICTED, wait_pod

CALLS = re.compile(
    r'^apiserver_admission_webhook_admission_duration_seconds_count\{name="inject\.podpatterns\.io",'
    r'operation="CREATE",rejected="false",type="admit"\} (\d+)$',
    re.M,
)


def _webhook_calls(cluster: Cluster) -> int:
    with cluster.api() as api:
        found = CALLS.search(api.get("/metrics").text)
    return int(found.group(1)) if found else 0


def test_one_webhook_call_per_pod_and_no_token_in_injected_containers(cluster: Cluster, namespace: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "tailed",
            "namespace": namespace,
            "labels": {"app": "tailed"},
            "annotations": {"podpatterns.io/log-tail": "/var/log/app/app.log"},
        },
        "spec": {
            "securityContext": POD_SECURITY,
            "containers": [
                {
                    "name": "app",
                    "image": images.BUSYBOX,
                    "command": ["sh", "-c", "while true; do date >> /var/log/app/app.log; sleep 1; done"],
                    "securityContext": RESTRICTED,
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "32Mi"}},
                }
            ],
        },
    }
    before = _webhook_calls(cluster)
    cluster.apply(pod)
    created = wait_pod(cluster, namespace, "app=tailed", timeout=90)
    assert _webhook_calls(cluster) - before == 1, "the API server called the webhook more than once for one pod"

    containers = {c["name"]: c for c in created["spec"]["containers"] + created["spec"]["initContainers"]}
    token_mounts = {
        name: [m["name"] for m in c.get("volumeMounts", []) if m["mountPath"].startswith("/var/run/secrets/")]
        for name, c in containers.items()
    }
    assert token_mounts["podpatterns-log-app-log"] == ["podpatterns-no-token"]
    assert token_mounts["app"] and token_mounts["app"][0].startswith("kube-api-access")  # the app's own: untouched
    listing = cluster.kubectl(
        "exec",
        "-n",
        namespace,
        "tailed",
        "-c",
        "podpatterns-log-app-log",
        "--",
        "ls",
        "-A",
        "/var/run/secrets/kubernetes.io/serviceaccount",
    )
    assert listing.stdout.strip() == ""
