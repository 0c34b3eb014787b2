"""The pure parts of `podpatterns check | audit | restart` (webhook/ops/), without a cluster: label
selectors, the chart's matchConditions in CEL, classification, owners, restart plans, the TLS check,
and the status fingerprint the core now writes. The cluster side is tests/node/test_day_two.py."""

from __future__ import annotations

import ast
import base64
import datetime as dt
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import yaml

from tests.helpers import ROOT
from webhook import __version__, certs
from webhook.injection import InjectorConfig, inject, parse_config
from webhook.injection.fingerprint import compute_fingerprint, config_fingerprint
from webhook.ops import conditions, selectors, tlscheck
from webhook.ops.audit import Row
from webhook.ops.classify import Installed, classify
from webhook.ops.kube import owner_of
from webhook.ops.restart import plan

CHART_NS_SELECTOR = {
    "matchExpressions": [
        {"key": "podpatterns.io/injection", "operator": "In", "values": ["enabled"]},
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "podpatterns-system"]},
    ]
}
CHART_CONDITION = {
    "name": "has-podpatterns-annotation",
    "expression": "has(object.metadata.annotations)"
    " && object.metadata.annotations.exists(k, k.startsWith('podpatterns.io/'))",
}
REQUEST = {"operation": "CREATE", "namespace": "apps"}


def pod(annotations: dict[str, str] | None = None, labels: dict[str, str] | None = None, **meta: object) -> dict:
    metadata: dict = {"name": "p", **meta}
    if annotations is not None:
        metadata["annotations"] = annotations
    if labels is not None:
        metadata["labels"] = labels
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"containers": [{"name": "app", "image": "busybox"}]},
    }


# --- selectors -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"podpatterns.io/injection": "enabled", "kubernetes.io/metadata.name": "apps"}, True),
        ({"podpatterns.io/injection": "disabled", "kubernetes.io/metadata.name": "apps"}, False),
        ({"kubernetes.io/metadata.name": "apps"}, False),
        ({"podpatterns.io/injection": "enabled", "kubernetes.io/metadata.name": "kube-system"}, False),
    ],
)
def test_the_charts_namespace_selector(labels: dict[str, str], expected: bool) -> None:
    assert selectors.matches(CHART_NS_SELECTOR, labels) is expected


def test_selector_operators_and_match_labels_as_the_api_server_reads_them() -> None:
    labels = {"a": "1", "b": "2"}
    assert selectors.matches(None, labels) and selectors.matches({}, {})
    assert selectors.matches({"matchLabels": {"a": "1"}}, labels)
    assert not selectors.matches({"matchLabels": {"a": "2"}}, labels)
    assert selectors.matches({"matchExpressions": [{"key": "c", "operator": "NotIn", "values": ["x"]}]}, labels)
    assert selectors.matches({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, labels)
    assert not selectors.matches({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, labels)
    with pytest.raises(ValueError, match="Gt"):
        selectors.matches({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["0"]}]}, labels)


def test_a_failed_requirement_says_what_was_wanted_and_what_is_there() -> None:
    (req, _name) = selectors.evaluate(CHART_NS_SELECTOR, {"kubernetes.io/metadata.name": "apps"})
    assert not req.matched
    assert req.describe({}) == "podpatterns.io/injection In [enabled]: no podpatterns.io/injection label"
    assert selectors.excluded_namespaces(CHART_NS_SELECTOR) == ("kube-system", "podpatterns-system")


# --- matchConditions in CEL --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [({"podpatterns.io/log-tail": "/x"}, True), ({"other": "x"}, False), (None, False)],
)
def test_the_charts_match_condition(annotations: dict[str, str] | None, expected: bool) -> None:
    (outcome,) = conditions.evaluate([CHART_CONDITION], pod(annotations), REQUEST)
    assert outcome.value is expected and outcome.name == "has-podpatterns-annotation"


def test_request_variables_and_unsupported_expressions() -> None:
    ok, undecided, broken = conditions.evaluate(
        [
            {"name": "create", "expression": "request.operation == 'CREATE'"},
            {"name": "authz", "expression": "authorizer.group('').resource('pods').check('get').allowed()"},
            {"name": "syntax", "expression": "object.metadata.("},
        ],
        pod(),
        REQUEST,
    )
    assert ok.value is True
    assert undecided.value is None and undecided.error
    assert broken.value is None and broken.error


# --- classification ----------------------------------------------------------------------------------------

CONFIG = InjectorConfig()
INSTALLED = Installed(version=__version__, fingerprint=config_fingerprint(CONFIG))


def injected(config: InjectorConfig = CONFIG) -> dict:
    return inject(pod({"podpatterns.io/log-tail": "/var/log/app.log"}), config).pod


def test_the_status_records_the_config_fingerprint_computed_once_per_config() -> None:
    status = orjson.loads(injected()["metadata"]["annotations"]["podpatterns.io/status"])
    assert status["config"] == compute_fingerprint(CONFIG) == CONFIG.fingerprint
    assert status["version"] == __version__
    assert "fingerprint" in CONFIG.__dict__  # cached on the frozen object: later pods cost a lookup


def test_classify_current_stale_missing_and_not_asked() -> None:
    other = parse_config({"waitFor": {"timeoutSeconds": 301}})
    assert classify(injected(), INSTALLED).state == "current"
    stale = classify(injected(other), INSTALLED)
    assert stale.state == "stale" and other.fingerprint in stale.reason and INSTALLED.fingerprint in stale.reason
    older = Installed(version="9.9.9", fingerprint=INSTALLED.fingerprint)
    assert classify(injected(), older).reason == f"injected by {__version__}, the webhook is 9.9.9"
    missing = classify(pod({"podpatterns.io/log-tail": "/x"}), INSTALLED)
    assert missing.state == "missing" and "log-tail" in missing.reason
    assert classify(pod(), INSTALLED).state == "not-asked"
    assert classify(pod({"podpatterns.io/log-tail": "/x", "podpatterns.io/inject": "false"}), INSTALLED).reason == (
        "opted out"
    )
    assert classify(pod({"podpatterns.io/log-tail": "/x"}, {"podpatterns.io/inject": "false"}), INSTALLED).state == (
        "not-asked"
    )


def test_a_status_without_a_fingerprint_is_stale() -> None:
    before = {"containers": [], "initContainers": [], "volumes": [], "features": ["log-tail"], "version": __version__}
    standing = classify(pod({"podpatterns.io/status": orjson.dumps(before).decode()}), INSTALLED)
    assert standing.state == "stale" and "did not record" in standing.reason


# --- owners and restart plans ------------------------------------------------------------------------------


def _owned(kind: str, name: str) -> dict:
    return {"metadata": {"name": name, "ownerReferences": [{"kind": kind, "name": name, "controller": True}]}}


def test_owner_follows_replicaset_to_deployment_and_job_to_cronjob() -> None:
    rs = {"web-5d9": {"metadata": {"ownerReferences": [{"kind": "Deployment", "name": "web", "controller": True}]}}}
    jobs = {
        "nightly-1": {"metadata": {"ownerReferences": [{"kind": "CronJob", "name": "nightly", "controller": True}]}}
    }
    assert owner_of(_owned("ReplicaSet", "web-5d9"), rs, jobs) == ("Deployment", "web")
    assert owner_of(_owned("ReplicaSet", "lone-rs"), rs, jobs) == ("ReplicaSet", "lone-rs")
    assert owner_of(_owned("Job", "nightly-1"), rs, jobs) == ("CronJob", "nightly")
    assert owner_of(_owned("StatefulSet", "db"), rs, jobs) == ("StatefulSet", "db")
    assert owner_of({"metadata": {}}, rs, jobs) is None


def test_restart_plan_rolls_each_workload_once_and_keeps_bare_pods_unless_asked() -> None:
    rows = [
        Row("a", "web-1", "Deployment/web", "stale", ""),
        Row("a", "web-2", "Deployment/web", "stale", ""),
        Row("a", "db-0", "StatefulSet/db", "missing", ""),
        Row("a", "ok-1", "Deployment/ok", "current", ""),
        Row("a", "solo", None, "stale", ""),
        Row("a", "job-x", "CronJob/nightly", "stale", ""),
    ]
    actions = {(a.target, a.action): a.pods for a in plan(rows, {"stale"}, delete_bare=False)}
    assert actions == {
        ("Deployment/web", "restart"): ["web-1", "web-2"],
        ("Pod/solo", "skip"): ["solo"],
        ("CronJob/nightly", "skip"): ["job-x"],
    }
    both = {(a.target, a.action) for a in plan(rows, {"stale", "missing"}, delete_bare=True)}
    assert ("Pod/solo", "delete") in both and ("StatefulSet/db", "restart") in both


# --- the TLS Secret fallback ---------------------------------------------------------------------------


def test_verify_pem_checks_issuer_name_and_dates(tmp_path: Path) -> None:
    paths = certs.write_certs(tmp_path, dns_names=["podpatterns.podpatterns-system.svc"], ip_addresses=[])
    bundle = base64.b64encode(paths.ca_crt.read_bytes()).decode()
    leaf = paths.tls_crt.read_bytes()
    good = tlscheck.verify_pem(leaf, bundle, "podpatterns.podpatterns-system.svc")
    assert good.verified and good.not_after and good.not_after > dt.datetime.now(dt.UTC)
    wrong_name = tlscheck.verify_pem(leaf, bundle, "other.podpatterns-system.svc")
    assert not wrong_name.verified and "does not name other.podpatterns-system.svc" in wrong_name.how
    other = certs.write_certs(tmp_path / "other", dns_names=["x"], ip_addresses=[])
    foreign = base64.b64encode(other.ca_crt.read_bytes()).decode()
    assert (
        "not signed by a CA in the caBundle"
        in tlscheck.verify_pem(leaf, foreign, "podpatterns.podpatterns-system.svc").how
    )


# --- the CLI without a cluster ------------------------------------------------------------------------------


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webhook", *args], capture_output=True, text=True, timeout=60, cwd=ROOT, env=env
    )


def test_no_kubeconfig_or_an_unreachable_cluster_is_a_message_and_exit_2(tmp_path: Path) -> None:
    missing = _cli("audit", "--kubeconfig", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    (tmp_path / "garbage").write_text("garbage: [")
    for unreadable in (tmp_path / "garbage", tmp_path):  # not YAML; a directory
        result = _cli("audit", "-A", "--kubeconfig", str(unreadable))
        assert result.returncode == 2 and "cannot read kubeconfig" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    for args in (["audit", "-A"], ["check", "-n", "a", "p"], ["restart", "--stale"]):
        result = _cli(*args, "--kubeconfig", str(kubeconfig))
        assert result.returncode == 2 and "cannot reach the API server" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_the_core_imports_no_edge_for_the_fingerprint() -> None:
    """The status fingerprint lives in the core; webhook/fingerprint.py re-exports it, never the reverse."""
    for module in sorted((ROOT / "webhook" / "injection").glob("*.py")):
        tree = ast.parse(module.read_text())
        imported = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        edges = {m for m in imported if m.startswith("webhook.") and not m.startswith("webhook.injection")}
        assert not edges, f"{module.name} imports {edges}"
