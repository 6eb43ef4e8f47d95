#!/usr/bin/env bash
# Builds the local control plane (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, etcd, kwok) from Go modules at the versions pinned in
# versions.env, into $FLYWHEEL_CACHE/bin (default: <repo>/.cache/bin, git-ignored).
# A stamp file records what was built; nothing is rebuilt while the pins hold.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
cache="${FLYWHEEL_CACHE:-$repo/.cache}"
bin="$cache/bin"
stamp="$bin/.versions"
want="$(cat "$here/versions.env" "$here"/*/go.sum | sha256sum | cut -d' ' -f1)"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "control plane binaries are current in $bin"
  exit 0
fi
command -v go >/dev/null || { echo "build.sh: Go is required (https://go.dev/dl/)" >&2; exit 1; }
mkdir -p "$bin"

# shellcheck source=kube_build_env.sh
source "$here/kube_build_env.sh"

build() { # module-dir output package ldflags tags
  echo "building $2 ($3)"
  (cd "$here/$1" && go build -tags "$5" -ldflags "$4" -o "$bin/$2" "$3")
}

build kube kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$kube_ldflags" "selinux,notest"
build kube kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager "$kube_ldflags" "selinux,notest"
build kube kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler "$kube_ldflags" "selinux,notest"
build kube kubectl k8s.io/kubernetes/cmd/kubectl "$kube_ldflags" "selinux,notest"
build etcd etcd go.etcd.io/etcd/server/v3 "-s -w" ""
build kwok kwok sigs.k8s.io/kwok/cmd/kwok "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION}" ""

echo "$want" > "$stamp"
"$bin/kube-apiserver" --version
"$bin/etcd" --version | sed -n 1p  # sed reads to the end: head would SIGPIPE etcd under pipefail
echo "control plane binaries built in $bin"
