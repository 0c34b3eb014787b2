"""Sidecar: one tailer per log file, reading the app's log directory through a shared volume.

`kubectl logs <pod> -c podpatterns-log-<file>` then shows that file. An emptyDir is mounted at each
distinct directory, unless the app already mounts a volume there, which the tailer then shares.
"""

from __future__ import annotations

import posixpath
import re

from webhook.injection import annotations as keys
from webhook.injection import values
from webhook.injection.config import InjectorConfig
from webhook.injection.security import restricted_as, stated_identity
from webhook.injection.workspace import Json, Workspace

CONTAINER_PREFIX = "podpatterns-log-"
VOLUME_PREFIX = "podpatterns-logs-"
# Volume types that can hold logs. Anything else (secret, configMap, projected, csi such as the Secrets
# Store driver, ...) may hold credentials, which a tailer would copy into the pod's logs.
LOG_VOLUME_TYPES = ("emptyDir", "persistentVolumeClaim", "ephemeral")
CHECK_SECONDS = 5

# $1 the log file: a constant script, the path its only argument. `tail -F` follows the name, so rotation
# (rename + new file) is survived; +1 prints from the start. This shell is PID 1, to which the kernel gives
# no default signal actions: a tail in the foreground would ignore SIGTERM, and every shutdown (a Job's
# end, with native sidecars) would wait out the grace period. So tail runs in the background, the trap
# ends both, and the sleep runs in the background too, so that `wait` returns at once on a signal.
# tail reports an unreadable file once, then retries in silence: the loop says what to do, once per change.
TAIL_SCRIPT = f"""tail -n +1 -F "$1" &
tailer=$! pause= state=readable
trap 'kill $tailer $pause 2>/dev/null; exit 0' TERM INT
while kill -0 $tailer 2>/dev/null; do
  now=readable
  if [ -e "$1" ] && [ ! -r "$1" ] || {{ [ -d "${{1%/*}}" ] && [ ! -x "${{1%/*}}" ]; }}; then now=unreadable; fi
  if [ $now != $state ]; then
    state=$now
    if [ $now = unreadable ]; then
      echo "podpatterns: UID $(id -u) cannot read $1: state the app's runAsUser (and runAsGroup) in the pod spec," \\
        "so the tailer runs as the app's user, or have the app make its logs readable" >&2
    else
      echo "podpatterns: $1 is readable now" >&2
    fi
  fi
  sleep {CHECK_SECONDS} & pause=$!
  wait $pause
done
wait $tailer
"""


def _container_name(path: str, taken: set[str]) -> str:
    stem = re.sub(r"[^a-z0-9]+", "-", posixpath.basename(path).lower()).strip("-") or "file"
    base = (CONTAINER_PREFIX + stem)[:60].rstrip("-")
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    taken.add(name)
    return name


def _covering_mount(container: Json, directory: str) -> Json | None:
    best: Json | None = None
    for mount in container.get("volumeMounts") or []:
        mount_path = str(mount.get("mountPath", "")).rstrip("/") or "/"
        inside = directory == mount_path or directory.startswith(mount_path + "/")
        if inside and (best is None or len(mount_path) > len(str(best.get("mountPath")))):
            best = mount
    return best


def apply(ws: Workspace, config: InjectorConfig) -> None:
    r = ws.reader
    raw = r.get(keys.LOG_TAIL) or ""
    paths: list[str] = []
    for item in (p.strip() for p in raw.split(",")):
        path = values.abs_path(r, keys.LOG_TAIL, item, what="log file path")
        if path is not None and path not in paths:
            paths.append(path)
    target = ws.target_container(keys.LOG_TAIL_CONTAINER)
    image, resources = values.image_and_resources(
        r, config, keys.LOG_TAIL_IMAGE, keys.LOG_TAIL_RESOURCES, config.log_tail.image, config.log_tail.resources
    )
    if target is None or image is None or resources is None or not paths or r.errors:
        return

    volumes_by_name = {v.get("name"): v for v in ws.volumes}
    taken = ws.container_names()
    mounts_by_dir: dict[str, Json] = {}  # directory -> the mount the tailers use to read it
    new_app_mounts: list[Json] = []
    for path in paths:
        directory = posixpath.dirname(path)
        if directory in mounts_by_dir:
            continue
        existing = _covering_mount(target, directory)
        if existing is not None:
            volume = volumes_by_name.get(existing.get("name"), {})
            kind = next((k for k in volume if k != "name"), "unknown")
            if kind not in LOG_VOLUME_TYPES:
                r.fail(
                    keys.LOG_TAIL,
                    raw,
                    f"{path} is on the {kind} volume {existing.get('name')!r}; the tailer shares only "
                    f"{', '.join(LOG_VOLUME_TYPES)} volumes (others may hold credentials it would copy to the logs)",
                )
                return
            if "subPathExpr" in existing:
                r.fail(
                    keys.LOG_TAIL,
                    raw,
                    f"{path} is on a mount with subPathExpr, which the tailer cannot share (its variables live "
                    "in the app's environment); write the logs to a directory of their own",
                )
                return
            shared = {k: v for k, v in existing.items() if k in ("name", "mountPath", "subPath", "subPathExpr")}
            mounts_by_dir[directory] = {**shared, "readOnly": True}
            continue
        if not values.mountable_dir(r, keys.LOG_TAIL, raw, directory):
            return
        volume_name = f"{VOLUME_PREFIX}{len(new_app_mounts) + 1}"
        if not ws.claim_volume_name(keys.LOG_TAIL, volume_name):
            return
        ws.added.volumes.append({"name": volume_name, "emptyDir": {}})
        new_app_mounts.append({"mountPath": directory, "name": volume_name})
        mounts_by_dir[directory] = {"mountPath": directory, "name": volume_name, "readOnly": True}

    if new_app_mounts:
        app = ws.edit(target)
        app["volumeMounts"] = [*(app.get("volumeMounts") or []), *new_app_mounts]
    # As the app's own non-root user and group when the pod states them, so files it writes 0600/0640
    # are readable; otherwise as the config's UID, which such files shut out (say so now, and the script
    # says so again in the tailer's log if it happens).
    user, group = stated_identity(ws.spec, target)
    if user is None:
        ws.warnings.append(
            f"{keys.LOG_TAIL}: container {target.get('name')!r} states no non-root runAsUser, so the tailers "
            f"run as UID {config.log_tail.run_as_user} and cannot read a log it writes 0600; set runAsUser "
            "(and runAsGroup) in its securityContext or the pod's"
        )
    security = restricted_as(user, group, config.log_tail.run_as_user)
    for path in paths:
        name = _container_name(path, taken)
        ws.added.sidecars.append(
            {
                "name": name,
                "image": image,
                "command": ["sh", "-c", TAIL_SCRIPT, "podpatterns-log-tail", path],
                "resources": resources,
                "securityContext": dict(security),
                "volumeMounts": [mounts_by_dir[posixpath.dirname(path)]],
            }
        )
