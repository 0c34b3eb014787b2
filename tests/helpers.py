"""Shared test helpers: build reviews, apply answers, validate pods against Kubernetes' own schema."""

from __future__ import annotations

import base64
import copy
import json
import uuid
from pathlib import Path
from typing import Any

import jsonpatch
import kubernetes_validate

ROOT = Path(__file__).resolve().parent.parent
SHARED_FIXTURES = Path(__file__).resolve().parent / "fixtures"
GOLDEN = Path(__file__).resolve().parent / "golden"
# The oldest Kubernetes with native sidecars on by default, and the one our fixtures were recorded on.
SCHEMA_VERSIONS = ("1.29.0", "1.36.0")


def validate_pod(pod: dict[str, Any]) -> None:
    """Strict OpenAPI validation: a misspelt or misplaced field fails, as kubectl --validate=strict would."""
    doc = {"apiVersion": "v1", "kind": "Pod", **{k: v for k, v in pod.items() if k not in ("apiVersion", "kind")}}
    doc.setdefault("metadata", {}).setdefault("name", "validated")
    for version in SCHEMA_VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)


def review_for(pod: dict[str, Any], *, operation: str = "CREATE", namespace: str = "shop") -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "tester"},
            "object": pod,
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


def apply_answer(review: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    """Check the answer's envelope and return the pod the API server would store."""
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    response = answer["response"]
    assert response["uid"] == review["request"]["uid"]
    pod = copy.deepcopy(review["request"]["object"])
    if "patch" in response:
        assert response["patchType"] == "JSONPatch"
        ops = json.loads(base64.b64decode(response["patch"]))
        assert ops, "a patch is only sent when there is something to change"
        pod = jsonpatch.apply_patch(pod, ops)
    else:
        assert "patchType" not in response
    return pod


def shared_review(name: str) -> dict[str, Any]:
    return json.loads((SHARED_FIXTURES / "admission-reviews" / name).read_text())
