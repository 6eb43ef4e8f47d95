"""tests/node/oci_image.py makes archives containerd can import, reproducibly.

Runs in `make test` (no root, no node): GNU tar and gzip are all it needs. The
import into a real containerd is proven by tests/node/test_node.py.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import sys
import tarfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import oci_image  # noqa: E402


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    for d in ("bin", "etc", "proc/self", "dev", "usr/include/sys"):
        (root / d).mkdir(parents=True)
    (root / "bin" / "tool").write_bytes(b"#!/bin/sh\necho hi\n")
    (root / "bin" / "tool").chmod(0o755)
    (root / "bin" / "alias").symlink_to("tool")
    (root / "etc" / "motd").write_text("hello\n")
    (root / "proc" / "self" / "junk").write_text("from a chroot's mounted /proc\n")
    (root / "dev" / "null-ish").write_text("")
    (root / "usr" / "include" / "sys" / "types.h").write_text("/* kept */\n")
    os.utime(root / "etc" / "motd", (1_700_000_000, 1_700_000_000))
    return root


def members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_an_archive_names_its_image_and_describes_its_layer(rootfs, tmp_path):
    out = tmp_path / "img.tar"
    digest = oci_image.build_image(
        rootfs, "flywheel.local/tool:1", out, entrypoint=["/bin/tool"], cmd=["x"],
        env=["A=b"], user="65532", workdir="/tmp",
    )  # fmt: skip
    files = members(out)
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    (desc,) = json.loads(files["index.json"])["manifests"]
    assert desc["digest"] == digest
    assert desc["annotations"] == {
        "io.containerd.image.name": "flywheel.local/tool:1",
        "org.opencontainers.image.ref.name": "1",
    }
    # Every blob is named by its sha256.
    for name, data in files.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    manifest = json.loads(files[f"blobs/sha256/{digest.split(':')[1]}"])
    config = json.loads(files[f"blobs/sha256/{manifest['config']['digest'].split(':')[1]}"])
    assert config["config"] == {
        "Entrypoint": ["/bin/tool"], "Cmd": ["x"], "User": "65532", "WorkingDir": "/tmp",
        "Env": [oci_image.DEFAULT_PATH, "A=b"],
    }  # fmt: skip
    layer_gz = files[f"blobs/sha256/{manifest['layers'][0]['digest'].split(':')[1]}"]
    layer = gzip.decompress(layer_gz)
    # containerd checks the uncompressed layer against the config's diff_id.
    assert config["rootfs"]["diff_ids"] == [f"sha256:{hashlib.sha256(layer).hexdigest()}"]
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        entries = {m.name: m for m in tar.getmembers()}
    assert entries["bin/alias"].issym() and entries["bin/alias"].linkname == "tool"
    assert entries["bin/tool"].mode & 0o777 == 0o755
    assert {m.mtime for m in entries.values()} == {0}
    # The contents of proc/ and dev/ are the running system's, never the image's;
    # the exclusion is anchored, so a sys/ deeper down stays.
    assert "proc" in entries and "proc/self/junk" not in entries
    assert "dev/null-ish" not in entries
    assert "usr/include/sys/types.h" in entries


def test_the_same_rootfs_gives_the_same_bytes(rootfs, tmp_path):
    first = oci_image.build_image(rootfs, "flywheel.local/tool:1", tmp_path / "a.tar")
    os.utime(rootfs / "etc" / "motd")  # a touch changes no content
    second = oci_image.build_image(rootfs, "flywheel.local/tool:1", tmp_path / "b.tar")
    assert first == second
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    assert oci_image.read_index(tmp_path / "a.tar") == ("flywheel.local/tool:1", first)


def test_bad_input_is_refused_naming_it(tmp_path):
    with pytest.raises(oci_image.ImageError, match="REPOSITORY:TAG"):
        oci_image.build_image(tmp_path, "no-tag", tmp_path / "x.tar")
    with pytest.raises(oci_image.ImageError, match="not a directory"):
        oci_image.build_image(tmp_path / "missing", "a/b:1", tmp_path / "x.tar")
    assert not (tmp_path / "x.tar").exists()
