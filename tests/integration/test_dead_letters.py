"""Dead-letter topic: invalid messages land there with the reason and move on."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

from app.domain.dead_letters import describe
from app.ops.dead_letters import read_dead_letters
from tests.integration.conftest import wait_until
from tests.worker_process import REPO


async def test_invalid_messages_are_dead_lettered_and_can_be_republished(workers, namespace, producer, bootstrap_servers):
    await workers().wait_ready()
    dlq = f"{namespace.topic}.dlq"
    corr = f"ING:{uuid.uuid4()}"
    good = [str(uuid.uuid4()), str(uuid.uuid4())]
    first = await producer.send_and_wait(
        namespace.topic, json.dumps({"command_id": good[0], "event_timestamp": "2020-01-01T00:00:00Z"}).encode(),
        partition=2)
    not_json = await producer.send_and_wait(namespace.topic, b"{oops", key=b"k1", partition=2,
                                            headers=[("correlation_id", corr.encode())])
    bad_uuid = await producer.send_and_wait(
        namespace.topic, json.dumps({"command_id": "nope", "event_timestamp": "2020-01-01T00:00:00Z"}).encode(),
        partition=2)
    await producer.send_and_wait(
        namespace.topic, json.dumps({"command_id": good[1], "event_timestamp": "2020-01-01T00:00:00Z"}).encode(),
        partition=2)
    await namespace.wait_for_records(2)  # the valid message after the invalid ones was not blocked
    assert first.offset < not_json.offset

    async def two_letters():
        letters = await read_dead_letters(bootstrap_servers, dlq)
        return letters if len(letters) >= 2 else None

    letters = await wait_until(two_letters, 30, "two dead letters")
    by_offset = {int(describe(r.headers)["dlq.original.offset"]): r for r in letters}
    assert set(by_offset) == {not_json.offset, bad_uuid.offset}
    oops = by_offset[not_json.offset]
    assert (oops.key, oops.value) == (b"k1", b"{oops")
    info = describe(oops.headers)
    assert info["dlq.original.topic"] == namespace.topic and info["dlq.original.partition"] == "2"
    assert info["correlation_id"] == corr
    assert "not JSON" in info["dlq.reason"]
    assert "not a UUID" in describe(by_offset[bad_uuid.offset].headers)["dlq.reason"]

    listed = subprocess.run([sys.executable, "-m", "app", "dead-letters", "list"], cwd=REPO, env=namespace.env(),
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert "2 dead letters" in listed.stdout and corr in listed.stdout

    again = subprocess.run(
        [sys.executable, "-m", "app", "dead-letters", "republish", f"{oops.partition}:{oops.offset}"],
        cwd=REPO, env=namespace.env(), capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr

    async def dead_lettered_again():
        letters = await read_dead_letters(bootstrap_servers, dlq)
        return [r for r in letters if r.value == b"{oops"] if len(letters) >= 3 else None

    # Still invalid, so it comes back: from the republished copy, with its correlation id.
    repeats = await wait_until(dead_lettered_again, 30, "the republished message to be dead-lettered again")
    assert {describe(r.headers)["correlation_id"] for r in repeats} == {corr}

    async def three_invalid():  # dead letters are sent before their batch commits
        return namespace.query("SELECT count(*) FROM processed_events WHERE status = 'invalid'") == [(3,)]

    await wait_until(three_invalid, 30, "the republished message to be recorded as invalid")


async def test_a_dead_letter_the_broker_refuses_is_sent_without_its_value(workers, namespace, producer,
                                                                           bootstrap_servers):
    from app.adapters.topics import ensure_topic

    dlq = f"{namespace.topic}.dlq"
    await namespace.create_topic()
    # An existing dead-letter topic keeps its config: this one refuses letters over 10 kB.
    await ensure_topic(bootstrap_servers, dlq, 8, 1, {"max.message.bytes": "10000"})
    big = await producer.send_and_wait(namespace.topic, b"x" * 20_000, key=b"big", partition=1)
    await workers().wait_ready()

    async def one_letter():
        letters = await read_dead_letters(bootstrap_servers, dlq)
        return letters or None

    [letter] = await wait_until(one_letter, 60, "the refused dead letter, sent without its value")
    info = describe(letter.headers)
    assert (letter.key, letter.value) == (b"big", None)
    assert info["dlq.value.omitted"] == "MessageSizeTooLargeError"
    assert (info["dlq.original.partition"], info["dlq.original.offset"]) == ("1", str(big.offset))
    assert info["dlq.reason"] == "message value is not JSON"
