-- Back to three statuses; refuses (check violation) while 'failed' rows exist.
ALTER TABLE processed_events DROP CONSTRAINT IF EXISTS processed_events_status_check;
ALTER TABLE processed_events ADD CONSTRAINT processed_events_status_check
    CHECK (status IN ('persisted', 'duplicate', 'invalid'));
