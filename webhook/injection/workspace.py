"""The pod under construction: copy-on-write views of the parts injection changes.

The input pod is never modified and never deep-copied: a container is shallow-copied the first
time a feature edits it, so untouched parts of the new pod are the very same objects as in the old
one. That keeps injection linear in pod size and lets the patch builder skip them by identity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from webhook.injection import annotations as keys
from webhook.injection.annotations import AnnotationReader

Json = dict[str, Any]

INJECTED_PREFIX = "podpatterns-"


@dataclass
class Injected:
    """What the features add, kept apart until assembly so their order is decided in one place."""

    init_steps: list[Json] = field(default_factory=list)  # run-to-completion, in annotation order
    sidecars: list[Json] = field(default_factory=list)  # long-running: proxy, exporter, tailers, templates
    volumes: list[Json] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)


class Workspace:
    def __init__(self, pod: Json, reader: AnnotationReader) -> None:
        self.pod = pod
        self.reader = reader
        spec = pod.get("spec") or {}
        self.spec: Json = spec
        self.containers: list[Json] = list(spec.get("containers") or [])
        self.init_containers: list[Json] = list(spec.get("initContainers") or [])
        self.volumes: list[Json] = list(spec.get("volumes") or [])
        self.annotations: dict[str, str] = (pod.get("metadata") or {}).get("annotations") or {}
        self.added = Injected()
        self.warnings: list[str] = []
        self.sysctls: list[Json] = []
        # Pod-level spec fields a feature sets (config-reload's shareProcessNamespace), README's one exception.
        self.spec_fields: Json = {}
        # Ports the TLS proxy moved: original number -> localhost port the app now listens on.
        self.moved_ports: dict[int, int] = {}
        # Loopback ports our sidecars listen on without declaring them (the TLS tunnel's local ports).
        self.reserved_ports: set[int] = set()
        self.native = True  # sidecars become native ones (initContainers, restartPolicy Always)
        self._copies: dict[int, Json] = {}  # id(original container) -> its private copy

    # --- lookups -----------------------------------------------------------------------------
    def container_names(self) -> set[str]:
        names = {c.get("name") for c in self.containers + self.init_containers}
        names.update(c.get("name") for c in self.added.init_steps + self.added.sidecars)
        return {n for n in names if isinstance(n, str)}

    def volume_names(self) -> set[str]:
        return {v.get("name") for v in self.volumes + self.added.volumes if isinstance(v.get("name"), str)}

    def used_ports(self) -> set[int]:
        used = set(self.moved_ports.values()) | self.reserved_ports
        for c in self.containers + self.init_containers + self.added.sidecars:
            for p in c.get("ports") or []:
                if isinstance(p.get("containerPort"), int):
                    used.add(p["containerPort"])
        return used

    def leading_sidecars(self) -> int:
        """How many of the pod's initContainers are native sidecars ahead of the rest (a mesh proxy such as
        istio-proxy): they keep their place, first, so they start before anything we inject."""
        lead = 0
        while lead < len(self.init_containers) and self.init_containers[lead].get("restartPolicy") == "Always":
            lead += 1
        return lead

    def find(self, name: str) -> Json | None:
        return next((c for c in self.containers if c.get("name") == name), None)

    def target_container(self, key: str) -> Json | None:
        """The container a feature applies to: `<feature>-container`, else default-container, else first."""
        chosen = self.reader.get(key)
        source = key
        if chosen is None and self.annotations.get(keys.DEFAULT_CONTAINER):
            chosen, source = self.annotations[keys.DEFAULT_CONTAINER], keys.DEFAULT_CONTAINER
        if chosen is None:
            if not self.containers:
                self.reader.fail(key, "", "the pod has no containers")
                return None
            return self.containers[0]
        container = self.find(chosen)
        if container is None:
            names = ", ".join(str(c.get("name")) for c in self.containers)
            self.reader.fail(source, chosen, f"the pod has no container of that name (containers: {names})")
        return container

    # --- edits -------------------------------------------------------------------------------
    def edit(self, container: Json) -> Json:
        """A private copy of one of the pod's containers, put in its place; later edits reuse it."""
        if id(container) in self._copies:
            return self._copies[id(container)]
        if any(copy is container for copy in self._copies.values()):
            return container
        for group in (self.containers, self.init_containers):
            for i, c in enumerate(group):
                if c is container:
                    copy = dict(container)
                    group[i] = copy
                    self._copies[id(container)] = copy
                    return copy
        raise KeyError(container.get("name"))

    def edit_of(self, container: Json) -> Json | None:
        """The copy made of `container`, if any."""
        return self._copies.get(id(container))

    def claim_container_name(self, key: str, name: str) -> bool:
        if name in self.container_names():
            self.reader.fail(
                key,
                self.annotations.get(key, ""),
                f"the pod already has a container named {name!r}; rename it to inject",
            )
            return False
        return True

    def claim_volume_name(self, key: str, name: str) -> bool:
        if name in self.volume_names():
            self.reader.fail(
                key, self.annotations.get(key, ""), f"the pod already has a volume named {name!r}; rename it to inject"
            )
            return False
        return True
