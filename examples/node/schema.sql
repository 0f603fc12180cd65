-- schema.sql — the example app's database: its messages table, msgbilling
-- attached to it, and prices.  Run once by the extension's owner (a DBA):
--   psql -v ON_ERROR_STOP=1 -f schema.sql
-- The tests run it in a database of their own.

CREATE EXTENSION IF NOT EXISTS msgbilling;

-- The app's table, as the guide's app had it before the migration.
CREATE TABLE messages (
    id bigserial PRIMARY KEY,
    org_id uuid NOT NULL,
    role text NOT NULL DEFAULT 'assistant',
    content text,
    model text,
    tokens_used integer,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The guide's ALTER TABLE … ADD COLUMN and its indexes, in one call.
SELECT msgbilling.attach('messages', org_column => 'org_id',
                         tokens_column => 'tokens_used',
                         model_column => 'model',
                         created_column => 'created_at');

-- Credits per token: 1000 tokens of an unlisted model cost 1 credit.
SELECT msgbilling.set_price(NULL, 0.001, '2000-01-01');
SELECT msgbilling.set_price('gpt-4o-mini', 0.0001, '2000-01-01');
