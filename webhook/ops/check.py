"""`podpatterns check -n NS [POD | -f MANIFEST]`: every link of the chain that decides whether a pod is
injected, one line each, in the order the API server walks it; then, for a live pod, what its status
annotation says, and for a manifest, what a server-side dry run would store."""

from __future__ import annotations

import argparse
import base64
import copy
import datetime as dt
import difflib
import json
import ssl
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3
import yaml
from kubernetes.client.exceptions import ApiException

from webhook.injection import annotations as keys
from webhook.injection import skip_reason
from webhook.offline import TEMPLATE_PATHS, dump, load_documents
from webhook.ops import conditions, selectors, tlscheck
from webhook.ops import kube as k
from webhook.ops.classify import CURRENT, MISSING, classify, read_status

Json = dict[str, Any]

EXIT_OK, EXIT_NOT_INJECTED, EXIT_ERROR, EXIT_STALE = 0, 1, 2, 3
OK, NO, UNKNOWN, INFO = "ok", "no", "??", "--"
# Set by the API server on every object: not what the webhook or the defaults changed.
NOISE = ("uid", "creationTimestamp", "managedFields", "resourceVersion", "generation")


@dataclass
class Report:
    lines: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, mark: str, what: str, text: str) -> bool:
        self.lines.append((mark, what, text))
        return mark != NO

    def write(self) -> None:
        for mark, what, text in self.lines:
            sys.stdout.write(f"[{mark}] {what}: {text}\n")


def pod_from_manifest(path: str, namespace: str) -> Json:
    """The first Pod, or the pod template of the first workload, as a Pod to create in `namespace`."""
    text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    for doc in load_documents(text):
        if not isinstance(doc, dict):
            continue
        if doc.get("kind") == "Pod":
            pod = copy.deepcopy(doc)
        elif doc.get("kind") in TEMPLATE_PATHS:
            node: Any = doc
            for part in TEMPLATE_PATHS[doc["kind"]]:
                node = (node or {}).get(part)
            template = copy.deepcopy(node or {})
            meta = dict(template.get("metadata") or {})
            meta.setdefault("generateName", f"{doc.get('metadata', {}).get('name', 'pod')}-check-")
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template.get("spec") or {}}
        else:
            continue
        pod.setdefault("metadata", {})["namespace"] = namespace
        return pod
    raise k.OpsError(f"{path}: no Pod or workload with a pod template")


def _scope(report: Report, kube: k.Kube, inst: k.Installation, namespace: str, pod: Json) -> bool:
    """Namespace, exclusions, objectSelector, opt-out, matchConditions: does the API server call us?"""
    hook = inst.webhook
    ns = kube.plain(kube.call(f"read namespace {namespace}", kube.core.read_namespace, namespace))
    ns_labels = ns["metadata"].get("labels") or {}
    reqs = selectors.evaluate(hook.get("namespaceSelector"), ns_labels)
    named = [r for r in reqs if r.key != selectors.NAMESPACE_NAME_LABEL]
    in_scope = all(r.matched for r in named)
    detail = "; ".join(r.describe(ns_labels) for r in named) or "the selector admits every namespace"
    served = report.add(OK if in_scope else NO, "namespace opt-in", f"{namespace}: {detail}")
    excluded = selectors.excluded_namespaces(hook.get("namespaceSelector"))
    if namespace in excluded:
        served &= report.add(
            NO, "excluded namespace", f"{namespace} is one the chart never injects ({', '.join(excluded)})"
        )
    elif not all(r.matched for r in reqs):
        served &= report.add(NO, "namespace selector", "; ".join(r.describe(ns_labels) for r in reqs if not r.matched))
    else:
        report.add(OK, "excluded namespace", f"{namespace} is not among {', '.join(excluded) or 'none'}")

    labels = pod["metadata"].get("labels") or {}
    obj_reqs = selectors.evaluate(hook.get("objectSelector"), labels)
    failed = [r.describe(labels) for r in obj_reqs if not r.matched]
    served &= report.add(
        NO if failed else OK, "pod labels (objectSelector)", "; ".join(failed) if failed else "the pod's labels match"
    )
    skipped = skip_reason(pod)
    annotations = pod["metadata"].get("annotations") or {}
    if skipped == "opted out":
        served &= report.add(NO, "pod opt-out", f"{keys.INJECT}=false")
    elif skipped is not None or not keys.wants_injection(annotations):
        report.add(INFO, "pod annotations", "the pod asks for no podpatterns feature")
    else:
        asked = [key.removeprefix(keys.PREFIX) for key in keys.FEATURE_KEYS if key in annotations]
        report.add(OK, "pod annotations", f"asks for {', '.join(asked)}")

    request = {
        "operation": "CREATE",
        "namespace": namespace,
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
    }
    outcomes = conditions.evaluate(hook.get("matchConditions"), pod, request)
    if not outcomes:
        report.add(OK, "matchConditions", "none: every pod in scope is sent")
    for o in outcomes:
        if o.value is None:
            report.add(UNKNOWN, f"matchCondition {o.name}", f"could not evaluate {o.expression!r} here ({o.error})")
        else:
            served &= report.add(
                OK if o.value else NO, f"matchCondition {o.name}", f"{o.expression} = {str(o.value).lower()}"
            )
    return served


def _serving(report: Report, kube: k.Kube, inst: k.Installation) -> bool:
    """Endpoints ready, caBundle verifying the serving certificate, failurePolicy if not."""
    slices = kube.plain(
        kube.call(
            "list EndpointSlices",
            kube.discovery.list_namespaced_endpoint_slice,
            inst.namespace,
            label_selector=f"kubernetes.io/service-name={inst.service}",
        )
    )
    service = k.get_or_none(
        kube, "read the webhook Service", kube.core.read_namespaced_service, inst.service, inst.namespace
    )
    port_name = next(
        (p.get("name") for p in ((service or {}).get("spec") or {}).get("ports") or [] if p.get("port") == inst.port),
        None,
    )
    ready: list[tuple[str, int]] = []
    for s in slices.get("items") or []:
        port = next((p["port"] for p in s.get("ports") or [] if p.get("name") == port_name), None)
        for e in s.get("endpoints") or []:
            if (e.get("conditions") or {}).get("ready") and port is not None:
                ready += [(a, int(port)) for a in e.get("addresses") or []]
    where = f"service {inst.namespace}/{inst.service}:{inst.port}"
    up = report.add(
        OK if ready else NO,
        "endpoints",
        f"{where}: {len(ready)} ready" + (f" ({', '.join(f'{a}:{p}' for a, p in ready)})" if ready else ""),
    )
    bundle = (inst.webhook.get("clientConfig") or {}).get("caBundle")
    server_name = f"{inst.service}.{inst.namespace}.svc"
    if not bundle:
        report.add(NO, "caBundle", "the webhook configuration has no caBundle (cert-manager's cainjector not done?)")
        up = False
    else:
        verdict = _verify(kube, inst, ready, server_name, bundle)
        if verdict.verified is None:
            report.add(UNKNOWN, "caBundle", verdict.how)
        else:
            left = ""
            if verdict.not_after:
                days = (verdict.not_after - dt.datetime.now(dt.UTC)).days
                left = f"; expires {verdict.not_after:%Y-%m-%d %H:%M} UTC (in {days} days)"
            up &= report.add(
                OK if verdict.verified else NO,
                "caBundle verifies the serving certificate",
                f"{verdict.how}{left}" if verdict.verified else verdict.how,
            )
    policy = inst.webhook.get("failurePolicy", "Fail")
    effect = (
        "creating a pod it selects is refused" if policy == "Fail" else "pods it selects are created without injection"
    )
    report.add(INFO, "failurePolicy", f"{policy}: while the webhook is down or unverifiable, {effect}")
    return up


def _verify(
    kube: k.Kube, inst: k.Installation, ready: list[tuple[str, int]], name: str, bundle: str
) -> tlscheck.Verdict:
    unreachable = ""
    for address, port in ready[:1]:
        try:
            return tlscheck.dial(address, port, name, bundle)
        except ssl.SSLError as exc:  # reached it, and the handshake failed: that is the answer, not a fallback
            return tlscheck.Verdict(False, f"TLS handshake with {address}:{port} as {name} failed: {exc}")
        except OSError as exc:
            unreachable = f"{address}:{port} is unreachable from here ({exc}); "
    for volume in ((inst.deployment or {}).get("spec") or {}).get("template", {}).get("spec", {}).get("volumes") or []:
        secret_name = (volume.get("secret") or {}).get("secretName")
        if not secret_name:
            continue
        secret = k.get_or_none(
            kube, "read the TLS Secret", kube.core.read_namespaced_secret, secret_name, inst.namespace
        )
        data = (secret or {}).get("data") or {}
        if "tls.crt" in data:
            verdict = tlscheck.verify_pem(base64.b64decode(data["tls.crt"]), bundle, name)
            how = f"{unreachable}checked Secret {inst.namespace}/{secret_name} tls.crt for {name}"
            return tlscheck.Verdict(
                verdict.verified, how if verdict.verified else f"{how}: {verdict.how}", verdict.not_after
            )
    return tlscheck.Verdict(None, f"{unreachable}no ready endpoint to dial and no readable TLS Secret to check")


def _diff(before: Json, after: Json) -> str:
    def clean(pod: Json) -> Json:
        pod = copy.deepcopy(pod)
        pod.pop("status", None)
        for key in NOISE:
            pod.get("metadata", {}).pop(key, None)
        return pod

    a, b = dump([clean(before)]).splitlines(keepends=True), dump([clean(after)]).splitlines(keepends=True)
    return "".join(difflib.unified_diff(a, b, "manifest", "dry run (what the API server would store)"))


def _manifest_verdict(report: Report, kube: k.Kube, inst: k.Installation, pod: Json) -> int:
    namespace = pod["metadata"]["namespace"]
    try:
        response = kube.core.create_namespaced_pod(namespace, pod, dry_run="All", _preload_content=False)
    except ApiException as exc:
        report.add(NO, "dry run", f"the API server refuses the pod: {exc.status} {k.api_message(exc)}")
        report.write()
        return EXIT_NOT_INJECTED
    except urllib3.exceptions.HTTPError as exc:
        raise k.OpsError(f"dry run: cannot reach the API server: {exc}") from None
    stored = json.loads(response.data)
    standing = classify(stored, inst.installed)
    asked = keys.wants_injection(pod["metadata"].get("annotations") or {}) and skip_reason(pod) is None
    if standing.status is not None:
        report.add(
            OK,
            "dry run",
            f"would be injected: {', '.join(standing.status.get('features') or [])} "
            f"(version {standing.status.get('version')}, config {standing.status.get('config')})",
        )
    elif asked:
        report.add(NO, "dry run", "asks for injection but the API server would store it uninjected")
    else:
        report.add(INFO, "dry run", "nothing asked, nothing injected")
    report.write()
    sys.stdout.write(_diff(pod, stored) or "(the API server would store the manifest unchanged)\n")
    return EXIT_NOT_INJECTED if asked and standing.status is None else EXIT_OK


def _live_verdict(report: Report, inst: k.Installation, pod: Json) -> int:
    standing = classify(pod, inst.installed)
    status = standing.status
    if status is not None:
        which = "current" if standing.state == CURRENT else f"stale: {standing.reason}"
        report.add(
            OK if standing.state == CURRENT else NO,
            "injected",
            f"by {status.get('version')}, features {', '.join(status.get('features') or []) or 'none'}, "
            f"config {status.get('config') or '(not recorded)'} ({which})",
        )
        report.write()
        return EXIT_OK if standing.state == CURRENT else EXIT_STALE
    report.add(NO if standing.state == MISSING else INFO, "injected", f"no: {standing.reason}")
    report.write()
    return EXIT_NOT_INJECTED if standing.state == MISSING else EXIT_OK


def run(args: argparse.Namespace, kube: k.Kube) -> int:
    namespace = args.namespace or kube.namespace
    if bool(args.pod) == bool(args.filename):
        sys.stderr.write("podpatterns check: name a POD or pass -f MANIFEST (one of them)\n")
        return EXIT_ERROR
    if args.filename:
        try:
            pod = pod_from_manifest(args.filename, namespace)
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise k.OpsError(f"cannot read {args.filename}: {exc}") from None
    else:
        pod = kube.plain(
            kube.call(f"read pod {namespace}/{args.pod}", kube.core.read_namespaced_pod, args.pod, namespace)
        )
    report = Report()
    inst = k.find_installation(kube)
    if inst is None:
        report.add(NO, "webhook", f"no MutatingWebhookConfiguration has a webhook {k.WEBHOOK_NAME}")
        status = read_status(pod["metadata"].get("annotations") or {})
        if args.pod and status is not None:
            report.add(INFO, "injected", f"by {status.get('version')} (config {status.get('config')}), before")
        report.write()
        wants = keys.wants_injection(pod["metadata"].get("annotations") or {}) and skip_reason(pod) is None
        return EXIT_NOT_INJECTED if wants and status is None else EXIT_OK
    report.add(
        OK,
        "webhook",
        f"MutatingWebhookConfiguration {inst.mwc_name} ({k.WEBHOOK_NAME}), version "
        f"{inst.installed.version or '?'}, config {inst.installed.fingerprint or '?'}",
    )
    for note in inst.notes:
        report.add(UNKNOWN, "webhook", note)
    served = _scope(report, kube, inst, namespace, pod)
    up = _serving(report, kube, inst)
    if served and not up:
        report.add(
            NO,
            "outcome",
            f"the API server would call the webhook and fail: failurePolicy "
            f"{inst.webhook.get('failurePolicy', 'Fail')} decides",
        )
    if args.filename:
        return _manifest_verdict(report, kube, inst, pod)
    return _live_verdict(report, inst, pod)
