"""A point in time as pkic records it: UTC, to the second, written ``2026-11-27T12:00:00Z``.

:class:`Stamp` is a ``datetime`` (it compares with and subtracts from any aware
datetime) that prints as the text the state file holds, so a message or a report that
shows one shows the same text as before it was parsed. The state's records are parsed
into stamps once, when the state or a journal step is read, and written back as text
(:func:`stamp_json`); nothing re-parses them in between.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Self, overload

_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# No time pkic records is before X.509's UTCTime begins (1950): an earlier one is damage,
# and would take the arithmetic on it (a refresh point, a window) below datetime's range
FIRST_YEAR = "1950"


class Stamp(datetime):
    """A UTC time to the second that prints as ``2026-11-27T12:00:00Z``."""

    __slots__ = ()

    @classmethod
    def of(cls, dt: datetime) -> Self:
        """``dt`` (aware) in UTC, its fraction of a second dropped: what the text keeps."""
        u = dt.astimezone(UTC)
        return cls(u.year, u.month, u.day, u.hour, u.minute, u.second, tzinfo=UTC)

    @classmethod
    def parse(cls, text: str) -> Self:
        """``2026-11-27T12:00:00Z`` -> a stamp; ValueError for anything else."""
        if not isinstance(text, str) or len(text) != 20 or text[10] != "T" or text[19] != "Z" or text[:4] < FIRST_YEAR:
            raise ValueError(f"not a UTC timestamp: {text!r}"[:80])
        stamp = cls.of(datetime.fromisoformat(text[:19]).replace(tzinfo=UTC))
        if str(stamp) != text:  # 3.11's fromisoformat also reads week dates (2026-W48-5): one spelling only
            raise ValueError(f"not a UTC timestamp: {text!r}"[:80])
        return stamp

    # typeshed lets a datetime subtract only its own type from itself; any aware datetime will do
    @overload  # type: ignore[override]
    def __sub__(self, other: datetime, /) -> timedelta: ...
    @overload
    def __sub__(self, other: timedelta, /) -> Self: ...
    def __sub__(self, other: timedelta | datetime, /) -> Self | timedelta:
        return super().__sub__(other)  # type: ignore[operator]

    def __str__(self) -> str:
        return self.strftime(_FORMAT)

    def __format__(self, spec: str) -> str:
        return str(self) if not spec else super().__format__(spec)

    def __repr__(self) -> str:
        return f"Stamp({str(self)!r})"


def stamp_json(value: object) -> str:
    """``json.dumps``'s ``default`` for records that hold stamps: their text."""
    if isinstance(value, Stamp):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")
