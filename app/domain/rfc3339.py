"""Strict RFC 3339 date-time parsing and formatting (pure functions)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

RFC3339_FORMAT = "YYYY-MM-DDThh:mm:ss[.fraction](Z|+hh:mm|-hh:mm), e.g. 2009-09-28T19:03:12Z"

# RFC 3339 section 5.6 `date-time`; 'T' and 'Z' may be lower case (5.6, NOTE).
_DATE_TIME = re.compile(
    r"(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})[Tt]"
    r"(?P<hour>\d{2}):(?P<minute>\d{2}):(?P<second>\d{2})"
    r"(?:\.(?P<fraction>\d+))?"
    r"(?:(?P<utc>[Zz])|(?P<sign>[+-])(?P<off_hour>\d{2}):(?P<off_minute>\d{2}))",
    re.ASCII,  # \d must not match other scripts' digits
)


MAX_FRACTION_DIGITS = 9


class InvalidTimestamp(ValueError):
    """The text is not an RFC 3339 date-time this service can store."""


# The shapes nearly every producer writes, every part in range but the day of
# the month: `datetime.fromisoformat` (C) parses them; everything else, and what
# it refuses, takes the full parse, which says why.
_COMMON = re.compile(
    r"\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d{1,9})?"
    r"(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)",
    re.ASCII,
)
_is_common = _COMMON.fullmatch
_UTC = timezone.utc


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 date-time into an aware datetime in UTC.

    The common shapes are parsed in C; the result is the same as the full parse's
    (`parse_rfc3339_fully`; tests/unit/test_timestamps.py compares them).
    """
    if type(text) is str and _is_common(text) and not text.startswith("0000"):
        try:
            moment = datetime.fromisoformat(text)
            return moment if moment.tzinfo is _UTC else moment.astimezone(_UTC)
        except (ValueError, OverflowError):
            pass  # e.g. February 30th, or past year 9999 in UTC: the full parse says which
    return parse_rfc3339_fully(text)


def parse_rfc3339_fully(text: str) -> datetime:
    """Parse an RFC 3339 date-time into an aware datetime in UTC, or say what is wrong with it.

    A fraction of up to MAX_FRACTION_DIGITS (nanoseconds, what most producers
    write) is accepted and truncated to microseconds (what PostgreSQL stores);
    a longer one is refused, saying so. The same for HTTP and Kafka.
    Leap seconds (:60) are rejected: neither Python nor PostgreSQL represents them.
    """
    if not isinstance(text, str):
        raise InvalidTimestamp("timestamp must be a string")
    match = _DATE_TIME.fullmatch(text)
    if match is None:
        raise InvalidTimestamp("not an RFC 3339 date-time")
    fraction = match["fraction"] or ""
    if len(fraction) > MAX_FRACTION_DIGITS:  # before any int(): past 4300 digits int() raises ValueError
        raise InvalidTimestamp(f"the fraction of a second has {len(fraction)} digits; "
                               f"at most {MAX_FRACTION_DIGITS} (nanoseconds) are accepted")
    part = {k: int(v) for k, v in match.groupdict().items() if v and v.isdigit() and k != "fraction"}
    if part["second"] == 60:
        raise InvalidTimestamp("leap seconds (second 60) are not supported")
    if not match["utc"]:
        if part["off_hour"] > 23 or part["off_minute"] > 59:
            raise InvalidTimestamp("UTC offset out of range; hours must be 00-23, minutes 00-59")
    if part["year"] == 0:
        raise InvalidTimestamp("year 0000 is out of range; years run from 0001 to 9999")
    microsecond = int((fraction + "000000")[:6])
    try:
        local = datetime(part["year"], part["month"], part["day"],
                         part["hour"], part["minute"], part["second"], microsecond)
    except ValueError as exc:  # e.g. 2023-02-29, month 13, hour 24
        raise InvalidTimestamp(f"date or time out of range: {exc}") from None
    offset = timedelta(0)
    if not match["utc"]:
        offset = timedelta(hours=part["off_hour"], minutes=part["off_minute"])
        if match["sign"] == "-":
            offset = -offset
    try:
        return (local - offset).replace(tzinfo=timezone.utc)
    except OverflowError:
        raise InvalidTimestamp("timestamp is out of range once converted to UTC") from None


def in_utc(moment: datetime) -> datetime:
    """The same moment in UTC (tzinfo timezone.utc); msgspec then encodes it as format_rfc3339 does."""
    if moment.tzinfo is _UTC:
        return moment
    offset = moment.utcoffset()
    if offset is None:
        raise ValueError("naive datetime; an aware one is required")
    return moment.astimezone(_UTC) if offset else moment.replace(tzinfo=_UTC)


def format_rfc3339(moment: datetime) -> str:
    """Format an aware datetime as RFC 3339 in UTC with a 'Z' suffix."""
    offset = moment.utcoffset()
    if offset is None:
        raise ValueError("naive datetime; an aware one is required")
    if offset:
        moment = moment.astimezone(timezone.utc)
    return moment.isoformat()[:-6] + "Z"  # without its "+00:00"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
