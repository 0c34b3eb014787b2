"""Fixtures for the tests that run injected pods on a real node.

One cluster per test session (started on first use, stopped at the end), the webhook installed in it with
`helm install charts/podpatterns` from the image the project's Dockerfile builds, and a fresh opted-in
namespace per test, enforcing Pod Security "restricted" so every injected pod is admitted under it for real.

Without PODPATTERNS_K8S_ASSETS (the directory of the Kubernetes binaries) or without root these tests skip,
saying what to set; with PODPATTERNS_REQUIRE_NODE=1 (CI sets it) a skip is a failure instead.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.node import cluster as cluster_mod
from tests.node.cluster import Cluster, ClusterError
from tests.node.webhook_install import Webhook, install_webhook
from tests.node.workloads import es_deployment, services, tls_secret, wait_pod

REQUIRE_ENV = "PODPATTERNS_REQUIRE_NODE"


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1: the node tests must run here)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    try:
        assets = cluster_mod.find_assets()
    except ClusterError as exc:
        _unavailable(str(exc))
        raise
    if assets is None:
        _unavailable(
            f"set {cluster_mod.ASSETS_ENV} to a directory holding {', '.join(cluster_mod.BINARIES)} "
            "(.ci/setup.sh unpacks ../shared/k8s into /opt/podpatterns-k8s) to run the node tests"
        )
    if os.geteuid() != 0:
        _unavailable("the node tests start containerd and kubelet, which need root")
    node = Cluster(assets)  # type: ignore[arg-type]
    try:
        node.start()
    except Exception:
        node.stop()
        raise
    print(f"\nnode up: {', '.join(f'{k} {v:.1f}s' for k, v in node.timings.items())}")
    yield node
    node.stop()


@pytest.fixture(scope="session")
def webhook(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Webhook:
    return install_webhook(cluster, tmp_path_factory.mktemp("helm"))


@pytest.fixture
def namespace(cluster: Cluster, webhook: Webhook, request: pytest.FixtureRequest) -> Iterator[str]:
    """An opted-in namespace of its own, restricted; deleted (without waiting) after the test."""
    name = "t-" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:50].rstrip("-")
    cluster.kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=true", timeout=120)
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "labels": {
                    "podpatterns.io/injection": "enabled",
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                },
            },
        }
    )
    cluster.wait_for(
        f"ServiceAccount default in {name}",
        lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0,
        30,
    )
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def es_pod(cluster: Cluster, namespace: str, tmp_path: Path) -> tuple[dict, object]:
    """The seed's Elasticsearch Deployment (+ Services by port name and number), Ready, with its TLS material."""
    tls = tls_secret(cluster, namespace, "elasticsearch-tls", tmp_path, [f"elasticsearch.{namespace}.svc"])
    annotations = {
        "podpatterns.io/tls-proxy": "elasticsearch-tls",
        "podpatterns.io/exporter": "elasticsearch",
        "podpatterns.io/log-tail": "/var/log/app/app.log",
    }
    cluster.apply([es_deployment(namespace, annotations), *services(namespace)])
    pod = wait_pod(cluster, namespace, "app=elasticsearch", timeout=120)
    return pod, tls
