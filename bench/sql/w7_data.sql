-- W7: the app's table before msgbilling, :n messages, no extension yet:
-- attach runs on it while the app inserts.
\set ON_ERROR_STOP on
\ir app_table.sql
\ir insert_messages.sql
VACUUM ANALYZE;
