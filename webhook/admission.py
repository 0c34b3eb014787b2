"""AdmissionReview v1 in, AdmissionReview v1 out: the one place that maps core results to answers.

Two error channels (as kopf and controller-runtime do):
- the review itself is malformed -> MalformedReview, which the HTTP layer turns into a 4xx;
- the pod asks for something invalid -> HTTP 200, `allowed: false`, code 400, every problem named.
An unexpected exception -> `allowed: false`, code 500, uid echoed (the chart's failurePolicy decides).
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from webhook.injection import NOTHING_ASKED, InjectorConfig, InvalidAnnotations, inject
from webhook.patch import make_patch

API_VERSION = "admission.k8s.io/v1"


class MalformedReview(Exception):
    """Not an AdmissionReview we can answer; the message says what is wrong (HTTP 400)."""


@dataclass
class Decision:
    """What happened, for the structured log line and the metrics."""

    uid: str = ""
    namespace: str = ""
    pod: str = ""
    operation: str = ""
    result: str = "allowed"  # allowed | patched | denied | error
    reason: str = ""
    injected: tuple[str, ...] = ()
    warnings: list[str] = field(default_factory=list)
    dry_run: bool = False
    started: float = field(default_factory=time.perf_counter)
    # A pod that carries none of our annotations: logged at debug (the metrics still count it), as
    # Istio logs the pods it skips; with the chart's matchConditions such pods never reach us anyway.
    quiet: bool = False

    def log_fields(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "namespace": self.namespace,
            "pod": self.pod,
            "operation": self.operation,
            "decision": self.result,
            "reason": self.reason,
            "injected": list(self.injected),
            "dryRun": self.dry_run,
            "durationMs": round((time.perf_counter() - self.started) * 1000, 3),
        }


def _response(uid: str, allowed: bool, **extra: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": {"uid": uid, "allowed": allowed, **extra}}


def allowed(uid: str, warnings: list[str] | None = None) -> dict[str, Any]:
    return _response(uid, True, **({"warnings": warnings} if warnings else {}))


def patched(uid: str, ops: list[dict[str, Any]], warnings: list[str] | None = None) -> dict[str, Any]:
    if not ops:
        return allowed(uid, warnings)
    extra: dict[str, Any] = {"patchType": "JSONPatch", "patch": base64.b64encode(orjson.dumps(ops)).decode()}
    if warnings:
        extra["warnings"] = warnings
    return _response(uid, True, **extra)


def denied(uid: str, message: str, code: int = 400, warnings: list[str] | None = None) -> dict[str, Any]:
    status = {"code": code, "message": message, "reason": "BadRequest" if code == 400 else "InternalError"}
    return _response(uid, False, status=status, **({"warnings": warnings} if warnings else {}))


def _request(review: Any) -> dict[str, Any]:
    if not isinstance(review, dict):
        raise MalformedReview("the body must be a JSON object (an AdmissionReview)")
    if review.get("apiVersion") != API_VERSION or review.get("kind") != "AdmissionReview":
        raise MalformedReview(f"expected apiVersion {API_VERSION} and kind AdmissionReview")
    request = review.get("request")
    if not isinstance(request, dict):
        raise MalformedReview("the AdmissionReview has no request")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise MalformedReview("request.uid is missing")
    return request


def _pod_name(pod: dict[str, Any], request: dict[str, Any]) -> str:
    # Controller-made pods have no name yet at admission, only generateName.
    metadata = pod.get("metadata") if isinstance(pod.get("metadata"), dict) else {}
    return str(request.get("name") or metadata.get("name") or (metadata.get("generateName") or "") + "*")


def review(body: Any, config: InjectorConfig, decision: Decision) -> dict[str, Any]:
    """Answer one AdmissionReview. Raises MalformedReview only; everything else becomes an answer."""
    request = _request(body)
    uid = decision.uid = request["uid"]
    decision.operation = str(request.get("operation", ""))
    decision.namespace = str(request.get("namespace") or "")
    decision.dry_run = bool(request.get("dryRun"))
    kind = request.get("kind") if isinstance(request.get("kind"), dict) else {}
    is_pod = kind.get("kind") == "Pod" and not request.get("subResource")
    if not is_pod or decision.operation != "CREATE":
        # Only a pod's creation is ours to mutate; most of a pod cannot change after that.
        decision.reason = "not a pod CREATE"
        return allowed(uid)
    pod = request.get("object")
    if not isinstance(pod, dict):
        raise MalformedReview("request.object is missing or not an object")
    decision.pod = _pod_name(pod, request)
    try:
        result = inject(pod, config)
    except InvalidAnnotations as exc:
        decision.result, decision.reason = "denied", "invalid annotations"
        return denied(uid, f"podpatterns cannot inject this pod: {exc}", warnings=exc.warnings)
    except Exception as exc:  # a bug of ours must still answer, with the uid, and never hang
        decision.result, decision.reason = "error", f"{type(exc).__name__}"
        return denied(uid, f"podpatterns failed unexpectedly ({type(exc).__name__}); see the webhook's log", 500)
    decision.reason, decision.injected = result.reason, result.injected
    decision.warnings = list(result.warnings)
    decision.quiet = result.reason == NOTHING_ASKED and not result.warnings
    if not result.changed:
        return allowed(uid, decision.warnings)
    decision.result = "patched"
    return patched(uid, make_patch(pod, result.pod), decision.warnings)
