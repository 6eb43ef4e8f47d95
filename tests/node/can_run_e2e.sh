#!/usr/bin/env bash
# Can this machine run `make e2e`? Exit 0 if so; otherwise exit 1 and print why
# on stdout (.ci/run says it when it skips). The e2e builds a Debian rootfs and
# runs a kubelet with containerd here, so it needs:
#   - root (debootstrap, chroot, mounts, containers, iptables);
#   - cgroups the kubelet can use (v2, or v1 with the cpu and memory controllers);
#   - the Debian mirror of /etc/apt/sources.list* (debootstrap, the node's packages).
# FLYWHEEL_SKIP_E2E=1 skips it on purpose.
set -uo pipefail

if [ "${FLYWHEEL_SKIP_E2E:-}" = 1 ]; then
  echo "FLYWHEEL_SKIP_E2E=1"
  exit 1
fi
if [ "$(id -u)" != 0 ]; then
  echo "not root (uid $(id -u)): debootstrap, mounts and the kubelet need root"
  exit 1
fi
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  for controller in cpu memory pids; do
    grep -qw "$controller" /sys/fs/cgroup/cgroup.controllers || {
      echo "cgroup v2 without the $controller controller (/sys/fs/cgroup/cgroup.controllers)"
      exit 1
    }
  done
else
  for controller in cpu memory; do
    grep -q "^$controller[[:space:]].*[[:space:]]1$" /proc/cgroups || {
      echo "no usable cgroups: neither v2 nor the v1 $controller controller (/proc/cgroups)"
      exit 1
    }
  done
fi
mirror=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null)
[ -z "$mirror" ] && mirror=$(awk '$1=="deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
mirror=${FLYWHEEL_DEBIAN_MIRROR:-${mirror:-http://deb.debian.org/debian}}
if ! curl -fsS --max-time 20 -o /dev/null "$mirror/dists/bookworm/Release" 2>/dev/null; then
  echo "the Debian mirror $mirror does not answer (debootstrap needs it)"
  exit 1
fi
for tool in unshare chroot curl; do
  command -v "$tool" >/dev/null || { echo "$tool is missing"; exit 1; }
done
echo "root, cgroups and $mirror: the e2e can run"
