"""The container images the node tests run, built from Debian packages: no registry is reachable here.

Each image is one `mmdebstrap --variant=extract` rootfs (packages unpacked, no maintainer scripts, so the
users, the CA bundle and the busybox applet links a postinst would make are written here), smoke-tested
with `chroot` as a non-root UID, and written as a `docker save` tarball that `ctr images import` takes.
The sandbox image is a static C program; the webhook image is the project's own Dockerfile built by
buildah over the python image, with pip pointed at a wheelhouse downloaded on the host.

Tarballs are named by a hash of what they are built from, so a second run on the same machine builds
nothing. `python3 -m tests.node.images --cache DIR` builds them all and prints the timings.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import io
import json
import logging
import os
import re
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = Path(os.environ.get("PODPATTERNS_IMAGE_CACHE", "/var/cache/podpatterns-test/images"))

PAUSE = "podpatterns.test/pause:3.10"
BUSYBOX = "podpatterns.test/busybox:1.36"
NGINX = "podpatterns.test/nginx:1.22"
GIT = "podpatterns.test/git:2.39"
REDIS = "podpatterns.test/redis:7.0"
ELASTICSEARCH_EXPORTER = "podpatterns.test/elasticsearch-exporter:1.5"
REDIS_EXPORTER = "podpatterns.test/redis-exporter:1.45"
PYTHON = "podpatterns.test/python:3.11"
WEBHOOK = "podpatterns.test/podpatterns:0.1.0"

# Bump to rebuild every image when the build procedure itself (not a recipe) changes.
BUILDER_VERSION = 1
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Layer mtimes are fixed (bookworm's release day) so an unchanged rootfs gives the same image ID.
EPOCH = 1686355200
CREATED = "2023-06-10T00:00:00Z"
CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"  # found on the host's PATH, not the image's
APT_LISTS = Path("/var/lib/apt/lists")
HOST_DEBS = Path("/var/cache/apt/archives")


# Unpacked only as dependencies of maintainer scripts (add a user, register a service, ask debconf) or of
# each other; extract mode runs no script, so their files are deleted. A program that needed one of their
# libraries would fail the library check, so a wrong entry here cannot go unnoticed.
PASSWD_TOOLS = ("passwd", "libpam0g", "libpam-modules", "libpam-modules-bin", "libpam-runtime", "libaudit1")
PASSWD_TOOLS += ("libaudit-common", "libcap-ng0", "libsemanage2", "libsemanage-common", "libsepol2")
MAINTAINER_TOOLS = ("adduser", "debconf", "cdebconf", "dpkg", "tar", "init-system-helpers", "install-info")
MAINTAINER_TOOLS += ("usrmerge", "sensible-utils", "lsb-base", "iproute2", "libcap2-bin", "libnewt0.52")
MAINTAINER_TOOLS += ("libslang2", "libtextwrap1", "libdebian-installer4", "perl", "perl-base", "libperl5.36")
MAINTAINER_TOOLS += ("perl-modules-5.36", "libgdbm6", "libgdbm-compat4", "libnumber-compare-perl")
MAINTAINER_TOOLS += ("libtext-glob-perl", "libfile-find-rule-perl", *PASSWD_TOOLS)


@dataclass(frozen=True)
class Account:
    """A passwd and group entry; extract mode runs no postinst, so no package creates its user."""

    name: str
    uid: int
    home: str = "/nonexistent"


@dataclass(frozen=True)
class Check:
    """A command run in the finished rootfs (as `user`, else the image's user if not root, else nobody)
    whose stdout+stderr must contain `expect`."""

    argv: tuple[str, ...]
    expect: str = ""
    user: str | None = None
    env: tuple[str, ...] = ()


@dataclass(frozen=True)
class Recipe:
    """Everything an image is built from; its hash names the tarball."""

    ref: str
    packages: tuple[str, ...] = ()
    user: str = "0:0"
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = (PATH_ENV,)
    workdir: str = "/"
    accounts: tuple[Account, ...] = ()
    files: tuple[tuple[str, str], ...] = ()  # (path, content), written after the packages
    dirs: tuple[tuple[str, int, str], ...] = ()  # (path, mode, "uid:gid")
    remove: tuple[str, ...] = ()
    drop: tuple[str, ...] = MAINTAINER_TOOLS  # packages unpacked as dependencies, then deleted
    run: tuple[tuple[str, ...], ...] = ()  # commands run as root in the rootfs once it is complete
    static_c: str = ""  # a C program built with `gcc -static` to /pause, instead of packages
    checks: tuple[Check, ...] = field(default=(), compare=False)

    @property
    def key(self) -> str:
        recipe = {k: v for k, v in self.__dict__.items() if k != "checks"}
        data = json.dumps([BUILDER_VERSION, recipe], sort_keys=True, default=lambda o: o.__dict__)
        return hashlib.sha256(data.encode()).hexdigest()[:16]

    @property
    def check_user(self) -> str:
        return self.user if self.user.split(":")[0] != "0" else "65534:65534"


# The pod sandbox: sleep forever as PID 1 of the pod, reap zombies, leave cleanly when told to.
PAUSE_C = r"""
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_down(int sig) {
  (void)sig;
  _exit(0); /* only async-signal-safe calls in a handler */
}

static void on_child(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "-v") == 0) {
    puts("podpatterns pause 3.10");
    return 0;
  }
  if (getpid() != 1) fputs("pause: warning: not PID 1\n", stderr);
  struct sigaction down = {.sa_handler = on_down};
  struct sigaction child = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP | SA_RESTART};
  sigemptyset(&down.sa_mask);
  sigemptyset(&child.sa_mask);
  if (sigaction(SIGINT, &down, NULL) || sigaction(SIGTERM, &down, NULL) || sigaction(SIGCHLD, &child, NULL)) {
    perror("pause: sigaction");
    return 1;
  }
  for (;;) pause();
}
"""

NGINX_CHECK_CONF = """\
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
pid /tmp/nginx.pid;
error_log stderr;
events {}
http {
  access_log off;
  client_body_temp_path /tmp/body; proxy_temp_path /tmp/proxy; fastcgi_temp_path /tmp/fastcgi;
  uwsgi_temp_path /tmp/uwsgi; scgi_temp_path /tmp/scgi;
  server { listen unix:/tmp/check-http.sock; return 200 ok; }
}
stream { server { listen unix:/tmp/check-stream.sock; proxy_pass 127.0.0.1:9; } }
"""
# The command the injector gives the TLS proxy, with -t: busybox's sh and printf, then nginx itself.
NGINX_CHECK_CMD = (
    'printf "%s" "$PODPATTERNS_NGINX_CONF" > /tmp/nginx.conf && exec nginx -t -e stderr -c /tmp/nginx.conf'
)
# A shallow clone (upload-pack, fetch-pack, index-pack: what a git:// clone runs too) with HOME unset,
# then with a HOME that does not exist.
GIT_CHECK = """\
set -e
git init -q /tmp/origin
git -C /tmp/origin -c user.name=t -c user.email=t@t commit -q --allow-empty -m first
git clone -q --depth=1 -- file:///tmp/origin /tmp/a
HOME=/nonexistent git clone -q --depth=1 -- file:///tmp/origin /tmp/b
git -C /tmp/a log --format=%s && git -C /tmp/b log --format=%s
"""
# The CA bundle written below is what Python's ssl loads by default.
PYTHON_CHECK = "import ssl; assert len(ssl.create_default_context().get_ca_certs()) > 100; print('ok')"
BUSYBOX_APPLETS = "sh tail nc sleep date wget httpd id cat printf sed [ grep ls mkdir env timeout"

RECIPES: tuple[Recipe, ...] = (
    Recipe(
        PAUSE,
        user="65535:65535",
        entrypoint=("/pause",),
        env=(),
        static_c=PAUSE_C,
    ),
    Recipe(
        BUSYBOX,
        packages=("busybox-static",),
        user="65534:65534",
        cmd=("sh",),
        checks=(
            Check(
                ("sh", "-c", f"for a in {BUSYBOX_APPLETS}; do command -v $a >/dev/null || exit 1; done; id -u"), "65534"
            ),
            Check(("sh", "-c", "echo one > /tmp/t; echo two >> /tmp/t; tail -n 1 /tmp/t"), "two"),
        ),
    ),
    Recipe(
        NGINX,
        packages=("nginx-light", "libnginx-mod-stream", "busybox-static"),
        user="101:101",  # no command: the injector always gives one (and a config nginx can run as 101)
        accounts=(Account("nginx", 101),),
        checks=(
            Check(("nginx", "-V"), "--with-stream=dynamic"),
            Check(
                ("sh", "-c", NGINX_CHECK_CMD), "test is successful", env=(f"PODPATTERNS_NGINX_CONF={NGINX_CHECK_CONF}",)
            ),
        ),
    ),
    Recipe(
        GIT,
        packages=("git", "ca-certificates", "busybox-static"),
        user="65532:65532",
        entrypoint=("git",),
        checks=(
            # As the injected clone runs: a UID without a passwd entry.
            Check(("git", "--version"), "git version 2.39"),
            Check(("sh", "-c", GIT_CHECK), "first\nfirst"),
        ),
    ),
    Recipe(
        REDIS,
        packages=("redis-server", "redis-tools", "busybox-static"),
        user="999:999",
        entrypoint=("redis-server",),
        workdir="/data",
        accounts=(Account("redis", 999, "/data"),),
        dirs=(("/data", 0o755, "999:999"),),
        checks=(
            Check(("redis-server", "--version"), "v=7.0"),
            Check(("redis-cli", "--help"), "--tls"),
        ),
    ),
    Recipe(
        ELASTICSEARCH_EXPORTER,
        packages=("prometheus-elasticsearch-exporter",),
        user="65534:65534",
        entrypoint=("/usr/bin/prometheus-elasticsearch-exporter",),
        checks=(
            Check(("/usr/bin/prometheus-elasticsearch-exporter", "--version"), "version 1.5"),
            Check(("/usr/bin/prometheus-elasticsearch-exporter", "--help"), "--es.uri"),
        ),
    ),
    Recipe(
        REDIS_EXPORTER,
        packages=("prometheus-redis-exporter",),
        user="65534:65534",
        entrypoint=("/usr/bin/prometheus-redis-exporter",),
        checks=(
            Check(("/usr/bin/prometheus-redis-exporter", "--version"), "1.45"),
            Check(("/usr/bin/prometheus-redis-exporter", "--help"), "-redis.addr"),
        ),
    ),
    Recipe(
        PYTHON,
        # passwd: groupadd/useradd for the Dockerfile; busybox: sh and the usual utilities.
        packages=("python3", "python3-pip", "passwd", "ca-certificates", "busybox-static"),
        drop=tuple(p for p in MAINTAINER_TOOLS if p not in PASSWD_TOOLS),
        cmd=("python3",),
        env=(PATH_ENV, "LANG=C.UTF-8"),
        # login.defs comes from the `login` package (PAM and all); useradd only needs the ranges.
        files=(("/etc/login.defs", "UID_MIN 1000\nUID_MAX 60000\nGID_MIN 1000\nGID_MAX 60000\n"),),
        # The image is ours: let pip install system-wide (into /usr/local), as in python:3.11-slim.
        remove=("/usr/lib/python3.11/EXTERNALLY-MANAGED",),
        # What the postinst's py3compile does, for the standard library (pip and setuptools only run while
        # building): else every start on a read-only root compiles anew. Not checked against the sources'
        # mtimes, which the layer sets to EPOCH.
        run=(
            tuple(shlex.split("python3 -m compileall -q -j0 --invalidation-mode unchecked-hash /usr/lib/python3.11")),
        ),
        checks=(
            Check(("python3", "-c", PYTHON_CHECK), "ok"),
            Check(("pip", "--version"), "python 3.11"),
            Check(("sh", "-c", "for c in groupadd useradd sed; do command -v $c; done"), "/usr/sbin/useradd"),
        ),
    ),
)


class BuildError(RuntimeError):
    pass


def _run(
    argv: Sequence[str], env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise with its output, which is where the reason is."""
    result = subprocess.run(list(argv), capture_output=True, text=True, env=env, timeout=timeout, check=False)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-4000:]
        raise BuildError(f"{' '.join(map(str, argv))[:300]}: exit {result.returncode}\n{tail}")
    return result


def _file_name(ref: str, key: str) -> str:
    name, tag = ref.rsplit("/", 1)[1].split(":")
    return f"{name}-{tag}-{key}.tar"


def _prune(cache_dir: Path, ref: str, keep: Path) -> None:
    """Drop this image's tarballs from older recipes so the cache does not grow with every change."""
    name = ref.rsplit("/", 1)[1].split(":")[0]
    pattern = re.compile(rf"{re.escape(name)}-[^-]+-[0-9a-f]{{16}}\.tar")
    for path in cache_dir.glob(f"{name}-*.tar"):
        if path != keep and pattern.fullmatch(path.name):
            path.unlink(missing_ok=True)


# --- rootfs --------------------------------------------------------------------------------------


def _apt_sources() -> list[str]:
    """The host's enabled apt sources: its lists are reused, so the chroot must name the same ones."""
    sources = [p for p in [Path("/etc/apt/sources.list")] if p.is_file() and re.search(r"^deb ", p.read_text(), re.M)]
    sources += sorted(Path("/etc/apt/sources.list.d").glob("*.list"))
    sources += sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    if not sources:
        raise BuildError("no apt sources on this host")
    return [str(p) for p in sources]


def _suite() -> str:
    match = re.search(r"^VERSION_CODENAME=(\S+)", Path("/etc/os-release").read_text(), re.M)
    return match.group(1) if match else "bookworm"


def _link_all(files: Iterable[Path], dest: Path) -> None:
    """Hardlink (copying nothing) files into dest; a file already there, or on another filesystem, is skipped."""
    for path in files:
        try:
            os.link(path, dest / path.name)
        except (FileExistsError, OSError):
            continue


def _mmdebstrap(recipe: Recipe, rootfs: Path, debs: Path) -> None:
    """Unpack the recipe's packages (with dependencies, no recommends) into rootfs, minus `recipe.drop`.

    Seeds the host's apt lists (so no `apt-get update`: the slowest step) and every .deb we or the host
    already have (apt takes a file whose size and hash match the index instead of downloading it)."""
    lists = sorted(p for p in APT_LISTS.glob("*") if p.is_file() and ("Packages" in p.name or "Release" in p.name))
    (rootfs / APT_LISTS.relative_to("/")).mkdir(parents=True)
    archives = rootfs / "var/cache/apt/archives"
    archives.mkdir(parents=True)
    _link_all(lists, rootfs / APT_LISTS.relative_to("/"))
    _link_all(debs.glob("*.deb"), archives)  # (debs also holds each .deb's file list)
    _link_all(HOST_DEBS.glob("*.deb"), archives)
    skip = ["check/empty", "cleanup/apt/cache"] + (["update"] if any("Packages" in p.name for p in lists) else [])
    # The extract hook is told which .debs were unpacked: the only record of it (no dpkg status is written).
    unpacked = rootfs.parent / "unpacked.txt"
    _run(
        [
            "mmdebstrap",
            "--variant=extract",
            "--mode=root",
            "--format=directory",
            "--quiet",
            f"--include={','.join(recipe.packages)}",
            f"--skip={','.join(skip)}",
            f'--extract-hook=printf "%s\\n" $MMDEBSTRAP_ESSENTIAL > {shlex.quote(str(unpacked))}',
            _suite(),
            str(rootfs),
            *_apt_sources(),
        ]
    )
    _drop(rootfs, [rootfs / p.lstrip("/") for p in unpacked.read_text().split()], set(recipe.drop), debs)
    # Keep what apt downloaded for the next build of any image, then drop apt's state from the image.
    _link_all((p for p in archives.glob("*.deb") if p.stat().st_nlink == 1), debs)
    for junk in ("var/cache/apt", "var/lib/apt", "var/log/apt", "etc/apt"):
        shutil.rmtree(rootfs / junk, ignore_errors=True)


def _deb_paths(deb: Path, cache: Path) -> list[str]:
    """The paths a .deb unpacks (directories end in "/"), listed once per .deb version and kept in cache."""
    listing = cache / f"{deb.name}.paths"
    if listing.is_file():
        return listing.read_text().splitlines()
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            paths = [os.path.normpath(m.name) + ("/" if m.isdir() else "") for m in tar]
    if proc.returncode != 0:
        raise BuildError(f"dpkg-deb --fsys-tarfile {deb}: exit {proc.returncode}")
    tmp = listing.with_name(f"{listing.name}.{threading.get_ident()}")  # two builds may list the same .deb
    tmp.write_text("\n".join(paths) + "\n")
    os.replace(tmp, listing)
    return paths


def _drop(rootfs: Path, debs: list[Path], drop: set[str], cache: Path) -> None:
    """Delete the files of the unpacked packages named in `drop` (directories only once empty)."""
    dirs: set[Path] = set()
    for deb in debs:
        if deb.name.split("_")[0] not in drop:
            continue
        for name in _deb_paths(deb, cache):
            path = rootfs / name
            if name.endswith("/"):
                dirs.add(path)
            elif os.path.lexists(path) and not path.is_dir():
                path.unlink()
    for path in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            path.rmdir()


def _trim(rootfs: Path) -> None:
    """Docs, manuals and translations: nothing a test container reads (copyright files stay)."""
    doc = rootfs / "usr/share/doc"
    if doc.is_dir():
        for path in doc.rglob("*"):
            if path.is_symlink() or (path.is_file() and path.name != "copyright"):
                path.unlink()
    for sub in ("man", "info", "locale", "lintian", "linda", "bug", "menu", "bash-completion"):
        shutil.rmtree(rootfs / "usr/share" / sub, ignore_errors=True)


def _busybox_links(rootfs: Path) -> None:
    """What `busybox --install -s` does, without overriding a real program a package installed."""
    busybox = rootfs / "bin/busybox"
    if not busybox.is_file():
        return
    for applet in _run([str(busybox), "--list-full"]).stdout.split():
        link = rootfs / applet
        if not os.path.lexists(link):
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to("/bin/busybox")


def _ca_bundle(rootfs: Path) -> None:
    """ca-certificates' postinst (update-ca-certificates) makes the bundle every TLS client reads."""
    certs = sorted((rootfs / "usr/share/ca-certificates").rglob("*.crt"))
    if not certs:
        return
    bundle = rootfs / "etc/ssl/certs/ca-certificates.crt"
    bundle.parent.mkdir(parents=True, exist_ok=True)
    bundle.write_text("".join(p.read_text() for p in certs))
    # OpenSSL's default paths (Python's ssl uses them); the `openssl` package would ship these links.
    ssl_dir = rootfs / "usr/lib/ssl"
    ssl_dir.mkdir(parents=True, exist_ok=True)
    for name, target in (("cert.pem", "/etc/ssl/certs/ca-certificates.crt"), ("certs", "/etc/ssl/certs")):
        if not os.path.lexists(ssl_dir / name):
            (ssl_dir / name).symlink_to(target)


def _accounts(rootfs: Path, accounts: Sequence[Account]) -> None:
    everyone = [Account("root", 0, "/root"), *accounts, Account("nobody", 65534)]
    passwd = "".join(
        f"{a.name}:x:{a.uid}:{a.uid}:{a.name}:{a.home}:{'/bin/sh' if a.uid == 0 else '/usr/sbin/nologin'}\n"
        for a in everyone
    )
    group = "".join(f"{'nogroup' if a.uid == 65534 else a.name}:x:{a.uid}:\n" for a in everyone)
    (rootfs / "etc").mkdir(exist_ok=True)
    (rootfs / "etc/passwd").write_text(passwd)
    (rootfs / "etc/group").write_text(group)


def _customize(recipe: Recipe, rootfs: Path) -> None:
    _trim(rootfs)
    _busybox_links(rootfs)
    _ca_bundle(rootfs)
    _accounts(rootfs, recipe.accounts)
    # The runtime mounts its own /etc/hosts, resolv.conf and hostname; don't ship the build host's.
    (rootfs / "etc/hosts").write_text("127.0.0.1 localhost\n::1 localhost\n")
    (rootfs / "etc/resolv.conf").write_text("")
    (rootfs / "etc/hostname").write_text("")
    for name in ("proc", "sys", "dev", "run", "root", "tmp"):
        (rootfs / name).mkdir(exist_ok=True)
    (rootfs / "tmp").chmod(0o1777)
    if (rootfs / "etc/ld.so.conf").exists():  # ldconfig is a postinst's job too
        _run(["ldconfig", "-r", str(rootfs)])
    for path, content in recipe.files:
        target = rootfs / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    for path, mode, owner in recipe.dirs:
        target = rootfs / path.lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        target.chmod(mode)
        uid, gid = owner.split(":")
        os.chown(target, int(uid), int(gid))
    for path in recipe.remove:
        (rootfs / path.lstrip("/")).unlink()
    for argv in recipe.run:
        _run([CHROOT, str(rootfs), *argv], env=dict(e.split("=", 1) for e in recipe.env))


LIBRARY_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/lib", "/usr/lib")


def _needed(path: Path) -> tuple[list[str], list[str]] | None:
    """An ELF64 file's DT_NEEDED libraries and RUNPATH/RPATH dirs (from its section headers), or None."""
    with path.open("rb") as f:
        if f.read(6) != b"\x7fELF\x02\x01":  # 64-bit little-endian only (amd64)
            return None
        data = f.seek(0) or f.read()
    shoff, (shentsize, shnum) = int.from_bytes(data[0x28:0x30], "little"), struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    needed: list[str] = []
    paths: list[str] = []
    for _, kind, _, _, offset, size, link, _, _, _ in sections:
        if kind != 6:  # SHT_DYNAMIC
            continue
        strtab = sections[link][4]
        for tag, value in struct.iter_unpack("<qQ", data[offset : offset + size]):
            if tag in (1, 15, 29):  # DT_NEEDED, DT_RPATH, DT_RUNPATH: offsets into the string table
                name = data[strtab + value : data.index(b"\0", strtab + value)].decode()
                (needed if tag == 1 else paths).extend([name] if tag == 1 else name.split(":"))
    return needed, paths


def _check_libraries(recipe: Recipe, rootfs: Path) -> None:
    """Every ELF file's shared libraries must be in the rootfs: dropped packages must not break a program.
    (A parse of each file's dynamic section, not ld.so: a few hundred files in well under a second.)"""
    seen: set[int] = set()
    broken = []
    for path in sorted(rootfs.rglob("*")):
        if path.is_symlink() or not path.is_file() or path.stat().st_ino in seen:
            continue
        seen.add(path.stat().st_ino)
        found = _needed(path) if path.stat().st_size > 0x40 else None
        if not found:
            continue
        needed, runpath = found
        origin = "/" + str(path.parent.relative_to(rootfs))
        dirs = [d.replace("$ORIGIN", origin).replace("${ORIGIN}", origin) for d in runpath] + list(LIBRARY_DIRS)
        for library in needed:
            if not any(os.path.exists(rootfs / d.lstrip("/") / library) for d in dirs):
                broken.append(f"/{path.relative_to(rootfs)} needs {library}")
    if broken:
        raise BuildError(f"{recipe.ref}: missing libraries:\n" + "\n".join(broken[:40]))


def _check(recipe: Recipe, rootfs: Path) -> None:
    """Run the recipe's checks in the rootfs with `chroot --userspec`: a non-root UID, the image's Env, no HOME."""
    _check_libraries(recipe, rootfs)
    for check in recipe.checks:
        user = check.user or recipe.check_user
        env = dict(e.split("=", 1) for e in (*recipe.env, *check.env))
        argv = [CHROOT, f"--userspec={user}", str(rootfs), *check.argv]
        result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)
        output = result.stdout + result.stderr
        if check.expect not in output or result.returncode != 0:
            raise BuildError(
                f"{recipe.ref}: check {list(check.argv)} as {user}: exit {result.returncode}, "
                f"expected {check.expect!r} in:\n{output[-3000:]}"
            )
    _empty(rootfs / "tmp")  # leave no trace of the checks in the image


def _empty(directory: Path) -> None:
    for path in directory.iterdir() if directory.is_dir() else ():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _pause(recipe: Recipe, rootfs: Path) -> None:
    source = rootfs.parent / "pause.c"
    source.write_text(recipe.static_c)
    binary = rootfs / "pause"
    _run(["gcc", "-Os", "-static", "-s", "-Wall", "-Werror", "-o", str(binary), str(source)])
    _check_pause(binary)


def _check_pause(binary: Path) -> None:
    """It must outlive SIGCHLD and exit 0 on SIGTERM and SIGINT (not die of them: kubelet reads that as a crash)."""
    if "podpatterns pause" not in _run([str(binary), "-v"]).stdout:
        raise BuildError("pause -v")
    for stop in (signal.SIGTERM, signal.SIGINT):
        proc = subprocess.Popen([str(binary)], stderr=subprocess.DEVNULL)
        try:
            _wait_for_handler(proc.pid, stop)
            proc.send_signal(signal.SIGCHLD)
            proc.send_signal(stop)
            code = proc.wait(timeout=10)
        finally:
            proc.kill()
            proc.wait()
        if code != 0:
            raise BuildError(f"pause exited {code} on SIGCHLD then {stop.name}, expected 0")


def _wait_for_handler(pid: int, sig: signal.Signals) -> None:
    """Until the process catches `sig` (its bit in /proc's SigCgt mask): signalled earlier, it would die of it."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = Path(f"/proc/{pid}/status").read_text()
        caught = re.search(r"^SigCgt:\s*([0-9a-f]+)", status, re.M)
        if caught and int(caught.group(1), 16) & (1 << (sig - 1)):
            return
        time.sleep(0.01)
    raise BuildError(f"pause never installed a {sig.name} handler")


# --- docker save tarballs --------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _image_config(recipe: Recipe, diff_id: str) -> bytes:
    config: dict[str, object] = {"User": recipe.user, "Env": list(recipe.env), "WorkingDir": recipe.workdir}
    if recipe.entrypoint:
        config["Entrypoint"] = list(recipe.entrypoint)
    if recipe.cmd:
        config["Cmd"] = list(recipe.cmd)
    config["Labels"] = {"test.podpatterns.recipe": recipe.key}
    built_from = f"gcc -static pause.c ({recipe.key})" if recipe.static_c else f"mmdebstrap {' '.join(recipe.packages)}"
    return json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": CREATED,
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
            "history": [{"created": CREATED, "created_by": f"tests/node/images.py: {built_from}"}],
        },
        sort_keys=True,
    ).encode()


def _docker_archive(recipe: Recipe, rootfs: Path, out: Path) -> None:
    """rootfs as one uncompressed layer, in `docker save` layout: manifest.json (first), config, layer."""
    layer = rootfs.parent / "layer.tar"
    # /dev's nodes were for the checks; the runtime mounts its own /dev.
    _empty(rootfs / "dev")
    members = sorted(p.name for p in rootfs.iterdir())
    tar_options = ["--numeric-owner", "--sort=name", f"--mtime=@{EPOCH}"]
    _run(["tar", "--create", f"--file={layer}", f"--directory={rootfs}", *tar_options, "--", *members])
    diff_id = _sha256(layer)
    config = _image_config(recipe, diff_id)
    config_name = f"{hashlib.sha256(config).hexdigest()}.json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [recipe.ref], "Layers": [f"{diff_id}/layer.tar"]}])
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in (("manifest.json", manifest.encode()), (config_name, config)):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), EPOCH, 0o644
            tar.addfile(info, io.BytesIO(data))
        info = tar.gettarinfo(str(layer), f"{diff_id}/layer.tar")
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = EPOCH
        with layer.open("rb") as f:
            tar.addfile(info, f)
    os.replace(tmp, out)


def image_id(tarball: Path) -> str:
    """The image's config digest, read from a docker-save tarball's manifest (no layer is read)."""
    with tarfile.open(tarball) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        (entry,) = json.load(member)
    return str(entry["Config"]).removeprefix("blobs/sha256/").removesuffix(".json")


def _build(recipe: Recipe, cache_dir: Path, seconds: dict[str, float]) -> Path:
    out = cache_dir / _file_name(recipe.ref, recipe.key)
    seconds[recipe.ref] = 0.0
    if out.is_file():
        return out
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=_file_name(recipe.ref, "")[:-4] + "-", dir=cache_dir / "work"))
    try:
        rootfs = work / "rootfs"
        if recipe.static_c:
            rootfs.mkdir()
            _pause(recipe, rootfs)
        else:
            _mmdebstrap(recipe, rootfs, cache_dir / "debs")
            _customize(recipe, rootfs)
            _check(recipe, rootfs)
        _docker_archive(recipe, rootfs, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _prune(cache_dir, recipe.ref, out)
    seconds[recipe.ref] = round(time.monotonic() - started, 1)
    log.info("built %s in %.1f s: %s", recipe.ref, seconds[recipe.ref], out)
    return out


# --- the webhook image: buildah over the python image ----------------------------------------------

WHEEL_PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(36, 16, -1)] + ["manylinux2014_x86_64"]


def _requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return sorted({*project["project"]["dependencies"], *project["build-system"]["requires"]})


def _wheelhouse(cache_dir: Path) -> Path:
    """Wheels of the webhook's dependencies and build requirements for Debian 12's CPython 3.11, from PyPI
    on the host: whether a RUN step inside buildah reaches PyPI is not something to depend on."""
    requirements = _requirements()
    key = hashlib.sha256(json.dumps([requirements, WHEEL_PLATFORMS]).encode()).hexdigest()[:16]
    dest = cache_dir / f"wheels-{key}"
    if dest.is_dir():
        return dest
    tmp = Path(tempfile.mkdtemp(prefix="wheels-", dir=cache_dir / "work"))
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-cache-dir"]
    target = ["--only-binary=:all:", "--implementation=cp", "--python-version=3.11", "--abi=cp311", "--abi=abi3"]
    target += ["--abi=none", *(f"--platform={p}" for p in WHEEL_PLATFORMS)]
    _run([*pip, *target, f"--dest={tmp}", *requirements])
    os.replace(tmp, dest)
    for old in cache_dir.glob("wheels-*"):
        if old != dest and re.fullmatch(r"wheels-[0-9a-f]{16}", old.name):
            shutil.rmtree(old, ignore_errors=True)
    return dest


def _webhook_sources() -> list[Path]:
    """What the image is built from, as .dockerignore allows it (the Dockerfile's COPY lines)."""
    files = [ROOT / "Dockerfile", ROOT / ".dockerignore", ROOT / "pyproject.toml", ROOT / "README.md"]
    files += sorted(
        p for p in (ROOT / "webhook").rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )
    return files


def _webhook_key(sources: list[Path], base: Path, wheels: Path) -> str:
    digest = hashlib.sha256(f"{BUILDER_VERSION} {image_id(base)}\n".encode())
    for path in sources:
        digest.update(f"{path.relative_to(ROOT)}\0{path.stat().st_mode & 0o111}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    digest.update(" ".join(sorted(p.name for p in wheels.iterdir())).encode())
    return digest.hexdigest()[:16]


def _build_webhook(cache_dir: Path, base: Path, wheels: Path, seconds: dict[str, float]) -> Path:
    """`buildah bud` of the project's Dockerfile over the python image, offline: pip reads PIP_NO_INDEX and
    PIP_FIND_LINKS from the build args, and the wheelhouse is bind-mounted into the RUN steps only."""
    sources = _webhook_sources()
    out = cache_dir / _file_name(WEBHOOK, _webhook_key(sources, base, wheels))
    seconds[WEBHOOK] = 0.0
    if out.is_file():
        return out
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="podpatterns-", dir=cache_dir / "work"))
    # Private storage, never the host's. overlay is three times faster than vfs (which copies every layer).
    driver = "overlay" if "\toverlay\n" in Path("/proc/filesystems").read_text() else "vfs"
    buildah = ["buildah", "--root", str(work / "root"), "--runroot", str(work / "run"), "--storage-driver", driver]
    policy = work / "policy.json"  # the archives are ours: no signatures to check
    policy.write_text('{"default": [{"type": "insecureAcceptAnything"}]}')
    signature = ["--signature-policy", str(policy)]
    env = {**os.environ, "BUILDAH_ISOLATION": "chroot"}
    try:
        context = work / "context"  # a copy of the sources: what was hashed is what is built
        for path in sources:
            target = context / path.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        _run([*buildah, "pull", "--quiet", *signature, f"docker-archive:{base}"], env=env)
        build_args = [f"BASE={PYTHON}", "PIP_NO_INDEX=1", "PIP_FIND_LINKS=/wheels"]
        _run(
            [*buildah, "bud", "--quiet", "--isolation=chroot", "--pull=never", "--format=docker", *signature]
            + [arg for build_arg in build_args for arg in ("--build-arg", build_arg)]
            + [f"--volume={wheels}:/wheels:ro", f"--tag={WEBHOOK}", str(context)],
            env=env,
        )
        # The entry point must start in the image, as its USER.
        container = _run([*buildah, "from", "--quiet", "--pull-never", WEBHOOK], env=env).stdout.strip()
        answer = _run([*buildah, "run", container, "--", "sh", "-c", "id -u && podpatterns serve --help"], env=env)
        if not answer.stdout.startswith("10001\n") or "--tls-cert" not in answer.stdout:
            raise BuildError(f"`id -u && podpatterns serve --help` in the image:\n{answer.stdout}")
        _run([*buildah, "rm", container], env=env)
        tmp = out.with_name(out.name + ".tmp")
        tmp.unlink(missing_ok=True)
        _run([*buildah, "push", "--quiet", *signature, WEBHOOK, f"docker-archive:{tmp}:{WEBHOOK}"], env=env)
        os.replace(tmp, out)
    finally:
        # Unmount whatever the overlay driver still has mounted before deleting its storage.
        subprocess.run([*buildah, "rm", "--all"], capture_output=True, check=False, timeout=60)
        subprocess.run([*buildah, "rmi", "--all", "--force"], capture_output=True, check=False, timeout=60)
        for mount in reversed(Path("/proc/self/mounts").read_text().splitlines()):
            if (point := mount.split()[1]).startswith(f"{work}/"):
                subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)
    _prune(cache_dir, WEBHOOK, out)
    seconds[WEBHOOK] = round(time.monotonic() - started, 1)
    log.info("built %s in %.1f s: %s", WEBHOOK, seconds[WEBHOOK], out)
    return out


# --- public API ------------------------------------------------------------------------------------


def build_images(
    cache_dir: Path, refs: Iterable[str] | None = None, timings: dict[str, float] | None = None
) -> dict[str, Path]:
    """Build every image (or those in `refs`, plus what they are built from) in parallel, or find it in
    cache_dir; returns ref -> docker-save tarball. `timings` receives each image's build seconds (0: cached).

    An flock on the cache makes concurrent callers wait rather than build the same image twice."""
    known = [r.ref for r in RECIPES] + [WEBHOOK]
    wanted = set(refs) if refs is not None else set(known)
    if unknown := wanted - set(known):
        raise ValueError(f"unknown images: {sorted(unknown)}")
    if WEBHOOK in wanted:
        wanted.add(PYTHON)
    seconds = timings if timings is not None else {}
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (cache_dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        shutil.rmtree(cache_dir / "work", ignore_errors=True)  # leftovers of an interrupted build
        (cache_dir / "work").mkdir()
        (cache_dir / "debs").mkdir(exist_ok=True)
        # The webhook image waits for the python image: build that first. Builds are mostly CPU (apt, xz).
        recipes = sorted((r for r in RECIPES if r.ref in wanted), key=lambda r: r.ref != PYTHON)
        with ThreadPoolExecutor((os.cpu_count() or 2) + 1) as pool, ThreadPoolExecutor(2) as webhook_pool:
            futures = {r.ref: pool.submit(_build, r, cache_dir, seconds) for r in recipes}
            if WEBHOOK in wanted:
                wheels, python = webhook_pool.submit(_wheelhouse, cache_dir), futures[PYTHON]
                futures[WEBHOOK] = webhook_pool.submit(
                    lambda: _build_webhook(cache_dir, python.result(), wheels.result(), seconds)
                )
            built = {ref: future.result() for ref, future in futures.items()}
        shutil.rmtree(cache_dir / "work", ignore_errors=True)
    return {ref: built[ref] for ref in known if ref in built}


def import_images(tarballs: dict[str, Path], ctr: list[str]) -> None:
    """`ctr images import` each tarball into the containerd that `ctr` (an argv prefix naming its address and
    the k8s.io namespace) reaches, then check that every ref is listed there."""
    # Two at a time: an import mostly waits for the disk (unpacking into the snapshotter), more gain nothing.
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda tar: _run([*ctr, "images", "import", str(tar)], timeout=300), tarballs.values()))
    listed = set(_run([*ctr, "images", "list", "--quiet"]).stdout.split())
    missing = sorted(set(tarballs) - listed)
    if missing:
        raise BuildError(f"not listed by containerd after import: {missing}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m tests.node.images", description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"cache directory (default {DEFAULT_CACHE})")
    parser.add_argument("refs", nargs="*", help="only these images (default: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    started = time.monotonic()
    timings: dict[str, float] = {}
    tarballs = build_images(args.cache, args.refs or None, timings)
    for ref, path in tarballs.items():
        print(f"{ref}\t{path}\t{timings[ref]:.1f} s\t{path.stat().st_size / 1e6:.1f} MB")
    print(f"total {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
