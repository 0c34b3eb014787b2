"""Prometheus metrics of the service (per process; with --workers N each worker counts its own)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reviews = Counter(
            "podpatterns_admission_reviews", "Admission reviews answered, by result", ["result"], registry=self.registry
        )
        self.injections = Counter(
            "podpatterns_injections", "Pods injected, by feature", ["feature"], registry=self.registry
        )
        self.denials = Counter("podpatterns_denials", "Pods denied for invalid annotations", registry=self.registry)
        self.malformed = Counter(
            "podpatterns_malformed_requests",
            "Requests answered with HTTP 4xx, by status",
            ["status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "podpatterns_admission_duration_seconds",
            "Time to answer one review (server side)",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.config_reload_failures = Counter(
            "podpatterns_config_reload_failures",
            "Injector config reloads refused (the last good config stays)",
            registry=self.registry,
        )
        self.config_reloads = Counter(
            "podpatterns_config_reloads", "Injector config reloads applied", registry=self.registry
        )
        self.config_last_reload_ok = Gauge(
            "podpatterns_config_last_reload_success",
            "1 if the last config load succeeded, else 0",
            registry=self.registry,
        )
        self.cert_reloads = Counter(
            "podpatterns_tls_cert_reloads", "Serving certificate reloads, by result", ["result"], registry=self.registry
        )
        # labels() looks the child up under a lock on every call; the children never change, so keep them.
        self._reviews: dict[str, Any] = {}
        self._injections: dict[str, Any] = {}

    def count_review(self, result: str, injected: tuple[str, ...], seconds: float) -> None:
        """Everything one answered review counts (the hot path: one call per review)."""
        child = self._reviews.get(result)
        if child is None:
            child = self._reviews[result] = self.reviews.labels(result)
        child.inc()
        for feature in injected:
            child = self._injections.get(feature)
            if child is None:
                child = self._injections[feature] = self.injections.labels(feature)
            child.inc()
        if result == "denied":
            self.denials.inc()
        self.latency.observe(seconds)
