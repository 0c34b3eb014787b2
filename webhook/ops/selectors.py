"""Kubernetes label selectors (matchLabels, matchExpressions), evaluated the way the API server does,
with one line of explanation per requirement so `check` can say which one decided."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # In, NotIn, Exists, DoesNotExist (matchLabels entries are In with one value)
    values: tuple[str, ...]
    matched: bool

    def describe(self, labels: Mapping[str, str]) -> str:
        have = f"{self.key}={labels[self.key]}" if self.key in labels else f"no {self.key} label"
        wanted = f"{self.key} {self.operator}" + (f" [{', '.join(self.values)}]" if self.values else "")
        return f"{wanted}: {have}"


def _matches(operator: str, present: bool, value: str | None, values: tuple[str, ...]) -> bool:
    if operator == "In":
        return present and value in values
    if operator == "NotIn":  # an absent key satisfies NotIn, as in the API server
        return not present or value not in values
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    raise ValueError(f"unknown label selector operator {operator!r}")


def evaluate(selector: Mapping[str, Any] | None, labels: Mapping[str, str] | None) -> list[Requirement]:
    """Every requirement of the selector with whether `labels` meet it. An empty or absent selector has
    no requirements: it matches everything."""
    labels = labels or {}
    selector = selector or {}
    out = []
    for key, value in (selector.get("matchLabels") or {}).items():
        out.append(Requirement(key, "In", (str(value),), labels.get(key) == str(value)))
    for expr in selector.get("matchExpressions") or []:
        key, operator = expr["key"], expr["operator"]
        values = tuple(str(v) for v in expr.get("values") or ())
        out.append(Requirement(key, operator, values, _matches(operator, key in labels, labels.get(key), values)))
    return out


def matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str] | None) -> bool:
    return all(r.matched for r in evaluate(selector, labels))


# The chart keeps its own and the system namespaces out with this requirement (_helpers.tpl).
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def excluded_namespaces(selector: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The namespaces a `kubernetes.io/metadata.name NotIn [...]` requirement keeps out."""
    names: list[str] = []
    for expr in (selector or {}).get("matchExpressions") or []:
        if expr.get("key") == NAMESPACE_NAME_LABEL and expr.get("operator") == "NotIn":
            names += [str(v) for v in expr.get("values") or ()]
    return tuple(names)
