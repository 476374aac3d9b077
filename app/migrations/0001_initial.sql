-- Timestamp records and the processing log.
-- depends:

CREATE TABLE IF NOT EXISTS timestamp_records (
    id               uuid        PRIMARY KEY,
    event_timestamp  timestamptz NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    received_at      timestamptz,
    processed_at     timestamptz NOT NULL,
    correlation_id   text,
    source_topic     text        NOT NULL,
    source_partition integer     NOT NULL,
    source_offset    bigint      NOT NULL
);

-- One row per consumed Kafka message, keyed by its position, so a replayed
-- batch adds nothing.
CREATE TABLE IF NOT EXISTS processed_events (
    topic          text        NOT NULL,
    partition      integer     NOT NULL,
    "offset"       bigint      NOT NULL,
    event_id       uuid,
    correlation_id text,
    status         text        NOT NULL CHECK (status IN ('persisted', 'duplicate', 'invalid')),
    error          text,
    processed_at   timestamptz NOT NULL,
    PRIMARY KEY (topic, partition, "offset")
);

CREATE INDEX IF NOT EXISTS processed_events_correlation_id ON processed_events (correlation_id);
CREATE INDEX IF NOT EXISTS processed_events_event_id ON processed_events (event_id);
CREATE INDEX IF NOT EXISTS timestamp_records_correlation_id ON timestamp_records (correlation_id);
