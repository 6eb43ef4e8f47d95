#!/usr/bin/env python3
"""Turn a root filesystem directory into an OCI image archive, and import one.

    python tests/node/oci_image.py --rootfs DIR --tag flywheel.local/NAME:TAG --out FILE.tar \\
        [--entrypoint JSON] [--cmd JSON] [--env K=V ...] [--user UID] [--workdir DIR]
    python tests/node/oci_image.py import FILE.tar [--address SOCK] [--snapshotter NAME]

There is no registry and no Docker here: images reach the node's containerd as
archives (`ctr -n k8s.io images import`), and pods name them by tag with
imagePullPolicy: IfNotPresent. The archive is an OCI image layout (oci-layout,
index.json, blobs/sha256/...) with one gzip'd layer holding the whole rootfs.
index.json names the image twice: `io.containerd.image.name` (the full
reference, which containerd's importer uses as the image name) and
`org.opencontainers.image.ref.name` (the tag, as the OCI layout spec wants).

Building is deterministic - entries sorted by name, every mtime 0, numeric
owners, no per-run pax headers, gzip without name/time - so the same rootfs
gives the same digests, and importing it again is skipped. GNU tar makes the
layer (Python's tarfile is several times slower on a 1-2 GB rootfs) and pigz
compresses it when installed.

Only the standard library is used, so it runs with any python3.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
from pathlib import Path

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
EPOCH = "1970-01-01T00:00:00Z"
# The contents of these are the running system's, never the image's: runc mounts
# fresh ones. A rootfs built in a chroot may still have proc or dev mounted.
SKIP_CONTENTS = ("proc", "sys", "dev")
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CHUNK = 1 << 20


class ImageError(RuntimeError):
    pass


def _arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


# ------------------------------------------------------------------ the layer


def _tar_command(rootfs: Path) -> list[str]:
    tar = shutil.which("tar")
    if not tar:
        raise ImageError("GNU tar is required to build the layer (apt-get install tar)")
    # Top-level entries named without "./", as image layers name their files.
    entries = sorted(p.name for p in rootfs.iterdir())
    # Anchored: tar's default would also drop e.g. usr/include/.../sys/*.
    excludes = ["--anchored", *(f"--exclude={d}/*" for d in SKIP_CONTENTS)]
    return [
        tar, "--create", "--file=-", f"--directory={rootfs}",
        "--sort=name", "--mtime=@0", "--numeric-owner",
        # posix format keeps long names and file capabilities (security.capability);
        # dropping atime/ctime and the pid from pax header names keeps it reproducible.
        "--format=posix", "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
        "--xattrs", "--xattrs-include=security.capability",
        *excludes, "--", *entries,
    ]  # fmt: skip


def _gzip_command() -> list[str]:
    # -n: no file name or time in the gzip header. pigz's output does not depend
    # on its thread count, so it is as reproducible as gzip's.
    for tool in ("pigz", "gzip"):
        path = shutil.which(tool)
        if path:
            return [path, "-n", "-6", "-c"]
    raise ImageError("gzip or pigz is required to compress the layer")


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def build_layer(rootfs: Path, out: Path) -> str:
    """Write the gzip'd tar of `rootfs` to `out`; return the uncompressed tar's
    sha256 (the config's diff_id, which containerd checks on unpack)."""
    if not rootfs.is_dir():
        raise ImageError(f"--rootfs {rootfs}: not a directory")
    with out.open("wb") as gz_out:
        tar = subprocess.Popen(_tar_command(rootfs), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        gz = subprocess.Popen(_gzip_command(), stdin=subprocess.PIPE, stdout=gz_out)
        errors: list[bytes] = []
        # Read tar's stderr aside, so a chatty tar never blocks on a full pipe.
        reader = threading.Thread(target=lambda: errors.append(tar.stderr.read()))
        reader.start()
        diff_id = hashlib.sha256()
        while chunk := tar.stdout.read(CHUNK):
            diff_id.update(chunk)
            gz.stdin.write(chunk)
        gz.stdin.close()
        tar_rc, gz_rc = tar.wait(), gz.wait()
        reader.join()
    if tar_rc != 0:
        raise ImageError(f"tar of {rootfs} failed ({tar_rc}): {errors[0].decode(errors='replace')}")
    if gz_rc != 0:
        raise ImageError(f"compressing the layer failed ({gz_rc})")
    return diff_id.hexdigest()


# --------------------------------------------------------------- the archive


def _descriptor(media_type: str, digest: str, size: int, **extra) -> dict:
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": size, **extra}


def _json_bytes(obj: dict) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def split_tag(ref: str) -> tuple[str, str]:
    """'flywheel.local/name:1' -> ('flywheel.local/name', '1'); a tag is required."""
    repo, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag or not repo:
        raise ImageError(f"--tag {ref!r}: want REPOSITORY:TAG, e.g. flywheel.local/busybox:1")
    return repo, tag


def image_config(
    diff_id: str,
    entrypoint: list[str] | None = None,
    cmd: list[str] | None = None,
    env: list[str] | None = None,
    user: str = "",
    workdir: str = "",
) -> dict:
    env = list(env or [])
    if not any(e.startswith("PATH=") for e in env):
        env.insert(0, DEFAULT_PATH)  # runc looks commands up in the image's PATH
    config: dict = {"Env": env}
    if entrypoint is not None:
        config["Entrypoint"] = entrypoint
    if cmd is not None:
        config["Cmd"] = cmd
    if user:
        config["User"] = user
    if workdir:
        config["WorkingDir"] = workdir
    return {
        "created": EPOCH,
        "architecture": _arch(),
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        "history": [{"created": EPOCH, "created_by": "tests/node/oci_image.py"}],
    }


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    _add_stream(archive, name, io.BytesIO(data), len(data))


def _add_stream(archive: tarfile.TarFile, name: str, stream, size: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    archive.addfile(info, stream)


def build_image(
    rootfs: Path,
    tag: str,
    out: Path,
    entrypoint: list[str] | None = None,
    cmd: list[str] | None = None,
    env: list[str] | None = None,
    user: str = "",
    workdir: str = "",
) -> str:
    """Write the OCI archive of `rootfs` named `tag` to `out`; return the
    manifest digest ("sha256:..."), which is what containerd lists."""
    _, short_tag = split_tag(tag)
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".oci-") as tmp:
        layer_path = Path(tmp) / "layer.tar.gz"
        diff_id = build_layer(Path(rootfs), layer_path)
        layer_digest, layer_size = _sha256_file(layer_path), layer_path.stat().st_size
        config = _json_bytes(image_config(diff_id, entrypoint, cmd, env, user, workdir))
        config_digest = hashlib.sha256(config).hexdigest()
        manifest = _json_bytes({
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": _descriptor(MEDIA_CONFIG, config_digest, len(config)),
            "layers": [_descriptor(MEDIA_LAYER, layer_digest, layer_size)],
        })  # fmt: skip
        manifest_digest = hashlib.sha256(manifest).hexdigest()
        annotations = {
            "io.containerd.image.name": tag,
            "org.opencontainers.image.ref.name": short_tag,
        }
        platform_ = {"architecture": _arch(), "os": "linux"}
        index = _json_bytes({
            "schemaVersion": 2,
            "mediaType": MEDIA_INDEX,
            "manifests": [_descriptor(MEDIA_MANIFEST, manifest_digest, len(manifest),
                                      annotations=annotations, platform=platform_)],
        })  # fmt: skip
        partial = Path(tmp) / "image.tar"
        # The outer archive is plain tar: its big member is already compressed.
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as archive:
            _add_bytes(archive, "oci-layout", _json_bytes({"imageLayoutVersion": "1.0.0"}))
            _add_bytes(archive, "index.json", index)
            _add_bytes(archive, f"blobs/sha256/{config_digest}", config)
            _add_bytes(archive, f"blobs/sha256/{manifest_digest}", manifest)
            with layer_path.open("rb") as layer:
                _add_stream(archive, f"blobs/sha256/{layer_digest}", layer, layer_size)
        partial.replace(out)  # never leave a half-written archive under the final name
    return f"sha256:{manifest_digest}"


def read_index(archive: Path) -> tuple[str, str]:
    """(image name, manifest digest) recorded in an archive this tool wrote."""
    try:
        with tarfile.open(archive) as tar:
            member = tar.extractfile("index.json")
            index = json.load(member)
    except (OSError, KeyError, tarfile.TarError, ValueError) as err:
        raise ImageError(f"{archive}: not an OCI image archive ({err})") from err
    desc = index["manifests"][0]
    name = desc.get("annotations", {}).get("io.containerd.image.name")
    if not name:
        raise ImageError(f"{archive}: index.json has no io.containerd.image.name annotation")
    return name, desc["digest"]


# ---------------------------------------------------------------- importing


def _ctr(address: str, namespace: str, *args: str, timeout: float = 900) -> str:
    ctr = shutil.which("ctr")
    if not ctr:
        raise ImageError("ctr (Debian package containerd) is required to import images")
    cmd = [ctr, f"--address={address}", f"--namespace={namespace}", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise ImageError(f"{' '.join(cmd)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def present_images(address: str, namespace: str = "k8s.io") -> dict[str, str]:
    """{image name: manifest digest} of what containerd has in `namespace`."""
    images = {}
    for line in _ctr(address, namespace, "images", "list").splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3:
            images[fields[0]] = fields[2]
    return images


def import_image(
    archive: Path,
    address: str,
    namespace: str = "k8s.io",
    snapshotter: str = "",
    also_tag: tuple[str, ...] = (),
) -> bool:
    """Import `archive` into containerd (unpacked for `snapshotter`, so the CRI
    can run it at once); False when that image and digest are already there.
    `also_tag` gives the same image more names (e.g. an older pause tag)."""
    name, digest = read_index(Path(archive))
    present = present_images(address, namespace)
    wanted = (name, *also_tag)
    if all(present.get(n) == digest for n in wanted):
        return False
    if present.get(name) != digest:
        args = ["images", "import"]
        if snapshotter:
            args.append(f"--snapshotter={snapshotter}")
        _ctr(address, namespace, *args, str(archive))
    for extra in also_tag:
        if present.get(extra) != digest:
            _ctr(address, namespace, "images", "tag", "--force", name, extra)
    return True


# ---------------------------------------------------------------------- CLI


def _json_list(text: str) -> list[str]:
    value = json.loads(text)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise argparse.ArgumentTypeError(f"want a JSON list of strings, got {text!r}")
    return value


def main(argv: list[str]) -> int:
    if argv[:1] == ["import"]:
        parser = argparse.ArgumentParser(prog="oci_image.py import")
        parser.add_argument("archive", type=Path)
        parser.add_argument("--address", default="/run/containerd/containerd.sock")
        parser.add_argument("--namespace", default="k8s.io")
        parser.add_argument("--snapshotter", default="")
        args = parser.parse_args(argv[1:])
        try:
            done = import_image(args.archive, args.address, args.namespace, args.snapshotter)
        except (ImageError, subprocess.TimeoutExpired) as err:
            print(f"oci_image: {err}", file=sys.stderr)
            return 1
        name, digest = read_index(args.archive)
        print(f"{'imported' if done else 'already present'}: {name} {digest}")
        return 0

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rootfs", type=Path, required=True)
    parser.add_argument("--tag", required=True, help="REPOSITORY:TAG, e.g. flywheel.local/app:1")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--entrypoint", type=_json_list, help='JSON list, e.g. ["/bin/sh"]')
    parser.add_argument("--cmd", type=_json_list, help='JSON list, e.g. ["-c", "true"]')
    parser.add_argument("--env", action="append", default=[], metavar="K=V")
    parser.add_argument("--user", default="")
    parser.add_argument("--workdir", default="")
    args = parser.parse_args(argv)
    for pair in args.env:
        if "=" not in pair:
            parser.error(f"--env {pair!r}: want KEY=VALUE")
    try:
        digest = build_image(
            args.rootfs, args.tag, args.out, args.entrypoint, args.cmd, args.env,
            args.user, args.workdir,
        )  # fmt: skip
    except ImageError as err:
        print(f"oci_image: {err}", file=sys.stderr)
        return 1
    size = os.path.getsize(args.out)
    print(f"{args.out}: {args.tag} {digest} ({size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
