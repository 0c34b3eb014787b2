"""Where a pod stands against the installed webhook: current, stale, missing or not-asked. Pure: the
installed version and config fingerprint come from the objects the chart installs (kube.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from webhook.injection import annotations as keys
from webhook.injection import skip_reason

CURRENT, STALE, MISSING, NOT_ASKED = "current", "stale", "missing", "not-asked"
STATES = (CURRENT, STALE, MISSING, NOT_ASKED)


@dataclass(frozen=True)
class Installed:
    """What the installed webhook would write into a status annotation today."""

    version: str | None  # app.kubernetes.io/version of the webhook's Deployment
    fingerprint: str | None  # of the injector ConfigMap's config.yaml


@dataclass(frozen=True)
class Standing:
    state: str
    reason: str
    status: dict[str, Any] | None = None  # the parsed status annotation, when there is one


def read_status(annotations: Mapping[str, str]) -> dict[str, Any] | None:
    raw = annotations.get(keys.STATUS)
    if raw is None:
        return None
    try:
        status = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return status if isinstance(status, dict) else {}


def classify(pod: Mapping[str, Any], installed: Installed) -> Standing:
    metadata = pod.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    status = read_status(annotations)
    if status is not None:
        version, config = status.get("version"), status.get("config")
        features = ", ".join(status.get("features") or []) or "nothing"
        if installed.version and version != installed.version:
            return Standing(
                STALE, f"injected by {version or 'an unknown version'}, the webhook is {installed.version}", status
            )
        if installed.fingerprint and config != installed.fingerprint:
            was = f"config {config}" if config else "a config it did not record"
            return Standing(STALE, f"injected under {was}, the webhook runs config {installed.fingerprint}", status)
        return Standing(CURRENT, f"injected {features} by {version} under config {config}", status)
    skipped = skip_reason(dict(pod))
    if skipped is not None:
        return Standing(NOT_ASKED, skipped)
    if not keys.wants_injection(annotations):
        return Standing(NOT_ASKED, "no podpatterns feature annotation")
    asked = ", ".join(k.removeprefix(keys.PREFIX) for k in keys.FEATURE_KEYS if k in annotations)
    return Standing(MISSING, f"asks for {asked} but has no {keys.STATUS} (created while the webhook did not see it)")
