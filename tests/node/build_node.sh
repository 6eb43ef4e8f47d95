#!/usr/bin/env bash
# Builds and installs what a real node needs, into $FLYWHEEL_CACHE/bin:
#  - kubelet and kube-proxy, from the same pinned k8s.io/kubernetes module as the
#    control plane (tests/cluster/kube/go.mod, versions.env, same ldflags);
#  - crictl, from sigs.k8s.io/cri-tools pinned in tests/node/cri-tools/go.mod
#    (node.py down removes pod sandboxes through it; handy for debugging too);
#  - the Debian packages the node runs: containerd, runc, the CNI plugins,
#    iptables, conntrack (kube-proxy), socat (kubelet port-forward), gcc + libc
#    (static pause binary), busybox-static (the node tests' image), debootstrap.
# A stamp records what was built; a re-run with the same pins is instant.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cluster="$repo/tests/cluster"
# shellcheck source=../cluster/versions.env
source "$cluster/versions.env"
cache="${FLYWHEEL_CACHE:-$repo/.cache}"
bin="$cache/bin"
stamp="$bin/.node-versions"

# ---------------------------------------------------------------- packages
# Debian package -> a file it installs; only missing ones are installed, so a
# prepared machine never touches apt.
declare -A packages=(
  [containerd]=/usr/bin/containerd
  [runc]=/usr/sbin/runc
  [containernetworking-plugins]=/usr/lib/cni/bridge
  [iptables]=/usr/sbin/iptables
  [conntrack]=/usr/sbin/conntrack
  [socat]=/usr/bin/socat
  [busybox-static]=/bin/busybox
  [debootstrap]=/usr/sbin/debootstrap
  [gcc]=/usr/bin/gcc
  [libc6-dev]=/usr/include/stdio.h
  [iproute2]=/usr/sbin/ip
  [pigz]=/usr/bin/pigz
)
missing=()
for pkg in "${!packages[@]}"; do
  [[ -e "${packages[$pkg]}" ]] || missing+=("$pkg")
done
if ((${#missing[@]})); then
  command -v apt-get >/dev/null || {
    echo "build_node.sh: missing ${missing[*]} and no apt-get to install them" >&2; exit 1; }
  [[ $(id -u) == 0 ]] || { echo "build_node.sh: installing ${missing[*]} needs root" >&2; exit 1; }
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # build_image.sh may be installing debootstrap at the same moment: take turns.
  flock -w 900 /tmp/flywheel-apt.lock apt-get update -qq
  flock -w 900 /tmp/flywheel-apt.lock \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The test image copies /bin/busybox into an empty rootfs: it must be the static
# build (busybox-static), not Debian's dynamically linked busybox.
if ldd /bin/busybox >/dev/null 2>&1; then
  echo "build_node.sh: /bin/busybox is dynamically linked; apt-get install busybox-static" >&2
  exit 1
fi

# ---------------------------------------------------------------- binaries
want="$(cat "$cluster/versions.env" "$cluster/kube/go.sum" "$here/cri-tools/go.sum" | sha256sum | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$bin/kubelet" && -x "$bin/kube-proxy" && -x "$bin/crictl" ]]; then
  echo "node binaries are current in $bin"
  exit 0
fi
command -v go >/dev/null || { echo "build_node.sh: Go is required (https://go.dev/dl/)" >&2; exit 1; }
mkdir -p "$bin"

# shellcheck source=../cluster/kube_build_env.sh
source "$cluster/kube_build_env.sh"

for cmd in kubelet kube-proxy; do
  echo "building $cmd (k8s.io/kubernetes/cmd/$cmd $KUBE_VERSION)"
  # CGO off, as upstream builds them: static binaries that need no libc match.
  (cd "$cluster/kube" && go build -tags "selinux,notest" -ldflags "$kube_ldflags" \
     -o "$bin/$cmd" "k8s.io/kubernetes/cmd/$cmd")
done

echo "building crictl (sigs.k8s.io/cri-tools/cmd/crictl)"
(cd "$here/cri-tools" && go build -ldflags "-s -w" -o "$bin/crictl" sigs.k8s.io/cri-tools/cmd/crictl)

echo "$want" > "$stamp"
"$bin/kubelet" --version
echo "node binaries built in $bin"
