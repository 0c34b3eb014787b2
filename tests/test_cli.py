"""`podpatterns inject` (and examples/), run as a user would: a real process, files and exit codes."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT

EXAMPLES = sorted(
    p
    for p in (ROOT / "examples").glob("*.yaml")
    if not p.name.endswith(".injected.yaml") and p.name != "namespace.yaml"
)


def podpatterns(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webhook", *args], input=stdin, capture_output=True, text=True, timeout=60, cwd=ROOT
    )


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_example_output_is_what_inject_prints(example: Path) -> None:
    result = podpatterns("inject", "-f", str(example))
    assert result.returncode == 0, result.stderr
    assert result.stdout == example.with_name(example.stem + ".injected.yaml").read_text()


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_running_inject_twice_changes_nothing(example: Path) -> None:
    once = podpatterns("inject", "-f", str(example)).stdout
    twice = podpatterns("inject", "-f", "-", stdin=once)
    assert twice.returncode == 0 and twice.stdout == once


def test_non_pod_documents_pass_through() -> None:
    docs = list(yaml.safe_load_all(podpatterns("inject", "-f", "examples/elasticsearch-tls-ambassador.yaml").stdout))
    service = next(d for d in docs if d["kind"] == "Service")
    original = next(
        d
        for d in yaml.safe_load_all((ROOT / "examples/elasticsearch-tls-ambassador.yaml").read_text())
        if d["kind"] == "Service"
    )
    assert service == original


def test_invalid_annotation_exits_1_with_the_webhook_message() -> None:
    manifest = """
apiVersion: v1
kind: Pod
metadata:
  name: bad
  annotations:
    podpatterns.io/tls-proxy: es-tls
    podpatterns.io/tls-proxy-port: "99999"
spec:
  containers: [{name: app, image: app:1, ports: [{containerPort: 80}]}]
"""
    result = podpatterns("inject", "-f", "-", stdin=manifest)
    assert result.returncode == 1
    assert "Pod bad: annotation podpatterns.io/tls-proxy-port='99999': expected a port number" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(("args", "stdin"), [(("-f", "/nonexistent.yaml"), None), (("-f", "-"), "a: [unclosed")])
def test_unreadable_input_exits_2(args: tuple[str, ...], stdin: str | None) -> None:
    result = podpatterns("inject", *args, stdin=stdin)
    assert result.returncode == 2 and "cannot read" in result.stderr


def test_invalid_config_exits_2_naming_the_field(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("tlsProxy:\n  image: 'nginx; reboot'\nnativeSidecar: true\n")
    result = podpatterns("inject", "-f", "examples/init-wait-for.yaml", "--config", str(config))
    assert result.returncode == 2
    assert "tlsProxy.image" in result.stderr and "nativeSidecar" in result.stderr


def test_serve_refuses_to_start_without_tls() -> None:
    result = podpatterns("serve", "--port", "0")
    assert result.returncode == 2 and "HTTPS only" in result.stderr


def test_duplicate_yaml_keys_are_refused() -> None:
    result = podpatterns("inject", "-f", "-", stdin="kind: Pod\nmetadata: {name: a}\nkind: Deployment\n")
    assert result.returncode == 2 and "duplicate key 'kind'" in result.stderr


@pytest.mark.parametrize("case", ["missing", "mismatched"])
def test_serve_explains_unusable_certificate_files(case: str, tmp_path: Path) -> None:
    from webhook.certs import write_certs

    a = write_certs(tmp_path / "a", dns_names=["localhost"], ip_addresses=[])
    b = write_certs(tmp_path / "b", dns_names=["localhost"], ip_addresses=[])
    cert, key = (str(tmp_path / "nope.crt"), str(a.tls_key)) if case == "missing" else (str(a.tls_crt), str(b.tls_key))
    result = podpatterns("serve", "--tls-cert", cert, "--tls-key", key, "--port", "0")
    assert result.returncode == 2
    assert (
        ("cannot read" in result.stderr and "nope.crt" in result.stderr)
        if case == "missing"
        else "not a usable pair" in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_a_typo_is_reported_with_the_nearest_key_even_when_the_pod_is_denied() -> None:
    manifest = """
apiVersion: v1
kind: Pod
metadata:
  name: typo
  annotations:
    podpatterns.io/tls-proxy: es-tls
    podpatterns.io/tls-proxy-protocl: tcp
    podpatterns.io/tls-proxy-port: "99999"
spec:
  containers: [{name: app, image: app:1, ports: [{containerPort: 80}]}]
"""
    result = podpatterns("inject", "-f", "-", stdin=manifest)
    assert result.returncode == 1
    assert "did you mean podpatterns.io/tls-proxy-protocol?" in result.stderr


def test_kubernetes_service_link_variables_do_not_break_serve() -> None:
    """A Service named podpatterns makes kubelet set PODPATTERNS_PORT=tcp://IP:443 in every pod of its
    namespace (seen on a real node: the webhook crash-looped). A flag wins; without one the error says why."""
    link = {"PODPATTERNS_PORT": "tcp://10.96.0.7:443", "PODPATTERNS_SERVICE_HOST": "10.96.0.7"}
    env = {**os.environ, **link}
    run = functools.partial(subprocess.run, capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    with_flag = run([sys.executable, "-m", "webhook", "serve", "--port", "0"])
    assert with_flag.returncode == 2 and "HTTPS only" in with_flag.stderr  # got past the variable
    without = run([sys.executable, "-m", "webhook", "serve"])
    assert without.returncode == 2 and "Traceback" not in without.stderr
    assert "'tcp://10.96.0.7:443' is not a number" in without.stderr and "enableServiceLinks" in without.stderr


@pytest.mark.parametrize(
    "spec",
    ["{containers: [x]}", '{containers: "x"}', "{containers: [{name: a, image: b, ports: [{containerPort: abc}]}]}"],
)
def test_a_malformed_pod_is_unreadable_input_not_a_traceback(spec: str) -> None:
    manifest = f"kind: Pod\nmetadata: {{name: a, annotations: {{podpatterns.io/tls-proxy: s}}}}\nspec: {spec}\n"
    result = podpatterns("inject", "-f", "-", stdin=manifest)
    assert result.returncode == 2 and "not a valid pod" in result.stderr and "Traceback" not in result.stderr
