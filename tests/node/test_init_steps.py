"""initContainers on the node: wait-for holds the pod until a late server answers, a timeout fails with a
message in `kubectl logs`, and git clone fills the path for the app and the pod's own init container."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.node import images
from tests.node.cluster import NODE_IP, Cluster, free_ports
from tests.node.workloads import POD_SECURITY, RESTRICTED, container_statuses, logs, wait_logs, wait_pod

SMALL = {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}}


def _pod(namespace: str, name: str, annotations: dict[str, str], containers: list[dict], **spec: object) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}, "annotations": annotations},
        "spec": {"securityContext": POD_SECURITY, "containers": containers, **spec},
    }


def _busybox(name: str, script: str, image: str = images.BUSYBOX) -> dict:
    return {
        "name": name,
        "image": image,
        "command": ["sh", "-c", script],
        "securityContext": RESTRICTED,
        "resources": SMALL,
    }


@contextlib.contextmanager
def late_server(delay: float) -> Iterator[int]:
    """A TCP server on the node's address that starts listening only after `delay` seconds."""
    port = free_ports(1, low=33000 - 2000, high=33000)[0]
    stop = threading.Event()

    def serve() -> None:
        if stop.wait(delay):
            return
        with socket.create_server((NODE_IP, port)) as server:
            server.settimeout(0.2)
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    conn, _ = server.accept()
                    conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        thread.join(timeout=5)


def test_wait_for_holds_the_app_until_a_late_server_answers(cluster: Cluster, namespace: str) -> None:
    with late_server(delay=8) as port:
        started = time.monotonic()
        cluster.apply(
            _pod(
                namespace,
                "waiter",
                {"podpatterns.io/init-wait-for": f"{NODE_IP}:{port}"},
                [_busybox("app", "echo app started; sleep 3600")],
            )
        )
        pod = wait_pod(cluster, namespace, "app=waiter", timeout=90)
        assert time.monotonic() - started >= 7, "the app started before its dependency answered"
    name = pod["metadata"]["name"]
    text = logs(cluster, namespace, name, "podpatterns-wait-for-1")
    assert f"waiting for {NODE_IP}:{port}" in text and f"{NODE_IP}:{port} accepts connections" in text
    wait_logs(cluster, namespace, name, "app", "app started")


def test_wait_for_timeout_fails_the_pod_with_a_message(cluster: Cluster, namespace: str) -> None:
    closed = free_ports(1, low=31000, high=32000)[0]
    cluster.apply(
        _pod(
            namespace,
            "gives-up",
            {"podpatterns.io/init-wait-for": f"{NODE_IP}:{closed}", "podpatterns.io/init-wait-timeout": "5s"},
            [_busybox("app", "echo never; sleep 3600")],
            restartPolicy="Never",
        )
    )
    pod = wait_pod(cluster, namespace, "app=gives-up", condition="Failed", timeout=90)
    wait = container_statuses(pod)["podpatterns-wait-for-1"]
    assert wait["state"]["terminated"]["exitCode"] == 1
    text = logs(cluster, namespace, pod["metadata"]["name"], "podpatterns-wait-for-1")
    assert f"gave up after 5s: {NODE_IP}:{closed} does not accept connections" in text
    assert "app" not in {n for n, s in container_statuses(pod).items() if "running" in (s.get("state") or {})}


@pytest.fixture
def git_daemon(tmp_path: Path) -> Iterator[str]:
    """`git daemon` on the node's address serving one repository, as a team's internal git server would."""
    if not shutil.which("git"):
        pytest.fail("git is not installed (run .ci/setup.sh)")
    repo = tmp_path / "repos" / "site.git"
    work = tmp_path / "work"
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "HOME": str(tmp_path),
        "PATH": "/usr/bin:/bin",
    }
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True, env=env)
    (work / "README").write_text("hello from the repository\n")
    subprocess.run(["git", "-C", str(work), "add", "README"], check=True, env=env)
    subprocess.run(["git", "-C", str(work), "commit", "-q", "-m", "first"], check=True, env=env)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(repo)], check=True, env=env)
    port = free_ports(1, low=30000, high=31000)[0]
    daemon = subprocess.Popen(
        [
            "git",
            "daemon",
            "--reuseaddr",
            "--export-all",
            f"--base-path={tmp_path / 'repos'}",
            f"--listen={NODE_IP}",
            f"--port={port}",
            str(tmp_path / "repos"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((NODE_IP, port), timeout=1):
            break
        time.sleep(0.1)
    try:
        yield f"git://{NODE_IP}:{port}/site.git"
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)


def test_git_clone_fills_the_path_for_the_app_and_the_pods_own_init(
    cluster: Cluster, namespace: str, git_daemon: str
) -> None:
    app = _busybox(
        "app",
        "cat /src/README && echo written > /src/by-app && git -C /src log --format=%s -1 "
        "&& git -C /src status --short && echo app-ok && sleep 3600",
        image=images.GIT,
    )
    pod = _pod(
        namespace,
        "cloned",
        {"podpatterns.io/init-git-clone": git_daemon, "podpatterns.io/init-git-clone-path": "/src"},
        [app],
        initContainers=[_busybox("own-init", "cat /src/README")],
    )
    cluster.apply(pod)
    pod = wait_pod(cluster, namespace, "app=cloned", condition="Running", timeout=90)
    name = pod["metadata"]["name"]
    text = wait_logs(cluster, namespace, name, "app", "app-ok")
    assert "hello from the repository" in text
    assert "first" in text  # the app's own git works in the checkout: no "dubious ownership"
    assert "dubious" not in text
    assert "hello from the repository" in logs(cluster, namespace, name, "own-init")
    order = [c["name"] for c in pod["spec"]["initContainers"]]
    assert order.index("podpatterns-git-clone") < order.index("own-init")
