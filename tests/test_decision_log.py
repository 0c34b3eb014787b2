"""The fields of the decision log line, read from the request only when a line is written."""

from __future__ import annotations

from tests.helpers import review_for, shared_review
from webhook import admission
from webhook.injection import load_config

CONFIG = load_config(None)


def fields(review: dict) -> dict:
    decision = admission.Decision()
    admission.review(review, CONFIG, decision)
    return decision.log_fields()


def test_a_replica_is_named_by_its_generate_name() -> None:
    logged = fields(shared_review("deployment-elasticsearch.json"))
    assert logged["pod"] == "elasticsearch-677995fccc-*" and logged["namespace"] == "shop"
    assert logged["decision"] == "patched" and logged["injected"] == ["tls-proxy", "exporter", "log-tail"]
    assert logged["dryRun"] is False and logged["durationMs"] >= 0


def test_a_dry_run_and_a_named_pod() -> None:
    logged = fields(shared_review("pod-dry-run.json"))
    assert logged["dryRun"] is True and logged["pod"] and not logged["pod"].endswith("*")


def test_what_is_not_a_pod_create_names_no_pod() -> None:
    review = review_for({"metadata": {"name": "web"}, "spec": {}})
    review["request"]["kind"] = {"group": "apps", "version": "v1", "kind": "Deployment"}
    logged = fields(review)
    assert (logged["pod"], logged["reason"], logged["operation"]) == ("", "not a pod CREATE", "CREATE")


def test_an_odd_generate_name_does_not_break_the_line() -> None:
    logged = fields(review_for({"metadata": {"generateName": 7}, "spec": {"containers": []}}))
    assert logged["pod"] == "7*"
