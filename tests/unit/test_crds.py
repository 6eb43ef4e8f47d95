"""The CRDs on disk are exactly what the models generate, and are structural."""

from __future__ import annotations

from pathlib import Path

from flywheel.api.crd import render_all, write_crds
from flywheel.api.kinds import KINDS

ROOT = Path(__file__).resolve().parents[2]


def test_files_on_disk_match_the_models():
    stale = write_crds([ROOT / "crds", ROOT / "charts" / "flywheel" / "crds"], check=True)
    assert stale == [], "CRDs are out of date; run `make crds` and commit the result"


def test_the_check_notices_a_hand_edit(tmp_path):
    write_crds([tmp_path])
    target = next(tmp_path.glob("*.yaml"))
    target.write_text(target.read_text().replace("Dataset", "DataSet"))
    assert write_crds([tmp_path], check=True) == [target]


def walk(schema, path="spec"):
    yield path, schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


def all_keys(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key != "properties":
                yield key
            yield from all_keys(value)
    elif isinstance(node, list):
        for value in node:
            yield from all_keys(value)


def test_schemas_are_structural_and_explained():
    for crd in render_all().values():
        root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        assert not {"$ref", "$defs", "anyOf", "allOf", "title"} & set(all_keys(root))
        for part in ("spec", "status"):
            for path, node in walk(root["properties"][part], part):
                is_map_value = path.endswith("{}") or path.endswith("[]")
                assert "type" in node or node.get("x-kubernetes-int-or-string"), (
                    f"{path} has no type"
                )
                if not is_map_value and path not in ("spec", "status"):
                    assert node.get("description"), f"{path} has no description (kubectl explain)"


def test_names_and_columns():
    short_names = [s for k in KINDS for s in k.short_names]
    # Built-in short names and KServe's must not be shadowed.
    taken = {"ds", "deploy", "svc", "cj", "isvc", "tm", "ig", "po", "rs", "sts", "pv", "pvc"}
    assert not taken & set(short_names)
    assert len(set(short_names)) == len(short_names)
    for crd in render_all().values():
        names = crd["spec"]["names"]
        version = crd["spec"]["versions"][0]
        assert names["categories"] == ["flywheel"]
        assert version["subresources"] == {"status": {}}
        columns = [c["name"] for c in version["additionalPrinterColumns"]]
        assert {"Phase", "Ready", "Age"} <= set(columns)
