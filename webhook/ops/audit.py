"""`podpatterns audit`: every pod in the namespaces the webhook serves, grouped by owner workload, as
current, stale, missing or not-asked. Reads only API objects (never dials the webhook pods)."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import asdict, dataclass

from webhook.ops import kube as k
from webhook.ops.classify import MISSING, STALE, STATES, classify

EXIT_DRIFT = 3  # some pod is stale or missing


@dataclass(frozen=True)
class Row:
    namespace: str
    pod: str
    owner: str | None  # Kind/name, or None for a bare pod
    state: str
    reason: str


def namespaces_in_scope(kube: k.Kube, inst: k.Installation, namespace: str | None) -> tuple[list[str], list[str]]:
    """(namespaces to survey, notes). -n names one; without it, every namespace the selector admits."""
    if namespace is not None:
        ns = kube.plain(kube.call(f"read namespace {namespace}", kube.core.read_namespace, namespace))
        if inst.namespace_in_scope(ns):
            return [namespace], []
        return [], [f"namespace {namespace} is not served by the webhook (its labels miss the namespaceSelector)"]
    listed = kube.plain(kube.call("list namespaces", kube.core.list_namespace))
    return sorted(n["metadata"]["name"] for n in listed.get("items") or [] if inst.namespace_in_scope(n)), []


def survey(kube: k.Kube, inst: k.Installation, namespace: str | None) -> tuple[list[Row], list[str]]:
    names, notes = namespaces_in_scope(kube, inst, namespace)
    rows: list[Row] = []
    for ns in names:
        pods = kube.plain(kube.call(f"list pods in {ns}", kube.core.list_namespaced_pod, ns)).get("items") or []
        rss = kube.plain(kube.call(f"list ReplicaSets in {ns}", kube.apps.list_namespaced_replica_set, ns))
        jobs = kube.plain(kube.call(f"list Jobs in {ns}", kube.batch.list_namespaced_job, ns))
        by_name = {
            "rs": {r["metadata"]["name"]: r for r in rss.get("items") or []},
            "job": {j["metadata"]["name"]: j for j in jobs.get("items") or []},
        }
        for pod in pods:
            if pod["metadata"].get("deletionTimestamp"):
                continue  # on its way out; its replacement is what counts
            owner = k.owner_of(pod, by_name["rs"], by_name["job"])
            standing = classify(pod, inst.installed)
            rows.append(
                Row(
                    ns,
                    pod["metadata"]["name"],
                    f"{owner[0]}/{owner[1]}" if owner else None,
                    standing.state,
                    standing.reason,
                )
            )
    rows.sort(key=lambda r: (r.namespace, r.owner or "~", r.pod))
    return rows, notes


def print_table(rows: list[Row]) -> None:
    header = ("NAMESPACE", "OWNER", "POD", "STATE", "REASON")
    table = [header, *((r.namespace, r.owner or "(bare pod)", r.pod, r.state, r.reason) for r in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        sys.stdout.write(
            "  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)) + "  " + row[4] + "\n"
        )
    counts = Counter(r.state for r in rows)
    sys.stdout.write(", ".join(f"{counts[s]} {s}" for s in STATES) + "\n")


def run(args: argparse.Namespace, kube: k.Kube) -> int:
    inst = k.require_installation(kube)
    rows, notes = survey(kube, inst, None if args.all_namespaces else (args.namespace or kube.namespace))
    for note in inst.notes + notes:
        sys.stderr.write(f"note: {note}\n")
    if args.output == "json":
        sys.stdout.write(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    else:
        sys.stderr.write(
            f"webhook {inst.mwc_name}: version {inst.installed.version or '?'}, "
            f"config {inst.installed.fingerprint or '?'}\n"
        )
        print_table(rows)
    return EXIT_DRIFT if any(r.state in (STALE, MISSING) for r in rows) else 0
