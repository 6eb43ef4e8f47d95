"""Per-column statistics and rule counters, updated one record batch at a time.

Pure: Arrow arrays in, numbers out. Everything kept between batches is a few
counters per column plus a capped category table, so memory does not grow with
the number of rows.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..api.dataset import Column, ColumnType, DataSchema

# Most specific first: inference picks the first kind every value fits.
KINDS: tuple[ColumnType, ...] = ("integer", "float", "boolean", "datetime", "string")
ARROW_TYPES: dict[str, pa.DataType] = {
    "integer": pa.int64(),
    "float": pa.float64(),
    "boolean": pa.bool_(),
    "datetime": pa.timestamp("us"),
    "string": pa.string(),
}

# Text forms accepted for each kind. "3.0" counts as an integer because pandas
# writes integer columns that have gaps that way.
INTEGER_TEXT = r"^[+-]?\d{1,18}(\.0*)?$"
FLOAT_TEXT = r"^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$|^[+-]?inf(inity)?$"
DATETIME_TEXT = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}(:?\d{2})?)?$"
TRUE_TEXT = pa.array(["true", "t", "yes", "y", "1"])
FALSE_TEXT = pa.array(["false", "f", "no", "n", "0"])

# What a CSV parser may read a declared column as, and the boolean words it
# may take: only spellings the text rules above read the same way (they trim
# and lower-case). A cell the parser refuses stops the typed read of that
# object, which is then read as text (scan.py): the text rules decide it.
PARSED_KINDS: dict[str, pa.DataType] = {
    "integer": pa.int64(),
    "float": pa.float64(),
    "boolean": pa.bool_(),
}
TRUE_WORDS = ["true", "True", "TRUE", "t", "T", "yes", "Yes", "YES", "y", "Y", "1"]
FALSE_WORDS = ["false", "False", "FALSE", "f", "F", "no", "No", "NO", "n", "N", "0"]
# The integer text rule takes at most 18 digits.
LARGEST_INTEGER_TEXT = 10**18 - 1

EXAMPLES_KEPT = 3
# Enough to rank the top 20 well; kept small because merging is Python work.
CATEGORIES_KEPT = 2_000


# --- typing values -------------------------------------------------------


def plain(array: pa.Array | pa.ChunkedArray, keep_dictionary: bool = False) -> pa.Array:
    """One contiguous array in a small set of types; NaN counts as missing,
    as it does in pandas. With keep_dictionary, dictionary-encoded text stays
    encoded (`is_text` tells it from other arrays)."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_dictionary(array.type) and not (keep_dictionary and is_text(array)):
        array = array.dictionary_decode()
    if pa.types.is_large_string(array.type) or pa.types.is_string_view(array.type):
        array = array.cast(pa.string())
    if pa.types.is_floating(array.type):
        nan = pc.is_nan(array)
        if nan.true_count:  # most batches have none: skip the copy
            array = pc.if_else(nan, None, array)
    return array


@dataclass(frozen=True)
class Coerced:
    source: pa.Array  # what was read
    values: pa.Array  # of ARROW_TYPES[kind]; null where missing or not of the kind

    @property
    def invalid(self) -> pa.Array:
        """Boolean mask: present in the data, but not of the kind."""
        return pc.and_(pc.is_valid(self.source), pc.is_null(self.values))

    @property
    def invalid_count(self) -> int:
        # Every reader keeps a missing value missing, so the values' nulls are
        # the source's plus the invalid ones: a count without a pass over the data.
        return self.values.null_count - self.source.null_count


def is_text(array: pa.Array) -> bool:
    """Plain or dictionary-encoded strings: what the text rules read."""
    t = array.type
    return pa.types.is_string(t) or (pa.types.is_dictionary(t) and pa.types.is_string(t.value_type))


def coerce(array: pa.Array, kind: str) -> Coerced:
    """Read values as the declared kind and mark those that are not."""
    if kind == "string" and is_text(array):
        return Coerced(array, array)
    read = _from_text if pa.types.is_string(array.type) else _from_typed
    return Coerced(array, read(array, kind))


def _from_text(text: pa.Array, kind: str) -> pa.Array:
    if kind == "string":
        return text
    fast = _clean_number_column(text, kind)
    if fast is not None:
        return fast
    if kind == "datetime" and (fast := _clean_datetime_column(text)) is not None:
        return fast
    stripped = pc.utf8_trim_whitespace(text)
    if kind == "datetime":
        ok = pc.match_substring_regex(stripped, DATETIME_TEXT, ignore_case=True)
        return _datetimes(pc.if_else(ok, stripped, None))
    trimmed = pc.utf8_lower(stripped)
    if kind == "integer":
        ok = pc.match_substring_regex(trimmed, INTEGER_TEXT)
        # Arrow's cast takes neither a leading "+" nor a ".0" tail.
        digits = pc.replace_substring_regex(trimmed, r"^\+|\.0*$", "")
        return pc.cast(pc.if_else(ok, digits, None), pa.int64())
    if kind == "float":
        ok = pc.match_substring_regex(trimmed, FLOAT_TEXT)
        return pc.cast(pc.if_else(ok, trimmed, None), pa.float64())
    is_true = pc.is_in(trimmed, value_set=TRUE_TEXT)  # boolean
    ok = pc.or_(is_true, pc.is_in(trimmed, value_set=FALSE_TEXT))
    return pc.if_else(ok, is_true, None)


def _clean_number_column(text: pa.Array, kind: str) -> pa.Array | None:
    """The common case first: a numeric column every cell of which Arrow's
    own strict cast reads. The trim, lower-case and regex passes below were
    over half of a CSV snapshot's time (benchmark profile); this skips them
    when they could not change the outcome, and returns None otherwise.

    Arrow's cast accepts a subset of what the regexes accept, with the same
    values, except for two cases excluded here: "nan" (the regex calls it
    invalid) and integers longer than the regex's 18 digits."""
    if kind == "integer":
        longest = pc.max(pc.utf8_length(text)).as_py()
        if longest is None or longest > 18:
            return None
        return _strict_cast(text, pa.int64())
    if kind == "float":
        values = _strict_cast(text, pa.float64())
        if values is None or pc.any(pc.is_nan(values)).as_py():
            return None
        return values
    return None


def _clean_datetime_column(text: pa.Array) -> pa.Array | None:
    """As `_clean_number_column`, for datetimes: the regex pass was the
    largest part of reading a datetime column. Arrow's cast reads, among
    others, "2024-01-31T08" (hour only), which DATETIME_TEXT refuses; of the
    forms it reads, those of 10 characters ("2024-01-31") and 19 characters
    ("2024-01-31 08:30:00", with T or a space) are all accepted by the regex
    (Arrow refuses zone offsets for a timestamp without zone, whatever the
    length). So a batch whose values all have one of those lengths and all
    cast is read as the slow path would read it; any other returns None."""
    lengths = pc.min_max(pc.utf8_length(text)).as_py()
    if lengths["min"] != lengths["max"] or lengths["min"] not in (10, 19):
        return None
    return _strict_cast(text, ARROW_TYPES["datetime"])


def _strict_cast(text: pa.Array, target: pa.DataType) -> pa.Array | None:
    try:
        return pc.cast(text, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _datetimes(text: pa.Array) -> pa.Array:
    try:
        return pc.cast(text, ARROW_TYPES["datetime"])
    except pa.ArrowInvalid:
        # Arrow's cast takes no zone offsets and no impossible dates; the slow
        # path reads what Python does and leaves the rest missing (= invalid).
        return pa.array([_datetime(s) for s in text.to_pylist()], ARROW_TYPES["datetime"])


def _datetime(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def _from_typed(array: pa.Array, kind: str) -> pa.Array:
    """Values already typed (Parquet): accept the kinds that hold them exactly."""
    t = array.type
    target = ARROW_TYPES[kind]
    if t == target:  # (a CSV parser's typed columns; most Parquet columns)
        return array
    numeric = pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
    if pa.types.is_null(t):
        return pa.nulls(len(array), target)
    if kind == "integer" and pa.types.is_integer(t):
        return _int64(pc.cast(array, pa.float64())) if t == pa.uint64() else array.cast(target)
    if kind == "integer" and numeric:
        return _int64(pc.cast(array, pa.float64()))
    if kind == "float" and numeric:
        return pc.cast(array, target)
    if kind == "boolean" and pa.types.is_boolean(t):
        return array
    if kind == "datetime" and (pa.types.is_timestamp(t) or pa.types.is_date(t)):
        # Unsafe: nanoseconds (pandas' unit) are cut to microseconds, not refused.
        return pc.cast(array, target, safe=False)
    return pa.nulls(len(array), target)


def _int64(numbers: pa.Array) -> pa.Array:
    whole = pc.and_(pc.equal(pc.floor(numbers), numbers), pc.less(pc.abs(numbers), 2.0**63))
    return pc.cast(pc.if_else(whole, numbers, None), pa.int64())


def typed_kinds(t: pa.DataType) -> set[str]:
    """Kinds a typed (non-text) column can be, for inference."""
    if pa.types.is_null(t):
        return set(KINDS)
    if pa.types.is_integer(t):
        return {"integer", "float"}
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return {"float"}
    if pa.types.is_boolean(t):
        return {"boolean"}
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return {"datetime"}
    return set()


def parse_types(schema: DataSchema | None) -> dict[str, pa.DataType]:
    """The declared columns a CSV parser can type itself: integers, floats
    and booleans. Text-to-number casts were the largest part of a CSV
    snapshot's statistics (benchmark profile); the parser converts as it
    tokenizes, in its own thread. Datetimes stay text: their text rule takes
    forms (offsets, hour only) the parser reads differently."""
    if schema is None:
        return {}
    return {c.name: PARSED_KINDS[c.type] for c in schema.columns if c.type in PARSED_KINDS}


def dictionary_columns(schema: DataSchema | None) -> frozenset[str]:
    """The declared string columns, which a Parquet reader can hand over as
    dictionaries: Parquet stores text columns dictionary-encoded, and
    expanding them to plain strings, then hashing them again to count
    values, were the larger part of a Parquet snapshot's time (benchmark
    profile). Undeclared columns are expanded: inference reads their text."""
    if schema is None:
        return frozenset()
    return frozenset(c.name for c in schema.columns if c.type == "string")


def parsed_as_text_would_be(batch: pa.RecordBatch, types: dict[str, pa.DataType]) -> str | None:
    """Why a batch the parser typed might differ from the text rules' reading
    (None when it cannot): NaN, which the float rule calls invalid, and
    integers beyond the rule's 18 digits. One difference is left: an integer
    padded with zeros past 18 digits ("0000000000000000001") is its value
    here, where the text rule calls it invalid."""
    for index, name in enumerate(batch.schema.names):
        column, wanted = batch.column(index), types.get(name)
        if wanted == pa.float64() and pc.any(pc.is_nan(column)).as_py():
            return f"column {name!r} has NaN"
        if wanted == pa.int64() and column.null_count < len(column):
            extremes = pc.min_max(column).as_py()
            if max(-extremes["min"], extremes["max"]) > LARGEST_INTEGER_TEXT:
                return f"column {name!r} has an integer longer than 18 digits"
    return None


# --- accumulators ----------------------------------------------------------


@dataclass
class Summary:
    """min, max and (for numbers) the sum, over batches."""

    count: int = 0
    total: float = 0.0
    low: Any = None
    high: Any = None

    def add(self, values: pa.Array, with_total: bool = True) -> tuple[Any, Any] | None:
        """Add one batch; its (min, max), or None when it has no values."""
        present = len(values) - values.null_count
        if not present:
            return None
        low, high = extremes(values)
        self.low = low if self.low is None else min(self.low, low)
        self.high = high if self.high is None else max(self.high, high)
        if with_total:
            # Unsafe: an integer beyond 2**53 has no exact float, and the
            # mean does not need one (the safe cast refused it, failing the snapshot).
            self.total += pc.sum(pc.cast(values, pa.float64(), safe=False)).as_py()
        self.count += present
        return low, high

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None


def extremes(values: pa.Array) -> tuple[Any, Any]:
    """(min, max) of an array with values. Arrow's min_max on floats is ~12x
    slower than on integers (its NaN handling: 141 against 11 us for 45,000
    values); numpy's min and max take 8 us. Floats come here with NaN made
    null (`plain`), so without nulls the two agree."""
    if (
        isinstance(values, pa.Array)
        and (pa.types.is_float64(values.type) or pa.types.is_float32(values.type))
        and not values.null_count
    ):
        numbers = values.to_numpy(zero_copy_only=True)
        return float(numbers.min()), float(numbers.max())
    found = pc.min_max(values).as_py()
    return found["min"], found["max"]


def value_counts(present: pa.Array) -> pa.StructArray:
    """`pc.value_counts` of an array without nulls: each distinct value once,
    in order of first appearance, with its count. Booleans and dictionary-
    encoded text (the snapshot reads declared text columns as dictionaries)
    are counted without hashing each value: 3 against 162 us, and 60-80
    against 260 us, for 45,000 values."""
    if pa.types.is_boolean(present.type) and not present.null_count:
        return _boolean_counts(present)
    if (
        pa.types.is_dictionary(present.type)
        and not present.null_count
        and len(present.dictionary) <= _FEW_WORDS
        and not present.dictionary.null_count
    ):
        return _dictionary_counts(present)
    return pc.value_counts(present)


def _boolean_counts(present: pa.BooleanArray) -> pa.StructArray:
    trues = int(pc.sum(present).as_py() or 0)
    first = bool(present[0].as_py())
    seen = [(v, trues if v else len(present) - trues) for v in (first, not first)]
    seen = [(v, n) for v, n in seen if n]
    return pa.StructArray.from_arrays(
        [
            pa.array(np.array([v for v, _ in seen], dtype=bool)),
            pa.array(np.array([n for _, n in seen], dtype=np.int64)),
        ],
        names=["values", "counts"],
    )


# For categories: dictionaries of at most _FEW_WORDS entries. Codes first seen
# in the leading _FIRST_LOOK rows are in order of first appearance without a
# search; a code first seen later is found by one pass each, up to
# _LATE_CODES of them. Beyond these, Arrow's hashing is the cheaper count.
_FEW_WORDS = 64
_FIRST_LOOK = 1024
_LATE_CODES = 8


def _dictionary_counts(present: pa.DictionaryArray) -> pa.StructArray:
    codes = present.indices.to_numpy(zero_copy_only=True)
    counts = np.bincount(codes, minlength=len(present.dictionary))
    order = list(dict.fromkeys(codes[:_FIRST_LOOK].tolist()))
    late = np.count_nonzero(counts) - len(order)
    if late > _LATE_CODES:
        return pc.value_counts(present)
    if late:
        early = set(order)
        found = [int(c) for c in np.flatnonzero(counts) if int(c) not in early]
        order += sorted(found, key=lambda c: int(np.argmax(codes == c)))
    taken = np.array(order, dtype=np.int64)
    return pa.StructArray.from_arrays(
        [present.dictionary.take(pa.array(taken)), pa.array(counts[taken].astype(np.int64))],
        names=["values", "counts"],
    )


@dataclass
class Violations:
    """How many values broke a rule, and a few of them to show."""

    count: int = 0
    examples: list[Any] = field(default_factory=list)
    extreme: Any = None  # the smallest (min rule) or largest (max rule) offender

    def add(self, offending: pa.Array, extreme: Literal["min", "max"] | None = None) -> None:
        if not len(offending):
            return
        self.count += len(offending)
        if extreme:
            value = (pc.min if extreme == "min" else pc.max)(offending).as_py()
            better = min if extreme == "min" else max
            self.extreme = value if self.extreme is None else better(self.extreme, value)
        if len(self.examples) < EXAMPLES_KEPT:
            try:
                distinct = pc.unique(offending)
            except pa.ArrowNotImplementedError:  # nested types: look at the head
                distinct = offending.slice(0, 100)
            self._add_examples(distinct)

    def add_counted(self, distinct: pa.Array, counts: pa.Array) -> None:
        """Offending values given as distinct values (in order of first
        appearance, as `pc.unique` gives them) and how often each occurred."""
        if not len(distinct):
            return
        self.count += pc.sum(counts).as_py()
        if len(self.examples) < EXAMPLES_KEPT:
            self._add_examples(distinct)

    def _add_examples(self, distinct: pa.Array) -> None:
        for value in distinct.slice(0, EXAMPLES_KEPT * 2).to_pylist():
            if len(self.examples) < EXAMPLES_KEPT and value not in self.examples:
                self.examples.append(value)


@dataclass
class TopCounter:
    """Value counts with bounded memory: exact while a column has fewer than
    `keep` distinct values, approximate (and flagged) beyond."""

    keep: int = CATEGORIES_KEPT
    counts: dict[Any, int] = field(default_factory=dict)
    approximate: bool = False
    unsupported: bool = False

    def add(self, values: pa.Array) -> pa.StructArray | None:
        """Count one batch; its value counts (every distinct present value, in
        order of first appearance), or None when there are none to give."""
        present = values.drop_null()
        if self.unsupported or not len(present):
            return None
        try:
            counted = table = value_counts(present)
        except pa.ArrowNotImplementedError:  # nested types have no hash kernel
            self.unsupported = True
            return None
        if len(table) > self.keep:
            top = pc.select_k_unstable(table.field("counts"), self.keep, [("", "descending")])
            table = table.take(top)
            self.approximate = True
        for value, n in zip(
            table.field("values").to_pylist(), table.field("counts").to_pylist(), strict=True
        ):
            self.counts[value] = self.counts.get(value, 0) + n
        if len(self.counts) > 2 * self.keep:
            self.counts = dict(heapq.nlargest(self.keep, self.counts.items(), key=itemgetter(1)))
            self.approximate = True
        return counted

    def __deepcopy__(self, memo: dict) -> TopCounter:
        # The keys are scalars (immutable): a plain dict copy is a deep copy,
        # at a fraction of copy.deepcopy's cost per key (scan.py copies the
        # statistics before each CSV object it parses typed).
        return replace(self, counts=dict(self.counts))

    def top(self, n: int) -> list[tuple[Any, int]]:
        return sorted(self.counts.items(), key=lambda item: (-item[1], str(item[0])))[:n]


# --- one column ------------------------------------------------------------


@dataclass
class ColumnStats:
    """Everything learnt about one column so far."""

    name: str
    declared: Column | None = None
    present_rows: int = 0  # rows of objects that have the column
    nulls: int = 0  # empty cells in those rows
    absent_rows: int = 0  # rows of objects without the column
    absent_objects: int = 0
    absent_example: str | None = None
    candidates: list[str] = field(default_factory=lambda: list(KINDS))
    found_types: set[str] = field(default_factory=set)  # typed data not of the declared kind
    numbers: Summary = field(default_factory=Summary)
    times: Summary = field(default_factory=Summary)
    categories: TopCounter = field(default_factory=TopCounter)
    wrong_type: Violations = field(default_factory=Violations)
    below_min: Violations = field(default_factory=Violations)
    above_max: Violations = field(default_factory=Violations)
    not_allowed: Violations = field(default_factory=Violations)
    _allowed: pa.Array | None = None
    _uncounted: bool = False  # some values were not counted into categories

    def __post_init__(self) -> None:
        if self.declared is not None:
            self.candidates = [self.declared.type]
            if self.declared.allowed_values is not None:
                given = pa.array(self.declared.allowed_values, pa.string())
                self._allowed = coerce(given, self.declared.type).values.drop_null()

    @property
    def kind(self) -> str | None:
        """The declared kind, or the most specific one every value fits
        (None while no value has been seen)."""
        if self.declared is not None:
            return self.declared.type
        if self.present_rows == self.nulls:
            return None
        return self.candidates[0] if self.candidates else "string"

    def add_absent(self, rows: int, objects: int, example: str) -> None:
        self.absent_rows += rows
        self.absent_objects += objects
        self.absent_example = self.absent_example or example

    def update(self, column: pa.Array | pa.ChunkedArray, typed: bool) -> None:
        """Add one batch of the column; `typed` when the format stores types
        (Parquet), so a mismatch can say what type was found."""
        # Only a declared string column takes dictionaries as they are; every
        # other use of the values reads plain arrays.
        keep = self.declared is not None and self.declared.type == "string"
        array = plain(column, keep_dictionary=keep)
        self.present_rows += len(array)
        self.nulls += array.null_count
        if array.null_count == len(array):
            return
        if self.declared is not None:
            self._update_declared(array, self.declared, typed)
        else:
            self._update_inferred(array)

    def _update_declared(self, array: pa.Array, declared: Column, typed: bool) -> None:
        coerced = coerce(array, declared.type)
        if coerced.invalid_count:
            self.wrong_type.add(pc.filter(array, coerced.invalid))
            if typed:
                self.found_types.add(str(array.type))
        values = coerced.values
        profiled = self._profile(values, {declared.type})
        numeric = declared.type in ("integer", "float")
        if numeric and profiled is not None:
            self._check_range(values, declared, *profiled)
        if self._allowed is not None:
            self._check_allowed(values, None if numeric else profiled)

    def _check_range(self, values: pa.Array, declared: Column, low: Any, high: Any) -> None:
        # The batch's own extremes decide whether any value can break a rule,
        # so a batch within range (the usual case) costs no pass over it.
        if declared.min is not None and low < declared.min:
            self.below_min.add(pc.filter(values, pc.less(values, declared.min)), "min")
        if declared.max is not None and high > declared.max:
            self.above_max.add(pc.filter(values, pc.greater(values, declared.max)), "max")

    def _check_allowed(self, values: pa.Array, counts: pa.StructArray | None) -> None:
        if counts is None:
            outside = pc.invert(pc.is_in(values, value_set=self._allowed))
            self.not_allowed.add(pc.filter(values, pc.and_(pc.is_valid(values), outside)))
            return
        # The profile's value counts hold each distinct value once: checking
        # those instead of every row is the same answer for a fraction of the work.
        distinct = counts.field("values")
        outside = pc.invert(pc.is_in(distinct, value_set=self._allowed))
        self.not_allowed.add_counted(
            pc.filter(distinct, outside), pc.filter(counts.field("counts"), outside)
        )

    def _update_inferred(self, array: pa.Array) -> None:
        fitting = self._fitting(array)
        self.candidates = [k for k in self.candidates if k in fitting]
        # Integer and float share one numeric summary; the first that fits feeds it.
        kind = next((k for k in ("integer", "float", "datetime") if k in fitting), None)
        if kind:
            self._profile(fitting[kind], {kind})
        if self.candidates and self.candidates[0] in ("string", "boolean"):
            # Rows seen while the column still looked numeric were not counted.
            self.categories.approximate |= self._uncounted
            self.categories.add(array)
        else:
            self._uncounted = True

    def _fitting(self, array: pa.Array) -> dict[str, pa.Array]:
        """The candidate kinds this batch fits, with its values read as each."""
        if not pa.types.is_string(array.type):
            kinds = typed_kinds(array.type)
            return {k: coerce(array, k).values for k in self.candidates if k in kinds}
        fitting = {}
        for kind in self.candidates:
            coerced = coerce(array, kind)
            if not coerced.invalid_count:
                fitting[kind] = coerced.values
        return fitting

    def _profile(self, values: pa.Array, kinds: set[str]) -> Any:
        """Add the batch to the profile; what the summary saw of it: (min, max)
        for numbers, the value counts for categories, None for datetimes or
        a batch without values (the declared checks reuse it)."""
        if kinds & {"integer", "float"}:
            return self.numbers.add(values)
        if "datetime" in kinds:
            self.times.add(values, with_total=False)
            return None
        return self.categories.add(values)


# --- the whole table -------------------------------------------------------


class TableScan:
    """Feeds batches of every object into per-column statistics, keeping track
    of columns some objects lack."""

    def __init__(self, schema: DataSchema | None) -> None:
        self.declared = {c.name: c for c in schema.columns} if schema else {}
        self.columns: dict[str, ColumnStats] = {}
        self.rows = 0
        self.objects = 0
        self._first_key: str | None = None
        self._key = ""
        self._names: list[str] = []
        self._typed = False
        self._object_rows = 0

    def start_object(self, key: str, names: list[str], typed: bool) -> None:
        self._key, self._names, self._typed, self._object_rows = key, names, typed, 0
        self._first_key = self._first_key or key
        for name in names:
            if name not in self.columns:
                stats = ColumnStats(name, self.declared.get(name))
                if self.objects:  # a column new in this object was absent before
                    stats.add_absent(self.rows, self.objects, self._first_key)
                self.columns[name] = stats

    def add_batch(self, batch: pa.RecordBatch) -> None:
        for index, name in enumerate(batch.schema.names):
            self.columns[name].update(batch.column(index), self._typed)
        self._object_rows += batch.num_rows

    def finish_object(self) -> None:
        present = set(self._names)
        for stats in self.columns.values():
            if stats.name not in present:
                stats.add_absent(self._object_rows, 1, self._key)
        self.rows += self._object_rows
        self.objects += 1

    def missing_columns(self) -> list[str]:
        """Declared columns no object has."""
        return [name for name in self.declared if name not in self.columns]

    @property
    def null_cells(self) -> int:
        return sum(c.nulls + c.absent_rows for c in self.columns.values())
