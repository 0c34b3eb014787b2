"""The HTTP layer: FastAPI app with /mutate, /healthz, /readyz, /metrics. Knows HTTP, not pods.

/mutate is a plain Starlette endpoint reading raw bytes and answering with orjson: admission is on
the path of every pod creation, and pydantic-modelling whole pods would cost time and drop fields.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response

from webhook import admission, logs
from webhook.injection import ConfigError, InjectorConfig, load_config
from webhook.metrics import Metrics
from webhook.tls import file_signature

# The API server's own request-body cap; nothing legitimate is bigger.
MAX_BODY_BYTES = 3 * 1024 * 1024


@dataclass
class ConfigHolder:
    """The injector config in force. A reload swaps the whole object; a bad file keeps the old one."""

    path: Path | None
    metrics: Metrics
    config: InjectorConfig = field(default_factory=InjectorConfig)
    signature: tuple[object, ...] = ()
    last_error: str | None = None

    def load_initial(self) -> None:
        self.config = load_config(self.path)  # a bad config at start is fatal: fail fast and loud
        self.signature = file_signature(self.path) if self.path else ()
        self.metrics.config_last_reload_ok.set(1)

    def check(self) -> bool | None:
        """Reload if the file changed: True applied, False refused (old config kept), None unchanged."""
        if self.path is None:
            return None
        signature = file_signature(self.path)
        if signature == self.signature:
            return None
        self.signature = signature
        try:
            new = load_config(self.path)
        except ConfigError as exc:
            self.last_error = str(exc)
            self.metrics.config_reload_failures.inc()
            self.metrics.config_last_reload_ok.set(0)
            logs.get().error(
                "injector config reload failed; keeping the last good config", extra={"fields": {"error": str(exc)}}
            )
            return False
        self.config, self.last_error = new, None
        self.metrics.config_reloads.inc()
        self.metrics.config_last_reload_ok.set(1)
        logs.get().info("injector config reloaded", extra={"fields": {"path": str(self.path)}})
        return True


class BodyTooLarge(Exception):
    pass


async def _read_body(request: Request) -> bytes:
    """Read at most MAX_BODY_BYTES, refusing early on Content-Length and while streaming."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BodyTooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BodyTooLarge
        chunks.append(chunk)
    body = b"".join(chunks)
    if request.headers.get("content-encoding", "").lower() == "gzip":
        body = _gunzip(body)
    return body


def _gunzip(body: bytes) -> bytes:
    decompressor = gzip.GzipFile(fileobj=io.BytesIO(body))
    out = decompressor.read(MAX_BODY_BYTES + 1)
    if len(out) > MAX_BODY_BYTES:
        raise BodyTooLarge
    return out


def _error(status: int, message: str) -> Response:
    return Response(orjson.dumps({"error": message}), status_code=status, media_type="application/json")


def create_app(config_path: str | Path | None = None, *, reload_interval: float = 2.0) -> FastAPI:
    metrics = Metrics()
    holder = ConfigHolder(Path(config_path) if config_path else None, metrics)
    holder.load_initial()
    log = logs.get()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def watch() -> None:
            while True:
                await asyncio.sleep(reload_interval)
                holder.check()

        task = asyncio.create_task(watch()) if holder.path else None
        app.state.ready = True
        yield
        app.state.ready = False
        if task:
            task.cancel()

    app = FastAPI(title="podpatterns", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.config_holder = holder
    app.state.metrics = metrics
    app.state.ready = False

    async def mutate(request: Request) -> Response:
        started = time.perf_counter()
        content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if content_type != "application/json":
            metrics.malformed.labels("415").inc()
            return _error(415, f"expected Content-Type application/json, got {content_type or 'none'!r}")
        try:
            body = await _read_body(request)
        except BodyTooLarge:
            metrics.malformed.labels("413").inc()
            return _error(413, f"the body exceeds {MAX_BODY_BYTES} bytes")
        except (ClientDisconnect, OSError, EOFError, gzip.BadGzipFile):
            metrics.malformed.labels("400").inc()
            return _error(400, "the body could not be read")
        decision = admission.Decision(started=started)
        try:
            review = orjson.loads(body)
            answer = admission.review(review, holder.config, decision)
        except (orjson.JSONDecodeError, RecursionError):
            metrics.malformed.labels("400").inc()
            return _error(400, "the body is not valid JSON")
        except admission.MalformedReview as exc:
            metrics.malformed.labels("400").inc()
            return _error(400, str(exc))
        metrics.reviews.labels(decision.result).inc()
        for feature in decision.injected:
            metrics.injections.labels(feature).inc()
        if decision.result == "denied":
            metrics.denials.inc()
        metrics.latency.observe(time.perf_counter() - started)
        if decision.operation == "CREATE" or decision.result != "allowed":
            log.info("admission decision", extra={"fields": decision.log_fields()})
        return Response(orjson.dumps(answer), media_type="application/json")

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(_: Request) -> Response:
        # Ready once the config and the certificate are loaded: both happen before the app serves.
        if not app.state.ready:
            return PlainTextResponse("starting", status_code=503)
        return PlainTextResponse("ok")

    async def metrics_endpoint(_: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_route("/mutate", mutate, methods=["POST"])
    app.add_route("/healthz", healthz, methods=["GET"])
    app.add_route("/readyz", readyz, methods=["GET"])
    app.add_route("/metrics", metrics_endpoint, methods=["GET"])
    return app


def app_from_env() -> FastAPI:
    """uvicorn factory: each worker process builds its app from the environment the CLI prepared."""
    import os

    logs.setup(os.environ.get("PODPATTERNS_LOG_LEVEL", "info"))
    return create_app(os.environ.get("PODPATTERNS_CONFIG") or None)
