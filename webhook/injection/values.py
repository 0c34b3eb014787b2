"""Strict parsers for annotation values. Each returns the parsed value or records an error and returns None.

Values reach nginx configs and container args, so the grammar is deliberately narrow: what a
legitimate value needs and nothing a hostile one could use to escape (quotes, `;`, `{}`, `$`, spaces).
"""

from __future__ import annotations

import ipaddress
import json
import posixpath
import re
from typing import Any
from urllib.parse import urlsplit

from webhook.injection.annotations import AnnotationReader
from webhook.injection.config import (
    DNS_LABEL,
    IMAGE_REF,
    RESOURCE_NAMES,
    InjectorConfig,
    Resources,
    parse_quantity,
)

DNS_SUBDOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
PORT_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?$")  # IANA_SVC_NAME, as Kubernetes
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]{0,252}$")
SAFE_PATH = re.compile(r"^/[A-Za-z0-9._@+=,/-]*$")
HTTP_PATH = re.compile(r"^/[A-Za-z0-9._~!*'()@:+=,/%-]*$")
PROBE_PATH = re.compile(r"^/[A-Za-z0-9._~/-]{0,255}$")
GIT_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")
DURATION = re.compile(r"^([0-9]{1,6})(s|m|h)?$")
AUTH_PATH = re.compile(r"^/[A-Za-z0-9._~/-]{0,255}$")  # literal in proxy_pass: nothing to decode, no query
HEADER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,62}[A-Za-z0-9]$")
# Headers the proxy sets itself, or that frame the request: an auth answer must not replace them.
RESERVED_HEADERS = frozenset(
    {
        "host",
        "connection",
        "upgrade",
        "content-length",
        "transfer-encoding",
        "te",
        "trailer",
        "keep-alive",
        "proxy-connection",
        "x-forwarded-for",
        "x-forwarded-proto",
        "www-authenticate",
        "authorization",
        "cookie",
    }
)

# Directories an emptyDir must never shadow (the container would lose its own files or its token).
PROTECTED_DIRS = ("/", "/usr", "/usr/local", "/var", "/run", "/opt", "/home", "/root")
PROTECTED_PREFIXES = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/sbin",
    "/sys",
    "/usr/bin",
    "/usr/sbin",
    "/usr/lib",
    "/usr/libexec",
    "/usr/local/bin",
    "/usr/local/sbin",
    "/usr/local/lib",
    "/var/run/secrets",
    "/run/secrets",
)


def port_number(r: AnnotationReader, key: str, value: str) -> int | None:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        r.fail(key, value, "expected a port number from 1 to 65535")
        return None
    return int(value)


def port_ref(r: AnnotationReader, key: str, value: str) -> int | str | None:
    """A port by number or by name, as a probe or Service targetPort would write it."""
    if value.isdigit():
        return port_number(r, key, value)
    if not PORT_NAME.match(value):
        r.fail(key, value, "expected a port number (1-65535) or a port name (lowercase, at most 15 characters)")
        return None
    return value


def secret_name(r: AnnotationReader, key: str, value: str) -> str | None:
    if not DNS_SUBDOMAIN.match(value):
        r.fail(key, value, "expected the name of a Secret in the pod's namespace (a DNS subdomain)")
        return None
    return value


def name_list(r: AnnotationReader, key: str, value: str) -> list[str] | None:
    names = [n.strip() for n in value.split(",")]
    bad = [n for n in names if not DNS_LABEL.match(n)]
    if bad or not names:
        r.fail(key, value, "expected comma-separated names (lowercase DNS labels)")
        return None
    if len(set(names)) != len(names):
        r.fail(key, value, "lists a name twice")
        return None
    return names


def boolean(r: AnnotationReader, key: str, value: str) -> bool | None:
    if value.lower() not in ("true", "false"):
        r.fail(key, value, 'expected "true" or "false"')
        return None
    return value.lower() == "true"


def choice(r: AnnotationReader, key: str, value: str, options: tuple[str, ...]) -> str | None:
    if value not in options:
        r.fail(key, value, "expected one of: " + ", ".join(options))
        return None
    return value


def abs_path(r: AnnotationReader, key: str, value: str, *, what: str = "path") -> str | None:
    """An absolute, normalised path with no `..` and only unremarkable characters."""
    if not value.startswith("/"):
        r.fail(key, value, f"expected an absolute {what} (starting with /)")
    elif ".." in value.split("/"):
        r.fail(key, value, f"the {what} must not contain '..'")
    elif not SAFE_PATH.match(value) or "//" in value or (len(value) > 1 and value.endswith("/")):
        r.fail(key, value, f"expected a plain {what}: letters, digits and . _ - @ + = , separated by single /")
    elif len(value) > 1024:
        r.fail(key, value, f"the {what} is longer than 1024 characters")
    else:
        return posixpath.normpath(value)
    return None


def mountable_dir(r: AnnotationReader, key: str, value: str, directory: str) -> bool:
    if directory in PROTECTED_DIRS or any(directory == p or directory.startswith(p + "/") for p in PROTECTED_PREFIXES):
        r.fail(key, value, f"cannot mount a volume at {directory}: it would hide the container's own files")
        return False
    return True


def host_port_list(r: AnnotationReader, key: str, value: str) -> list[tuple[str, int]] | None:
    targets: list[tuple[str, int]] = []
    for item in (part.strip() for part in value.split(",")):
        host, sep, port = item.rpartition(":")
        if not sep or not port.isdigit() or not 1 <= int(port) <= 65535 or not _is_host(host):
            r.fail(key, value, f"{item!r} is not host:port (a DNS name or IPv4 address, and a port 1-65535)")
            return None
        targets.append((host, int(port)))
    return targets


def _is_host(host: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(host), ipaddress.IPv4Address)
    except ValueError:
        return bool(DNS_SUBDOMAIN.match(host))


def duration_seconds(r: AnnotationReader, key: str, value: str) -> int | None:
    match = DURATION.match(value)
    seconds = int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, None: 1}[match.group(2)] if match else 0
    if not 1 <= seconds <= 86400:
        r.fail(key, value, "expected a duration from 1s to 24h: seconds, or a number with s, m or h")
        return None
    return seconds


def git_url(r: AnnotationReader, key: str, value: str, schemes: tuple[str, ...]) -> str | None:
    parts = urlsplit(value)
    host = parts.hostname or ""
    if parts.scheme not in schemes:
        r.fail(key, value, f"expected a repository URL with scheme {' or '.join(schemes)}")
    elif not _is_host(host) or parts.password:
        r.fail(key, value, "expected a URL with a valid host name and no password in it")
    elif not re.match(r"^[A-Za-z0-9._~/%+@:-]*$", parts.path) or parts.query or parts.fragment:
        r.fail(key, value, "the URL path may hold letters, digits and . _ ~ / % + @ : - only, no query")
    else:
        return value
    return None


def git_ref(r: AnnotationReader, key: str, value: str) -> str | None:
    bad = ".." in value or "//" in value or value.endswith((".lock", "/", "."))
    if bad or not GIT_REF.match(value):
        r.fail(key, value, "expected a branch or tag name (letters, digits, . _ / -; no '..')")
        return None
    return value


def env_pairs(r: AnnotationReader, key: str, value: str) -> list[tuple[str, str]] | None:
    pairs: list[tuple[str, str]] = []
    for item in (p.strip() for p in value.split(",") if p.strip()):
        name, sep, val = item.partition("=")
        if not sep or not ENV_NAME.match(name):
            r.fail(key, value, f"{item!r} is not NAME=VALUE with a valid environment variable name")
            return None
        pairs.append((name, val))
    if len({n for n, _ in pairs}) != len(pairs):
        r.fail(key, value, "sets the same variable twice")
        return None
    return pairs


def string_list_json(r: AnnotationReader, key: str, value: str) -> list[str] | None:
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = None
    if not isinstance(parsed, list) or not all(isinstance(a, str) and a.isprintable() for a in parsed):
        r.fail(key, value, 'expected a JSON list of strings, e.g. ["--flag=value"]')
        return None
    return parsed


def http_path(r: AnnotationReader, key: str, value: str) -> str | None:
    if not HTTP_PATH.match(value) or len(value) > 256:
        r.fail(key, value, "expected an HTTP path such as /metrics")
        return None
    return value


def image(r: AnnotationReader, key: str, value: str, config: InjectorConfig) -> str | None:
    if not IMAGE_REF.match(value):
        r.fail(key, value, "expected an image reference such as registry.example.com/team/img:1.2.3")
        return None
    if not config.image_allowed(value):
        r.fail(key, value, "this image is not in the injector's image allowlist: " + ", ".join(config.image_allowlist))
        return None
    return value


def _is_quantity(text: str) -> bool:
    try:
        parse_quantity(text)
    except ValueError:
        return False
    return True


def image_and_resources(
    r: AnnotationReader,
    config: InjectorConfig,
    image_key: str,
    resources_key: str,
    default_image: str,
    default_resources: Resources,
) -> tuple[str | None, Any]:
    """A component's image and resources, with the pod's `<feature>-image` / `-resources` overrides."""
    chosen: str | None = default_image
    if (raw := r.get(image_key)) is not None:
        chosen = image(r, image_key, raw, config)
    merged: Any = default_resources.as_dict()
    if (raw := r.get(resources_key)) is not None:
        merged = resources(r, resources_key, raw, default_resources)
    return chosen, merged


def resources(r: AnnotationReader, key: str, value: str, default: Resources) -> dict[str, Any] | None:
    """JSON {"requests": {...}, "limits": {...}} merged over the default; both cpu and memory stay set."""
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = None
    expected = 'expected JSON like {"requests": {"cpu": "50m"}, "limits": {"memory": "128Mi"}}'
    if not isinstance(parsed, dict) or not set(parsed) <= {"requests", "limits"}:
        r.fail(key, value, expected)
        return None
    merged = default.as_dict()
    for part, values in parsed.items():
        if not isinstance(values, dict):
            r.fail(key, value, expected)
            return None
        for name, quantity in values.items():
            if name not in RESOURCE_NAMES or not isinstance(quantity, str | int) or not _is_quantity(str(quantity)):
                r.fail(
                    key,
                    value,
                    f"{part}.{name}: expected a resource ({', '.join(RESOURCE_NAMES)}) "
                    "and a Kubernetes quantity such as 100m or 64Mi",
                )
                return None
            merged[part][name] = str(quantity)
    # The API server rejects requests above limits: lowering only a limit lowers our default request with
    # it; a request the author set above a limit is their mistake to fix.
    for name, request in list(merged["requests"].items()):
        limit = merged["limits"].get(name)
        if limit is not None and parse_quantity(request) > parse_quantity(limit):
            if name in (parsed.get("requests") or {}):
                r.fail(key, value, f"requests.{name} {request} exceeds limits.{name} {limit}")
                return None
            merged["requests"][name] = limit
    return merged


def egress_routes(r: AnnotationReader, key: str, value: str) -> list[tuple[int, str, int, str]] | None:
    """`<local port>=<host>:<port>[@<name>][,...]`: the host a DNS name (lowercase) or an IPv4 address; the
    name (a DNS name, default: the host) is what the certificate must carry and what SNI sends."""
    routes: list[tuple[int, str, int, str]] = []
    for item in (part.strip() for part in value.split(",")):
        local, sep, target = item.partition("=")
        target, at, name = target.partition("@")
        host, colon, port = target.rpartition(":")
        if (
            not sep
            or not colon
            or not local.isdigit()
            or not 1 <= int(local) <= 65535
            or not port.isdigit()
            or not 1 <= int(port) <= 65535
            or not _is_host(host)
            or (at and not DNS_SUBDOMAIN.match(name))
        ):
            r.fail(
                key,
                value,
                f"{item!r} is not <local port>=<host>:<port>[@<name>] (ports 1-65535, the host a DNS name or IPv4 "
                "address, the name a DNS name)",
            )
            return None
        routes.append((int(local), host, int(port), name or host))
    locals_ = [route[0] for route in routes]
    if len(set(locals_)) != len(locals_):
        r.fail(key, value, "uses a local port twice")
        return None
    return routes


def auth_url(r: AnnotationReader, key: str, value: str) -> tuple[str, int, str] | None:
    """`https://<host>[:port]/<path>` as (host, port, path); no credentials, query or fragment."""
    try:
        parts = urlsplit(value)
        # An explicit port must be 1-65535 (urlsplit reads ":0" as 0 and ":" as None, both refused).
        port = (parts.port or 0) if ":" in parts.netloc.rpartition("@")[2] else 443
    except ValueError:
        parts, port = None, 0
    if parts is None or parts.scheme != "https" or not 1 <= port <= 65535:
        r.fail(key, value, "expected https://<host>[:port]/<path>")
    elif parts.username is not None or parts.query or parts.fragment or "?" in value or "#" in value:
        r.fail(key, value, "the URL must hold no user, password, query or fragment")
    elif not _is_host(parts.hostname or "") or (parts.hostname or "") not in parts.netloc:
        r.fail(key, value, "the host must be a DNS name (lowercase) or an IPv4 address")
    elif not AUTH_PATH.match(parts.path):
        r.fail(key, value, "the path must start with / and hold letters, digits and . _ ~ / - only")
    else:
        return parts.hostname or "", port, parts.path
    return None


def header_names(r: AnnotationReader, key: str, value: str) -> list[str] | None:
    """Comma-separated HTTP header names (letters, digits, -), none the proxy sets or needs itself."""
    names = [n.strip() for n in value.split(",")]
    if not names or any(not HEADER_NAME.match(n) for n in names) or len(names) > 16:
        r.fail(key, value, "expected up to 16 comma-separated header names (letters, digits and -), e.g. X-Auth-User")
        return None
    lowered = [n.lower() for n in names]
    if len(set(lowered)) != len(lowered):
        r.fail(key, value, "names a header twice")
        return None
    reserved = sorted(n for n in names if n.lower() in RESERVED_HEADERS)
    if reserved:
        r.fail(key, value, f"{', '.join(reserved)}: set by the proxy itself or by the client, not by the auth service")
        return None
    return names
