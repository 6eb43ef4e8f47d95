#!/usr/bin/env bash
# Builds the two small images every node needs, as OCI archives that
# tests/node/oci_image.py import loads into containerd (no registry here):
#
#   registry.k8s.io/pause:3.10.1  the sandbox ("pause") image, compiled from
#                                 build/pause/linux/pause.c of the pinned
#                                 k8s.io/kubernetes module, the tag kubelet
#                                 1.34 and kubeadm expect (containerd's
#                                 sandbox_image is set to it explicitly)
#   flywheel.local/busybox:1      Debian's busybox-static in an empty rootfs,
#                                 for the node's own tests
#
# into $FLYWHEEL_CACHE/node/images/{pause,busybox}.tar, and prints nothing else
# on stdout. A stamp per image (its inputs' hash) makes a re-run instant.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${FLYWHEEL_CACHE:-$repo/.cache}"
out="$cache/node/images"
PAUSE_TAG="registry.k8s.io/pause:3.10.1"
BUSYBOX_TAG="flywheel.local/busybox:1"
mkdir -p "$out"

say() { echo "base_images: $*" >&2; }
# Rebuilds $1.tar only when the hash of its inputs ($2...) changed.
current() {
  local name=$1; shift
  key="$(cat "$@" "$here/oci_image.py" "$here/base_images.sh" | sha256sum | cut -c1-16)"
  [[ -f "$out/$name.tar" && "$(cat "$out/$name.stamp" 2>/dev/null)" == "$key" ]]
}

# ------------------------------------------------------------------ pause
# The module cache holds the source once `go mod download` has run (build.sh's
# go build did); ask go where, instead of guessing the cache layout.
kube_dir="$(cd "$repo/tests/cluster/kube" && GOFLAGS=-mod=readonly go list -m -f '{{.Dir}}' k8s.io/kubernetes)"
[[ -n "$kube_dir" ]] || (cd "$repo/tests/cluster/kube" && GOSUMDB=off go mod download k8s.io/kubernetes)
kube_dir="$(cd "$repo/tests/cluster/kube" && GOFLAGS=-mod=readonly go list -m -f '{{.Dir}}' k8s.io/kubernetes)"
pause_c="$kube_dir/build/pause/linux/pause.c"
[[ -f "$pause_c" ]] || { say "error: $pause_c is missing from the k8s.io/kubernetes module"; exit 1; }

if ! current pause "$pause_c"; then
  say "compiling $pause_c -> $PAUSE_TAG"
  root="$(mktemp -d "$out/.pause-XXXXXX")"
  trap 'rm -rf "$root"' EXIT
  # Static and small, as upstream's Makefile builds it (-Os -static, stripped).
  gcc -Os -Wall -Werror -static -DVERSION="v3.10.1-flywheel" -o "$root/pause" "$pause_c"
  strip "$root/pause"
  # Upstream's image runs it as 65535:65535 with /pause as its entrypoint.
  python3 "$here/oci_image.py" --rootfs "$root" --tag "$PAUSE_TAG" --out "$out/pause.tar" \
    --entrypoint '["/pause"]' --user 65535:65535 >&2
  echo "$key" > "$out/pause.stamp"
  rm -rf "$root"; trap - EXIT
fi

# ---------------------------------------------------------------- busybox
busybox=/bin/busybox
[[ -x "$busybox" ]] || { say "error: $busybox missing: apt-get install busybox-static"; exit 1; }
if ldd "$busybox" >/dev/null 2>&1; then
  say "error: $busybox is dynamically linked: apt-get install busybox-static"; exit 1
fi
if ! current busybox "$busybox"; then
  say "packing $busybox -> $BUSYBOX_TAG"
  root="$(mktemp -d "$out/.busybox-XXXXXX")"
  trap 'rm -rf "$root"' EXIT
  mkdir -p "$root"/{bin,etc,tmp,root,proc,sys,dev}
  chmod 1777 "$root/tmp"
  cp "$busybox" "$root/bin/busybox"
  # One symlink per applet, as busybox --install -s would make (sorted: stable).
  for applet in $("$busybox" --list | sort); do
    [[ -e "$root/bin/$applet" ]] || ln -s busybox "$root/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$root/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\n' > "$root/etc/group"
  python3 "$here/oci_image.py" --rootfs "$root" --tag "$BUSYBOX_TAG" --out "$out/busybox.tar" \
    --cmd '["sh"]' >&2
  echo "$key" > "$out/busybox.stamp"
  rm -rf "$root"; trap - EXIT
fi
say "images current in $out"
