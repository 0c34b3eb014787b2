"""Every annotation podpatterns reads or writes, and a reader that collects all errors at once.

Keys live under one prefix and are kebab-case; values are strings. README.md documents each key in
one line; keep the two in step (tests/test_readme.py checks that every key here is documented).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from webhook.injection.errors import AnnotationError

PREFIX = "podpatterns.io/"

INJECT = PREFIX + "inject"  # "false" opts a pod out (the label of the same name works too)
STATUS = PREFIX + "status"  # written by us: what was injected, by which version
NATIVE_SIDECARS = PREFIX + "native-sidecars"  # "true"/"false"; default from the config file
DEFAULT_CONTAINER = "kubectl.kubernetes.io/default-container"

# Ambassador: nginx TLS proxy in front of the app's port.
TLS_PROXY = PREFIX + "tls-proxy"
TLS_PROXY_CONTAINER = PREFIX + "tls-proxy-container"
TLS_PROXY_PORT = PREFIX + "tls-proxy-port"
TLS_PROXY_APP_PORT = PREFIX + "tls-proxy-app-port"
TLS_PROXY_APP_ENV = PREFIX + "tls-proxy-app-env"
TLS_PROXY_CLIENT_CA = PREFIX + "tls-proxy-client-ca"
TLS_PROXY_PROTOCOL = PREFIX + "tls-proxy-protocol"
TLS_PROXY_IMAGE = PREFIX + "tls-proxy-image"
TLS_PROXY_RESOURCES = PREFIX + "tls-proxy-resources"
TLS_PROXY_AUTH_URL = PREFIX + "tls-proxy-auth-url"  # ambassador in: ask an auth service before the app
TLS_PROXY_AUTH_RESPONSE_HEADERS = PREFIX + "tls-proxy-auth-response-headers"
TLS_PROXY_AUTH_CA = PREFIX + "tls-proxy-auth-ca"

# Ambassador out: plain text to 127.0.0.1:<local port>, verified TLS to the server.
TLS_EGRESS = PREFIX + "tls-egress"
TLS_EGRESS_CA = PREFIX + "tls-egress-ca"
TLS_EGRESS_CLIENT_CERT = PREFIX + "tls-egress-client-cert"
TLS_EGRESS_IMAGE = PREFIX + "tls-egress-image"
TLS_EGRESS_RESOURCES = PREFIX + "tls-egress-resources"

# Adapter: a Prometheus exporter beside the app.
EXPORTER = PREFIX + "exporter"
EXPORTER_CONTAINER = PREFIX + "exporter-container"
EXPORTER_TARGET_PORT = PREFIX + "exporter-target-port"
EXPORTER_PORT = PREFIX + "exporter-port"
EXPORTER_PATH = PREFIX + "exporter-path"
EXPORTER_ARGS = PREFIX + "exporter-args"
EXPORTER_SECRET = PREFIX + "exporter-secret"
EXPORTER_IMAGE = PREFIX + "exporter-image"
EXPORTER_RESOURCES = PREFIX + "exporter-resources"

# Sidecar: log tailers over a shared emptyDir.
LOG_TAIL = PREFIX + "log-tail"
LOG_TAIL_CONTAINER = PREFIX + "log-tail-container"
LOG_TAIL_IMAGE = PREFIX + "log-tail-image"
LOG_TAIL_RESOURCES = PREFIX + "log-tail-resources"

# Sidecar: reload the app when a ConfigMap or Secret volume it mounts changes.
CONFIG_RELOAD = PREFIX + "config-reload"
CONFIG_RELOAD_CONTAINER = PREFIX + "config-reload-container"
CONFIG_RELOAD_URL = PREFIX + "config-reload-url"
CONFIG_RELOAD_SIGNAL = PREFIX + "config-reload-signal"
CONFIG_RELOAD_PROCESS = PREFIX + "config-reload-process"
CONFIG_RELOAD_IMAGE = PREFIX + "config-reload-image"
CONFIG_RELOAD_RESOURCES = PREFIX + "config-reload-resources"

# Sidecar: a local Redis cache on 127.0.0.1.
CACHE = PREFIX + "cache"
CACHE_CONTAINER = PREFIX + "cache-container"
CACHE_PORT = PREFIX + "cache-port"
CACHE_MEMORY = PREFIX + "cache-memory"
CACHE_IMAGE = PREFIX + "cache-image"

# initContainers, run in order before the pod's own.
INIT_WAIT_FOR = PREFIX + "init-wait-for"
INIT_WAIT_TIMEOUT = PREFIX + "init-wait-timeout"
INIT_WAIT_FOR_IMAGE = PREFIX + "init-wait-for-image"
INIT_WAIT_FOR_RESOURCES = PREFIX + "init-wait-for-resources"
INIT_GIT_CLONE = PREFIX + "init-git-clone"
INIT_GIT_CLONE_REF = PREFIX + "init-git-clone-ref"
INIT_GIT_CLONE_CONTAINER = PREFIX + "init-git-clone-container"
INIT_GIT_CLONE_PATH = PREFIX + "init-git-clone-path"
INIT_GIT_CLONE_IMAGE = PREFIX + "init-git-clone-image"
INIT_GIT_CLONE_RESOURCES = PREFIX + "init-git-clone-resources"
INIT_TEMPLATES = PREFIX + "init-templates"

# Named sidecar templates from the config file.
SIDECAR_TEMPLATES = PREFIX + "sidecar-templates"

# The keys that ask for an injection; without one of them the pod is left alone.
FEATURE_KEYS = (
    TLS_PROXY,
    TLS_EGRESS,
    EXPORTER,
    LOG_TAIL,
    CONFIG_RELOAD,
    CACHE,
    INIT_WAIT_FOR,
    INIT_GIT_CLONE,
    INIT_TEMPLATES,
    SIDECAR_TEMPLATES,
)

# Option keys and the feature key they refine (an option without its feature is a warning).
OPTION_OF: dict[str, str] = {
    TLS_PROXY_CONTAINER: TLS_PROXY,
    TLS_PROXY_PORT: TLS_PROXY,
    TLS_PROXY_APP_PORT: TLS_PROXY,
    TLS_PROXY_APP_ENV: TLS_PROXY,
    TLS_PROXY_CLIENT_CA: TLS_PROXY,
    TLS_PROXY_PROTOCOL: TLS_PROXY,
    TLS_PROXY_IMAGE: TLS_PROXY,
    TLS_PROXY_RESOURCES: TLS_PROXY,
    TLS_PROXY_AUTH_URL: TLS_PROXY,
    TLS_PROXY_AUTH_RESPONSE_HEADERS: TLS_PROXY,
    TLS_PROXY_AUTH_CA: TLS_PROXY,
    TLS_EGRESS_CA: TLS_EGRESS,
    TLS_EGRESS_CLIENT_CERT: TLS_EGRESS,
    TLS_EGRESS_IMAGE: TLS_EGRESS,
    TLS_EGRESS_RESOURCES: TLS_EGRESS,
    EXPORTER_CONTAINER: EXPORTER,
    EXPORTER_TARGET_PORT: EXPORTER,
    EXPORTER_PORT: EXPORTER,
    EXPORTER_PATH: EXPORTER,
    EXPORTER_ARGS: EXPORTER,
    EXPORTER_SECRET: EXPORTER,
    EXPORTER_IMAGE: EXPORTER,
    EXPORTER_RESOURCES: EXPORTER,
    LOG_TAIL_CONTAINER: LOG_TAIL,
    LOG_TAIL_IMAGE: LOG_TAIL,
    LOG_TAIL_RESOURCES: LOG_TAIL,
    CONFIG_RELOAD_CONTAINER: CONFIG_RELOAD,
    CONFIG_RELOAD_URL: CONFIG_RELOAD,
    CONFIG_RELOAD_SIGNAL: CONFIG_RELOAD,
    CONFIG_RELOAD_PROCESS: CONFIG_RELOAD,
    CONFIG_RELOAD_IMAGE: CONFIG_RELOAD,
    CONFIG_RELOAD_RESOURCES: CONFIG_RELOAD,
    CACHE_CONTAINER: CACHE,
    CACHE_PORT: CACHE,
    CACHE_MEMORY: CACHE,
    CACHE_IMAGE: CACHE,
    INIT_WAIT_TIMEOUT: INIT_WAIT_FOR,
    INIT_WAIT_FOR_IMAGE: INIT_WAIT_FOR,
    INIT_WAIT_FOR_RESOURCES: INIT_WAIT_FOR,
    INIT_GIT_CLONE_REF: INIT_GIT_CLONE,
    INIT_GIT_CLONE_CONTAINER: INIT_GIT_CLONE,
    INIT_GIT_CLONE_PATH: INIT_GIT_CLONE,
    INIT_GIT_CLONE_IMAGE: INIT_GIT_CLONE,
    INIT_GIT_CLONE_RESOURCES: INIT_GIT_CLONE,
}

KNOWN_KEYS = frozenset({INJECT, STATUS, NATIVE_SIDECARS, *FEATURE_KEYS, *OPTION_OF})

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# Longer values than this are refused before any parsing: nothing legitimate needs them.
MAX_VALUE_LENGTH = 4096


class AnnotationReader:
    """Reads our annotations and gathers every error, so one denial lists all problems."""

    def __init__(self, annotations: Mapping[str, str]) -> None:
        self.annotations = annotations
        self.errors: list[AnnotationError] = []
        self._read: dict[str, str | None] = {}  # features share keys (default-container, ...): check each once

    def get(self, key: str) -> str | None:
        if key in self._read:
            return self._read[key]
        value = self.annotations.get(key)
        checked: str | None = None
        if value is None:
            pass
        elif not isinstance(value, str):
            self.fail(key, str(value), "must be a string")
        elif len(value) > MAX_VALUE_LENGTH:
            self.fail(key, value, f"is longer than {MAX_VALUE_LENGTH} characters")
        elif _CONTROL.search(value):
            self.fail(key, value, "must not contain control characters (newlines, tabs, NUL)")
        else:
            checked = value.strip()
        self._read[key] = checked
        return checked

    def fail(self, key: str, value: str, reason: str) -> None:
        error = AnnotationError(key, value, reason)
        if error not in self.errors:  # features share keys (default-container): one line per problem
            self.errors.append(error)


def unknown_keys(annotations: Mapping[str, str]) -> list[str]:
    return sorted(k for k in annotations if k.startswith(PREFIX) and k not in KNOWN_KEYS)


def wants_injection(annotations: Mapping[str, str]) -> bool:
    return any(key in annotations for key in FEATURE_KEYS)
