"""The webhook's matchConditions, evaluated with cel-python against the pod the way the API server
does before calling the webhook. What cel-python cannot evaluate (the `authorizer`, an extension
function it lacks) is reported as undecided, never guessed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import celpy
from celpy import celtypes


@dataclass(frozen=True)
class Outcome:
    name: str
    expression: str
    value: bool | None  # None: could not be evaluated here
    error: str = ""


def _lower_ascii(value: Any) -> Any:  # Kubernetes enables cel-go's strings extension
    return celtypes.StringType(str(value).lower())


def _upper_ascii(value: Any) -> Any:
    return celtypes.StringType(str(value).upper())


FUNCTIONS = {"lowerAscii": _lower_ascii, "upperAscii": _upper_ascii}


def evaluate(
    conditions: Sequence[Mapping[str, Any]] | None, pod: Mapping[str, Any], request: Mapping[str, Any]
) -> list[Outcome]:
    """Each condition's value for `pod` (as `object`) and `request` (the parts of the AdmissionRequest
    we know: operation, namespace, kind, resource); `oldObject` is null, as on CREATE."""
    env = celpy.Environment()
    activation = {
        "object": celpy.json_to_cel(dict(pod)),
        "oldObject": None,
        "request": celpy.json_to_cel(dict(request)),
    }
    out = []
    for condition in conditions or []:
        name, expression = str(condition.get("name", "")), str(condition.get("expression", ""))
        try:
            program = env.program(env.compile(expression), functions=FUNCTIONS)
            result = program.evaluate(activation)
        except Exception as exc:  # cel-python raises its own types and plain ones for unsupported parts
            out.append(Outcome(name, expression, None, f"{type(exc).__name__}: {exc}"))
            continue
        if isinstance(result, celtypes.BoolType):
            out.append(Outcome(name, expression, bool(result)))
        else:  # CELEvalError comes back as a value, not raised
            out.append(Outcome(name, expression, None, f"not a bool: {result!r}"))
    return out
