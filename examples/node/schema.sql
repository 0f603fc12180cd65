-- schema.sql — the example app's database: its messages table, msgbilling
-- attached to it, and tariffs.  Run once by the extension's owner (a DBA):
--   psql -v ON_ERROR_STOP=1 -f schema.sql
-- The tests run it in a database of their own.

CREATE EXTENSION IF NOT EXISTS msgbilling;

-- The app's table: every message of a conversation, the user's and the
-- model's.  A reply keeps the provider's usage as OpenAI reports it;
-- generated columns turn it into what msgbilling bills.
CREATE TABLE messages (
    id bigserial PRIMARY KEY,
    org_id uuid NOT NULL,
    role text NOT NULL DEFAULT 'assistant',    -- 'user' or 'assistant'
    content text,
    model text,
    -- usage, as reported (NULL for a user's message)
    prompt_tokens integer,      -- usage.prompt_tokens: includes the cached ones
    completion_tokens integer,  -- usage.completion_tokens: reasoning included
    cached_tokens integer,      -- usage.prompt_tokens_details.cached_tokens
    -- what msgbilling bills: disjoint counts (input = the uncached input),
    -- and only the model's replies: a user's messages are stored, not charged
    input_tokens integer GENERATED ALWAYS AS (prompt_tokens - cached_tokens) STORED,
    billable boolean GENERATED ALWAYS AS (role = 'assistant') STORED,
    -- the hold taken before the LLM call (msgbilling.hold), or NULL: billing
    -- the message ends it.  No foreign key: ended holds are deleted.
    hold_id bigint,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The guide's ALTER TABLE … ADD COLUMN and its indexes, in one call; and
-- the column naming each message's hold.
SELECT msgbilling.attach('messages', org_column => 'org_id',
                         tokens_column => NULL,
                         model_column => 'model',
                         created_column => 'created_at',
                         input_tokens_column => 'input_tokens',
                         output_tokens_column => 'completion_tokens',
                         cached_tokens_column => 'cached_tokens',
                         billable_column => 'billable',
                         hold_column => 'hold_id');

-- Tariffs in credits per token, 1 credit = 1 US dollar: the provider's
-- price per million tokens / 1,000,000.  A message is priced by its
-- model's tariff, else by the default one (model NULL); each cost is
-- rounded to the nearest 0.000001.
-- gpt-4o-mini: input $0.15, cached input $0.075, output $0.60 per million
SELECT msgbilling.set_tariff('gpt-4o-mini', input_per_token => 0.00000015,
                             output_per_token => 0.0000006,
                             cached_per_token => 0.000000075,
                             effective_from => '2000-01-01');
-- any other model: gpt-4o's input $2.50, cached input $1.25, output $10.00
SELECT msgbilling.set_tariff(NULL, input_per_token => 0.0000025,
                             output_per_token => 0.00001,
                             cached_per_token => 0.00000125,
                             effective_from => '2000-01-01');
