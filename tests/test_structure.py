"""Project rules that keep the design honest: a pure core, a documented interface, restricted containers."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import GOLDEN, ROOT
from webhook.injection import annotations as keys
from webhook.offline import _pod_slots, load_documents

CORE = ROOT / "webhook" / "injection"


@pytest.mark.parametrize("module", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_core_does_no_io_and_knows_no_http(module: Path) -> None:
    tree = ast.parse(module.read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    forbidden = {"fastapi", "starlette", "uvicorn", "httpx", "socket", "subprocess", "webhook.app", "webhook.cli"}
    assert not {m for m in imported if m.split(".")[0] in forbidden or m in forbidden}
    if module.name != "config.py":  # only the config loader reads a file
        assert "open(" not in module.read_text() and "read_text" not in module.read_text()


def test_readme_documents_every_annotation_key() -> None:
    readme = (ROOT / "README.md").read_text()
    documented = {v for k, v in vars(keys).items() if k.isupper() and isinstance(v, str) and v.startswith(keys.PREFIX)}
    missing = sorted(k for k in documented if f"`{k}`" not in readme)
    assert not missing, f"README.md does not document {missing}"


def restricted_violations(container: dict[str, Any]) -> list[str]:
    """Pod Security Standard "restricted" (v1.29+) for one container, assuming nothing from the pod level."""
    sc = container.get("securityContext") or {}
    problems = []
    if sc.get("privileged"):
        problems.append("privileged")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation must be false")
    if sc.get("runAsNonRoot") is not True or sc.get("runAsUser") == 0:
        problems.append("must run as non-root")
    if "ALL" not in (sc.get("capabilities") or {}).get("drop", []):
        problems.append("capabilities must drop ALL")
    if set((sc.get("capabilities") or {}).get("add", [])) - {"NET_BIND_SERVICE"}:
        problems.append("only NET_BIND_SERVICE may be added")
    if (sc.get("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
        problems.append("seccompProfile must be RuntimeDefault or Localhost")
    if any(p.get("hostPort") for p in container.get("ports") or []):
        problems.append("hostPort")
    if not (container.get("resources") or {}).get("limits") or not (container.get("resources") or {}).get("requests"):
        problems.append("requests and limits (quota'd namespaces)")
    return problems


@pytest.mark.parametrize("case", sorted(GOLDEN.glob("*.injected.yaml")), ids=lambda p: p.stem)
def test_every_injected_container_meets_pod_security_restricted(case: Path) -> None:
    docs = load_documents(case.read_text())
    for index in range(len(docs)):
        for parent, key, _ in _pod_slots(docs, index):
            pod = parent[key]
            spec = pod["spec"]
            for container in spec.get("containers", []) + spec.get("initContainers", []):
                if container["name"].startswith("podpatterns-") or container["name"] in ("otel-agent", "migrate-db"):
                    assert restricted_violations(container) == [], container["name"]
            allowed = {
                "configMap",
                "csi",
                "downwardAPI",
                "emptyDir",
                "ephemeral",
                "persistentVolumeClaim",
                "projected",
                "secret",
            }
            for volume in spec.get("volumes", []):
                assert set(volume) - {"name"} <= allowed, volume
            sysctls = {s["name"] for s in (spec.get("securityContext") or {}).get("sysctls", [])}
            assert sysctls <= {
                "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.ip_local_port_range",
                "net.ipv4.tcp_syncookies",
                "net.ipv4.ping_group_range",
                "kernel.shm_rmid_forced",
            }


def test_the_checker_catches_a_root_container() -> None:
    assert "must run as non-root" in restricted_violations({"securityContext": {"runAsUser": 0}})
