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


def stated_identity(pod_spec: dict[str, Any], container: dict[str, Any]) -> tuple[int | None, int | None]:
    """The non-root user and group the pod states for a container (its own securityContext over the
    pod's), or None for what it leaves to the image: we cannot read images at admission."""
    pod_sc = pod_spec.get("securityContext") or {}
    own = container.get("securityContext") or {}
    found = []
    for field in ("runAsUser", "runAsGroup"):
        value = own.get(field, pod_sc.get(field))
        found.append(value if type(value) is int and value > 0 else None)
    return found[0], found[1]


def restricted_as(user: int | None, group: int | None, default_user: int) -> dict[str, Any]:
    """restricted(), as `user` and `group` when known (another container's identity), else default_user."""
    sc = restricted(user if user is not None else default_user)
    if group is not None:
        sc["runAsGroup"] = group
    return sc
