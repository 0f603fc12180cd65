-- The same app table, attached to msgbilling (which adds the billing
-- columns and its own indexes).
CREATE EXTENSION msgbilling;
CREATE TABLE messages (
    id bigserial PRIMARY KEY,
    org_id uuid NOT NULL,
    content text,
    model text,
    tokens_used integer,
    created_at timestamptz NOT NULL DEFAULT now()
);
SET client_min_messages = warning;
SELECT msgbilling.attach('messages', model_column => 'model',
                         created_column => 'created_at', bill_existing => true);
