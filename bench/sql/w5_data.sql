-- W5: a table of :n messages the app had before msgbilling (attach marks
-- them legacy, as on a real migration), then a backlog of 10,000 new
-- messages, half of them billed: stats() on a large table with an
-- ordinary backlog.
\set ON_ERROR_STOP on
\ir app_table.sql
\ir insert_messages.sql
CREATE EXTENSION msgbilling;
SET client_min_messages = warning;
SELECT msgbilling.attach('messages', model_column => 'model',
                         created_column => 'created_at');
SELECT msgbilling.set_price(NULL, 0.000002, '2020-01-01');
SELECT count(msgbilling.top_up(md5(o::text)::uuid, 1000000))
  FROM generate_series(1, :orgs) o;
INSERT INTO messages (org_id, content, model, tokens_used)
SELECT md5((1 + i % :orgs)::text)::uuid, 'new ' || i, 'gpt-4o', 100
  FROM generate_series(1, 10000) i;
SELECT charged FROM msgbilling.process_all_pending(max_messages => 5000);
VACUUM ANALYZE;
