"""Every invalid annotation is denied with a message naming the annotation, its value and what is expected."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest

from tests.helpers import review_for
from webhook.injection import InjectorConfig, InvalidAnnotations, inject

P = "podpatterns.io/"


def pod(annotations: dict[str, str], volumes: list[Any] | None = None, **container: Any) -> dict[str, Any]:
    app = {"name": "app", "image": "registry.example.com/app:1", "ports": [{"containerPort": 8080, "name": "http"}]}
    app.update(container)
    spec: dict[str, Any] = {"containers": [app]}
    if volumes:
        spec["volumes"] = volumes
    return {"metadata": {"name": "p", "annotations": annotations}, "spec": spec}


# (case id, pod, the annotation the message must name, a phrase of what is expected)
CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("secret-name", pod({P + "tls-proxy": "Bad_Name"}), P + "tls-proxy", "name of a Secret"),
    ("no-ports", pod({P + "tls-proxy": "t"}, ports=[]), P + "tls-proxy", "declares 0 ports"),
    (
        "two-ports",
        pod({P + "tls-proxy": "t"}, ports=[{"containerPort": 1}, {"containerPort": 2}]),
        P + "tls-proxy",
        "tls-proxy-port",
    ),
    ("port-range", pod({P + "tls-proxy": "t", P + "tls-proxy-port": "70000"}), P + "tls-proxy-port", "1 to 65535"),
    ("port-name", pod({P + "tls-proxy": "t", P + "tls-proxy-port": "grpc"}), P + "tls-proxy-port", "no port named"),
    (
        "port-injection",
        pod({P + "tls-proxy": "t", P + "tls-proxy-port": "443; include /etc/passwd"}),
        P + "tls-proxy-port",
        "port number",
    ),
    (
        "app-port-taken",
        pod({P + "tls-proxy": "t", P + "tls-proxy-app-port": "8080"}),
        P + "tls-proxy-app-port",
        "already used",
    ),
    ("protocol", pod({P + "tls-proxy": "t", P + "tls-proxy-protocol": "udp"}), P + "tls-proxy-protocol", "http, tcp"),
    (
        "udp-port",
        pod({P + "tls-proxy": "t"}, ports=[{"containerPort": 53, "protocol": "UDP"}]),
        P + "tls-proxy-port",
        "TCP",
    ),
    (
        "app-env",
        pod({P + "tls-proxy": "t", P + "tls-proxy-app-env": "not a pair"}),
        P + "tls-proxy-app-env",
        "NAME=VALUE",
    ),
    (
        "app-env-clash",
        pod({P + "tls-proxy": "t", P + "tls-proxy-app-env": "X=1"}, env=[{"name": "X", "value": "0"}]),
        P + "tls-proxy-app-env",
        "X: already set on container 'app'",
    ),
    ("grpc-probe", pod({P + "tls-proxy": "t"}, livenessProbe={"grpc": {"port": 8080}}), P + "tls-proxy", "gRPC"),
    (
        "mtls-hook",
        pod(
            {P + "tls-proxy": "t", P + "tls-proxy-client-ca": "ca"},
            lifecycle={"preStop": {"httpGet": {"path": "/drain", "port": "http"}}},
        ),
        P + "tls-proxy",
        "exec hook",
    ),
    (
        "mtls-tcp-http-probe",
        pod(
            {P + "tls-proxy": "t", P + "tls-proxy-client-ca": "ca", P + "tls-proxy-protocol": "tcp"},
            readinessProbe={"httpGet": {"path": "/", "port": 8080}},
        ),
        P + "tls-proxy",
        "tcpSocket",
    ),
    (
        "probe-path-injection",
        pod(
            {P + "tls-proxy": "t", P + "tls-proxy-client-ca": "ca"},
            readinessProbe={"httpGet": {"path": "/x;return 200 hi;", "port": 8080}},
        ),
        P + "tls-proxy",
        "cannot be routed",
    ),
    (
        "container",
        pod({P + "tls-proxy": "t", P + "tls-proxy-container": "nope"}),
        P + "tls-proxy-container",
        "no container of that name",
    ),
    (
        "default-container",
        pod({P + "log-tail": "/var/log/a.log", "kubectl.kubernetes.io/default-container": "x"}),
        "kubectl.kubernetes.io/default-container",
        "no container of that name",
    ),
    (
        "name-collision",
        pod({P + "tls-proxy": "t"}, name="podpatterns-tls-proxy"),
        P + "tls-proxy",
        "already has a container named",
    ),
    (
        "exporter-unknown",
        pod({P + "exporter": "mongo"}),
        P + "exporter",
        "elasticsearch, mysql, nginx, postgres, redis",
    ),
    (
        "exporter-port-clash",
        pod({P + "exporter": "redis", P + "exporter-port": "8080"}),
        P + "exporter-port",
        "already used",
    ),
    ("exporter-args", pod({P + "exporter": "redis", P + "exporter-args": "--a --b"}), P + "exporter-args", "JSON list"),
    ("exporter-path", pod({P + "exporter": "redis", P + "exporter-path": "metrics"}), P + "exporter-path", "HTTP path"),
    (
        "image-allowlist",
        pod({P + "exporter": "redis", P + "exporter-image": "evil.example.com/x:1"}),
        P + "exporter-image",
        "allowlist",
    ),
    (
        "image-shell",
        pod({P + "log-tail": "/var/log/a.log", P + "log-tail-image": "busybox;rm -rf /"}),
        P + "log-tail-image",
        "image reference",
    ),
    (
        "resources",
        pod({P + "log-tail": "/var/log/a.log", P + "log-tail-resources": '{"limits": {"gpu": "1"}}'}),
        P + "log-tail-resources",
        "quantity",
    ),
    (
        "request-over-limit",
        pod(
            {
                P + "log-tail": "/var/log/a.log",
                P + "log-tail-resources": '{"requests": {"cpu": "1"}, "limits": {"cpu": "500m"}}',
            }
        ),
        P + "log-tail-resources",
        "requests.cpu 1 exceeds limits.cpu 500m",
    ),
    (
        "quantity-typo",
        pod({P + "log-tail": "/var/log/a.log", P + "log-tail-resources": '{"limits": {"memory": "64mi"}}'}),
        P + "log-tail-resources",
        "quantity",
    ),
    ("log-relative", pod({P + "log-tail": "var/log/a.log"}), P + "log-tail", "absolute"),
    ("log-dotdot", pod({P + "log-tail": "/var/log/../../etc/shadow"}), P + "log-tail", "'..'"),
    ("log-root-dir", pod({P + "log-tail": "/etc/passwd"}), P + "log-tail", "hide the container's own files"),
    ("log-token", pod({P + "log-tail": "/var/run/secrets/kubernetes.io/serviceaccount/token"}), P + "log-tail", "hide"),
    (
        "log-secret-volume",
        pod(
            {P + "log-tail": "/creds/password"},
            volumes=[{"name": "creds", "secret": {"secretName": "db"}}],
            volumeMounts=[{"name": "creds", "mountPath": "/creds"}],
        ),
        P + "log-tail",
        "secret",
    ),
    (
        "log-csi-volume",
        pod(
            {P + "log-tail": "/mnt/secrets/db-password"},
            volumes=[{"name": "kv", "csi": {"driver": "secrets-store.csi.k8s.io"}}],
            volumeMounts=[{"name": "kv", "mountPath": "/mnt/secrets"}],
        ),
        P + "log-tail",
        "csi",
    ),
    (
        "log-subpathexpr",
        pod(
            {P + "log-tail": "/logs/app.log"},
            volumes=[{"name": "l", "emptyDir": {}}],
            volumeMounts=[{"name": "l", "mountPath": "/logs", "subPathExpr": "$(POD_NAME)"}],
        ),
        P + "log-tail",
        "subPathExpr",
    ),
    (
        "git-path-trust-store",
        pod({P + "init-git-clone": "https://example.com/r.git", P + "init-git-clone-path": "/etc/ssl/certs"}),
        P + "init-git-clone-path",
        "hide",
    ),
    ("log-usr-local-bin", pod({P + "log-tail": "/usr/local/bin/app.log"}), P + "log-tail", "hide"),
    ("status-malformed-list", pod({P + "status": '{"containers": 5}'}), P + "status", "malformed"),
    ("log-shell", pod({P + "log-tail": "/var/log/$(reboot).log"}), P + "log-tail", "plain log file path"),
    ("wait-for", pod({P + "init-wait-for": "db.shop.svc"}), P + "init-wait-for", "host:port"),
    ("wait-for-shell", pod({P + "init-wait-for": "`reboot`:80"}), P + "init-wait-for", "host:port"),
    (
        "wait-timeout",
        pod({P + "init-wait-for": "db:5432", P + "init-wait-timeout": "forever"}),
        P + "init-wait-timeout",
        "duration",
    ),
    ("git-scheme", pod({P + "init-git-clone": "file:///etc"}), P + "init-git-clone", "scheme https"),
    ("git-option", pod({P + "init-git-clone": "--upload-pack=touch /tmp/x"}), P + "init-git-clone", "scheme https"),
    (
        "git-password",
        pod({P + "init-git-clone": "https://u:secret@example.com/r.git"}),
        P + "init-git-clone",
        "no password",
    ),
    (
        "git-ref",
        pod({P + "init-git-clone": "https://example.com/r.git", P + "init-git-clone-ref": "--upload-pack=x"}),
        P + "init-git-clone-ref",
        "branch or tag",
    ),
    (
        "git-path",
        pod({P + "init-git-clone": "https://example.com/r.git", P + "init-git-clone-path": "/usr"}),
        P + "init-git-clone-path",
        "hide",
    ),
    ("template-unknown", pod({P + "sidecar-templates": "nope"}), P + "sidecar-templates", "unknown template"),
    (
        "native-bool",
        pod({P + "log-tail": "/var/log/a.log", P + "native-sidecars": "yes"}),
        P + "native-sidecars",
        '"true" or "false"',
    ),
    ("newline", pod({P + "tls-proxy": "t\nx"}), P + "tls-proxy", "control characters"),
    ("nul", pod({P + "log-tail": "/var/log/a\x00.log"}), P + "log-tail", "control characters"),
    ("too-long", pod({P + "log-tail": "/" + "a" * 5000}), P + "log-tail", "longer than"),
    ("lookalike", pod({P + "init-wait-for": "dЬ.shop.svc:5432"}), P + "init-wait-for", "host:port"),
    ("bad-status", pod({P + "status": "{not json", P + "log-tail": "/var/log/a.log"}), P + "status", "JSON"),
    (
        "stale-status",
        pod({P + "status": '{"containers": ["podpatterns-exporter"]}'}),
        P + "status",
        "no such containers",
    ),
]


def with_spec(base: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {**base, "spec": {**base["spec"], **spec}}


LOW_PORT = [{"containerPort": 443}]
# Cases found by review against real-cluster behaviour.
CASES += [
    (
        "app-env-reserved",
        pod({P + "tls-proxy": "t", P + "tls-proxy-app-env": "PODPATTERNS_APP_HOST=0.0.0.0"}),
        P + "tls-proxy-app-env",
        "reserved",
    ),
    ("host-network", with_spec(pod({P + "tls-proxy": "t"}), hostNetwork=True), P + "tls-proxy", "hostNetwork"),
    (
        "port-sysctl",
        with_spec(
            pod({P + "tls-proxy": "t"}, ports=LOW_PORT),
            securityContext={"sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "1024"}]},
        ),
        P + "tls-proxy",
        "could not bind port 443",
    ),
    ("mysql-no-secret", pod({P + "exporter": "mysql"}), P + "exporter", "MYSQLD_EXPORTER_USER"),
    (
        "postgres-without-credentials",
        pod({P + "exporter": "postgres"}, ports=[{"containerPort": 5432}]),
        P + "exporter",
        "set podpatterns.io/exporter-secret to a Secret holding DATA_SOURCE_USER and DATA_SOURCE_PASS",
    ),
    (
        "metrics-name-taken",
        pod({P + "exporter": "redis"}, ports=[{"containerPort": 8080, "name": "metrics"}]),
        P + "exporter",
        "already has a port named 'metrics'",
    ),
    (
        "quantity-overflow",
        pod({P + "log-tail": "/var/log/a.log", P + "log-tail-resources": '{"limits": {"memory": "1e9999999"}}'}),
        P + "log-tail-resources",
        "quantity",
    ),
]


@pytest.fixture(scope="module")
def config() -> InjectorConfig:
    return InjectorConfig.model_validate({"imageAllowlist": ["registry.example.com/*"]})


@pytest.mark.parametrize(("case", "pod_", "key", "expected"), CASES, ids=[c[0] for c in CASES])
def test_invalid_annotation_is_denied_naming_it(
    case: str, pod_: dict[str, Any], key: str, expected: str, config: InjectorConfig
) -> None:
    before = copy.deepcopy(pod_)
    with pytest.raises(InvalidAnnotations) as info:
        inject(pod_, config)
    message = str(info.value)
    assert f"annotation {key}=" in message
    assert expected in message
    assert pod_ == before, "the input pod must never be modified"


def test_all_problems_are_listed_at_once(config: InjectorConfig) -> None:
    bad = pod({P + "tls-proxy-port": "0", P + "tls-proxy": "t", P + "exporter": "nope", P + "log-tail": "x"})
    with pytest.raises(InvalidAnnotations) as info:
        inject(bad, config)
    assert {e.key for e in info.value.errors} == {P + "tls-proxy-port", P + "exporter", P + "log-tail"}


def test_the_webhook_denies_with_code_400_and_the_message(client: httpx.Client) -> None:
    review = review_for(pod({P + "tls-proxy": "t", P + "tls-proxy-port": "99999"}))
    answer = client.post("/mutate", json=review).json()["response"]
    assert answer["uid"] == review["request"]["uid"]
    assert answer["allowed"] is False
    assert answer["status"]["code"] == 400
    assert "podpatterns.io/tls-proxy-port='99999'" in answer["status"]["message"]
    assert "1 to 65535" in answer["status"]["message"]
    assert "patch" not in answer


def test_unknown_keys_and_orphan_options_are_warnings_not_denials(config: InjectorConfig) -> None:
    result = inject(pod({P + "log-tail": "/var/log/a.log", P + "tls-prxy": "t", P + "exporter-port": "1"}), config)
    assert result.changed
    assert any("unknown annotation podpatterns.io/tls-prxy" in w for w in result.warnings)
    assert any(
        "podpatterns.io/exporter-port has no effect without podpatterns.io/exporter" in w for w in result.warnings
    )


def test_lowering_only_a_limit_lowers_the_default_request_with_it(config: InjectorConfig) -> None:
    result = inject(
        pod({P + "log-tail": "/var/log/a.log", P + "log-tail-resources": '{"limits": {"cpu": "5m"}}'}), config
    )
    tailer = result.pod["spec"]["initContainers"][0]
    assert tailer["resources"] == {
        "limits": {"cpu": "5m", "memory": "32Mi"},
        "requests": {"cpu": "5m", "memory": "16Mi"},
    }


@pytest.mark.parametrize("native", ["true", "false"])
def test_a_taken_metrics_port_name_is_explained_accurately(native: str, config: InjectorConfig) -> None:
    # Kubernetes resolves a named targetPort to the first container port of that name, containers before native
    # sidecars: the app's port would win; and native sidecars' named ports resolve only from 1.32.
    taken = pod(
        {P + "exporter": "redis", P + "native-sidecars": native}, ports=[{"containerPort": 8080, "name": "metrics"}]
    )
    with pytest.raises(InvalidAnnotations) as info:
        inject(taken, config)
    message = str(info.value)
    assert "would resolve to the app's port, never to the exporter's" in message
    assert ("only from Kubernetes 1.32" in message) is (native == "true")
    assert "select it by name" not in message


def test_postgres_with_a_secret_gets_the_credentials_as_env(config: InjectorConfig) -> None:
    result = inject(pod({P + "exporter": "postgres", P + "exporter-secret": "pg-exporter"}), config)
    exporter = next(c for c in result.pod["spec"]["initContainers"] if c["name"] == "podpatterns-exporter")
    assert exporter["envFrom"] == [{"secretRef": {"name": "pg-exporter"}}]
    assert exporter["env"] == [{"name": "DATA_SOURCE_URI", "value": "localhost:8080/postgres?sslmode=disable"}]
