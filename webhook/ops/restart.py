"""`podpatterns restart --stale|--missing`: roll the owners of those pods as `kubectl rollout restart`
does (a new `kubectl.kubernetes.io/restartedAt` in the pod template), each workload once. Bare pods have
no template to roll: they are only deleted with --delete-bare-pods."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from dataclasses import asdict, dataclass, field

from webhook.ops import kube as k
from webhook.ops.audit import Row, survey
from webhook.ops.classify import MISSING, STALE

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
ROLLABLE = ("Deployment", "StatefulSet", "DaemonSet")
EXIT_SKIPPED = 1  # some selected pod could not be restarted (a Job's pod, a bare pod without the flag)


@dataclass
class Action:
    namespace: str
    target: str  # Kind/name, or Pod/name for a bare pod
    action: str  # restart | delete | skip
    pods: list[str] = field(default_factory=list)
    reason: str = ""
    done: bool = False


def plan(rows: list[Row], states: set[str], delete_bare: bool) -> list[Action]:
    actions: dict[tuple[str, str], Action] = {}
    for row in rows:
        if row.state not in states:
            continue
        target = row.owner or f"Pod/{row.pod}"
        key = (row.namespace, target)
        if key not in actions:
            kind = target.split("/", 1)[0]
            if row.owner is None:
                action, why = (
                    ("delete", "bare pod, --delete-bare-pods")
                    if delete_bare
                    else ("skip", "bare pod: nothing recreates it; pass --delete-bare-pods to delete it")
                )
            elif kind in ROLLABLE:
                action, why = "restart", f"rollout restart ({row.state})"
            else:
                action, why = "skip", f"a {kind} cannot be rolled; delete its pods or wait for the next run"
            actions[key] = Action(row.namespace, target, action, reason=why)
        actions[key].pods.append(row.pod)
    return list(actions.values())


def _restart(kube: k.Kube, action: Action, when: str) -> None:
    kind, name = action.target.split("/", 1)
    body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: when}}}}}
    patch = {
        "Deployment": kube.apps.patch_namespaced_deployment,
        "StatefulSet": kube.apps.patch_namespaced_stateful_set,
        "DaemonSet": kube.apps.patch_namespaced_daemon_set,
    }[kind]
    kube.call(f"restart {action.target} in {action.namespace}", patch, name, action.namespace, body)


def run(args: argparse.Namespace, kube: k.Kube) -> int:
    if not (args.stale or args.missing):
        sys.stderr.write("podpatterns restart: say which pods: --stale, --missing or both\n")
        return 2
    inst = k.require_installation(kube)
    rows, notes = survey(kube, inst, None if args.all_namespaces else (args.namespace or kube.namespace))
    for note in inst.notes + notes:
        sys.stderr.write(f"note: {note}\n")
    states = {s for s, on in ((STALE, args.stale), (MISSING, args.missing)) if on}
    actions = plan(rows, states, args.delete_bare_pods)
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for action in actions:
        if args.dry_run or action.action == "skip":
            continue
        if action.action == "restart":
            _restart(kube, action, when)
        else:
            for pod in action.pods:
                kube.call(
                    f"delete pod {pod} in {action.namespace}", kube.core.delete_namespaced_pod, pod, action.namespace
                )
        action.done = True
    if args.output == "json":
        sys.stdout.write(json.dumps([asdict(a) for a in actions], indent=2) + "\n")
    else:
        if not actions:
            sys.stdout.write("nothing to restart\n")
        for a in actions:
            verb = {"restart": "restarted", "delete": "deleted"}.get(a.action, "skipped")
            verb = f"would be {verb}" if args.dry_run and a.action != "skip" else verb
            sys.stdout.write(f"{a.namespace}/{a.target} {verb} ({a.reason}): {', '.join(a.pods)}\n")
    return EXIT_SKIPPED if any(a.action == "skip" for a in actions) else 0
