"""The webhook in the test cluster, installed the way users install it: `helm install charts/podpatterns`.

Certificates in the chart's `helm` mode, the image built from the project's Dockerfile, and an injector
config that points at the images the tests built (no registry is reachable; choosing images is what the
config is for).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.node import images
from tests.node.cluster import Cluster, ClusterError

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "podpatterns"
RELEASE = "podpatterns"
NAMESPACE = "podpatterns-system"
# Tests scale the Deployment and delete and recreate the webhook configuration with kubectl; helm's
# server-side apply then meets fields another manager owns: take them back, as an operator would.
UPGRADE_FLAGS = ("--force-conflicts", "--wait", "--timeout", "4m")
GIT_DAEMON_SCHEMES = ["https", "git"]


def injector_config() -> dict[str, Any]:
    """The test injector config: our images, their UIDs, and the Debian nginx's dynamic stream module."""
    return {
        "nativeSidecars": True,
        "tlsProxy": {
            "image": images.NGINX,
            "runAsUser": 101,
            "loadModules": ["/usr/lib/nginx/modules/ngx_stream_module.so"],
        },
        # The TLS tunnel out: the same nginx image (its stream module comes from tlsProxy.loadModules).
        "tlsEgress": {"image": images.NGINX, "runAsUser": 101},
        "logTail": {"image": images.BUSYBOX, "runAsUser": 65534},
        "waitFor": {"image": images.BUSYBOX, "runAsUser": 65534, "timeoutSeconds": 300},
        "configReload": {"image": images.BUSYBOX, "runAsUser": 65534},
        "cache": {"image": images.REDIS, "runAsUser": 999},
        "gitClone": {"image": images.GIT, "runAsUser": 65532, "allowedSchemes": GIT_DAEMON_SCHEMES},
        "exporters": {
            "elasticsearch": {
                "image": images.ELASTICSEARCH_EXPORTER,
                "port": 9114,
                "targetPort": 9200,
                "args": ["--es.uri=http://localhost:{port}"],
            },
            "redis": {
                "image": images.REDIS_EXPORTER,
                "port": 9121,
                "targetPort": 6379,
                "args": ["--redis.addr=redis://localhost:{port}"],
            },
        },
    }


@dataclass
class Webhook:
    cluster: Cluster
    values_file: Path
    values: dict[str, Any]

    def helm(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return helm(self.cluster, *args, timeout=timeout)

    def upgrade(self, **overrides: Any) -> None:
        """helm upgrade with the install's values plus `overrides` (a nested dict merged over them)."""
        merged = _merge(self.values, overrides)
        path = self.values_file.with_name("values-upgrade.yaml")
        path.write_text(yaml.safe_dump(merged))
        self.helm("upgrade", RELEASE, str(CHART), "-n", NAMESPACE, "-f", str(path), *UPGRADE_FLAGS)
        wait_ready(self.cluster)

    def restore(self) -> None:
        path = self.values_file
        self.helm("upgrade", RELEASE, str(CHART), "-n", NAMESPACE, "-f", str(path), *UPGRADE_FLAGS)
        wait_ready(self.cluster)

    def pods(self) -> list[dict[str, Any]]:
        return self.cluster.get("pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/name=podpatterns")["items"]


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def helm(cluster: Cluster, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(cluster.admin_kubeconfig), "HELM_CACHE_HOME": str(cluster.state / "helm")}
    result = subprocess.run(["helm", *args], capture_output=True, text=True, timeout=timeout, env=env, check=False)
    if result.returncode != 0:
        raise ClusterError(f"helm {' '.join(args)}: {result.stderr.strip()}\n{_diagnose(cluster)}")
    return result


def _diagnose(cluster: Cluster) -> str:
    pods = cluster.kubectl("get", "pods", "-n", NAMESPACE, "-o", "wide", check=False).stdout
    events = cluster.kubectl("get", "events", "-n", NAMESPACE, check=False).stdout
    return f"pods:\n{pods}\nevents:\n{events[-3000:]}"


def wait_ready(cluster: Cluster) -> None:
    """Every webhook pod Ready and in the Service's EndpointSlice: what the API server dials."""

    def ready() -> bool:
        slices = cluster.get("endpointslices", "-n", NAMESPACE, "-l", f"kubernetes.io/service-name={RELEASE}")
        endpoints = [e for s in slices["items"] for e in s.get("endpoints") or []]
        pods = cluster.get("pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/name=podpatterns")["items"]
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        return (
            bool(endpoints)
            and all((e.get("conditions") or {}).get("ready") for e in endpoints)
            and len(endpoints) == len(live)
        )

    cluster.wait_for("webhook endpoints ready", ready, 120)


def install_webhook(cluster: Cluster, workdir: Path) -> Webhook:
    values = {
        "image": {"repository": images.WEBHOOK.rsplit(":", 1)[0], "tag": images.WEBHOOK.rsplit(":", 1)[1]},
        "replicaCount": 2,
        "certificates": {"mode": "helm"},
        "injector": injector_config(),
    }
    path = workdir / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    helm(
        cluster,
        "install",
        RELEASE,
        str(CHART),
        "-n",
        NAMESPACE,
        "--create-namespace",
        "-f",
        str(path),
        "--wait",
        "--timeout",
        "4m",
    )
    wait_ready(cluster)
    return Webhook(cluster, path, values)


def mwc(cluster: Cluster) -> dict[str, Any]:
    return json.loads(cluster.kubectl("get", "mutatingwebhookconfiguration", RELEASE, "-o", "json").stdout)
