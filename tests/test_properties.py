"""Property-based tests (Hypothesis): over generated pods and annotation sets, hostile values included.

For every input: the handler never raises and never answers 500; every answer is a valid
AdmissionReview; every patch applies to the input with jsonpatch; every injected pod validates against
the Kubernetes schema; injecting again changes nothing; pods without our annotations get no patch.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import httpx
import jsonpatch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.helpers import review_for, validate_pod
from webhook import admission
from webhook.answer_cache import AnswerCache
from webhook.injection import InjectorConfig, inject
from webhook.injection import annotations as keys

CONFIG = InjectorConfig.model_validate({"imageAllowlist": ["registry.example.com/*"]})

HOSTILE_PIECES = [*"ab9/.:,=-_ ;{}\"'`$()\\\n\t\x00<>|&*?~%", "..", "Ь", "\u200b", "443", "http"]
HOSTILE = st.lists(st.sampled_from(HOSTILE_PIECES), max_size=20).map("".join)
PORT_NAMES = st.sampled_from(["http", "web", "metrics", "admin", "grpc"])
PORTS = st.integers(min_value=1, max_value=65535)

GOOD_VALUES: dict[str, st.SearchStrategy[str]] = {
    keys.TLS_PROXY: st.sampled_from(["es-tls", "web-tls"]),
    keys.TLS_PROXY_PORT: st.one_of(PORT_NAMES, PORTS.map(str)),
    keys.TLS_PROXY_APP_PORT: PORTS.map(str),
    keys.TLS_PROXY_APP_ENV: st.sampled_from(["http.port=$(PODPATTERNS_APP_PORT)", "A=1,B=2"]),
    keys.TLS_PROXY_CLIENT_CA: st.just("clients-ca"),
    keys.TLS_PROXY_PROTOCOL: st.sampled_from(["http", "tcp"]),
    keys.EXPORTER: st.sampled_from(["elasticsearch", "redis", "postgres", "mysql", "nginx", "custom"]),
    keys.EXPORTER_PORT: PORTS.map(str),
    keys.EXPORTER_TARGET_PORT: st.one_of(PORT_NAMES, PORTS.map(str)),
    keys.EXPORTER_IMAGE: st.sampled_from(["registry.example.com/exp:1", "evil.example.com/x:1"]),
    keys.EXPORTER_ARGS: st.sampled_from(['["--a={port}"]', "[]"]),
    keys.LOG_TAIL: st.sampled_from(["/var/log/app/a.log", "/var/log/a.log,/data/b.log", "/data/x/y.log"]),
    keys.INIT_WAIT_FOR: st.sampled_from(["db:5432", "db.shop.svc:5432,10.0.0.1:80"]),
    keys.INIT_WAIT_TIMEOUT: st.sampled_from(["30", "5m", "1h"]),
    keys.INIT_GIT_CLONE: st.just("https://example.com/org/repo.git"),
    keys.INIT_GIT_CLONE_REF: st.sampled_from(["main", "v1.2.3"]),
    keys.INIT_GIT_CLONE_PATH: st.sampled_from(["/src", "/app", "/data"]),
    keys.NATIVE_SIDECARS: st.sampled_from(["true", "false"]),
    keys.LOG_TAIL_RESOURCES: st.sampled_from(['{"limits": {"memory": "64Mi"}}']),
    keys.CONFIG_RELOAD: st.sampled_from(["data", "data,other"]),
    keys.CONFIG_RELOAD_URL: st.sampled_from(["http://localhost:9090/-/reload", "http://127.0.0.1:8080/"]),
    keys.CONFIG_RELOAD_SIGNAL: st.sampled_from(["HUP", "USR1"]),
    keys.CONFIG_RELOAD_PROCESS: st.sampled_from(["nginx", "python3"]),
    keys.CACHE: st.just("redis"),
    keys.CACHE_PORT: PORTS.map(str),
    keys.CACHE_MEMORY: st.sampled_from(["16Mi", "1Gi"]),
}


@st.composite
def containers(draw: st.DrawFn, name: str) -> dict[str, Any]:
    container: dict[str, Any] = {"name": name, "image": "registry.example.com/app:1"}
    ports = draw(
        st.lists(
            st.tuples(PORTS, st.one_of(st.none(), PORT_NAMES)),
            max_size=3,
            unique_by=(lambda p: p[0], lambda p: p[1] or p[0]),
        )
    )
    if ports:
        container["ports"] = [{"containerPort": n, **({"name": pn} if pn else {})} for n, pn in ports]
    refs = [n for n, _ in ports] + [pn for _, pn in ports if pn]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        if refs and draw(st.booleans()):
            kind = draw(st.sampled_from(["httpGet", "tcpSocket", "grpc"]))
            ref = draw(st.sampled_from(refs))
            if kind == "httpGet":
                handler = {"path": draw(st.sampled_from(["/", "/health", "/ready?x=1", "/a%20b"])), "port": ref}
            elif kind == "grpc":
                handler = {"port": ref if isinstance(ref, int) else 9000}
            else:
                handler = {"port": ref}
            container[probe] = {kind: handler}
    if draw(st.booleans()):
        container["env"] = [{"name": f"E{i}", "value": "v"} for i in range(draw(st.integers(0, 5)))]
    if draw(st.booleans()):
        container["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    return container


@st.composite
def pods(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(
        st.lists(st.sampled_from(["app", "side", "es", "podpatterns-tls-proxy"]), min_size=1, max_size=3, unique=True)
    )
    spec: dict[str, Any] = {"containers": [draw(containers(n)) for n in names]}
    if any("volumeMounts" in c for c in spec["containers"]):
        # Sometimes a ConfigMap, so config-reload gets past its volume checks.
        source = draw(st.sampled_from([{"emptyDir": {}}, {"configMap": {"name": "data"}}]))
        spec["volumes"] = [{"name": "data", **source}]
    if draw(st.booleans()):
        spec["initContainers"] = [{"name": "setup", "image": "registry.example.com/setup:1"}]
    annotations: dict[str, str] = {}
    chosen = draw(st.lists(st.sampled_from(sorted(GOOD_VALUES)), max_size=6, unique=True))
    features = [k for k in GOOD_VALUES if k in keys.FEATURE_KEYS]
    for key in chosen + draw(st.lists(st.sampled_from(features), min_size=1, max_size=3, unique=True)):
        annotations[key] = draw(
            st.one_of(GOOD_VALUES[key], HOSTILE) if draw(st.integers(0, 4)) == 0 else GOOD_VALUES[key]
        )
    if draw(st.booleans()):
        annotations[keys.PREFIX + draw(st.sampled_from(["tls-prxy", "unknown"]))] = "x"
    pod: dict[str, Any] = {"metadata": {"name": "p", "namespace": "shop"}, "spec": spec}
    if annotations:
        pod["metadata"]["annotations"] = annotations
    return pod


CACHE = AnswerCache()


def answer_for(pod: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    review = review_for(pod)
    answer = admission.review(review, CONFIG, admission.Decision())
    # The same pod again, through the answer cache twice (a miss that fills it, then a hit), under
    # another uid: the answers differ in the uid only.
    for _ in range(2):
        again = review_for(copy.deepcopy(pod))
        again["request"]["uid"] = "another-" + again["request"]["uid"]
        cached = admission.review(again, CONFIG, admission.Decision(), CACHE)
        assert cached["response"].pop("uid") == again["request"]["uid"]
        assert cached["response"] == {k: v for k, v in answer["response"].items() if k != "uid"}
    return review, answer


@settings(max_examples=400, deadline=None)
@given(pods())
def test_any_pod_gets_a_valid_answer_and_a_patch_that_applies(pod: dict[str, Any]) -> None:
    before = copy.deepcopy(pod)
    review, answer = answer_for(pod)
    assert pod == before, "the input object is never modified"
    response = answer["response"]
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    assert response["uid"] == review["request"]["uid"]
    event("denied" if not response["allowed"] else "patched" if "patch" in response else "unchanged")
    if not response["allowed"]:
        assert response["status"]["code"] == 400, response["status"]["message"]  # 500 would be a crash
        assert (
            "annotation podpatterns.io/" in response["status"]["message"]
            or "default-container" in response["status"]["message"]
        )
        return
    if "patch" not in response:
        return
    ops = json.loads(base64.b64decode(response["patch"]))
    injected = jsonpatch.apply_patch(pod, ops)
    validate_pod(injected)
    again = inject(injected, CONFIG)
    assert not again.changed and again.pod is injected


@settings(max_examples=100, deadline=None)
@given(pods())
def test_pods_without_our_annotations_get_no_patch(pod: dict[str, Any]) -> None:
    annotations = pod["metadata"].get("annotations", {})
    pod["metadata"]["annotations"] = {k: v for k, v in annotations.items() if not k.startswith(keys.PREFIX)}
    _, answer = answer_for(pod)
    assert answer["response"]["allowed"] is True and "patch" not in answer["response"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(
        st.binary(max_size=2000),
        st.recursive(
            st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20)),
            lambda inner: st.one_of(
                st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
            ),
            max_leaves=30,
        ).map(lambda v: json.dumps(v).encode()),
    )
)
def test_arbitrary_bodies_never_get_a_500(client: httpx.Client, body: bytes) -> None:
    response = client.post("/mutate", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code in (200, 400)
    if response.status_code == 200:
        assert response.json()["response"]["allowed"] in (True, False)
