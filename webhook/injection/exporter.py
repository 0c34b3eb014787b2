"""Adapter: a Prometheus exporter beside the app, reaching it on localhost at the app's current port."""

from __future__ import annotations

from typing import Any

from webhook.injection import annotations as keys
from webhook.injection import values
from webhook.injection.config import ExporterPreset, InjectorConfig
from webhook.injection.security import restricted
from webhook.injection.workspace import Json, Workspace

CONTAINER = "podpatterns-exporter"
PORT_NAME = "metrics"
PROMETHEUS_SCRAPE = "prometheus.io/scrape"
PROMETHEUS_PORT = "prometheus.io/port"
PROMETHEUS_PATH = "prometheus.io/path"


def _target_port(ws: Workspace, target: Json, preset: ExporterPreset | None) -> int | None:
    """explicit key > the container's only declared port > the preset's usual port; then follow a move."""
    r = ws.reader
    ports = [p for p in target.get("ports") or [] if isinstance(p, dict)]
    raw = r.get(keys.EXPORTER_TARGET_PORT)
    number: int | None
    if raw:
        ref = values.port_ref(r, keys.EXPORTER_TARGET_PORT, raw)
        if isinstance(ref, str):
            found = next((p for p in ports if p.get("name") == ref), None)
            if found is None:
                r.fail(keys.EXPORTER_TARGET_PORT, raw, f"container {target.get('name')!r} has no port named {ref!r}")
                return None
            number = found["containerPort"]
        else:
            number = ref
    elif len(ports) == 1:
        number = ports[0]["containerPort"]
    elif preset is not None:
        number = preset.target_port
    else:
        r.fail(
            keys.EXPORTER,
            ws.annotations.get(keys.EXPORTER, ""),
            f"say which port the exporter should scrape with {keys.EXPORTER_TARGET_PORT}",
        )
        return None
    return ws.moved_ports.get(number, number) if number is not None else None


def apply(ws: Workspace, config: InjectorConfig) -> None:
    r = ws.reader
    name = r.get(keys.EXPORTER) or ""
    preset = config.exporters.get(name)
    custom_image = r.get(keys.EXPORTER_IMAGE)
    if preset is None and not (values.DNS_LABEL.match(name) and custom_image and r.get(keys.EXPORTER_PORT)):
        r.fail(
            keys.EXPORTER,
            name,
            "expected a preset (" + ", ".join(sorted(config.exporters)) + "), or a "
            f"custom exporter name with {keys.EXPORTER_IMAGE} and {keys.EXPORTER_PORT}",
        )
        return
    target = ws.target_container(keys.EXPORTER_CONTAINER)
    image = preset.image if preset else None
    if custom_image is not None:
        image = values.image(r, keys.EXPORTER_IMAGE, custom_image, config)
    metrics_port = preset.port if preset else None
    if (raw := r.get(keys.EXPORTER_PORT)) is not None:
        metrics_port = values.port_number(r, keys.EXPORTER_PORT, raw)
    path = preset.path if preset else "/metrics"
    if (raw := r.get(keys.EXPORTER_PATH)) is not None:
        path = values.http_path(r, keys.EXPORTER_PATH, raw)
    args: list[str] | None = list(preset.args) if preset else []
    if (raw := r.get(keys.EXPORTER_ARGS)) is not None:
        args = values.string_list_json(r, keys.EXPORTER_ARGS, raw)
    secret = r.get(keys.EXPORTER_SECRET)
    if secret is not None:
        secret = values.secret_name(r, keys.EXPORTER_SECRET, secret)
    defaults = preset.resources if preset else config.exporters["elasticsearch"].resources
    resources: Any = defaults.as_dict()
    if (raw := r.get(keys.EXPORTER_RESOURCES)) is not None:
        resources = values.resources(r, keys.EXPORTER_RESOURCES, raw, defaults)
    if target is None or image is None or metrics_port is None or path is None or args is None:
        return
    app_port = _target_port(ws, target, preset)
    if app_port is None:
        return
    if preset and preset.secret_keys and not secret:
        r.fail(
            keys.EXPORTER,
            name,
            f"the {name} exporter cannot log in to the app without credentials: set "
            f"{keys.EXPORTER_SECRET} to a Secret holding {' and '.join(preset.secret_keys)}",
        )
        return
    taken = [c.get("name") for c in ws.containers for p in c.get("ports") or [] if p.get("name") == PORT_NAME]
    if taken:
        # Kubernetes resolves a named targetPort to the first port of that name, searching the containers
        # before the native sidecars: the app's port would always win.
        note = (
            f" (and a native sidecar's named port resolves only from Kubernetes 1.32: before that, target "
            f"the exporter by number, {metrics_port})"
            if ws.native
            else ""
        )
        r.fail(
            keys.EXPORTER,
            name,
            f"container {taken[0]!r} already has a port named {PORT_NAME!r}, the name the exporter's port "
            f"takes: a Service's targetPort {PORT_NAME!r} would resolve to the app's port, never to the "
            f"exporter's; rename the app's port{note}",
        )
        return
    if metrics_port in ws.used_ports():
        r.fail(
            keys.EXPORTER_PORT if keys.EXPORTER_PORT in ws.annotations else keys.EXPORTER,
            str(metrics_port),
            f"port {metrics_port} is already used in this pod; choose another with {keys.EXPORTER_PORT}",
        )
        return
    if not ws.claim_container_name(keys.EXPORTER, CONTAINER):
        return

    port_text = str(app_port)
    container: Json = {
        "name": CONTAINER,
        "image": image,
        "ports": [{"containerPort": metrics_port, "name": PORT_NAME, "protocol": "TCP"}],
        "resources": resources,
        "securityContext": restricted(preset.run_as_user if preset else 65534),
    }
    if args:
        container["args"] = [a.replace("{port}", port_text) for a in args]
    if preset and preset.env:
        container["env"] = [{"name": k, "value": v.replace("{port}", port_text)} for k, v in preset.env.items()]
    if secret:
        # Credentials (DATA_SOURCE_USER, MYSQLD_EXPORTER_PASSWORD, ...) come from a Secret the pod may read.
        container["envFrom"] = [{"secretRef": {"name": secret}}]
    ws.added.sidecars.append(container)
    # The pod-level scrape annotations, all three or none: mixing the author's path with our port would
    # scrape a page that does not exist.
    scrape = {PROMETHEUS_SCRAPE: "true", PROMETHEUS_PORT: str(metrics_port), PROMETHEUS_PATH: path}
    own = sorted(k for k in scrape if k in ws.annotations)
    if own:
        ws.warnings.append(
            f"the pod sets {', '.join(own)} itself, so podpatterns adds no prometheus.io "
            f"annotations; the exporter serves port {metrics_port}, path {path}"
        )
    else:
        ws.added.annotations.update(scrape)
