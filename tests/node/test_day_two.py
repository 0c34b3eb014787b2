"""`podpatterns check | audit | restart` against the real API server and node: pods injected by the current
webhook, a pod created while the webhook was unregistered (missing), pods injected under an older injector
config (stale), a pod that asks for nothing, and a namespace without the opt-in label. Each command is run
as a user runs it (a process with the admin kubeconfig) and judged by its JSON and exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.node import images
from tests.node.cluster import Cluster
from tests.node.webhook_install import RELEASE, ROOT, Webhook, injector_config, mwc
from tests.node.workloads import POD_SECURITY, RESTRICTED

LOG_TAIL = {"podpatterns.io/log-tail": "/var/log/app/app.log"}
STATUS = "podpatterns.io/status"


def podpatterns(cluster: Cluster, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webhook", *args, "--kubeconfig", str(cluster.admin_kubeconfig)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        input=input,
        check=False,
    )


def _json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.stdout, result.stderr
    return json.loads(result.stdout)


def _template(annotations: dict[str, str]) -> dict[str, Any]:
    app = {
        "name": "app",
        "image": images.BUSYBOX,
        "command": ["sh", "-c", "mkdir -p /var/log/app; while true; do date >> /var/log/app/app.log; sleep 5; done"],
        "securityContext": RESTRICTED,
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "100m", "memory": "32Mi"}},
    }
    return {"metadata": {"annotations": annotations}, "spec": {"securityContext": POD_SECURITY, "containers": [app]}}


def deployment(namespace: str, name: str, annotations: dict[str, str]) -> dict[str, Any]:
    template = _template(annotations)
    template["metadata"]["labels"] = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}}, "template": template},
    }


def bare_pod(namespace: str, name: str, annotations: dict[str, str]) -> dict[str, Any]:
    template = _template(annotations)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, **template["metadata"]},
        "spec": template["spec"],
    }


def _injected_on_dry_run(cluster: Cluster, pod: dict[str, Any]) -> bool:
    probe = {**pod, "metadata": {**pod["metadata"], "name": pod["metadata"]["name"] + "-probe"}}
    out = cluster.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(probe)).stdout
    return STATUS in (json.loads(out)["metadata"].get("annotations") or {})


def create_unseen(cluster: Cluster, pod: dict[str, Any]) -> None:
    """Create the pod while the MutatingWebhookConfiguration is gone (deleted, then recreated as it was)."""
    saved = mwc(cluster)
    for key in ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation"):
        saved["metadata"].pop(key, None)
    cluster.kubectl("delete", "mutatingwebhookconfiguration", RELEASE)
    try:
        # The API server drops the webhook from its informer cache a moment after the delete.
        cluster.wait_for("webhook unregistered", lambda: not _injected_on_dry_run(cluster, pod), 30)
        cluster.apply(pod)
    finally:
        cluster.kubectl("create", "-f", "-", input=json.dumps(saved))
        cluster.wait_for("webhook registered again", lambda: _injected_on_dry_run(cluster, pod), 30)


def rolled_out(cluster: Cluster, namespace: str, *names: str) -> None:
    for name in names:
        cluster.kubectl("rollout", "status", f"deployment/{name}", "-n", namespace, "--timeout=120s", timeout=150)

    def settled() -> bool:  # the replaced pods gone, not just terminating
        pods = cluster.get("pods", "-n", namespace)["items"]
        return not any(p["metadata"].get("deletionTimestamp") for p in pods)

    cluster.wait_for("old pods gone", settled, 120)


@pytest.fixture
def unlabelled(cluster: Cluster, webhook: Webhook) -> Iterator[str]:
    name = "t-day-two-unlabelled"
    cluster.kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=true", timeout=120)
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    cluster.wait_for(
        "default ServiceAccount",
        lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0,
        30,
    )
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def restored(webhook: Webhook) -> Iterator[Webhook]:
    yield webhook
    webhook.restore()


def _pod_of(cluster: Cluster, namespace: str, app: str) -> str:
    return cluster.get("pods", "-n", namespace, "-l", f"app={app}")["items"][0]["metadata"]["name"]


def test_check_audit_and_restart_tell_current_stale_missing_and_not_asked(
    cluster: Cluster, restored: Webhook, namespace: str, unlabelled: str
) -> None:
    ns = namespace
    cluster.apply(deployment(ns, "old", LOG_TAIL))
    rolled_out(cluster, ns, "old")
    # A new injector config (the chart rolls the webhook on its checksum): "old" was injected under the previous one.
    config = injector_config()
    config["waitFor"]["timeoutSeconds"] = 301
    restored.upgrade(injector=config)
    cluster.apply([deployment(ns, "fresh", LOG_TAIL), bare_pod(ns, "plain", {})])
    create_unseen(cluster, bare_pod(ns, "lonely", LOG_TAIL))
    cluster.apply(bare_pod(unlabelled, "outside", LOG_TAIL))
    rolled_out(cluster, ns, "fresh")
    old, fresh = _pod_of(cluster, ns, "old"), _pod_of(cluster, ns, "fresh")

    # audit: every pod of the opted-in namespace, by owner; the unlabelled namespace is not served.
    result = podpatterns(cluster, "audit", "-n", ns, "-o", "json")
    assert result.returncode == 3, result.stderr
    rows = {r["pod"]: r for r in _json(result)}
    assert {p: (r["owner"], r["state"]) for p, r in rows.items()} == {
        old: ("Deployment/old", "stale"),
        fresh: ("Deployment/fresh", "current"),
        "lonely": (None, "missing"),
        "plain": (None, "not-asked"),
    }, rows
    assert "config" in rows[old]["reason"] and all(r["namespace"] == ns for r in rows.values())
    everywhere = _json(podpatterns(cluster, "audit", "-A", "-o", "json"))
    assert {r["pod"] for r in everywhere if r["namespace"] == ns} == set(rows)
    assert not [r for r in everywhere if r["namespace"] == unlabelled]
    table = podpatterns(cluster, "audit", "-n", ns)
    assert table.returncode == 3 and "Deployment/old" in table.stdout, table.stdout
    assert "1 current, 1 stale, 1 missing, 1 not-asked" in table.stdout, table.stdout

    # check: the live pods, each with its exit code and the line that decides.
    current = podpatterns(cluster, "check", "-n", ns, fresh)
    assert current.returncode == 0, current.stdout + current.stderr
    assert (
        "[ok] namespace opt-in" in current.stdout and "[ok] matchCondition has-podpatterns-annotation" in current.stdout
    )
    assert "[ok] endpoints" in current.stdout and "[ok] caBundle verifies the serving certificate" in current.stdout
    assert "expires" in current.stdout and "failurePolicy: Fail" in current.stdout and "(current)" in current.stdout
    stale = podpatterns(cluster, "check", "-n", ns, old)
    assert stale.returncode == 3 and "stale" in stale.stdout, stale.stdout
    missing = podpatterns(cluster, "check", "-n", ns, "lonely")
    assert missing.returncode == 1 and "[no] injected" in missing.stdout, missing.stdout
    plain = podpatterns(cluster, "check", "-n", ns, "plain")
    assert plain.returncode == 0 and "[no] matchCondition" in plain.stdout, plain.stdout
    outside = podpatterns(cluster, "check", "-n", unlabelled, "outside")
    assert outside.returncode == 1 and "[no] namespace opt-in" in outside.stdout, outside.stdout

    # check -f: a server-side dry run shows what the API server and the webhook would store.
    manifest = yaml.safe_dump(deployment(ns, "planned", LOG_TAIL))
    planned = podpatterns(cluster, "check", "-n", ns, "-f", "-", input=manifest)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert "[ok] dry run: would be injected: log-tail" in planned.stdout
    assert f"+    {STATUS}:" in planned.stdout and "uid:" not in planned.stdout, planned.stdout
    refused = podpatterns(
        cluster, "check", "-n", unlabelled, "-f", "-", input=yaml.safe_dump(bare_pod(unlabelled, "x", LOG_TAIL))
    )
    assert refused.returncode == 1 and "[no] dry run" in refused.stdout, refused.stdout

    # restart --dry-run plans, changes nothing; bare pods are never deleted without the flag.
    plan = podpatterns(cluster, "restart", "--stale", "--missing", "-n", ns, "--dry-run", "-o", "json")
    assert plan.returncode == 1, plan.stderr
    actions = {(a["target"], a["action"]) for a in _json(plan)}
    assert actions == {("Deployment/old", "restart"), ("Pod/lonely", "skip")}, actions
    assert not any(a["done"] for a in _json(plan))
    assert _pod_of(cluster, ns, "old") == old

    # restart --stale rolls "old" for real: its new pod is current.
    rolled = podpatterns(cluster, "restart", "--stale", "-n", ns, "-o", "json")
    assert rolled.returncode == 0 and [(a["target"], a["done"]) for a in _json(rolled)] == [("Deployment/old", True)]
    rolled_out(cluster, ns, "old")
    after = {r["pod"]: r["state"] for r in _json(podpatterns(cluster, "audit", "-n", ns, "-o", "json"))}
    new_old = _pod_of(cluster, ns, "old")
    assert new_old != old and after[new_old] == "current" and after["lonely"] == "missing", after
