import uuid

import pytest

from app.domain.correlation import (
    InvalidCorrelationId,
    correlation_id,
    event_id,
    from_kafka_headers,
    log_context,
    new_correlation_id,
    validate_correlation_id,
)


@pytest.mark.parametrize("value", [
    f"ING:{uuid.uuid4()}", str(uuid.uuid4()), str(uuid.uuid1()), "52f2665d-c087-42e5-a571-89061021a37c".upper(),
    f"query_svc-2:{uuid.uuid4()}",
])
def test_accepted_forms(value):
    assert validate_correlation_id(value) == value


@pytest.mark.parametrize("value", [
    "", "abc", "ING:", "ING:not-a-uuid", f"ING:{uuid.uuid4()}x", f" {uuid.uuid4()}", f"ING:{uuid.uuid4()}\nFAKE LOG LINE",
    f"{'A' * 90}:{uuid.uuid4()}", f"1NG:{uuid.uuid4()}",
])
def test_rejected_forms(value):
    with pytest.raises(InvalidCorrelationId):
        validate_correlation_id(value)


def test_generated_ids_are_valid_and_prefixed():
    generated = new_correlation_id()
    assert generated.startswith("ING:")
    assert validate_correlation_id(generated) == generated


def test_generated_ids_are_distinct_version_4_uuids():
    generated = [new_correlation_id("QRY") for _ in range(2000)]
    assert len(set(generated)) == len(generated)
    for value in generated:
        service, _, text = value.partition(":")
        parsed = uuid.UUID(text)
        assert (service, str(parsed)) == ("QRY", text)  # canonical: lower case, hyphenated
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
    # every bit outside the version and variant varies
    varying = 0
    for value in generated:
        varying |= uuid.UUID(value[4:]).int ^ uuid.UUID(generated[0][4:]).int
    assert varying == (1 << 128) - 1 & ~((0xF000 << 64) | (0xC000 << 48))


def test_log_context_sets_and_restores_even_on_error():
    with log_context("ING:outer"):
        with pytest.raises(RuntimeError), log_context("ING:inner", "event-1"):
            assert (correlation_id.get(), event_id.get()) == ("ING:inner", "event-1")
            raise RuntimeError
        assert (correlation_id.get(), event_id.get()) == ("ING:outer", None)
    assert (correlation_id.get(), event_id.get()) == (None, None)


def test_kafka_headers_accept_both_names_and_drop_bad_values():
    corr = str(uuid.uuid4())
    assert from_kafka_headers([("correlation_id", corr.encode())]) == corr
    assert from_kafka_headers([("correlationId", corr.encode())]) == corr
    assert from_kafka_headers({"correlation_id": corr.encode()}) == corr
    assert from_kafka_headers([("correlation_id", b"\xff")]) is None
    assert from_kafka_headers([("other", corr.encode())]) is None
    assert from_kafka_headers(None) is None
