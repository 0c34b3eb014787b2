"""The seed's Elasticsearch Deployment with tls-proxy + exporter + log-tail, running on the node.

Observed, not inferred: kubelet's probes pass through the proxy, HTTPS to the pod IP verifies with the
Secret's CA, plain HTTP and the app's own port are closed from outside, Services by port name and number
both resolve to the proxy, the exporter answers, and the tailer streams the file across a rotation.
"""

from __future__ import annotations

import json

from tests.node.cluster import Cluster
from tests.node.workloads import (
    container_statuses,
    https_get,
    logs,
    plain_get,
    port_open,
    retry,
    tls_context,
    wait_logs,
)


def test_elasticsearch_pod_serves_tls_scrapes_and_streams_logs(cluster: Cluster, namespace: str, es_pod) -> None:
    pod, tls = es_pod
    name, ip = pod["metadata"]["name"], pod["status"]["podIP"]
    hostname = f"elasticsearch.{namespace}.svc"
    statuses = container_statuses(pod)
    assert {"elasticsearch", "podpatterns-tls-proxy", "podpatterns-exporter", "podpatterns-log-app-log"} <= set(
        statuses
    )
    assert all(s["restartCount"] == 0 for s in statuses.values()), statuses
    assert json.loads(pod["metadata"]["annotations"]["podpatterns.io/status"])["features"] == [
        "tls-proxy",
        "exporter",
        "log-tail",
    ]

    # HTTPS through the proxy, verified against the Secret's CA and the Service name.
    status, body, _ = retry(lambda: https_get(ip, 9200, "/", context=tls_context(tls.ca), server_hostname=hostname))
    assert status == 200 and json.loads(body)["tls"] == "https"
    # Plain HTTP on the TLS port gets nginx's 400 about a plain request, never the app.
    assert b"standin" not in plain_get(ip, 9200)
    assert b"400" in plain_get(ip, 9200).split(b"\r\n", 1)[0]
    # The app listens on 127.0.0.1 only: its port is closed on the pod IP.
    assert not port_open(ip, 9201)

    # Services by port name and by number: both EndpointSlices carry 9200 and the pod's address.
    for service in ("es-by-name", "es-by-number"):

        def slice_ready(service: str = service) -> dict | None:
            slices = cluster.get("endpointslices", "-n", namespace, "-l", f"kubernetes.io/service-name={service}")
            for s in slices["items"]:
                addresses = [a for e in s.get("endpoints") or [] for a in e["addresses"]]
                if ip in addresses:
                    return s
            return None

        found = cluster.wait_for(f"EndpointSlice of {service}", slice_ready, 30)
        assert [p["port"] for p in found["ports"]] == [9200], (service, found["ports"])  # type: ignore[index]

    # The exporter answers on its metrics port, scraping the app on its moved localhost port.
    metrics = retry(lambda: plain_get(ip, 9114, "/metrics"), timeout=30)
    assert b"200 OK" in metrics.split(b"\r\n", 1)[0]
    assert b"elasticsearch_" in metrics

    # The tailer streams the file, and keeps streaming after the app rotates it.
    text = wait_logs(cluster, namespace, name, "podpatterns-log-app-log", "request GET /_cluster/health")
    assert "listening on 127.0.0.1:9201" in text
    https_get(ip, 9200, "/_rotate", context=tls_context(tls.ca), server_hostname=hostname)
    https_get(ip, 9200, "/after-rotation", context=tls_context(tls.ca), server_hostname=hostname)
    wait_logs(cluster, namespace, name, "podpatterns-log-app-log", "request GET /after-rotation")
    assert "rotated" in logs(cluster, namespace, name, "podpatterns-log-app-log")
