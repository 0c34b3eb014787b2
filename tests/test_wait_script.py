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
