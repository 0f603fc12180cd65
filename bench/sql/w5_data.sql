-- W5: a table of :n messages the app had before msgbilling (attach marks
-- them legacy, as on a real migration), then a backlog of 10,000 new
-- messages, half of them billed: stats() on a large table with an
-- ordinary backlog.
\set ON_ERROR_STOP on
CREATE TABLE messages (
    id bigserial PRIMARY KEY,
    org_id uuid NOT NULL,
    content text,
    model text,
    tokens_used integer,
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO messages (org_id, content, model, tokens_used, created_at)
SELECT md5((1 + (i::bigint * 7919) % :orgs)::text)::uuid, 'message ' || i,
       (ARRAY['gpt-4o', 'gpt-4o-mini', 'llama'])[1 + i % 3],
       50 + (i::bigint * 31) % 4000, '2023-01-01'::timestamptz + i * interval '1 ms'
  FROM generate_series(1, :n) i;
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
