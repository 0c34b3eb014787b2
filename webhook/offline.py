"""Offline injection of manifests: what the webhook would do, for GitOps reviews and `kubectl apply`.

Reads multi-document YAML, injects the pod template of every workload kind, passes the rest through.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml

from webhook.injection import InjectorConfig, InvalidAnnotations, inject

Json = dict[str, Any]

# Where each workload kind keeps its pod template.
TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings (the nginx config annotation stays readable); no aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(docs: list[Any]) -> str:
    return yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)


def describe(doc: Json) -> str:
    meta = doc.get("metadata") or {}
    name = meta.get("name") or meta.get("generateName") or "(unnamed)"
    return f"{doc.get('kind', 'object')} {meta['namespace'] + '/' if meta.get('namespace') else ''}{name}"


def _pod_slots(parent: Any, key: Any) -> Iterator[tuple[Any, Any, str]]:
    """(parent, key, label) for every pod or pod template: parent[key] is the pod to inject."""
    doc = parent[key]
    if not isinstance(doc, dict):
        return
    kind = doc.get("kind")
    if kind == "Pod":
        yield parent, key, describe(doc)
    elif kind == "List":
        items = doc.get("items") or []
        for index in range(len(items)):
            yield from _pod_slots(items, index)
    elif kind in TEMPLATE_PATHS:
        *parents, last = TEMPLATE_PATHS[kind]
        node: Any = doc
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(last), dict):
            yield node, last, describe(doc)


class MalformedManifest(ValueError):
    """A document whose pod is not shaped as Kubernetes requires (a string where a list goes, ...)."""


def inject_documents(docs: list[Any], config: InjectorConfig) -> tuple[list[Any], list[str], list[str]]:
    """Returns (new documents, warnings, errors). A pod with errors is left as it was."""
    warnings: list[str] = []
    errors: list[str] = []
    out = list(docs)
    for index in range(len(out)):
        for parent, key, label in list(_pod_slots(out, index)):
            try:
                result = inject(parent[key], config)
            except InvalidAnnotations as exc:
                errors += [f"{label}: {err}" for err in exc.errors]
                warnings += [f"{label}: {w}" for w in exc.warnings]
                continue
            except (AttributeError, KeyError, TypeError, ValueError) as exc:
                # The API server validates a pod's shape before admission; a file may hold anything.
                raise MalformedManifest(f"{label}: not a valid pod ({type(exc).__name__}: {exc})") from None
            warnings += [f"{label}: {w}" for w in result.warnings]
            parent[key] = result.pod
    return out, warnings, errors


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping, as kubectl does (YAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (a missing '---' between documents?)", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_documents(text: str) -> list[Any]:
    return [d for d in yaml.load_all(text, Loader=_StrictLoader) if d is not None]
