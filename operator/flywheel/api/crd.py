"""CustomResourceDefinitions rendered from the pydantic models.

pydantic writes JSON Schema (draft 2020-12); Kubernetes wants a *structural*
OpenAPI v3.0 schema: no $ref, no `null` types, boolean exclusive bounds, and
its own `x-kubernetes-*` extensions. `render_crd` does that translation, so the
models stay the single source of truth for the operator and for admission.
"""

from __future__ import annotations

from typing import Any

from .common import GROUP, VERSION
from .kinds import KINDS, Kind

# Keys of JSON Schema that Kubernetes' structural schema accepts as they are.
_KEPT = {
    "type",
    "format",
    "description",
    "enum",
    "default",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "required",
}


def render_crd(kind: Kind) -> dict[str, Any]:
    spec_schema = openapi_schema(kind.spec)
    status_schema = openapi_schema(kind.status)
    root = {
        "type": "object",
        "description": kind.description,
        "properties": {
            "apiVersion": {"type": "string", "description": "mlops.flywheel.dev/v1alpha1"},
            "kind": {"type": "string", "description": kind.kind},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
        "required": ["spec"],
        "x-kubernetes-validations": [
            {
                "rule": (
                    f"size(self.metadata.name) <= {kind.max_name_length} && "
                    "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')"
                ),
                "message": (
                    f"metadata.name must be a DNS label of at most {kind.max_name_length} "
                    "characters (lowercase letters, digits, '-'; starting with a letter), "
                    "because the operator names child objects after it"
                ),
            }
        ],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": kind.crd_name,
            "labels": {"app.kubernetes.io/part-of": "flywheel"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": ["flywheel"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [_column(c) for c in kind.columns],
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def render_all() -> dict[str, dict[str, Any]]:
    """File name -> CRD, for every kind."""
    return {f"{GROUP}_{k.plural}.yaml": render_crd(k) for k in KINDS}


def _column(column) -> dict[str, Any]:
    out = {"name": column.name, "type": column.type, "jsonPath": column.json_path}
    if column.description:
        out["description"] = column.description
    if column.priority:
        out["priority"] = column.priority
    return out


def openapi_schema(model) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True, mode="validation")
    defs = schema.pop("$defs", {})
    return _convert(schema, defs)


def _convert(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    node = _inline(node, defs)
    node = _drop_null_branch(node, defs)
    if node.get("x-kubernetes-int-or-string"):
        return {k: v for k, v in node.items() if k in ("description", "x-kubernetes-int-or-string")}

    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _KEPT or key.startswith("x-kubernetes-"):
            out[key] = value
        elif key == "const":
            out["enum"] = [value]
        elif key == "exclusiveMinimum":
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum":
            out["maximum"], out["exclusiveMaximum"] = value, True
        elif key == "properties":
            out["properties"] = {name: _convert(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out["items"] = _convert(value, defs)
        elif key == "additionalProperties" and isinstance(value, dict):
            out["additionalProperties"] = _convert(value, defs)
    if "enum" in out and "type" not in out:
        out["type"] = _enum_type(out["enum"])
    if out.get("x-kubernetes-preserve-unknown-fields"):
        out["type"] = "object"
    if "default" in out and out["default"] is None:
        del out["default"]
    if "properties" in out or "additionalProperties" in out:
        out["type"] = "object"
    if out.get("required") == []:
        del out["required"]
    return out


def _inline(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Replace a $ref by the definition it names, keeping the referrer's own keys
    (description, default) which take precedence."""
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**_inline(target, defs), **{k: v for k, v in node.items() if k != "$ref"}}
        return merged
    if "allOf" in node and len(node["allOf"]) == 1:
        rest = {k: v for k, v in node.items() if k != "allOf"}
        return {**_inline(node["allOf"][0], defs), **rest}
    return node


def _drop_null_branch(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """`X | None` becomes X: in Kubernetes an absent field is the null."""
    branches = node.get("anyOf")
    if not branches:
        return node
    kept = [b for b in branches if b.get("type") != "null"]
    rest = {k: v for k, v in node.items() if k != "anyOf"}
    if len(kept) == 1:
        return {**_inline(kept[0], defs), **rest}
    if node.get("x-kubernetes-int-or-string"):
        return rest
    raise ValueError(f"a union the CRD schema cannot express: {branches}")


def _enum_type(values: list[Any]) -> str:
    if all(isinstance(v, bool) for v in values):
        return "boolean"
    if all(isinstance(v, int) for v in values):
        return "integer"
    return "string"


HEADER = "# Generated by `flywheel crds` from operator/flywheel/api. Do not edit.\n"


def render_files() -> dict[str, str]:
    """File name -> YAML text, exactly as written to disk."""
    import yaml

    return {
        name: HEADER + yaml.safe_dump(crd, sort_keys=False, width=100)
        for name, crd in render_all().items()
    }


def write_crds(out_dirs, check: bool = False) -> list:
    """Write every CRD into each directory; return the files that changed
    (or, with check, that would change). Files of kinds that no longer exist
    count as changed too."""
    from pathlib import Path

    changed = []
    files = render_files()
    for directory in map(Path, out_dirs):
        for stray in sorted(directory.glob(f"{GROUP}_*.yaml")):
            if stray.name not in files:
                changed.append(stray)
                if not check:
                    stray.unlink()
        for name, text in files.items():
            path = directory / name
            if path.exists() and path.read_text() == text:
                continue
            changed.append(path)
            if not check:
                directory.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    return changed
