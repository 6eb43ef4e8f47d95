"""The image's smoke test, run by build_image.sh inside the new root filesystem
as UID 65532 with HOME=/tmp: every workload's stack imports and every verb of
`flywheel` answers --help. A missing library or a stripped file a workload needs
fails here, at build time, instead of in a pod."""

import os
import subprocess
import sys

VERBS = ["run", "dataset-snapshot", "train", "serve", "drift-check"]
MODULES = [
    "flywheel.controllers.handlers",
    "flywheel.workloads.snapshot",
    "flywheel.workloads.train",
    "flywheel.workloads.drift",
    "flywheel.serving.server",
    "mlflow.sklearn",
    "sklearn.ensemble",
    "skops.io",
    "evidently",
    "pyarrow.parquet",
    "boto3",
]


def main() -> int:
    if os.getuid() != 65532:
        print(f"smoke: running as uid {os.getuid()}, expected 65532", file=sys.stderr)
        return 1
    for module in MODULES:
        __import__(module)
    print(f"smoke: imported {len(MODULES)} modules")
    for verb in [None, *VERBS]:
        argv = ["flywheel", *([verb] if verb else []), "--help"]
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode:
            print(f"smoke: {' '.join(argv)} exited {done.returncode}:\n{done.stderr}")
            return 1
    version = subprocess.run(["flywheel", "--version"], capture_output=True, text=True)
    print(f"smoke: {version.stdout.strip()}; every verb answers --help")
    return 0


if __name__ == "__main__":
    sys.exit(main())
