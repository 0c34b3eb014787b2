"""Requests recorded from a real kube-apiserver 1.36 (../shared/fixtures) through the real HTTPS server."""

from __future__ import annotations

import httpx
import orjson
import pytest

from tests.helpers import SHARED_FIXTURES, apply_answer, shared_review, validate_pod

FIXTURES = sorted(p.name for p in (SHARED_FIXTURES / "admission-reviews").glob("*.json"))


def post_raw(client: httpx.Client, review: dict) -> httpx.Response:
    # Compact bytes and the query string, exactly as the API server sends them.
    body = orjson.dumps(review)
    return client.post(
        "/mutate?timeout=10s", content=body, headers={"Content-Type": "application/json", "Accept-Encoding": "gzip"}
    )


def test_fixtures_are_present() -> None:
    assert len(FIXTURES) >= 11, f"expected the recorded reviews in {SHARED_FIXTURES}"


@pytest.mark.parametrize("name", FIXTURES)
def test_recorded_review_gets_a_valid_answer(name: str, client: httpx.Client) -> None:
    review = shared_review(name)
    response = post_raw(client, review)
    assert response.status_code == 200
    answer = response.json()
    pod = apply_answer(review, answer)
    assert answer["response"]["allowed"] is True
    validate_pod(pod)


NO_PATCH = ["pod-plain.json", "pod-optout.json", "daemonset-node-agent.json", "pod-plain-update.json"]


@pytest.mark.parametrize("name", NO_PATCH)
def test_pods_without_injection_get_no_patch(name: str, client: httpx.Client) -> None:
    answer = post_raw(client, shared_review(name)).json()["response"]
    assert answer["allowed"] is True and "patch" not in answer


def test_elasticsearch_deployment_pod_is_fully_injected(client: httpx.Client) -> None:
    review = shared_review("deployment-elasticsearch.json")
    pod = apply_answer(review, post_raw(client, review).json())
    init = [c["name"] for c in pod["spec"]["initContainers"]]
    assert init == ["podpatterns-tls-proxy", "podpatterns-exporter", "podpatterns-log-docker-cluster-server-json"]
    proxy = pod["spec"]["initContainers"][0]
    assert proxy["restartPolicy"] == "Always"
    assert "ports" not in proxy  # named ports on native sidecars do not resolve in EndpointSlices before 1.32
    app = pod["spec"]["containers"][0]
    assert app["ports"] == [{"name": "http", "containerPort": 9200, "protocol": "TCP"}]  # now served by nginx
    assert app["env"][:2] == [
        {"name": "PODPATTERNS_APP_HOST", "value": "127.0.0.1"},
        {"name": "PODPATTERNS_APP_PORT", "value": "9201"},
    ]
    assert app["readinessProbe"]["httpGet"] == {"path": "/_cluster/health", "port": 9200, "scheme": "HTTPS"}
    assert app["livenessProbe"]["tcpSocket"] == {"port": 9200}
    assert pod["spec"]["initContainers"][1]["args"] == ["--es.uri=http://localhost:9201"]
    # The token volume the ServiceAccount plugin added stays, untouched, in every original container.
    assert pod["spec"]["volumes"][0] == review["request"]["object"]["spec"]["volumes"][0]
    status = orjson.loads(pod["metadata"]["annotations"]["podpatterns.io/status"])
    assert status["features"] == ["tls-proxy", "exporter", "log-tail"]


def test_existing_native_sidecar_and_init_container_keep_their_order(client: httpx.Client) -> None:
    review = shared_review("pod-existing-native-sidecar.json")
    pod = apply_answer(review, post_raw(client, review).json())
    names = [c["name"] for c in pod["spec"]["initContainers"]]
    assert names == ["log-shipper", "podpatterns-tls-proxy", "migrate"]  # a leading native sidecar stays first
    # Port 80: nginx is unprivileged, so the pod gets the safe sysctl instead of a capability.
    assert {"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"} in pod["spec"]["securityContext"]["sysctls"]


def test_dry_run_gets_the_same_patch_as_a_real_create(client: httpx.Client) -> None:
    review = shared_review("pod-dry-run.json")
    assert review["request"]["dryRun"] is True
    dry = post_raw(client, review).json()["response"]
    review["request"]["dryRun"] = False
    real = post_raw(client, review).json()["response"]
    assert dry["patch"] == real["patch"]


def test_statefulset_pod_moves_named_port_and_rewrites_probes_by_name_and_number(client: httpx.Client) -> None:
    review = shared_review("statefulset-web-0.json")
    pod = apply_answer(review, post_raw(client, review).json())
    app = pod["spec"]["containers"][0]
    assert [p["name"] for p in app["ports"]] == ["http", "admin"]
    assert app["readinessProbe"]["httpGet"]["port"] == 8080 and app["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert app["livenessProbe"]["httpGet"]["port"] == 9090  # the admin port is not proxied: untouched


def test_big_pod_answer_is_small(client: httpx.Client) -> None:
    review = shared_review("pod-big-1500-env.json")
    response = post_raw(client, review)
    assert len(response.content) < 8000, "targeted ops, not a rewrite of 1,500 env vars"
    validate_pod(apply_answer(review, response.json()))
