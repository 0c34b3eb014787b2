"""The wait-for init container's script, run by a real busybox sh and nc (the image's tools)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from webhook.injection.init_steps import WAIT_SCRIPT


@pytest.fixture(scope="module")
def busybox_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    busybox = shutil.which("busybox")
    assert busybox, "busybox is missing: .ci/run installs it (apt-get install busybox)"
    bin_dir = tmp_path_factory.mktemp("bin")
    for applet in ("sh", "nc", "date", "sleep", "echo", "touch", "true"):
        os.symlink(busybox, bin_dir / applet)
    return str(bin_dir)


def run(busybox_path: str, *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    # Exactly the container's command: sh -c SCRIPT $0 timeout host port
    return subprocess.run(
        [f"{busybox_path}/sh", "-c", WAIT_SCRIPT, "podpatterns-wait-for", *args],
        env={"PATH": busybox_path},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_returns_once_the_port_accepts_connections(busybox_path: str) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        result = run(busybox_path, "30", "127.0.0.1", str(listener.getsockname()[1]))
    assert result.returncode == 0
    assert "accepts connections" in result.stdout


def test_gives_up_after_the_timeout(busybox_path: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    result = run(busybox_path, "3", "127.0.0.1", str(closed_port))
    assert result.returncode == 1
    assert "gave up after 3s" in result.stderr


def test_arguments_are_data_not_commands(busybox_path: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    result = run(busybox_path, "1", f"$(touch {marker})", "1")
    assert result.returncode == 1
    assert not marker.exists()


def test_git_clone_script_clones_once_and_survives_a_rerun(tmp_path: Path) -> None:
    """Init containers rerun when a pod's sandbox is recreated; the emptyDir (and the clone) survive."""
    from webhook.injection.init_steps import GIT_SCRIPT

    git = shutil.which("git")
    assert git, "git is missing"
    origin = tmp_path / "origin"
    subprocess.run([git, "init", "-q", "-b", "main", str(origin)], check=True)
    (origin / "index.js").write_text("console.log('hi')\n")
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
        "GIT_TERMINAL_PROMPT": "0",
    }
    subprocess.run([git, "-C", str(origin), "add", "."], check=True, env=env)
    subprocess.run([git, "-C", str(origin), "commit", "-qm", "init"], check=True, env=env)
    subprocess.run([git, "-C", str(origin), "tag", "v1"], check=True, env=env)
    checkout = tmp_path / "src"
    checkout.mkdir()  # the emptyDir exists, empty, before the first run
    url = f"file://{origin}"
    for attempt in range(2):
        result = subprocess.run(
            ["sh", "-c", GIT_SCRIPT, "podpatterns-git-clone", url, str(checkout), "v1"],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        assert (checkout / "index.js").exists()
        if attempt:
            assert "already holds the clone" in result.stdout
