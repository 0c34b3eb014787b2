"""JSONPatch operations from the old pod to the new one, built by walking only what changed.

The core shares every untouched object with the input (copy-on-write), so an identity check skips
whole subtrees: a pod with 1,500 env vars costs one comparison per env entry at most, never the
quadratic list diff of generic JSON-diff libraries. Lists of named items (containers, env, volumes)
are aligned in order, so an insertion becomes one `add` instead of a cascade of `replace`s.
"""

from __future__ import annotations

from typing import Any

Op = dict[str, Any]


def escape(token: str) -> str:
    """RFC 6901: `~` and `/` inside a key (annotation keys have `/`)."""
    if "~" in token or "/" in token:
        return token.replace("~", "~0").replace("/", "~1")
    return token


def make_patch(old: Any, new: Any) -> list[Op]:
    ops: list[Op] = []
    _diff(old, new, "", ops)
    return ops


def _diff(old: Any, new: Any, path: str, ops: list[Op]) -> None:
    if old is new:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for key in old:
            if key not in new:
                ops.append({"op": "remove", "path": f"{path}/{escape(key)}"})
        for key, value in new.items():
            if key not in old:
                ops.append({"op": "add", "path": f"{path}/{escape(key)}", "value": value})
            elif old[key] is not value:  # shared with the input: nothing to compare
                _diff(old[key], value, f"{path}/{escape(key)}", ops)
    elif isinstance(old, list) and isinstance(new, list):
        _diff_list(old, new, path, ops)
    elif old != new or type(old) is not type(new):
        ops.append({"op": "replace", "path": path, "value": new})


def _same_item(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if isinstance(a, dict) and isinstance(b, dict) and "name" in a:
        return a.get("name") == b.get("name") and a.get("mountPath") == b.get("mountPath")
    return bool(a == b)


def _diff_list(old: list[Any], new: list[Any], path: str, ops: list[Op]) -> None:
    """Align in order: matched items are diffed in place, unmatched new ones inserted."""
    pending: list[Op] = []
    j = 0
    for i, item in enumerate(new):
        if j < len(old) and _same_item(old[j], item):
            if old[j] is not item:
                _diff(old[j], item, f"{path}/{i}", pending)
            j += 1
        else:
            pending.append({"op": "add", "path": f"{path}/{i}", "value": item})
    if j != len(old):  # items were removed or reordered: say it plainly with one replace
        ops.append({"op": "replace", "path": path, "value": new})
        return
    ops.extend(pending)
