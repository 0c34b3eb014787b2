"""The securityContext every injected container gets: Pod Security Standard "restricted", and then some."""

from __future__ import annotations

from typing import Any


def restricted(run_as_user: int) -> dict[str, Any]:
    """Non-root with a numeric UID (so kubelet can check runAsNonRoot without reading the image)."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": run_as_user,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def harden(container: dict[str, Any], run_as_user: int = 65532) -> dict[str, Any]:
    """Merge a template container's own securityContext over the restricted one.

    Config validation already refused anything that loosens it (privileged, root, added caps).
    """
    base = restricted(int(container.get("securityContext", {}).get("runAsUser", run_as_user)))
    base.update(container.get("securityContext") or {})
    base.setdefault("capabilities", {"drop": ["ALL"]})
    base["capabilities"] = {**base["capabilities"], "drop": ["ALL"]}
    return {**container, "securityContext": base}
