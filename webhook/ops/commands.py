"""Wires `check`, `audit` and `restart` into the CLI: one --kubeconfig flag, one connection, and every
cluster problem said in a line with exit code 2 (no traceback). The command modules (and the kubernetes
client) are imported only when one of them runs, so `serve` and `inject` start as fast as before."""

from __future__ import annotations

import argparse
import importlib
import sys

EXIT_ERROR = 2
SCOPE_HELP = "one namespace (default: the kubeconfig context's, or default)"


def _lazy(module: str) -> object:
    def command(args: argparse.Namespace) -> int:
        from webhook.ops.kube import OpsError, connect

        run = importlib.import_module(f"webhook.ops.{module}").run
        try:
            return int(run(args, connect(args.kubeconfig)))
        except OpsError as exc:
            sys.stderr.write(f"podpatterns {args.command}: {exc}\n")
            return EXIT_ERROR

    return command


def _scope(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", help=SCOPE_HELP)
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace the webhook serves")


def register_cli(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--kubeconfig", help="kubeconfig file (default: KUBECONFIG, ~/.kube/config, in-cluster)")

    check = sub.add_parser(
        "check",
        parents=[common],
        help="explain, line by line, whether a pod is (or would be) injected",
        description="Exit 0 when the pod is (or would be) injected as asked, or asks nothing; 1 when it asks "
        "and is not (would not be); 3 when a live pod was injected by another version or config; 2 on errors.",
    )
    check.add_argument("pod", nargs="?", help="a live pod's name")
    check.add_argument("-f", "--filename", help="a manifest (Pod or workload) to dry-run instead, or - for stdin")
    check.add_argument("-n", "--namespace", help=SCOPE_HELP)
    check.set_defaults(func=_lazy("check"))

    audit = sub.add_parser(
        "audit",
        parents=[common],
        help="classify every pod the webhook serves: current, stale, missing, not-asked",
        description="Exit 0 when every pod is current or asks nothing; 3 when any is stale or missing; 2 on errors.",
    )
    _scope(audit)
    audit.add_argument("-o", "--output", choices=["table", "json"], default="table")
    audit.set_defaults(func=_lazy("audit"))

    restart = sub.add_parser(
        "restart",
        parents=[common],
        help="roll the workloads whose pods are stale or missing their injection",
        description="Exit 0 when every selected pod's owner was (with --dry-run: would be) restarted or deleted; "
        "1 when some could not be (a Job's pods, bare pods without --delete-bare-pods); 2 on errors.",
    )
    restart.add_argument("--stale", action="store_true", help="pods injected by another version or config")
    restart.add_argument("--missing", action="store_true", help="pods that ask for injection and have none")
    _scope(restart)
    restart.add_argument("--dry-run", action="store_true", help="say what would be done, change nothing")
    restart.add_argument("--delete-bare-pods", action="store_true", help="delete selected pods no workload owns")
    restart.add_argument("-o", "--output", choices=["text", "json"], default="text")
    restart.set_defaults(func=_lazy("restart"))
