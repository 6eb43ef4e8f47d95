#!/usr/bin/env bash
# The flywheel image without Docker or a registry, for the single-node cluster.
#
#   bash tests/node/build_image.sh          # prints the image reference on stdout
#
# It mirrors operator/Dockerfile: Debian bookworm's Python 3.11, the project in
# a venv at /opt/flywheel installed with pyproject.toml's exact pins, user
# 65532, HOME=/tmp (the pods' root filesystem is read-only; /tmp is an emptyDir),
# no pip cache; unlike the Dockerfile it ships byte code (see compile_pyc).
# Three cached stages under .cache/node/image/, each rebuilt only when its
# inputs change (like the Dockerfile's layers):
#
#   base/    debootstrap --variant=minbase bookworm + python3 python3-venv ca-certificates
#   deps/    base + the venv with the pinned dependencies, user 65532, stripped of
#            caches and bundled test suites, byte-compiled   (key: pyproject.toml)
#   rootfs/  deps + the package itself (hard links)          (key: operator/ source)
#
# then tests/node/oci_image.py (the node's tool) turns rootfs/ into an OCI
# archive flywheel-<key>.tar tagged flywheel.local/flywheel:<key>. A rerun with
# nothing changed only prints the reference. Needs root (debootstrap, chroot).
# Knobs: FLYWHEEL_DEBIAN_MIRROR, FLYWHEEL_CACHE, FLYWHEEL_IMAGE_TAG (default: the key).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$REPO/tests/node
CACHE=${FLYWHEEL_CACHE:-$REPO/.cache}
WORK=$CACHE/node/image
SUITE=bookworm
PACKAGES=python3,python3-venv,ca-certificates
VENV=/opt/flywheel
UID_GID=65532
REPOSITORY=flywheel.local/flywheel
PYTHON=${PYTHON:-python3}
CHROOT=$(command -v chroot) # absolute: `env -i PATH=<the image's>` would not find it

say() { echo "build_image: $*" >&2; }
die() { say "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap and chroot); run it as root"
# Installed here, not only by build_node.sh: e2e.py runs this script in the
# background while the node is built, so on a fresh machine it got here before
# build_node.sh had installed debootstrap, and the first `make e2e` failed.
if ! command -v debootstrap >/dev/null; then
  command -v apt-get >/dev/null || die "debootstrap is missing and there is no apt-get to install it"
  say "installing debootstrap"
  # build_node.sh may be running apt-get at the same moment: take turns.
  export DEBIAN_FRONTEND=noninteractive
  flock -w 900 /tmp/flywheel-apt.lock apt-get update -qq
  flock -w 900 /tmp/flywheel-apt.lock \
    apt-get install -y -qq --no-install-recommends debootstrap >/dev/null \
    || die "could not install debootstrap (apt-get install debootstrap)"
fi

# Mounts made here live in a private mount namespace: if this script is killed,
# nothing stays mounted on the host, and no `rm -rf` below can reach through a
# bind mount into the host's /dev. The trap in with_mounts unmounts in order anyway.
if [ -z "${FLYWHEEL_IMAGE_NS:-}" ]; then
  FLYWHEEL_IMAGE_NS=1 exec unshare --mount --propagation private bash "$0" "$@"
fi

mirror() {
  # The machine's own Debian mirror (deb822 or one-line sources), else Debian's.
  [ -n "${FLYWHEEL_DEBIAN_MIRROR:-}" ] && { echo "$FLYWHEEL_DEBIAN_MIRROR"; return; }
  local found
  found=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -z "$found" ] && found=$(awk '$1=="deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  echo "${found:-http://deb.debian.org/debian}"
}

# --------------------------------------------------------------- stage keys
hash_files() { (cd "$REPO" && sha256sum "$@" | sha256sum | cut -c1-16); }
BASE_KEY=$(echo "$SUITE $PACKAGES v1" | sha256sum | cut -c1-16)
# The recipe version changes when the deps stage below does. Not README.md: that
# stage installs with a stub of it, and the last stage with the real one.
DEPS_KEY=$(echo "$BASE_KEY deps-v2 $(hash_files pyproject.toml)" | sha256sum | cut -c1-16)
SOURCES=$(cd "$REPO" && git ls-files -co --exclude-standard operator/flywheel \
  tests/node/build_image.sh tests/node/image | grep -v -e '__pycache__' -e '\.pyc$' | sort)
# shellcheck disable=SC2086
FINAL_KEY=$(echo "$DEPS_KEY $(hash_files $SOURCES)" | sha256sum | cut -c1-12)
TAG=${FLYWHEEL_IMAGE_TAG:-$FINAL_KEY}
REF=$REPOSITORY:$TAG
ARCHIVE=$WORK/flywheel-$TAG.tar

fresh() { [ -f "$WORK/$1.stamp" ] && [ "$(cat "$WORK/$1.stamp")" = "$2" ] && [ -d "$WORK/$1" ]; }

# ------------------------------------------------------------ mount helpers
assert_unmounted() {
  # Refuse to delete a tree that still has something mounted inside it.
  local dir
  dir=$(realpath -m "$1")
  if awk -v d="$dir" '$2 == d || index($2, d "/") == 1 {found=1} END {exit !found}' /proc/self/mounts; then
    die "$dir still has mounts inside; not deleting it (see /proc/self/mounts)"
  fi
}

remove_tree() { [ -e "$1" ] || return 0; assert_unmounted "$1"; rm -rf "$1"; }

MOUNTED=()
unmount_all() {
  local i
  for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do
    umount "${MOUNTED[i]}" 2>/dev/null || umount -l "${MOUNTED[i]}" 2>/dev/null || true
  done
  MOUNTED=()
}
# Steps log to $STEP_LOG; a failing one ends the script (set -e) with its log's tail.
STEP_LOG=
on_exit() {
  local status=$?
  unmount_all
  if [ "$status" != 0 ] && [ -n "$STEP_LOG" ]; then
    say "failed (exit $status); the last lines of $STEP_LOG:"
    tail -n 20 "$STEP_LOG" >&2
  fi
}
trap on_exit EXIT
trap 'exit 130' INT TERM

mount_into() { # mount_into ROOT TARGET-IN-ROOT mount-args...
  local target=$1$2
  shift 2
  [ -e "$target" ] || mkdir -p "$target"
  mount "$@" "$target"
  MOUNTED+=("$target")
}

with_mounts() { # with_mounts ROOT: what chroot'ed pip and python need (in a subshell)
  local root=$1 node
  trap unmount_all EXIT # a subshell's own: EXIT traps are not inherited
  mount_into "$root" /proc -t proc proc
  # A fresh /dev with only the usual nodes: never the host's /dev.
  mount_into "$root" /dev -t tmpfs -o mode=755,nosuid tmpfs
  for node in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
    IFS=: read -r name major minor <<<"$node"
    mknod -m 666 "$root/dev/$name" c "$major" "$minor"
  done
  mount_into "$root" /dev/shm -t tmpfs -o mode=1777,nosuid,nodev tmpfs
  # Build-time only: the host's DNS and CA bundle (this machine's egress proxy
  # signs with its own CA), the host's pip cache and our wheelhouse.
  # Created only when missing: touching a hard-linked file would change deps/ too.
  [ -e "$root/etc/resolv.conf" ] || touch "$root/etc/resolv.conf"
  [ -e "$root/tmp/host-ca.crt" ] || touch "$root/tmp/host-ca.crt"
  mount_into "$root" /etc/resolv.conf --bind -o ro /etc/resolv.conf
  mount_into "$root" /tmp/host-ca.crt --bind -o ro "${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}"
  mkdir -p "$PIP_CACHE" "$WHEELS"
  mount_into "$root" /root/.cache/pip --bind "$PIP_CACHE"
  mount_into "$root" /wheels --bind "$WHEELS"
}

in_root() { # in_root ROOT command...: a clean environment, nothing of the host's
  local root=$1
  shift
  env -i PATH=$VENV/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    PIP_CERT=/tmp/host-ca.crt PIP_CACHE_DIR=/root/.cache/pip PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_DEFAULT_TIMEOUT=180 PIP_PROGRESS_BAR=off PYTHONDONTWRITEBYTECODE=1 \
    "$CHROOT" "$root" "$@"
}

# Every wheel the venv was made of, kept across builds. pip's HTTP cache alone is
# not enough: behind a proxy that drops PyPI's cache headers it stays empty, and
# `pip download` into a directory reuses the files already there.
WHEELS=$WORK/wheels
PIP_CACHE=$(
  pip_cache=$($PYTHON -m pip cache dir 2>/dev/null || true)
  echo "${pip_cache:-$HOME/.cache/pip}"
)

copy_stage() { # copy_stage FROM TO: a fresh copy of an earlier stage
  remove_tree "$2"
  cp -a --reflink=auto "$1" "$2"
}

source_copy() { # source_copy ROOT files...: the project's files at ROOT/tmp/src
  remove_tree "$1/tmp/src"
  mkdir -p "$1/tmp/src"
  (cd "$REPO" && cp --parents -a "${@:2}" "$1/tmp/src/")
}

mkdir -p "$WORK"
exec 9>"$WORK/.lock"
flock -n 9 || { say "another build holds $WORK/.lock; waiting"; flock 9; }

if fresh rootfs "$FINAL_KEY" && { [ -s "$ARCHIVE" ] || [ ! -f "$HERE/oci_image.py" ]; }; then
  say "up to date: $REF ($WORK/rootfs)"
  echo "$REF"
  exit 0
fi
BEGIN=$SECONDS

# ---------------------------------------------------------------- 1. base
if ! fresh base "$BASE_KEY"; then
  started=$SECONDS
  MIRROR=$(mirror)
  say "debootstrap $SUITE (minbase + $PACKAGES) from $MIRROR ..."
  remove_tree "$WORK/base.tmp"
  STEP_LOG=$WORK/debootstrap.log
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$WORK/base.tmp" "$MIRROR" \
    >"$STEP_LOG" 2>&1
  STEP_LOG=
  # apt's package lists and downloaded .debs, docs and manuals: not needed to run.
  rm -rf "$WORK/base.tmp"/var/lib/apt/lists/* "$WORK/base.tmp"/var/cache/apt/*.bin \
    "$WORK/base.tmp"/var/cache/apt/archives/*.deb "$WORK/base.tmp"/usr/share/{doc,man,info}/* \
    "$WORK/base.tmp"/var/log/*.log
  remove_tree "$WORK/base"
  mv "$WORK/base.tmp" "$WORK/base"
  echo "$BASE_KEY" >"$WORK/base.stamp"
  say "base in $((SECONDS - started))s ($(du -sh "$WORK/base" | cut -f1))"
fi

# ---------------------------------------------------------------- 2. deps
# Byte code, compiled once here: the pods' root filesystem is read-only, so a
# Python without it compiles every module it imports at each start (measured:
# 21 s of CPU to import the serving and drift stack, 10 s with it; every model
# server, drift check and training pays that). unchecked-hash, because the
# image's layer gives every file mtime 0, which timestamp-checked .pyc files
# would never match.
compile_pyc() { # compile_pyc ROOT DIR...: no error stops it; the smoke test imports for real
  in_root "$1" $VENV/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash \
    "${@:2}" >/dev/null || say "compileall skipped files it could not compile (see above)"
}

if ! fresh deps "$DEPS_KEY"; then
  started=$SECONDS
  say "venv $VENV with the pinned dependencies, byte-compiled ..."
  rm -f "$WORK/deps.stamp" "$WORK/rootfs.stamp"
  copy_stage "$WORK/base" "$WORK/deps.tmp"
  # As the Dockerfile: metadata and the package's __init__ only, so that a
  # source change does not reinstall the whole stack.
  source_copy "$WORK/deps.tmp" pyproject.toml README.md operator/flywheel/__init__.py
  echo "flywheel-operator: the dependencies' stage" >"$WORK/deps.tmp/tmp/src/README.md"
  STEP_LOG=$WORK/deps.log
  (
    with_mounts "$WORK/deps.tmp"
    in_root "$WORK/deps.tmp" /usr/bin/python3 -m venv $VENV
    # pip, and what pyproject's build-system needs to build the package offline.
    in_root "$WORK/deps.tmp" pip download --dest /wheels 'pip>=25' 'setuptools>=77' wheel
    in_root "$WORK/deps.tmp" pip install --no-index --find-links /wheels --upgrade 'pip>=25'
    # Resolve against PyPI with the exact pins, download only what /wheels lacks,
    # then install from /wheels alone: what was resolved is what gets installed.
    in_root "$WORK/deps.tmp" pip download --dest /wheels /tmp/src
    in_root "$WORK/deps.tmp" pip install --no-index --find-links /wheels --no-compile /tmp/src
    # The Dockerfile's user: the UID/GID the chart's and the builders' securityContexts use.
    in_root "$WORK/deps.tmp" groupadd --system --gid $UID_GID flywheel
    in_root "$WORK/deps.tmp" useradd --system --uid $UID_GID --gid $UID_GID --home-dir /tmp \
      --shell /usr/sbin/nologin flywheel
    unmount_all
    bash "$HERE/image/strip.sh" "$WORK/deps.tmp" "$VENV"
    with_mounts "$WORK/deps.tmp"
    compile_pyc "$WORK/deps.tmp" /usr/lib/python3.11 "$VENV/lib"
    unmount_all
  ) >"$STEP_LOG" 2>&1
  STEP_LOG=
  remove_tree "$WORK/deps.tmp/tmp/src"
  remove_tree "$WORK/deps"
  mv "$WORK/deps.tmp" "$WORK/deps"
  echo "$DEPS_KEY" >"$WORK/deps.stamp"
  say "dependencies in $((SECONDS - started))s ($(du -sh "$WORK/deps" | cut -f1))"
fi

# -------------------------------------------------------------- 3. rootfs
started=$SECONDS
say "the flywheel package on top ..."
rm -f "$WORK/rootfs.stamp"
# Hard links, not a copy of 1 GB: the steps below only add files, replace them
# (pip, compileall: write and rename) or unlink them, never write one in place,
# so deps/ stays as it was. The check after them makes sure of it.
remove_tree "$WORK/rootfs.tmp"
cp -al "$WORK/deps" "$WORK/rootfs.tmp"
source_copy "$WORK/rootfs.tmp" pyproject.toml README.md operator
ROOT=$WORK/rootfs.tmp
STEP_LOG=$WORK/rootfs.log
(
  with_mounts "$ROOT"
  in_root "$ROOT" pip install --no-deps --force-reinstall --no-compile /tmp/src
  site=$(cd "$ROOT" && echo ${VENV#/}/lib/python3*/site-packages)
  compile_pyc "$ROOT" "/$site/flywheel"
  unmount_all
) >"$STEP_LOG" 2>&1
# The image must work as the pods run it: UID 65532, HOME=/tmp, nothing else
# writable. The smoke test imports every workload's stack and asks each verb for --help.
STEP_LOG=$WORK/smoke.log
(
  with_mounts "$ROOT"
  cp "$HERE/image/smoke.py" "$ROOT/tmp/smoke.py"
  env -i PATH=$VENV/bin:/usr/bin:/bin HOME=/tmp LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 \
    MLFLOW_DISABLE_TELEMETRY=true "$CHROOT" --userspec=$UID_GID:$UID_GID "$ROOT" \
    $VENV/bin/python /tmp/smoke.py
  unmount_all
) >"$STEP_LOG" 2>&1
STEP_LOG=
# What a runtime provides itself (mounts over /dev, /proc, /tmp; its own resolv.conf).
assert_unmounted "$ROOT"
rm -rf "${ROOT:?}"/dev/* "${ROOT:?}"/tmp/* "${ROOT:?}"/root/.cache "${ROOT:?}"/etc/resolv.conf
touch "$ROOT/etc/resolv.conf"
if [ -n "$(find "$WORK/deps" -type f -newer "$WORK/deps.stamp" -print -quit)" ]; then
  rm -f "$WORK/deps.stamp"
  die "a file of deps/ changed through a hard link: the next build remakes it"
fi
remove_tree "$WORK/rootfs"
mv "$ROOT" "$WORK/rootfs"
echo "$FINAL_KEY" >"$WORK/rootfs.stamp"
say "rootfs in $((SECONDS - started))s ($(du -sh "$WORK/rootfs" | cut -f1))"

# ---------------------------------------------------------------- 4. archive
if [ -f "$HERE/oci_image.py" ]; then
  started=$SECONDS
  find "$WORK" -maxdepth 1 -name 'flywheel-*.tar' ! -name "$(basename "$ARCHIVE")" -delete
  # The Dockerfile's ENV, USER, WORKDIR and CMD.
  $PYTHON "$HERE/oci_image.py" --rootfs "$WORK/rootfs" --tag "$REF" --out "$ARCHIVE.tmp" \
    --entrypoint '[]' --cmd '["flywheel", "run"]' --user "$UID_GID:$UID_GID" --workdir /tmp \
    --env "PATH=$VENV/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --env PYTHONDONTWRITEBYTECODE=1 --env PYTHONUNBUFFERED=1 --env HOME=/tmp \
    --env MLFLOW_DISABLE_TELEMETRY=true >&2
  mv "$ARCHIVE.tmp" "$ARCHIVE"
  say "archive $ARCHIVE in $((SECONDS - started))s ($(du -h "$ARCHIVE" | cut -f1))"
else
  say "tests/node/oci_image.py is not there yet: rootfs only, no archive"
fi
say "built $REF in $((SECONDS - BEGIN))s"
echo "$REF"
