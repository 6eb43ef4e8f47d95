#!/usr/bin/env bash
# runc_check.sh [ROOTFS] [COMMAND...]: run the built rootfs as the pods run it,
# without a node: runc, UID/GID 65532, read-only root filesystem, an empty
# writable /tmp (the pods' emptyDir), no capabilities, the image's environment.
#   bash tests/node/image/runc_check.sh                       # flywheel serve --help
#   bash tests/node/image/runc_check.sh "" python -c 'import mlflow'
# Needs root and runc. The bundle lives in .cache/node/image/runc-check/.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../../.." && pwd)
WORK=${FLYWHEEL_CACHE:-$REPO/.cache}/node/image
ROOTFS=$(realpath "${1:-$WORK/rootfs}")
shift || true
[ $# -gt 0 ] || set -- flywheel serve --help
[ -d "$ROOTFS/opt/flywheel" ] || { echo "runc_check: no image rootfs at $ROOTFS; run tests/node/build_image.sh" >&2; exit 1; }
command -v runc >/dev/null || { echo "runc_check: runc is missing: apt-get install runc" >&2; exit 1; }

bundle=$WORK/runc-check
rm -rf "$bundle" && mkdir -p "$bundle"
(cd "$bundle" && runc spec)
# The same settings the operator's builders give every workload container.
python3 - "$bundle/config.json" "$ROOTFS" "$@" <<'EOF'
import json, sys
path, rootfs, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
spec = json.load(open(path))
spec["root"] = {"path": rootfs, "readonly": True}
process = spec["process"]
process.update(terminal=False, args=argv, cwd="/tmp", noNewPrivileges=True)
process["user"] = {"uid": 65532, "gid": 65532}
process["env"] = [
    "PATH=/opt/flywheel/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME=/tmp", "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1",
    "MLFLOW_DISABLE_TELEMETRY=true",
]
process["capabilities"] = {k: [] for k in ("bounding", "effective", "permitted", "ambient")}
spec["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                       "options": ["nosuid", "nodev", "mode=1777", "size=512m"]})
spec["hostname"] = "runc-check"
json.dump(spec, open(path, "w"), indent=2)
EOF
id=flywheel-check-$$
trap 'runc delete --force "$id" >/dev/null 2>&1 || true' EXIT
runc run --bundle "$bundle" "$id"
