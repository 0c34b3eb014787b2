"""The HTTP layer: FastAPI app with /mutate, /healthz, /readyz, /metrics. Knows HTTP, not pods.

/mutate is a plain ASGI endpoint reading raw bytes and answering with orjson: admission is on the path
of every pod creation, and pydantic-modelling whole pods would cost time and drop fields. POST /mutate
does not even go through FastAPI's middleware stack and router (WebhookApp.__call__ hands it straight
to the endpoint): on a review that needs no change they cost more than the whole review (bench/).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import logging
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from webhook import admission, answer_cache, logs
from webhook.answer_cache import AnswerCache
from webhook.fingerprint import config_fingerprint
from webhook.injection import ConfigError, InjectorConfig, load_config
from webhook.metrics import CacheCounts, Metrics
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
        self.metrics.info.config_fingerprint = config_fingerprint(self.config)

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
        fingerprint = config_fingerprint(new)
        self.metrics.info.config_fingerprint = fingerprint
        self.metrics.config_reloads.inc()
        self.metrics.config_last_reload_ok.set(1)
        logs.get().info(
            "injector config reloaded", extra={"fields": {"path": str(self.path), "fingerprint": fingerprint}}
        )
        return True


class BodyTooLarge(Exception):
    pass


async def _read_body(receive: Receive, declared: str | None, encoding: str) -> bytes:
    """Read at most MAX_BODY_BYTES, refusing early on Content-Length and while streaming."""
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BodyTooLarge
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.request" and not chunks and not message.get("more_body", False) and not encoding:
            body: bytes = message.get("body", b"")  # the whole body in one message: uvicorn's usual case
            if len(body) > MAX_BODY_BYTES:
                raise BodyTooLarge
            return body
        if message["type"] == "http.request":
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise BodyTooLarge
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        elif message["type"] == "http.disconnect":
            raise ClientDisconnect
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if encoding.lower() == "gzip":
        body = _gunzip(body)
    return body


def _gunzip(body: bytes) -> bytes:
    decompressor = gzip.GzipFile(fileobj=io.BytesIO(body))
    out = decompressor.read(MAX_BODY_BYTES + 1)
    if len(out) > MAX_BODY_BYTES:
        raise BodyTooLarge
    return out


def _error(status: int, message: str) -> tuple[int, bytes]:
    return status, orjson.dumps({"error": message})


def _headers(scope: Scope) -> tuple[str, str | None, str]:
    """Content-Type, Content-Length and Content-Encoding (the first of each, as Starlette's Headers.get)."""
    content_type = length = encoding = None
    for name, value in scope["headers"]:
        if name == b"content-type":
            if content_type is None:
                content_type = value.decode("latin-1")
        elif name == b"content-length":
            if length is None:
                length = value.decode("latin-1")
        elif name == b"content-encoding" and encoding is None:
            encoding = value.decode("latin-1")
    return content_type or "", length, encoding or ""


class WebhookApp(FastAPI):
    """FastAPI for /healthz, /readyz, /metrics (and anything else); POST /mutate straight to its endpoint.

    The /mutate route stays registered, so other methods still get the router's 405, and a mounted app
    (root_path) still reaches it through the stack.
    """

    mutate_endpoint: MutateEndpoint | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] == "/mutate"
            and scope["method"] == "POST"
            and not scope.get("root_path")
            and self.mutate_endpoint is not None
        ):
            await self.mutate_endpoint(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


class MutateEndpoint:
    """POST /mutate as a bare ASGI app: AdmissionReview bytes in, AdmissionReview bytes out."""

    def __init__(self, holder: ConfigHolder, metrics: Metrics) -> None:
        self.holder, self.metrics, self.log = holder, metrics, logs.get()
        self.cache = AnswerCache()
        self.counts = metrics.reviews  # what every answered review counts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # One flat coroutine: every review passes here, and each extra await level costs.
        started = time.perf_counter()
        counts = self.counts
        counts.in_flight += 1  # a plain int, like the other counts (a try costs nothing until it raises)
        try:
            content_type, length, encoding = _headers(scope)
            if content_type != "application/json":  # (as the API server sends it: no need to normalise)
                content_type = content_type.split(";", 1)[0].strip().lower()
            if content_type != "application/json":
                status, body = self._malformed(
                    415, f"expected Content-Type application/json, got {content_type or 'none'!r}"
                )
            else:
                try:
                    body = await _read_body(receive, length, encoding)
                except BodyTooLarge:
                    status, body = self._malformed(413, f"the body exceeds {MAX_BODY_BYTES} bytes")
                except (ClientDisconnect, OSError, EOFError, gzip.BadGzipFile, zlib.error):
                    status, body = self._malformed(400, "the body could not be read")
                else:
                    status, body = self.answer(body, started)
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    # What Starlette's Response(media_type="application/json") sends, in its order.
                    "headers": [
                        (b"content-length", str(len(body)).encode("latin-1")),
                        (b"content-type", b"application/json"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
        finally:
            counts.in_flight -= 1

    def answer(self, body: bytes, started: float) -> tuple[int, bytes]:
        """The status and body of the answer to one request body."""
        decision = admission.Decision(started=started)
        try:
            review = orjson.loads(body)
            cache = self.cache if len(body) <= answer_cache.MAX_BODY_BYTES else None
            answer = admission.review(review, self.holder.config, decision, cache)
        except (orjson.JSONDecodeError, RecursionError):
            return self._malformed(400, "the body is not valid JSON")
        except admission.MalformedReview as exc:
            return self._malformed(400, str(exc))
        self.counts.count(decision.result, decision.injected, time.perf_counter() - started)
        if decision.operation == "CREATE" or decision.result != "allowed":
            level = logging.DEBUG if decision.quiet else logging.INFO
            if self.log.isEnabledFor(level):
                logs.write_fields(self.log, level, "admission decision", decision.log_fields())
        return 200, orjson.dumps(answer)

    def _malformed(self, status: int, message: str) -> tuple[int, bytes]:
        self.metrics.malformed.labels(str(status)).inc()
        return _error(status, message)


def create_app(config_path: str | Path | None = None, *, reload_interval: float = 2.0) -> FastAPI:
    metrics = Metrics()
    holder = ConfigHolder(Path(config_path) if config_path else None, metrics)
    holder.load_initial()

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

    app = WebhookApp(title="podpatterns", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.config_holder = holder
    app.state.metrics = metrics
    app.state.ready = False

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(_: Request) -> Response:
        # Ready once the config and the certificate are loaded: both happen before the app serves.
        if not app.state.ready:
            return PlainTextResponse("starting", status_code=503)
        return PlainTextResponse("ok")

    async def metrics_endpoint(_: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.mutate_endpoint = MutateEndpoint(holder, metrics)
    metrics.registry.register(CacheCounts(app.mutate_endpoint.cache))
    app.add_route("/mutate", app.mutate_endpoint, methods=["POST"])
    app.add_route("/healthz", healthz, methods=["GET"])
    app.add_route("/readyz", readyz, methods=["GET"])
    app.add_route("/metrics", metrics_endpoint, methods=["GET"])
    return app


def app_from_env() -> FastAPI:
    """uvicorn factory: each worker process builds its app from the environment the CLI prepared."""
    import os

    logs.setup(os.environ.get("PODPATTERNS_LOG_LEVEL", "info"))
    return create_app(os.environ.get("PODPATTERNS_CONFIG") or None)
