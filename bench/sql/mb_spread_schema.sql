-- The worst case of a partitioned backlog: 12 RANGE partitions on
-- created_at, PRIMARY KEY (id, created_at), each an equal slice of the
-- creation times of the :n messages data.sql inserts (one millisecond
-- apart), so that every org's pending messages lie in all 12 and billing
-- looks each org up in every one.  The same rows as mb_schema.sql's.
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
SELECT format('CREATE TABLE messages_p%s PARTITION OF messages FOR VALUES FROM (%s) TO (%s)',
              k,
              CASE WHEN k = 0 THEN 'MINVALUE'
                   ELSE quote_literal('2024-01-01'::timestamptz + k * (:n / 12 + 1) * interval '1 ms') END,
              CASE WHEN k = 11 THEN 'MAXVALUE'
                   ELSE quote_literal('2024-01-01'::timestamptz + (k + 1) * (:n / 12 + 1) * interval '1 ms') END)
  FROM generate_series(0, 11) k \gexec
SET client_min_messages = warning;
SELECT msgbilling.attach('messages', model_column => 'model',
                         created_column => 'created_at', bill_existing => true);
