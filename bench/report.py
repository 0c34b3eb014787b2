"""Tables (markdown), the verdict on each target, and the plot, from the results dictionary of bench/run.py."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

KINDS = ("ours", "floor", "fastapi")
NAMES = {"ours": "podpatterns", "floor": "floor", "fastapi": "FastAPI+pydantic"}
LINEAR_MAX_EXPONENT = 1.15
FLAT_MAX_MB = 2.0


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}{suffix}"


def _kib(size: int) -> str:
    return f"{size / 1024:,.1f} KiB" if size < 1024 * 1024 else f"{size / 1024 / 1024:.1f} MiB"


def growth_exponent(results: dict[str, Any], kind: str = "ours") -> dict[str, Any] | None:
    """k in (latency(size) - latency(smallest)) ∝ size^k over the large sizes: 1 is linear, 2 quadratic."""
    sizes = results.get("sizes") or {}
    workloads = results["workloads"]
    points = []
    for name, per_kind in sizes.items():
        run = per_kind.get(kind)
        if run and run["requests"] and not run["error_count"]:
            points.append((workloads[name]["bytes"], run["latency_ms"]["p50"]))
    points.sort()
    if len(points) < 3:
        return None
    base = points[0][1]
    large = [(s, lat - base) for s, lat in points if s >= 64 * 1024 and lat > base]
    if len(large) < 2:
        large = [(s, lat - base) for s, lat in points[-3:] if lat > base]
    if len(large) < 2:
        return None
    xs = [math.log(s) for s, _ in large]
    ys = [math.log(d) for _, d in large]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    k = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    per_kib = {f"{s // 1024}k": round(1000 * d / (s / 1024), 2) for s, d in large}
    return {"exponent": round(k, 3), "from_bytes": large[0][0], "to_bytes": large[-1][0], "us_per_kib": per_kib}


def paired(per_kind: dict[str, Any], field: str, of: str = "ours", to: str = "floor") -> list[float]:
    """`of`/`to` for each round of a workload: both ran in the same round, seconds apart, on the same host.

    A round in which `of` answered nothing counts against it (0 throughput, infinite CPU per review).
    """
    ours, refs = per_kind.get(of, {}).get("runs", []), per_kind.get(to, {}).get("runs", [])
    worst = 0.0 if field == "rps" else math.inf
    return [(a[field] / b[field] if a.get(field) else worst) for a, b in zip(ours, refs, strict=False) if b.get(field)]


def median(values: list[float]) -> float | None:
    ordered = sorted(values)
    n = len(ordered)
    if not n:
        return None
    return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2


def _rounds(values: list[float], digits: int = 2) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in values)


def _all_runs(results: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    for per_kind in (results.get("saturation") or {}).values():
        runs += per_kind.get(kind, {}).get("runs", [])
    for section in ("one_connection", "rates", "sizes"):
        for per_kind in (results.get(section) or {}).values():
            if kind in per_kind:
                runs.append(per_kind[kind])
    two = results.get("two_workers") or {}
    for per_kind in (two.get("saturation") or {}).values():
        runs += per_kind.get(kind, {}).get("runs", [])
    for per_kind in (two.get("rate") or {}).values():
        if kind in per_kind:
            runs.append(per_kind[kind])
    return runs


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    sat = results.get("saturation") or {}
    out: list[dict[str, Any]] = []

    def add(name: str, figure: str, met: bool | None) -> None:
        out.append({"target": name, "figure": figure, "met": met})

    typ = sat.get("typical", {})
    # Two rows, because the answer cache serves replicas of one template: the recorded Deployment pod
    # sent again and again is a rollout; typical-distinct (a different pod every time) is the cold path.
    for name, label in (
        ("typical", "typical pod, replicas of one template (answer cache)"),
        ("typical-distinct", "typical pod, every pod different (no cache hit)"),
    ):
        per = sat.get(name, {})
        if not per:
            continue
        ratios = paired(per, "rps")
        r = median(ratios)
        add(
            f"{label}: throughput ≥ 50% of the floor",
            f"{_fmt(r and 100 * r, 0)}% (median of {len(ratios)} paired rounds: {_rounds(ratios)}); "
            f"best {_fmt(per.get('ours', {}).get('rps'), 0)}/s against {_fmt(per.get('floor', {}).get('rps'), 0)}/s"
            f" ({_fmt(median(paired(per, 'rps', to='fastapi')), 2)}× FastAPI)",
            r is not None and r >= 0.5,
        )
    rate = (results.get("rates") or {}).get("1000", {}).get("ours")
    if rate:
        p99 = rate["latency_ms"]["p99"]
        add(
            "typical pod (every pod different): p99 ≤ 5 ms at 1,000 req/s offered",
            f"p99 {p99:.2f} ms (p50 {rate['latency_ms']['p50']:.2f}, p99.9 {rate['latency_ms']['p99.9']:.2f})",
            p99 <= 5 and not rate["error_count"],
        )
    errors = sum(r["error_count"] for r in _all_runs(results, "ours")) + (results.get("leak") or {}).get("errors", 0)
    bad_checks = [n for n, v in (results.get("checks") or {}).get("ours", {}).items() if v != "ok"]
    add(
        "zero errors (every review answered correctly)",
        f"{errors:,} errors in the load runs"
        + (f"; answer check failed for {', '.join(bad_checks)}" if bad_checks else ""),
        errors == 0 and not bad_checks,
    )
    noop = sat.get("noop", {})
    ratios = paired(noop, "cpu_ms_per_review")
    r = median(ratios)
    add(
        "no-op review: CPU ≤ 1.3× the floor's",
        f"{_fmt(r, 2)}× (median of {len(ratios)} paired rounds: {_rounds(ratios)}); lowest "
        f"{_fmt(noop.get('ours', {}).get('cpu_ms_per_review'), 3)} against "
        f"{_fmt(noop.get('floor', {}).get('cpu_ms_per_review'), 3)} ms",
        r is not None and r <= 1.3,
    )
    big = (results.get("one_connection") or {}).get("large-env", {})
    if big.get("ours"):
        ours, floor = big["ours"], big.get("floor", {})
        cpu = sat.get("large-env", {}).get("ours", {}).get("cpu_ms_per_review")
        # Per review: the median and the CPU. The tail is the stack's: bodies over uvicorn's 64 KiB
        # flow-control mark make every server bimodal (compare the floor's p99).
        ok = (
            not ours["error_count"]
            and ours["requests"] > 0
            and ours["latency_ms"]["p50"] <= 10
            and (cpu is None or cpu <= 10)
        )
        add(
            "large pod (1,500 env vars): ≤ 10 ms per review",
            f"p50 {ours['latency_ms']['p50']:.2f} ms, CPU {_fmt(cpu, 2)} ms; p99 {ours['latency_ms']['p99']:.2f} ms "
            f"(floor p99 {_fmt(floor.get('latency_ms', {}).get('p99'), 2)})"
            + (f"; {ours['error_count']} errors" if ours["error_count"] else ""),
            ok,
        )
    growth = growth_exponent(results)
    sizes_errors = sum(v.get("ours", {}).get("error_count", 0) for v in (results.get("sizes") or {}).values())
    if growth:
        add(
            "latency linear in body size up to 1 MiB",
            f"Δlatency ∝ size^{growth['exponent']:.2f} from {_kib(growth['from_bytes'])} to {_kib(growth['to_bytes'])}"
            + (f"; {sizes_errors} errors" if sizes_errors else ""),
            growth["exponent"] <= LINEAR_MAX_EXPONENT and not sizes_errors,
        )
    else:
        add("latency linear in body size up to 1 MiB", f"not measurable ({sizes_errors} errors)", False)
    leak = results.get("leak")
    if leak:
        steady = leak["samples"][-1]
        end = (results.get("memory") or {}).get("ours", {})
        add(
            "RSS of one worker ≤ 80 MB",
            f"peak {steady['peak_rss_mb']:.1f} MB through the leak check (keep-alive connections); "
            f"{_fmt(end.get('peak_rss_mb'), 1)} MB at the end, after hundreds of new TLS connections and 1 MiB reviews "
            "(see Memory)",
            steady["peak_rss_mb"] <= 80,
        )
    leak = results.get("leak")
    if leak:
        add(
            f"RSS flat after {leak['reviews']:,} reviews",
            f"{leak['growth_mb']:+.1f} MB from review {leak['from_reviews']:,} to {leak['reviews']:,}",
            abs(leak["growth_mb"]) <= FLAT_MAX_MB,
        )
    two = (results.get("two_workers") or {}).get("saturation", {}).get("typical", {})
    if two.get("ours") and typ.get("ours"):
        add(
            "two workers: scaling (reported)",
            f"{two['ours']['rps']:,.0f}/s = {two['ours']['rps'] / typ['ours']['rps']:.2f}× one worker; "
            f"wrk used {two['ours']['generator_cpu_pct']:.0f}% of a core on the same 2 cores",
            None,
        )
    return out


def markdown(results: dict[str, Any], plot_name: str | None = None) -> str:
    env = results["environment"]
    w = results["workloads"]
    lines: list[str] = []
    add = lines.append
    add("# Admission benchmark: podpatterns against the floor of its own stack\n")
    add(
        f"Command: `{results.get('command', 'python3 -m bench')}` ({results.get('elapsed_s', '?')} s). "
        f"Machine: {env['cpu']}, {env['cores']} cores, {env['memory_gb']} GB, Linux {env['kernel']}, "
        f"Debian {env['debian']}. "
        f"Python {env['python']}, uvicorn {env['uvicorn']} ({env['loop']}, httptools {env['httptools']}), "
        f"FastAPI {env['fastapi']}, Starlette {env['starlette']}, pydantic {env['pydantic']}, orjson {env['orjson']}, "
        f"{env['openssl']}, {env['wrk']}. Commit {env['commit']}, {env['date']}.\n"
    )
    add(
        "All three servers run under the same uvicorn with the same TLS context (`webhook.tls.context_factory`), "
        "connection limit, keep-alive and worker count; ours via `python -m webhook serve` (built-in config, one "
        "JSON log line per decision to a file), the references via `python -m bench.refs`. The load is wrk over "
        "TLS keep-alive on 127.0.0.1, `POST /mutate?timeout=10s`, compact JSON, `Content-Type: application/json`; "
        "every answer is checked (status 200 and, for ours, the patch). "
        + ("One-worker runs pinned: server on CPU 1, wrk on CPU 0. " if results.get("pinned") else "No CPU pinning. ")
        + f"CPU busy before the start: {results.get('load_before_start_pct', '?')}% of a core. "
        + "Ratios are from the same run, the servers interleaved. The machine may be shared: `other` is the CPU "
        "used by anything but the server and wrk during a run, `steal` the CPU the hypervisor gave to other "
        "guests (a disturbed run shows there).\n"
    )
    add("## Targets\n")
    add("| target | figure | met |")
    add("| --- | --- | --- |")
    for t in results.get("targets", []):
        verdict = {True: "yes", False: "**no**", None: "–"}[t["met"]]
        add(f"| {t['target']} | {t['figure']} | {verdict} |")
    add("")

    sat = results.get("saturation") or {}
    if sat:
        rounds = results["plan"]["rounds"]
        add(f"## Throughput at saturation (1 worker, 16 connections, closed loop, {rounds} rounds)\n")
        add(
            "Absolute figures are the best round of each server (req/s: highest; CPU: lowest). The ratios are the "
            "median over rounds of ours against the reference measured in the same round, seconds apart (ours "
            "first in even rounds, last in odd ones): the host's speed drifts between rounds (compare the "
            "floor's own range below), and a ratio of two bests can pair a fast moment with a slow one.\n"
        )
        add(
            "| workload | body | podpatterns req/s | floor req/s | FastAPI req/s | ours/floor | ours/FastAPI "
            "| CPU s per 1,000: ours | floor | FastAPI | CPU ours/floor | errors (ours) | wrk CPU | other CPU | steal |"
        )
        add("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name, per in sat.items():
            o, f, a = per.get("ours", {}), per.get("floor", {}), per.get("fastapi", {})
            gen = max(x.get("generator_cpu_pct", 0) for x in (o, f, a))
            other = max(x.get("other_cpu_pct", 0) for x in (o, f, a))
            steal = max(x.get("steal_cpu_pct", 0) or 0 for x in (o, f, a))
            add(
                f"| {name} | {_kib(w[name]['bytes'])} | {_fmt(o.get('rps'), 0)} | {_fmt(f.get('rps'), 0)} | "
                f"{_fmt(a.get('rps'), 0)} | {_fmt(median(paired(per, 'rps')), 2)} | "
                f"{_fmt(median(paired(per, 'rps', to='fastapi')), 2)} | {_fmt(o.get('cpu_ms_per_review'), 3)} | "
                f"{_fmt(f.get('cpu_ms_per_review'), 3)} | {_fmt(a.get('cpu_ms_per_review'), 3)} | "
                f"{_fmt(median(paired(per, 'cpu_ms_per_review')), 2)}× | "
                f"{o.get('errors', '–')} | "
                f"≤{gen:.0f}% | ≤{other:.0f}% | ≤{steal:.0f}% |"
            )
        add("")
        spreads = []
        for name, per in sat.items():
            floor_rps = [r["rps"] for r in per.get("floor", {}).get("runs", [])]
            if floor_rps:
                spreads.append(f"{name} {min(floor_rps):,.0f}–{max(floor_rps):,.0f}")
        if spreads:
            add("The floor's own req/s over the rounds (the host's drift): " + "; ".join(spreads) + ".\n")
        add("Workloads: " + "; ".join(f"**{n}**: {w[n]['description']}" for n in sat) + ".\n")

    one = results.get("one_connection") or {}
    if one:
        add(
            "## Latency of one review (1 connection, closed loop, "
            f"best p50 of {results['plan']['one_conn_rounds']}), ms\n"
        )
        add("| workload | podpatterns p50 | p99 | p99.9 | floor p50 | p99 | FastAPI p50 | p99 | ours − floor (p50) |")
        add("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name, per in one.items():
            o, f, a = (per.get(k, {}).get("latency_ms", {}) for k in KINDS)
            errs = per.get("ours", {}).get("error_count", 0)
            add(
                f"| {name}{' (' + str(errs) + ' errors)' if errs else ''} | {_fmt(o.get('p50'), 3)} | "
                f"{_fmt(o.get('p99'), 3)} | {_fmt(o.get('p99.9'), 3)} | {_fmt(f.get('p50'), 3)} | "
                f"{_fmt(f.get('p99'), 3)} | {_fmt(a.get('p50'), 3)} | "
                f"{_fmt(a.get('p99'), 3)} | {_fmt((o.get('p50') or 0) - (f.get('p50') or 0), 3)} |"
            )
        add("")

    rates = results.get("rates") or {}
    if rates:
        add(
            "## Latency at fixed offered rates "
            "(typical pod, every pod different, 16 connections, open-loop schedule), ms\n"
        )
        add(
            "| offered req/s | server | achieved | p50 | p99 | p99.9 | max | late sends | errors | server CPU "
            "| other CPU |"
        )
        add("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for rate, per in rates.items():
            for kind in KINDS:
                r = per.get(kind)
                if not r:
                    continue
                lat = r["latency_ms"]
                sat_mark = " (saturated)" if r.get("saturated") else ""
                add(
                    f"| {int(rate):,} | {NAMES[kind]} | {r['rps']:,.0f}{sat_mark} | {lat['p50']:.2f} | "
                    f"{lat['p99']:.2f} | {lat['p99.9']:.2f} | {lat['max']:.2f} | {r['late_sends']} | "
                    f"{r['error_count']} | {r['server_cpu_pct']:.0f}% | {r['other_cpu_pct']:.0f}% |"
                )
        add("")
        add(
            "Latency is measured by wrk from the moment a request is written. Sends follow a fixed schedule per "
            "thread (±1 ms); a send after its slot means every connection was busy: `late sends` counts them and "
            "marks the point saturated, where the figures understate the wait (coordinated omission).\n"
        )

    sizes = results.get("sizes") or {}
    if sizes:
        add(f"## Latency against body size (1 connection, best p50 of {results['plan']['one_conn_rounds']}), ms\n")
        add("| body | podpatterns p50 | p99 | CPU ms/review | floor p50 | FastAPI p50 | ours errors |")
        add("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name, per in sizes.items():
            o, f, a = (per.get(k, {}) for k in KINDS)
            add(
                f"| {_kib(w[name]['bytes'])} | {_fmt(o.get('latency_ms', {}).get('p50'), 3)} | "
                f"{_fmt(o.get('latency_ms', {}).get('p99'), 3)} | {_fmt(o.get('cpu_ms_per_review'), 3)} | "
                f"{_fmt(f.get('latency_ms', {}).get('p50'), 3)} | {_fmt(a.get('latency_ms', {}).get('p50'), 3)} | "
                f"{o.get('error_count', '–')} |"
            )
        growth = growth_exponent(results)
        if growth:
            per_kib = ", ".join(f"{k}: {v} µs" for k, v in growth["us_per_kib"].items())
            add(
                f"\nGrowth: (latency − latency at the smallest size) ∝ size^{growth['exponent']:.2f} "
                f"(1 = linear); cost per KiB: {per_kib}.\n"
            )

    add("## Memory\n")
    add("| server | RSS after start, MB | peak RSS before the size sweep, MB | peak RSS after it (1 MiB bodies), MB |")
    add("| --- | ---: | ---: | ---: |")
    for kind in KINDS:
        start = (results.get("memory_at_start") or {}).get(kind, {})
        before = (results.get("memory_before_sweep") or {}).get(kind, {})
        end = (results.get("memory") or {}).get(kind, {})
        add(
            f"| {NAMES[kind]} | {_fmt(start.get('rss_mb'), 1)} | {_fmt(before.get('peak_rss_mb'), 1)} | "
            f"{_fmt(end.get('peak_rss_mb'), 1)} |"
        )
    add(
        "\nEvery wrk run opens new TLS connections (hundreds in a full run). RSS grows with new TLS connections "
        "in all three servers alike, and not over plain HTTP: that is the TLS stack under uvicorn (CPython ssl, "
        "uvloop), not the webhook, and it is why the peaks exceed the steady figure of the leak check, which keeps "
        "its connections open as the API server does."
    )
    leak = results.get("leak")
    if leak:
        mix = ", ".join(f"{n} {c}%" for n, c in leak["mix"].items())
        samples = leak["samples"]
        picks = [samples[0], *samples[1 : -1 : max(1, len(samples) // 6)], samples[-1]]
        seen = []
        for s in picks:
            if s not in seen:
                seen.append(s)
        trail = " → ".join(f"{s['rss_mb']:.1f} MB @ {s['reviews']:,}" for s in seen)
        add(
            f"\nLeak check (our webhook, {leak['reviews']:,} reviews, mix {mix}, {leak['rps']:,.0f} req/s, "
            f"{leak['errors']} errors): RSS {trail}; growth {leak['growth_mb']:+.1f} MB after review "
            f"{leak['from_reviews']:,}. Log lines written: {results.get('log_lines', 0):,}.\n"
        )

    two = results.get("two_workers")
    if two:
        add("## Two workers\n")
        add(
            "| workload | server | 1 worker req/s | 2 workers req/s | scaling | CPU s per 1,000 (2 workers) "
            "| wrk CPU | errors |"
        )
        add("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name, per in (two.get("saturation") or {}).items():
            for kind in KINDS:
                r2 = per.get(kind)
                r1 = sat.get(name, {}).get(kind, {})
                if not r2:
                    continue
                add(
                    f"| {name} | {NAMES[kind]} | {_fmt(r1.get('rps'), 0)} | {r2['rps']:,.0f} | "
                    f"{_fmt(_ratio(r2['rps'], r1.get('rps')), 2)}× | {_fmt(r2['cpu_ms_per_review'], 3)} | "
                    f"{r2['generator_cpu_pct']:.0f}% | {r2['errors']} |"
                )
        for rate, per in (two.get("rate") or {}).items():
            for kind in KINDS:
                r = per.get(kind)
                if r:
                    lat = r["latency_ms"]
                    add(
                        f"\n{NAMES[kind]}, 2 workers, typical (every pod different) at {int(rate):,} req/s offered: "
                        f"p50 {lat['p50']:.2f} ms, "
                        f"p99 {lat['p99']:.2f} ms, p99.9 {lat['p99.9']:.2f} ms, {r['error_count']} errors."
                    )
        add(
            f"\nBest of {results['plan'].get('two_worker_rounds', 1)} rounds. "
            "The machine has 2 cores: with two workers the server and wrk share them, so the scaling is bounded "
            "by what wrk itself takes (its CPU is shown) as much as by the server.\n"
        )
    if plot_name:
        add(f"![latency against offered load and body size]({plot_name})\n")
    add(
        "What the profiles showed, what changed and what is left: [bench/NOTES.md](NOTES.md) "
        "(written by hand; this file is generated).\n"
    )
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    colors = {"ours": "tab:blue", "floor": "tab:green", "fastapi": "tab:orange"}
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    rates = results.get("rates") or {}
    for kind in KINDS:
        xs, series = [], {"p50": [], "p99": [], "p99.9": []}
        marks = []
        for rate, per in rates.items():
            r = per.get(kind)
            if not r:
                continue
            xs.append(int(rate))
            for p in series:
                series[p].append(r["latency_ms"][p])
            marks.append(r.get("saturated", False))
        for p, style in (("p50", "-"), ("p99", "--"), ("p99.9", ":")):
            if xs:
                left.plot(xs, series[p], style, color=colors[kind], marker="o", ms=3, label=f"{NAMES[kind]} {p}")
        for x, y, sat in zip(xs, series["p99"], marks, strict=True):
            if sat:
                left.plot([x], [y], "x", color="red", ms=9)
    left.set(
        xscale="log", yscale="log", xlabel="offered load, req/s (typical pod, all different)", ylabel="latency, ms"
    )
    left.set_title("Latency percentiles against offered load (1 worker; x = saturated)")
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=7, ncol=3)
    sizes = results.get("sizes") or {}
    w = results["workloads"]
    for kind in KINDS:
        pts = sorted(
            (w[n]["bytes"] / 1024, per[kind]["latency_ms"]["p50"], per[kind]["latency_ms"]["p99"])
            for n, per in sizes.items()
            if kind in per and per[kind]["requests"]
        )
        if pts:
            right.plot(
                [p[0] for p in pts], [p[1] for p in pts], "-o", color=colors[kind], ms=3, label=f"{NAMES[kind]} p50"
            )
            right.plot(
                [p[0] for p in pts],
                [p[2] for p in pts],
                "--",
                color=colors[kind],
                alpha=0.6,
                label=f"{NAMES[kind]} p99",
            )
            if kind == "ours" and len(pts) > 1:
                ref = pts[-1]
                right.plot(
                    [p[0] for p in pts],
                    [ref[1] * p[0] / ref[0] for p in pts],
                    ":",
                    color="grey",
                    label="linear (slope 1)",
                )
    right.set(xscale="log", yscale="log", xlabel="AdmissionReview body, KiB", ylabel="latency, ms (1 connection)")
    right.set_title("Latency against pod size")
    right.grid(True, which="both", alpha=0.3)
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
