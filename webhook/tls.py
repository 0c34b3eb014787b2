"""The serving TLS context: modern settings only, and hot reload of tls.crt/tls.key from files.

uvicorn builds its SSLContext once; we hand it ours (through `ssl_context_factory`, which runs in
every worker process) and reload the certificate chain *into the same context* when the files
change. OpenSSL uses the new chain for new handshakes; open connections keep theirs; no request fails.
"""

from __future__ import annotations

import os
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509

from webhook import logs

# TLS 1.2 with forward-secret AEAD suites (TLS 1.3 suites are always on and all modern).
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"

# Reloads of this process, by result, for /metrics: the reloader starts (in uvicorn's context factory)
# before the app and its metrics exist, so it counts here and the metrics read from here.
RELOADS: dict[str, int] = {"success": 0, "failure": 0}
# The notAfter (Unix seconds) of the certificate this process serves, kept here for the same reason; None
# until one is loaded (an app built without `serve`, as in tests, has none).
SERVING: dict[str, float | None] = {"not_after": None}


def not_after(cert: str | Path) -> float | None:
    """The notAfter of the first certificate in a PEM chain file (the leaf), or None if it cannot be read."""
    try:
        return x509.load_pem_x509_certificates(Path(cert).read_bytes())[0].not_valid_after_utc.timestamp()
    except (OSError, ValueError):
        return None


def _loaded(cert: str | Path) -> None:
    # Read after load_cert_chain: if the file was swapped in between, the reloader sees a new signature on
    # its next poll and loads (and reads) the newer file, so this never stays behind for long.
    SERVING["not_after"] = not_after(cert)


def server_context(cert: str | Path, key: str | Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def file_signature(*paths: str | Path) -> tuple[Any, ...]:
    """Changes when any file is replaced, including kubelet's atomic swap of a mounted Secret's symlink."""
    signature = []
    for path in paths:
        try:
            st = os.stat(path)
            signature.append((st.st_ino, st.st_mtime_ns, st.st_size))
        except OSError:
            signature.append(None)
    return tuple(signature)


class CertReloader:
    """Polls the certificate files and loads a changed pair into the live context."""

    def __init__(
        self,
        ctx: ssl.SSLContext,
        cert: str | Path,
        key: str | Path,
        interval: float = 1.0,
        on_reload: Callable[[bool], None] | None = None,
    ) -> None:
        self.ctx, self.cert, self.key, self.interval = ctx, cert, key, interval
        self.on_reload = on_reload
        self.signature = file_signature(cert, key)
        self._failed: tuple[Any, ...] | None = None  # the files last found unusable, to report them once
        self._stop = threading.Event()

    def check(self) -> bool | None:
        """Reload if the files changed: True on success, False if the new pair is unusable, None if unchanged."""
        signature = file_signature(self.cert, self.key)
        if signature == self.signature:
            return None
        try:
            self.ctx.load_cert_chain(str(self.cert), str(self.key))
        except (OSError, ssl.SSLError) as exc:
            # Mid-rotation a new key can sit beside the old cert for a moment: keep serving, retry every poll,
            # but log and count each unusable pair of files once.
            if signature == self._failed:
                return False
            self._failed = signature
            logs.get().warning(
                "TLS certificate reload failed; still serving the previous one",
                extra={"fields": {"error": str(exc), "cert": str(self.cert)}},
            )
            ok = False
        else:
            self.signature = signature
            _loaded(self.cert)
            logs.get().info("TLS certificate reloaded", extra={"fields": {"cert": str(self.cert)}})
            ok = True
        RELOADS["success" if ok else "failure"] += 1
        if self.on_reload:
            self.on_reload(ok)
        return ok

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            self.check()

    def start(self) -> CertReloader:
        threading.Thread(target=self.run, name="cert-reloader", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()


def context_factory(config: Any, _default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """uvicorn's `ssl_context_factory`: module level, so it pickles into worker processes."""
    ctx = server_context(config.ssl_certfile, config.ssl_keyfile)
    _loaded(config.ssl_certfile)
    CertReloader(ctx, config.ssl_certfile, config.ssl_keyfile).start()
    return ctx
