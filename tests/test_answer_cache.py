"""The answer cache: replicas of one template get the first replica's answer, and nothing else does."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest

from tests.helpers import review_for, shared_review
from webhook import admission
from webhook.answer_cache import MAX_POD_BYTES, Answer, AnswerCache
from webhook.injection import InjectorConfig, load_config

CONFIG = load_config(None)


def replica(review: dict[str, Any], n: int, second: int = 6) -> dict[str, Any]:
    """The review of the n-th replica of the same template, as the API server sends it."""
    again = copy.deepcopy(review)
    again["request"]["uid"] = f"{review['request']['uid'][:-4]}{n:04d}"
    for entry in again["request"]["object"]["metadata"].get("managedFields", []):
        entry["time"] = f"2026-11-26T19:49:{second:02d}Z"  # written a few seconds apart
    return again


def answer(review: dict[str, Any], cache: AnswerCache) -> tuple[dict[str, Any], admission.Decision]:
    decision = admission.Decision()
    return admission.review(review, CONFIG, decision, cache), decision


def test_replicas_of_one_template_get_the_first_answer_under_their_own_uid() -> None:
    cache = AnswerCache()
    first = shared_review("deployment-elasticsearch.json")
    uncached = admission.review(copy.deepcopy(first), CONFIG, admission.Decision())
    answers = [answer(replica(first, n, second=n), cache) for n in range(3)]
    assert (cache.misses, cache.hits, len(cache)) == (1, 2, 1)
    for n, (got, decision) in enumerate(answers):
        assert got["response"]["uid"].endswith(f"{n:04d}")
        assert {**got["response"], "uid": ""} == {**uncached["response"], "uid": ""}
        assert (decision.result, decision.injected) == ("patched", ("tls-proxy", "exporter", "log-tail"))
        assert decision.uid == got["response"]["uid"]


def test_a_pod_that_differs_anywhere_else_is_answered_afresh() -> None:
    cache = AnswerCache()
    first = shared_review("deployment-elasticsearch.json")
    answer(first, cache)
    other = replica(first, 1)
    other["request"]["object"]["spec"]["containers"][0]["ports"][0]["containerPort"] = 9201
    got, _ = answer(other, cache)
    assert (cache.misses, cache.hits) == (2, 0)
    assert got["response"]["patch"] != answer(first, cache)[0]["response"]["patch"]


def denied_pod() -> dict[str, Any]:
    """A pod whose tls-proxy Secret name is invalid (denied), with an unknown key (a warning)."""
    return {
        "metadata": {
            "generateName": "web-",
            "annotations": {"podpatterns.io/tls-proxy": "Bad_Name", "podpatterns.io/x": "1"},
        },
        "spec": {"containers": [{"name": "app", "image": "nginx", "ports": [{"containerPort": 80}]}]},
    }


def test_a_denial_is_replayed_with_its_message_and_warnings() -> None:
    cache = AnswerCache()
    pod = denied_pod()
    denials = [answer(review_for(copy.deepcopy(pod)), cache) for _ in range(2)]
    assert cache.hits == 1
    (a, da), (b, db) = denials
    assert a["response"]["allowed"] is False and "podpatterns.io/tls-proxy" in a["response"]["status"]["message"]
    assert {**a["response"], "uid": ""} == {**b["response"], "uid": ""}
    assert da.result == db.result == "denied" and da.warnings == db.warnings and db.warnings


def test_a_reloaded_config_empties_the_cache() -> None:
    cache = AnswerCache()
    first = shared_review("deployment-elasticsearch.json")
    answer(first, cache)
    other_config = InjectorConfig.model_validate({"logTail": {"image": "registry.example.com/busybox:9"}})
    got = admission.review(replica(first, 1), other_config, admission.Decision(), cache)
    assert cache.hits == 0 and len(cache) == 1
    assert b"registry.example.com/busybox:9" in base64.b64decode(got["response"]["patch"])


def test_pods_without_our_annotations_and_huge_pods_are_not_kept() -> None:
    cache = AnswerCache()
    answer(shared_review("pod-plain.json"), cache)
    big = shared_review("pod-big-1500-env.json")
    big["request"]["object"]["spec"]["containers"][0]["env"].append({"name": "PAD", "value": "x" * MAX_POD_BYTES})
    got, _ = answer(big, cache)
    assert got["response"]["patch"] and len(cache) == 0
    answer(shared_review("statefulset-web-0.json"), cache)
    assert len(cache) == 1


def test_the_cache_is_bounded_in_entries_and_bytes() -> None:
    def entry(n: int, patch_bytes: int) -> tuple[bytes, Answer]:
        fields = {"patchType": "JSONPatch", "patch": "x" * patch_bytes}
        return f'{{"pod":{n}}}'.encode(), Answer(True, fields, "patched", "injected", (), ())

    by_count = AnswerCache(max_entries=3, max_bytes=10**9)
    by_bytes = AnswerCache(max_entries=100, max_bytes=3_000)
    for n in range(10):
        for cache in (by_count, by_bytes):
            cache.get(CONFIG, b"")  # binds the cache to this config
            cache.put(CONFIG, *entry(n, 1_000))
    assert len(by_count) == 3 and len(by_bytes) == 2
    assert by_count.get(CONFIG, entry(9, 0)[0]) and not by_count.get(CONFIG, entry(0, 0)[0])  # oldest out first


def test_editing_a_returned_answer_does_not_change_the_next_replicas() -> None:
    cache = AnswerCache()
    pod = denied_pod()
    first, _ = answer(review_for(copy.deepcopy(pod)), cache)
    expected = copy.deepcopy(first["response"])
    first["response"]["warnings"].append("edited")
    first["response"]["status"]["message"] = "edited"
    second, _ = answer(review_for(copy.deepcopy(pod)), cache)
    assert cache.hits == 1
    assert {**second["response"], "uid": ""} == {**expected, "uid": ""}


def test_what_only_the_envelope_or_managed_fields_change_gets_the_same_answer() -> None:
    cache = AnswerCache()
    first = shared_review("deployment-elasticsearch.json")
    answer(first, cache)
    variants = []
    for change in ("namespace", "dryRun", "name", "managedFields"):
        again = replica(first, len(variants) + 1)
        if change == "managedFields":
            del again["request"]["object"]["metadata"]["managedFields"]
        else:
            again["request"][change] = {"namespace": "other", "dryRun": True, "name": "web-x"}[change]
        variants.append(answer(again, cache)[0])
    assert cache.hits == 4
    patches = {v["response"]["patch"] for v in variants}
    assert len(patches) == 1


def test_a_hit_keeps_an_answer_from_being_evicted_first() -> None:
    cache = AnswerCache(max_entries=2)
    cache.get(CONFIG, b"")
    older, newer, newest = b'{"pod":1}', b'{"pod":2}', b'{"pod":3}'
    for key in (older, newer):
        cache.put(CONFIG, key, Answer(True, {}, "allowed", "x", (), ()))
    assert cache.get(CONFIG, older)  # now the most recently used
    cache.put(CONFIG, newest, Answer(True, {}, "allowed", "x", (), ()))
    assert cache.get(CONFIG, older) and not cache.get(CONFIG, newer)


def test_the_byte_bound_counts_warnings_and_denial_messages() -> None:
    cache = AnswerCache(max_entries=100, max_bytes=20_000)
    cache.get(CONFIG, b"")
    warnings = ("w" * 1_000,) * 5
    for n in range(10):
        fields = {"status": {"code": 400, "message": "m" * 1_000}, "warnings": list(warnings)}
        cache.put(CONFIG, f'{{"pod":{n}}}'.encode(), Answer(False, fields, "denied", "x", (), warnings))
    assert len(cache) == 3  # each entry holds about 6 KB of messages


def test_unanswerable_keys_and_errors_are_not_kept(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cache = AnswerCache()
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(300):  # deeper than orjson writes: no key, answered all the same
        node["x"] = {}
        node = node["x"]
    review = shared_review("deployment-elasticsearch.json")
    review["request"]["object"]["metadata"]["annotations"]["deep"] = deep  # type: ignore[assignment]
    got, _ = answer(review, cache)
    assert got["response"]["patch"] and len(cache) == 0  # injected (the key is not ours), not kept

    calls = []

    def flaky(pod: dict[str, Any], config: InjectorConfig) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug of ours")
        return real_inject(pod, config)

    real_inject = admission.inject
    monkeypatch.setattr(admission, "inject", flaky)
    first = shared_review("deployment-elasticsearch.json")
    failed, decision = answer(first, cache)
    assert failed["response"]["status"]["code"] == 500 and decision.result == "error"
    logged = [r for r in caplog.records if r.getMessage() == "injection failed"]
    assert logged and logged[0].exc_info and "a bug of ours" in str(logged[0].exc_info[1])  # the traceback
    retried, decision = answer(replica(first, 1), cache)
    assert decision.result == "patched" and retried["response"]["patch"] and len(calls) == 2


def test_pods_that_ask_for_nothing_are_answered_without_the_cache() -> None:
    cache = AnswerCache()
    opted_out = shared_review("pod-plain.json")
    opted_out["request"]["object"]["metadata"]["labels"] = {"podpatterns.io/inject": "false"}
    got, decision = answer(opted_out, cache)
    assert got["response"] == {"uid": opted_out["request"]["uid"], "allowed": True}
    assert (decision.reason, decision.quiet) == ("opted out", False)
    _, decision = answer(shared_review("pod-plain.json"), cache)
    assert (decision.reason, decision.quiet) == ("no podpatterns annotation", True)
    assert cache.hits == cache.misses == len(cache) == 0


def test_thousands_of_unknown_keys_get_a_bounded_answer() -> None:
    """Each hint is a fuzzy match against every known key: only the first ten keys get one (3,000 took 0.8 s)."""
    review = shared_review("deployment-elasticsearch.json")
    annotations = review["request"]["object"]["metadata"]["annotations"]
    annotations.update({f"podpatterns.io/unknown-key-{n:05d}": "x" for n in range(3_000)})
    got, _ = answer(review, AnswerCache())
    unknown = [w for w in got["response"]["warnings"] if "unknown" in w]
    assert len(unknown) == 11 and unknown[-1] == "and 2990 more unknown podpatterns.io/ annotations"
