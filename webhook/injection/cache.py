"""Sidecar: a Redis cache beside the app, on 127.0.0.1 only, bounded in memory, with nothing on disk.

The app finds it in PODPATTERNS_CACHE_URL. Redis listens on loopback alone (never the pod IP, so no
NetworkPolicy is needed to keep it private), evicts least-recently-used keys at maxmemory, and keeps no
snapshot or append-only file: a cache that dies with the pod.
"""

from __future__ import annotations

from webhook.injection import annotations as keys
from webhook.injection import values
from webhook.injection.config import CACHE_MEMORY_MAX, CACHE_MEMORY_MIN, QUANTITY, InjectorConfig, parse_quantity
from webhook.injection.security import restricted
from webhook.injection.workspace import Json, Workspace

CONTAINER = "podpatterns-cache"
VOLUME = "podpatterns-cache-data"
DATA_DIR = "/data"  # the official image's WORKDIR; redis writes nothing there without persistence
URL_ENV = "PODPATTERNS_CACHE_URL"
KINDS = ("redis",)
DEFAULT_PORT = 6379
MI = 2**20
# Above maxmemory, Redis needs room for what maxmemory does not count: its own baseline (~1-3 MB), client
# and replication buffers, and allocator fragmentation (jemalloc's can reach 10-20% under churn). A quarter
# on top, and at least 32Mi for small caches, keeps the OOM killer away while LRU eviction does its work.
HEADROOM_FRACTION = 4
MIN_HEADROOM = 32 * MI


def memory_limit(maxmemory: int) -> int:
    return maxmemory + max(maxmemory // HEADROOM_FRACTION, MIN_HEADROOM)


def _quantity(n: int) -> str:
    """Bytes as the tidiest exact Kubernetes quantity."""
    for suffix, size in (("Gi", 2**30), ("Mi", MI), ("Ki", 2**10)):
        if n % size == 0:
            return f"{n // size}{suffix}"
    return str(n)


def _maxmemory(ws: Workspace, config: InjectorConfig) -> int | None:
    raw = ws.reader.get(keys.CACHE_MEMORY)
    if raw is None:
        return int(parse_quantity(config.cache.memory))
    number = parse_quantity(raw) if QUANTITY.match(raw) else None
    if number is None or number != int(number) or not CACHE_MEMORY_MIN <= number <= CACHE_MEMORY_MAX:
        ws.reader.fail(keys.CACHE_MEMORY, raw, "expected a memory quantity from 1Mi to 16Gi, e.g. 64Mi or 1Gi")
        return None
    return int(number)


def _ping(port: int, period: int, failures: int) -> Json:
    # kubelet's tcpSocket probes dial the pod IP, where this Redis never listens: ask it from inside.
    return {
        "exec": {"command": ["redis-cli", "-h", "127.0.0.1", "-p", str(port), "ping"]},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 2,
    }


def apply(ws: Workspace, config: InjectorConfig) -> None:
    r = ws.reader
    kind = r.get(keys.CACHE) or ""
    if values.choice(r, keys.CACHE, kind, KINDS) is None:
        return
    target = ws.target_container(keys.CACHE_CONTAINER)
    port: int | None = DEFAULT_PORT
    if (raw := r.get(keys.CACHE_PORT)) is not None:
        port = values.port_number(r, keys.CACHE_PORT, raw)
    maxmemory = _maxmemory(ws, config)
    image = config.cache.image
    if (raw := r.get(keys.CACHE_IMAGE)) is not None:
        image = values.image(r, keys.CACHE_IMAGE, raw, config)  # type: ignore[assignment]
    if target is None or port is None or maxmemory is None or image is None or r.errors:
        return
    if ws.spec.get("hostNetwork"):
        r.fail(keys.CACHE, kind, "hostNetwork pods share the node's 127.0.0.1: the cache would not be the pod's own")
        return
    if port in ws.used_ports():
        r.fail(
            keys.CACHE_PORT if keys.CACHE_PORT in ws.annotations else keys.CACHE,
            str(port) if keys.CACHE_PORT in ws.annotations else kind,
            f"port {port} is already used in this pod; choose another with {keys.CACHE_PORT}",
        )
        return
    if any(e.get("name") == URL_ENV for e in target.get("env") or [] if isinstance(e, dict)):
        r.fail(keys.CACHE, kind, f"container {target.get('name')!r} already sets {URL_ENV}, which the cache sets")
        return
    if not ws.claim_container_name(keys.CACHE, CONTAINER) or not ws.claim_volume_name(keys.CACHE, VOLUME):
        return

    limit = _quantity(memory_limit(maxmemory))
    resources = config.cache.resources.as_dict()
    # Memory a cache fills is not given back: request what the limit allows, so the node keeps it.
    resources["limits"]["memory"] = resources["requests"]["memory"] = limit
    app = ws.edit(target)
    app["env"] = [*(app.get("env") or []), {"name": URL_ENV, "value": f"redis://127.0.0.1:{port}"}]
    ws.added.volumes.append({"name": VOLUME, "emptyDir": {}})
    ws.added.sidecars.append(
        {
            "name": CONTAINER,
            "image": image,
            "command": ["redis-server"],
            # Every value is ours or a validated number; redis-server gets them as argv, no shell.
            "args": [
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--protected-mode",
                "yes",
                "--save",
                "",
                "--appendonly",
                "no",
                "--maxmemory",
                str(maxmemory),
                "--maxmemory-policy",
                "allkeys-lru",
                "--dir",
                DATA_DIR,
            ],
            "readinessProbe": _ping(port, 5, 3),
            # Native sidecars: the app starts once this passes, so its first connection finds Redis up.
            "startupProbe": _ping(port, 1, 30),
            "resources": resources,
            "securityContext": restricted(config.cache.run_as_user),
            "volumeMounts": [{"mountPath": DATA_DIR, "name": VOLUME}],
        }
    )
