"""uvicorn's httptools protocol with the limits a webhook on the pod-creation path needs.

uvicorn times out idle keep-alive connections, but not a request that arrives slowly: a client that
sends a header byte a second (slowloris), or stalls mid-body, would hold its connection and task
forever. Here each request must arrive whole within `read_timeout` seconds of its first byte (or of
the connection's start), and its head may not exceed `max_head_bytes`; otherwise the connection is
closed. Connection count is bounded separately by uvicorn's `limit_concurrency`.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# From the environment, which `podpatterns serve` sets from its flags: workers are separate processes.
READ_TIMEOUT_SECONDS = float(os.environ.get("PODPATTERNS_REQUEST_READ_TIMEOUT", "10"))
MAX_HEAD_BYTES = 64 * 1024


class GuardedHttpProtocol(HttpToolsProtocol):
    read_timeout: float = READ_TIMEOUT_SECONDS
    max_head_bytes: int = MAX_HEAD_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # One timer per connection, checked when it fires rather than re-armed for every request: a
        # timer per request cost more than the rest of the guard on a review that needs no change.
        self._deadline: asyncio.TimerHandle | None = None
        self._started: float | None = None  # loop time of the current request's first byte; None between
        self._head_bytes = 0
        self._in_head = True
        self._tail = b""  # the last bytes of the previous read, to find a head end split across reads

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._begin()  # a connection that never completes a request is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._started is None:
            # Any byte after a response starts the clock, even bytes the parser skips without beginning a
            # message (a bare CRLF): uvicorn's keep-alive timer stops at the first byte too.
            self._begin()
        if self._in_head:
            # One read often holds the end of the head and much of the body (the API server writes a review
            # in one go): count only the bytes up to the blank line that ends the head.
            window = self._tail + data
            end = window.find(b"\r\n\r\n")
            self._head_bytes += len(data) if end < 0 else max(0, end + 4 - len(self._tail))
            self._tail = window[-3:]
            if self._head_bytes > self.max_head_bytes:
                self._close("request head too large")
                return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes, self._tail = True, 0, b""
        if self._started is None:
            self._begin()

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._started = None
        super().on_message_complete()

    def _begin(self) -> None:
        self._started = self.loop.time()
        if self._deadline is None:
            self._deadline = self.loop.call_at(self._started + self.read_timeout, self._check)

    def _check(self) -> None:
        self._deadline = None
        if self._started is None:
            return  # between requests: uvicorn's keep-alive timeout governs; the next request re-arms
        now = self.loop.time()
        if self.flow.read_paused:
            # uvicorn stopped reading while it answers an earlier request on this connection (pipelining):
            # the wait is ours, not the client's. The clock restarts when reading does.
            self._started = now
        due = self._started + self.read_timeout
        if now >= due:
            self._close("request not received in time")
        else:  # this request began after the timer was set: wait for its own deadline
            self._deadline = self.loop.call_at(due, self._check)

    def _close(self, reason: str) -> None:
        if not self.transport.is_closing():
            self.logger.debug("closing connection: %s", reason)
            self.transport.close()
