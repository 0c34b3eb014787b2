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
from webhook.injection.security import restricted
from webhook.injection.workspace import Json, Workspace

CONTAINER_PREFIX = "podpatterns-log-"
VOLUME_PREFIX = "podpatterns-logs-"
# Volume types that can hold logs. Anything else (secret, configMap, projected, csi such as the Secrets
# Store driver, ...) may hold credentials, which a tailer would copy into the pod's logs.
LOG_VOLUME_TYPES = ("emptyDir", "persistentVolumeClaim", "ephemeral")


def _tailer_security(ws: Workspace, target: Json, default_user: int) -> Json:
    """Run as the app's own non-root user and group when known, so files it writes 0600/0640 are readable."""
    pod_sc = ws.spec.get("securityContext") or {}
    app_sc = target.get("securityContext") or {}
    user = app_sc.get("runAsUser", pod_sc.get("runAsUser"))
    group = app_sc.get("runAsGroup", pod_sc.get("runAsGroup"))
    sc = restricted(user if isinstance(user, int) and user > 0 else default_user)
    if isinstance(group, int) and group > 0:
        sc["runAsGroup"] = group
    return sc


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
    for path in paths:
        name = _container_name(path, taken)
        ws.added.sidecars.append(
            {
                "name": name,
                "image": image,
                # -F follows the name, so rotation (rename + new file) is survived; +1 prints from the start.
                "command": ["tail", "-n", "+1", "-F", path],
                "resources": resources,
                "securityContext": _tailer_security(ws, target, config.log_tail.run_as_user),
                "volumeMounts": [mounts_by_dir[posixpath.dirname(path)]],
            }
        )
