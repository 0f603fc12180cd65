-- demo.sql — msgbilling's main job as a walkthrough.  An app saves LLM
-- messages with their token counts; msgbilling bills them afterwards
-- against per-org wallets.  Run by scripts/demo.sh on a throwaway cluster;
-- random() is seeded, so every run bills the same messages the same way.

\set ON_ERROR_STOP on
\pset footer off

\echo
\echo '== 1. The app before billing: a messages table with some history'
CREATE EXTENSION msgbilling;
-- One [msgbilling] line per billing call, shown here instead of the log.
SET msgbilling.log_level = notice;

-- A chatbot's messages: the user's (inbound) and the bot's replies
-- (outbound), each reply with the usage its provider reported.
CREATE TABLE messages (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id uuid NOT NULL,
    direction text NOT NULL DEFAULT 'outbound',
    content text,
    model text,
    prompt_tokens integer,        -- the provider's count, cached ones included
    cached_tokens integer NOT NULL DEFAULT 0,
    completion_tokens integer,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON messages (org_id, created_at);

-- 200 customer orgs with stable ids, and how each will fund its wallet.
CREATE FUNCTION org(n integer) RETURNS uuid
    LANGUAGE sql IMMUTABLE RETURN md5('org-' || n)::uuid;
CREATE TABLE orgs AS
SELECT n, org(n) AS org_id,
       CASE WHEN n <= 165 THEN 'generous'   -- buys plenty of credits
            WHEN n <= 194 THEN 'short'      -- buys too few
            WHEN n <= 199 THEN 'no wallet'  -- never bought any
            ELSE 'overdraft' END AS plan    -- a few credits and a credit line
  FROM generate_series(1, 200) n;

-- Messages from before billing existed: the old system charged for them.
SELECT setseed(0.1) \gset
INSERT INTO messages (org_id, content, model, prompt_tokens, completion_tokens, created_at)
SELECT org(1 + floor(random() * 200)::int), 'old message ' || i, 'gpt-4',
       100 + floor(random() * 2000)::int, 50 + floor(random() * 500)::int,
       now() - interval '30 days' - random() * interval '60 days'
  FROM generate_series(1, 300) i;
SELECT count(*) AS old_messages FROM messages;

\echo
\echo '== 2. Attach msgbilling: billing columns added, old messages become legacy'
-- What msgbilling bills, as generated columns: uncached input, and whether
-- a message is billable at all (only the bot's replies are).
ALTER TABLE messages
    ADD COLUMN input_tokens integer GENERATED ALWAYS AS (prompt_tokens - cached_tokens) STORED,
    ADD COLUMN billable boolean GENERATED ALWAYS AS (direction = 'outbound') STORED;
SELECT msgbilling.attach('messages', tokens_column => NULL, model_column => 'model',
                         created_column => 'created_at',
                         input_tokens_column => 'input_tokens',
                         output_tokens_column => 'completion_tokens',
                         cached_tokens_column => 'cached_tokens',
                         billable_column => 'billable');
\d messages
SELECT billing_status, count(*) FROM messages GROUP BY 1;

\echo
\echo '== 3. Tariffs: 1 credit = 1 cent; input, cached input and output tokens at'
\echo '   the providers'' per-million rates, 0.1 credit a reply; gpt-4o got cheaper 2 days ago'
-- A message is billed at the tariff in effect when it was created, so the
-- first tariffs take effect in the past, before any message to bill.
-- $ per million tokens x 100 cents / 1,000,000 = credits per token.
SELECT count(msgbilling.set_tariff(model, input * 0.0001, output * 0.0001,
                                   cached_per_token => cached * 0.0001,
                                   per_message => 0.1, effective_from => since))
       AS tariffs_set
  FROM (VALUES (NULL, 0.80, 0.80, NULL, '2024-01-01'::timestamptz),  -- other models
               ('gpt-4o-mini', 0.15, 0.60, 0.075, '2024-01-01'),
               ('gpt-4o', 5.00, 15.00, 2.50, '2024-01-01'),
               ('gpt-4o', 2.50, 10.00, 1.25, now() - interval '2 days'),
               ('claude-3-5-sonnet', 3.00, 15.00, 0.30, '2024-01-01'))
       t(model, input, output, cached, since);
SELECT COALESCE(model, '(default)') AS model, credits_per_token AS input_per_token,
       COALESCE(output_per_token, credits_per_token) AS output_per_token,
       cached_per_token, per_message, effective_from::timestamp(0) AS effective_from
  FROM msgbilling.prices ORDER BY model NULLS FIRST, effective_from;

\echo
\echo '== 4. Wallets: most orgs top up, some too little, five never did, one may overdraw'
SELECT plan, count(*) AS orgs,
       sum(msgbilling.top_up(org_id, CASE plan WHEN 'generous' THEN 100
                                               WHEN 'short' THEN 8 ELSE 5 END,
                             note => 'first credit pack')) AS credits_bought
  FROM orgs WHERE plan <> 'no wallet' GROUP BY plan ORDER BY plan;
-- Org 200 may go 40 credits below zero.
SELECT msgbilling.set_overdraft(org(200), 40) \gset
SELECT balance, overdraft_limit FROM msgbilling.credits WHERE org_id = org(200);

\echo
\echo '== 5. The app at work: 6000 new messages over the last 4 days, all pending'
-- Users write, the bot replies: about half the messages are replies, each
-- with its provider's usage (often part of the prompt from the cache); the
-- users' own messages carry no model and no usage.
SELECT setseed(0.2) \gset
INSERT INTO messages (org_id, direction, content, model, prompt_tokens, cached_tokens,
                      completion_tokens, created_at)
SELECT org_id, direction, content,
       CASE WHEN reply THEN model END,
       CASE WHEN reply THEN prompt ELSE 0 END,
       COALESCE(CASE WHEN reply AND cache_hit THEN floor(prompt * cached_share)::int END, 0),
       CASE WHEN reply THEN completion ELSE 0 END,
       created_at
  FROM (SELECT org(1 + floor(random() * 200)::int) AS org_id,
               random() >= 0.45 AS reply,
               'message ' || i AS content,
               (ARRAY['gpt-4o-mini', 'gpt-4o-mini', 'gpt-4o-mini', 'gpt-4o-mini',
                      'gpt-4o', 'gpt-4o', 'gpt-4o', 'claude-3-5-sonnet',
                      'claude-3-5-sonnet', 'llama-3.1-70b'])[1 + floor(random() * 10)::int] AS model,
               -- 50 to 8000 prompt tokens, small ones more common; now and
               -- then the provider reports no usage at all
               CASE WHEN random() < 0.002 THEN NULL
                    ELSE floor(exp(ln(50) + random() * ln(160)))::int END AS prompt,
               random() < 0.4 AS cache_hit, random() * 0.8 AS cached_share,
               20 + floor(random() * 600)::int AS completion,
               now() - random() * interval '4 days' AS created_at
          FROM generate_series(1, 6000) i) m,
       LATERAL (SELECT CASE WHEN reply THEN 'outbound' ELSE 'inbound' END AS direction) d;
SELECT billing_status, count(*) FROM messages GROUP BY 1 ORDER BY 1;

\echo
\echo '== 6. Bill the backlog, committing every 1000 messages'
SET msgbilling.drain_progress = 2;   -- a progress line every 2 batches
CALL msgbilling.drain(1000);
RESET msgbilling.drain_progress;

\echo
\echo '== 7. The result'
SELECT * FROM msgbilling.stats();

\echo '-- why messages failed'
SELECT billing_error, count(*) AS messages, count(DISTINCT org_id) AS orgs
  FROM messages WHERE billing_status = 'failed'
 GROUP BY 1 ORDER BY 2 DESC;

\echo '-- the migration guide''s monitoring queries'
SELECT COUNT(*) FROM messages WHERE billing_status = 'pending';
SELECT COUNT(*) FROM messages WHERE billing_status = 'charged';
SELECT COUNT(*) FROM messages WHERE billing_status = 'failed';

\echo '-- each reply was billed at the tariff in effect when it was created:'
\echo '-- 0.1 + input x input rate + cached x cached rate + output x output rate'
SELECT COALESCE(t.tariff_model, '(default)') AS tariff,
       t.effective_from::date AS tariff_from, count(*) AS replies,
       round(avg(m.cost_credits), 4) AS avg_cost,
       count(*) FILTER (WHERE m.cost_credits <> round(t.per_message
           + m.input_tokens * t.input_per_token + m.cached_tokens * t.cached_per_token
           + m.completion_tokens * t.output_per_token, 6)) AS not_as_the_formula
  FROM messages m, msgbilling.tariff_at(m.model, m.created_at) t
 WHERE m.billing_status = 'charged'
 GROUP BY 1, 2 ORDER BY 1, 2;
\echo '-- the users'' own messages cost nothing'
SELECT direction, billing_status, count(*), sum(cost_credits) AS cost
  FROM messages WHERE billing_status IN ('charged', 'no_charge') GROUP BY 1, 2 ORDER BY 1;

\echo '-- top 5 orgs by spend'
SELECT o.n AS org, o.plan, count(*) AS messages, sum(m.cost_credits) AS spent,
       msgbilling.balance(m.org_id) AS balance
  FROM messages m JOIN orgs o USING (org_id)
 WHERE m.billing_status = 'charged'
 GROUP BY o.n, o.plan, m.org_id ORDER BY spent DESC LIMIT 5;

\echo '-- org 200 used its credit line: the balance is below zero'
SELECT msgbilling.balance(org(200)) AS balance, s.*
  FROM msgbilling.stats(org(200)) s;

\echo
\echo '== 8. An org that ran out of credits'
SELECT o.n AS broke_n, o.org_id AS broke_org
  FROM messages m JOIN orgs o USING (org_id)
 WHERE m.billing_error = 'insufficient_credits'
 GROUP BY o.n, o.org_id ORDER BY count(*) DESC, o.n LIMIT 1 \gset
\echo 'org' :broke_n 'balance and latest messages (history, newest first):'
SELECT msgbilling.balance(:'broke_org') AS balance;
SELECT created_at::timestamp(0) AS created_at, model, input_tokens AS input,
       cached_tokens AS cached, output_tokens AS output, cost_credits,
       billing_status, failure_reason
  FROM msgbilling.history(:'broke_org', 5);

\echo
\echo '== 9. It buys more credits: the top-up makes its failures pending again'
SELECT msgbilling.top_up(:'broke_org', 100, 'second credit pack') AS new_balance;
SELECT billing_status, billing_error, count(*)
  FROM messages WHERE org_id = :'broke_org' GROUP BY 1, 2 ORDER BY 1;
-- Bill them now rather than waiting for the next drain.
SELECT * FROM msgbilling.process_all_pending(:'broke_org');
SELECT msgbilling.balance(:'broke_org') AS balance, s.*
  FROM msgbilling.stats(:'broke_org') s;

\echo
\echo '== 10. The app can also bill a message the moment it saves it'
INSERT INTO messages (org_id, content, model, prompt_tokens, cached_tokens, completion_tokens)
VALUES (org(1), 'a fresh answer', 'gpt-4o', 1500, 1024, 300) RETURNING id AS msg \gset
SELECT msgbilling.process_message_billing(:'msg') AS status;
SELECT input_tokens, cached_tokens, completion_tokens, model, cost_credits, billing_status
  FROM messages WHERE id = :'msg';

\echo
\echo '== 11. The books reconcile'
SELECT * FROM msgbilling.verify();
-- Make scripts/demo.sh fail if any check does not hold.
DO $$
BEGIN
    IF NOT (SELECT bool_and(ok) FROM msgbilling.verify()) THEN
        RAISE EXCEPTION 'msgbilling.verify() found books that do not reconcile';
    END IF;
END $$;
\echo 'All checks pass.'
