"""Errors of the injection core. The service maps them to admission answers in one place (admission.py)."""

from __future__ import annotations

from dataclasses import dataclass


class InjectionError(Exception):
    """Base of every error the core raises on purpose."""


class ConfigError(InjectionError):
    """The injector config file is invalid; the message names the field."""


@dataclass(frozen=True)
class AnnotationError:
    """One bad annotation: its key, its value and what was expected."""

    key: str
    value: str
    reason: str

    def __str__(self) -> str:
        value = self.value if len(self.value) <= 200 else self.value[:200] + "…"
        return f"annotation {self.key}={value!r}: {self.reason}"


class InvalidAnnotations(InjectionError):
    """The pod asks for an injection that cannot be done; every problem is listed."""

    def __init__(self, errors: list[AnnotationError], warnings: list[str] | None = None) -> None:
        self.errors = errors
        self.warnings = warnings or []  # e.g. a misspelt key, which may be why the pod is wrong
        super().__init__("; ".join(str(e) for e in errors))
