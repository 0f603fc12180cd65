-- The app table with the three counts a provider reports (uncached input,
-- output, cache-read input), attached with them; data.sql gives it
-- tariffs with a fee, a minimum and rounding up (-v tariffed=1).
CREATE EXTENSION msgbilling;
CREATE TABLE messages (
    id bigserial PRIMARY KEY,
    org_id uuid NOT NULL,
    content text,
    model text,
    input_tokens integer,
    output_tokens integer,
    cached_tokens integer,
    created_at timestamptz NOT NULL DEFAULT now()
);
SET client_min_messages = warning;
SELECT msgbilling.attach('messages', tokens_column => NULL, model_column => 'model',
                         created_column => 'created_at', bill_existing => true,
                         input_tokens_column => 'input_tokens',
                         output_tokens_column => 'output_tokens',
                         cached_tokens_column => 'cached_tokens');
