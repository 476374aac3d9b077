-- A message whose processing raised is dead-lettered and recorded as failed.
-- depends: 0001_initial

ALTER TABLE processed_events DROP CONSTRAINT IF EXISTS processed_events_status_check;
ALTER TABLE processed_events ADD CONSTRAINT processed_events_status_check
    CHECK (status IN ('persisted', 'duplicate', 'invalid', 'failed'));
