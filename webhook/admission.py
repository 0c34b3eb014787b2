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

from webhook import logs
from webhook.answer_cache import Answer, AnswerCache
from webhook.injection import NOTHING_ASKED, InjectorConfig, InvalidAnnotations, inject, skip_reason
from webhook.patch import make_patch

API_VERSION = "admission.k8s.io/v1"
NOT_A_POD_CREATE = "not a pod CREATE"


class MalformedReview(Exception):
    """Not an AdmissionReview we can answer; the message says what is wrong (HTTP 400)."""


@dataclass(slots=True)
class Decision:
    """What happened, for the structured log line and the metrics."""

    uid: str = ""
    operation: str = ""
    result: str = "allowed"  # allowed | patched | denied | error
    reason: str = ""
    injected: tuple[str, ...] = ()
    warnings: list[str] | tuple[str, ...] = ()
    started: float = field(default_factory=time.perf_counter)
    # A pod that carries none of our annotations: logged at debug (the metrics still count it), as
    # Istio logs the pods it skips; with the chart's matchConditions such pods never reach us anyway.
    quiet: bool = False
    # The request, read again only if the decision is logged (most no-op reviews are not).
    request: dict[str, Any] | None = None

    def log_fields(self) -> dict[str, Any]:
        request = self.request or {}
        pod = request.get("object") if self.reason != NOT_A_POD_CREATE else None
        return {
            "uid": self.uid,
            "namespace": str(request.get("namespace") or ""),
            "pod": _pod_name(pod, request) if isinstance(pod, dict) else "",
            "operation": self.operation,
            "decision": self.result,
            "reason": self.reason,
            "injected": list(self.injected),
            "dryRun": bool(request.get("dryRun")),
            "durationMs": round((time.perf_counter() - self.started) * 1000, 3),
        }


def _response(uid: str, allowed: bool, **extra: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": {"uid": uid, "allowed": allowed, **extra}}


def allowed(uid: str) -> dict[str, Any]:
    """Allowed unchanged: the answer to most reviews, so built without the general path's keyword merge."""
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": {"uid": uid, "allowed": True}}


def denied(uid: str, message: str, code: int = 400, warnings: list[str] | None = None) -> dict[str, Any]:
    return _response(uid, False, **_denial(message, code, warnings))


def _denial(message: str, code: int, warnings: list[str] | tuple[str, ...] | None) -> dict[str, Any]:
    status = {"code": code, "message": message, "reason": "BadRequest" if code == 400 else "InternalError"}
    return {"status": status, **({"warnings": list(warnings)} if warnings else {})}


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
    return str(request.get("name") or metadata.get("name") or f"{metadata.get('generateName') or ''}*")


def review(body: Any, config: InjectorConfig, decision: Decision, cache: AnswerCache | None = None) -> dict[str, Any]:
    """Answer one AdmissionReview. Raises MalformedReview only; everything else becomes an answer."""
    request = decision.request = _request(body)
    uid = decision.uid = request["uid"]
    operation = decision.operation = str(request.get("operation", ""))
    kind = request.get("kind")
    if operation != "CREATE" or not isinstance(kind, dict) or kind.get("kind") != "Pod" or request.get("subResource"):
        # Only a pod's creation is ours to mutate; most of a pod cannot change after that.
        decision.reason = NOT_A_POD_CREATE
        return allowed(uid)
    pod = request.get("object")
    if not isinstance(pod, dict):
        raise MalformedReview("request.object is missing or not an object")
    if (skip := skip_reason(pod)) is not None:  # most pods in an opted-in namespace, without matchConditions
        decision.reason, decision.quiet = skip, skip == NOTHING_ASKED
        return allowed(uid)
    key = _cache_key(pod) if cache is not None else None
    answer = cache.get(config, key) if cache is not None and key is not None else None
    if answer is None:
        try:
            answer = decide(pod, config)
        except Exception as exc:  # a bug of ours must still answer, with the uid, and never hang
            logs.get().exception("injection failed", extra={"fields": {"uid": uid}})
            decision.result, decision.reason = "error", f"{type(exc).__name__}"
            return denied(uid, f"podpatterns failed unexpectedly ({type(exc).__name__}); see the webhook's log", 500)
        if cache is not None and key is not None:
            cache.put(config, key, answer)
    decision.result, decision.reason = answer.result, answer.reason
    decision.injected, decision.warnings = answer.injected, list(answer.warnings)
    decision.quiet = answer.reason == NOTHING_ASKED and not answer.warnings
    # A copy of each field (one level holds them all: a patch string, a warnings list, a status of
    # scalars), so a caller that edits its answer cannot change the cached one.
    fields = {k: v.copy() if isinstance(v, list | dict) else v for k, v in answer.fields.items()}
    return _response(uid, answer.allowed, **fields)


def decide(pod: dict[str, Any], config: InjectorConfig) -> Answer:
    """The answer to a pod CREATE, without the uid: a patch, an allowance, or a denial naming every problem."""
    try:
        result = inject(pod, config)
    except InvalidAnnotations as exc:
        message = f"podpatterns cannot inject this pod: {exc}"
        return Answer(
            False, _denial(message, 400, exc.warnings), "denied", "invalid annotations", (), tuple(exc.warnings)
        )
    fields: dict[str, Any] = {}
    ops = make_patch(pod, result.pod) if result.changed else []
    if ops:
        fields = {"patchType": "JSONPatch", "patch": base64.b64encode(orjson.dumps(ops)).decode()}
    if result.warnings:
        fields["warnings"] = list(result.warnings)
    return Answer(True, fields, "patched" if ops else "allowed", result.reason, result.injected, result.warnings)


def _cache_key(pod: dict[str, Any]) -> bytes | None:
    # managedFields carry the second the controller wrote the pod, so replicas made a second apart differ
    # there alone; injection never reads them and the patch never touches them.
    metadata = pod.get("metadata")
    if isinstance(metadata, dict) and "managedFields" in metadata:
        pod = {**pod, "metadata": {k: v for k, v in metadata.items() if k != "managedFields"}}
    try:
        return orjson.dumps(pod)
    except orjson.JSONEncodeError:  # e.g. nesting deeper than orjson writes: answer it, just don't keep it
        return None
