"""Command line: `podpatterns serve | inject | certs | check | audit | restart`. Flags fall back to
PODPATTERNS_* variables."""

from __future__ import annotations

import argparse
import os
import ssl
import sys
from pathlib import Path
from typing import Any

import yaml

from webhook import __version__, certs, logs
from webhook.injection import ConfigError, load_config
from webhook.offline import MalformedManifest, dump, inject_documents, load_documents
from webhook.ops.commands import register_cli as register_day_two


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"PODPATTERNS_{name}", default)


def _whole(kind: type[int] | type[float]) -> Any:
    """An argparse type for numbers whose string default comes from the environment: argparse converts a
    string default only when the flag is absent, so a flag always wins over a stray variable."""

    def convert(text: str) -> int | float:
        try:
            return kind(text)
        except ValueError:
            # Kubernetes' service links set PODPATTERNS_PORT=tcp://IP:PORT for a Service named podpatterns.
            hint = (
                " (Kubernetes sets PODPATTERNS_PORT=tcp://... for a Service named podpatterns in the namespace:"
                " pass --port, or set enableServiceLinks: false on the pod)"
                if text.startswith("tcp://")
                else ""
            )
            raise argparse.ArgumentTypeError(f"{text!r} is not a number{hint}") from None

    convert.__name__ = kind.__name__
    return convert


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="podpatterns", description="Pod pattern injection webhook.")
    parser.add_argument("--version", action="version", version=f"podpatterns {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the admission webhook over HTTPS")
    serve.add_argument("--host", default=_env("HOST"), help="listen address (default 0.0.0.0; 127.0.0.1 with --dev)")
    serve.add_argument("--port", type=_whole(int), default=_env("PORT") or "8443")
    serve.add_argument("--tls-cert", default=_env("TLS_CERT"), help="PEM certificate chain (tls.crt)")
    serve.add_argument("--tls-key", default=_env("TLS_KEY"), help="PEM private key (tls.key)")
    serve.add_argument("--config", default=_env("CONFIG"), help="injector config YAML (default: built-in)")
    serve.add_argument("--workers", type=_whole(int), default=_env("WORKERS") or "1")
    serve.add_argument("--log-level", default=_env("LOG_LEVEL", "info"), choices=["debug", "info", "warning", "error"])
    serve.add_argument(
        "--dev",
        action="store_true",
        help="generate a dev CA and serving certificate (in --certs-dir) and serve on 127.0.0.1",
    )
    serve.add_argument(
        "--request-read-timeout",
        type=_whole(float),
        default=_env("REQUEST_READ_TIMEOUT") or "10",
        help="seconds a request may take to arrive, head and body (slow clients are cut off; default 10)",
    )
    serve.add_argument(
        "--max-connections",
        type=_whole(int),
        default=_env("MAX_CONNECTIONS") or "1000",
        help="concurrent connections per worker before answering 503 (default 1000)",
    )
    serve.add_argument("--certs-dir", default="certs", help="where --dev keeps its certificates (default certs/)")
    serve.set_defaults(func=run_serve)

    inject = sub.add_parser("inject", help="inject manifests offline, as the webhook would")
    inject.add_argument("-f", "--filename", required=True, help="YAML file, or - for standard input")
    inject.add_argument("--config", default=_env("CONFIG"), help="injector config YAML (default: built-in)")
    inject.add_argument("-o", "--output", default="-", help="where to write the result (default: stdout)")
    inject.set_defaults(func=run_inject)

    certs.register_cli(sub)
    register_day_two(sub)
    return parser


# uvicorn settings shared by `serve` and the benchmark's reference servers, so both run alike.
UVICORN_OPTIONS: dict[str, Any] = {
    "factory": True,
    # Longer than Go's 90 s idle timeout, so the API server closes idle connections first and never
    # sends a review on a connection we are closing.
    "timeout_keep_alive": 120,
    "log_level": "warning",
    "access_log": False,
    "server_header": False,
    "timeout_graceful_shutdown": 20,
}


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from webhook.tls import context_factory, server_context

    log = logs.setup(args.log_level)
    host = args.host or ("127.0.0.1" if args.dev else "0.0.0.0")
    cert, key = args.tls_cert, args.tls_key
    if args.dev and not (cert and key):
        paths = certs.ensure_dev_certs(Path(args.certs_dir))
        cert, key = str(paths.tls_crt), str(paths.tls_key)
        sys.stderr.write(
            f"podpatterns: dev certificates in {Path(args.certs_dir).resolve()}/ "
            f"(trust {paths.ca_crt} as the CA); serving https://{host}:{args.port}/mutate\n"
        )
    if not (cert and key):
        sys.stderr.write(
            "podpatterns serve: --tls-cert and --tls-key are required (or --dev); the webhook serves HTTPS only\n"
        )
        return 2
    try:
        load_config(args.config)  # fail before binding, with a message that names the field
    except ConfigError as exc:
        sys.stderr.write(f"podpatterns serve: {exc}\n")
        return 2
    try:
        server_context(cert, key)
    except ssl.SSLError as exc:  # before OSError, of which it is a subclass
        sys.stderr.write(
            f"podpatterns serve: --tls-cert {cert} and --tls-key {key} are not a usable pair "
            f"(a PEM certificate chain and its private key): {exc.reason or exc}\n"
        )
        return 2
    except OSError as exc:
        sys.stderr.write(f"podpatterns serve: cannot read {exc.filename or cert}: {exc.strerror}\n")
        return 2
    # Workers are separate processes: they read their settings from the environment.
    os.environ["PODPATTERNS_LOG_LEVEL"] = args.log_level
    os.environ["PODPATTERNS_REQUEST_READ_TIMEOUT"] = str(args.request_read_timeout)
    if args.config:
        os.environ["PODPATTERNS_CONFIG"] = str(Path(args.config).resolve())
    else:
        os.environ.pop("PODPATTERNS_CONFIG", None)
    log.info(
        "starting", extra={"fields": {"host": host, "port": args.port, "workers": args.workers, "version": __version__}}
    )
    from webhook.protocol import GuardedHttpProtocol  # imported after the environment is set

    uvicorn.run(
        "webhook.app:app_from_env",
        http=GuardedHttpProtocol,
        limit_concurrency=args.max_connections,
        host=host,
        port=args.port,
        workers=args.workers,
        ssl_certfile=cert,
        ssl_keyfile=key,
        ssl_context_factory=context_factory,
        **UVICORN_OPTIONS,
    )
    return 0


def run_inject(args: argparse.Namespace) -> int:
    try:
        text = sys.stdin.read() if args.filename == "-" else Path(args.filename).read_text(encoding="utf-8")
        docs = load_documents(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        sys.stderr.write(f"podpatterns inject: cannot read {args.filename}: {exc}\n")
        return 2
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        sys.stderr.write(f"podpatterns inject: {exc}\n")
        return 2
    try:
        out, warnings, errors = inject_documents(docs, config)
    except MalformedManifest as exc:
        sys.stderr.write(f"podpatterns inject: cannot inject {args.filename}: {exc}\n")
        return 2
    for warning in warnings:
        sys.stderr.write(f"warning: {warning}\n")
    if errors:
        for error in errors:
            sys.stderr.write(f"error: {error}\n")
        return 1
    text = dump(out)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
