DROP TABLE IF EXISTS table_expiry_cursors;
DROP INDEX IF EXISTS timestamp_records_created_at;
