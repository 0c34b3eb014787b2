"""Request builders: AdmissionReview bodies from realistic pods, compact JSON as the API server sends.

Every body is built from the reviews a real kube-apiserver sent (tests/fixtures/admission-reviews):

- small      the recorded one-container nginx pod, with one annotation (TLS proxy)
- typical    the recorded Elasticsearch Deployment pod: TLS proxy + exporter + log tailer, as native
             sidecars (initContainers with restartPolicy: Always), exactly as recorded
- large-env  the recorded pod with 1,500 environment variables (and a log tailer)
- large-20c  the typical pod with 19 more application containers (20 in all), same annotations
- noop       the recorded one-container pod in scope but with no podpatterns annotation
- size-<N>k  a one-container pod with a TLS proxy annotation, padded with env vars to N KiB on the wire
             (the latency-vs-body-size sweep, 1 KiB to 1 MiB)
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "admission-reviews"

Json = dict[str, Any]


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    body: bytes  # compact JSON, as sent on the wire
    injects: bool  # our webhook answers with a JSON patch (else: allowed, no patch)
    # A marker in the body that the load generator replaces with a number of its length on every request,
    # so that no two requests carry the same pod (the answer cache never hits).
    vary: str | None = None

    @property
    def size(self) -> int:
        return len(self.body)

    @property
    def review(self) -> Json:
        return orjson.loads(self.body)

    @property
    def uid(self) -> str:
        return str(self.review["request"]["uid"])

    def expect(self, ours: bool) -> str:
        """A substring every good answer contains (checked by the load generator on every response)."""
        return '"patchType":"JSONPatch"' if ours and self.injects else '"allowed":true'


def fixture(name: str) -> Json:
    return json.loads((FIXTURES / name).read_text())


def encode(review: Json) -> bytes:
    # The API server sends compact JSON; orjson's output is compact too.
    return orjson.dumps(review)


def review_for(pod: Json, *, uid: str = "5d4c0c2e-bench-4c1e-9a1a-000000000001") -> Json:
    """An AdmissionReview for a pod CREATE with the envelope the recorded ones have."""
    review = fixture("pod-plain.json")
    request = review["request"]
    request["uid"] = uid
    request["object"] = pod
    request.pop("name", None)
    return review


def small() -> Workload:
    review = fixture("pod-plain.json")
    review["request"]["object"]["metadata"].setdefault("annotations", {})["podpatterns.io/tls-proxy"] = "app-tls"
    return Workload("small", "1 container, TLS proxy (recorded nginx pod + 1 annotation)", encode(review), True)


def typical() -> Workload:
    return Workload(
        "typical",
        "Elasticsearch Deployment pod: TLS proxy + exporter + log tailer (recorded)",
        encode(fixture("deployment-elasticsearch.json")),
        True,
    )


VARY_MARKER = "BENCHSEQ0000000000"  # a valid label value, and so is any 18-digit number put in its place


def typical_distinct() -> Workload:
    """The typical pod with a label that differs on every request, as a DaemonSet's pods differ."""
    review = fixture("deployment-elasticsearch.json")
    review["request"]["object"]["metadata"]["labels"]["bench-seq"] = VARY_MARKER
    return Workload(
        "typical-distinct",
        "the typical pod, each request a different pod (a label that differs), so never answered from the cache",
        encode(review),
        True,
        vary=VARY_MARKER,
    )


def large_env() -> Workload:
    return Workload(
        "large-env",
        "1 container with 1,500 env vars + log tailer (recorded)",
        encode(fixture("pod-big-1500-env.json")),
        True,
    )


def large_containers(count: int = 20) -> Workload:
    review = fixture("deployment-elasticsearch.json")
    pod = review["request"]["object"]
    app = pod["spec"]["containers"][0]
    for i in range(1, count):
        extra = copy.deepcopy(app)
        extra["name"] = f"worker-{i:02d}"
        port = 10000 + 10 * i
        extra["ports"] = [{"name": f"w{i:02d}", "containerPort": port, "protocol": "TCP"}]
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            if probe in extra:
                for action in ("httpGet", "tcpSocket"):
                    if action in extra[probe]:
                        extra[probe][action]["port"] = port
        extra["env"] = [*extra.get("env", []), {"name": "WORKER_INDEX", "value": str(i)}]
        pod["spec"]["containers"].append(extra)
    return Workload(
        f"large-{count}c",
        f"the typical pod with {count} containers, same annotations",
        encode(review),
        True,
    )


def noop() -> Workload:
    return Workload(
        "noop", "pod CREATE in scope, no podpatterns annotation (recorded)", encode(fixture("pod-plain.json")), False
    )


def _sized_pod(env_count: int, pad: int) -> Json:
    env = [{"name": f"E{i:06d}", "value": f"v{i:06d}"} for i in range(env_count)]
    if pad:
        env.append({"name": "PAD", "value": "x" * pad})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "sized-",
            "namespace": "shop",
            "labels": {"app": "sized"},
            "annotations": {"podpatterns.io/tls-proxy": "sized-tls"},
        },
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "registry.example.com/app:1.0",
                    "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                    "env": env,
                }
            ],
            "restartPolicy": "Always",
        },
    }


def sized(target: int) -> Workload:
    """A pod whose review is `target` bytes on the wire (±0), grown by env vars as real big pods are."""

    def body(env_count: int, pad: int) -> bytes:
        review = review_for(_sized_pod(env_count, pad))
        # A lean envelope, so the smallest size can be 1 KiB.
        request = review["request"]
        request["userInfo"] = {"username": "system:serviceaccount:kube-system:replicaset-controller"}
        return encode(review)

    base = len(body(0, 0))
    if target < base:
        raise ValueError(f"a review cannot be smaller than {base} bytes")
    low, high = 0, target // 20 + 1  # the most env vars that fit (each takes more than 20 bytes)
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if len(body(mid, 0)) <= target else (low, mid - 1)
    count = low
    data = body(count, 0)
    if len(data) < target:
        pad_overhead = len(body(count, 1)) - len(data) - 1
        pad = target - len(data) - pad_overhead
        if pad > 0:
            data = body(count, pad)
        elif count > 0:  # too little room for a padding variable: drop one env var and pad instead
            count -= 1
            data = body(count, 0)
            data = body(count, target - len(data) - (len(body(count, 1)) - len(data) - 1))
    label = f"{target // 1024}k" if target % 1024 == 0 else str(target)
    return Workload(f"size-{label}", f"1 container, TLS proxy, {count} env vars", data, True)


SIZES_FULL = [1 << k for k in range(10, 21)]  # 1 KiB .. 1 MiB
SIZES_QUICK = [1 << 10, 1 << 14, 1 << 17, 1 << 20]


def standard() -> list[Workload]:
    return [small(), typical(), typical_distinct(), large_env(), large_containers(20), noop()]


def sweep(sizes: list[int]) -> list[Workload]:
    return [sized(size) for size in sizes]


def write_bodies(workloads: list[Workload], directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for workload in workloads:
        path = directory / f"{workload.name}.json"
        path.write_bytes(workload.body)
        paths[workload.name] = path
    return paths
