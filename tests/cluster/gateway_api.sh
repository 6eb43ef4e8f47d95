#!/usr/bin/env bash
# Fetches the Gateway API's standard CRDs (HTTPRoute, Gateway, ...) from the
# Go module sigs.k8s.io/gateway-api at a pinned release into
# $FLYWHEEL_CACHE/gateway-api-<version>/ and prints that directory. The tests
# install them to prove `spec.traffic.router: gateway-api` against the real
# CRDs' validation. The module's h1 hash is pinned: the checksum database may
# be unreachable, so this is how the download is verified.
set -euo pipefail

version=v1.3.0
sum="h1:q6okN+/UKDATola4JY7zXzx40WO4VISk7i9DIfOvr9M="

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${FLYWHEEL_CACHE:-$here/../../.cache}"
out="$cache/gateway-api-$version"
if [[ -f "$out/.complete" ]]; then
  echo "$out"
  exit 0
fi
command -v go >/dev/null || { echo "gateway_api.sh: Go is required" >&2; exit 1; }
info="$(cd "$(mktemp -d)" && GOSUMDB=off GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/gateway-api@$version")"
got="$(sed -n 's/.*"Sum": "\(.*\)".*/\1/p' <<<"$info")"
dir="$(sed -n 's/.*"Dir": "\(.*\)".*/\1/p' <<<"$info")"
if [[ "$got" != "$sum" ]]; then
  echo "gateway_api.sh: sigs.k8s.io/gateway-api@$version has hash $got, expected $sum" >&2
  exit 1
fi
mkdir -p "$out"
cp "$dir"/config/crd/standard/gateway.networking.k8s.io_*.yaml "$out/"
touch "$out/.complete"
echo "$out"
