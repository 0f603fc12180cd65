-- The app table partitioned by month as pg_partman makes it: 12 RANGE
-- partitions on created_at, PRIMARY KEY (id, created_at), attached to
-- msgbilling.  The :n messages data.sql inserts (one millisecond apart,
-- from 2024-01-01) are the backlog of the newest month, as an app's
-- backlog is; the 11 months before it hold what was billed.  The same
-- rows as mb_schema.sql's.
CREATE EXTENSION msgbilling;
CREATE TABLE messages (
    id bigserial,
    org_id uuid NOT NULL,
    content text,
    model text,
    tokens_used integer,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
SELECT format('CREATE TABLE messages_%s PARTITION OF messages FOR VALUES FROM (%L) TO (%L)',
              to_char(m, 'YYYY_MM'), m, m + interval '1 month')
  FROM generate_series('2023-02-01'::timestamptz, '2024-01-01', interval '1 month') m \gexec
SET client_min_messages = warning;
SELECT msgbilling.attach('messages', model_column => 'model',
                         created_column => 'created_at', bill_existing => true);
