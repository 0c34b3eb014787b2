"""The two references, served exactly as `podpatterns serve` serves the webhook.

- floor:   a bare ASGI endpoint that reads the body, parses it with orjson and answers `allowed: true`
           with the uid: the least any Python webhook on this stack can cost.
- fastapi: a textbook FastAPI endpoint with a pydantic AdmissionReview model doing the same
           (bench/ref_fastapi.py).

Both run under the same uvicorn (same version, loop and HTTP implementation), with the same TLS context
(webhook.tls.context_factory, as `podpatterns serve` uses), the same connection limit and keep-alive,
and the same worker count. They are not given our GuardedHttpProtocol: the slow-client guard is part
of what our webhook adds, so it counts on our side of the ratio.

    python -m bench.refs floor|fastapi --tls-cert F --tls-key F [--port P] [--workers N]
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

API_VERSION = "admission.k8s.io/v1"


# --- the floor -------------------------------------------------------------------------------------


async def floor(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["method"] == "GET":  # /readyz, for the benchmark's start-up wait
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    review = orjson.loads(chunks[0] if len(chunks) == 1 else b"".join(chunks))
    answer = orjson.dumps(
        {
            "apiVersion": API_VERSION,
            "kind": "AdmissionReview",
            "response": {"uid": review["request"]["uid"], "allowed": True},
        }
    )
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": answer})


def floor_factory() -> Any:
    return floor


FACTORIES = {"floor": "bench.refs:floor_factory", "fastapi": "bench.ref_fastapi:factory"}


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from webhook.cli import UVICORN_OPTIONS
    from webhook.tls import context_factory

    parser = argparse.ArgumentParser(prog="python -m bench.refs")
    parser.add_argument("app", choices=sorted(FACTORIES))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8444)
    parser.add_argument("--tls-cert", required=True)
    parser.add_argument("--tls-key", required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    # Everything as webhook/cli.py's run_serve passes it, but our http= protocol class.
    uvicorn.run(
        FACTORIES[args.app],
        limit_concurrency=1000,
        host=args.host,
        port=args.port,
        workers=args.workers,
        ssl_certfile=args.tls_cert,
        ssl_keyfile=args.tls_key,
        ssl_context_factory=context_factory,
        **UVICORN_OPTIONS,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
