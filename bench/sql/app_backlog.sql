-- :extra more pending messages like the app's (bench/sql/app_insert.pgbench),
-- for a backlog the size of one the throughput rounds grew (W3).
INSERT INTO messages (org_id, content, model, tokens_used)
SELECT md5((1 + (random() * 9999)::int)::text)::uuid, 'hello', 'gpt-4o-mini', 120
  FROM generate_series(1, :extra);
