"""The config reloader as injected, run by a real busybox (the image's sh, readlink, wget, sleep): against a
directory laid out the way kubelet's atomic writer does it (`..<timestamp>` directories, a `..data` symlink
swapped by rename), a local HTTP server, and a process it signals; and as PID 1 of its own PID namespace."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.test_log_tail import (
    AS_PID_1,
    NOBODY,
    SETPRIV,
    alive,
    busybox_root,
    eventually,
    pid_one,
    require_tools,
    running,
)
from webhook.injection import InjectorConfig, inject
from webhook.injection import annotations as keys
from webhook.injection.config_reload import MOUNT_ROOT

BUSYBOX = shutil.which("busybox") or "/usr/bin/busybox"
APPLETS = ("sh", "sleep", "readlink", "wget", "timeout", "sed", "tail", "printf")
CONFIG = InjectorConfig.model_validate({"configReload": {"pollSeconds": 1, "settleSeconds": 1}})


@pytest.fixture(scope="module", autouse=True)
def tools_installed() -> None:
    require_tools()


@pytest.fixture
def root() -> Iterator[Path]:
    """bin/ with busybox's applets (the reloader image's tools) and vol/, a ConfigMap volume as kubelet writes it."""
    with busybox_root("podpatterns-reload-", APPLETS) as top:
        (top / "vol").mkdir(mode=0o755)
        update(top / "vol", "..2024_01_01_00_00_00.000000001", "scrape_interval: 15s\n")
        yield top


def update(volume: Path, stamp: str, content: str) -> None:
    """What kubelet's atomic writer does: a new timestamped directory, then `..data` swapped by rename."""
    (volume / stamp).mkdir(mode=0o755)
    (volume / stamp / "prometheus.yml").write_text(content)
    tmp = volume / "..data_tmp"
    os.symlink(stamp, tmp)  # ln -sfn, then rename: readers see the old target or the new one, never none
    os.replace(tmp, volume / "..data")
    if not (volume / "prometheus.yml").is_symlink():
        os.symlink("..data/prometheus.yml", volume / "prometheus.yml")


def reload_pod(annotations: dict[str, str], **spec: Any) -> dict[str, Any]:
    """A pod whose container mounts the ConfigMap volume `config`, asking for config-reload (+ `annotations`)."""
    return {
        "metadata": {"name": "app", "annotations": {keys.CONFIG_RELOAD: "config", **annotations}},
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "registry.example.com/app:1",
                    "volumeMounts": [{"name": "config", "mountPath": "/etc/app"}],
                }
            ],
            "volumes": [{"name": "config", "configMap": {"name": "app"}}],
            **spec,
        },
    }


def reloader(annotations: dict[str, str], pod_security: dict[str, Any] | None = None) -> dict[str, Any]:
    spec = {"securityContext": pod_security} if pod_security else {}
    result = inject(reload_pod(annotations, **spec), CONFIG)
    (container,) = [c for c in result.pod["spec"]["initContainers"] if c["name"] == "podpatterns-config-reload"]
    return container


def command(root: Path, annotations: dict[str, str], **kwargs: Any) -> list[str]:
    """The reloader's command, with the image's sh and its mount moved to root/vol."""
    argv = list(reloader(annotations, **kwargs)["command"])
    assert argv[0] == "sh" and argv[-1] == f"{MOUNT_ROOT}/config", argv
    # The script names a volume by its directory's last component: keep it "config".
    os.symlink(root / "vol", root / "config")
    return [str(root / "bin" / "sh"), *argv[1:-1], str(root / "config")]


class Endpoint:
    """A reload endpoint on 127.0.0.1 that counts POSTs and answers the statuses it is given, then 200."""

    def __init__(self, statuses: tuple[int, ...] = ()) -> None:
        self.posts: list[tuple[float, str]] = []
        self.statuses = list(statuses)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                outer.posts.append((time.monotonic(), self.path))
                self.send_response(outer.statuses.pop(0) if outer.statuses else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    server = Endpoint()
    yield server
    server.close()


def messages(err: Path) -> list[str]:
    return [line for line in err.read_text().splitlines() if line.startswith("podpatterns:")]


def test_one_post_per_change_and_quick_swaps_make_one_reload(root: Path, endpoint: Endpoint) -> None:
    url = f"http://localhost:{endpoint.port}/-/reload"
    with running(command(root, {keys.CONFIG_RELOAD_URL: url}), root) as (_proc, _out, err):
        eventually(lambda: bool(messages(err)), 3, "the watching line")
        assert messages(err)[0] == (
            f"podpatterns: watching config:..2024_01_01_00_00_00.000000001 every 1s; on a change: POST {url}"
        )
        update(root / "vol", "..2024_01_01_00_01_00.000000001", "scrape_interval: 30s\n")
        eventually(lambda: len(endpoint.posts) == 1, 6, "one POST after the change")
        assert endpoint.posts[0][1] == "/-/reload"
        eventually(lambda: len(messages(err)) == 2, 2, "the reload's log line")
        assert messages(err)[1] == (
            f"podpatterns: config changed (..data -> ..2024_01_01_00_01_00.000000001); POST {url} -> 200"
        )
        # Two edits in a row (kubelet can land them within one sync): one reload, of the last one.
        update(root / "vol", "..2024_01_01_00_02_00.000000001", "a\n")
        time.sleep(0.4)
        update(root / "vol", "..2024_01_01_00_02_00.000000002", "b\n")
        eventually(lambda: len(endpoint.posts) == 2, 8, "the second reload")
        time.sleep(3)  # poll + settle, twice over: nothing more comes
        assert len(endpoint.posts) == 2
        assert messages(err)[-1].startswith("podpatterns: config changed (..data -> ..2024_01_01_00_02_00.000000002)")


def test_a_failed_reload_is_retried_with_backoff_until_it_succeeds(root: Path) -> None:
    endpoint = Endpoint(statuses=(500, 500, 500))
    url = f"http://127.0.0.1:{endpoint.port}/-/reload"
    try:
        with running(command(root, {keys.CONFIG_RELOAD_URL: url}), root) as (proc, _out, err):
            eventually(lambda: bool(messages(err)), 3, "the watching line")
            update(root / "vol", "..2024_01_01_00_01_00.000000001", "x\n")
            eventually(lambda: len(endpoint.posts) == 4, 15, "three failures, then a success")
            gaps = [round(b[0] - a[0]) for a, b in zip(endpoint.posts, endpoint.posts[1:], strict=False)]
            assert gaps == [1, 2, 4], gaps
            eventually(lambda: messages(err)[-1].endswith("-> 200"), 2, "the success line")
            failed = [m for m in messages(err) if "retrying" in m]
            assert [m.rsplit("; ", 1)[1] for m in failed] == ["retrying in 1s", "retrying in 2s", "retrying in 4s"]
            assert f"POST {url} -> 500" in failed[0]
            assert proc.poll() is None
    finally:
        endpoint.close()


def test_an_unreachable_endpoint_never_crashes_the_reloader(root: Path) -> None:
    url = "http://127.0.0.1:9/-/reload"  # discard: nothing listens
    with running(command(root, {keys.CONFIG_RELOAD_URL: url}), root) as (proc, _out, err):
        eventually(lambda: bool(messages(err)), 3, "the watching line")
        update(root / "vol", "..2024_01_01_00_01_00.000000001", "x\n")
        eventually(lambda: any("retrying in 2s" in m for m in messages(err)), 10, "two failed attempts")
        assert proc.poll() is None
        assert f"POST {url} -> " in messages(err)[1]


# A stand-in app: prints a line on SIGHUP; with "fork", a worker of the same name that must not be signalled.
APP = r"""
import os, signal, sys, time
who = "master"
if sys.argv[1:] == ["fork"] and os.fork() == 0:
    who = "worker"
signal.signal(signal.SIGHUP, lambda *_: print(f"{who} {os.getpid()} got SIGHUP", flush=True))
print(f"{who} {os.getpid()} up", flush=True)
while True:
    time.sleep(1)
"""


def as_nobody(argv: list[str]) -> list[str]:
    return [SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv]


def test_signal_mode_sends_hup_to_the_named_process_not_its_workers(root: Path) -> None:
    # comm is the name of the file exec'd: a link named "fakeapp" to python makes a process called that.
    os.symlink(sys.executable, root / "bin" / "fakeapp")
    app_out = root / "app.out"
    with app_out.open("wb") as out:
        app = subprocess.Popen(as_nobody([str(root / "bin" / "fakeapp"), "-u", "-c", APP, "fork"]), stdout=out)
    try:
        eventually(lambda: app_out.read_text().count(" up") == 2, 10, "the app and its worker")
        assert Path(f"/proc/{app.pid}/comm").read_text().strip() == "fakeapp"
        annotations = {keys.CONFIG_RELOAD_SIGNAL: "HUP", keys.CONFIG_RELOAD_PROCESS: "fakeapp"}
        argv = as_nobody(command(root, annotations, pod_security={"runAsUser": NOBODY}))
        with running(argv, root) as (_proc, _out, err):
            eventually(lambda: bool(messages(err)), 3, "the watching line")
            assert messages(err)[0].endswith("on a change: send HUP to fakeapp")
            update(root / "vol", "..2024_01_01_00_01_00.000000001", "x\n")
            eventually(lambda: "got SIGHUP" in app_out.read_text(), 6, "the app's SIGHUP line")
            time.sleep(0.5)
            assert [line.split()[0] for line in app_out.read_text().splitlines() if "SIGHUP" in line] == ["master"]
            eventually(lambda: len(messages(err)) == 2, 2, "the reload's log line")
            assert messages(err)[1] == (
                "podpatterns: config changed (..data -> ..2024_01_01_00_01_00.000000001); "
                f"sent HUP to pid {app.pid} (fakeapp)"
            )
    finally:
        for worker in Path(f"/proc/{app.pid}/task/{app.pid}/children").read_text().split():
            os.kill(int(worker), signal.SIGKILL)
        app.kill()
        app.wait(timeout=5)


def test_signal_mode_without_the_process_retries_and_says_why(root: Path) -> None:
    annotations = {keys.CONFIG_RELOAD_SIGNAL: "USR1", keys.CONFIG_RELOAD_PROCESS: "no-such-app"}
    argv = as_nobody(command(root, annotations, pod_security={"runAsUser": NOBODY}))
    with running(argv, root) as (proc, _out, err):
        eventually(lambda: bool(messages(err)), 3, "the watching line")
        update(root / "vol", "..2024_01_01_00_01_00.000000001", "x\n")
        eventually(lambda: len(messages(err)) >= 2, 6, "the failed reload")
        assert messages(err)[1].endswith("; no process named no-such-app; retrying in 1s")
        assert proc.poll() is None


def test_the_reloader_as_pid_1_stops_at_once_on_sigterm(root: Path, endpoint: Endpoint) -> None:
    argv = command(root, {keys.CONFIG_RELOAD_URL: f"http://localhost:{endpoint.port}/"})
    with running([*AS_PID_1, *argv], root) as (unshare, _out, err):
        pid = pid_one(unshare)
        eventually(lambda: bool(messages(err)), 3, "the watching line")
        started = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        assert unshare.wait(timeout=5) == 0
        assert time.monotonic() - started < 1.0
        assert not alive(pid)


# --- admission: what the pod gets ----------------------------------------------------------------------------


def reload_spec(annotations: dict[str, str], **spec: Any) -> tuple[dict[str, Any], list[str]]:
    result = inject(reload_pod(annotations, **spec), InjectorConfig())
    return result.pod["spec"], list(result.warnings)


SIGNAL = {keys.CONFIG_RELOAD_SIGNAL: "HUP", keys.CONFIG_RELOAD_PROCESS: "app"}


def test_url_mode_runs_as_the_configs_user_and_leaves_the_pid_namespace_alone() -> None:
    spec, warnings = reload_spec({keys.CONFIG_RELOAD_URL: "http://localhost:8080/-/reload"})
    (container,) = spec["initContainers"]
    assert container["securityContext"]["runAsUser"] == 65534 and "shareProcessNamespace" not in spec
    assert container["command"][4:] == ["url", "http://localhost:8080/-/reload", "-", "5", "2", f"{MOUNT_ROOT}/config"]
    assert container["volumeMounts"][0] == {"mountPath": f"{MOUNT_ROOT}/config", "name": "config", "readOnly": True}
    assert warnings == []


def test_signal_mode_shares_the_pid_namespace_and_runs_as_the_apps_user() -> None:
    spec, _ = reload_spec(SIGNAL, securityContext={"runAsUser": 1000, "runAsGroup": 2000})
    (container,) = spec["initContainers"]
    assert spec["shareProcessNamespace"] is True
    assert container["securityContext"]["runAsUser"] == 1000 and container["securityContext"]["runAsGroup"] == 2000
    assert container["command"][4:7] == ["signal", "HUP", "app"]


def test_a_subpath_mount_beside_the_directory_mount_is_a_warning() -> None:
    pod_mounts = [
        {"name": "config", "mountPath": "/etc/app"},
        {"name": "config", "mountPath": "/etc/other.yml", "subPath": "other.yml"},
    ]
    pod: dict[str, Any] = {
        "metadata": {
            "name": "app",
            "annotations": {keys.CONFIG_RELOAD: "config", keys.CONFIG_RELOAD_URL: "http://127.0.0.1:80/"},
        },
        "spec": {
            "containers": [{"name": "app", "image": "registry.example.com/app:1", "volumeMounts": pod_mounts}],
            "volumes": [{"name": "config", "secret": {"secretName": "app"}}],
        },
    }
    result = inject(pod, InjectorConfig())
    (warning,) = result.warnings
    assert "subPath" in warning and "never updates" in warning
