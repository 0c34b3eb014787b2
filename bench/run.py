"""The admission benchmark: podpatterns against the floor of its own stack, over real HTTPS keep-alive.

    python3 -m bench [--quick] [--out bench/out] [--record] [--pin] [--no-two-workers]

Starts three servers the same way (same uvicorn, loop, HTTP parser, TLS context, connection limit,
keep-alive and worker count): our webhook (`python -m webhook serve`), the floor (bare ASGI + orjson)
and a textbook FastAPI endpoint with a pydantic AdmissionReview model (bench/refs.py). Drives them with
wrk (bench/wrk.lua) on 127.0.0.1 only, every run bounded in time, and measures, interleaving the
servers so that drift on a shared machine hits all three alike:

- throughput at saturation (closed loop, 16 keep-alive connections) per workload, best of N rounds;
- CPU seconds per 1,000 reviews (server processes, from /proc) and the generator's own CPU;
- latency with one connection (what one review costs), per workload;
- p50/p99/p99.9 at fixed offered rates (open-loop schedule, typical pod);
- latency against body size, 1 KiB to 1 MiB (must stay linear);
- RSS: peak per worker, and a leak check (RSS sampled while 100,000 reviews go through);
- two workers: the scaling, with the generator on the same two cores.

Prints markdown tables, writes results.json, RESULTS.md and latency.png to --out; --record copies
RESULTS.md and the plot to bench/ (bench/RESULTS.md, bench/RESULTS.png).
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import platform
import re
import shutil
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import loadgen, report, servers, workloads
from bench.workloads import ROOT, Workload

KINDS = ("ours", "floor", "fastapi")
BENCH_DIR = Path(__file__).resolve().parent


@dataclass
class Plan:
    quick: bool
    rounds: int
    sat_seconds: float
    one_conn_rounds: int
    one_conn_seconds: float
    rates: list[int]
    rate_seconds: dict[int, float]
    sizes: list[int]
    sweep_seconds: float
    leak_reviews: int
    leak_max_seconds: float
    warmup_seconds: float
    connections: int = 16
    two_workers: bool = True
    two_worker_workloads: tuple[str, ...] = ("typical", "typical-distinct", "noop")
    two_worker_rate: int = 1000
    two_worker_rounds: int = 2

    @classmethod
    def make(cls, quick: bool, two_workers: bool) -> Plan:
        if quick:
            return cls(
                quick=True,
                rounds=1,
                sat_seconds=2,
                one_conn_rounds=1,
                one_conn_seconds=1,
                rates=[100, 1000],
                rate_seconds={100: 3, 1000: 2},
                sizes=workloads.SIZES_QUICK,
                sweep_seconds=1,
                leak_reviews=20_000,
                leak_max_seconds=10,
                warmup_seconds=1,
                two_workers=two_workers,
                two_worker_workloads=("typical",),
                two_worker_rate=0,
                two_worker_rounds=1,
            )
        rates = [100, 500, 1000, 2000, 4000]
        return cls(
            quick=False,
            # Ratios are medians of paired rounds: many short rounds follow the host's drift more closely.
            rounds=10,
            sat_seconds=1,
            one_conn_rounds=3,
            one_conn_seconds=1,
            rates=rates,
            rate_seconds={r: (15 if r <= 100 else 8) for r in rates},
            sizes=workloads.SIZES_FULL,
            sweep_seconds=1,
            leak_reviews=100_000,
            leak_max_seconds=180,
            warmup_seconds=2,
            two_workers=two_workers,
        )


def _cpu_times() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine so far, from /proc/stat (steal: taken by the hypervisor)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    busy = sum(values[:3]) + sum(values[5:7])  # user nice system irq softirq
    steal = values[7] if len(values) > 7 else 0
    return busy / tick, steal / tick


@dataclass
class Bench:
    plan: Plan
    out: Path
    pin: bool
    certs: Any = None
    bodies: dict[str, Path] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    log: Path = Path()
    standard: list[str] = field(default_factory=list)
    sweep: list[str] = field(default_factory=list)
    _workloads: dict[str, Workload] = field(default_factory=dict)

    # -- measuring --------------------------------------------------------------------------------

    def measure(
        self,
        server: servers.Server,
        names: list[str],
        *,
        seconds: float,
        connections: int,
        rate: float = 0.0,
        expect: str | None = None,
    ) -> dict[str, Any]:
        """One wrk run against one server, with the server's and the machine's CPU around it."""
        bodies = [self.bodies[n] for n in names]
        wl = self.workload(names[0])
        if expect is None:
            expect = wl.expect(server.kind == "ours")
        gen_cpus = {0} if self.pin and server.workers == 1 else None
        cpu0, (busy0, steal0) = server.cpu(), _cpu_times()
        run = loadgen.run(
            server.url,
            bodies,
            duration=seconds,
            connections=connections,
            rate=rate,
            expect=expect,
            vary=next((v for v in (self.workload(n).vary for n in names) if v), None),
            cpus=gen_cpus,
            log=self.log,
        )
        cpu1, (busy1, steal1) = server.cpu(), _cpu_times()
        server_cpu = cpu1 - cpu0
        other = max(0.0, (busy1 - busy0) - server_cpu - run.gen_cpu_s)
        result = run.as_dict()
        result.update(
            server=server.kind,
            workers=server.workers,
            workload="+".join(dict.fromkeys(names)),
            server_cpu_s=round(server_cpu, 3),
            cpu_ms_per_review=round(1000 * server_cpu / run.requests, 4) if run.requests else None,
            cpu_s_per_1000=round(1000 * server_cpu / run.requests, 4) if run.requests else None,
            server_cpu_pct=round(100 * server_cpu / run.seconds, 1) if run.seconds else None,
            other_cpu_pct=round(100 * other / run.seconds, 1) if run.seconds else None,
            steal_cpu_pct=round(100 * (steal1 - steal0) / run.seconds, 1) if run.seconds else None,
        )
        return result

    def workload(self, name: str) -> Workload:
        return self._workloads[name]

    # -- phases -----------------------------------------------------------------------------------

    def setup(self) -> None:
        from webhook.certs import write_certs

        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "logs").mkdir(exist_ok=True)
        self.log = self.out / "logs" / "wrk.log"
        self.log.write_text("")
        self.certs = write_certs(self.out / "certs", dns_names=["localhost"], ip_addresses=["127.0.0.1"])
        standard = workloads.standard()
        sweep = workloads.sweep(self.plan.sizes)
        self.standard = [w.name for w in standard]
        self.sweep = [w.name for w in sweep]
        self._workloads = {w.name: w for w in standard + sweep}
        self.bodies = workloads.write_bodies(standard + sweep, self.out / "bodies")
        self.results["workloads"] = {
            w.name: {"bytes": w.size, "description": w.description, "injects": w.injects} for w in standard + sweep
        }

    def start(self, workers: int, kinds: tuple[str, ...] = KINDS) -> dict[str, servers.Server]:
        started = {}
        cpus = {1} if self.pin and workers == 1 else None
        for kind in kinds:
            say(f"starting {servers.LABELS[kind]} ({workers} worker{'s' if workers > 1 else ''})")
            started[kind] = servers.start(
                kind,
                cert=self.certs.tls_crt,
                key=self.certs.tls_key,
                ca=self.certs.ca_crt,
                workers=workers,
                log=self.out / "logs" / f"{kind}-{workers}w.log",
                cpus=cpus,
            )
        return started

    def precheck(self, started: dict[str, servers.Server], names: list[str]) -> dict[str, Any]:
        """Each workload once through every server, answers checked in full (the runs check a substring)."""
        checks: dict[str, Any] = {}
        for kind, server in started.items():
            for name in names:
                wl = self.workload(name)
                problem = None
                try:
                    status, body = server.post(wl.body)
                    problem = check_answer(kind, wl, status, body)
                except OSError as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                checks.setdefault(kind, {})[name] = problem or "ok"
                if problem:
                    say(f"  CHECK FAILED {kind} {name}: {problem}")
        return checks

    def warmup(self, started: dict[str, servers.Server]) -> dict[str, float]:
        """A short closed-loop run on each server; returns their typical-pod rates (rough)."""
        rates = {}
        for kind, server in started.items():
            run = self.measure(server, ["typical"], seconds=self.plan.warmup_seconds, connections=self.plan.connections)
            rates[kind] = run["rps"]
        return rates

    def leak_check(self, server: servers.Server, usable: list[str], rps_estimate: float) -> dict[str, Any]:
        """RSS of the worker, sampled twice a second, while `leak_reviews` reviews of a realistic mix go
        through one set of keep-alive connections (as the API server keeps them)."""
        # Half the typical pods are replicas of one template, half all different: the answer cache fills
        # to its bounds and churns, as under a DaemonSet's rollout.
        weights = {"typical": 3, "typical-distinct": 3, "small": 2, "noop": 1, "large-20c": 1}
        mix = [n for n, k in weights.items() if n in usable for _ in range(k)] * 10  # 100 per cycle
        if "large-env" in usable:
            mix[50] = "large-env"  # 1 in 100 is the 1,500-env-var pod
        mix = [mix[i] for i in _spread(len(mix))]
        # The mix's own rate, from a short run of it (it is slower than the typical pod alone, whose rate is
        # the estimate given); the length is bounded whatever the rate (a slow server answers fewer reviews).
        probe = self.measure(server, mix, seconds=2, connections=self.plan.connections, expect='"allowed":true')
        rps_estimate = probe["rps"] or rps_estimate
        wanted = math.ceil(1.5 * self.plan.leak_reviews / max(rps_estimate, 1.0))  # margin: the probe runs warm
        seconds = min(self.plan.leak_max_seconds, max(2.0, wanted))
        samples: list[dict[str, Any]] = [{"t": 0.0, **server.memory()[0]}]
        done = threading.Event()
        result: dict[str, Any] = {}

        def load() -> None:
            try:
                result["run"] = self.measure(
                    server, mix, seconds=seconds, connections=self.plan.connections, expect='"allowed":true'
                )
            finally:
                done.set()

        began = time.monotonic()
        threading.Thread(target=load, name="leak-load", daemon=True).start()
        while not done.wait(0.5):
            samples.append({"t": time.monotonic() - began, **server.memory()[0]})
        run = result["run"]
        wall = time.monotonic() - began
        for sample in samples:  # reviews answered by then, at the run's average rate
            sample["reviews"] = int(run["requests"] * min(1.0, sample.pop("t") / wall))
        samples.append({"reviews": run["requests"], **server.memory()[0]})
        # Flat = the RSS at the end is that of a fifth of the way in (allocator warm, caches filled).
        base = next(s for s in samples if s["reviews"] >= run["requests"] / 5)
        growth = samples[-1]["rss_mb"] - base["rss_mb"]
        say(
            f"  {run['requests']:,} reviews at {run['rps']:,.0f}/s, RSS {samples[0]['rss_mb']:.1f} → "
            f"{base['rss_mb']:.1f} (at {base['reviews']:,}) → {samples[-1]['rss_mb']:.1f} MB, "
            f"errors {run['error_count']}"
        )
        return {
            "reviews": run["requests"],
            "errors": run["error_count"],
            "mix": {n: mix.count(n) for n in dict.fromkeys(mix)},
            "samples": samples,
            "growth_mb": round(growth, 2),
            "from_reviews": base["reviews"],
            "rps": run["rps"],
            "run": run,
        }

    def saturation(self, started: dict[str, servers.Server], names: list[str], rounds: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for rnd in range(rounds):
            # Ours first in even rounds, last in odd ones: no server always gets the same place in a round.
            order = list(started.items()) if rnd % 2 == 0 else list(reversed(started.items()))
            for name in names:
                for kind, server in order:
                    run = self.measure(server, [name], seconds=self.plan.sat_seconds, connections=self.plan.connections)
                    out.setdefault(name, {}).setdefault(kind, {"runs": []})["runs"].append(run)
                    say(
                        f"  saturation r{rnd + 1} {name:<10} {kind:<8} {run['rps']:>8.0f}/s  "
                        f"{_num(run['cpu_ms_per_review'], 3)} ms CPU/review  errors {run['error_count']}  "
                        f"wrk {run['generator_cpu_pct']:.0f}%  other {run['other_cpu_pct']:.0f}%  "
                        f"steal {run['steal_cpu_pct']:.0f}%"
                    )
        for per_kind in out.values():
            for entry in per_kind.values():
                best = max(entry["runs"], key=lambda r: r["rps"])
                entry.update(
                    rps=best["rps"],
                    cpu_ms_per_review=min(
                        (r["cpu_ms_per_review"] for r in entry["runs"] if r["cpu_ms_per_review"] is not None),
                        default=None,
                    ),
                    errors=sum(r["error_count"] for r in entry["runs"]),
                    generator_cpu_pct=max(r["generator_cpu_pct"] for r in entry["runs"]),
                    other_cpu_pct=max(r["other_cpu_pct"] for r in entry["runs"]),
                    steal_cpu_pct=max(r["steal_cpu_pct"] for r in entry["runs"]),
                    latency_ms=best["latency_ms"],
                )
        return out

    def one_connection(self, started: dict[str, servers.Server], names: list[str], seconds: float) -> dict[str, Any]:
        """Closed loop on one connection: what one review costs. Best (lowest p50) of the rounds."""
        out: dict[str, Any] = {}
        for rnd in range(self.plan.one_conn_rounds):
            for name in names:
                for kind, server in started.items():
                    run = self.measure(server, [name], seconds=seconds, connections=1)
                    run["round"] = rnd + 1
                    best = out.setdefault(name, {}).get(kind)
                    if best is None or _p50(run) < _p50(best):
                        if best is not None:
                            run["error_count"] += best["error_count"]  # errors of every round count
                        out[name][kind] = run
                    else:
                        best["error_count"] += run["error_count"]
                    lat = run["latency_ms"]
                    say(
                        f"  1 connection r{rnd + 1} {name:<10} {kind:<8} p50 {lat['p50']:.3f} ms  "
                        f"p99 {lat['p99']:.3f} ms  errors {run['error_count']}"
                    )
        return out

    def fixed_rates(self, started: dict[str, servers.Server], name: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for rate in self.plan.rates:
            for kind, server in started.items():
                run = self.measure(
                    server, [name], seconds=self.plan.rate_seconds[rate], connections=self.plan.connections, rate=rate
                )
                run["saturated"] = run["rps"] < 0.97 * rate or run["late_sends"] > 0.01 * max(1, run["requests"])
                out.setdefault(str(rate), {})[kind] = run
                lat = run["latency_ms"]
                say(
                    f"  {rate:>5}/s {kind:<8} achieved {run['rps']:>7.0f}/s  p50 {lat['p50']:.2f}  "
                    f"p99 {lat['p99']:.2f}  p99.9 {lat['p99.9']:.2f} ms  late {run['late_sends']}  "
                    f"errors {run['error_count']}"
                )
        return out

    def two_workers(self) -> dict[str, Any]:
        started = self.start(2)
        try:
            self.warmup(started)
            names = list(self.plan.two_worker_workloads)
            out: dict[str, Any] = {"saturation": self.saturation(started, names, self.plan.two_worker_rounds)}
            if self.plan.two_worker_rate:
                rate = self.plan.two_worker_rate
                saved = self.plan.rates
                self.plan.rates = [rate]
                try:
                    out["rate"] = self.fixed_rates(started, "typical-distinct")
                finally:
                    self.plan.rates = saved
            out["memory"] = {kind: s.memory() for kind, s in started.items()}
            return out
        finally:
            for server in started.values():
                server.stop()

    # -- the whole run ----------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        began = time.monotonic()
        self.setup()
        self.results["environment"] = environment()
        busy0, _ = _cpu_times()
        time.sleep(2)
        idle_load = (_cpu_times()[0] - busy0) / 2
        self.results["load_before_start_pct"] = round(100 * idle_load, 1)
        if idle_load > 0.1:
            say(f"warning: the machine is busy before the benchmark starts ({100 * idle_load:.0f}% of a core)")
        self.results["plan"] = {k: v for k, v in vars(self.plan).items()}
        self.results["pinned"] = self.pin
        started = self.start(1)
        try:
            self.results["memory_at_start"] = {kind: s.memory()[0] for kind, s in started.items()}
            say("checking every answer once")
            # The size sweep's bodies (up to 1 MiB) are checked just before the sweep: a 1 MiB review leaves
            # the allocator holding memory, which would otherwise show in the leak check's realistic mix.
            self.results["checks"] = checks = self.precheck(started, self.standard)
            usable = [n for n in self.standard if checks["ours"].get(n) == "ok"]
            say("warm-up")
            rates = self.warmup(started)
            say(f"leak check: {self.plan.leak_reviews:,} reviews through our webhook")
            self.results["leak"] = self.leak_check(started["ours"], usable, rates["ours"])
            say("throughput at saturation (closed loop, 16 keep-alive connections)")
            self.results["saturation"] = self.saturation(started, self.standard, self.plan.rounds)
            say("latency with one connection")
            self.results["one_connection"] = self.one_connection(started, self.standard, self.plan.one_conn_seconds)
            say("latency at fixed offered rates (typical pod)")
            self.results["rates"] = self.fixed_rates(started, "typical-distinct")
            self.results["memory_before_sweep"] = {kind: s.memory()[0] for kind, s in started.items()}
            say("latency against body size (one connection)")
            for kind, per in self.precheck(started, self.sweep).items():
                checks.setdefault(kind, {}).update(per)
            self.results["sizes"] = self.one_connection(started, self.sweep, self.plan.sweep_seconds)
            self.results["memory"] = {kind: s.memory()[0] for kind, s in started.items()}
        finally:
            for server in started.values():
                server.stop()
        self.results["log_lines"] = trim_log(self.out / "logs" / "ours-1w.log")
        if self.plan.two_workers:
            say("two workers (server and generator share the two cores)")
            self.results["two_workers"] = self.two_workers()
            trim_log(self.out / "logs" / "ours-2w.log")
        self.results["elapsed_s"] = round(time.monotonic() - began, 1)
        return self.results


def _p50(run: dict[str, Any]) -> float:
    return float(run["latency_ms"]["p50"]) if run["requests"] else math.inf


def _num(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _spread(n: int) -> list[int]:
    """A fixed interleaving of 0..n-1 (stride through the list), so a mix is not sent in blocks."""
    stride = 37 if n % 37 else 41
    return [(i * stride) % n for i in range(n)]


def check_answer(kind: str, wl: Workload, status: int, body: bytes) -> str | None:
    if status != 200:
        return f"HTTP {status}: {body[:200]!r}"
    answer = json.loads(body)
    response = answer.get("response") or {}
    if answer.get("apiVersion") != "admission.k8s.io/v1" or answer.get("kind") != "AdmissionReview":
        return "not an AdmissionReview"
    if response.get("uid") != wl.uid:
        return "uid not echoed"
    if response.get("allowed") is not True:
        return f"not allowed: {response.get('status')}"
    if kind == "ours":
        if wl.injects:
            if response.get("patchType") != "JSONPatch":
                return "no patch"
            ops = json.loads(base64.b64decode(response["patch"]))
            if not isinstance(ops, list) or not ops:
                return "empty patch"
        elif "patch" in response:
            return "a patch for a pod that asks for nothing"
    return None


def trim_log(path: Path, keep: int = 200) -> int:
    """Count the server's log lines (one per CREATE decision), then keep only the last few."""
    if not path.exists():
        return 0
    count = 0
    tail: list[bytes] = []
    with path.open("rb") as f:
        for line in f:
            count += 1
            tail.append(line)
            if len(tail) > keep:
                del tail[0]
    path.write_bytes(b"".join(tail))
    return count


def _version(module: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(module)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    try:
        debian = Path("/etc/debian_version").read_text().strip()
    except OSError:
        debian = "?"
    try:
        import uvloop  # noqa: F401

        loop = f"uvloop {_version('uvloop')}"
    except ImportError:
        loop = "asyncio"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "webhook"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "debian": debian,
        "python": platform.python_version(),
        "uvicorn": _version("uvicorn"),
        "fastapi": _version("fastapi"),
        "starlette": _version("starlette"),
        "pydantic": _version("pydantic"),
        "orjson": _version("orjson"),
        "httptools": _version("httptools"),
        "prometheus_client": _version("prometheus-client"),
        "loop": loop,
        "openssl": ssl.OPENSSL_VERSION,
        "wrk": loadgen.wrk_version(),
        "commit": commit.strip() + (" (webhook/ has uncommitted changes)" if dirty.strip() else ""),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (under 2 minutes) for a first look")
    parser.add_argument("--out", default=str(BENCH_DIR / "out"), help="where results go (default bench/out)")
    parser.add_argument("--record", action="store_true", help="also copy RESULTS.md and the plot to bench/")
    parser.add_argument("--pin", action="store_true", help="one-worker runs: server on CPU 1, wrk on CPU 0")
    parser.add_argument("--no-two-workers", action="store_true", help="skip the two-worker phase")
    args = parser.parse_args(argv)
    if not loadgen.wrk_path():
        sys.stderr.write("bench: wrk is not installed (Debian: apt-get install wrk)\n")
        return 2
    if args.pin and (os.cpu_count() or 1) < 2:
        sys.stderr.write("bench: --pin needs two CPUs\n")
        return 2
    out = Path(args.out).resolve()
    plan = Plan.make(args.quick, not args.no_two_workers)
    bench = Bench(plan, out, args.pin)
    results = bench.run()
    command = "python3 -m bench" + (" --quick" if args.quick else "") + (" --pin" if args.pin else "")
    command += " --no-two-workers" if args.no_two_workers else ""
    results["command"] = command
    end_commit = environment()["commit"]
    if end_commit != results["environment"]["commit"]:  # others committed while it ran: say so
        results["environment"]["commit"] += f" at the start, {end_commit} at the end"
    results["targets"] = report.targets(results)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    plot = report.plot(results, out / "latency.png")
    text = report.markdown(results, plot_name="RESULTS.png" if args.record else "latency.png" if plot else None)
    (out / "RESULTS.md").write_text(text)
    sys.stdout.write(text)
    if args.record:
        recorded = BENCH_DIR / "RESULTS.md"
        # Keep the pod-creation section (bench/pod_create.py records it separately, on a real cluster).
        kept = re.search(r"<!-- pod-create:start -->.*?<!-- pod-create:end -->\n?", recorded.read_text(), re.S)
        shutil.copy(out / "RESULTS.md", recorded)
        if kept:
            recorded.write_text(recorded.read_text().rstrip("\n") + "\n\n" + kept.group(0))
        if plot:
            shutil.copy(plot, BENCH_DIR / "RESULTS.png")
    say(f"\nwrote {out / 'results.json'}, {out / 'RESULTS.md'}" + (f", {plot}" if plot else ""))
    judged = [t for t in results["targets"] if t["met"] is not None]
    met = sum(1 for t in judged if t["met"])
    reported = len(results["targets"]) - len(judged)
    say(f"{met} of {len(judged)} targets met ({reported} reported only); {results['elapsed_s']} s")
    return 0
