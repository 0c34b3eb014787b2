"""config-reload and cache on the node: a ConfigMap edited with kubectl reaches the app as a reload (a POST
to its localhost endpoint, or SIGHUP across a shared PID namespace) within kubelet's sync, and an app uses
its pod-local Redis through PODPATTERNS_CACHE_URL while nothing outside the pod can reach it."""

from __future__ import annotations

import json

from tests.node import images
from tests.node.cluster import Cluster
from tests.node.workloads import (
    POD_SECURITY,
    RESTRICTED,
    app_container,
    container_statuses,
    logs,
    port_open,
    wait_logs,
    wait_pod,
)

RELOADER = "podpatterns-config-reload"
CACHE = "podpatterns-cache"
# kubelet refreshes a ConfigMap volume within its sync period (10 s here) plus the ConfigMap cache's TTL.
SYNC_TIMEOUT = 90

# Counts POSTs to /-/reload and prints what the config file says at each one.
URL_APP = r"""
from http.server import BaseHTTPRequestHandler, HTTPServer
count = 0
class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args): pass
    def do_POST(self):
        global count
        if self.path == "/-/reload":
            count += 1
            print(f"reload {count}: {open('/etc/app/app.conf').read().strip()}", flush=True)
        self.send_response(200 if self.path == "/-/reload" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()
print("listening", flush=True)
HTTPServer(("127.0.0.1", 8080), Handler).serve_forever()
"""

SIGNAL_APP = r"""
import signal, time
def hup(*_):
    print(f"got SIGHUP: {open('/etc/app/app.conf').read().strip()}", flush=True)
signal.signal(signal.SIGHUP, hup)
print("waiting for SIGHUP", flush=True)
while True:
    time.sleep(1)
"""


def config_map(namespace: str, name: str, value: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"app.conf": value},
    }


def reload_pod(namespace: str, name: str, script: str, annotations: dict[str, str]) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app": name},
            "annotations": {"podpatterns.io/config-reload": "config", **annotations},
        },
        "spec": {
            "securityContext": POD_SECURITY,
            "containers": [app_container("app", script, volumeMounts=[{"name": "config", "mountPath": "/etc/app"}])],
            "volumes": [{"name": "config", "configMap": {"name": name}}],
        },
    }


def test_an_edited_config_map_reloads_the_app_by_post_and_by_signal(cluster: Cluster, namespace: str) -> None:
    cluster.apply(
        [
            config_map(namespace, "by-url", "version 1"),
            config_map(namespace, "by-signal", "version 1"),
            reload_pod(
                namespace, "by-url", URL_APP, {"podpatterns.io/config-reload-url": "http://localhost:8080/-/reload"}
            ),
            reload_pod(
                namespace,
                "by-signal",
                SIGNAL_APP,
                {"podpatterns.io/config-reload-signal": "HUP", "podpatterns.io/config-reload-process": "python3"},
            ),
        ]
    )
    for name in ("by-url", "by-signal"):
        pod = wait_pod(cluster, namespace, f"app={name}", timeout=120)
        assert RELOADER in container_statuses(pod)
        wait_logs(cluster, namespace, name, RELOADER, "podpatterns: watching config:..")
    signal_pod = cluster.get("pod", "by-signal", "-n", namespace)
    assert signal_pod["spec"]["shareProcessNamespace"] is True
    reloader = next(c for c in signal_pod["spec"]["initContainers"] if c["name"] == RELOADER)
    assert reloader["securityContext"]["runAsUser"] == POD_SECURITY["runAsUser"]  # to signal the app's UID
    assert "shareProcessNamespace" not in cluster.get("pod", "by-url", "-n", namespace)["spec"]

    for name in ("by-url", "by-signal"):
        cluster.kubectl(
            "patch",
            "configmap",
            name,
            "-n",
            namespace,
            "--type=merge",
            "-p",
            json.dumps({"data": {"app.conf": "version 2"}}),
        )
    wait_logs(cluster, namespace, "by-url", "app", "reload 1: version 2", timeout=SYNC_TIMEOUT)
    text = wait_logs(cluster, namespace, "by-url", RELOADER, "-> 200", timeout=10)
    assert "podpatterns: config changed (..data -> ..20" in text, text
    assert "POST http://localhost:8080/-/reload -> 200" in text, text

    wait_logs(cluster, namespace, "by-signal", "app", "got SIGHUP: version 2", timeout=SYNC_TIMEOUT)
    text = wait_logs(cluster, namespace, "by-signal", RELOADER, "sent HUP to pid", timeout=10)
    assert "(python3)" in text, text
    # One edit, one reload.
    assert logs(cluster, namespace, "by-url", "app").count("reload ") == 1
    assert logs(cluster, namespace, "by-signal", "app").count("got SIGHUP") == 1


# The app: redis-cli (the REDIS image has it) against the URL the injector gave it.
CACHE_APP = r"""
set -e
until redis-cli -u "$PODPATTERNS_CACHE_URL" set greeting "hello from the cache"; do sleep 1; done
echo "url $PODPATTERNS_CACHE_URL"
echo "read: $(redis-cli -u "$PODPATTERNS_CACHE_URL" get greeting)"
echo "maxmemory: $(redis-cli -u "$PODPATTERNS_CACHE_URL" config get maxmemory | tail -n 1)"
echo "policy: $(redis-cli -u "$PODPATTERNS_CACHE_URL" config get maxmemory-policy | tail -n 1)"
echo "save: [$(redis-cli -u "$PODPATTERNS_CACHE_URL" config get save | tail -n 1)]"
echo "appendonly: $(redis-cli -u "$PODPATTERNS_CACHE_URL" config get appendonly | tail -n 1)"
while true; do sleep 3600; done
"""


def test_the_app_uses_its_local_cache_which_the_pod_ip_does_not_serve(cluster: Cluster, namespace: str) -> None:
    app = {
        "name": "app",
        "image": images.REDIS,
        "command": ["sh", "-c", CACHE_APP],
        "securityContext": RESTRICTED,
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "100m", "memory": "32Mi"}},
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "cached",
            "namespace": namespace,
            "labels": {"app": "cached"},
            "annotations": {"podpatterns.io/cache": "redis", "podpatterns.io/cache-memory": "16Mi"},
        },
        "spec": {"securityContext": POD_SECURITY, "containers": [app]},
    }
    cluster.apply(pod)
    ready = wait_pod(cluster, namespace, "app=cached", timeout=120)  # the cache's exec readiness probe passed
    statuses = container_statuses(ready)
    assert statuses[CACHE]["ready"] is True and statuses[CACHE]["restartCount"] == 0, statuses
    text = wait_logs(cluster, namespace, "cached", "app", "appendonly:")
    assert "url redis://127.0.0.1:6379" in text
    assert "read: hello from the cache" in text
    assert f"maxmemory: {16 * 2**20}" in text
    assert "policy: allkeys-lru" in text
    assert "save: []" in text and "appendonly: no" in text
    # Bound to loopback: from the node, the pod IP does not answer on the cache's port.
    assert not port_open(ready["status"]["podIP"], 6379)
    cache = next(c for c in ready["spec"]["initContainers"] if c["name"] == CACHE)
    assert cache["resources"]["limits"]["memory"] == "48Mi"  # 16Mi + the 32Mi minimum headroom
