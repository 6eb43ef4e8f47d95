"""Times as the Kubernetes API writes them: RFC 3339, UTC, to the second
("2026-12-04T15:59:16Z"). Every status field, condition and annotation that
holds a time is written by `format_stamp` and read by `parse_stamp`."""

from __future__ import annotations

from datetime import UTC, datetime


def format_stamp(moment: datetime) -> str:
    """`moment`, a UTC time, as the API writes times."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def now_stamp() -> str:
    return format_stamp(datetime.now(UTC))


def parse_stamp(text: str) -> datetime:
    """A time as the API (or a person, with an offset) wrote it, zone-aware.
    Raises ValueError when it is not one."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def as_time(value: str | datetime | None) -> datetime | None:
    """A status field's time, read if it is text; None stays None."""
    if value is None or isinstance(value, datetime):
        return value
    return parse_stamp(value)
