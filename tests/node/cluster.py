"""A real one-node Kubernetes cluster for the tests: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, containerd and kubelet, on loopback and a pod bridge this module creates.

The facts behind the settings (each one was needed on this kind of machine) are in ../shared/k8s/README.md.
Pods get no default route and no masquerade, so they reach each other and the node address, nothing else.
Everything lives under one state directory and one bridge; `stop()` undoes exactly what `start()` did, and
`start()` first clears what a killed earlier run left behind.

    python3 -m tests.node.cluster up     # start, print the kubeconfig, wait for Ctrl-C, stop
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import yaml

from tests.node import images
from tests.node.pki import ClusterPKI, kubeconfig

ASSETS_ENV = "PODPATTERNS_K8S_ASSETS"
BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kubectl")
STATE = Path(os.environ.get("PODPATTERNS_NODE_STATE", "/var/tmp/podpatterns-node"))
BRIDGE = "podpp0"
SUBNET = "10.203.0.0/24"
NODE_IP = "10.203.0.1"
SERVICE_CIDR = "10.203.128.0/24"  # never routed: there is no kube-proxy
NODE_NAME = "podpatterns-node"
CNI_BIN = Path("/usr/lib/cni")
FORWARD_CHAIN = "PODPP-FORWARD"
CONTROLLERS = ",".join(
    [
        "*",
        # Lifts the not-ready taint every new Node gets: nothing schedules without it.
        "node-lifecycle-controller",
        "taint-eviction-controller",
        "resourcequota-controller",
        "pod-garbage-collector-controller",
        "ttl-after-finished-controller",
        # Nothing here needs these; each costs start time and log noise.
        "-node-ipam-controller",
        "-node-route-controller",
        "-service-lb-controller",
        "-cloud-node-lifecycle-controller",
        "-persistentvolume-attach-detach-controller",
        "-horizontal-pod-autoscaler-controller",
    ]
)


class ClusterError(RuntimeError):
    pass


def find_assets() -> Path | None:
    """The directory of Kubernetes binaries named by PODPATTERNS_K8S_ASSETS, or None when it is not set."""
    value = os.environ.get(ASSETS_ENV)
    if not value:
        return None
    directory = Path(value)
    missing = [b for b in BINARIES if not os.access(directory / b, os.X_OK)]
    if missing:
        raise ClusterError(f"{ASSETS_ENV}={value} lacks {', '.join(missing)} (unpack ../shared/k8s there)")
    return directory


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise ClusterError(f"{' '.join(args)}: exit {result.returncode}: {result.stderr.strip()}")
    return result


def free_ports(count: int, low: int = 20000, high: int = 32000) -> list[int]:
    """Free ports below the ephemeral range: one inside it was taken by a probe connection now and then."""
    found: list[int] = []
    start = low + os.getpid() % (high - low)  # two runs side by side rarely try the same ports
    for port in [*range(start, high), *range(low, start)]:
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    raise ClusterError("no free ports")


@dataclass
class Component:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class Cluster:
    assets: Path
    state: Path = STATE
    image_cache: Path = images.DEFAULT_CACHE
    components: list[Component] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)
    image_tarballs: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    _lock: IO[str] | None = None

    # --- paths -------------------------------------------------------------------------------------------------

    @property
    def pki_dir(self) -> Path:
        return self.state / "pki"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.state / "admin.kubeconfig"

    @property
    def containerd_socket(self) -> Path:
        return self.state / "containerd" / "containerd.sock"

    @property
    def ctr(self) -> list[str]:
        return ["ctr", "--address", str(self.containerd_socket), "--namespace", "k8s.io"]

    @property
    def server(self) -> str:
        return f"https://{NODE_IP}:{self.ports['apiserver']}"

    def bin(self, name: str) -> str:
        return str(self.assets / name)

    # --- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        started = time.monotonic()
        # One cluster per machine (one bridge, one state dir): a second test session waits for the first.
        self._lock = open(f"{self.state}.lock", "w")  # noqa: SIM115 - held until stop()
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self.timings["wait for the node lock"] = time.monotonic() - started
        cleanup_leftovers(self.state)
        self.state.mkdir(parents=True)
        for sub in ("logs", "etcd", "kubelet", "pod-logs", "cni/net.d", "cni/ipam", "containerd"):
            (self.state / sub).mkdir(parents=True, exist_ok=True)
        # etcd fsyncs every write; on tmpfs a write costs microseconds, not a disk flush.
        _run("mount", "-t", "tmpfs", "-o", "size=512m", "podpp-etcd", str(self.state / "etcd"))
        self._network()
        self.ports = dict(
            zip(("etcd", "etcd-peer", "apiserver", "kubelet", "kubelet-healthz"), free_ports(5), strict=True)
        )
        self._pki()
        # Images build (or come from the cache) while the control plane starts.
        built: dict[str, object] = {}
        builder = threading.Thread(target=self._build_images, args=(built,), daemon=True)
        builder.start()
        self._start_etcd()
        self._start_apiserver()
        self._start_containerd()
        self._start("kube-controller-manager", self._controller_manager_args())
        self._start("kube-scheduler", self._scheduler_args())
        builder.join()
        if "error" in built:
            raise ClusterError(f"building images failed: {built['error']}")
        t = time.monotonic()
        images.import_images(self.image_tarballs, self.ctr)
        self.timings["import images"] = time.monotonic() - t
        self._start_kubelet()
        self._wait("node Ready", self._node_ready, 90)
        self._wait("default ServiceAccount", self._default_sa, 60)
        self.timings["total start"] = time.monotonic() - started

    def stop(self) -> None:
        """Stop what start() started, newest first; then clear every mount, netns, cgroup and rule."""
        # One at a time: signalled all at once, the controllers lose the API server mid-shutdown and linger.
        for component in reversed(self.components):
            if component.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(component.process.pid, signal.SIGTERM)
            try:
                component.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(component.process.pid, signal.SIGKILL)
                component.process.wait(timeout=10)
        self.components.clear()
        cleanup_leftovers(self.state)
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    # --- kubectl and the API -----------------------------------------------------------------------------------

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.bin("kubectl"), "--kubeconfig", str(self.admin_kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)}: {result.stderr.strip() or result.stdout.strip()}")
        return result

    def get(self, *args: str) -> dict:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def apply(self, manifest: str | dict | list, namespace: str | None = None) -> str:
        if not isinstance(manifest, str):
            docs = manifest if isinstance(manifest, list) else [manifest]
            manifest = yaml.safe_dump_all(docs)
        extra = ["-n", namespace] if namespace else []
        return self.kubectl("apply", *extra, "-f", "-", input=manifest).stdout

    def api(self) -> httpx.Client:
        """An admin HTTPS client straight to the API server (for what kubectl makes awkward)."""
        context = ssl.create_default_context(cafile=str(self.pki_dir / "ca.crt"))
        context.load_cert_chain(self.pki_dir / "admin.crt", self.pki_dir / "admin.key")
        return httpx.Client(base_url=self.server, verify=context, timeout=30, trust_env=False)

    def wait_for(self, what: str, predicate: Callable[[], object], timeout: float, interval: float = 0.5) -> object:
        return self._wait(what, predicate, timeout, interval)

    # --- pieces ------------------------------------------------------------------------------------------------

    def _wait(self, what: str, predicate: Callable[[], object], timeout: float, interval: float = 0.3) -> object:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            for component in self.components:
                if component.process.poll() is not None:
                    raise ClusterError(f"{component.name} exited while waiting for {what}:\n{tail(component.log)}")
            try:
                value = predicate()
                if value:
                    return value
            except Exception as exc:  # the thing is not up yet: the last error goes into the message
                last = exc
            time.sleep(interval)
        raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}" + (f": {last}" if last else ""))

    def _start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Component:
        log = self.state / "logs" / f"{name}.log"
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() signals the whole group
            env={**os.environ, **(env or {})},
        )
        component = Component(name, process, log)
        self.components.append(component)
        return component

    def _build_images(self, out: dict[str, object]) -> None:
        t = time.monotonic()
        try:
            self.image_tarballs = images.build_images(self.image_cache)
        except Exception as exc:  # reported by start(), in the main thread
            out["error"] = exc
        self.timings["build images"] = time.monotonic() - t

    def _network(self) -> None:
        # The node address must exist before kubelet starts; the CNI bridge plugin adopts this bridge.
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        _run("ip", "addr", "add", f"{NODE_IP}/24", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        # Nothing crosses between the bridge and any other interface (forwarding is off here anyway).
        if shutil.which("iptables"):
            _run("iptables", "-N", FORWARD_CHAIN)
            _run("iptables", "-A", FORWARD_CHAIN, "-i", BRIDGE, "!", "-o", BRIDGE, "-j", "DROP")
            _run("iptables", "-A", FORWARD_CHAIN, "-o", BRIDGE, "!", "-i", BRIDGE, "-j", "DROP")
            _run("iptables", "-I", "FORWARD", "1", "-j", FORWARD_CHAIN)
        conflist = {
            "cniVersion": "1.0.0",
            "name": "podpp",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": False,  # no default route in pods
                    "ipMasq": False,
                    "hairpinMode": True,  # a pod reaches itself through a Service-less pod IP
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": SUBNET, "rangeStart": "10.203.0.10", "gateway": NODE_IP}]],
                        "dataDir": str(self.state / "cni" / "ipam"),
                    },
                }
            ],
        }
        (self.state / "cni" / "net.d" / "10-podpp.conflist").write_text(json.dumps(conflist, indent=2))
        (self.state / "resolv.conf").write_text("nameserver 127.0.0.1\n")  # no cluster DNS, no outside DNS

    def _pki(self) -> None:
        pki = ClusterPKI(self.pki_dir)
        pki.issue(
            "apiserver",
            common_name="kube-apiserver",
            dns_names=["kubernetes", "kubernetes.default", "kubernetes.default.svc", "localhost"],
            ip_addresses=["127.0.0.1", NODE_IP, "10.203.128.1"],
            server=True,
        )
        admin_crt, admin_key = pki.issue("admin", common_name="admin", organizations=["system:masters"], client=True)
        node_crt, node_key = pki.issue(
            "kubelet-client", common_name=f"system:node:{NODE_NAME}", organizations=["system:nodes"], client=True
        )
        pki.issue("kubelet-serving", common_name=NODE_NAME, dns_names=[NODE_NAME], ip_addresses=[NODE_IP], server=True)
        cm_crt, cm_key = pki.issue("controller-manager", common_name="system:kube-controller-manager", client=True)
        sched_crt, sched_key = pki.issue("scheduler", common_name="system:kube-scheduler", client=True)
        pki.service_account_keys()
        ca = pki.ca
        kubeconfig(self.admin_kubeconfig, server=self.server, ca=ca, cert=admin_crt, key=admin_key, user="admin")
        kubeconfig(
            self.state / "kubelet.kubeconfig", server=self.server, ca=ca, cert=node_crt, key=node_key, user="node"
        )
        kubeconfig(self.state / "cm.kubeconfig", server=self.server, ca=ca, cert=cm_crt, key=cm_key, user="cm")
        kubeconfig(
            self.state / "scheduler.kubeconfig", server=self.server, ca=ca, cert=sched_crt, key=sched_key, user="sched"
        )

    def _start_etcd(self) -> None:
        client, peer = self.ports["etcd"], self.ports["etcd-peer"]
        self._start(
            "etcd",
            [
                "etcd",
                "--name=podpp",
                f"--data-dir={self.state / 'etcd' / 'data'}",
                f"--listen-client-urls=http://127.0.0.1:{client}",
                f"--advertise-client-urls=http://127.0.0.1:{client}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=podpp=http://127.0.0.1:{peer}",
                "--log-level=warn",
            ],
            env={"ETCD_UNSUPPORTED_ARCH": ""},
        )

        def healthy() -> bool:
            return httpx.get(f"http://127.0.0.1:{client}/health", timeout=2, trust_env=False).status_code == 200

        self._wait("etcd", healthy, 30)

    def _start_apiserver(self) -> None:
        pki = self.pki_dir
        self._start(
            "kube-apiserver",
            [
                self.bin("kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{self.ports['etcd']}",
                f"--bind-address={NODE_IP}",
                f"--advertise-address={NODE_IP}",
                f"--secure-port={self.ports['apiserver']}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                # logs/exec need the API server to authenticate to the kubelet, by its InternalIP (no DNS here).
                f"--kubelet-client-certificate={pki / 'admin.crt'}",
                f"--kubelet-client-key={pki / 'admin.key'}",
                "--kubelet-preferred-address-types=InternalIP",
                # Webhook Services are reached through their endpoints: there is no kube-proxy.
                "--enable-aggregator-routing=true",
                "--profiling=false",
                "--v=1",
            ],
        )

        def ready() -> bool:
            with self.api() as api:
                return api.get("/readyz").status_code == 200

        self._wait("kube-apiserver /readyz", ready, 90)

    def _start_containerd(self) -> None:
        root = self.state / "containerd"
        config = f"""\
version = 2
root = "{root / "root"}"
state = "{root / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{self.containerd_socket}"
[ttrpc]
  address = "{root / "containerd.sock.ttrpc"}"
[debug]
  level = "warn"
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{images.PAUSE}"
  # This VM drops CAP_SYS_RESOURCE from every process: runc cannot lower oom_score_adj without this.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  netns_mounts_under_state_dir = true
  enable_cdi = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    discard_unpacked_layers = false
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{self.state / "cni" / "net.d"}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{root / "opt"}"
"""
        (root / "config.toml").write_text(config)
        # A pod naming an image that was not imported fails at once with ErrImagePull instead of hanging.
        proxy = "http://127.0.0.1:9"
        self._start(
            "containerd",
            ["containerd", "--config", str(root / "config.toml")],
            env={"HTTP_PROXY": proxy, "HTTPS_PROXY": proxy, "NO_PROXY": ""},
        )

        def up() -> bool:
            return _run(*self.ctr, "version", check=False).returncode == 0

        self._wait("containerd", up, 30)

    def _controller_manager_args(self) -> list[str]:
        pki = self.pki_dir
        return [
            self.bin("kube-controller-manager"),
            f"--kubeconfig={self.state / 'cm.kubeconfig'}",
            f"--authentication-kubeconfig={self.state / 'cm.kubeconfig'}",
            f"--authorization-kubeconfig={self.state / 'cm.kubeconfig'}",
            "--use-service-account-credentials=true",
            f"--controllers={CONTROLLERS}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--leader-elect=false",
            "--secure-port=0",
            # A deleted pod's node is this one; react within seconds, not the default five minutes.
            "--node-monitor-grace-period=20s",
            "--v=1",
        ]

    def _scheduler_args(self) -> list[str]:
        kc = self.state / "scheduler.kubeconfig"
        return [
            self.bin("kube-scheduler"),
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            "--leader-elect=false",
            "--secure-port=0",
            "--v=1",
        ]

    def _start_kubelet(self) -> None:
        pki = self.pki_dir
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": NODE_IP,
            "port": self.ports["kubelet"],
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": self.ports["kubelet-healthz"],
            "tlsCertFile": str(pki / "kubelet-serving.crt"),
            "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": False},
                "x509": {"clientCAFile": str(pki / "ca.crt")},
            },
            "authorization": {"mode": "AlwaysAllow"},
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            # cgroup v1 here, no systemd: kubelet 1.35+ refuses v1 unless told.
            "cgroupDriver": "cgroupfs",
            "failCgroupV1": False,
            "failSwapOn": False,
            "shutdownGracePeriod": "0s",
            "shutdownGracePeriodCriticalPods": "0s",
            # Local images cannot be pulled back: never collect them; evict for nothing.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "1Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "resolvConf": str(self.state / "resolv.conf"),
            "podLogsDir": str(self.state / "pod-logs"),
            "serializeImagePulls": False,
            # Secret and ConfigMap volumes refresh at pod sync: ten seconds instead of a minute.
            "syncFrequency": "10s",
            "nodeStatusUpdateFrequency": "4s",
            "rotateCertificates": False,
            "registerNode": True,
            "maxPods": 60,
        }
        path = self.state / "kubelet-config.yaml"
        path.write_text(yaml.safe_dump(config))
        self._start(
            "kubelet",
            [
                self.bin("kubelet"),
                f"--config={path}",
                f"--kubeconfig={self.state / 'kubelet.kubeconfig'}",
                f"--root-dir={self.state / 'kubelet'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_IP}",
                "--v=1",
            ],
        )

    def _node_ready(self) -> bool:
        node = json.loads(self.kubectl("get", "node", NODE_NAME, "-o", "json", check=False).stdout or "{}")
        conditions = {c["type"]: c["status"] for c in (node.get("status") or {}).get("conditions") or []}
        taints = [t["key"] for t in (node.get("spec") or {}).get("taints") or []]
        return conditions.get("Ready") == "True" and not taints

    def _default_sa(self) -> bool:
        return self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- teardown ------------------------------------------------------------------------------------------------


def _mounts_under(directory: Path) -> list[str]:
    prefix = str(directory).rstrip("/") + "/"
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mount_point = line.split()[4].replace("\\040", " ")
            if mount_point.startswith(prefix) or mount_point == prefix.rstrip("/"):
                found.append(mount_point)
    return sorted(set(found), key=lambda m: m.count("/"), reverse=True)


def _kubepods_cgroups() -> list[Path]:
    found: list[Path] = []
    base = Path("/sys/fs/cgroup")
    for hierarchy in base.iterdir() if base.exists() else []:
        for top in hierarchy.glob("kubepods*"):
            found += [p for p in top.rglob("*") if p.is_dir()] + [top]
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _kill_pods_and_shims(state: Path) -> None:
    """Container processes live in kubepods cgroups; shims are containerd-shim processes of our socket."""
    for cgroup in _kubepods_cgroups():
        procs = cgroup / "cgroup.procs"
        with contextlib.suppress(OSError):
            for pid in procs.read_text().split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "containerd-shim" in cmdline and str(state) in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)


def cleanup_leftovers(state: Path) -> None:
    """Remove whatever a cluster under `state` left: processes, mounts, cgroups, the bridge, the rule."""
    if state.exists():
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(state) in cmdline and any(b in cmdline for b in ("kube", "containerd", "etcd")):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(proc.name), signal.SIGKILL)
        _kill_pods_and_shims(state)
        time.sleep(0.3)
        for mount_point in _mounts_under(state):
            _run("umount", "-l", mount_point, check=False)
    for _ in range(20):
        remaining = [c for c in _kubepods_cgroups() if c.exists()]
        for cgroup in remaining:
            with contextlib.suppress(OSError):
                cgroup.rmdir()
        if not any(c.exists() for c in remaining):
            break
        _kill_pods_and_shims(state)
        time.sleep(0.2)
    if _run("ip", "link", "show", BRIDGE, check=False).returncode == 0:
        # veths of pods whose netns is gone vanish with it; any still attached go with their bridge.
        for line in _run("ip", "-o", "link", "show", "master", BRIDGE, check=False).stdout.splitlines():
            name = line.split(":")[1].strip().split("@")[0]
            _run("ip", "link", "delete", name, check=False)
        _run("ip", "link", "delete", BRIDGE, check=False)
    if shutil.which("iptables") and _run("iptables", "-n", "-L", FORWARD_CHAIN, check=False).returncode == 0:
        while _run("iptables", "-D", "FORWARD", "-j", FORWARD_CHAIN, check=False).returncode == 0:
            pass
        _run("iptables", "-F", FORWARD_CHAIN, check=False)
        _run("iptables", "-X", FORWARD_CHAIN, check=False)
    if state.exists():
        shutil.rmtree(state, ignore_errors=True)


@contextlib.contextmanager
def running_cluster(assets: Path) -> Iterator[Cluster]:
    cluster = Cluster(assets)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def main() -> int:
    assets = find_assets()
    if assets is None:
        print(f"set {ASSETS_ENV} to the directory of the Kubernetes binaries", file=sys.stderr)
        return 2
    with running_cluster(assets) as cluster:
        print(f"export KUBECONFIG={cluster.admin_kubeconfig}")
        print(json.dumps({k: round(v, 1) for k, v in cluster.timings.items()}))
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main())
