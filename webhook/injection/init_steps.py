"""initContainers that run to completion before the pod's own: wait for dependencies, clone code, templates.

Order: every wait-for target (in the order given), then the git clone, then init templates (in the
order given). No value is ever spliced into a shell command: the wait script is a constant and
receives host, port and timeout as positional arguments; git runs without a shell.
"""

from __future__ import annotations

import copy

from webhook.injection import annotations as keys
from webhook.injection import values
from webhook.injection.config import InjectorConfig, Template
from webhook.injection.security import harden, restricted
from webhook.injection.workspace import Json, Workspace

WAIT_PREFIX = "podpatterns-wait-for-"
GIT_CONTAINER = "podpatterns-git-clone"
GIT_VOLUME = "podpatterns-git"

# $1 url, $2 path, $3 ref (may be empty). Init containers run again when a pod's sandbox is recreated,
# while its emptyDir survives: a second clone into the non-empty directory would fail forever.
GIT_SCRIPT = """\
if [ -d "$2/.git" ]; then
  echo "podpatterns: $2 already holds the clone"
  exit 0
fi
if [ -n "$3" ]; then
  exec git clone --depth=1 --single-branch --branch "$3" -- "$1" "$2"
fi
exec git clone --depth=1 --single-branch -- "$1" "$2"
"""

# $1 timeout in seconds, $2 host, $3 port. `-e true` makes busybox nc exit 0 as soon as the TCP
# connection is accepted, even from a server that never speaks or closes.
WAIT_SCRIPT = """\
deadline=$(( $(date +%s) + $1 ))
until nc -w 2 "$2" "$3" -e true </dev/null >/dev/null 2>&1; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "podpatterns: gave up after $1s: $2:$3 does not accept connections" >&2
    exit 1
  fi
  echo "podpatterns: waiting for $2:$3"
  sleep 2
done
echo "podpatterns: $2:$3 accepts connections"
"""


def apply_wait_for(ws: Workspace, config: InjectorConfig) -> None:
    r = ws.reader
    targets = values.host_port_list(r, keys.INIT_WAIT_FOR, r.get(keys.INIT_WAIT_FOR) or "")
    timeout: int | None = config.wait_for.timeout_seconds
    if (raw := r.get(keys.INIT_WAIT_TIMEOUT)) is not None:
        timeout = values.duration_seconds(r, keys.INIT_WAIT_TIMEOUT, raw)
    image, resources = values.image_and_resources(
        r,
        config,
        keys.INIT_WAIT_FOR_IMAGE,
        keys.INIT_WAIT_FOR_RESOURCES,
        config.wait_for.image,
        config.wait_for.resources,
    )
    if targets is None or timeout is None or image is None or resources is None:
        return
    for index, (host, port) in enumerate(targets, start=1):
        name = f"{WAIT_PREFIX}{index}"
        if not ws.claim_container_name(keys.INIT_WAIT_FOR, name):
            return
        ws.added.init_steps.append(
            {
                "name": name,
                "image": image,
                "command": ["sh", "-c", WAIT_SCRIPT, "podpatterns-wait-for", str(timeout), host, str(port)],
                "resources": resources,
                "securityContext": restricted(config.wait_for.run_as_user),
            }
        )


def apply_git_clone(ws: Workspace, config: InjectorConfig) -> None:
    r = ws.reader
    url = values.git_url(r, keys.INIT_GIT_CLONE, r.get(keys.INIT_GIT_CLONE) or "", config.git_clone.allowed_schemes)
    ref = r.get(keys.INIT_GIT_CLONE_REF)
    if ref is not None:
        ref = values.git_ref(r, keys.INIT_GIT_CLONE_REF, ref)
    raw_path = r.get(keys.INIT_GIT_CLONE_PATH) or config.git_clone.default_path
    path = values.abs_path(r, keys.INIT_GIT_CLONE_PATH, raw_path, what="directory")
    if path is not None and not values.mountable_dir(r, keys.INIT_GIT_CLONE_PATH, raw_path, path):
        path = None
    image, resources = values.image_and_resources(
        r,
        config,
        keys.INIT_GIT_CLONE_IMAGE,
        keys.INIT_GIT_CLONE_RESOURCES,
        config.git_clone.image,
        config.git_clone.resources,
    )
    if (
        url is None
        or path is None
        or image is None
        or resources is None
        or (keys.INIT_GIT_CLONE_REF in ws.annotations and ref is None)
    ):
        return
    if not ws.claim_container_name(keys.INIT_GIT_CLONE, GIT_CONTAINER):
        return
    if not ws.claim_volume_name(keys.INIT_GIT_CLONE, GIT_VOLUME):
        return
    # The pod's own containers (init ones too, they run after ours) see the checkout at the same path.
    for container in ws.containers + [c for c in ws.init_containers]:
        if any(m.get("mountPath") == path for m in container.get("volumeMounts") or []):
            r.fail(
                keys.INIT_GIT_CLONE_PATH,
                raw_path,
                f"container {container.get('name')!r} already mounts a volume at {path}",
            )
            return
    for container in list(ws.containers) + list(ws.init_containers):
        edited = ws.edit(container)
        edited["volumeMounts"] = [*(edited.get("volumeMounts") or []), {"mountPath": path, "name": GIT_VOLUME}]
    command = ["sh", "-c", GIT_SCRIPT, "podpatterns-git-clone", url, path, ref or ""]
    ws.added.volumes.append({"name": GIT_VOLUME, "emptyDir": {}})
    ws.added.init_steps.append(
        {
            "name": GIT_CONTAINER,
            "image": image,
            "command": command,
            # Never prompt for credentials: a prompt would hang the pod's start forever.
            "env": [{"name": "GIT_TERMINAL_PROMPT", "value": "0"}],
            "resources": resources,
            "securityContext": restricted(config.git_clone.run_as_user),
            "volumeMounts": [{"mountPath": path, "name": GIT_VOLUME}],
        }
    )


def _from_templates(ws: Workspace, key: str, templates: dict[str, Template], default_user: int) -> list[Json]:
    r = ws.reader
    raw = r.get(key) or ""
    names = values.name_list(r, key, raw)
    if names is None:
        return []
    missing = [n for n in names if n not in templates]
    if missing:
        available = ", ".join(sorted(templates)) or "none are defined in the injector config"
        r.fail(key, raw, f"unknown template {', '.join(missing)} (available: {available})")
        return []
    containers: list[Json] = []
    for name in names:
        template = templates[name]
        for volume in template.volumes:
            if any(v.get("name") == volume["name"] and v == volume for v in ws.added.volumes):
                continue  # two templates may share a volume
            if not ws.claim_volume_name(key, volume["name"]):
                return []
            ws.added.volumes.append(copy.deepcopy(volume))
        for container in template.containers:
            if container["name"] in {c["name"] for c in containers}:
                r.fail(key, raw, f"two templates define the container {container['name']!r}")
                return []
            if not ws.claim_container_name(key, container["name"]):
                return []
            if not _ports_free(ws, key, raw, container, containers):
                return []
            built = harden(copy.deepcopy(container), default_user)
            built.setdefault(
                "resources", {"limits": {"cpu": "100m", "memory": "64Mi"}, "requests": {"cpu": "10m", "memory": "16Mi"}}
            )
            containers.append(built)
    return containers


def _ports_free(ws: Workspace, key: str, raw: str, container: Json, pending: list[Json]) -> bool:
    """A template's ports must not collide with the pod's: one network namespace, one name per port."""
    used = ws.used_ports() | {p.get("containerPort") for c in pending for p in c.get("ports") or []}
    names = {p.get("name") for c in ws.containers + ws.added.sidecars + pending for p in c.get("ports") or []}
    for port in container.get("ports") or []:
        if port.get("containerPort") in used or (port.get("name") and port.get("name") in names):
            ws.reader.fail(
                key,
                raw,
                f"template container {container['name']!r} port "
                f"{port.get('name') or port.get('containerPort')} is already used in this pod",
            )
            return False
    return True


def apply_init_templates(ws: Workspace, config: InjectorConfig) -> None:
    ws.added.init_steps += _from_templates(ws, keys.INIT_TEMPLATES, config.init_templates, 65532)


def apply_sidecar_templates(ws: Workspace, config: InjectorConfig) -> None:
    ws.added.sidecars += _from_templates(ws, keys.SIDECAR_TEMPLATES, config.sidecar_templates, 65532)
