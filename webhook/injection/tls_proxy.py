"""Ambassador: an nginx container takes over the app's port (number and name) and terminates TLS.

The app moves to 127.0.0.1:<app port>; kubelet probes that targeted the moved port are rewritten to
go through the proxy, because kubelet dials the pod IP, where only nginx now listens.
"""

from __future__ import annotations

import itertools
from typing import Any

import orjson

from webhook.injection import annotations as keys
from webhook.injection import nginx_conf, values
from webhook.injection.config import InjectorConfig
from webhook.injection.security import restricted
from webhook.injection.workspace import Json, Workspace

CONTAINER = "podpatterns-tls-proxy"
VOLUME_TLS = "podpatterns-tls"
VOLUME_CLIENT_CA = "podpatterns-client-ca"
VOLUME_AUTH_CA = "podpatterns-auth-ca"
CONF_ENV = "PODPATTERNS_NGINX_CONF"
IF_INET6 = "/proc/net/if_inet6"  # the pod's IPv6 addresses, one a line; empty or absent without IPv6
CONF_FILE = f"{nginx_conf.TMP_DIR}/nginx.conf"
CHECK_FILE = f"{nginx_conf.TMP_DIR}/nginx-check.conf"
CHECK_SOCKET = f"{nginx_conf.TMP_DIR}/nginx-check.sock"  # `nginx -t` listens, briefly: not on the real port
# A constant, run by the image's sh (busybox or alpine ash: POSIX sh, printf and sed only); its arguments
# are the certificate files nginx needs, paths of ours, never an annotation value. The served config
# reads the pair through a variable, at each handshake, so nginx would start (and pass its TCP probes)
# with an unusable Secret: the check config names the files literally, and `nginx -t` loads the pair
# and matches the key to the certificate before nginx starts. `nginx -t` also opens its listening
# sockets: the check's is a unix socket (removed after the test), so no probe ever meets a passing
# listener on the real port. (-s is no test for /proc files, whose size is 0: read a line instead.)
START_SCRIPT = rf"""for file in "$@"; do
  if [ ! -s "$file" ]; then
    echo "podpatterns: $file is missing or empty: the Secret mounted at ${{file%/*}} must hold it" >&2
    exit 1
  fi
done
if [ -r {IF_INET6} ] && read -r address < {IF_INET6}; then
  printf '%s' "${CONF_ENV}" > {CONF_FILE}
else
  echo "podpatterns: the pod has no IPv6 address: listening on IPv4 only" >&2
  printf '%s' "${CONF_ENV}" | sed 's/^\( *listen \)\[::\]:\([0-9]*\) ssl ipv6only=off;$/\1\2 ssl;/' > {CONF_FILE}
fi || exit 1
sed -e 's|\$podpatterns_tls_dir/|{nginx_conf.TLS_DIR}/|' \
  -e 's|^\( *\)listen .*;$|\1listen unix:{CHECK_SOCKET} ssl;|' {CONF_FILE} > {CHECK_FILE} || exit 1
if ! nginx -t -q -e stderr -c {CHECK_FILE}; then
  echo "podpatterns: nginx cannot start with these files (its error above names the one): tls.crt and tls.key" \
    "must be a PEM certificate and its own key, ca.crt (mutual TLS, auth CA) PEM CA certificates;" \
    "an auth service's host must resolve" >&2
  exit 1
fi
exec nginx -e stderr -c {CONF_FILE}
"""


def start_command(*, mutual_tls: bool, auth_ca: bool = False) -> list[str]:
    """The proxy container's command: the constant script and the files it checks."""
    files = [f"{nginx_conf.TLS_DIR}/tls.crt", f"{nginx_conf.TLS_DIR}/tls.key"]
    if mutual_tls:
        files.append(f"{nginx_conf.CLIENT_CA_DIR}/ca.crt")
    if auth_ca:
        files.append(f"{nginx_conf.AUTH_CA_DIR}/ca.crt")
    return ["sh", "-c", START_SCRIPT, CONTAINER, *files]


UNPRIVILEGED_PORT_SYSCTL = "net.ipv4.ip_unprivileged_port_start"
VOLUME_TMP = "podpatterns-tls-proxy-tmp"
PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
HOOKS = ("postStart", "preStop")


def _resolve_port(ws: Workspace, key: str, raw: str, container: Json) -> Json | None:
    """The port entry to take over, by name or number; the default is the container's only port."""
    ports = [p for p in container.get("ports") or [] if isinstance(p, dict)]
    r = ws.reader
    if not raw:
        if len(ports) != 1:
            r.fail(
                keys.TLS_PROXY,
                ws.annotations.get(keys.TLS_PROXY, ""),
                f"container {container.get('name')!r} declares {len(ports)} ports; "
                f"say which one to secure with {keys.TLS_PROXY_PORT}",
            )
            return None
        return ports[0]
    ref = values.port_ref(r, key, raw)
    if ref is None:
        return None
    field = "containerPort" if isinstance(ref, int) else "name"
    found = next((p for p in ports if p.get(field) == ref), None)
    if found is None and isinstance(ref, int):
        ws.warnings.append(
            f"{key}: container {container.get('name')!r} does not declare port {ref}; "
            "the TLS proxy takes it over anyway"
        )
        return {"containerPort": ref, "protocol": "TCP"}
    if found is None:
        declared = ", ".join(str(p.get("name") or p.get("containerPort")) for p in ports) or "none"
        r.fail(key, raw, f"container {container.get('name')!r} has no port named {ref!r} (ports: {declared})")
    return found


def _app_port(ws: Workspace, key: str, raw: str | None, original: int) -> int | None:
    used = ws.used_ports() | {original}
    if raw:
        port = values.port_number(ws.reader, key, raw)
        if port is not None and port in used:
            ws.reader.fail(key, raw, f"port {port} is already used in this pod")
            return None
        return port
    # The classic layout: 9200 -> 9201; else the next port nobody uses.
    for port in itertools.chain(range(original + 1, 65536), range(1024, original)):
        if port not in used:
            return port
    ws.reader.fail(keys.TLS_PROXY, ws.annotations.get(keys.TLS_PROXY, ""), "no free port for the app")
    return None


def _rewrite_handler(
    ws: Workspace,
    handler: Any,
    *,
    where: str,
    port: Json,
    match_name: bool,
    no_cert_reason: str | None,
    open_paths: list[str],
) -> Any:
    """A probe or lifecycle handler pointed at the proxy, or the handler itself when it is not affected.

    `no_cert_reason` says why kubelet (which has no client certificate) could not get through mTLS.
    """
    if not isinstance(handler, dict):
        return handler
    number, name = port["containerPort"], port.get("name")

    def hits(ref: Any) -> bool:
        return ref == number or (match_name and name is not None and ref == name)

    tls_key, tls_value = keys.TLS_PROXY, ws.annotations.get(keys.TLS_PROXY, "")
    if isinstance(handler.get("httpGet"), dict) and hits(handler["httpGet"].get("port")):
        if no_cert_reason:
            ws.reader.fail(tls_key, tls_value, f"{where} is an httpGet of port {number}: {no_cert_reason}")
            return handler
        http_get = {**handler["httpGet"], "port": number, "scheme": "HTTPS"}
        path = str(http_get.get("path") or "/").split("?", 1)[0]
        # Open probe paths go into nginx's config as exact locations, which match the *decoded* URI:
        # allow only characters that need no decoding, so the location and kubelet's request agree.
        if not values.PROBE_PATH.match(path):
            ws.reader.fail(
                tls_key,
                tls_value,
                f"{where} path {path!r} cannot be routed through the proxy (letters, digits and . _ ~ - / only)",
            )
            return handler
        open_paths.append(path)
        return {**handler, "httpGet": http_get}
    if isinstance(handler.get("tcpSocket"), dict) and hits(handler["tcpSocket"].get("port")):
        ws.warnings.append(f"{where}: the tcpSocket check of port {number} now checks the TLS proxy, not the app")
        return {**handler, "tcpSocket": {**handler["tcpSocket"], "port": number}}
    if isinstance(handler.get("grpc"), dict) and handler["grpc"].get("port") == number:
        ws.reader.fail(
            tls_key,
            tls_value,
            f"{where} is a gRPC check of port {number}; kubelet's gRPC probes "
            "cannot use TLS, so it cannot pass through the proxy: use an httpGet or tcpSocket probe",
        )
    return handler


def _rewrite_probes(
    ws: Workspace, target: Json, port: Json, *, mtls: bool, protocol: str, auth: bool = False
) -> list[str]:
    """Point kubelet's probes and hooks at the proxy; returns the probe paths mTLS or the auth gate leave open."""
    open_paths: list[str] = []
    no_cert = "kubelet presents no client certificate, which tls-proxy-client-ca requires"
    probe_reason = f"{no_cert} in tcp mode; use a tcpSocket probe" if mtls and protocol == "tcp" else None
    # Hooks are actions (a /drain), not health checks: never open them to clients without a certificate
    # or past the auth gate.
    hook_reason = f"{no_cert}; use an exec hook" if mtls else None
    if auth and not hook_reason:
        hook_reason = "kubelet has no token for the auth gate (tls-proxy-auth-url); use an exec hook"
    for container in list(ws.containers):
        is_target = container is target or ws.edit_of(target) is container
        for field in PROBES:
            handler = container.get(field)
            new = _rewrite_handler(
                ws,
                handler,
                where=f"container {container.get('name')!r} {field}",
                port=port,
                match_name=is_target,
                no_cert_reason=probe_reason,
                open_paths=open_paths,
            )
            if new is not handler:
                ws.edit(container)[field] = new
        lifecycle = container.get("lifecycle")
        if isinstance(lifecycle, dict):
            new_lifecycle = dict(lifecycle)
            for hook in HOOKS:
                new_lifecycle[hook] = _rewrite_handler(
                    ws,
                    lifecycle.get(hook),
                    where=f"container {container.get('name')!r} {hook} hook",
                    port=port,
                    match_name=is_target,
                    no_cert_reason=hook_reason,
                    open_paths=[],
                )
            if any(new_lifecycle.get(h) is not lifecycle.get(h) for h in HOOKS):
                ws.edit(container)["lifecycle"] = {k: v for k, v in new_lifecycle.items() if v is not None}
    return sorted(set(open_paths))


def apply(ws: Workspace, config: InjectorConfig) -> None:
    r = ws.reader
    secret = values.secret_name(r, keys.TLS_PROXY, r.get(keys.TLS_PROXY) or "")
    target = ws.target_container(keys.TLS_PROXY_CONTAINER)
    protocol = values.choice(r, keys.TLS_PROXY_PROTOCOL, r.get(keys.TLS_PROXY_PROTOCOL) or "http", ("http", "tcp"))
    client_ca = r.get(keys.TLS_PROXY_CLIENT_CA)
    if client_ca is not None:
        client_ca = values.secret_name(r, keys.TLS_PROXY_CLIENT_CA, client_ca)
    env_raw = r.get(keys.TLS_PROXY_APP_ENV)
    env_extra = values.env_pairs(r, keys.TLS_PROXY_APP_ENV, env_raw) if env_raw else []
    image, resources = values.image_and_resources(
        r, config, keys.TLS_PROXY_IMAGE, keys.TLS_PROXY_RESOURCES, config.tls_proxy.image, config.tls_proxy.resources
    )
    auth_ca = r.get(keys.TLS_PROXY_AUTH_CA)
    if auth_ca is not None:
        auth_ca = values.secret_name(r, keys.TLS_PROXY_AUTH_CA, auth_ca)
    auth = _auth_spec(ws, config, protocol, auth_ca)
    if None in (target, secret, protocol, env_extra, image, resources) or (
        client_ca is None and keys.TLS_PROXY_CLIENT_CA in ws.annotations
    ):
        return
    if auth is None and keys.TLS_PROXY_AUTH_URL in ws.annotations:
        return
    assert target is not None and env_extra is not None
    port = _resolve_port(ws, keys.TLS_PROXY_PORT, r.get(keys.TLS_PROXY_PORT) or "", target)
    if port is None:
        return
    number = port["containerPort"]
    if port.get("protocol", "TCP") != "TCP":
        r.fail(keys.TLS_PROXY_PORT, str(port.get("name") or number), "the TLS proxy can only take a TCP port")
        return
    app_port = _app_port(ws, keys.TLS_PROXY_APP_PORT, r.get(keys.TLS_PROXY_APP_PORT), number)
    if app_port is None or not ws.claim_container_name(keys.TLS_PROXY, CONTAINER):
        return
    for volume in (
        (VOLUME_TLS, VOLUME_TMP)
        + ((VOLUME_CLIENT_CA,) if client_ca else ())
        + ((VOLUME_AUTH_CA,) if auth and auth_ca else ())
    ):
        if not ws.claim_volume_name(keys.TLS_PROXY, volume):
            return
    existing_env = {e.get("name") for e in target.get("env") or []}
    clash = sorted(n for n, _ in env_extra if n in existing_env or n.startswith("PODPATTERNS_APP_"))
    if clash:
        r.fail(
            keys.TLS_PROXY_APP_ENV,
            env_raw or "",
            f"{', '.join(clash)}: already set on container {target.get('name')!r} or reserved "
            "(PODPATTERNS_APP_* belong to the webhook); set each variable in one place",
        )
        return
    if not _pod_can_bind(ws, number):
        return
    _warn_exec_checks(ws, number)

    open_paths = _rewrite_probes(ws, target, port, mtls=bool(client_ca), protocol=protocol, auth=bool(auth))
    _rewrite_mesh_probers(ws, number)
    if r.errors:
        return
    ws.moved_ports[number] = app_port

    # The app keeps its port entry: a declaration only (the pod shares one network namespace), so Services
    # and NetworkPolicies by name or number reach nginx, on every Kubernetes version. A named port on a
    # native sidecar is not resolved by EndpointSlices before 1.32, so nginx declares none.
    app = ws.edit(target)
    app["env"] = [
        {"name": "PODPATTERNS_APP_HOST", "value": "127.0.0.1"},
        {"name": "PODPATTERNS_APP_PORT", "value": str(app_port)},
        *app.get("env", []),
        *({"name": n, "value": v} for n, v in env_extra),
    ]

    spec = nginx_conf.ProxySpec(
        listen_port=number,
        app_port=app_port,
        protocol=protocol,
        mutual_tls=bool(client_ca),
        open_paths=tuple(open_paths),
        load_modules=config.tls_proxy.load_modules,
        auth=auth,
    )
    if number < 1024:
        # nginx runs unprivileged; the "safe" sysctl lets it bind a low port without any capability.
        ws.sysctls.append({"name": UNPRIVILEGED_PORT_SYSCTL, "value": "0"})
    mounts = [
        {"mountPath": nginx_conf.TLS_DIR, "name": VOLUME_TLS, "readOnly": True},
        {"mountPath": nginx_conf.TMP_DIR, "name": VOLUME_TMP},
    ]
    if client_ca:
        mounts.append({"mountPath": nginx_conf.CLIENT_CA_DIR, "name": VOLUME_CLIENT_CA, "readOnly": True})
    if auth and auth_ca:
        mounts.append({"mountPath": nginx_conf.AUTH_CA_DIR, "name": VOLUME_AUTH_CA, "readOnly": True})

    def check(period: int, failures: int) -> Json:
        return {
            "tcpSocket": {"port": number},
            "periodSeconds": period,
            "timeoutSeconds": 1,
            "failureThreshold": failures,
        }

    ws.added.sidecars.append(
        {
            "name": CONTAINER,
            "image": image,
            # The config travels in the container's env, which nobody can change after creation (an
            # annotation could be edited with pods/patch). The script is a constant; -e: errors to stderr
            # from the first line, as the root filesystem is read-only.
            "command": start_command(mutual_tls=bool(client_ca), auth_ca=bool(auth and auth_ca)),
            "env": [{"name": CONF_ENV, "value": nginx_conf.render(spec)}],
            "readinessProbe": check(5, 3),
            "startupProbe": check(1, 30),
            "resources": resources,
            "securityContext": restricted(config.tls_proxy.run_as_user),
            "volumeMounts": mounts,
        }
    )
    ws.added.volumes += [
        {"name": VOLUME_TLS, "secret": {"secretName": secret}},
        {"name": VOLUME_TMP, "emptyDir": {"sizeLimit": "64Mi"}},
    ]
    if client_ca:
        ws.added.volumes.append(
            {
                "name": VOLUME_CLIENT_CA,
                "secret": {"secretName": client_ca, "items": [{"key": "ca.crt", "path": "ca.crt"}]},
            }
        )
    if auth and auth_ca:
        ws.added.volumes.append(
            {"name": VOLUME_AUTH_CA, "secret": {"secretName": auth_ca, "items": [{"key": "ca.crt", "path": "ca.crt"}]}}
        )


def _auth_spec(
    ws: Workspace, config: InjectorConfig, protocol: str | None, auth_ca: str | None
) -> nginx_conf.AuthSpec | None:
    """The auth gate the annotations ask for (http mode only), or None; errors are recorded on the reader."""
    r = ws.reader
    raw = r.get(keys.TLS_PROXY_AUTH_URL)
    if raw is None:
        for option in (keys.TLS_PROXY_AUTH_RESPONSE_HEADERS, keys.TLS_PROXY_AUTH_CA):
            if option in ws.annotations:
                ws.warnings.append(f"annotation {option} has no effect without {keys.TLS_PROXY_AUTH_URL}")
        return None
    url = values.auth_url(r, keys.TLS_PROXY_AUTH_URL, raw)
    if protocol == "tcp":
        r.fail(
            keys.TLS_PROXY_AUTH_URL,
            raw,
            "the auth gate asks about HTTP requests: it needs tls-proxy-protocol http, not tcp",
        )
        return None
    headers: list[str] | None = []
    if (raw_headers := r.get(keys.TLS_PROXY_AUTH_RESPONSE_HEADERS)) is not None:
        headers = values.header_names(r, keys.TLS_PROXY_AUTH_RESPONSE_HEADERS, raw_headers)
    if url is None or headers is None or (auth_ca is None and keys.TLS_PROXY_AUTH_CA in ws.annotations):
        return None
    host, port, path = url
    trusted = f"{nginx_conf.AUTH_CA_DIR}/ca.crt" if auth_ca else config.tls_proxy.system_ca_bundle
    return nginx_conf.AuthSpec(host, port, path, trusted, tuple(headers))


MESH_PROBERS_ENV = "ISTIO_KUBE_APP_PROBERS"


def _rewrite_mesh_probers(ws: Workspace, number: int) -> None:
    """Istio (injected before us: webhooks run in name order) moved the app's probes into its agent, which
    probes the app port itself over plain HTTP: that port is nginx's now, so the agent must speak HTTPS."""
    for container in ws.containers + ws.init_containers:
        env = container.get("env") or []
        for index, var in enumerate(env):
            if var.get("name") != MESH_PROBERS_ENV or not isinstance(var.get("value"), str):
                continue
            try:
                probers = orjson.loads(var["value"])
            except orjson.JSONDecodeError:
                continue
            changed = False
            for prober in probers.values() if isinstance(probers, dict) else []:
                http_get = prober.get("httpGet") if isinstance(prober, dict) else None
                if isinstance(http_get, dict) and http_get.get("port") == number:
                    http_get["scheme"] = "HTTPS"
                    changed = True
            if changed:
                new_env = list(env)
                new_env[index] = {**var, "value": orjson.dumps(probers).decode()}
                ws.edit(container)["env"] = new_env
                ws.warnings.append(
                    f"container {container.get('name')!r}: the mesh agent's app probes of port "
                    f"{number} now use HTTPS through the TLS proxy"
                )


def _pod_can_bind(ws: Workspace, number: int) -> bool:
    """hostNetwork would put the app on the node's loopback, and net.* sysctls are refused there."""
    tls_value = ws.annotations.get(keys.TLS_PROXY, "")
    if ws.spec.get("hostNetwork"):
        ws.reader.fail(
            keys.TLS_PROXY,
            tls_value,
            "a hostNetwork pod cannot use the TLS proxy: the app's "
            "localhost port would be the node's, and nginx could not bind a low port",
        )
        return False
    for sysctl in (ws.spec.get("securityContext") or {}).get("sysctls") or []:
        value = str(sysctl.get("value", ""))
        if sysctl.get("name") == UNPRIVILEGED_PORT_SYSCTL and value.isdigit() and int(value) > number:
            ws.reader.fail(
                keys.TLS_PROXY,
                tls_value,
                f"the pod sets {UNPRIVILEGED_PORT_SYSCTL}={value}, so the unprivileged proxy could not bind "
                f"port {number}",
            )
            return False
    return True


def _warn_exec_checks(ws: Workspace, number: int) -> None:
    """exec probes run inside the container: one that calls the old port now reaches nginx, not the app."""
    for container in ws.containers:
        for field in PROBES:
            command = ((container.get(field) or {}).get("exec") or {}).get("command") or []
            if any(str(number) in str(part) for part in command):
                ws.warnings.append(
                    f"container {container.get('name')!r} {field} is an exec check that mentions "
                    f"port {number}, which is now the TLS proxy: point it at $(PODPATTERNS_APP_PORT)"
                )
