"""The injector configuration: the catalogue an admin controls (one YAML file, a ConfigMap in the cluster).

Pod authors choose *which* pattern they want with annotations; everything that decides *what* gets
injected (images, resources, exporter presets, templates, limits) lives here, validated at load with
errors that name the field. The objects are frozen: a reload swaps the whole config, never edits it.
"""

from __future__ import annotations

import fnmatch
import re
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from webhook.injection import fingerprint
from webhook.injection.errors import ConfigError

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# An image reference: registry/path[:tag][@digest]; no spaces, quotes or shell metacharacters.
IMAGE_REF = re.compile(r"^[a-z0-9][a-z0-9._\-/:@]{0,254}$", re.IGNORECASE)
MODULE_PATH = re.compile(r"^/[A-Za-z0-9._@+=,/-]{1,1000}\.so$")
# A file path that reaches nginx's config (the system CA bundle): plain, absolute, nothing that could end a directive.
FILE_PATH = re.compile(r"^/[A-Za-z0-9._@+=,/-]{1,1000}$")
DEFAULT_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"  # alpine's and Debian's system bundle


def _plain_file(path: str) -> str:
    if not FILE_PATH.match(path) or ".." in path.split("/") or "//" in path or path.endswith("/"):
        raise ValueError(f"{path!r} is not a plain absolute file path")
    return path


PlainFile = Annotated[str, AfterValidator(_plain_file)]  # a file in an image: a plain absolute path


QUANTITY = re.compile(r"^\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+|[KMGTPE]i|[numkMGTPE])?$")
_SUFFIX = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


def parse_quantity(text: str) -> Decimal:
    """A Kubernetes quantity as a number (64Mi -> 67108864, 100m -> 0.1); ValueError if it is not one."""
    match = QUANTITY.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a Kubernetes quantity")
    number, suffix = Decimal(match.group(1)), match.group(3) or ""
    if suffix[:1] in ("e", "E"):
        exponent = int(suffix[1:])
        if not -30 <= exponent <= 30:  # Kubernetes itself caps quantities far below this
            raise ValueError(f"{text!r} is out of range")
        return number * Decimal(10) ** exponent
    return number * _SUFFIX[suffix]


RESOURCE_NAMES = ("cpu", "memory", "ephemeral-storage")
# Volume types Pod Security "restricted" allows: a template must not smuggle in a hostPath.
RESTRICTED_VOLUME_TYPES = frozenset(
    {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Resources(_Model):
    """Requests and limits of an injected container (both, so quota'd namespaces accept the pod)."""

    requests: dict[str, str]
    limits: dict[str, str]

    @field_validator("requests", "limits")
    @classmethod
    def _quantities(cls, value: dict[str, str]) -> dict[str, str]:
        for name, quantity in value.items():
            if name not in RESOURCE_NAMES:
                raise ValueError(f"unknown resource {name!r}; expected one of {', '.join(RESOURCE_NAMES)}")
            if not QUANTITY.match(str(quantity)):
                raise ValueError(f"{name}: {quantity!r} is not a Kubernetes quantity (e.g. 100m, 64Mi)")
        return value

    @model_validator(mode="after")
    def _complete(self) -> Resources:
        for part in ("cpu", "memory"):
            if part not in self.requests or part not in self.limits:
                raise ValueError(f"requests and limits must both set {part}")
        for name, request in self.requests.items():
            if name in self.limits and parse_quantity(str(request)) > parse_quantity(str(self.limits[name])):
                raise ValueError(f"requests.{name} {request} exceeds limits.{name} {self.limits[name]}")
        return self

    def as_dict(self) -> dict[str, dict[str, str]]:
        return {"limits": dict(self.limits), "requests": dict(self.requests)}


SMALL = Resources(requests={"cpu": "10m", "memory": "16Mi"}, limits={"cpu": "100m", "memory": "32Mi"})


class Component(_Model):
    """An injected container kind: the pinned image, the UID it runs as, its resources."""

    image: str
    run_as_user: int = Field(alias="runAsUser", ge=1)
    resources: Resources = SMALL

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        if not IMAGE_REF.match(value):
            raise ValueError(f"{value!r} is not an image reference")
        return value


class TlsProxyConfig(Component):
    image: str = "nginxinc/nginx-unprivileged:1.27.4-alpine"
    run_as_user: int = Field(default=101, alias="runAsUser", ge=1)
    resources: Resources = Resources(
        requests={"cpu": "20m", "memory": "32Mi"}, limits={"cpu": "500m", "memory": "128Mi"}
    )
    listen_ipv6: bool = Field(default=False, alias="listenIPv6")
    """Deprecated and ignored, accepted so older configs still load: the proxy's start script listens on
    [::] for both families whenever the pod's kernel has IPv6, and on IPv4 alone when it has none."""
    load_modules: tuple[str, ...] = Field(default=(), alias="loadModules")
    """Dynamic modules nginx must load, as `load_module` lines at the top of every proxy's config: Debian's
    nginx builds the stream module (tcp mode) as /usr/lib/nginx/modules/ngx_stream_module.so."""

    @field_validator("load_modules")
    @classmethod
    def _modules(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for path in value:
            # Each becomes a directive of nginx.conf: a plain absolute path, nothing that could end it.
            if not MODULE_PATH.match(path) or ".." in path.split("/") or "//" in path:
                raise ValueError(f"{path!r} is not a plain absolute path to a module (.so)")
        return value

    system_ca_bundle: PlainFile = Field(default=DEFAULT_CA_BUNDLE, alias="systemCABundle")
    """The image's CA bundle: what the auth gate verifies its service with when no tls-proxy-auth-ca is named."""


class TlsEgressConfig(Component):
    """The TLS tunnel out (tls-egress): an nginx of its own; its stream module comes from tlsProxy.loadModules."""

    image: str = "nginxinc/nginx-unprivileged:1.27.4-alpine"
    run_as_user: int = Field(default=101, alias="runAsUser", ge=1)
    resources: Resources = Resources(
        requests={"cpu": "10m", "memory": "16Mi"}, limits={"cpu": "500m", "memory": "64Mi"}
    )
    system_ca_bundle: PlainFile = Field(default=DEFAULT_CA_BUNDLE, alias="systemCABundle")
    """Servers are verified against this bundle of the image when no tls-egress-ca is named: never unverified."""


class LogTailConfig(Component):
    image: str = "busybox:1.37.0"
    run_as_user: int = Field(default=65534, alias="runAsUser", ge=1)


class ConfigReloadConfig(Component):
    """The reloader (config-reload): busybox polling each volume's `..data` link."""

    image: str = "busybox:1.37.0"
    run_as_user: int = Field(default=65534, alias="runAsUser", ge=1)
    poll_seconds: int = Field(default=5, alias="pollSeconds", ge=1, le=300)
    """How often `..data` is read: kubelet updates volumes about once a minute, so 5 s adds little delay."""
    settle_seconds: int = Field(default=2, alias="settleSeconds", ge=1, le=60)
    """A change counts once `..data` has not moved for this long: two quick edits make one reload."""


CACHE_MEMORY_MIN = 2**20  # 1Mi: below that Redis' own baseline (~1 MB) is all there is
CACHE_MEMORY_MAX = 16 * 2**30  # 16Gi: a pod-local cache beyond this belongs in a real Redis


class CacheConfig(Component):
    """The local Redis (cache). Its memory request and limit follow cache-memory; the config sets the CPU."""

    image: str = "redis:7.4-alpine"
    run_as_user: int = Field(default=999, alias="runAsUser", ge=1)  # the official image's redis user
    resources: Resources = Resources(
        requests={"cpu": "10m", "memory": "96Mi"}, limits={"cpu": "500m", "memory": "96Mi"}
    )
    memory: str = "64Mi"
    """The default cache-memory (Redis' maxmemory)."""

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str) -> str:
        if not QUANTITY.match(value) or not CACHE_MEMORY_MIN <= parse_quantity(value) <= CACHE_MEMORY_MAX:
            raise ValueError(f"{value!r} is not a memory quantity from 1Mi to 16Gi")
        return value


class WaitForConfig(Component):
    image: str = "busybox:1.37.0"
    run_as_user: int = Field(default=65534, alias="runAsUser", ge=1)
    timeout_seconds: int = Field(default=300, alias="timeoutSeconds", ge=1, le=86400)


class GitCloneConfig(Component):
    image: str = "alpine/git:2.47.2"
    run_as_user: int = Field(default=65532, alias="runAsUser", ge=1)
    allowed_schemes: tuple[str, ...] = Field(default=("https",), alias="allowedSchemes")
    default_path: str = Field(default="/src", alias="defaultPath")

    @field_validator("default_path")
    @classmethod
    def _default_path(cls, value: str) -> str:
        """The same rules as the init-git-clone-path annotation, checked at load: a bad default would
        otherwise deny every clone naming an annotation the pod never set."""
        from webhook.injection import values  # imports this module: import at call time
        from webhook.injection.annotations import AnnotationReader

        reader = AnnotationReader({})
        path = values.abs_path(reader, "defaultPath", value, what="directory")
        if path is not None:
            values.mountable_dir(reader, "defaultPath", value, path)
        if reader.errors:
            raise ValueError(reader.errors[0].reason)
        return value

    @field_validator("allowed_schemes")
    @classmethod
    def _schemes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for scheme in value:
            if scheme not in ("https", "http", "ssh", "git"):
                raise ValueError(f"unsupported scheme {scheme!r}; expected https, http, ssh or git")
        return value


class ExporterPreset(_Model):
    """A Prometheus exporter. `{port}` in args and env values becomes the app's current localhost port."""

    image: str
    port: int = Field(ge=1, le=65535)
    target_port: int = Field(alias="targetPort", ge=1, le=65535)
    path: str = "/metrics"
    args: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)
    run_as_user: int = Field(default=65534, alias="runAsUser", ge=1)
    resources: Resources = SMALL
    secret_keys: tuple[str, ...] = Field(default=(), alias="secretKeys")
    """Credentials the exporter cannot work without: then `exporter-secret` is required, holding these keys."""

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        return Component._image(value)


BUILTIN_EXPORTERS: dict[str, ExporterPreset] = {
    "elasticsearch": ExporterPreset(
        image="quay.io/prometheuscommunity/elasticsearch-exporter:v1.9.0",
        port=9114,
        targetPort=9200,
        args=("--es.uri=http://localhost:{port}",),
    ),
    "redis": ExporterPreset(
        image="oliver006/redis_exporter:v1.67.0",
        port=9121,
        targetPort=6379,
        args=("--redis.addr=redis://localhost:{port}",),
    ),
    "postgres": ExporterPreset(
        image="quay.io/prometheuscommunity/postgres-exporter:v0.17.1",
        port=9187,
        targetPort=5432,
        # postgres_exporter joins DATA_SOURCE_URI with DATA_SOURCE_USER and DATA_SOURCE_PASS (or their _FILE
        # forms); without them it runs anyway and reports pg_up 0 forever, so the Secret is required.
        env={"DATA_SOURCE_URI": "localhost:{port}/postgres?sslmode=disable"},
        secretKeys=("DATA_SOURCE_USER", "DATA_SOURCE_PASS"),
    ),
    "mysql": ExporterPreset(
        image="prom/mysqld-exporter:v0.17.2",
        port=9104,
        targetPort=3306,
        # 0.15+ reads the user only from a flag or my.cnf (the password from the environment); Kubernetes
        # expands $(VAR) from the Secret given by exporter-secret.
        args=("--mysqld.address=localhost:{port}", "--mysqld.username=$(MYSQLD_EXPORTER_USER)"),
        secretKeys=("MYSQLD_EXPORTER_USER", "MYSQLD_EXPORTER_PASSWORD"),
    ),
    "nginx": ExporterPreset(
        image="nginx/nginx-prometheus-exporter:1.4.1",
        port=9113,
        targetPort=80,
        args=("--nginx.scrape-uri=http://localhost:{port}/stub_status",),
    ),
}


class Template(_Model):
    """Containers (and the volumes they need) that an annotation can ask for by name."""

    containers: tuple[dict[str, Any], ...]
    volumes: tuple[dict[str, Any], ...] = ()

    @field_validator("containers")
    @classmethod
    def _containers(cls, value: tuple[dict[str, Any], ...]) -> tuple[dict[str, Any], ...]:
        if not value:
            raise ValueError("a template needs at least one container")
        for index, container in enumerate(value):
            where = f"containers[{index}]"
            name = container.get("name")
            if not isinstance(name, str) or not DNS_LABEL.match(name):
                raise ValueError(f"{where}.name: {name!r} is not a DNS label")
            image = container.get("image")
            if not isinstance(image, str) or not IMAGE_REF.match(image):
                raise ValueError(f"{where}.image: {image!r} is not an image reference")
            _check_restricted_security_context(where, container.get("securityContext") or {})
            if any(p.get("hostPort") for p in container.get("ports") or []):
                raise ValueError(f"{where}.ports: hostPort is not allowed (Pod Security 'restricted')")
            if "resources" in container:
                Resources.model_validate(container["resources"])
        return value

    @model_validator(mode="after")
    def _mounts_have_volumes(self) -> Template:
        names = {v["name"] for v in self.volumes}
        for index, container in enumerate(self.containers):
            for mount in container.get("volumeMounts") or []:
                if mount.get("name") not in names:
                    raise ValueError(
                        f"containers[{index}].volumeMounts: volume {mount.get('name')!r} is not among the "
                        "template's volumes (a template cannot know the pod's)"
                    )
        return self

    @field_validator("volumes")
    @classmethod
    def _volumes(cls, value: tuple[dict[str, Any], ...]) -> tuple[dict[str, Any], ...]:
        for index, volume in enumerate(value):
            name = volume.get("name")
            if not isinstance(name, str) or not DNS_LABEL.match(name):
                raise ValueError(f"volumes[{index}].name: {name!r} is not a DNS label")
            kinds = set(volume) - {"name"}
            if len(kinds) != 1 or not kinds <= RESTRICTED_VOLUME_TYPES:
                raise ValueError(
                    f"volumes[{index}] ({name}): type {sorted(kinds)} is not allowed; "
                    f"Pod Security 'restricted' allows {', '.join(sorted(RESTRICTED_VOLUME_TYPES))}"
                )
        return value


def _check_restricted_security_context(where: str, sc: dict[str, Any]) -> None:
    """Templates are merged with our restricted securityContext; they may tighten it, never loosen it."""
    if sc.get("privileged") or sc.get("allowPrivilegeEscalation") is True:
        raise ValueError(f"{where}.securityContext: privileged containers are not allowed")
    if sc.get("runAsNonRoot") is False or sc.get("runAsUser") == 0:
        raise ValueError(f"{where}.securityContext: containers must run as non-root")
    added = (sc.get("capabilities") or {}).get("add") or []
    if any(cap != "NET_BIND_SERVICE" for cap in added):
        raise ValueError(f"{where}.securityContext.capabilities.add: only NET_BIND_SERVICE is allowed")
    seccomp = (sc.get("seccompProfile") or {}).get("type")
    if seccomp not in (None, "RuntimeDefault", "Localhost"):
        raise ValueError(f"{where}.securityContext.seccompProfile: {seccomp!r} is not allowed")
    for key in ("windowsOptions", "procMount", "seLinuxOptions", "appArmorProfile"):
        if key in sc:
            raise ValueError(f"{where}.securityContext.{key} cannot be set in a template")


class InjectorConfig(_Model):
    """The whole injector configuration. Every field has a safe, pinned default."""

    native_sidecars: bool = Field(default=True, alias="nativeSidecars")
    """Default for `podpatterns.io/native-sidecars`: sidecars as initContainers with restartPolicy Always
    (Kubernetes 1.29+), so Jobs complete and sidecars start before the app."""
    image_allowlist: tuple[str, ...] = Field(default=(), alias="imageAllowlist")
    """Glob patterns an image override annotation must match; empty means any image may be named."""
    tls_proxy: TlsProxyConfig = Field(default_factory=TlsProxyConfig, alias="tlsProxy")
    tls_egress: TlsEgressConfig = Field(default_factory=TlsEgressConfig, alias="tlsEgress")
    log_tail: LogTailConfig = Field(default_factory=LogTailConfig, alias="logTail")
    wait_for: WaitForConfig = Field(default_factory=WaitForConfig, alias="waitFor")
    config_reload: ConfigReloadConfig = Field(default_factory=ConfigReloadConfig, alias="configReload")
    cache: CacheConfig = Field(default_factory=CacheConfig)
    git_clone: GitCloneConfig = Field(default_factory=GitCloneConfig, alias="gitClone")
    exporters: dict[str, ExporterPreset] = Field(default_factory=dict)
    """Exporter presets, merged over the built-in ones (elasticsearch, redis, postgres, mysql, nginx)."""
    init_templates: dict[str, Template] = Field(default_factory=dict, alias="initTemplates")
    sidecar_templates: dict[str, Template] = Field(default_factory=dict, alias="sidecarTemplates")

    @model_validator(mode="after")
    def _merge_builtin_exporters(self) -> InjectorConfig:
        merged = {**BUILTIN_EXPORTERS, **self.exporters}
        object.__setattr__(self, "exporters", merged)
        for kind in ("init_templates", "sidecar_templates"):
            for name in getattr(self, kind):
                if not DNS_LABEL.match(name):
                    raise ValueError(f"{kind}: template name {name!r} is not a DNS label")
        for name, template in self.init_templates.items():
            for container in template.containers:
                # The API server refuses probes and lifecycle hooks on init containers that run to completion.
                bad = [k for k in ("livenessProbe", "readinessProbe", "startupProbe", "lifecycle") if k in container]
                if bad:
                    raise ValueError(
                        f"initTemplates.{name}: {container['name']} has {', '.join(bad)}, which run-to-"
                        "completion init containers cannot have (use a sidecar template)"
                    )
        for name in self.exporters:
            if not DNS_LABEL.match(name):
                raise ValueError(f"exporters: preset name {name!r} is not a DNS label")
        return self

    @cached_property
    def fingerprint(self) -> str:
        """webhook/injection/fingerprint.py: computed on first use, then kept on this frozen object, so
        the status annotation of every pod costs a lookup. (A model_copy(update=...) is not validated
        either; configs come from parse_config.)"""
        return fingerprint.compute_fingerprint(self)

    def image_allowed(self, image: str) -> bool:
        return not self.image_allowlist or any(fnmatch.fnmatchcase(image, p) for p in self.image_allowlist)


def parse_config(data: Any, source: str = "config") -> InjectorConfig:
    """Validate a parsed YAML document; errors name the field, e.g. `tlsProxy.image`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, not {type(data).__name__}")
    try:
        return InjectorConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "(top level)"
            problems.append(f"{field}: {err['msg']}")
        raise ConfigError(f"{source}: invalid injector config: " + "; ".join(problems)) from None


def load_config(path: str | Path | None) -> InjectorConfig:
    """Read and validate the config file; no path means the built-in defaults."""
    if path is None:
        return InjectorConfig()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read injector config: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(data, str(path))
