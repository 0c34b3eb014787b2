"""Prometheus metrics of the service (per process; with --workers N each worker counts its own)."""

from __future__ import annotations

import bisect
import platform
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from webhook import __version__, tls
from webhook.answer_cache import AnswerCache

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
RESULTS = ("allowed", "patched", "denied", "error")
MALFORMED_STATUSES = ("400", "413", "415")  # what MutateEndpoint answers a request that is no review


class ReviewCounts(Collector):
    """What every answered review counts, kept as plain numbers and exported when scraped.

    prometheus_client's Counter and Histogram take a lock on every increment: about 3 µs a review for
    four series, a tenth of a whole no-op review. Reviews are counted on the event loop's thread and
    /metrics is an async endpoint on that same thread, so nothing here is shared between threads.

    `in_flight` is the number of POST /mutate requests between their first byte handled and their answer
    sent (MutateEndpoint adds and removes one). A review is answered without yielding to the loop once its
    body is in, so a scrape sees the requests still receiving their body or sending their answer: near 0 on
    a healthy server, climbing when clients are slow or the loop is starved.
    """

    def __init__(self) -> None:
        self.in_flight = 0
        self.results = dict.fromkeys(RESULTS, 0)
        self.features: dict[str, int] = {}
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # per bucket, not cumulative; the last is +Inf
        self.seconds = 0.0

    def count(self, result: str, injected: tuple[str, ...], seconds: float) -> None:
        self.results[result] = self.results.get(result, 0) + 1
        for feature in injected:
            self.features[feature] = self.features.get(feature, 0) + 1
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.seconds += seconds

    def collect(self) -> Iterator[Metric]:
        reviews = CounterMetricFamily(
            "podpatterns_admission_reviews", "Admission reviews answered, by result", labels=["result"]
        )
        for result, n in self.results.items():
            reviews.add_metric([result], n)
        yield reviews
        injections = CounterMetricFamily("podpatterns_injections", "Pods injected, by feature", labels=["feature"])
        for feature, n in sorted(self.features.items()):
            injections.add_metric([feature], n)
        yield injections
        yield CounterMetricFamily(
            "podpatterns_denials", "Pods denied for invalid annotations", value=self.results["denied"]
        )
        cumulative, total = [], 0
        for bound, n in zip((*map(str, LATENCY_BUCKETS), "+Inf"), self.buckets, strict=True):
            total += n
            cumulative.append((bound, total))
        latency = HistogramMetricFamily(
            "podpatterns_admission_duration_seconds", "Time to answer one review (server side)"
        )
        latency.add_metric([], cumulative, self.seconds)
        yield latency
        yield GaugeMetricFamily(
            "podpatterns_admission_requests_in_flight",
            "POST /mutate requests being received or answered",
            value=self.in_flight,
        )


class CertReloads(Collector):
    """The serving certificate, as webhook/tls.py last loaded it in this process."""

    def collect(self) -> Iterator[Metric]:
        reloads = CounterMetricFamily(
            "podpatterns_tls_cert_reloads", "Serving certificate reloads, by result", labels=["result"]
        )
        for result, n in tls.RELOADS.items():
            reloads.add_metric([result], n)
        yield reloads
        expiry = GaugeMetricFamily(
            "podpatterns_tls_cert_expiry_timestamp_seconds",
            "notAfter of the serving certificate in use, as Unix seconds",
        )
        not_after = tls.SERVING["not_after"]
        if not_after is not None:
            expiry.add_metric([], not_after)
        yield expiry


class Info(Collector):
    """Constant-1 info series: the build, and the fingerprint of the injector config in force."""

    def __init__(self) -> None:
        self.build = (__version__, platform.python_version())
        self.config_fingerprint: str | None = None  # set by the app on every config (re)load

    def collect(self) -> Iterator[Metric]:
        build = GaugeMetricFamily(
            "podpatterns_build_info", "The podpatterns version and the Python running it", labels=["version", "python"]
        )
        build.add_metric(list(self.build), 1)
        yield build
        config = GaugeMetricFamily(
            "podpatterns_config_info",
            "Fingerprint of the injector config in force (webhook/fingerprint.py)",
            labels=["fingerprint"],
        )
        if self.config_fingerprint is not None:
            config.add_metric([self.config_fingerprint], 1)
        yield config


class CacheCounts(Collector):
    """The answer cache's hits and misses (webhook/answer_cache.py), read when scraped."""

    def __init__(self, cache: AnswerCache) -> None:
        self.cache = cache

    def collect(self) -> Iterator[Metric]:
        lookups = CounterMetricFamily(
            "podpatterns_answer_cache_lookups", "Pods looked up in the answer cache, by outcome", labels=["outcome"]
        )
        lookups.add_metric(["hit"], self.cache.hits)
        lookups.add_metric(["miss"], self.cache.misses)
        yield lookups
        yield GaugeMetricFamily("podpatterns_answer_cache_entries", "Answers kept", value=len(self.cache))


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reviews = ReviewCounts()
        self.registry.register(self.reviews)
        self.malformed = Counter(
            "podpatterns_malformed_requests",
            "Requests answered with HTTP 4xx, by status",
            ["status"],
            registry=self.registry,
        )
        for status in MALFORMED_STATUSES:  # from 0, so the first one is an increase too (rate, alerts)
            self.malformed.labels(status)
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
        self.registry.register(CertReloads())
        self.info = Info()
        self.registry.register(self.info)
