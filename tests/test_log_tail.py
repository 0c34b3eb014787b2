"""The log tailer as injected, run by a real busybox (the image's sh, tail and sleep): as PID 1 of its own PID
namespace, where SIGTERM means something only to a process that handles it, and as an unprivileged user
facing a log it may not read."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from webhook.injection import InjectorConfig, inject
from webhook.injection import annotations as keys
from webhook.injection.log_tail import CHECK_SECONDS

BUSYBOX = shutil.which("busybox") or "/usr/bin/busybox"
UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"
SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"
NOBODY = 65534
APPLETS = ("sh", "tail", "sleep", "id")


def require_tools() -> None:
    for tool in (BUSYBOX, UNSHARE, SETPRIV):
        if not Path(tool).is_file():
            pytest.fail(f"{tool} is missing: run .ci/setup.sh (busybox, util-linux)")
    if os.geteuid() != 0:
        pytest.fail("these tests make PID namespaces and switch users: run them as root (CI does)")


@contextlib.contextmanager
def busybox_root(prefix: str, applets: tuple[str, ...]) -> Iterator[Path]:
    """A directory every user may enter, with busybox's applets in bin/ (an image's tools), removed after."""
    top = Path(tempfile.mkdtemp(prefix=prefix))
    top.chmod(0o755)
    (top / "bin").mkdir()
    for applet in applets:
        os.symlink(BUSYBOX, top / "bin" / applet)
    try:
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture(scope="module", autouse=True)
def tools_installed() -> None:
    require_tools()


@pytest.fixture
def root() -> Iterator[Path]:
    """busybox_root with the tailer image's tools, and logs/."""
    with busybox_root("podpatterns-tail-", APPLETS) as top:
        (top / "logs").mkdir(mode=0o755)
        yield top


def tailer(pod_security: dict[str, Any] | None = None, path: str = "/var/log/app/app.log") -> tuple[Any, ...]:
    pod: dict[str, Any] = {
        "metadata": {"name": "app", "annotations": {keys.LOG_TAIL: path}},
        "spec": {"containers": [{"name": "app", "image": "registry.example.com/app:1"}]},
    }
    if pod_security:
        pod["spec"]["securityContext"] = pod_security
    result = inject(pod, InjectorConfig())
    (container,) = [c for c in result.pod["spec"]["initContainers"] if c["name"].startswith("podpatterns-log-")]
    return container, result.warnings


def command(root: Path, log: Path) -> list[str]:
    """The tailer container's command, with the image's sh and the log file moved under `root`."""
    container, _ = tailer()
    argv = list(container["command"])
    assert argv[0] == "sh" and argv[-1] == "/var/log/app/app.log", argv
    return [str(root / "bin" / "sh"), *argv[1:-1], str(log)]


@contextlib.contextmanager
def running(argv: list[str], root: Path, **kwargs: Any) -> Iterator[tuple[subprocess.Popen[bytes], Path, Path]]:
    out, err = root / "stdout", root / "stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(argv, stdout=stdout, stderr=stderr, env={"PATH": str(root / "bin")}, **kwargs)
    try:
        yield proc, out, err
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=5)


def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def pid_one(unshare: subprocess.Popen[bytes]) -> int:
    """The host PID of the namespace's PID 1: the child `unshare --fork` made."""
    children = Path(f"/proc/{unshare.pid}/task/{unshare.pid}/children")
    eventually(lambda: bool(children.read_text().split()), 5, "unshare forked its child")
    return int(children.read_text().split()[0])


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


AS_PID_1 = [UNSHARE, "--pid", "--fork", "--mount-proc", "--kill-child"]


def test_the_tailer_as_pid_1_stops_at_once_on_sigterm(root: Path) -> None:
    log = root / "logs" / "app.log"
    log.write_text("started\n")
    with running([*AS_PID_1, *command(root, log)], root) as (unshare, out, _err):
        pid = pid_one(unshare)
        eventually(lambda: out.read_bytes() == b"started\n", 5, "the tailer printed the log")
        started = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        assert unshare.wait(timeout=5) == 0  # unshare --fork exits with its child's status
        assert time.monotonic() - started < 1.0
        assert not alive(pid)


def test_a_bare_tail_as_pid_1_ignores_sigterm_which_is_why_the_script_exists(root: Path) -> None:
    # The command injected before: PID 1 has no default signal actions, so tail never saw SIGTERM and the
    # pod waited out its grace period (a Job with a native tailer completed ~30 s after its work).
    log = root / "logs" / "app.log"
    log.write_text("started\n")
    with running([*AS_PID_1, str(root / "bin" / "tail"), "-n", "+1", "-F", str(log)], root) as (unshare, out, _):
        pid = pid_one(unshare)
        eventually(lambda: out.read_bytes() == b"started\n", 5, "tail printed the log")
        os.kill(pid, signal.SIGTERM)
        time.sleep(1.0)
        assert alive(pid)
        os.kill(pid, signal.SIGKILL)


def test_the_tailer_still_follows_a_rotated_log(root: Path) -> None:
    log = root / "logs" / "app.log"
    log.write_text("one\n")
    with running(command(root, log), root) as (_proc, out, _err):
        eventually(lambda: out.read_bytes() == b"one\n", 5, "the first line")
        log.rename(log.with_suffix(".log.1"))
        log.write_text("two\n")
        eventually(lambda: out.read_bytes() == b"one\ntwo\n", 10, "the rotated file's line")


def messages(err: Path) -> list[str]:
    return [line for line in err.read_text().splitlines() if line.startswith("podpatterns:")]


@pytest.mark.parametrize("closed", ["file", "directory"])
def test_an_unreadable_log_is_reported_on_stderr(root: Path, closed: str) -> None:
    log = root / "logs" / "app.log"
    log.write_text("secret\n")
    (log if closed == "file" else log.parent).chmod(0o600 if closed == "file" else 0o700)  # the app's root-owned 0600
    as_nobody = [SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *command(root, log)]
    with running(as_nobody, root) as (_proc, out, err):
        eventually(lambda: bool(messages(err)), 3, "a message about the unreadable log")
        (message,) = messages(err)
        assert f"UID {NOBODY} cannot read {log}" in message and "runAsUser" in err.read_text()
        assert out.read_bytes() == b""


def test_an_unreadable_log_is_reported_once_per_change_not_per_try(root: Path) -> None:
    log = root / "logs" / "app.log"
    log.write_text("secret\n")
    log.chmod(0o600)
    as_nobody = [SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *command(root, log)]
    with running(as_nobody, root) as (_proc, out, err):
        eventually(lambda: bool(messages(err)), 3, "a message about the unreadable log")
        time.sleep(CHECK_SECONDS + 1)  # at least one more check: the state has not changed, nothing new
        assert len(messages(err)) == 1, err.read_text()
        log.chmod(0o644)  # what the advice leads to: the tailer reads it, and says so
        eventually(lambda: len(messages(err)) == 2, CHECK_SECONDS + 3, "the readable-again message")
        assert messages(err)[1] == f"podpatterns: {log} is readable now"
        eventually(lambda: out.read_bytes() == b"secret\n", 5, "the log's contents")


def test_a_log_that_does_not_exist_yet_is_no_cause_for_alarm(root: Path) -> None:
    log = root / "logs" / "app.log"
    with running([SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *command(root, log)], root) as (
        _proc,
        out,
        err,
    ):
        time.sleep(1.0)
        assert messages(err) == []
        log.write_text("late\n")
        eventually(lambda: out.read_bytes() == b"late\n", 5, "the late log's first line")


def test_admission_warns_when_the_app_user_is_unknown() -> None:
    _, warnings = tailer()
    (warning,) = warnings
    assert "states no non-root runAsUser" in warning and f"UID {InjectorConfig().log_tail.run_as_user}" in warning
    assert "0600" in warning and len(warning) <= 256
    container, warnings = tailer({"runAsUser": 1000, "runAsGroup": 1000})
    assert warnings == ()
    assert container["securityContext"]["runAsUser"] == 1000 and container["securityContext"]["runAsGroup"] == 1000
