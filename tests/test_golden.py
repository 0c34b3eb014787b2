"""Golden files: tests/golden/<case>.yaml -> <case>.injected.yaml, through the core and through HTTPS.

`REFRESH_GOLDEN=1 pytest tests/test_golden.py` rewrites the expected files; review the diff.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import GOLDEN, apply_answer, review_for, validate_pod
from webhook.injection import InjectorConfig, inject
from webhook.offline import _pod_slots, dump, inject_documents, load_documents

CASES = sorted(p for p in GOLDEN.glob("*.yaml") if p.name != "config.yaml" and not p.name.endswith(".injected.yaml"))


def expected_path(case: Path) -> Path:
    return case.with_name(case.stem + ".injected.yaml")


def pods(docs: list[Any]) -> list[dict[str, Any]]:
    return [parent[key] for index in range(len(docs)) for parent, key, _ in _pod_slots(docs, index)]


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_core_matches_golden(case: Path, golden_config: InjectorConfig) -> None:
    out, _warnings, errors = inject_documents(load_documents(case.read_text()), golden_config)
    assert errors == []
    got = dump(out)
    expected = expected_path(case)
    if os.environ.get("REFRESH_GOLDEN"):
        expected.write_text(got)
    assert expected.exists(), f"no golden output for {case.name}: run with REFRESH_GOLDEN=1 and review it"
    assert got == expected.read_text()


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_https_webhook_matches_golden(case: Path, client: httpx.Client) -> None:
    """The patch the real server returns, applied to the input pod, gives the golden pod."""
    inputs = pods(load_documents(case.read_text()))
    expected = pods(load_documents(expected_path(case).read_text()))
    assert len(inputs) == len(expected) >= 1
    for pod, want in zip(inputs, expected, strict=True):
        review = review_for(pod)
        response = client.post("/mutate?timeout=5s", json=review)
        assert response.status_code == 200
        answer = response.json()
        assert answer["response"]["allowed"] is True
        assert apply_answer(review, answer) == want


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_injected_pods_validate_against_kubernetes_schema(case: Path) -> None:
    for pod in pods(load_documents(expected_path(case).read_text())):
        validate_pod(pod)


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_injection_is_idempotent(case: Path, golden_config: InjectorConfig) -> None:
    for pod in pods(load_documents(case.read_text())):
        once = inject(copy.deepcopy(pod), golden_config).pod
        twice = inject(copy.deepcopy(once), golden_config)
        assert twice.pod == once
        assert not twice.changed


def test_every_feature_has_a_golden_case() -> None:
    text = "".join(case.read_text() for case in CASES)
    for key in (
        "tls-proxy:",
        "tls-proxy-client-ca",
        "tls-proxy-protocol: tcp",
        "tls-egress:",
        "tls-egress-client-cert",
        "tls-proxy-auth-url",
        "exporter:",
        "log-tail:",
        "init-wait-for:",
        "init-git-clone:",
        "init-templates:",
        "sidecar-templates:",
        "config-reload-url:",
        "config-reload-signal:",
        "cache: redis",
        'native-sidecars: "false"',
        "kind: Job",
        "kind: CronJob",
        "kind: Deployment",
        'inject: "false"',
        "podpatterns.io/status",
    ):
        assert key in text, f"no golden case uses {key}"
