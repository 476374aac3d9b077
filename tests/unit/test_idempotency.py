import uuid

import pytest

from app.domain.idempotency import InvalidIdempotencyKey, command_id_for


def test_same_key_same_id_and_different_keys_differ():
    assert command_id_for("order-42") == command_id_for("order-42")
    assert command_id_for("order-42") != command_id_for("order-43")
    assert command_id_for("order-42").version == 5


def test_id_is_stable_across_releases():
    # Changing the namespace would break keys clients already used.
    assert command_id_for("order-42") == uuid.UUID("72610709-65a7-5e6c-8b99-abfe9878084b")


@pytest.mark.parametrize("key", ["", " ", "has space", "x" * 201, "naïve", "line\nbreak"])
def test_bad_keys_are_rejected(key):
    with pytest.raises(InvalidIdempotencyKey):
        command_id_for(key)
