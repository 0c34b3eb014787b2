"""The cache sidecar as injected: loopback only, no persistence, maxmemory and a limit with headroom above it."""

from __future__ import annotations

from typing import Any

import pytest

from webhook.injection import InjectorConfig, inject
from webhook.injection import annotations as keys
from webhook.injection.cache import CONTAINER, URL_ENV, memory_limit
from webhook.injection.config import parse_config
from webhook.injection.errors import ConfigError

MI = 2**20


def cache_pod(annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "annotations": {keys.CACHE: "redis", **(annotations or {})}},
        "spec": {"containers": [{"name": "app", "image": "registry.example.com/app:1"}], **spec},
    }


def injected(pod: dict[str, Any], config: InjectorConfig | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    spec = inject(pod, config or InjectorConfig()).pod["spec"]
    sidecars = spec.get("initContainers", []) + spec["containers"]
    return next(c for c in sidecars if c["name"] == CONTAINER), spec


@pytest.mark.parametrize(
    ("maxmemory", "limit"),
    [(1 * MI, 33 * MI), (64 * MI, 96 * MI), (128 * MI, 160 * MI), (256 * MI, 320 * MI), (2**30, 1280 * MI)],
)
def test_the_limit_leaves_a_quarter_or_at_least_32mi_above_maxmemory(maxmemory: int, limit: int) -> None:
    assert memory_limit(maxmemory) == limit


def test_redis_listens_on_loopback_only_without_persistence() -> None:
    cache, spec = injected(cache_pod({keys.CACHE_MEMORY: "256Mi"}))
    args = cache["args"]
    pairs = dict(zip(args[::2], args[1::2], strict=True))
    assert pairs == {
        "--bind": "127.0.0.1",
        "--port": "6379",
        "--protected-mode": "yes",
        "--save": "",
        "--appendonly": "no",
        "--maxmemory": str(256 * MI),
        "--maxmemory-policy": "allkeys-lru",
        "--dir": "/data",
    }
    assert cache["command"] == ["redis-server"]
    assert cache["resources"]["limits"]["memory"] == cache["resources"]["requests"]["memory"] == "320Mi"
    assert cache["resources"]["limits"]["cpu"] == "500m"
    assert cache["securityContext"]["runAsUser"] == 999 and cache["securityContext"]["readOnlyRootFilesystem"]
    assert cache["readinessProbe"]["exec"]["command"] == ["redis-cli", "-h", "127.0.0.1", "-p", "6379", "ping"]
    assert {"mountPath": "/data", "name": "podpatterns-cache-data"} in cache["volumeMounts"]
    assert spec["containers"][0]["env"] == [{"name": URL_ENV, "value": "redis://127.0.0.1:6379"}]
    assert cache["restartPolicy"] == "Always"  # native by default: starts (and passes its startup probe) first


def test_classic_sidecar_and_the_configs_defaults() -> None:
    config = InjectorConfig.model_validate({"cache": {"image": "registry.example.com/redis:7", "memory": "1Gi"}})
    cache, spec = injected(cache_pod({keys.NATIVE_SIDECARS: "false", keys.CACHE_PORT: "7000"}), config)
    assert spec["containers"][-1] is cache and "restartPolicy" not in cache
    assert cache["image"] == "registry.example.com/redis:7"
    assert "--maxmemory" in cache["args"] and str(2**30) in cache["args"]
    assert spec["containers"][0]["env"][-1]["value"] == "redis://127.0.0.1:7000"


@pytest.mark.parametrize("memory", ["64MB", "0", "32Gi", "100m"])
def test_the_config_refuses_a_default_memory_out_of_bounds(memory: str) -> None:
    with pytest.raises(ConfigError, match=r"cache\.memory"):
        parse_config({"cache": {"memory": memory}})
