#!/usr/bin/env bash
# Builds helm from its Go module (pinned in tests/cluster/helm/go.mod) into
# $FLYWHEEL_CACHE/bin/helm, for the chart's tests. A stamp of go.sum keeps it
# from rebuilding while the pin holds. Like build.sh: GOSUMDB off, verified
# against the committed go.sum.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${FLYWHEEL_CACHE:-$repo/.cache}"
bin="$cache/bin"
stamp="$bin/.helm-version"
want="$(sha256sum "$here/helm/go.sum" "$here/helm/go.mod" | sha256sum | cut -d' ' -f1)"
if [[ -x "$bin/helm" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "helm is current in $bin"
  exit 0
fi
command -v go >/dev/null || { echo "build_helm.sh: Go is required (https://go.dev/dl/)" >&2; exit 1; }
mkdir -p "$bin"
export GOSUMDB="${GOSUMDB:-off}" GOFLAGS="-mod=readonly -trimpath" CGO_ENABLED=0
version="$(sed -n 's/^require helm.sh\/helm\/v3 \(v[^ ]*\)$/\1/p; s/^\thelm.sh\/helm\/v3 \(v[^ ]*\)$/\1/p' "$here/helm/go.mod" | sed -n 1p)"
echo "building helm $version"
(cd "$here/helm" && go build -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$version" -o "$bin/helm" helm.sh/helm/v3/cmd/helm)
echo "$want" > "$stamp"
"$bin/helm" version --short
