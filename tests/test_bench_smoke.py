"""Keeps bench/ from rotting: its request builders, and one short measurement against our real server.

The benchmark itself (`python3 -m bench`) is not run in CI; this runs in a few seconds.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
from pathlib import Path
from typing import Any

from bench import report, workloads
from bench.run import Bench, Plan, check_answer


def test_request_builders_make_realistic_reviews() -> None:
    built = workloads.standard()
    assert [w.name for w in built] == ["small", "typical", "typical-distinct", "large-env", "large-20c", "noop"]
    for w in built:
        review = w.review
        assert review["kind"] == "AdmissionReview" and review["request"]["operation"] == "CREATE"
        assert review["request"]["kind"]["kind"] == "Pod" and w.uid
        assert json.loads(w.body) == review and b": " not in w.body  # compact, as the API server sends
    sizes = {w.name: w.size for w in built}
    assert sizes["typical"] < sizes["large-20c"] < 64 * 1024 < sizes["large-env"]
    pod = built[4].review["request"]["object"]
    assert len(pod["spec"]["containers"]) == 20
    assert not any(
        k.startswith("podpatterns.io/") for k in built[5].review["request"]["object"]["metadata"].get("annotations", {})
    )
    for size in (1024, 16 * 1024, 1024 * 1024):
        assert workloads.sized(size).size == size


def test_core_answers_every_workload() -> None:
    """What the benchmark measures must be a successful review: a patch where one is expected, else none."""
    import orjson

    from webhook import admission
    from webhook.injection import load_config

    config = load_config(None)
    for w in [*workloads.standard(), *workloads.sweep(workloads.SIZES_QUICK[:2])]:
        answer = admission.review(orjson.loads(w.body), config, admission.Decision())
        body = orjson.dumps(answer)
        assert check_answer("ours", w, 200, body) is None, w.name
        assert check_answer("floor", w, 200, body) is None
        if w.injects:
            assert json.loads(base64.b64decode(answer["response"]["patch"]))


def cache_lookups(server: Any) -> dict[str, float]:
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=server.ssl_context(), timeout=5)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    found = re.findall(r'^podpatterns_answer_cache_lookups_total\{outcome="(\w+)"\} (\S+)$', text, re.M)
    return {outcome: float(n) for outcome, n in found}


def test_short_measurement_against_our_server(tmp_path: Path) -> None:
    bench = Bench(Plan.make(quick=True, two_workers=False), tmp_path, pin=False)
    bench.setup()
    started = bench.start(1, kinds=("ours",))
    try:
        checks = bench.precheck(started, bench.standard + bench.sweep)
        assert {checks["ours"][n] for n in ("small", "typical", "large-20c", "noop")} == {"ok"}
        run = bench.measure(started["ours"], ["typical"], seconds=2, connections=4)
        memory = started["ours"].memory()[0]
        before = cache_lookups(started["ours"])
        distinct = bench.measure(started["ours"], ["typical-distinct"], seconds=1, connections=4)
        after = cache_lookups(started["ours"])
    finally:
        for server in started.values():
            server.stop()
    assert run["requests"] > 50 and run["error_count"] == 0, run
    # wrk really sends a different pod every time: each one misses the answer cache.
    assert distinct["requests"] > 20 and distinct["error_count"] == 0, distinct
    # (wrk counts the answers it read; up to one request per connection may be cut off in flight at the end)
    assert after["hit"] == before["hit"] and 0 <= after["miss"] - before["miss"] - distinct["requests"] <= 4
    assert run["cpu_ms_per_review"] > 0 and 0 < run["latency_ms"]["p50"] < 1000
    assert 10 < memory["rss_mb"] < 1000
    results = {
        "environment": {"cpu": "x", "cores": 2, "memory_gb": 1, "kernel": "k", "debian": "d", "python": "3"}
        | dict.fromkeys(("uvicorn", "fastapi", "starlette", "pydantic", "orjson", "httptools", "loop"), "v")
        | {"openssl": "o", "wrk": "w", "commit": "c", "date": "now"},
        "workloads": bench.results["workloads"],
        "plan": {"rounds": 1},
        "checks": checks,
        "saturation": {"typical": {"ours": {**run, "runs": [run], "errors": 0}}},
        "memory": {"ours": memory},
    }
    results["targets"] = report.targets(results)
    text = report.markdown(results)
    assert "| typical |" in text and "## Targets" in text
