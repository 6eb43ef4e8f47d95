"""From column statistics to validation failures a person can act on. Pure."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import date, datetime
from typing import Any

from ..api.dataset import Column, Quality, ValidationFailure
from .columns import ColumnStats, TableScan

SHOWN_ALLOWED = 5
SHOWN_TEXT = 40


def show(value: Any) -> str:
    """A value as a person would type it in the spec or find it in the file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and math.isfinite(value) else repr(value)
    if isinstance(value, datetime | date):
        return repr(value.isoformat())
    if isinstance(value, str):
        clipped = value if len(value) <= SHOWN_TEXT else value[: SHOWN_TEXT - 1] + "…"
        return repr(clipped)
    return str(value)


def values(n: int) -> str:
    return f"{n} value" if n == 1 else f"{n} values"


def examples(items: list[Any]) -> str:
    return ", ".join(show(v) for v in items)


def evaluate(scan: TableScan, quality: Quality | None) -> list[ValidationFailure]:
    """Every failed rule, in a stable order: table rules, then column by column."""
    failures = list(_table_failures(scan, quality))
    for stats in scan.columns.values():
        failures.extend(_column_failures(stats, scan, quality))
    for name in scan.missing_columns():
        found = ", ".join(list(scan.columns)[:10]) or "none"
        message = (
            f"column {name!r} is declared in spec.schema.columns but not in the data "
            f"(found columns: {found})"
        )
        failures.append(ValidationFailure(rule="missingColumn", column=name, message=message))
    return failures


def _table_failures(scan: TableScan, quality: Quality | None) -> Iterator[ValidationFailure]:
    if quality and quality.min_rows is not None and scan.rows < quality.min_rows:
        message = f"{scan.rows} rows, fewer than quality.minRows {quality.min_rows}"
        yield ValidationFailure(rule="minRows", message=message)


def _column_failures(
    stats: ColumnStats, scan: TableScan, quality: Quality | None
) -> Iterator[ValidationFailure]:
    name = stats.name
    declared = stats.declared

    def failure(rule: str, message: str) -> ValidationFailure:
        return ValidationFailure(rule=rule, column=name, message=f"column {name!r}: {message}")

    if declared is not None and stats.absent_objects:
        yield failure(
            "missingColumn",
            f"missing from {stats.absent_objects} of {scan.objects} objects, "
            f"e.g. {stats.absent_example!r}",
        )
    if declared is not None:
        yield from (failure(rule, text) for rule, text in _declared_messages(stats, declared))
    if quality and quality.max_null_fraction is not None and scan.rows:
        empty = stats.nulls + stats.absent_rows
        if empty / scan.rows > quality.max_null_fraction:
            yield failure(
                "maxNullFraction",
                f"{empty / scan.rows:.1%} empty ({empty} of {scan.rows} rows), "
                f"more than quality.maxNullFraction {show(quality.max_null_fraction)}",
            )


def _declared_messages(stats: ColumnStats, declared: Column) -> Iterator[tuple[str, str]]:
    wrong = stats.wrong_type
    if wrong.count:
        found = f" (found {', '.join(sorted(stats.found_types))})" if stats.found_types else ""
        yield (
            "type",
            f"{values(wrong.count)} not of type {declared.type}{found}, "
            f"e.g. {examples(wrong.examples)}",
        )
    if not declared.nullable and stats.nulls:
        yield "notNull", f"{values(stats.nulls)} empty, but nullable is false"
    low, high, bad = stats.below_min, stats.above_max, stats.not_allowed
    if low.count:
        yield (
            "min",
            f"{values(low.count)} below min {show(declared.min)}, smallest {show(low.extreme)}",
        )
    if high.count:
        yield (
            "max",
            f"{values(high.count)} above max {show(declared.max)}, largest {show(high.extreme)}",
        )
    if bad.count and declared.allowed_values is not None:
        allowed = declared.allowed_values
        more = ", ..." if len(allowed) > SHOWN_ALLOWED else ""
        listed = ", ".join(allowed[:SHOWN_ALLOWED]) + more
        yield (
            "allowedValues",
            f"{values(bad.count)} not in allowedValues [{listed}], e.g. {examples(bad.examples)}",
        )
