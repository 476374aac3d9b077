from datetime import datetime, timezone

import pytest

from app.domain.rfc3339 import InvalidTimestamp, format_rfc3339, parse_rfc3339

UTC = timezone.utc


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2009-09-28T19:03:12Z", datetime(2009, 9, 28, 19, 3, 12, tzinfo=UTC)),
        ("2009-09-28t19:03:12z", datetime(2009, 9, 28, 19, 3, 12, tzinfo=UTC)),
        ("2009-09-28T21:03:12+02:00", datetime(2009, 9, 28, 19, 3, 12, tzinfo=UTC)),
        ("2009-09-28T14:33:12-04:30", datetime(2009, 9, 28, 19, 3, 12, tzinfo=UTC)),
        ("2009-09-28T19:03:12-00:00", datetime(2009, 9, 28, 19, 3, 12, tzinfo=UTC)),
        ("2009-09-28T19:03:12.5Z", datetime(2009, 9, 28, 19, 3, 12, 500000, tzinfo=UTC)),
        ("2009-09-28T19:03:12.123456Z", datetime(2009, 9, 28, 19, 3, 12, 123456, tzinfo=UTC)),
        # Nanoseconds are truncated to the microseconds PostgreSQL stores.
        ("2009-09-28T19:03:12.123456789Z", datetime(2009, 9, 28, 19, 3, 12, 123456, tzinfo=UTC)),
        ("2024-02-29T00:00:00Z", datetime(2024, 2, 29, tzinfo=UTC)),
        # The offset moves the date across a year boundary.
        ("2000-01-01T00:30:00+01:00", datetime(1999, 12, 31, 23, 30, tzinfo=UTC)),
        ("0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=UTC)),
        ("9999-12-31T23:59:59Z", datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ],
)
def test_valid_timestamps_parse_to_utc(text, expected):
    parsed = parse_rfc3339(text)
    assert parsed == expected
    assert parsed.utcoffset().total_seconds() == 0


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "not an RFC 3339"),
        ("garbage", "not an RFC 3339"),
        ("2009-09-28", "not an RFC 3339"),
        ("2009-09-28T19:03:12", "not an RFC 3339"),  # no offset
        ("2009-09-28 19:03:12Z", "not an RFC 3339"),
        ("2009-09-28T19:03Z", "not an RFC 3339"),
        ("2009-9-28T19:03:12Z", "not an RFC 3339"),
        ("2009-09-28T19:03:12.Z", "not an RFC 3339"),
        ("2009-09-28T19:03:12.1234567890Z", "fraction of a second has 10 digits; at most 9"),
        # Past 4300 digits int() raises ValueError, not InvalidTimestamp: the length is checked first.
        ("2009-09-28T19:03:12." + "1" * 5000 + "Z", "fraction of a second has 5000 digits; at most 9"),
        ("2009-09-28T19:03:12+0200", "not an RFC 3339"),
        ("2009-09-28T19:03:12 +02:00", "not an RFC 3339"),
        ("+12009-09-28T19:03:12Z", "not an RFC 3339"),
        ("２００９-09-28T19:03:12Z", "not an RFC 3339"),  # non-ASCII digits
        ("2009-09-28T19:03:12Z\n", "not an RFC 3339"),
        ("2023-02-29T00:00:00Z", "out of range"),  # not a leap year
        ("2100-02-29T00:00:00Z", "out of range"),
        ("2009-13-01T00:00:00Z", "out of range"),
        ("2009-00-10T00:00:00Z", "out of range"),
        ("2009-04-31T00:00:00Z", "out of range"),
        ("2009-09-28T24:00:00Z", "out of range"),
        ("2009-09-28T23:60:00Z", "out of range"),
        ("2016-12-31T23:59:60Z", "leap seconds"),
        ("2009-09-28T19:03:12+24:00", "UTC offset"),
        ("2009-09-28T19:03:12+02:60", "UTC offset"),
        ("0000-01-01T00:00:00Z", "year 0000"),
        ("0001-01-01T00:00:00+01:00", "out of range once converted"),
        ("9999-12-31T23:59:59-01:00", "out of range once converted"),
    ],
)
def test_invalid_timestamps_are_rejected_with_a_reason(text, reason):
    with pytest.raises(InvalidTimestamp, match=reason):
        parse_rfc3339(text)


def test_non_string_is_rejected():
    with pytest.raises(InvalidTimestamp):
        parse_rfc3339(1254164592)


@pytest.mark.parametrize(
    "moment, text",
    [
        (datetime(2009, 9, 28, 19, 3, 12, tzinfo=UTC), "2009-09-28T19:03:12Z"),
        (datetime(2009, 9, 28, 19, 3, 12, 500, tzinfo=UTC), "2009-09-28T19:03:12.000500Z"),
    ],
)
def test_format_is_utc_with_z(moment, text):
    assert format_rfc3339(moment) == text
    assert parse_rfc3339(text) == moment


def test_format_rejects_naive_datetimes():
    with pytest.raises(ValueError):
        format_rfc3339(datetime(2009, 9, 28))


def _outcome(parse, text):
    try:
        moment = parse(text)
    except InvalidTimestamp as exc:
        return "invalid", str(exc)
    return moment, repr(moment.tzinfo)


def _random_timestamp(rng) -> str:
    """Mostly well-formed date-times, with every part sometimes out of range or of the wrong shape."""
    def number(width, high):
        return str(rng.randint(0, high)).zfill(width)

    text = (f"{number(4, 9999)}-{number(2, 13)}-{number(2, 32)}{rng.choice('TTTt ')}"
            f"{number(2, 25)}:{number(2, 61)}:{rng.choice([number(2, 59), number(2, 59), '60', '61'])}")
    if rng.random() < 0.7:
        text += "." + "".join(rng.choice("0123456789") for _ in range(rng.choice([1, 3, 6, 7, 9, 10])))
    offset = rng.choice(["Z", "z", "", "+", "-"])
    if offset in "+-":
        offset += f"{number(2, 24)}:{number(2, 60)}"
    return text + offset


def test_the_fast_parse_decides_exactly_as_the_full_parse():
    """parse_rfc3339 parses common shapes in C; value, time zone and error must be the full parse's."""
    import random

    from app.domain.rfc3339 import parse_rfc3339_fully

    rng = random.Random(21)
    texts = [_random_timestamp(rng) for _ in range(50_000)] + [
        "9999-12-31T23:59:59-00:01", "0001-01-01T00:00:00+00:01", "0000-01-01T00:00:00Z", "2023-02-29T00:00:00Z",
        "2024-02-30T00:00:00Z", "2020-04-31T00:00:00Z", "2020-01-01T00:00:00.1234567890Z", "２０２０-01-01T00:00:00Z",
    ]
    outcomes = {"valid": 0, "invalid": 0}
    for text in texts:
        fast, full = _outcome(parse_rfc3339, text), _outcome(parse_rfc3339_fully, text)
        assert fast == full, text
        outcomes["invalid" if full[0] == "invalid" else "valid"] += 1
    assert min(outcomes.values()) > 5_000  # both kinds are well represented
