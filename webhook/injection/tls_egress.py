"""Ambassador out: the app speaks plain text to 127.0.0.1:<local port>, an nginx (stream) carries it over
verified TLS to the server (a database, a broker: any TCP protocol whose server expects TLS from the first byte).

Its own container, not the TLS proxy's nginx: a server that is down, a name that does not resolve or a bad
CA then stops the tunnel alone, never the proxy that serves the app's port (and the reverse); each has its
own resources, and the proxy's start script (listen rewriting for IPv6) stays about one server.
"""

from __future__ import annotations

from webhook.injection import annotations as keys
from webhook.injection import nginx_conf, values
from webhook.injection.config import InjectorConfig
from webhook.injection.security import restricted
from webhook.injection.workspace import Workspace

CONTAINER = "podpatterns-tls-egress"
VOLUME_CA = "podpatterns-egress-ca"
VOLUME_CLIENT = "podpatterns-egress-client"
VOLUME_TMP = "podpatterns-tls-egress-tmp"
CONF_ENV = "PODPATTERNS_NGINX_CONF"
ROUTES_ENV = "PODPATTERNS_TLS_EGRESS"  # the routes, one line, for the start line in `kubectl logs`
CONF_FILE = f"{nginx_conf.TMP_DIR}/nginx.conf"
PID_FILE = f"{nginx_conf.TMP_DIR}/nginx.pid"
# A constant, run by the image's sh; its arguments are paths of ours. The CA and client certificate are
# literal paths in the config, so `nginx -t` loads them (and matches the key to the certificate) and
# resolves every host: a garbled Secret or an unknown name stops the container with nginx's error.
# The pid file, written once nginx listens, is what the startup probe waits for (kubelet cannot reach
# 127.0.0.1 from outside the pod); an old one from a previous run of the container is removed first, and
# the empty one `nginx -t` leaves behind (it checks that the file can be created) before nginx starts.
START_SCRIPT = rf"""for file in "$@"; do
  if [ ! -s "$file" ]; then
    echo "podpatterns: $file is missing or empty: the Secret mounted at ${{file%/*}} must hold it" >&2
    exit 1
  fi
done
rm -f {PID_FILE}
printf '%s' "${CONF_ENV}" > {CONF_FILE} || exit 1
if ! nginx -t -q -e stderr -c {CONF_FILE}; then
  echo "podpatterns: the TLS tunnel cannot start (nginx's error above names the file or host): ca.crt must hold" \
    "PEM CA certificates, tls.crt and tls.key a PEM certificate and its own key, and every host must resolve" >&2
  exit 1
fi
rm -f {PID_FILE}
printf 'podpatterns: tls-egress %s\n' "${ROUTES_ENV}" >&2
exec nginx -e stderr -c {CONF_FILE}
"""


def start_command(*, own_ca: bool, client_cert: bool) -> list[str]:
    files: list[str] = []
    if own_ca:
        files.append(f"{nginx_conf.EGRESS_CA_DIR}/ca.crt")
    if client_cert:
        files += [f"{nginx_conf.EGRESS_CLIENT_DIR}/tls.crt", f"{nginx_conf.EGRESS_CLIENT_DIR}/tls.key"]
    return ["sh", "-c", START_SCRIPT, CONTAINER, *files]


def apply(ws: Workspace, config: InjectorConfig) -> None:
    r = ws.reader
    raw = r.get(keys.TLS_EGRESS) or ""
    routes = values.egress_routes(r, keys.TLS_EGRESS, raw)
    ca = r.get(keys.TLS_EGRESS_CA)
    if ca is not None:
        ca = values.secret_name(r, keys.TLS_EGRESS_CA, ca)
    client = r.get(keys.TLS_EGRESS_CLIENT_CERT)
    if client is not None:
        client = values.secret_name(r, keys.TLS_EGRESS_CLIENT_CERT, client)
    image, resources = values.image_and_resources(
        r,
        config,
        keys.TLS_EGRESS_IMAGE,
        keys.TLS_EGRESS_RESOURCES,
        config.tls_egress.image,
        config.tls_egress.resources,
    )
    if (
        routes is None
        or image is None
        or resources is None
        or (ca is None and keys.TLS_EGRESS_CA in ws.annotations)
        or (client is None and keys.TLS_EGRESS_CLIENT_CERT in ws.annotations)
    ):
        return
    # The app's loopback is shared by every container: a port taken there (declared, or the app's port that
    # the TLS proxy moved) would leave nginx unable to bind, or the app talking to the wrong listener.
    used = ws.used_ports()
    for local, *_ in routes:
        if local in used:
            r.fail(keys.TLS_EGRESS, raw, f"local port {local} is already used in this pod; choose another")
            return
    if not ws.claim_container_name(keys.TLS_EGRESS, CONTAINER):
        return
    for volume in (VOLUME_TMP,) + ((VOLUME_CA,) if ca else ()) + ((VOLUME_CLIENT,) if client else ()):
        if not ws.claim_volume_name(keys.TLS_EGRESS, volume):
            return
    ws.reserved_ports.update(route[0] for route in routes)

    trusted = f"{nginx_conf.EGRESS_CA_DIR}/ca.crt" if ca else config.tls_egress.system_ca_bundle
    spec = nginx_conf.EgressSpec(
        routes=tuple(nginx_conf.EgressRoute(local, host, port, name) for local, host, port, name in routes),
        trusted_ca=trusted,
        client_cert=bool(client),
        load_modules=config.tls_proxy.load_modules,
    )
    summary = ", ".join(
        f"127.0.0.1:{local} -> {host}:{port}" + (f" (as {name})" if name != host else "")
        for local, host, port, name in routes
    )
    summary += f" (TLS verified against {trusted}{', with a client certificate' if client else ''})"
    mounts = [{"mountPath": nginx_conf.TMP_DIR, "name": VOLUME_TMP}]
    if ca:
        mounts.append({"mountPath": nginx_conf.EGRESS_CA_DIR, "name": VOLUME_CA, "readOnly": True})
    if client:
        mounts.append({"mountPath": nginx_conf.EGRESS_CLIENT_DIR, "name": VOLUME_CLIENT, "readOnly": True})
    ws.added.sidecars.append(
        {
            "name": CONTAINER,
            "image": image,
            "command": start_command(own_ca=bool(ca), client_cert=bool(client)),
            "env": [
                {"name": CONF_ENV, "value": nginx_conf.render_egress(spec)},
                {"name": ROUTES_ENV, "value": summary},
            ],
            # As a native sidecar, the pod's init containers and the app start only once this passes: nginx
            # wrote its pid file, so it listens.
            "startupProbe": {
                "exec": {"command": ["cat", PID_FILE]},
                "periodSeconds": 1,
                "timeoutSeconds": 1,
                "failureThreshold": 30,
            },
            "resources": resources,
            "securityContext": restricted(config.tls_egress.run_as_user),
            "volumeMounts": mounts,
        }
    )
    ws.added.volumes.append({"name": VOLUME_TMP, "emptyDir": {"sizeLimit": "16Mi"}})
    if ca:
        ws.added.volumes.append(
            {"name": VOLUME_CA, "secret": {"secretName": ca, "items": [{"key": "ca.crt", "path": "ca.crt"}]}}
        )
    if client:
        ws.added.volumes.append(
            {
                "name": VOLUME_CLIENT,
                "secret": {
                    "secretName": client,
                    "items": [{"key": "tls.crt", "path": "tls.crt"}, {"key": "tls.key", "path": "tls.key"}],
                },
            }
        )
