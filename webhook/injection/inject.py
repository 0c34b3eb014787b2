"""The pure core: a pod (plain dict, as the API server sent it) and the config in; the new pod out.

No I/O, no globals, no typed round-trip of the pod (that would drop fields we do not know). Order of
what is added, documented in README.md and pinned by golden tests:

- initContainers: native sidecars the pod already starts with (a mesh proxy keeps its place, first); then
  our run-to-completion steps (wait-for, git clone, init templates); then, with native sidecars, ours (TLS
  proxy, exporter, log tailers, sidecar templates) with `restartPolicy: Always`; then the pod's other
  initContainers, untouched and in their order;
- containers: the pod's own, then (classic sidecars) ours in the same order;
- volumes: the pod's own, then ours.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from webhook import __version__
from webhook.injection import annotations as keys
from webhook.injection import (
    cache,
    config_reload,
    exporter,
    init_steps,
    log_tail,
    service_account,
    tls_egress,
    tls_proxy,
    values,
)
from webhook.injection.annotations import AnnotationReader
from webhook.injection.config import InjectorConfig
from webhook.injection.errors import AnnotationError, InvalidAnnotations
from webhook.injection.workspace import Json, Workspace

Feature = Callable[[Workspace, InjectorConfig], None]

# The TLS tunnel out comes first: it claims loopback ports the TLS proxy must not move the app to, and
# its sidecar then starts first. The TLS proxy moves the app's port, which the exporter must then follow.
FEATURES: tuple[tuple[str, Feature], ...] = (
    (keys.TLS_EGRESS, tls_egress.apply),
    (keys.TLS_PROXY, tls_proxy.apply),
    (keys.EXPORTER, exporter.apply),
    (keys.LOG_TAIL, log_tail.apply),
    # After the TLS proxy: a reload URL follows the app to its moved port; the cache's port check sees it.
    (keys.CONFIG_RELOAD, config_reload.apply),
    (keys.CACHE, cache.apply),
    (keys.INIT_WAIT_FOR, init_steps.apply_wait_for),
    (keys.INIT_GIT_CLONE, init_steps.apply_git_clone),
    (keys.INIT_TEMPLATES, init_steps.apply_init_templates),
    (keys.SIDECAR_TEMPLATES, init_steps.apply_sidecar_templates),
)


NOTHING_ASKED = "no podpatterns annotation"


@dataclass(frozen=True)
class Result:
    pod: Json  # the input object itself when nothing changes
    warnings: tuple[str, ...] = ()
    injected: tuple[str, ...] = ()  # feature names, for logs and metrics
    reason: str = "injected"
    status: Json = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.injected)


def _annotations(metadata: Json) -> dict[str, str]:
    found = metadata.get("annotations") or {}
    return found if isinstance(found, dict) else {}


def _opted_out(metadata: Json, annotations: dict[str, str]) -> bool:
    labels = metadata.get("labels")
    for source in (annotations, labels if isinstance(labels, dict) else None):
        value = source.get(keys.INJECT) if source else None
        if value is not None and str(value).lower() == "false":
            return True
    return False


def _check_status(pod: Json, raw: str) -> Result:
    """An injected pod comes back (reinvocation, `inject` run twice): verify and change nothing."""
    problem = None
    try:
        status = orjson.loads(raw)
    except orjson.JSONDecodeError:
        status = None
    if not isinstance(status, dict):
        problem = "is not the JSON that podpatterns writes"
    else:
        spec = pod.get("spec") or {}
        present = {
            "containers": {c.get("name") for c in spec.get("containers") or []},
            "initContainers": {c.get("name") for c in spec.get("initContainers") or []},
            "volumes": {v.get("name") for v in spec.get("volumes") or []},
        }
        for group, names in present.items():
            recorded = status.get(group) or []
            if not isinstance(recorded, list) or not all(isinstance(n, str) for n in recorded):
                problem = f"has a malformed {group} list; remove {keys.STATUS} to inject again"
                break
            missing = [n for n in recorded if n not in names]
            if missing:
                problem = (
                    f"says {', '.join(map(str, missing))} were injected, but the pod has no such {group}; "
                    f"remove {keys.STATUS} to inject again"
                )
                break
    if problem:
        raise InvalidAnnotations([AnnotationError(keys.STATUS, raw, problem)])
    return Result(pod=pod, reason="already injected", status=status or {})


# A hint costs a fuzzy match against every known key; a pod could carry thousands of unknown keys.
MAX_UNKNOWN_KEY_WARNINGS = 10


def _warnings_for_keys(annotations: dict[str, str]) -> list[str]:
    warnings = []
    unknown = keys.unknown_keys(annotations)
    for key in unknown[:MAX_UNKNOWN_KEY_WARNINGS]:
        close = difflib.get_close_matches(key, sorted(keys.KNOWN_KEYS), n=1, cutoff=0.8)
        hint = f"did you mean {close[0]}?" if close else "see the annotation reference in README.md"
        warnings.append(f"unknown annotation {key}: podpatterns ignores it ({hint})")
    if len(unknown) > MAX_UNKNOWN_KEY_WARNINGS:
        warnings.append(f"and {len(unknown) - MAX_UNKNOWN_KEY_WARNINGS} more unknown {keys.PREFIX} annotations")
    for option, feature in keys.OPTION_OF.items():
        if option in annotations and feature not in annotations:
            warnings.append(f"annotation {option} has no effect without {feature}")
    return warnings


def skip_reason(pod: Json) -> str | None:
    """Why inject() changes nothing without reading any annotation's value ("opted out", or no key of
    ours at all), or None when it has work to do. Cheap: it runs for every pod in scope."""
    metadata = pod.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    annotations = _annotations(metadata)
    if _opted_out(metadata, annotations):
        return "opted out"
    for key in annotations:
        if key.startswith(keys.PREFIX):
            return None
    return NOTHING_ASKED


def inject(pod: Json, config: InjectorConfig) -> Result:
    """Inject what the pod's annotations ask for. Raises InvalidAnnotations listing every problem."""
    if (reason := skip_reason(pod)) is not None:
        return Result(pod=pod, reason=reason)
    annotations = _annotations(pod["metadata"])
    if keys.STATUS in annotations:
        return _check_status(pod, str(annotations[keys.STATUS]))
    if not keys.wants_injection(annotations):
        return Result(pod=pod, reason=NOTHING_ASKED, warnings=tuple(_warnings_for_keys(annotations)))

    reader = AnnotationReader(annotations)
    if keys.INJECT in annotations:
        values.boolean(reader, keys.INJECT, reader.get(keys.INJECT) or "")
    native = config.native_sidecars
    if (raw := reader.get(keys.NATIVE_SIDECARS)) is not None:
        native = bool(values.boolean(reader, keys.NATIVE_SIDECARS, raw))
    ws = Workspace(pod, reader)
    ws.native = native
    ws.warnings += _warnings_for_keys(annotations)
    injected = []
    for key, apply in FEATURES:
        if key in annotations:
            apply(ws, config)
            injected.append(key.removeprefix(keys.PREFIX))
    if injected:
        service_account.withhold_token(ws)
    if reader.errors:
        raise InvalidAnnotations(reader.errors, ws.warnings)
    return _assemble(pod, ws, config, native=native, injected=tuple(injected))


def _assemble(pod: Json, ws: Workspace, config: InjectorConfig, *, native: bool, injected: tuple[str, ...]) -> Result:
    sidecars = ws.added.sidecars
    # Native sidecars already leading the pod's initContainers (a mesh proxy such as istio-proxy) stay
    # first: with CNI traffic capture our wait-for and git clone need them running to reach the network.
    lead = ws.leading_sidecars()
    before, after = ws.init_containers[:lead], ws.init_containers[lead:]
    if native:
        sidecars = [{**c, "restartPolicy": "Always"} for c in sidecars]
        init_containers = [*before, *ws.added.init_steps, *sidecars, *after]
        containers = ws.containers
    else:
        init_containers = [*before, *ws.added.init_steps, *after]
        containers = [*ws.containers, *sidecars]

    status = {
        "containers": [] if native else [c["name"] for c in sidecars],
        "initContainers": [c["name"] for c in ws.added.init_steps] + ([c["name"] for c in sidecars] if native else []),
        "volumes": [v["name"] for v in ws.added.volumes],
        "features": list(injected),
        "version": __version__,
        "config": config.fingerprint,  # which config injected it: `podpatterns audit` tells current from stale
    }
    metadata = dict(pod.get("metadata") or {})
    metadata["annotations"] = {
        **ws.annotations,
        **ws.added.annotations,
        keys.STATUS: orjson.dumps(status, option=orjson.OPT_SORT_KEYS).decode(),
    }
    spec = dict(ws.spec)
    spec["containers"] = containers
    if init_containers:
        spec["initContainers"] = init_containers
    if ws.added.volumes:
        spec["volumes"] = [*ws.volumes, *ws.added.volumes]
    spec.update(ws.spec_fields)
    if ws.sysctls:
        security = dict(spec.get("securityContext") or {})
        present = {s.get("name") for s in security.get("sysctls") or []}
        added = [s for s in ws.sysctls if s["name"] not in present]
        if added:
            security["sysctls"] = [*(security.get("sysctls") or []), *added]
            spec["securityContext"] = security
    return Result(
        pod={**pod, "metadata": metadata, "spec": spec}, warnings=tuple(ws.warnings), injected=injected, status=status
    )
