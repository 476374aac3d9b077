-- TABLE_RETENTION: each worker finds expired ids by created_at, and resumes
-- where the last owner of a table partition stopped.
-- depends: 0002_failed_status

CREATE INDEX IF NOT EXISTS timestamp_records_created_at ON timestamp_records (created_at);

CREATE TABLE IF NOT EXISTS table_expiry_cursors (
    table_partition  integer PRIMARY KEY,
    expired_before   timestamptz NOT NULL
);
