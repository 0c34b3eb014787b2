"""Pod creation as the user feels it: `POST /api/v1/namespaces/NS/pods` through a real kube-apiserver,
with the webhook registered (the chart, installed with helm) and without it.

    python3 -m bench.pod_create [--pods 400] [--record]

Needs what the node tests need (root, PODPATTERNS_K8S_ASSETS, `bash .ci/setup.sh`): it starts the test
cluster of tests/node/, installs the chart, then creates pods that ask for the full Elasticsearch injection
(TLS proxy + exporter + log tailer) from 1, 10 and 50 concurrent creators, each with its own keep-alive
connection, as Kyverno's k6 suite does. The pods select no node, so they stay Pending: the figure is the
create call (authentication, admission, every webhook, storage in etcd), not the kubelet. Rounds alternate
registered/unregistered so that drift on a shared host falls on both. Prints p50/p99/p99.9 and errors per
mode; --record writes them into bench/RESULTS.md (between the pod-create markers).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.node.cluster import Cluster, find_assets
from tests.node.webhook_install import RELEASE, install_webhook, mwc

BENCH_DIR = Path(__file__).resolve().parent
MARK_START, MARK_END = "<!-- pod-create:start -->", "<!-- pod-create:end -->"
NAMESPACE = "bench-create"
TARGETS = {"p50 ms": 2.0, "p99 ms": 10.0}  # added by the webhook at 50 concurrent creators


def es_pod(index: int) -> dict:
    """The seed's Elasticsearch pod asking for the full injection; generateName like a ReplicaSet's pods."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "elasticsearch-",
            "labels": {"app": "elasticsearch", "bench-index": str(index)},
            "annotations": {
                "podpatterns.io/tls-proxy": "elasticsearch-tls",
                "podpatterns.io/exporter": "elasticsearch",
                "podpatterns.io/log-tail": "/usr/share/elasticsearch/logs/es.log",
            },
        },
        "spec": {
            "nodeSelector": {"podpatterns.io/bench": "no-such-node"},  # stays Pending: we time the create
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "elasticsearch",
                    "image": "docker.elastic.co/elasticsearch/elasticsearch:8.15.0",
                    "ports": [{"name": "http", "containerPort": 9200}],
                    "env": [{"name": "discovery.type", "value": "single-node"}],
                    "readinessProbe": {"httpGet": {"path": "/_cluster/health", "port": "http"}},
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "resources": {"requests": {"cpu": "100m", "memory": "1Gi"}, "limits": {"memory": "1Gi"}},
                }
            ],
        },
    }


@dataclass
class Round:
    mode: str
    creators: int
    latencies: list[float] = field(default_factory=list)  # seconds
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _client(cluster: Cluster) -> httpx.Client:
    client = cluster.api()
    client.timeout = httpx.Timeout(30)
    return client


def run_round(cluster: Cluster, mode: str, creators: int, pods: int, injected: bool) -> Round:
    result = Round(mode, creators)
    lock = threading.Lock()
    counter = iter(range(pods))
    body = [json.dumps(es_pod(i)).encode() for i in range(pods)]
    start = threading.Barrier(creators + 1)

    def creator() -> None:
        with _client(cluster) as api:
            api.get("/readyz")  # open the connection before the clock starts
            start.wait()
            while True:
                with lock:
                    index = next(counter, None)
                if index is None:
                    return
                t = time.perf_counter()
                try:
                    response = api.post(
                        f"/api/v1/namespaces/{NAMESPACE}/pods",
                        content=body[index],
                        headers={"Content-Type": "application/json"},
                    )
                    elapsed = time.perf_counter() - t
                    problem = None if response.status_code == 201 else f"{response.status_code}: {response.text[:200]}"
                    if problem is None and injected != ("podpatterns.io/status" in response.text):
                        problem = f"injected={not injected}, expected {injected}"
                except httpx.HTTPError as exc:
                    elapsed, problem = time.perf_counter() - t, f"{type(exc).__name__}: {exc}"
                with lock:
                    (result.errors.append(problem) if problem else result.latencies.append(elapsed))

    threads = [threading.Thread(target=creator) for _ in range(creators)]
    for thread in threads:
        thread.start()
    start.wait()
    t0 = time.perf_counter()
    for thread in threads:
        thread.join()
    result.seconds = time.perf_counter() - t0
    return result


def delete_pods(cluster: Cluster) -> None:
    with _client(cluster) as api:
        api.request("DELETE", f"/api/v1/namespaces/{NAMESPACE}/pods", params={"gracePeriodSeconds": "0"})

    def gone() -> bool:
        return not cluster.get("pods", "-n", NAMESPACE)["items"]

    cluster.wait_for("benchmark pods deleted", gone, 120)


@contextlib.contextmanager
def unregistered(cluster: Cluster) -> Iterator[None]:
    """The MutatingWebhookConfiguration removed (saved, then put back exactly)."""
    saved = mwc(cluster)
    for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
        saved["metadata"].pop(key, None)
    cluster.kubectl("delete", "mutatingwebhookconfiguration", RELEASE)
    time.sleep(2)  # the API server's admission plugin sees configuration changes through an informer
    try:
        yield
    finally:
        cluster.kubectl("create", "-f", "-", input=json.dumps(saved))
        time.sleep(2)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return (ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)) * 1000


def summarise(rounds: list[Round]) -> list[dict]:
    rows = []
    for creators in sorted({r.creators for r in rounds}):
        for mode in ("without webhook", "with webhook"):
            picked = [r for r in rounds if r.creators == creators and r.mode == mode]
            lat = [x for r in picked for x in r.latencies]
            rows.append(
                {
                    "creators": creators,
                    "mode": mode,
                    "pods": len(lat) + sum(len(r.errors) for r in picked),
                    "p50 ms": percentile(lat, 0.50),
                    "p99 ms": percentile(lat, 0.99),
                    "p99.9 ms": percentile(lat, 0.999),
                    "mean ms": statistics.fmean(lat) * 1000 if lat else float("nan"),
                    "creates/s": len(lat) / sum(r.seconds for r in picked) if picked else 0.0,
                    "errors": sum(len(r.errors) for r in picked),
                    "first error": next((e for r in picked for e in r.errors), ""),
                }
            )
    return rows


def markdown(rows: list[dict], pods: int, elapsed: float) -> str:
    lines = [
        MARK_START,
        "## Pod creation through the real API server (`python3 -m bench.pod_create`)",
        "",
        f"{pods} pods per mode and concurrency, in alternating rounds, each asking for the full Elasticsearch "
        "injection (TLS proxy + exporter + log tailer, the chart's webhook with `failurePolicy: Fail`); the pods "
        "select no node, so the figure is the create call itself: authentication, admission (PodSecurity, the "
        "webhook through its Service's endpoints, the ValidatingAdmissionPolicy when on), etcd. One kube-apiserver, "
        "etcd on tmpfs, the webhook (2 replicas) and the creators share the machine's 2 cores. "
        f"Run took {elapsed:.0f} s; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "| creators | mode | pods | p50 ms | p99 ms | p99.9 ms | creates/s | errors |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row['creators']} | {row['mode']} | {row['pods']} | {row['p50 ms']:.2f} | {row['p99 ms']:.2f} | "
            f"{row['p99.9 ms']:.2f} | {row['creates/s']:.0f} | {row['errors']} |"
        )
    lines += [
        "",
        "| creators | added p50 ms | added p99 ms | target (50 creators) | met |",
        "| ---: | ---: | ---: | --- | --- |",
    ]
    for creators in sorted({r["creators"] for r in rows}):
        off = next(r for r in rows if r["creators"] == creators and r["mode"] == "without webhook")
        on = next(r for r in rows if r["creators"] == creators and r["mode"] == "with webhook")
        d50, d99 = on["p50 ms"] - off["p50 ms"], on["p99 ms"] - off["p99 ms"]
        target = "≤ 2 ms p50, ≤ 10 ms p99, 0 failed" if creators == 50 else "–"
        met = (
            ("yes" if d50 <= TARGETS["p50 ms"] and d99 <= TARGETS["p99 ms"] and not on["errors"] else "**no**")
            if creators == 50
            else "–"
        )
        lines.append(f"| {creators} | {d50:+.2f} | {d99:+.2f} | {target} | {met} |")
    lines.append(MARK_END)
    return "\n".join(lines) + "\n"


def record(section: str) -> None:
    path = BENCH_DIR / "RESULTS.md"
    text = path.read_text() if path.exists() else ""
    pattern = re.compile(re.escape(MARK_START) + ".*?" + re.escape(MARK_END) + "\n?", re.S)
    text = pattern.sub("", text).rstrip("\n")
    path.write_text(text + "\n\n" + section)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench.pod_create", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=400, help="pods per mode and concurrency (default 400)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per mode (default 2)")
    parser.add_argument("--creators", default="1,10,50", help="concurrency levels (default 1,10,50)")
    parser.add_argument("--record", action="store_true", help="write the figures into bench/RESULTS.md")
    args = parser.parse_args()
    assets = find_assets()
    if assets is None or os.geteuid() != 0:
        print("needs root and PODPATTERNS_K8S_ASSETS (see README: Benchmark)", file=sys.stderr)
        return 2
    started = time.monotonic()
    cluster = Cluster(assets)
    try:
        cluster.start()
        workdir = cluster.state / "bench"
        workdir.mkdir()
        install_webhook(cluster, workdir)
        cluster.kubectl("create", "namespace", NAMESPACE)
        cluster.kubectl("label", "namespace", NAMESPACE, "podpatterns.io/injection=enabled")
        rounds: list[Round] = []
        per_round = max(1, args.pods // args.rounds)
        for creators in (int(c) for c in args.creators.split(",")):
            run_round(cluster, "warm-up", creators, min(50, per_round), injected=True)
            delete_pods(cluster)
            for index in range(args.rounds):
                order = ("with", "without") if index % 2 else ("without", "with")
                for mode in order:
                    if mode == "with":
                        rounds.append(run_round(cluster, "with webhook", creators, per_round, injected=True))
                    else:
                        with unregistered(cluster):
                            rounds.append(run_round(cluster, "without webhook", creators, per_round, injected=False))
                    delete_pods(cluster)
                    last = rounds[-1]
                    p50, p99 = percentile(last.latencies, 0.5), percentile(last.latencies, 0.99)
                    print(
                        f"{creators:>3} creators, {last.mode:<16} {len(last.latencies):>4} ok, "
                        f"{len(last.errors)} errors, p50 {p50:6.2f} ms, p99 {p99:6.2f} ms",
                        flush=True,
                    )
        rows = summarise(rounds)
    finally:
        cluster.stop()
    section = markdown(rows, per_round * args.rounds, time.monotonic() - started)
    print("\n" + section)
    for row in rows:
        if row["errors"]:
            print(f"first error ({row['creators']} creators, {row['mode']}): {row['first error']}")
    if args.record:
        record(section)
        print(f"recorded in {BENCH_DIR / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
