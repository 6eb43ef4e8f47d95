"""`flywheel dataset-snapshot`: version, validation, profile and the result channel.

Local files only (file:// and a local http server); S3 runs against a real
server in the integration tests.
"""

from __future__ import annotations

import gzip
import http.server
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from click.testing import CliRunner

from flywheel.api.dataset import DatasetSpec
from flywheel.workloads import columns as columns_module
from flywheel.workloads import scan as scan_module
from flywheel.workloads import storage
from flywheel.workloads.columns import coerce
from flywheel.workloads.errors import EXIT_CODES
from flywheel.workloads.scan import scan_source
from flywheel.workloads.snapshot import dataset_snapshot_command, take_snapshot
from flywheel.workloads.storage import S3Store, s3_client, s3_reason
from flywheel.workloads.termination import LIMIT_BYTES, render_termination

NUMERIC = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
IRIS_COLUMNS = [
    *({"name": name, "type": "float", "nullable": False} for name in NUMERIC),
    {"name": "species", "type": "string", "allowedValues": ["setosa", "versicolor", "virginica"]},
]


@pytest.fixture(scope="session")
def iris() -> pd.DataFrame:
    from sklearn.datasets import load_iris

    bunch = load_iris(as_frame=True)
    frame = bunch.data.set_axis(NUMERIC, axis=1)
    frame["species"] = bunch.target_names[bunch.target]
    return frame


def write(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path


def make_spec(path: Path, fmt: str = "csv", columns=None, quality=None) -> DatasetSpec:
    wire = {"source": {"uri": path.as_uri(), "format": fmt}}
    if columns is not None:
        wire["schema"] = {"columns": columns}
    if quality is not None:
        wire["quality"] = quality
    return DatasetSpec.model_validate(wire)


def snapshot(path: Path, fmt: str = "csv", columns=None, quality=None, out: Path | None = None):
    out = out or path.parent / "profile" / "profile.json"
    return take_snapshot(make_spec(path, fmt, columns, quality), out.as_uri())


# --- version ---------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_same_bytes_give_the_same_version(iris, tmp_path, fmt):
    first = write(iris, tmp_path / "a" / f"iris.{fmt}")
    second = tmp_path / "elsewhere" / f"iris.{fmt}"
    second.parent.mkdir()
    shutil.copy(first, second)

    version = snapshot(first, fmt).version
    assert len(version) == 64 and int(version, 16) >= 0
    assert snapshot(first, fmt).version == version
    # Keys are relative to the URI, so a copy elsewhere is the same version.
    assert snapshot(second, fmt).version == version
    assert snapshot(second.parent, fmt).version == version


def test_any_change_gives_a_new_version(iris, tmp_path):
    path = write(iris, tmp_path / "data" / "iris.csv")
    before = snapshot(path.parent).version

    data = bytearray(path.read_bytes())
    data[-3] = ord("x") if data[-3] != ord("x") else ord("y")  # one byte of a species
    path.write_bytes(bytes(data))
    changed = snapshot(path.parent).version
    assert changed != before

    path.rename(path.with_name("renamed.csv"))
    assert snapshot(path.parent).version != changed


def test_a_folder_is_read_recursively_in_key_order_skipping_other_files(iris, tmp_path):
    root = tmp_path / "data"
    write(iris.iloc[:100], root / "b" / "part-1.csv")
    write(iris.iloc[100:], root / "a.csv")
    (root / "notes.txt").write_text("not data")
    (root / "_SUCCESS").write_text("")
    write(iris, root / ".staging" / "partial.csv")

    result = snapshot(root)

    assert (result.objects, result.rows) == (2, 150)
    assert [d["key"] for d in result.profile["objectDigests"]] == ["a.csv", "b/part-1.csv"]


def test_gzipped_csv_is_read(iris, tmp_path):
    path = tmp_path / "data" / "iris.csv.gz"
    path.parent.mkdir()
    path.write_bytes(gzip.compress(iris.to_csv(index=False).encode()))

    result = snapshot(path.parent, columns=IRIS_COLUMNS)

    assert result.rows == 150
    assert result.validation.passed
    assert result.bytes == path.stat().st_size


# --- profile ---------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("declared", [True, False], ids=["declared", "inferred"])
def test_profile_matches_pandas(iris, tmp_path, fmt, declared):
    path = write(iris, tmp_path / f"iris.{fmt}")
    out = tmp_path / "out" / "profile.json"

    result = snapshot(path, fmt, IRIS_COLUMNS if declared else None, out=out)

    assert (result.rows, result.columns, result.null_cells, result.objects) == (150, 5, 0, 1)
    assert result.validation.passed
    profile = json.loads(out.read_text())
    assert profile == json.loads(json.dumps(result.profile))
    columns = {c["name"]: c for c in profile["columnProfiles"]}
    for name in NUMERIC:
        assert columns[name]["type"] == "float"
        assert columns[name]["mean"] == pytest.approx(iris[name].mean())
        assert columns[name]["min"] == iris[name].min()
        assert columns[name]["max"] == iris[name].max()
    assert columns["species"]["type"] == "string"
    assert {c["value"]: c["count"] for c in columns["species"]["categories"]} == {
        "setosa": 50,
        "versicolor": 50,
        "virginica": 50,
    }


def test_profile_counts_nulls_and_infers_kinds(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_text(
        "id,score,flag,when,note\n"
        "1,0.5,true,2024-01-01,a\n"
        "2,,false,2024-01-02T10:00:00Z,\n"
        "3,1.5,true,2024-01-03 08:30:00,b\n"
    )

    result = snapshot(path)

    columns = {c["name"]: c for c in result.profile["columnProfiles"]}
    assert {n: c["type"] for n, c in columns.items()} == {
        "id": "integer",
        "score": "float",
        "flag": "boolean",
        "when": "datetime",
        "note": "string",
    }
    assert result.null_cells == 2
    assert columns["score"]["nulls"] == 1 and columns["score"]["mean"] == pytest.approx(1.0)
    assert (columns["id"]["min"], columns["id"]["max"]) == (1, 3)
    assert columns["when"]["max"] == "2024-01-03T08:30:00"


def test_values_are_read_as_the_declared_kind():
    text = pa.array([" 7 ", "+5", "3.0", "2.5", "abc", None])
    ints = coerce(text, "integer")
    assert ints.values.to_pylist() == [7, 5, 3, None, None, None]
    assert ints.invalid.to_pylist() == [False, False, False, True, True, False]
    assert coerce(pa.array([1.0, 2.5]), "integer").invalid.to_pylist() == [False, True]
    bools = coerce(pa.array(["Yes", "0", "maybe"]), "boolean")
    assert bools.values.to_pylist() == [True, False, None]
    times = coerce(pa.array(["2024-02-30", "2024-01-01T00:00:00+01:00"]), "datetime")
    assert [t and t.isoformat() for t in times.values.to_pylist()] == [None, "2023-12-31T23:00:00"]


@pytest.mark.parametrize(
    "cells",
    [
        ["1", "-2", "007", None, "123456789012345678"],  # clean: Arrow's own cast
        ["1", "1234567890123456789"],  # 19 digits: over the text rule's 18
        ["1.5", "-2e3", ".5", "5.", "INF", "-infinity", None, "1E-2"],
        ["1.5", "nan"],  # NaN text is not a number
        ["1.5", "NaN", " 2 ", "+3"],
    ],
)
def test_clean_numeric_columns_read_the_same_as_the_text_rules(cells, monkeypatch):
    """The fast path for clean numeric text gives what the regex path gives."""
    text = pa.array(cells, pa.string())
    for kind in ("integer", "float"):
        fast = coerce(text, kind)
        monkeypatch.setattr(columns_module, "_clean_number_column", lambda t, k: None)
        slow = coerce(text, kind)
        monkeypatch.undo()
        assert fast.values.to_pylist() == slow.values.to_pylist(), kind
        assert fast.invalid.to_pylist() == slow.invalid.to_pylist(), kind


# CSV cells of one declared column, and whether the typed parse holds for them
# (else the object is read again as text). Either way the snapshot must say
# what the text rules say.
TYPED_CSV_CASES = [
    ("integer", ["1", "-2", "007", " 7 ", "", "123456789012345678"], True),
    ("integer", ["1", "+5"], False),  # the parser refuses a leading +
    ("integer", ["1", "3.0"], False),  # the text rules read 3
    ("integer", ["1", "1234567890123456789"], False),  # over the rules' 18 digits
    ("integer", ["1", "abc"], False),
    ("float", ["1.5", "-2e3", ".5", "5.", "INF", "-infinity", " 2 ", "+3", "1e400", ""], True),
    ("float", ["1.5", "nan", "NULL"], True),  # missing values to both
    ("float", ["1.5", "NAN"], False),  # the parser reads NaN, the rules call it invalid
    ("float", ["1.5", "1,5"], False),
    ("boolean", ["true", "True", "t", "YES", "y", "1", "false", "F", "no", "N", "0"], True),
    ("boolean", ["true", "tRue"], False),
    ("boolean", ["yes", "maybe"], False),
]


def scans_as_text(monkeypatch):
    monkeypatch.setattr(scan_module, "parse_types", lambda schema: {})


def objects_read(monkeypatch) -> list[tuple[str, bool]]:
    """(key, typed) for every read of an object, in order."""
    reads: list[tuple[str, bool]] = []
    real = scan_module.scan_object

    def recording(store, obj, data_format, scan, types=None, **kwargs):
        reads.append((obj.key, bool(types)))
        return real(store, obj, data_format, scan, types, **kwargs)

    monkeypatch.setattr(scan_module, "scan_object", recording)
    return reads


def typed_and_text_profiles(monkeypatch, path: Path, columns) -> tuple[dict, dict, list]:
    with monkeypatch.context() as patched:
        reads = objects_read(patched)
        typed = snapshot(path, columns=columns).profile
    with monkeypatch.context() as patched:
        scans_as_text(patched)
        text = snapshot(path, columns=columns).profile
    return typed, text, reads


@pytest.mark.parametrize("kind, cells, typed_holds", TYPED_CSV_CASES)
def test_declared_csv_columns_parsed_typed_read_as_the_text_rules_do(
    tmp_path, monkeypatch, kind, cells, typed_holds
):
    path = tmp_path / "data.csv"
    rows = [f'{i},"{cell}"' for i, cell in enumerate(cells)]
    path.write_text("id,value\n" + "\n".join(rows) + "\n")
    columns = [{"name": "id", "type": "integer"}, {"name": "value", "type": kind}]

    typed, text, reads = typed_and_text_profiles(monkeypatch, path, columns)

    assert typed["columnProfiles"] == text["columnProfiles"]
    assert typed["validation"] == text["validation"]
    assert reads == (
        [("data.csv", True)] if typed_holds else [("data.csv", True), ("data.csv", False)]
    )


def test_an_object_the_typed_parse_refuses_is_read_again_from_its_start(tmp_path, monkeypatch):
    """The refusal comes blocks into the object, after its first batches went
    into the statistics: those are taken back, not counted twice."""
    root = tmp_path / "data"
    root.mkdir()
    rng = np.random.default_rng(7)

    def part(name: str, rows: int, last: str | None = None) -> None:
        frame = pd.DataFrame(
            {
                "n": rng.integers(0, 1000, rows),
                "x": rng.normal(0, 1, rows).round(6),
                "tag": rng.choice(["a", "b", "c"], rows),
            }
        )
        text = frame.to_csv(index=False)
        (root / name).write_text(text + (f"{last}\n" if last else ""))

    part("a.csv", 1_000)
    part("b.csv", 60_000, last="5,oops,a")  # ~1.4 MiB: several parser blocks first
    part("c.csv", 1_000)
    columns = [
        {"name": "n", "type": "integer", "min": 0},
        {"name": "x", "type": "float"},
        {"name": "tag", "type": "string"},
    ]

    typed, text, reads = typed_and_text_profiles(monkeypatch, root, columns)

    assert reads == [("a.csv", True), ("b.csv", True), ("b.csv", False), ("c.csv", False)]
    assert typed == text
    assert typed["rows"] == 62_001
    x = next(c for c in typed["columnProfiles"] if c["name"] == "x")
    assert x["invalid"] == 1
    tag = next(c for c in typed["columnProfiles"] if c["name"] == "tag")
    assert sum(c["count"] for c in tag["categories"]) == 62_001


def test_parquet_text_columns_read_as_dictionaries_give_the_plain_profile(tmp_path, monkeypatch):
    """Declared string columns come dictionary-encoded (each row group with its
    own dictionary); counts, allowed values, nulls and examples are those of
    the expanded strings. Undeclared text is still expanded, for inference."""
    import pyarrow.parquet as pq

    rng = np.random.default_rng(3)
    rows = 30_000
    colours = rng.choice(["red", "green", "blue", "teal", None], rows).tolist()
    colours[-5:] = ["mauve", "mauve", "puce", None, "red"]  # only in the last row group
    table = pa.table(
        {
            "colour": colours,
            "size": rng.choice(["S", "M", "L"], rows),
            "label": rng.choice(["1", "2", "x"], rows),  # undeclared: inferred
            "n": rng.integers(0, 9, rows),  # declared string, stored as int64
        }
    )
    path = tmp_path / "data.parquet"
    pq.write_table(table, path, row_group_size=7_000)
    columns = [
        {"name": "colour", "type": "string", "allowedValues": ["red", "green", "blue", "teal"]},
        {"name": "size", "type": "string", "nullable": False},
        {"name": "n", "type": "string"},
    ]
    seen: list[pa.DataType] = []
    real_add = columns_module.TableScan.add_batch

    def recording(scan, batch):
        seen.extend(batch.schema.field(name).type for name in ("colour", "label"))
        return real_add(scan, batch)

    with monkeypatch.context() as patched:
        patched.setattr(columns_module.TableScan, "add_batch", recording)
        encoded = snapshot(path, "parquet", columns=columns)
    with monkeypatch.context() as patched:
        patched.setattr(scan_module, "dictionary_columns", lambda schema: frozenset())
        plain = snapshot(path, "parquet", columns=columns)

    assert pa.types.is_dictionary(seen[0]) and seen[1] == pa.string()
    assert encoded.profile == plain.profile
    failures = {f.rule: f.message for f in encoded.validation.failures}
    assert "3 values not in allowedValues" in failures["allowedValues"]
    assert "'mauve'" in failures["allowedValues"]
    assert failures["type"].startswith("column 'n': 30000 values not of type string")


def test_integers_beyond_a_floats_precision_are_profiled(tmp_path):
    path = tmp_path / "ids.csv"
    path.write_text("id\n1\n123456789012345678\n")

    result = snapshot(path, columns=[{"name": "id", "type": "integer"}])

    (profile,) = result.profile["columnProfiles"]
    assert (profile["min"], profile["max"]) == (1, 123456789012345678)
    assert profile["mean"] == pytest.approx(123456789012345679 / 2)


# --- validation ------------------------------------------------------------


def with_blanks(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[[3, 60, 120], "sepal_width"] = np.nan
    return frame


def with_unknown_species(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[[0, 1, 2], "species"] = "unknown"
    return frame


def declare(name: str, **rules) -> list[dict]:
    return [{**c, **rules} if c["name"] == name else c for c in IRIS_COLUMNS]


FAILURES = {
    "missingColumn": (
        lambda f: f,
        [*IRIS_COLUMNS, {"name": "petal_colour", "type": "string"}],
        None,
        ("missingColumn", "petal_colour", "not in the data (found columns: sepal_length"),
    ),
    "type": (
        lambda f: f,
        declare("species", type="float", allowedValues=None),
        None,
        ("type", "species", "150 values not of type float"),
    ),
    "notNull": (
        with_blanks,
        IRIS_COLUMNS,
        None,
        ("notNull", "sepal_width", "3 values empty, but nullable is false"),
    ),
    "min": (
        lambda f: f,
        declare("sepal_length", min=5),
        None,
        ("min", "sepal_length", "22 values below min 5, smallest 4.3"),
    ),
    "max": (
        lambda f: f,
        declare("petal_width", max=2),
        None,
        ("max", "petal_width", "23 values above max 2, largest 2.5"),
    ),
    "allowedValues": (
        with_unknown_species,
        IRIS_COLUMNS,
        None,
        (
            "allowedValues",
            "species",
            "column 'species': 3 values not in allowedValues "
            "[setosa, versicolor, virginica], e.g. 'unknown'",
        ),
    ),
    "minRows": (
        lambda f: f,
        IRIS_COLUMNS,
        {"minRows": 1000},
        ("minRows", None, "150 rows, fewer than quality.minRows 1000"),
    ),
    "maxNullFraction": (
        with_blanks,
        declare("sepal_width", nullable=True),
        {"maxNullFraction": 0.01},
        ("maxNullFraction", "sepal_width", "2.0% empty (3 of 150 rows)"),
    ),
}


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("case", FAILURES)
def test_each_failed_rule_names_rule_and_column(iris, tmp_path, fmt, case):
    change, columns, quality, (rule, column, message) = FAILURES[case]
    path = write(change(iris), tmp_path / f"iris.{fmt}")

    result = snapshot(path, fmt, columns, quality)

    assert not result.validation.passed
    failures = [(f.rule, f.column, f.message) for f in result.validation.failures]
    assert len(failures) == 1, failures
    assert failures[0][:2] == (rule, column)
    assert message in failures[0][2]


def test_typed_data_of_the_wrong_type_says_what_was_found(iris, tmp_path):
    path = write(iris, tmp_path / "iris.parquet")

    result = snapshot(path, "parquet", declare("species", type="integer", allowedValues=None))

    (failure,) = result.validation.failures
    assert failure.message == (
        "column 'species': 150 values not of type integer (found string), "
        "e.g. 'setosa', 'versicolor', 'virginica'"
    )


def test_failures_are_capped_at_twenty(tmp_path):
    names = [f"c{i}" for i in range(30)]
    path = tmp_path / "wide.csv"
    path.write_text(",".join(names) + "\n" + ",".join("-1" for _ in names) + "\n")

    result = snapshot(path, columns=[{"name": n, "type": "integer", "min": 0} for n in names])

    assert len(result.validation.failures) == 20
    assert len(result.profile["validation"]["failures"]) == 30


# --- termination message ---------------------------------------------------


def test_termination_message_fits_in_4_kib_with_many_long_failures(tmp_path):
    names = [f"a_rather_long_column_name_{'x' * 200}_{i}" for i in range(25)]
    path = tmp_path / "wide.csv"
    path.write_text(",".join(names) + "\n" + ",".join("ü" * 300 for _ in names) + "\n")
    columns = [{"name": n, "type": "integer", "allowedValues": ["1"]} for n in names]

    result = snapshot(path, columns=columns)
    text = render_termination(result.termination())

    assert len(text.encode()) < LIMIT_BYTES
    message = json.loads(text)
    assert message["ok"] is True and message["version"] == result.version
    assert message["validation"]["passed"] is False
    assert message["validation"]["failures"], "some failures survive the shrinking"


def test_termination_message_keeps_the_reason_and_hides_secrets():
    secret = "s3cr3t-Acc3ss-k3y"
    error = {"ok": False, "error": {"reason": "AccessDenied", "message": f"{secret} " * 2000}}

    text = render_termination(error, [secret])

    assert len(text.encode()) < LIMIT_BYTES
    assert json.loads(text)["error"]["reason"] == "AccessDenied"
    assert secret not in text


# --- the command -----------------------------------------------------------


def run_command(tmp_path: Path, spec: dict | str | None, **env: str):
    log = tmp_path / "termination-log"
    environment = {
        "FLYWHEEL_PROFILE_URI": (tmp_path / "out" / "profile.json").as_uri(),
        "FLYWHEEL_TERMINATION_LOG": str(log),
        "FLYWHEEL_DATASET_SPEC": spec if isinstance(spec, str | None) else json.dumps(spec),
        **env,
    }
    outcome = CliRunner().invoke(dataset_snapshot_command, [], env=environment)
    assert outcome.exception is None or isinstance(outcome.exception, SystemExit)
    message = json.loads(log.read_text())
    assert len(log.read_bytes()) < LIMIT_BYTES
    return outcome.exit_code, message


def wire(uri: str, fmt: str = "csv", source: dict | None = None, **extra) -> dict:
    return {"source": {"uri": uri, "format": fmt, **(source or {})}, **extra}


def test_command_reports_the_snapshot_even_when_validation_fails(iris, tmp_path):
    path = write(iris, tmp_path / "iris.csv")
    spec = wire(path.as_uri(), schema={"columns": declare("sepal_length", max=5)})

    code, message = run_command(tmp_path, spec)

    assert code == 0
    assert set(message) == {
        "ok",
        "version",
        "rows",
        "columns",
        "nullCells",
        "bytes",
        "objects",
        "profileUri",
        "validation",
    }
    assert (message["ok"], message["rows"], message["validation"]["passed"]) == (True, 150, False)
    assert message["validation"]["failures"][0]["rule"] == "max"
    assert (tmp_path / "out" / "profile.json").exists()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_the_command_runs_without_pandas_and_profiles_as_with_it(iris, tmp_path, fmt):
    """The command as a Job runs it, in a process of its own: pyarrow's
    conversions would import pandas for nothing (without_pandas.py). The
    profile is the one a process with pandas loaded (this one) writes."""
    frame = with_unknown_species(with_blanks(iris))
    frame["measured"] = pd.date_range("2024-01-01", periods=len(frame), freq="h")
    frame["large"] = frame["sepal_length"] > 6
    path = write(frame, tmp_path / "data" / f"iris.{fmt}")
    columns = [
        *declare("sepal_length", min=4.5, max=7.5),
        {"name": "measured", "type": "datetime"},
        {"name": "large", "type": "boolean"},
    ]
    quality = {"minRows": 100, "maxNullFraction": 0.01}
    expected = snapshot(path, fmt, columns, quality, tmp_path / "here" / "profile.json")
    spec = wire(path.as_uri(), fmt, schema={"columns": columns}, quality=quality)
    env = {
        **os.environ,
        "FLYWHEEL_DATASET_SPEC": json.dumps(spec),
        "FLYWHEEL_PROFILE_URI": (tmp_path / "job" / "profile.json").as_uri(),
        "FLYWHEEL_TERMINATION_LOG": str(tmp_path / "termination-log"),
    }
    script = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('pandas loaded:', 'pandas' in sys.modules))\n"
        "from flywheel.cli import main\n"
        "main(['dataset-snapshot'])\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )

    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().endswith("pandas loaded: False")
    assert "pandas" in sys.modules  # ...and the expected profile was made with it
    written = json.loads((tmp_path / "job" / "profile.json").read_text())
    assert written == json.loads((tmp_path / "here" / "profile.json").read_text())
    assert not written["validation"]["passed"]  # the blanks and the unknown species
    assert expected.version == written["version"]


def test_pandas_is_refused_only_inside_the_block():
    """In a fresh process (this one has pandas loaded, and the block then
    does nothing): pyarrow converts values without it inside, and imports
    it as usual once the block is over."""
    script = textwrap.dedent(
        """
        import sys
        import pyarrow as pa, pyarrow.compute as pc
        from flywheel.workloads.without_pandas import pandas_not_importable
        with pandas_not_importable():
            assert pc.is_in(pa.array(["a", "b"]), value_set=pa.array(["a"])).to_pylist() == [
                True, False]
            try:
                import pandas
            except ImportError as err:
                assert "not loaded during a dataset snapshot" in str(err)
            else:
                raise AssertionError("pandas imported inside the block")
        assert "pandas" not in sys.modules
        frame = pa.table({"a": [1, 2]}).to_pandas()
        assert list(frame["a"]) == [1, 2] and "pandas" in sys.modules
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def garbage_parquet(tmp_path: Path) -> str:
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not parquet")
    return wire((tmp_path / "bad.parquet").as_uri(), "parquet")


def ragged_csv(tmp_path: Path) -> str:
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n3,4,5\n")
    return wire((tmp_path / "bad.csv").as_uri())


def empty_csv(tmp_path: Path) -> str:
    (tmp_path / "empty.csv").write_text("")
    return wire((tmp_path / "empty.csv").as_uri())


def empty_folder(tmp_path: Path) -> str:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "readme.md").write_text("no data yet")
    return wire((tmp_path / "data").as_uri())


ERRORS = {
    "missing path": (lambda p: wire("file:///nonexistent/iris.csv"), "SourceUnreachable"),
    "no matching objects": (empty_folder, "NoObjects"),
    "garbage parquet": (garbage_parquet, "UnreadableData"),
    "ragged csv": (ragged_csv, "UnreadableData"),
    "empty csv": (empty_csv, "UnreadableData"),
    "not json": (lambda p: "{not json", "InvalidSpec"),
    "bad spec": (lambda p: wire("ftp://x/y"), "InvalidSpec"),
    "no spec": (lambda p: None, "InvalidSpec"),
}


@pytest.mark.parametrize("case", ERRORS)
def test_command_fails_with_a_reason_when_data_cannot_be_read(tmp_path, case):
    make, reason = ERRORS[case]

    code, message = run_command(tmp_path, make(tmp_path))

    assert code == EXIT_CODES[reason] != 0
    assert message["ok"] is False
    assert message["error"]["reason"] == reason, message
    assert message["error"]["message"]


@pytest.fixture
def http_server(iris, tmp_path):
    body = iris.to_csv(index=False).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.headers.get("Authorization") != "Bearer let-me-in-please":
                self.send_error(403)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/files/iris.csv"
    server.shutdown()


def test_http_source_uses_the_authorization_header(http_server, tmp_path):
    code, message = run_command(
        tmp_path, wire(http_server), HTTP_AUTHORIZATION="Bearer let-me-in-please"
    )
    assert (code, message["rows"], message["objects"]) == (0, 150, 1)

    code, message = run_command(tmp_path, wire(http_server), HTTP_AUTHORIZATION="Bearer wrong")
    assert message["error"]["reason"] == "AccessDenied"
    assert "wrong" not in json.dumps(message)


def test_unreachable_s3_endpoint(tmp_path, monkeypatch):
    # The command waits for the store about half a minute; this test, not at all.
    monkeypatch.setattr(storage, "RETRY_DELAYS_SECONDS", (0.01, 0.01))
    code, message = run_command(
        tmp_path,
        wire("s3://datasets/iris/", source={"endpoint": "http://127.0.0.1:9"}),
        AWS_ACCESS_KEY_ID="AKIAEXAMPLEKEY",
        AWS_SECRET_ACCESS_KEY="very-secret-value",
    )
    assert (code, message["error"]["reason"]) == (10, "SourceUnreachable")
    assert message["error"]["message"].startswith(
        "cannot list s3://datasets/iris/ at http://127.0.0.1:9"
    )
    assert "did not answer" in message["error"]["message"]
    assert "very-secret-value" not in json.dumps(message)


@pytest.mark.parametrize(
    ("code", "status", "reason"),
    [
        ("InvalidAccessKeyId", 403, "AccessDenied"),
        ("SignatureDoesNotMatch", 403, "AccessDenied"),
        ("AccessDenied", 403, "AccessDenied"),
        ("NoSuchBucket", 404, "SourceUnreachable"),
        ("InternalError", 500, "SourceUnreachable"),
    ],
)
def test_s3_errors_map_to_reasons(code, status, reason):
    from botocore.exceptions import ClientError

    response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    assert s3_reason(ClientError(response, "ListObjectsV2")) == reason


# --- bounded memory --------------------------------------------------------

# Peak RSS from /proc, not getrusage: on Linux ru_maxrss carries the parent's
# peak across fork and exec, so pytest's own size would be measured.
MEASURE = textwrap.dedent(
    """
    import json, sys
    from flywheel.workloads.allocator import bound_arrow_threads, use_system_allocator
    use_system_allocator()  # as the command does: before pyarrow loads
    bound_arrow_threads()
    from flywheel.api.dataset import DatasetSpec
    from flywheel.workloads.snapshot import take_snapshot

    small, big, out, data_format = sys.argv[1:]

    def spec(uri):
        columns = [{"name": "x", "type": "float"}, {"name": "label", "type": "string"}]
        return DatasetSpec.model_validate(
            {"source": {"uri": uri, "format": data_format}, "schema": {"columns": columns}}
        )

    def status(field):
        with open("/proc/self/status") as lines:
            line = next(line for line in lines if line.startswith(field + ":"))
        return int(line.split()[1]) * 1024

    take_snapshot(spec(small), out + "/warm.json")  # imports and kernels loaded
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # restart the peak (VmHWM) from the current RSS
    before = status("VmRSS")
    result = take_snapshot(spec(big), out + "/big.json")
    print(json.dumps({"growth": status("VmHWM") - before, "rows": result.rows}))
    """
)


def random_block(n: int = 100_000) -> pa.Table:
    rng = np.random.default_rng(7)
    return pa.table(
        {
            "id": np.arange(n),
            "x": rng.normal(size=n).round(4),
            "y": rng.uniform(0, 100, n).round(3),
            "label": rng.choice(["a", "b", "c"], n),
            "note": np.char.add("n", rng.integers(0, 50_000, n).astype(str)),
        }
    )


def generate_csv(path: Path, megabytes: int) -> int:
    """A CSV of about `megabytes`: one random block of rows written over and over."""
    block = random_block()
    n = len(block)
    sink = pa.BufferOutputStream()
    pacsv.write_csv(block, sink)
    header, body = sink.getvalue().to_pybytes().split(b"\n", 1)
    repeats = -(-(megabytes << 20) // len(body))
    with path.open("wb") as out:
        out.write(header + b"\n")
        for _ in range(repeats):
            out.write(body)
    return n * repeats


def generate_parquet(path: Path, megabytes: int) -> int:
    """A Parquet file of about `megabytes`: one random block of rows written
    over and over, a row group each."""
    block = random_block()
    sink = pa.BufferOutputStream()
    pq.write_table(block, sink)
    repeats = -(-(megabytes << 20) // sink.getvalue().size)
    with pq.ParquetWriter(path, block.schema) as out:
        for _ in range(repeats):
            out.write_table(block)
    return len(block) * repeats


# (generator, file MiB, the most peak RSS may grow, as a share of the file).
# Parquet's batches are larger (SNAPSHOT_BATCH_CELLS) and its columns
# decoded in parallel: ~55 MiB whatever the file's size, so its file is larger.
# CSV grows 20-26 MiB whatever the file's size (its reader's blocks, in
# flight on two threads); without the thread bound it grew 45 MiB, and a
# whole read grows by more than the file: 0.7 of 50 MiB tells them apart
# (half of it, 25 MiB, failed once at 26).
BOUNDED_MEMORY_FILES = {
    "csv": (generate_csv, 50, 0.7),
    "parquet": (generate_parquet, 150, 0.5),
}
# As on a 32-core node: Arrow sizes its CPU pool from OMP_NUM_THREADS when set.
MANY_CORES = {**os.environ, "OMP_NUM_THREADS": "32"}


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("fmt", BOUNDED_MEMORY_FILES)
def test_memory_stays_bounded_on_a_large_file(iris, tmp_path, fmt):
    small = write(iris, tmp_path / f"small.{fmt}")
    big = tmp_path / f"big.{fmt}"
    generate, megabytes, share = BOUNDED_MEMORY_FILES[fmt]
    rows = generate(big, megabytes)
    size = big.stat().st_size

    run = subprocess.run(
        [sys.executable, "-c", MEASURE, small.as_uri(), big.as_uri(), tmp_path.as_uri(), fmt],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        env=MANY_CORES,
    )

    measured = json.loads(run.stdout.strip().splitlines()[-1])
    assert measured["rows"] == rows
    assert measured["growth"] < size * share, f"peak RSS grew {measured['growth'] >> 20} MiB"


def test_s3_prefix_is_a_folder_and_pages_are_followed(iris, monkeypatch):
    # A stubbed client: listing semantics only; a real server runs in integration.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    client = s3_client("http://s3.invalid", "us-east-1")
    listing = {"Bucket": "b", "Prefix": "iris"}
    page1 = [{"Key": "iris/a.csv", "Size": 1}, {"Key": "iris/_SUCCESS", "Size": 0}]
    page2 = [{"Key": "iris/b/c.csv", "Size": 1}, {"Key": "iris2/x.csv", "Size": 1}]
    body = iris.to_csv(index=False).encode()
    with Stubber(client) as stub:
        stub.add_response(
            "list_objects_v2",
            {"Contents": page1, "IsTruncated": True, "NextContinuationToken": "t"},
            listing,
        )
        stub.add_response(
            "list_objects_v2",
            {"Contents": page2, "IsTruncated": False},
            listing | {"ContinuationToken": "t"},
        )
        for key in ("iris/a.csv", "iris/b/c.csv"):
            stream = StreamingBody(io.BytesIO(body), len(body))
            stub.add_response("get_object", {"Body": stream}, {"Bucket": "b", "Key": key})

        spec = DatasetSpec.model_validate(wire("s3://b/iris", schema={"columns": IRIS_COLUMNS}))
        scanned = scan_source(spec, S3Store("s3://b/iris", client))

    assert [d["key"] for d in scanned.profile["objectDigests"]] == ["a.csv", "b/c.csv"]
    assert (scanned.rows, scanned.bytes, scanned.failures) == (300, 2 * len(body), [])
