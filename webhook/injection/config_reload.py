"""Sidecar: reload the app when a ConfigMap or Secret volume it mounts changes.

kubelet updates such a volume by writing a new `..<timestamp>` directory and swapping the `..data` symlink
to it (atomically, by rename), so `readlink <dir>/..data` is a cheap and exact change detector. The
reloader mounts the same volumes read-only at paths of its own and, on a change, POSTs to the app's
localhost reload endpoint or sends its process a signal (which needs one PID namespace for the pod).
"""

from __future__ import annotations

import re

from webhook.injection import annotations as keys
from webhook.injection import values
from webhook.injection.config import InjectorConfig
from webhook.injection.security import restricted_as, stated_identity
from webhook.injection.workspace import Json, Workspace

CONTAINER = "podpatterns-config-reload"
# The reloader's own mount paths, /podpatterns/config/<volume>: the app's mountPath may be anywhere (even
# a directory of the busybox image, such as /etc), and the script names each volume by its directory.
MOUNT_ROOT = "/podpatterns/config"
SIGNALS = ("HUP", "USR1", "USR2", "TERM")
# http only, to the pod's own loopback, with an explicit port and a plain path: nothing else to parse.
RELOAD_URL = re.compile(r"^http://(localhost|127\.0\.0\.1):([0-9]{1,5})(/[A-Za-z0-9._~/-]{0,255})?$")
PROCESS_NAME = re.compile(r"^[A-Za-z0-9._-]{1,15}$")  # /proc/<pid>/comm holds at most 15 characters
SOURCE_TYPES = ("configMap", "secret")
WGET_TIMEOUT = 5  # seconds: a hung endpoint must not hold off SIGTERM for long
MAX_BACKOFF = 60

# $1 url|signal, $2 the URL or the signal name, $3 the process name (or -), $4 poll seconds, $5 settle
# seconds, then the watched directories (/podpatterns/config/<volume>). A constant script: values arrive as
# positional arguments only. As PID 1 it gets no default signal actions, so SIGTERM is trapped, and every
# sleep runs in the background so `wait` returns at once on it (as in the log tailer). Globbing is off
# (`set -f`) except for the /proc scan, so no value is ever expanded as a pattern.
RELOAD_SCRIPT = rf"""set -f
mode=$1 target=$2 process=$3 poll=$4 settle=$5
shift 5
pause=
trap 'kill $pause 2>/dev/null; exit 0' TERM INT
nap() {{ sleep "$1" & pause=$!; wait $pause; pause=; }}
state() {{
  for dir in "$@"; do printf ' %s:%s' "${{dir##*/}}" "$(readlink "$dir/..data" 2>/dev/null || echo none)"; done
}}
signal() {{
  found=
  set +f
  for proc in /proc/[0-9]*; do
    pid=${{proc#/proc/}}
    [ "$pid" = $$ ] && continue
    read -r comm 2>/dev/null < "$proc/comm" || continue
    [ "$comm" = "$process" ] && found="$found $pid"
  done
  set -f
  # The topmost processes of that name: a master, not its workers.
  pids=
  for pid in $found; do
    read -r stat 2>/dev/null < "/proc/$pid/stat" || continue
    rest=${{stat##*) }} && rest=${{rest#* }}
    case " $found " in *" ${{rest%% *}} "*) ;; *) pids="$pids $pid" ;; esac
  done
  if [ -z "$pids" ]; then result="no process named $process"; return 1; fi
  if out=$(kill -"$target" $pids 2>&1); then result="sent $target to pid${{pids}} ($process)"; return 0; fi
  result="kill -$target pid${{pids}} ($process) failed: $out"
  return 1
}}
post() {{
  out=$(timeout {WGET_TIMEOUT} wget -S -q -O /dev/null --post-data='' "$target" 2>&1)
  code=$?
  status=$(printf '%s\n' "$out" | sed -n 's/^ *HTTP\/[0-9.]* \([0-9][0-9][0-9]\).*/\1/p' | tail -n 1)
  result="POST $target -> ${{status:-$(printf '%s' "$out" | tail -n 1)}}"
  [ $code = 0 ]
}}
reload() {{ if [ "$mode" = signal ]; then signal; else post; fi; }}
last=$(state "$@")
echo "podpatterns: watching$last every ${{poll}}s; on a change: $([ "$mode" = signal ] &&
  echo "send $target to $process" || echo "POST $target")" >&2
while :; do
  nap "$poll"
  now=$(state "$@")
  [ "$now" = "$last" ] && continue
  # kubelet may swap again at once (two edits in a row): reload once ..data has settled.
  while nap "$settle"; next=$(state "$@"); [ "$next" != "$now" ]; do now=$next; done
  [ "$now" = "$last" ] && continue
  changes=
  for entry in $now; do
    case " $last " in *" $entry "*) ;; *) changes="$changes, ${{entry%%:*}} changed (..data -> ${{entry#*:}})" ;; esac
  done
  changes=${{changes#, }}
  delay=1
  until reload; do
    echo "podpatterns: $changes; $result; retrying in ${{delay}}s" >&2
    nap $delay
    delay=$((delay * 2)) && [ $delay -gt {MAX_BACKOFF} ] && delay={MAX_BACKOFF}
  done
  echo "podpatterns: $changes; $result" >&2
  last=$now
done
"""


def _source_kind(volume: Json) -> str:
    """configMap or secret, also for a projected volume made only of those; else the volume's type."""
    kind = next((k for k in volume if k != "name"), "unknown")
    if kind != "projected":
        return kind
    sources = (volume.get("projected") or {}).get("sources") or []
    kinds = {next(iter(s), "unknown") for s in sources if isinstance(s, dict)}
    return "projected" if sources and kinds <= set(SOURCE_TYPES) else "projected (" + ", ".join(sorted(kinds)) + ")"


def _volumes(ws: Workspace, target: Json) -> list[str] | None:
    r = ws.reader
    raw = r.get(keys.CONFIG_RELOAD) or ""
    names = values.name_list(r, keys.CONFIG_RELOAD, raw)
    if names is None:
        return None
    by_name = {v.get("name"): v for v in ws.volumes}
    mounts = [m for m in target.get("volumeMounts") or [] if isinstance(m, dict)]
    for name in names:
        volume = by_name.get(name)
        if volume is None:
            r.fail(keys.CONFIG_RELOAD, raw, f"the pod has no volume named {name!r}")
            return None
        kind = _source_kind(volume)
        if kind not in (*SOURCE_TYPES, "projected"):
            r.fail(
                keys.CONFIG_RELOAD,
                raw,
                f"volume {name!r} is of type {kind}; only configMap and secret volumes (or projected ones made "
                "of those) are updated in place by kubelet",
            )
            return None
        own = [m for m in mounts if m.get("name") == name]
        whole = [m for m in own if not m.get("subPath") and not m.get("subPathExpr")]
        if not own:
            r.fail(keys.CONFIG_RELOAD, raw, f"container {target.get('name')!r} does not mount volume {name!r}")
            return None
        if not whole:
            r.fail(
                keys.CONFIG_RELOAD,
                raw,
                f"container {target.get('name')!r} mounts volume {name!r} only with subPath, and kubelet never "
                "updates a subPath mount: mount the volume's directory instead",
            )
            return None
        if len(whole) < len(own):
            ws.warnings.append(
                f"{keys.CONFIG_RELOAD}: container {target.get('name')!r} also mounts volume {name!r} with "
                "subPath: that copy never updates, so a reload there reads the old files"
            )
    return names


def _action(ws: Workspace) -> tuple[str, str, str] | None:
    """(mode, URL or signal, process name or -): exactly one of -url and -signal."""
    r = ws.reader
    url, signal = r.get(keys.CONFIG_RELOAD_URL), r.get(keys.CONFIG_RELOAD_SIGNAL)
    process = r.get(keys.CONFIG_RELOAD_PROCESS)
    if (url is None) == (signal is None):
        r.fail(
            keys.CONFIG_RELOAD,
            ws.annotations.get(keys.CONFIG_RELOAD, ""),
            f"say how to reload the app with exactly one of {keys.CONFIG_RELOAD_URL} (POST to a localhost URL) "
            f"and {keys.CONFIG_RELOAD_SIGNAL} (a signal to {keys.CONFIG_RELOAD_PROCESS})",
        )
        return None
    if url is not None:
        match = RELOAD_URL.match(url)
        if not match or not 1 <= int(match.group(2)) <= 65535:
            r.fail(
                keys.CONFIG_RELOAD_URL,
                url,
                "expected http://localhost:<port>/<path> or http://127.0.0.1:<port>/<path> (a port 1-65535 and "
                "a plain path: letters, digits, . _ ~ / -), e.g. http://localhost:9090/-/reload",
            )
            return None
        if process is not None:
            ws.warnings.append(f"{keys.CONFIG_RELOAD_PROCESS} has no effect with {keys.CONFIG_RELOAD_URL}")
        port = int(match.group(2))
        # The TLS proxy took that port over: the app itself now listens on 127.0.0.1 at the moved one.
        moved = ws.moved_ports.get(port, port)
        return "url", f"http://{match.group(1)}:{moved}{match.group(3) or '/'}", "-"
    if values.choice(r, keys.CONFIG_RELOAD_SIGNAL, signal or "", SIGNALS) is None:
        return None
    if process is None:
        r.fail(
            keys.CONFIG_RELOAD_SIGNAL,
            signal or "",
            f"name the process to signal with {keys.CONFIG_RELOAD_PROCESS} (its name in /proc/<pid>/comm)",
        )
        return None
    if not PROCESS_NAME.match(process):
        r.fail(
            keys.CONFIG_RELOAD_PROCESS,
            process,
            "expected a process name as in /proc/<pid>/comm: 1 to 15 letters, digits, . _ -",
        )
        return None
    return "signal", signal or "", process


def apply(ws: Workspace, config: InjectorConfig) -> None:
    r = ws.reader
    target = ws.target_container(keys.CONFIG_RELOAD_CONTAINER)
    action = _action(ws)
    image, resources = values.image_and_resources(
        r,
        config,
        keys.CONFIG_RELOAD_IMAGE,
        keys.CONFIG_RELOAD_RESOURCES,
        config.config_reload.image,
        config.config_reload.resources,
    )
    names = _volumes(ws, target) if target is not None else None
    if target is None or action is None or names is None or image is None or resources is None or r.errors:
        return
    mode, how, process = action
    user, group = None, None
    if mode == "signal":
        if ws.spec.get("hostPID"):
            r.fail(
                keys.CONFIG_RELOAD_SIGNAL,
                how,
                "the pod uses hostPID, which Kubernetes does not allow with shareProcessNamespace; "
                f"use {keys.CONFIG_RELOAD_URL}",
            )
            return
        if ws.spec.get("shareProcessNamespace") is False:
            r.fail(
                keys.CONFIG_RELOAD_SIGNAL,
                how,
                "the pod sets shareProcessNamespace: false, and a signal needs the app's process in sight; "
                f"remove it or use {keys.CONFIG_RELOAD_URL}",
            )
            return
        # Without CAP_KILL (restricted drops every capability) the kernel lets a process signal only its
        # own UID's processes: the reloader must run as the app's user, which the pod has to state.
        user, group = stated_identity(ws.spec, target)
        if user is None:
            r.fail(
                keys.CONFIG_RELOAD_SIGNAL,
                how,
                f"container {target.get('name')!r} states no non-root runAsUser, and only a process of the "
                "same UID may signal it: set runAsUser in its securityContext or the pod's "
                f"(or use {keys.CONFIG_RELOAD_URL})",
            )
            return
        ws.spec_fields["shareProcessNamespace"] = True
    if not ws.claim_container_name(keys.CONFIG_RELOAD, CONTAINER):
        return
    dirs = [f"{MOUNT_ROOT}/{name}" for name in names]
    settings = config.config_reload
    ws.added.sidecars.append(
        {
            "name": CONTAINER,
            "image": image,
            "command": [
                "sh",
                "-c",
                RELOAD_SCRIPT,
                CONTAINER,
                mode,
                how,
                process,
                str(settings.poll_seconds),
                str(settings.settle_seconds),
                *dirs,
            ],
            "resources": resources,
            "securityContext": restricted_as(user, group, settings.run_as_user),
            "volumeMounts": [
                {"mountPath": d, "name": name, "readOnly": True} for d, name in zip(dirs, names, strict=True)
            ],
        }
    )
