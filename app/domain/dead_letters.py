"""Dead letters: messages that can never be processed, kept with the reason.

Each goes to the dead-letter topic (`<COMMAND_TOPIC>.dlq`) with its original
key and value and headers naming the reason, the original position and the
correlation id; the partition moves on. Delivery is at least once: a batch
replayed after a crash may dead-letter a message again, so readers key on the
original position (`dlq.original.*`).
"""

from __future__ import annotations

from dataclasses import dataclass

from app.domain.batch_plan import ConsumedMessage, describe_error
from app.domain.kafka_headers import UNDECODABLE_RECORD, encode_headers, undecodable_header_names
from app.domain.records import ProcessedEvent

REASON = "dlq.reason"
ERROR_TYPE = "dlq.error.type"
ERROR_MESSAGE = "dlq.error.message"
VALUE_OMITTED = "dlq.value.omitted"
PROCESSING_ERROR = "processing_error"  # the reason of a message whose processing raised
ORIGINAL_TOPIC = "dlq.original.topic"
ORIGINAL_PARTITION = "dlq.original.partition"
ORIGINAL_OFFSET = "dlq.original.offset"
ORIGINAL_HEADERS = "dlq.original.headers"  # an undecodable record's headers, byte for byte (encode_headers)
CORRELATION_ID = "correlation_id"


@dataclass(frozen=True)
class DeadLetter:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    def without_value(self, why: BaseException) -> "DeadLetter":
        """The same letter with no value, saying why (the original stays in the command topic)."""
        return DeadLetter(self.key, None, self.headers + [(VALUE_OMITTED, type(why).__name__.encode())])


def dead_letter(message: ConsumedMessage, event: ProcessedEvent, error: BaseException | None = None) -> DeadLetter:
    """The dead letter of an invalid message, or of one whose processing raised `error` (pure)."""
    undecodable = error is None and bool(undecodable_header_names(message.headers))
    if undecodable:
        reason = UNDECODABLE_RECORD
    else:
        reason = PROCESSING_ERROR if error is not None else (event.error or event.status)
    headers = [
        (REASON, reason.encode()),
        (ORIGINAL_TOPIC, message.source.topic.encode()),
        (ORIGINAL_PARTITION, str(message.source.partition).encode()),
        (ORIGINAL_OFFSET, str(message.source.offset).encode()),
    ]
    if error is not None:
        headers.append((ERROR_TYPE, type(error).__name__.encode()))
        headers.append((ERROR_MESSAGE, describe_error(error).encode()))
    if undecodable:
        headers.append((ERROR_MESSAGE, (event.error or "").encode()))
        headers.append((ORIGINAL_HEADERS, encode_headers(message.headers)))
    if event.correlation_id:
        headers.append((CORRELATION_ID, event.correlation_id.encode()))
    return DeadLetter(message.key, message.value, headers)


def describe(headers) -> dict[str, str]:
    """The dead-letter headers of a message, decoded."""
    wanted = {REASON, ERROR_TYPE, ERROR_MESSAGE, VALUE_OMITTED, ORIGINAL_TOPIC, ORIGINAL_PARTITION, ORIGINAL_OFFSET,
              ORIGINAL_HEADERS, CORRELATION_ID}
    return {name: value.decode("utf-8", "replace") for name, value in headers or () if name in wanted}
