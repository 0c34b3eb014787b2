"""The git clone init container, run as injected: its constant script under a real busybox sh with the real git,
as the users its securityContext names (setpriv), over a directory laid out as kubelet lays out an emptyDir.

Then the app's side: git in the checkout as the app's own user, which git refuses unless that user owns the
checkout's top directory ("detected dubious ownership"), and the writes the app (or another container) makes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from webhook.injection import InjectorConfig, inject
from webhook.injection import annotations as keys
from webhook.injection.init_steps import GIT_CHECKOUT, GIT_CONTAINER, GIT_DONE, GIT_MOUNT, GIT_VOLUME

GIT = shutil.which("git") or "/usr/bin/git"
BUSYBOX = shutil.which("busybox") or "/usr/bin/busybox"
SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"
URL = "https://git.example.com/shop/crawler.git"  # what the pod asks for; the test clones a local copy instead
CLONE_UID = InjectorConfig().git_clone.run_as_user


@pytest.fixture(scope="module", autouse=True)
def tools_installed() -> None:
    for tool, hint in ((GIT, "apt-get install git"), (BUSYBOX, "apt-get install busybox"), (SETPRIV, "util-linux")):
        if not Path(tool).is_file():
            pytest.fail(f"{tool} is missing: run .ci/setup.sh ({hint})")
    if os.geteuid() != 0:
        pytest.fail("these tests switch between users with setpriv: run them as root (CI does)")


@dataclass
class Node:
    """A directory every user may enter (pytest's own tmp dirs are root's, 0700), with the images' tools."""

    root: Path

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    def env(self) -> dict[str, str]:
        # No writable HOME, as in the containers (readOnlyRootFilesystem): git must do without one.
        return {"PATH": str(self.bin), "HOME": "/nonexistent", "GIT_TERMINAL_PROMPT": "0"}

    def run(
        self, argv: list[str], uid: int, gid: int, groups: tuple[int, ...] = ()
    ) -> subprocess.CompletedProcess[str]:
        ids = [f"--reuid={uid}", f"--regid={gid}"]
        ids += [f"--groups={','.join(map(str, groups))}"] if groups else ["--clear-groups"]
        return subprocess.run(
            [SETPRIV, *ids, *argv], env=self.env(), capture_output=True, text=True, timeout=60, cwd=self.root
        )

    def origin(self, owner: int) -> str:
        """A repository to clone, owned by the cloning user (git refuses a local origin of another's)."""
        origin = self.root / "origin"
        env = {**self.env(), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
        env["GIT_COMMITTER_EMAIL"] = "t@t"
        subprocess.run([GIT, "init", "-q", "-b", "main", str(origin)], check=True, env=env)
        (origin / "index.js").write_text("console.log('hi')\n")
        (origin / "lib").mkdir()
        (origin / "lib" / "util.js").write_text("module.exports = {}\n")
        for args in (["add", "."], ["commit", "-qm", "init"], ["tag", "v1"]):
            subprocess.run([GIT, "-C", str(origin), *args], check=True, env=env)
        chown_tree(origin, owner, owner)
        return f"file://{origin}"

    def empty_dir(self, fs_group: int | None = None) -> Path:
        """An emptyDir as kubelet makes it: root's, 0777; with an fsGroup, that group's, setgid (2777)."""
        volume = self.root / "volume"
        volume.mkdir()
        if fs_group is not None:
            os.chown(volume, 0, fs_group)
        volume.chmod(0o2777 if fs_group is not None else 0o777)
        return volume


def chown_tree(path: Path, uid: int, gid: int) -> None:
    for dirpath, dirnames, filenames in os.walk(path):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            os.lchown(name, uid, gid)


@pytest.fixture
def node() -> Iterator[Node]:
    root = Path(tempfile.mkdtemp(prefix="podpatterns-git-"))
    root.chmod(0o755)
    bin_dir = root / "bin"
    bin_dir.mkdir()
    for applet in ("sh", "rm", "touch", "id"):  # what alpine/git's busybox provides to the script
        os.symlink(BUSYBOX, bin_dir / applet)
    os.symlink(GIT, bin_dir / "git")
    try:
        yield Node(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- the injected pod ---------------------------------------------------------------------------------------------


def clone_pod(pod_security: dict[str, Any] | None = None, **containers: dict[str, Any]) -> dict[str, Any]:
    """A pod that asks for a clone; `containers` maps names to their securityContext ({} for none)."""
    spec: dict[str, Any] = {
        "containers": [
            {"name": name, "image": "registry.example.com/app:1", **({"securityContext": sc} if sc else {})}
            for name, sc in (containers or {"app": {}}).items()
        ]
    }
    if pod_security:
        spec["securityContext"] = pod_security
    annotations = {keys.INIT_GIT_CLONE: URL, keys.INIT_GIT_CLONE_REF: "v1", keys.INIT_GIT_CLONE_PATH: "/app"}
    return {"metadata": {"name": "crawler", "annotations": annotations}, "spec": spec}


@dataclass
class Injected:
    clone: dict[str, Any]
    pod: dict[str, Any]
    warnings: tuple[str, ...]

    def identity(self, container: dict[str, Any]) -> tuple[int, int]:
        """The uid and gid a container runs as (an image without USER: root's group)."""
        own, pod = container.get("securityContext") or {}, self.pod["spec"].get("securityContext") or {}
        return own.get("runAsUser", pod.get("runAsUser", 0)), own.get("runAsGroup", pod.get("runAsGroup", 0))


def injected(pod: dict[str, Any]) -> Injected:
    result = inject(pod, InjectorConfig())
    clone = next(c for c in result.pod["spec"]["initContainers"] if c["name"] == GIT_CONTAINER)
    return Injected(clone, result.pod, result.warnings)


def run_clone(node: Node, clone: dict[str, Any], volume: Path, url: str, groups: tuple[int, ...] = ()) -> Any:
    """The clone container's command, as its securityContext says, with the volume mounted at `volume`."""
    command = list(clone["command"])
    assert command[0] == "sh" and command[4:6] == [URL, GIT_MOUNT], command
    command[0], command[4], command[5] = str(node.bin / "sh"), url, str(volume)
    sc = clone["securityContext"]
    return node.run(command, sc["runAsUser"], sc.get("runAsGroup", 0), groups)


def git_as(node: Node, checkout: Path, uid: int, gid: int, *args: str, groups: tuple[int, ...] = ()) -> Any:
    return node.run([GIT, "-C", str(checkout), *args], uid, gid, groups)


# --- 1. an interrupted clone ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "leftover",
    [["clone", "--no-checkout"], ["init", "-q"]],
    ids=["objects-but-no-files", "bare-git-dir"],
)
def test_a_clone_cut_short_is_removed_and_cloned_again(node: Node, leftover: list[str]) -> None:
    # A clone killed half-way (its memory limit, an eviction) leaves a .git beside no files, or fewer; the
    # init container then runs again on the same emptyDir. Both leftovers are what such a kill leaves behind.
    url = node.origin(CLONE_UID)
    volume = node.empty_dir()
    pod = injected(clone_pod())
    half = node.run(
        [GIT, *leftover, *([url] if leftover[0] == "clone" else []), str(volume / GIT_CHECKOUT)], CLONE_UID, 0
    )
    assert half.returncode == 0, half.stderr
    assert (volume / GIT_CHECKOUT / ".git").is_dir() and not (volume / GIT_CHECKOUT / "index.js").exists()

    result = run_clone(node, pod.clone, volume, url)
    assert result.returncode == 0, result.stderr
    assert "removing an unfinished clone" in result.stdout
    assert (volume / GIT_CHECKOUT / "index.js").read_text() == "console.log('hi')\n"
    assert (volume / GIT_DONE).is_file()


def test_a_complete_clone_is_kept_when_the_init_container_runs_again(node: Node) -> None:
    url = node.origin(CLONE_UID)
    volume = node.empty_dir()
    pod = injected(clone_pod())
    first = run_clone(node, pod.clone, volume, url)
    assert first.returncode == 0, first.stderr
    assert not (volume / GIT_CHECKOUT / GIT_DONE).exists(), "the mark must stay out of the app's checkout"
    (volume / GIT_CHECKOUT / "built.txt").write_text("the app's own work")  # what a second clone would lose
    again = run_clone(node, pod.clone, volume, url)
    assert again.returncode == 0, again.stderr
    assert "the checkout is complete" in again.stdout
    assert (volume / GIT_CHECKOUT / "built.txt").exists()


def test_a_failed_clone_leaves_no_mark_and_the_next_attempt_clones(node: Node) -> None:
    url = node.origin(CLONE_UID)
    volume = node.empty_dir()
    pod = injected(clone_pod())
    failed = run_clone(node, pod.clone, volume, f"file://{node.root}/no-such-repository")
    assert failed.returncode != 0
    assert not (volume / GIT_DONE).exists()
    retried = run_clone(node, pod.clone, volume, url)
    assert retried.returncode == 0, retried.stderr
    assert (volume / GIT_CHECKOUT / "lib" / "util.js").exists() and (volume / GIT_DONE).exists()


def test_arguments_are_data_not_commands(node: Node) -> None:
    marker = node.root / "pwned"
    pod = injected(clone_pod())
    command = list(pod.clone["command"])
    command[0], command[4], command[5], command[6] = str(node.bin / "sh"), "x", str(node.empty_dir()), "$(touch pwned)"
    result = node.run(command, CLONE_UID, 0)
    assert result.returncode != 0
    assert not marker.exists()


# --- 2. whose checkout it is --------------------------------------------------------------------------------------


def test_the_clone_runs_as_the_app_user_and_the_app_mounts_only_the_checkout() -> None:
    pod = injected(clone_pod({"runAsUser": 1000, "runAsGroup": 3000}, app={"runAsGroup": 3001}, worker={}))
    assert pod.clone["securityContext"]["runAsUser"] == 1000
    assert pod.clone["securityContext"]["runAsGroup"] == 3001  # the container's own over the pod's
    assert pod.clone["volumeMounts"][0] == {"mountPath": GIT_MOUNT, "name": GIT_VOLUME}
    for container in pod.pod["spec"]["containers"]:
        assert {"mountPath": "/app", "name": GIT_VOLUME, "subPath": GIT_CHECKOUT} in container["volumeMounts"]
    assert pod.warnings == ()  # every container runs as UID 1000: nothing to say


def test_the_app_user_owns_the_checkout_and_its_git_works_there(node: Node) -> None:
    # The app as UID 1000 (as seen on a real node): cloned as 65532 into the emptyDir's root, its git failed.
    pod = injected(clone_pod({"runAsUser": 1000, "runAsGroup": 3000}))
    url = node.origin(1000)
    volume = node.empty_dir()
    result = run_clone(node, pod.clone, volume, url)
    assert result.returncode == 0, result.stderr
    checkout = volume / GIT_CHECKOUT  # what the app sees at /app (subPath)
    assert (checkout.stat().st_uid, checkout.stat().st_gid) == (1000, 3000)
    uid, gid = pod.identity(pod.pod["spec"]["containers"][0])
    status = git_as(node, checkout, uid, gid, "status", "--porcelain")
    assert status.returncode == 0 and status.stdout == "", status.stderr
    assert git_as(node, checkout, uid, gid, "describe", "--tags").stdout.strip() == "v1"
    write = node.run(["sh", "-c", f"echo 1 > {checkout}/lib/new.js"], uid, gid)
    assert write.returncode == 0, write.stderr  # the app writes into its checkout
    assert git_as(node, checkout, uid, gid, "add", "lib/new.js").returncode == 0


def test_a_user_other_than_the_clones_is_warned_of_and_is_refused_by_git(node: Node) -> None:
    # What the warning says, shown: the sidecar states UID 2000, the app 1000, who clones.
    pod = injected(clone_pod({"runAsUser": 1000}, app={}, helper={"runAsUser": 2000}))
    assert len(pod.warnings) == 1 and len(pod.warnings[0]) <= 256, pod.warnings
    assert "/app will be UID 1000's; helper may run as another user" in pod.warnings[0]
    assert "can only read it and git there fails ('dubious ownership')" in pod.warnings[0]
    url = node.origin(1000)
    volume = node.empty_dir()
    assert run_clone(node, pod.clone, volume, url).returncode == 0
    refused = git_as(node, volume / GIT_CHECKOUT, 2000, 2000, "status")
    assert refused.returncode != 0 and "dubious ownership" in refused.stderr
    write = node.run(["sh", "-c", f": > {volume / GIT_CHECKOUT}/x"], 2000, 2000)
    assert write.returncode != 0  # and it cannot write there, without an fsGroup


def test_without_a_stated_user_the_clone_runs_as_the_configured_uid_with_a_warning(node: Node) -> None:
    pod = injected(clone_pod())
    assert pod.clone["securityContext"]["runAsUser"] == CLONE_UID
    assert len(pod.warnings) == 1 and f"will be UID {CLONE_UID}'s; app may run" in pod.warnings[0], pod.warnings
    url = node.origin(CLONE_UID)
    volume = node.empty_dir()
    assert run_clone(node, pod.clone, volume, url).returncode == 0
    # An image running as root (no USER) can write anything, but its git still refuses the checkout.
    refused = git_as(node, volume / GIT_CHECKOUT, 0, 0, "status")
    assert refused.returncode != 0 and "dubious ownership" in refused.stderr


def test_with_an_fs_group_every_container_can_write_the_checkout(node: Node) -> None:
    # kubelet gives the emptyDir the fsGroup (setgid) and every container that group: the clone makes its files
    # group-writable (umask 0002), so a container running as another user can write them too.
    pod = injected(clone_pod({"runAsUser": 1000, "fsGroup": 4000}, app={}, helper={"runAsUser": 2000}))
    assert pod.clone["command"][-1] == "0002"
    assert "can write it (fsGroup)" in pod.warnings[0]
    url = node.origin(1000)
    volume = node.empty_dir(fs_group=4000)
    result = run_clone(node, pod.clone, volume, url, groups=(4000,))
    assert result.returncode == 0, result.stderr
    checkout = volume / GIT_CHECKOUT
    assert checkout.stat().st_gid == 4000
    write = node.run(["sh", "-c", f": > {checkout}/lib/from-helper.js && : > {checkout}/index.js"], 2000, 2000, (4000,))
    assert write.returncode == 0, write.stderr
    assert git_as(node, checkout, 1000, 0, "status", groups=(4000,)).returncode == 0


def test_sidecars_that_start_before_the_clone_do_not_mount_the_checkout() -> None:
    # A mesh proxy ahead of our init steps starts first: were the checkout mounted there, kubelet would create
    # the subPath directory for it, as root, before the clone, and git would refuse it to the app.
    pod = clone_pod({"runAsUser": 1000})
    pod["spec"]["initContainers"] = [
        {"name": "istio-proxy", "image": "registry.example.com/proxy:1", "restartPolicy": "Always"},
        {"name": "migrate", "image": "registry.example.com/migrate:1"},
    ]
    spec = injected(pod).pod["spec"]
    by_name = {c["name"]: c for c in spec["initContainers"]}
    assert [c["name"] for c in spec["initContainers"]] == ["istio-proxy", GIT_CONTAINER, "migrate"]
    assert "volumeMounts" not in by_name["istio-proxy"]
    assert by_name["migrate"]["volumeMounts"] == [{"mountPath": "/app", "name": GIT_VOLUME, "subPath": GIT_CHECKOUT}]
