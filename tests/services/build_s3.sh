#!/usr/bin/env bash
# Builds the S3-compatible object store the tests and the demo run (versitygw,
# Apache-2.0, from the Go module pinned in s3/go.mod) into $FLYWHEEL_CACHE/bin
# (default: <repo>/.cache/bin, git-ignored). A stamp file records what was
# built; nothing is rebuilt while the pins hold.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${FLYWHEEL_CACHE:-$repo/.cache}"
bin="$cache/bin"
stamp="$bin/.services-versions"
want="$(cat "$here/s3/go.mod" "$here/s3/go.sum" | sha256sum | cut -d' ' -f1)"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$bin/versitygw" ]]; then
  echo "object store binary is current in $bin"
  exit 0
fi
command -v go >/dev/null || { echo "build_s3.sh: Go is required (https://go.dev/dl/)" >&2; exit 1; }
mkdir -p "$bin"

# The module proxy is reachable but the checksum database may not be: go.sum
# is committed, so every download is still verified against it.
export GOSUMDB="${GOSUMDB:-off}" GOFLAGS="-mod=readonly -trimpath" CGO_ENABLED=0
export GOMAXPROCS="${GOMAXPROCS:-$(nproc)}"

module=github.com/versity/versitygw
cd "$here/s3"
version="$(go list -m -f '{{.Version}}' "$module")"
echo "building versitygw ($version)"
# Its Makefile stamps these; a reproducible build leaves out the date.
ldflags="-s -w -X main.Version=$version -X main.Build=$version -X main.BuildTime=1970-01-01T00:00:00Z"
# Low priority: the machine is small and other work may be building too.
nice -n 10 go build -ldflags "$ldflags" -o "$bin/versitygw.tmp" "$module/cmd/versitygw"
mv "$bin/versitygw.tmp" "$bin/versitygw"

echo "$want" > "$stamp"
# sed reads to the end: head would exit after one line, and versitygw, still
# writing, died of SIGPIPE (exit 141 under pipefail; seen once in CI).
"$bin/versitygw" --version | sed -n 1p
echo "object store binary built in $bin"
