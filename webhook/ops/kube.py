"""The cluster side of the day-two commands: an API client from the user's kubeconfig (or the in-cluster
config), and what the chart installed, read from the objects themselves: the MutatingWebhookConfiguration
(found by the webhook name), the Service it calls, the Deployment behind it (version label, TLS Secret)
and the injector ConfigMap (its fingerprint, computed as the webhook computes it)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from webhook.injection import ConfigError, parse_config
from webhook.injection.fingerprint import config_fingerprint
from webhook.ops import selectors
from webhook.ops.classify import Installed

Json = dict[str, Any]

WEBHOOK_NAME = "inject.podpatterns.io"
CHART_NAME_LABEL = "app.kubernetes.io/name"
VERSION_LABEL = "app.kubernetes.io/version"
CONFIG_KEY = "config.yaml"


class OpsError(Exception):
    """A problem the user fixes (kubeconfig, reachability, permissions): a message and exit code 2."""


@dataclass
class Kube:
    api: client.ApiClient
    namespace: str = "default"  # the kubeconfig context's namespace: -n's default, as for kubectl
    core: client.CoreV1Api = field(init=False)
    apps: client.AppsV1Api = field(init=False)
    batch: client.BatchV1Api = field(init=False)
    admission: client.AdmissionregistrationV1Api = field(init=False)
    discovery: client.DiscoveryV1Api = field(init=False)

    def __post_init__(self) -> None:
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.admission = client.AdmissionregistrationV1Api(self.api)
        self.discovery = client.DiscoveryV1Api(self.api)

    def plain(self, obj: Any) -> Any:
        """A client model as the API server's JSON (camelCase keys, no Nones)."""
        return self.api.sanitize_for_serialization(obj)

    def call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """fn(*args, **kwargs), with API and network errors turned into one readable OpsError."""
        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            raise OpsError(f"{what}: {exc.status} {exc.reason}: {api_message(exc)}") from None
        except urllib3.exceptions.HTTPError as exc:
            raise OpsError(f"{what}: cannot reach the API server at {self.api.configuration.host}: {exc}") from None


def api_message(exc: ApiException) -> str:
    try:
        return str(yaml.safe_load(exc.body).get("message") or exc.body)
    except Exception:
        return str(exc.body)


def connect(kubeconfig: str | None) -> Kube:
    """--kubeconfig, else KUBECONFIG or ~/.kube/config, else the in-cluster service account."""
    path = kubeconfig or os.environ.get("KUBECONFIG")
    try:
        if path or Path("~/.kube/config").expanduser().exists():
            if path and not all(Path(p).exists() for p in path.split(os.pathsep) if p):
                raise OpsError(f"kubeconfig {path} does not exist")
            api = config.new_client_from_config(config_file=path.split(os.pathsep)[0] if path else None)
        else:
            config.load_incluster_config()
            api = client.ApiClient()
    except ConfigException as exc:
        raise OpsError(f"no usable kubeconfig (pass --kubeconfig or set KUBECONFIG): {exc}") from None
    except (OSError, yaml.YAMLError) as exc:
        raise OpsError(f"cannot read kubeconfig {path or '~/.kube/config'}: {exc}") from None
    api.configuration.retries = 1  # fail fast on an unreachable cluster instead of urllib3's three retries
    kube = Kube(api, _context_namespace(path))
    kube.call("GET /version", client.VersionApi(api).get_code, _request_timeout=10)
    return kube


def _context_namespace(path: str | None) -> str:
    try:
        _, active = config.list_kube_config_contexts(config_file=path.split(os.pathsep)[0] if path else None)
    except (ConfigException, OSError):
        active = None
    if active is None:  # in-cluster: the service account's namespace
        try:
            return Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read_text().strip() or "default"
        except OSError:
            return "default"
    return str((active.get("context") or {}).get("namespace") or "default")


@dataclass
class Installation:
    mwc: Json
    webhook: Json  # the inject.podpatterns.io entry
    namespace: str  # where the Service (and, from the chart, the Deployment and ConfigMap) live
    service: str
    port: int
    deployment: Json | None
    configmap: Json | None
    installed: Installed
    notes: list[str]  # what could not be read, said once by the command

    @property
    def mwc_name(self) -> str:
        return str(self.mwc["metadata"]["name"])

    @property
    def namespace_selector(self) -> Json:
        return self.webhook.get("namespaceSelector") or {}

    def namespace_in_scope(self, namespace: Json) -> bool:
        return selectors.matches(self.namespace_selector, (namespace.get("metadata") or {}).get("labels"))


def find_installation(kube: Kube) -> Installation | None:
    mwcs = kube.plain(
        kube.call("list MutatingWebhookConfigurations", kube.admission.list_mutating_webhook_configuration)
    )
    for mwc in mwcs.get("items") or []:
        labelled = (mwc["metadata"].get("labels") or {}).get(CHART_NAME_LABEL) == "podpatterns"
        for hook in mwc.get("webhooks") or []:
            if hook.get("name") == WEBHOOK_NAME or (labelled and len(mwc["webhooks"]) == 1):
                return _installation(kube, mwc, hook)
    return None


def get_or_none(kube: Kube, what: str, fn: Any, *args: Any) -> Json | None:
    try:
        return kube.plain(fn(*args))
    except ApiException as exc:
        if exc.status in (403, 404):
            return None
        raise OpsError(f"{what}: {exc.status} {exc.reason}: {api_message(exc)}") from None


def _installation(kube: Kube, mwc: Json, hook: Json) -> Installation:
    ref = (hook.get("clientConfig") or {}).get("service") or {}
    namespace, service = ref.get("namespace", ""), ref.get("name", "")
    notes: list[str] = []
    # The chart names the Deployment and the ConfigMap after the Service (podpatterns.fullname).
    deployment = get_or_none(
        kube, "read the webhook Deployment", kube.apps.read_namespaced_deployment, service, namespace
    )
    if deployment is None:
        notes.append(f"cannot read Deployment {namespace}/{service}: the installed version is unknown")
    configmap = get_or_none(
        kube, "read the injector ConfigMap", kube.core.read_namespaced_config_map, service, namespace
    )
    fingerprint = None
    if configmap is None or CONFIG_KEY not in (configmap.get("data") or {}):
        notes.append(f"cannot read {CONFIG_KEY} of ConfigMap {namespace}/{service}: the config fingerprint is unknown")
    else:
        try:
            fingerprint = config_fingerprint(parse_config(yaml.safe_load(configmap["data"][CONFIG_KEY]), CONFIG_KEY))
        except (ConfigError, yaml.YAMLError) as exc:
            notes.append(f"ConfigMap {namespace}/{service} holds an invalid injector config: {exc}")
    version = ((deployment or {}).get("metadata", {}).get("labels") or {}).get(VERSION_LABEL)
    return Installation(
        mwc=mwc,
        webhook=hook,
        namespace=namespace,
        service=service,
        port=int(ref.get("port") or 443),
        deployment=deployment,
        configmap=configmap,
        installed=Installed(version=version, fingerprint=fingerprint),
        notes=notes,
    )


def require_installation(kube: Kube) -> Installation:
    found = find_installation(kube)
    if found is None:
        raise OpsError(f"no MutatingWebhookConfiguration with webhook {WEBHOOK_NAME}: podpatterns is not installed")
    return found


def owner_of(pod: Json, replicasets: dict[str, Json], jobs: dict[str, Json]) -> tuple[str, str] | None:
    """(kind, name) of the workload that owns the pod: ReplicaSet → Deployment and Job → CronJob
    followed through their controller references; None for a bare pod."""
    ref = _controller(pod)
    if ref is None:
        return None
    kind, name = ref["kind"], ref["name"]
    parent = {"ReplicaSet": replicasets, "Job": jobs}.get(kind, {}).get(name)
    if parent is not None and (up := _controller(parent)) is not None:
        return up["kind"], up["name"]
    return kind, name


def _controller(obj: Json) -> Json | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None
