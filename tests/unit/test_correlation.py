import uuid

import pytest

from app.domain.correlation import InvalidCorrelationId, from_kafka_headers, new_correlation_id, validate_correlation_id


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


def test_kafka_headers_accept_both_names_and_drop_bad_values():
    corr = str(uuid.uuid4())
    assert from_kafka_headers([("correlation_id", corr.encode())]) == corr
    assert from_kafka_headers([("correlationId", corr.encode())]) == corr
    assert from_kafka_headers({"correlation_id": corr.encode()}) == corr
    assert from_kafka_headers([("correlation_id", b"\xff")]) is None
    assert from_kafka_headers([("other", corr.encode())]) is None
    assert from_kafka_headers(None) is None
