"""initContainers that run to completion before the pod's own: wait for dependencies, clone code, templates.

Order: every wait-for target (in the order given), then the git clone, then init templates (in the
order given). No value is ever spliced into a shell command: the wait script is a constant and
receives host, port and timeout as positional arguments; so does the clone script (url, ref, ...), and
git gets `--` before the URL.
"""

from __future__ import annotations

import copy

from webhook.injection import annotations as keys
from webhook.injection import values
from webhook.injection.config import InjectorConfig, Template
from webhook.injection.security import harden, restricted, restricted_as, stated_identity
from webhook.injection.workspace import Json, Workspace

WAIT_PREFIX = "podpatterns-wait-for-"
GIT_CONTAINER = "podpatterns-git-clone"
GIT_VOLUME = "podpatterns-git"

GIT_MOUNT = "/podpatterns-git"  # the volume's root, mounted in the clone container only
GIT_CHECKOUT = "checkout"  # the subdirectory git creates there; the pod's containers mount just this
GIT_DONE = "clone-complete"  # beside the checkout, where the app never sees it
# $1 url, $2 the volume's root, $3 ref (may be empty), $4 the umask (0002 with an fsGroup: group-writable).
# Init containers run again after a failure (a clone killed by its memory limit) or when the pod's sandbox
# is recreated, while the emptyDir survives: a killed clone leaves a .git and no files, so only the mark
# written after a successful clone counts; anything else is removed and cloned again. git creates the
# checkout directory itself, so it belongs to the cloning user (git refuses a worktree whose top-level
# directory is someone else's: "detected dubious ownership"; the emptyDir's root is root's).
GIT_SCRIPT = f"""umask "$4"
if [ -f "$2/{GIT_DONE}" ]; then
  echo "podpatterns: the checkout is complete (cloned before this restart)"
  exit 0
fi
if [ -e "$2/{GIT_CHECKOUT}" ]; then
  echo "podpatterns: removing an unfinished clone (the last attempt was interrupted)"
  rm -rf "$2/{GIT_CHECKOUT}" || exit 1
fi
if [ -n "$3" ]; then
  git clone --depth=1 --single-branch --branch "$3" -- "$1" "$2/{GIT_CHECKOUT}" || exit 1
else
  git clone --depth=1 --single-branch -- "$1" "$2/{GIT_CHECKOUT}" || exit 1
fi
: > "$2/{GIT_DONE}" || exit 1
echo "podpatterns: cloned $1"
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
    target = ws.target_container(keys.INIT_GIT_CLONE_CONTAINER)
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
        or target is None
        or image is None
        or resources is None
        or (keys.INIT_GIT_CLONE_REF in ws.annotations and ref is None)
    ):
        return
    if not ws.claim_container_name(keys.INIT_GIT_CLONE, GIT_CONTAINER):
        return
    if not ws.claim_volume_name(keys.INIT_GIT_CLONE, GIT_VOLUME):
        return
    # The pod's own containers see the checkout at the same path, init ones too (they run after ours), but
    # not the native sidecars ahead of them: those start before the clone, and kubelet would create the
    # subPath directory for them, as root, whose checkout git would then refuse to the app.
    mounted = ws.containers + ws.init_containers[ws.leading_sidecars() :]
    for container in mounted:
        if any(m.get("mountPath") == path for m in container.get("volumeMounts") or []):
            r.fail(
                keys.INIT_GIT_CLONE_PATH,
                raw_path,
                f"container {container.get('name')!r} already mounts a volume at {path}",
            )
            return
    for container in mounted:
        edited = ws.edit(container)
        mount = {"mountPath": path, "name": GIT_VOLUME, "subPath": GIT_CHECKOUT}
        edited["volumeMounts"] = [*(edited.get("volumeMounts") or []), mount]

    # Clone as the app's user, so the checkout is the app's to write and to run git in; with an fsGroup
    # (every container's supplementary group, the emptyDir's group) the files are group-writable too.
    user, group = stated_identity(ws.spec, target)
    clone_user = user if user is not None else config.git_clone.run_as_user
    fs_group = (ws.spec.get("securityContext") or {}).get("fsGroup")
    shared = type(fs_group) is int
    strangers = [str(c.get("name")) for c in mounted if stated_identity(ws.spec, c)[0] != clone_user]
    if strangers:
        names = ", ".join(strangers[:3]) + (f" and {len(strangers) - 3} more" if len(strangers) > 3 else "")
        access = "can write it (fsGroup)" if shared else "can only read it"
        ws.warnings.append(
            f"{keys.INIT_GIT_CLONE}: {path} will be UID {clone_user}'s; {names} may run as another user (no "
            f"runAsUser {clone_user} stated), then {access} and git there fails ('dubious ownership'): give "
            "the containers that use it one runAsUser"
        )
    umask = "0002" if shared else "0022"
    command = ["sh", "-c", GIT_SCRIPT, "podpatterns-git-clone", url, GIT_MOUNT, ref or "", umask]
    ws.added.volumes.append({"name": GIT_VOLUME, "emptyDir": {}})
    ws.added.init_steps.append(
        {
            "name": GIT_CONTAINER,
            "image": image,
            "command": command,
            # Never prompt for credentials: a prompt would hang the pod's start forever.
            "env": [{"name": "GIT_TERMINAL_PROMPT", "value": "0"}],
            "resources": resources,
            "securityContext": restricted_as(user, group, config.git_clone.run_as_user),
            "volumeMounts": [{"mountPath": GIT_MOUNT, "name": GIT_VOLUME}],
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
