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

EG = P + "tls-egress"
AUTH = {P + "tls-proxy": "t", P + "tls-proxy-auth-url": "https://auth.example.com/oauth2/auth"}
# Ambassadors: the TLS tunnel out and the auth gate in.
CASES += [
    ("egress-grammar", pod({EG: "15432"}), EG, "<local port>=<host>:<port>"),
    ("egress-host-injection", pod({EG: "15432=db;include /x:5432"}), EG, "DNS name or IPv4"),
    ("egress-host-brace", pod({EG: "15432=db}:5432"}), EG, "DNS name or IPv4"),
    ("egress-port-range", pod({EG: "15432=db.example.com:70000"}), EG, "ports 1-65535"),
    ("egress-name", pod({EG: "15432=10.0.0.1:5432@Bad Name"}), EG, "the name a DNS name"),
    ("egress-twice", pod({EG: "15432=a.example:1,15432=b.example:2"}), EG, "local port twice"),
    ("egress-port-taken", pod({EG: "8080=db.example.com:5432"}), EG, "local port 8080 is already used"),
    (
        "egress-port-moved-app",
        pod({EG: "9201=db.example.com:5432", P + "tls-proxy": "t", P + "tls-proxy-app-port": "9201"}),
        P + "tls-proxy-app-port",
        "already used",
    ),
    ("egress-ca", pod({EG: "1=db.example.com:5432", P + "tls-egress-ca": "ca; x"}), P + "tls-egress-ca", "Secret"),
    (
        "egress-client-cert",
        pod({EG: "1=db.example.com:5432", P + "tls-egress-client-cert": "$x"}),
        P + "tls-egress-client-cert",
        "Secret",
    ),
    (
        "egress-image",
        pod({EG: "1=db.example.com:5432", P + "tls-egress-image": "evil.example/nginx:1"}),
        P + "tls-egress-image",
        "allowlist",
    ),
    (
        "auth-scheme",
        pod({**AUTH, P + "tls-proxy-auth-url": "http://auth.example.com/a"}),
        P + "tls-proxy-auth-url",
        "https://",
    ),
    (
        "auth-url-port-0",
        pod({**AUTH, P + "tls-proxy-auth-url": "https://auth.example.com:0/a"}),
        P + "tls-proxy-auth-url",
        "[:port]",
    ),
    (
        "auth-url-empty-port",
        pod({**AUTH, P + "tls-proxy-auth-url": "https://auth.example.com:/a"}),
        P + "tls-proxy-auth-url",
        "[:port]",
    ),
    (
        "auth-credentials",
        pod({**AUTH, P + "tls-proxy-auth-url": "https://u:p@auth.example.com/a"}),
        P + "tls-proxy-auth-url",
        "no user, password",
    ),
    (
        "auth-query",
        pod({**AUTH, P + "tls-proxy-auth-url": "https://auth.example.com/a?x=1"}),
        P + "tls-proxy-auth-url",
        "query",
    ),
    (
        "auth-path-injection",
        pod({**AUTH, P + "tls-proxy-auth-url": "https://auth.example.com/a;return"}),
        P + "tls-proxy-auth-url",
        "the path",
    ),
    (
        "auth-host",
        pod({**AUTH, P + "tls-proxy-auth-url": "https://auth_example/a"}),
        P + "tls-proxy-auth-url",
        "DNS name",
    ),
    ("auth-tcp", pod({**AUTH, P + "tls-proxy-protocol": "tcp"}), P + "tls-proxy-auth-url", "not tcp"),
    (
        "auth-headers",
        pod({**AUTH, P + "tls-proxy-auth-response-headers": "X-User;x"}),
        P + "tls-proxy-auth-response-headers",
        "header names",
    ),
    (
        "auth-headers-reserved",
        pod({**AUTH, P + "tls-proxy-auth-response-headers": "X-User,Host"}),
        P + "tls-proxy-auth-response-headers",
        "Host: set by the proxy",
    ),
    ("auth-ca", pod({**AUTH, P + "tls-proxy-auth-ca": "A B"}), P + "tls-proxy-auth-ca", "Secret"),
    (
        "auth-hook",
        pod(AUTH, lifecycle={"preStop": {"httpGet": {"path": "/drain", "port": "http"}}}),
        P + "tls-proxy",
        "no token for the auth gate",
    ),
]


CFG = [{"name": "cfg", "configMap": {"name": "app-config"}}]
CFG_MOUNT = [{"name": "cfg", "mountPath": "/etc/app"}]
URL = {P + "config-reload": "cfg", P + "config-reload-url": "http://localhost:8080/-/reload"}
HUP = {P + "config-reload": "cfg", P + "config-reload-signal": "HUP", P + "config-reload-process": "app"}
AS_1000 = {"runAsUser": 1000}


def reload_pod(annotations: dict[str, str], volumes: list[Any] | None = None, **container: Any) -> dict[str, Any]:
    container.setdefault("volumeMounts", CFG_MOUNT)
    container.setdefault("securityContext", AS_1000)
    return pod(annotations, CFG if volumes is None else volumes, **container)


def reload_url(url: str) -> dict[str, Any]:
    return reload_pod({**URL, P + "config-reload-url": url})


BAD_URL = "http://localhost:<port>/<path>"
# Sidecars: config reload and cache.
CASES += [
    ("reload-names", reload_pod({**URL, P + "config-reload": "Cfg"}), P + "config-reload", "comma-separated names"),
    ("reload-no-volume", reload_pod({**URL, P + "config-reload": "other"}), P + "config-reload", "no volume named"),
    ("reload-not-mounted", reload_pod(URL, volumeMounts=[]), P + "config-reload", "does not mount volume 'cfg'"),
    (
        "reload-emptydir",
        reload_pod(URL, volumes=[{"name": "cfg", "emptyDir": {}}]),
        P + "config-reload",
        "is of type emptyDir; only configMap and secret",
    ),
    (
        "reload-projected-token",
        reload_pod(URL, volumes=[{"name": "cfg", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}]),
        P + "config-reload",
        "projected (serviceAccountToken)",
    ),
    (
        "reload-subpath",
        reload_pod(URL, volumeMounts=[{"name": "cfg", "mountPath": "/etc/app/app.yml", "subPath": "app.yml"}]),
        P + "config-reload",
        "never updates a subPath mount",
    ),
    ("reload-both", reload_pod({**URL, **HUP}), P + "config-reload", "exactly one of"),
    ("reload-neither", reload_pod({P + "config-reload": "cfg"}), P + "config-reload", "exactly one of"),
    ("reload-https", reload_url("https://localhost:8443/reload"), P + "config-reload-url", BAD_URL),
    ("reload-remote", reload_url("http://example.com:80/reload"), P + "config-reload-url", BAD_URL),
    ("reload-no-port", reload_url("http://localhost/-/reload"), P + "config-reload-url", BAD_URL),
    ("reload-port-range", reload_url("http://localhost:70000/"), P + "config-reload-url", BAD_URL),
    ("reload-shell", reload_url("http://localhost:80/$(reboot)"), P + "config-reload-url", BAD_URL),
    ("reload-query", reload_url("http://localhost:80/r?x=1"), P + "config-reload-url", BAD_URL),
    ("reload-userinfo", reload_url("http://a@localhost:80/r"), P + "config-reload-url", BAD_URL),
    (
        "reload-signal",
        reload_pod({**HUP, P + "config-reload-signal": "KILL"}),
        P + "config-reload-signal",
        "HUP, USR1, USR2, TERM",
    ),
    (
        "reload-no-process",
        reload_pod({P + "config-reload": "cfg", P + "config-reload-signal": "HUP"}),
        P + "config-reload-signal",
        "config-reload-process",
    ),
    (
        "reload-process-long",
        reload_pod({**HUP, P + "config-reload-process": "a" * 16}),
        P + "config-reload-process",
        "1 to 15",
    ),
    (
        "reload-process-shell",
        reload_pod({**HUP, P + "config-reload-process": "app;reboot"}),
        P + "config-reload-process",
        "/proc/<pid>/comm",
    ),
    (
        "reload-no-shared-pid",
        with_spec(reload_pod(HUP), shareProcessNamespace=False),
        P + "config-reload-signal",
        "shareProcessNamespace: false",
    ),
    ("reload-no-user", reload_pod(HUP, securityContext={}), P + "config-reload-signal", "set runAsUser"),
    ("reload-host-pid", with_spec(reload_pod(HUP), hostPID=True), P + "config-reload-signal", "hostPID"),
    ("cache-kind", pod({P + "cache": "memcached"}), P + "cache", "expected one of: redis"),
    ("cache-port-taken", pod({P + "cache": "redis", P + "cache-port": "8080"}), P + "cache-port", "already used"),
    ("cache-port", pod({P + "cache": "redis", P + "cache-port": "63 79"}), P + "cache-port", "1 to 65535"),
    (
        "cache-default-port-taken",
        pod({P + "cache": "redis"}, ports=[{"containerPort": 6379}]),
        P + "cache",
        "choose another with podpatterns.io/cache-port",
    ),
    ("cache-memory-unit", pod({P + "cache": "redis", P + "cache-memory": "64MB"}), P + "cache-memory", "1Mi to 16Gi"),
    ("cache-memory-big", pod({P + "cache": "redis", P + "cache-memory": "32Gi"}), P + "cache-memory", "1Mi to 16Gi"),
    ("cache-memory-small", pod({P + "cache": "redis", P + "cache-memory": "512Ki"}), P + "cache-memory", "1Mi"),
    ("cache-memory-text", pod({P + "cache": "redis", P + "cache-memory": "64Mi;x"}), P + "cache-memory", "1Mi"),
    (
        "cache-env",
        pod({P + "cache": "redis"}, env=[{"name": "PODPATTERNS_CACHE_URL", "value": "redis://db:6379"}]),
        P + "cache",
        "already sets PODPATTERNS_CACHE_URL",
    ),
    ("cache-host-network", with_spec(pod({P + "cache": "redis"}), hostNetwork=True), P + "cache", "hostNetwork"),
    (
        "cache-image",
        pod({P + "cache": "redis", P + "cache-image": "evil.example.com/redis:7"}),
        P + "cache-image",
        "allowlist",
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
