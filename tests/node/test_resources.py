"""Default resources, measured: each injected container's peak memory on the node under a small load must
stay well inside the default limit the config gives it (a container at its limit is OOM-killed).

The peak is the kernel's own high-water mark for the container's cgroup (cgroup v1 memory.max_usage_in_bytes,
or v2 memory.peak), read while the pod runs. Figures print with `pytest -s`.
"""

from __future__ import annotations

import threading
from pathlib import Path

from tests.node.cluster import Cluster
from tests.node.workloads import container_statuses, https_get, plain_get, retry, tls_context
from webhook.injection.config import InjectorConfig, parse_quantity

# A limit must leave this much room above the measured peak (load in a real cluster is higher than ours).
HEADROOM = 2.0


def _peak_bytes(pod: dict, container: str) -> int:
    status = container_statuses(pod)[container]
    container_id = status["containerID"].split("://", 1)[1]
    uid = pod["metadata"]["uid"]
    for base in (Path("/sys/fs/cgroup/memory"), Path("/sys/fs/cgroup")):
        for path in base.glob(f"kubepods*/**/pod{uid}/{container_id}"):
            for name in ("memory.max_usage_in_bytes", "memory.peak"):
                if (path / name).exists():
                    return int((path / name).read_text())
    raise AssertionError(f"no memory cgroup for {container} ({container_id})")


def _limit_bytes(pod: dict, container: str) -> int:
    spec = pod["spec"]
    for c in spec.get("initContainers", []) + spec["containers"]:
        if c["name"] == container:
            return int(parse_quantity(c["resources"]["limits"]["memory"]))
    raise AssertionError(container)


def _load(ip: str, tls: object, hostname: str, requests: int = 300, threads: int = 8) -> None:
    """A small load: HTTPS requests through the proxy (each a new TLS handshake), scrapes, log lines."""

    def worker() -> None:
        for _ in range(requests // threads):
            https_get(ip, 9200, "/_search", context=tls_context(tls.ca), server_hostname=hostname)  # type: ignore[attr-defined]

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for _ in range(10):
        # The exporter listens only once its first call to the app returns (up to 10 s after start).
        retry(lambda: plain_get(ip, 9114, "/metrics"), timeout=30)
    for t in pool:
        t.join()


def test_injected_containers_peak_well_inside_their_default_limits(
    cluster: Cluster, namespace: str, es_pod: tuple[dict, object]
) -> None:
    pod, tls = es_pod  # the Elasticsearch Deployment: TLS proxy, exporter, log tailer
    hostname = f"elasticsearch.{namespace}.svc"
    _load(pod["status"]["podIP"], tls, hostname)
    pod = cluster.get("pod", pod["metadata"]["name"], "-n", namespace)

    defaults = InjectorConfig()
    figures = []
    for name in ("podpatterns-tls-proxy", "podpatterns-exporter", "podpatterns-log-app-log"):
        peak, limit = _peak_bytes(pod, name), _limit_bytes(pod, name)
        figures.append((name, peak, limit))
    print("\ncontainer peak memory under load (MiB) / limit (MiB):")
    for name, peak, limit in figures:
        print(f"  {name:<28} {peak / 2**20:6.1f} / {limit / 2**20:6.1f}")
    for name, peak, limit in figures:
        assert peak * HEADROOM <= limit, f"{name}: peak {peak / 2**20:.1f} MiB leaves less than {HEADROOM}x headroom"
    assert all(c["restartCount"] == 0 for c in container_statuses(pod).values())
    # The limits measured are the config's defaults (the test config sets images, not resources).
    assert _limit_bytes(pod, "podpatterns-tls-proxy") == parse_quantity(defaults.tls_proxy.resources.limits["memory"])
