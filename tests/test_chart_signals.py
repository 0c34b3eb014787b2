"""The chart's operating signals: ServiceMonitor, PrometheusRule, Grafana dashboard, NetworkPolicy.

- Every combination of the four toggles is linted (`helm lint --strict`, so values.schema.json) and
  rendered for the oldest and newest Kubernetes the chart supports; core objects are validated with
  kubernetes-validate in strict mode, the Prometheus Operator's kinds (no schema there) with strict JSON
  Schemas of the fields the chart uses (below), and both are checked for what they point at.
- The rules pass `promtool check rules`; `promtool test rules` (tests/promtool/alerts.test.yaml) makes
  every alert fire on synthetic series, not before its `for:`, and none on a healthy webhook.
- Every query of the dashboard and the rules parses (promtool) and names only metrics a live server's
  /metrics exposes, with rate()/increase() only over counters and histograms.
- The ServiceMonitor's TLS settings (CA from the rendered Secret, serverName) verify the real server.

promtool comes from Debian's `prometheus` package (.ci/setup.sh installs it); it is never mocked.
"""

from __future__ import annotations

import base64
import copy
import functools
import itertools
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import kubernetes_validate
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import shared_review
from tests.test_chart import (
    CHART,
    EXISTING,
    EXISTING_CA_PEM,
    FULLNAME,
    KUBE_LATEST,
    KUBE_MIN,
    NAMESPACE,
    RELEASE,
    SERVICE_DNS_NAMES,
    _ServiceConnection,
    one,
    run_helm,
    selector_matches,
)
from webhook.metrics import LATENCY_BUCKETS

Doc = dict[str, Any]
MONITORING_API = "monitoring.coreos.com/v1"
PROMTOOL_TESTS = Path(__file__).resolve().parent / "promtool"
# Metrics the rules and the dashboard read that are not ours: Prometheus' own and kube-state-metrics'.
EXTERNAL_METRICS = {"up", "kube_deployment_status_replicas_available"}
ALERTS = {
    "PodpatternsWebhookUnavailable",
    "PodpatternsWebhookTargetDown",
    "PodpatternsWebhookMetricsAbsent",
    "PodpatternsAdmissionErrors",
    "PodpatternsMalformedRequests",
    "PodpatternsAdmissionLatencyHigh",
    "PodpatternsCertificateExpiringSoon",
    "PodpatternsConfigReloadFailing",
}
TOGGLES: dict[str, Doc] = {
    "service-monitor": {"metrics": {"serviceMonitor": {"enabled": True}}},
    "prometheus-rule": {"metrics": {"prometheusRule": {"enabled": True}}},
    "dashboard": {"metrics": {"dashboard": {"enabled": True}}},
    "network-policy": {"networkPolicy": {"enabled": True}},
}
ALL_ON = {"metrics": {k: {"enabled": True} for k in ("serviceMonitor", "prometheusRule", "dashboard")}}
ALL_ON["networkPolicy"] = {"enabled": True}


def merge(*docs: Doc) -> Doc:
    out: Doc = {}
    for doc in docs:
        for key, value in doc.items():
            out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


COMBINATIONS = {
    "+".join(name for name, on in zip(TOGGLES, flags, strict=True) if on) or "none": merge(
        *(TOGGLES[name] for name, on in zip(TOGGLES, flags, strict=True) if on)
    )
    for flags in itertools.product([False, True], repeat=len(TOGGLES))
}


@functools.cache
def _render_cached(values_json: str, kube: str, api_versions: tuple[str, ...]) -> str:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", kube]
    for api in api_versions:
        args += ["--api-versions", api]
    with tempfile.TemporaryDirectory() as tmp:
        result = run_helm(*args, values=json.loads(values_json), tmp=Path(tmp))
    assert result.returncode == 0, f"helm template {values_json} ({kube}) failed:\n{result.stderr}"
    return result.stdout


def render(values: Doc, kube: str = KUBE_LATEST, api_versions: tuple[str, ...] = (MONITORING_API,)) -> list[Doc]:
    """helm template with the Prometheus Operator's API present (what a cluster with its CRDs reports)."""
    if values.get("certificates", {}).get("mode") == "cert-manager":
        api_versions = (*api_versions, "cert-manager.io/v1")
    text = _render_cached(json.dumps(values, sort_keys=True), kube, api_versions)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def kinds(docs: list[Doc]) -> list[str]:
    return sorted(d["kind"] for d in docs)


# --- strict shapes for the Prometheus Operator's kinds ---------------------------------------------
# kubernetes-validate has no schema for CRDs. These are written from the monitoring.coreos.com/v1 CRDs
# for the fields the chart uses, strict like `kubeconform -strict`: an unknown or misplaced field fails.

DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
METADATA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "namespace"],
    "properties": {
        "name": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
    },
}
LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": STRING_MAP,
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}
KEY_REF = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "key"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "key": {"type": "string"},
        "optional": {"type": "boolean"},
    },
}
RELABEL_ACTIONS = ("Replace", "Keep", "Drop", "HashMod", "LabelMap", "LabelDrop", "LabelKeep")
RELABEL_ACTIONS += ("Lowercase", "Uppercase", "KeepEqual", "DropEqual")
RELABEL = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "sourceLabels": {"type": "array", "items": {"type": "string"}},
        "separator": {"type": "string"},
        "targetLabel": {"type": "string"},
        "regex": {"type": "string"},
        "modulus": {"type": "integer"},
        "replacement": {"type": "string"},
        "action": {"enum": [*RELABEL_ACTIONS, *(action.lower() for action in RELABEL_ACTIONS)]},
    },
}
SERVICE_MONITOR = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": MONITORING_API},
        "kind": {"const": "ServiceMonitor"},
        "metadata": METADATA,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["endpoints", "selector"],
            "properties": {
                "selector": LABEL_SELECTOR,
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "jobLabel": {"type": "string"},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                            "interval": DURATION,
                            "scrapeTimeout": DURATION,
                            "honorLabels": {"type": "boolean"},
                            "tlsConfig": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "serverName": {"type": "string"},
                                    "insecureSkipVerify": {"type": "boolean"},
                                    "ca": {
                                        "type": "object",
                                        "additionalProperties": False,
                                        "minProperties": 1,
                                        "maxProperties": 1,
                                        "properties": {"secret": KEY_REF, "configMap": KEY_REF},
                                    },
                                },
                            },
                            "relabelings": {"type": "array", "items": RELABEL},
                            "metricRelabelings": {"type": "array", "items": RELABEL},
                        },
                    },
                },
            },
        },
    },
}
PROMETHEUS_RULE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": MONITORING_API},
        "kind": {"const": "PrometheusRule"},
        "metadata": METADATA,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["groups"],
            "properties": {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name", "rules"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": DURATION,
                            "rules": {
                                "type": "array",
                                "minItems": 1,
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["expr"],
                                    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                                    "properties": {
                                        "alert": {"type": "string", "minLength": 1},
                                        "record": {"type": "string", "minLength": 1},
                                        "expr": {"type": "string", "minLength": 1},
                                        "for": DURATION,
                                        "keep_firing_for": DURATION,
                                        "labels": STRING_MAP,
                                        "annotations": STRING_MAP,
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}
MONITORING_SCHEMAS = {"ServiceMonitor": SERVICE_MONITOR, "PrometheusRule": PROMETHEUS_RULE}
# Kubernetes' own label syntax (the OpenAPI schema does not check it; the API server does).
LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")


def validate_manifest(doc: Doc, kube: str) -> None:
    where = f"{doc['kind']}/{doc['metadata']['name']}"
    for key, value in (doc["metadata"].get("labels") or {}).items():
        assert LABEL_KEY.match(key) and LABEL_VALUE.match(str(value)), f"{where}: bad label {key}={value!r}"
    schema = MONITORING_SCHEMAS.get(doc["kind"])
    if schema is None:
        try:
            kubernetes_validate.validate(doc, kube, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{where} is not valid Kubernetes {kube}: {exc.message} at {list(exc.path)}")
        return
    try:
        jsonschema.validate(doc, schema)
    except jsonschema.ValidationError as exc:
        pytest.fail(f"{where} is not a valid {doc['kind']}: {exc.message} at {list(exc.absolute_path)}")
    # Its metadata through Kubernetes' own ObjectMeta schema, strictly.
    kubernetes_validate.validate(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]}, kube, strict=True
    )


def test_monitoring_shapes_are_not_a_no_op() -> None:
    """Guard for the schemas above: a misspelt or misplaced field is refused."""
    docs = render(ALL_ON)
    for kind, path, typo in (
        ("ServiceMonitor", ("spec", "endpoints", 0), "intervall"),
        ("ServiceMonitor", ("spec", "endpoints", 0, "tlsConfig"), "caFileName"),
        ("PrometheusRule", ("spec", "groups", 0, "rules", 0), "duration"),
        ("PrometheusRule", ("spec",), "rules"),
    ):
        doc = copy.deepcopy(one(docs, kind))
        target = doc
        for step in path:
            target = target[step]
        target[typo] = "1m"
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(doc, MONITORING_SCHEMAS[kind])
    bad_for = copy.deepcopy(one(docs, "PrometheusRule"))
    bad_for["spec"]["groups"][0]["rules"][0]["for"] = "2 minutes"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad_for, PROMETHEUS_RULE)


# --- every combination of the toggles ------------------------------------------------------------------


@pytest.mark.parametrize("combination", COMBINATIONS)
def test_every_combination_lints_strictly(combination: str, tmp_path: Path) -> None:
    values = COMBINATIONS[combination]
    result = run_helm("lint", "--strict", str(CHART), "--namespace", NAMESPACE, values=values, tmp=tmp_path)
    assert result.returncode == 0, f"helm lint --strict ({combination}):\n{result.stdout}{result.stderr}"
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


@pytest.mark.parametrize("kube", [KUBE_MIN, KUBE_LATEST])
@pytest.mark.parametrize("combination", COMBINATIONS)
def test_every_combination_renders_valid_manifests(combination: str, kube: str) -> None:
    values = COMBINATIONS[combination]
    docs = render(values, kube)
    for doc in docs:
        validate_manifest(doc, kube)
        if doc["kind"] not in ("MutatingWebhookConfiguration",):
            assert doc["metadata"].get("namespace") == NAMESPACE, doc["metadata"]["name"]
        annotations = doc["metadata"].get("annotations") or {}
        assert "helm.sh/resource-policy" not in annotations  # nothing outlives `helm uninstall`
    baseline = kinds(render({}, kube))
    expected = list(baseline)
    expected += ["ServiceMonitor"] if "service-monitor" in combination else []
    expected += ["PrometheusRule"] if "prometheus-rule" in combination else []
    expected += ["ConfigMap"] if "dashboard" in combination else []
    expected += ["NetworkPolicy"] if "network-policy" in combination else []
    assert kinds(docs) == sorted(expected)
    # The toggles add objects and change none of the others.
    added = {("ServiceMonitor", FULLNAME), ("PrometheusRule", FULLNAME), ("NetworkPolicy", FULLNAME)}
    added.add(("ConfigMap", f"{FULLNAME}-dashboard"))

    def rest(documents: list[Doc]) -> list[Doc]:
        kept = [d for d in documents if (d["kind"], d["metadata"]["name"]) not in added]
        for d in kept:  # helm mode generates new certificates on every render
            if d["kind"] == "Secret":
                d["data"] = sorted(d["data"])
            if d["kind"] == "MutatingWebhookConfiguration":
                d["webhooks"][0]["clientConfig"].pop("caBundle", None)
        return kept

    assert rest(copy.deepcopy(docs)) == rest(copy.deepcopy(render({}, kube)))


@pytest.mark.parametrize("toggle", ["serviceMonitor", "prometheusRule"])
def test_monitoring_objects_need_the_prometheus_operator_api(toggle: str, tmp_path: Path) -> None:
    values = {"metrics": {toggle: {"enabled": True}}}
    result = run_helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, values=values, tmp=tmp_path)
    assert result.returncode != 0
    assert f"metrics.{toggle}.enabled needs the Prometheus Operator's CRDs" in result.stderr


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"metrics": {"serviceMonitor": {"enable": True}}}, "enable"),
        ({"metrics": {"serviceMonitor": {"interval": "30 seconds"}}}, "interval"),
        ({"metrics": {"prometheusRule": {"latencyP99Seconds": 1}}}, "latencyP99Seconds"),
        ({"metrics": {"prometheusRule": {"latencyP99Seconds": 0}}}, "latencyP99Seconds"),
        ({"metrics": {"prometheusRule": {"certExpiryDays": 0}}}, "certExpiryDays"),
        ({"metrics": {"prometheusRule": {"seriesSelector": '{job="x"}'}}}, "seriesSelector"),
        ({"metrics": {"dashboard": {"label": ""}}}, "label"),
        ({"metrics": {"grafana": {}}}, "grafana"),
        ({"networkPolicy": {"webhookFrom": [{"ipBlok": {"cidr": "192.0.2.0/24"}}]}}, "ipBlok"),
        ({"networkPolicy": {"webhookFrom": [{}]}}, "webhookFrom"),
        (
            {"networkPolicy": {"metricsFrom": [{"ipBlock": {"cidr": "192.0.2.0/24"}, "podSelector": {}}]}},
            "metricsFrom",
        ),
        ({"networkPolicy": {"denyEgress": "yes"}}, "denyEgress"),
    ],
    ids=[
        "sm-typo",
        "sm-interval",
        "latency-at-the-largest-bucket",
        "latency-zero",
        "expiry-zero",
        "selector-braces",
        "dashboard-label",
        "metrics-typo",
        "peer-typo",
        "peer-empty",
        "peer-ipblock-and-selector",
        "deny-egress",
    ],
)
def test_signal_values_the_schema_does_not_allow_are_rejected(values: Doc, message: str, tmp_path: Path) -> None:
    for command in ("template", "lint"):
        result = run_helm(
            command, RELEASE if command == "template" else "--strict", str(CHART), values=values, tmp=tmp_path
        )
        assert result.returncode != 0, f"helm {command} accepted {values}"
        assert message in result.stdout + result.stderr


# Values that share the `# --` comment of the value right above them.
SHARED_COMMENTS = {"scrapeTimeout", "metricRelabelings", "labelValue"}


def undocumented_values(text: str, section_start: str = "metrics:") -> list[str]:
    """Leaf values from `section_start` on without a `# --` comment directly above them."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(section_start))
    leaf = re.compile(r"^\s+([A-Za-z]+): \S")
    missing = []
    for i in range(start, len(lines)):
        match = leaf.match(lines[i])
        if not match:
            continue
        j = i - 1
        if match.group(1) in SHARED_COMMENTS and leaf.match(lines[j]):
            j -= 1
        while lines[j].strip().startswith("#") and not lines[j].strip().startswith("# --"):
            j -= 1  # the comment's continuation lines
        if not lines[j].strip().startswith("# --"):
            missing.append(match.group(1))
    return missing


def test_every_signal_value_is_documented() -> None:
    """Like the rest of values.yaml: each value under metrics and networkPolicy has a `# --` comment."""
    assert undocumented_values((CHART / "values.yaml").read_text()) == []
    sample = "metrics:\n  a:\n    # -- Documented,\n    # on two lines.\n    enabled: false\n    labels: {}\n"
    assert undocumented_values(sample) == ["labels"]  # the checker is not a no-op


# --- the ServiceMonitor --------------------------------------------------------------------------------


CERT_MODES: dict[str, Doc] = {
    "helm": {},
    "cert-manager": {"certificates": {"mode": "cert-manager"}},
    "existing": {"certificates": {"mode": "existing", "existing": {k: v for k, v in EXISTING.items() if k != "mode"}}},
}


@pytest.mark.parametrize("mode", CERT_MODES)
def test_service_monitor_scrapes_the_webhook_service_over_https_with_its_ca(mode: str) -> None:
    docs = render(merge(CERT_MODES[mode], TOGGLES["service-monitor"]))
    for doc in docs:
        if doc["apiVersion"] != "cert-manager.io/v1":  # (those have tests/test_chart.py's own checks)
            validate_manifest(doc, KUBE_LATEST)
    monitor = one(docs, "ServiceMonitor")["spec"]
    service = one(docs, "Service")
    assert selector_matches(monitor["selector"], service["metadata"]["labels"])
    assert monitor["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert (endpoint["scheme"], endpoint["path"]) == ("https", "/metrics")
    assert (endpoint["interval"], endpoint["scrapeTimeout"]) == ("30s", "10s")
    tls = endpoint["tlsConfig"]
    assert tls["serverName"] == f"{FULLNAME}.{NAMESPACE}.svc" and tls["serverName"] in SERVICE_DNS_NAMES
    assert not tls.get("insecureSkipVerify")
    deployment_volumes = {v["name"]: v for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    served_secret = deployment_volumes["tls"]["secret"]["secretName"]
    if mode == "helm":
        assert tls["ca"] == {"secret": {"name": served_secret, "key": "ca.crt"}}
        assert "ca.crt" in one(docs, "Secret", served_secret)["data"]
    elif mode == "cert-manager":
        # The serving Certificate's Secret, where cert-manager's CA Issuer writes ca.crt.
        assert tls["ca"] == {"secret": {"name": served_secret, "key": "ca.crt"}}
        certificate = one(docs, "Certificate", served_secret)["spec"]
        assert certificate["secretName"] == served_secret
        assert "ca" in one(docs, "Issuer", certificate["issuerRef"]["name"])["spec"]
    else:
        ref = tls["ca"]["configMap"]
        assert ref["key"] == "ca.crt"
        assert one(docs, "ConfigMap", ref["name"])["data"]["ca.crt"].strip() == EXISTING_CA_PEM.strip()


def test_service_monitor_labels_interval_and_relabelings_are_configurable() -> None:
    relabel = [{"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node", "action": "replace"}]
    drop = [{"sourceLabels": ["__name__"], "regex": "podpatterns_answer_cache_.*", "action": "drop"}]
    values = {
        "metrics": {
            "serviceMonitor": {
                "enabled": True,
                "labels": {"release": "kube-prometheus-stack"},
                "interval": "1m",
                "scrapeTimeout": "15s",
                "relabelings": relabel,
                "metricRelabelings": drop,
            }
        }
    }
    doc = one(render(values), "ServiceMonitor")
    validate_manifest(doc, KUBE_LATEST)
    assert doc["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
    (endpoint,) = doc["spec"]["endpoints"]
    assert (endpoint["interval"], endpoint["scrapeTimeout"]) == ("1m", "15s")
    assert endpoint["relabelings"] == relabel and endpoint["metricRelabelings"] == drop


def test_service_monitor_tls_settings_verify_the_real_server(tmp_path: Path) -> None:
    """What Prometheus does: dial a pod, verify its certificate with the CA the ServiceMonitor names,
    under its serverName, and GET the path. The server runs with the rendered Secret and args."""
    docs = render(TOGGLES["service-monitor"])
    (endpoint,) = one(docs, "ServiceMonitor")["spec"]["endpoints"]
    ca_ref = endpoint["tlsConfig"]["ca"]["secret"]
    secret = {k: base64.b64decode(v) for k, v in one(docs, "Secret", ca_ref["name"])["data"].items()}
    container = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    tls_dir, config_dir = tmp_path / "tls", tmp_path / "config"
    tls_dir.mkdir()
    config_dir.mkdir()
    for name, data in secret.items():
        (tls_dir / name).write_bytes(data)
    (config_dir / "config.yaml").write_text(one(docs, "ConfigMap", FULLNAME)["data"]["config.yaml"])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = []
    for arg in container["args"]:
        arg = arg.replace("/etc/podpatterns/tls/", f"{tls_dir}/").replace("/etc/podpatterns/config/", f"{config_dir}/")
        if arg.startswith("--port="):
            arg = f"--port={port}"
        if arg.startswith("--host="):
            arg = "--host=127.0.0.1"  # loopback only in tests
        args.append(arg)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PODPATTERNS_")}
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "webhook", "serve", *args], stdout=out, stderr=out, env=env)
    try:
        context = ssl.create_default_context(cadata=secret[ca_ref["key"]].decode())
        deadline = time.monotonic() + 20
        while True:
            assert server.poll() is None, f"server exited:\n{log.read_text()}"
            try:
                connection = _ServiceConnection(endpoint["tlsConfig"]["serverName"], port, context)
                connection.request("GET", endpoint["path"])
                response = connection.getresponse()
                body = response.read().decode()
                connection.close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"/metrics never answered:\n{log.read_text()}"
                time.sleep(0.2)
        assert response.status == 200 and "podpatterns_build_info" in body
        # And a name the certificate does not carry is refused, so serverName really is checked.
        with pytest.raises(ssl.SSLCertVerificationError):
            connection = _ServiceConnection("prometheus.example.com", port, context)
            connection.request("GET", endpoint["path"])
    finally:
        server.terminate()
        server.wait(timeout=30)


# --- the PrometheusRule --------------------------------------------------------------------------------


@functools.cache
def _promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not on PATH: run `bash .ci/setup.sh` (apt-get install prometheus)")
    return promtool


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_promtool(), *args], capture_output=True, text=True, timeout=120, cwd=cwd, check=False)


def rule_groups(values: Doc | None = None) -> list[Doc]:
    return one(render(merge(TOGGLES["prometheus-rule"], values or {})), "PrometheusRule")["spec"]["groups"]


def rules_of(groups: list[Doc]) -> dict[str, Doc]:
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def write_rules(groups: list[Doc], path: Path) -> Path:
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False, width=1000))
    return path


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"certificates": {"mode": "cert-manager"}},
        {"webhook": {"failurePolicy": "Ignore"}, "validatingAdmissionPolicy": {"enabled": True}},
        {
            "metrics": {
                "prometheusRule": {
                    "ruleLabels": {"team": "platform"},
                    "seriesSelector": 'job="podpatterns", cluster="eu-1"',
                    "latencyP99Seconds": 0.05,
                    "certExpiryDays": 30,
                }
            }
        },
    ],
    ids=["defaults", "cert-manager", "fail-open", "customised"],
)
def test_promtool_check_rules_accepts_the_rendered_groups(values: Doc, tmp_path: Path) -> None:
    groups = rule_groups(values)
    result = promtool("check", "rules", str(write_rules(groups, tmp_path / "rules.yaml")))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout
    assert set(rules_of(groups)) == ALERTS


def test_promtool_check_rules_is_not_a_no_op(tmp_path: Path) -> None:
    groups = rule_groups()
    groups[0]["rules"][0]["expr"] = "sum(rate(podpatterns_admission_reviews_total[5m])"  # unbalanced
    result = promtool("check", "rules", str(write_rules(groups, tmp_path / "rules.yaml")))
    assert result.returncode != 0


def test_promtool_unit_tests_fire_every_alert_and_none_on_a_healthy_webhook(tmp_path: Path) -> None:
    write_rules(rule_groups(), tmp_path / "rules.yaml")
    shutil.copy(PROMTOOL_TESTS / "alerts.test.yaml", tmp_path / "alerts.test.yaml")
    result = promtool("test", "rules", "alerts.test.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_unit_tests_cover_every_alert_both_ways() -> None:
    """Each alert has a test where it fires and one where it must not; no test names a missing alert."""
    spec = yaml.safe_load((PROMTOOL_TESTS / "alerts.test.yaml").read_text())
    fires, quiet = set(), set()
    for test in spec["tests"]:
        for case in test["alert_rule_test"]:
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert fires == ALERTS, ALERTS - fires
    assert quiet == ALERTS, ALERTS - quiet
    healthy = spec["tests"][0]["alert_rule_test"]
    assert {case["alertname"] for case in healthy} == ALERTS and not any(case["exp_alerts"] for case in healthy)


def test_every_alert_has_for_severity_and_operator_text() -> None:
    for name, rule in rules_of(rule_groups()).items():
        assert rule.get("for"), name
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        for annotation in ("summary", "description", "runbook"):
            assert len(rule["annotations"].get(annotation, "")) > 20, (name, annotation)
    assert rules_of(rule_groups())["PodpatternsWebhookUnavailable"]["labels"]["severity"] == "critical"


def test_rules_select_the_service_monitors_job_and_take_overrides() -> None:
    rules = rules_of(rule_groups())
    default = f'job="{FULLNAME}", namespace="{NAMESPACE}"'
    for name, rule in rules.items():
        if name != "PodpatternsWebhookUnavailable":
            assert default in rule["expr"], name
    unavailable = rules["PodpatternsWebhookUnavailable"]["expr"]
    assert f'namespace="{NAMESPACE}", deployment="{FULLNAME}"' in unavailable
    assert "Fail" in rules["PodpatternsWebhookUnavailable"]["annotations"]["description"]
    custom = rules_of(
        rule_groups({"metrics": {"prometheusRule": {"seriesSelector": 'job="pp"', "ruleLabels": {"team": "x"}}}})
    )
    for name, rule in custom.items():
        assert rule["labels"]["team"] == "x"
        if name != "PodpatternsWebhookUnavailable":
            assert 'job="pp"' in rule["expr"] and default not in rule["expr"], name
    # ruleLabels add labels; the chart's severity stays.
    severities = rules_of(rule_groups({"metrics": {"prometheusRule": {"ruleLabels": {"severity": "info"}}}}))
    assert severities["PodpatternsWebhookUnavailable"]["labels"]["severity"] == "critical"


def _expiry_threshold(values: Doc) -> int:
    expr = rules_of(rule_groups(values))["PodpatternsCertificateExpiringSoon"]["expr"]
    match = re.search(r"- time\(\) < (\d+)$", expr)
    assert match, expr
    return int(match.group(1))


def test_certificate_expiry_threshold_follows_the_certificate_mode() -> None:
    assert _expiry_threshold({}) == 14 * 86400
    assert _expiry_threshold({"metrics": {"prometheusRule": {"certExpiryDays": 3}}}) == 3 * 86400
    # cert-manager's 7-day leaf is always within 14 days: there, alert when a renewal is overdue.
    cert_manager = {"certificates": {"mode": "cert-manager"}}
    assert _expiry_threshold(cert_manager) == 24 * 3600  # half of renewBefore 48h
    short = merge(cert_manager, {"certificates": {"certManager": {"duration": "2h", "renewBefore": "30m"}}})
    assert _expiry_threshold(short) == 15 * 60
    assert _expiry_threshold(merge(cert_manager, {"metrics": {"prometheusRule": {"certExpiryDays": 1}}})) == 86400
    expiring = rules_of(rule_groups(cert_manager))["PodpatternsCertificateExpiringSoon"]["annotations"]
    assert "(alert below 24 hours)" in expiring["description"] and "cert-manager" in expiring["runbook"]
    expiring = rules_of(rule_groups(short))["PodpatternsCertificateExpiringSoon"]["annotations"]
    assert "(alert below 15 minutes)" in expiring["description"]


def test_latency_threshold_stays_below_the_largest_finite_bucket() -> None:
    """histogram_quantile cannot report more than the largest finite bucket: a higher threshold never fires."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    latency = schema["properties"]["metrics"]["properties"]["prometheusRule"]["properties"]["latencyP99Seconds"]
    assert latency["exclusiveMaximum"] == LATENCY_BUCKETS[-1]
    default = yaml.safe_load((CHART / "values.yaml").read_text())["metrics"]["prometheusRule"]["latencyP99Seconds"]
    assert 0 < default < LATENCY_BUCKETS[-1] and default in LATENCY_BUCKETS  # on a bucket edge: no interpolation


# --- the dashboard -------------------------------------------------------------------------------------


DASHBOARD_FILE = CHART / "dashboards" / "podpatterns.json"


def dashboard() -> Doc:
    return json.loads(DASHBOARD_FILE.read_text())


def test_dashboard_config_map_is_labelled_for_the_grafana_sidecar() -> None:
    docs = render(TOGGLES["dashboard"])
    config_map = one(docs, "ConfigMap", f"{FULLNAME}-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == NAMESPACE
    assert json.loads(config_map["data"]["podpatterns.json"]) == dashboard()
    custom = {
        "metrics": {
            "dashboard": {
                "enabled": True,
                "label": "grafana.com/dashboard",
                "labelValue": "podpatterns",
                "namespace": "monitoring",
                "annotations": {"grafana_folder": "Platform"},
            }
        }
    }
    config_map = one(render(custom), "ConfigMap", f"{FULLNAME}-dashboard")
    validate_manifest(config_map, KUBE_LATEST)
    assert config_map["metadata"]["labels"]["grafana.com/dashboard"] == "podpatterns"
    assert "grafana_dashboard" not in config_map["metadata"]["labels"]
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "Platform"}


def panel_targets(board: Doc) -> list[tuple[str, Doc]]:
    return [(panel["title"], target) for panel in board["panels"] for target in panel.get("targets", [])]


def test_dashboard_is_well_formed() -> None:
    board = dashboard()
    assert board["uid"] and board["title"] and isinstance(board["schemaVersion"], int)
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"] and target["expr"].strip()
            # Every variable a query uses is defined (or one of Grafana's own).
            for variable in re.findall(r"\$(\w+)", target["expr"]):
                assert variable in variables or variable in {"__rate_interval", "__range"}, (panel["title"], variable)
    titles = " | ".join(panel["title"] for panel in board["panels"]).lower()
    for wanted in ("by result", "latency", "by feature", "denials", "certificate days left", "config reloads"):
        assert wanted in titles, wanted


def grafana_to_promql(expr: str) -> str:
    """A dashboard query as Prometheus would receive it from Grafana."""
    for variable, value in (
        ("$__rate_interval", "2m"),
        ("$__range", "6h"),
        ("$namespace", NAMESPACE),
        ("$job", FULLNAME),
    ):
        expr = expr.replace(variable, value)
    return expr


def dashboard_queries() -> list[tuple[str, str]]:
    board = dashboard()
    queries = [(title, grafana_to_promql(target["expr"])) for title, target in panel_targets(board)]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":  # label_values(<series selector>, <label>): the selector is PromQL
            match = re.fullmatch(r"label_values\((.+), *\w+\)", variable["query"]["query"])
            assert match, variable["query"]
            queries.append((f"variable {variable['name']}", grafana_to_promql(match.group(1))))
    return queries


def rule_queries() -> list[tuple[str, str]]:
    return [(name, rule["expr"]) for name, rule in rules_of(rule_groups()).items()]


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query (as a recording rule) the way Prometheus will."""
    rules = [{"record": f"dashboard:query_{n}", "expr": expr} for n, (_title, expr) in enumerate(dashboard_queries())]
    path = write_rules([{"name": "dashboard", "rules": rules}], tmp_path / "dashboard.rules.yaml")
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


# PromQL outside string literals, label matchers and ranges: identifiers are then functions (before a
# parenthesis), keywords, labels of a grouping clause, or metric names.
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(\s*\()?")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right"}
_KEYWORDS |= {"inf", "nan", "Inf", "NaN"}
_RATED = re.compile(r"\b(?:rate|irate|increase)\(\s*([A-Za-z_:][\w:]*)")


def metric_names(expr: str) -> set[str]:
    text = _GROUPING.sub(" ", _RANGE.sub("[]", _MATCHERS.sub("{}", _STRING.sub('""', expr))))
    names = set()
    for name, call in _IDENTIFIER.findall(text):
        if not call and name not in _KEYWORDS:
            names.add(name)
    return names


def test_metric_name_extraction() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, job) (rate(podpatterns_admission_duration_seconds_bucket{job="x",'
        ' le!="podpatterns_fake"}[5m]))) > 0.25 or on (pod) up{job="y"} == bool 1e3 unless absent(other_total)'
    )
    assert metric_names(expr) == {"podpatterns_admission_duration_seconds_bucket", "up", "other_total"}


def exposed_metrics(client: httpx.Client) -> dict[str, str]:
    """Sample name -> the type of its family, from /metrics after a review of each kind."""
    review = shared_review("deployment-elasticsearch.json")
    assert client.post("/mutate", json=review).json()["response"]["allowed"] is True  # patched: an injection
    assert client.post("/mutate", content=b"{}", headers={"Content-Type": "text/plain"}).status_code == 415
    types = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            types[sample.name] = family.type
    return types


def test_dashboard_and_alerts_name_only_metrics_the_server_exposes(client: httpx.Client) -> None:
    types = exposed_metrics(client)
    used: dict[str, set[str]] = {}
    for where, expr in [*dashboard_queries(), *rule_queries()]:
        names = metric_names(expr)
        assert names, (where, expr)
        for name in names:
            used.setdefault(name, set()).add(where)
        for name in _RATED.findall(expr):  # rate() and increase() only over counters and histograms
            assert types.get(name) in ("counter", "histogram") or name in EXTERNAL_METRICS, (where, name)
    ours = {name for name in used if name.startswith("podpatterns_")}
    missing = {name: sorted(used[name]) for name in ours if name not in types}
    assert not missing, f"queries name metrics /metrics does not expose: {missing}"
    assert set(used) - ours <= EXTERNAL_METRICS, set(used) - ours - EXTERNAL_METRICS
    # What the issue asks the dashboard and the alerts to show is really read.
    for wanted in (
        "podpatterns_admission_reviews_total",
        "podpatterns_admission_duration_seconds_bucket",
        "podpatterns_injections_total",
        "podpatterns_denials_total",
        "podpatterns_malformed_requests_total",
        "podpatterns_tls_cert_expiry_timestamp_seconds",
        "podpatterns_config_reloads_total",
        "podpatterns_config_reload_failures_total",
        "podpatterns_config_info",
        "podpatterns_admission_requests_in_flight",
    ):
        assert wanted in used, wanted


# --- the NetworkPolicy ---------------------------------------------------------------------------------


def network_policy(values: Doc | None = None) -> tuple[Doc, list[Doc]]:
    docs = render(merge(TOGGLES["network-policy"], values or {}))
    policy = one(docs, "NetworkPolicy")
    validate_manifest(policy, KUBE_LATEST)
    return policy, docs


def test_network_policy_admits_anyone_to_the_https_port_only_and_denies_egress() -> None:
    policy, docs = network_policy()
    spec = policy["spec"]
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert selector_matches(spec["podSelector"], pod_labels)
    assert not selector_matches(spec["podSelector"], {"app.kubernetes.io/name": "shop"})
    assert spec["policyTypes"] == ["Ingress", "Egress"] and "egress" not in spec  # no egress at all
    # One rule: the container's HTTPS port (where the Service sends the API server and Prometheus), from
    # any source, since the API server's address is not selectable by pod or namespace.
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    (port,) = container["ports"]
    assert spec["ingress"] == [{"ports": [{"port": port["containerPort"], "protocol": "TCP"}]}]
    service_port = one(docs, "Service")["spec"]["ports"][0]
    assert service_port["targetPort"] == port["name"]


def test_network_policy_follows_the_server_port_and_can_allow_egress() -> None:
    policy, _ = network_policy({"server": {"port": 10250}, "networkPolicy": {"denyEgress": False}})
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": 10250, "protocol": "TCP"}]
    assert policy["spec"]["policyTypes"] == ["Ingress"]


def test_network_policy_restricted_sources_keep_helm_test_and_admit_prometheus_to_the_same_port() -> None:
    control_plane = [{"ipBlock": {"cidr": "192.0.2.0/24"}}]
    monitoring = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    policy, docs = network_policy({"networkPolicy": {"webhookFrom": control_plane, "metricsFrom": monitoring}})
    webhook_rule, metrics_rule = policy["spec"]["ingress"]
    assert webhook_rule["ports"] == metrics_rule["ports"] == [{"port": 8443, "protocol": "TCP"}]
    assert webhook_rule["from"][:-1] == control_plane
    (release_pods,) = webhook_rule["from"][-1:]
    assert set(release_pods) == {"podSelector"}  # this namespace only
    # `helm test` still reaches /readyz through the Service.
    assert selector_matches(release_pods["podSelector"], one(docs, "Pod")["metadata"]["labels"])
    assert not selector_matches(release_pods["podSelector"], {"app": "shop"})
    assert metrics_rule["from"] == monitoring
    # metricsFrom alone adds its rule beside the default one, which already admits everyone.
    policy, _ = network_policy({"networkPolicy": {"metricsFrom": monitoring}})
    assert [("from" in rule) for rule in policy["spec"]["ingress"]] == [False, True]


# --- what NOTES.txt warns about ------------------------------------------------------------------------


def render_notes(values: Doc, tmp_path: Path) -> str:
    """NOTES.txt rendered with the Prometheus Operator's API present. `helm install --dry-run` cannot be told
    about API versions and `helm template` skips NOTES, so a copy of the chart renders it as a template."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "_notes.tpl").write_text('{{- define "test.notes" -}}\n' + notes + "{{- end }}\n")
    (chart / "templates" / "notes.yaml").write_text('notes: {{ include "test.notes" . | toJson }}\n')
    args = ["template", RELEASE, str(chart), "--namespace", NAMESPACE, "--api-versions", MONITORING_API]
    result = run_helm(*args, "--show-only", "templates/notes.yaml", values=values, tmp=tmp_path)
    assert result.returncode == 0, result.stderr
    return str(yaml.safe_load(result.stdout)["notes"])


def test_notes_warn_about_per_worker_metrics_and_a_policy_that_shuts_prometheus_out(tmp_path: Path) -> None:
    scraped = TOGGLES["service-monitor"]
    assert "WARNING" not in render_notes(scraped, tmp_path / "a")
    assert "WARNING: server.workers is 3" in render_notes(merge(scraped, {"server": {"workers": 3}}), tmp_path / "b")
    restricted = merge(
        scraped, {"networkPolicy": {"enabled": True, "webhookFrom": [{"ipBlock": {"cidr": "192.0.2.0/24"}}]}}
    )
    assert "networkPolicy.metricsFrom is empty" in render_notes(restricted, tmp_path / "c")
    monitoring = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    admitted = merge(restricted, {"networkPolicy": {"metricsFrom": monitoring}})
    assert "WARNING" not in render_notes(admitted, tmp_path / "d")
