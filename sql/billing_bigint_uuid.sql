-- Billing a table with bigint message keys and uuid org ids.
CREATE EXTENSION msgbilling;
CREATE TABLE messages (
    id bigint PRIMARY KEY,
    org_id uuid NOT NULL,
    content text,
    tokens_used integer,
    model text,
    created_at timestamptz NOT NULL DEFAULT now()
);
SELECT msgbilling.attach('messages', model_column => 'model',
                         created_column => 'created_at');
-- Orgs: a is funded, b is short, c has no wallet, d lives on overdraft.
\set a '''aaaaaaaa-0000-0000-0000-000000000000'''
\set b '''bbbbbbbb-0000-0000-0000-000000000000'''
\set c '''cccccccc-0000-0000-0000-000000000000'''
\set d '''dddddddd-0000-0000-0000-000000000000'''
SELECT msgbilling.set_price(NULL, 0.01, '2024-01-01') > 0 AS priced;
SELECT msgbilling.top_up(:a, 10);
SELECT msgbilling.top_up(:b, 1);
SELECT msgbilling.set_overdraft(:d, 2);

-- Billing functions need a value to bill.
SELECT msgbilling.process_message_billing(NULL);
SELECT * FROM msgbilling.process_batch_billing(NULL);

-- One message at a time: returns the resulting status.
INSERT INTO messages (id, org_id, tokens_used, created_at)
VALUES (1, :a, 100, '2024-02-01 10:00');
SELECT msgbilling.process_message_billing(1);
-- A charged message is returned as it is, never debited again.
SELECT msgbilling.process_message_billing(1);
SELECT msgbilling.process_message_billing(1::bigint);
SELECT msgbilling.process_message_billing('1');
SELECT msgbilling.balance(:a);
SELECT count(*) AS charge_entries FROM msgbilling.ledger WHERE kind = 'charge';
-- Unknown ids and ids of the wrong type are errors.
SELECT msgbilling.process_message_billing(999);
SELECT msgbilling.process_message_billing('aaaaaaaa-0000-0000-0000-000000000000'::uuid);
SELECT msgbilling.process_message_billing('one');
SELECT msgbilling.process_message_billing(1.5);
-- A message of an org without a wallet fails, and is tried again later.
INSERT INTO messages (id, org_id, tokens_used, created_at)
VALUES (2, :c, 100, '2024-02-01 10:00');
SELECT msgbilling.process_message_billing(2);
SELECT msgbilling.top_up(:c, 5);
SELECT msgbilling.process_message_billing(2);

-- A backlog: per org in creation order, then key order.
INSERT INTO messages (id, org_id, tokens_used, created_at) VALUES
    -- a: plenty of credit
    (10, :a, 10, '2024-02-02 10:00'),
    (11, :a, 20, '2024-02-02 10:01'),
    -- b: 1.00 credit; 0.50 fits, 0.80 does not, and the cheap 0.10 after
    -- it fails too: billing never skips ahead of an unpaid message.
    (22, :b, 10, '2024-02-02 10:02'),
    (21, :b, 80, '2024-02-02 10:01'),
    (20, :b, 50, '2024-02-02 10:00'),
    -- d: balance 0, overdraft 2: 1.50 fits, 1.00 does not.
    (30, :d, 150, '2024-02-02 10:00'),
    (31, :d, 100, '2024-02-02 10:01'),
    -- bad token counts fail on their own, whatever the wallet.
    (40, :a, NULL, '2024-02-02 10:03'),
    (41, :a, -5, '2024-02-02 10:04'),
    -- zero tokens cost nothing and are charged.
    (42, :a, 0, '2024-02-02 10:05'),
    -- an org with no wallet at all
    (50, 'eeeeeeee-0000-0000-0000-000000000000', 10, '2024-02-02 10:00');
SELECT * FROM msgbilling.process_all_pending();
SELECT id, org_id, tokens_used, billing_status, cost_credits, billing_error,
       charged_at IS NOT NULL AS has_charged_at
  FROM messages WHERE id >= 10 ORDER BY id;
SELECT org_id, balance, overdraft_limit FROM msgbilling.credits ORDER BY org_id;
-- One charge entry per org per batch, pointing at the messages it covers.
SELECT l.org_id, l.amount, l.balance_after, l.message_count,
       array_agg(m.id ORDER BY m.id) AS messages
  FROM msgbilling.ledger l JOIN messages m ON m.billing_ledger_id = l.id
 WHERE l.kind = 'charge' AND m.id >= 10
 GROUP BY l.id ORDER BY l.org_id;
-- Nothing pending is left; a second run finds nothing.
SELECT * FROM msgbilling.process_all_pending();
-- Billing stays in order across runs too: b has unpaid messages, so a
-- new cheap one of b fails as well, until b's wallet changes.
INSERT INTO messages (id, org_id, tokens_used, created_at)
VALUES (23, :b, 1, '2024-02-02 10:03');
SELECT * FROM msgbilling.process_all_pending();
SELECT msgbilling.process_message_billing(23);
SELECT billing_error FROM messages WHERE id = 23;

-- process_batch_billing: an id counts once; ids that are not billable now
-- (charged, unknown) are skipped; failed ones are tried again.
SELECT msgbilling.top_up(:b, 100);
SELECT * FROM msgbilling.process_batch_billing(ARRAY[21, 21, 21, 10, 999]);
SELECT id, billing_status, cost_credits FROM messages WHERE id IN (21, 22) ORDER BY id;
-- int4, int8 and text arrays all work; an empty array bills nothing.
SELECT * FROM msgbilling.process_batch_billing(ARRAY[22]::bigint[]);
SELECT * FROM msgbilling.process_batch_billing(ARRAY['40', '41']);
SELECT * FROM msgbilling.process_batch_billing(ARRAY[]::integer[]);
SELECT * FROM msgbilling.process_batch_billing(ARRAY[NULL, 22]::bigint[]);
SELECT * FROM msgbilling.process_batch_billing(22);
SELECT * FROM msgbilling.process_batch_billing(ARRAY['aaaaaaaa-0000-0000-0000-000000000000'::uuid]);

-- process_all_pending for one org, and never more than max_messages.
INSERT INTO messages (id, org_id, tokens_used, created_at)
SELECT 100 + i, :a, 1, '2024-03-01'::timestamptz + i * interval '1 minute'
  FROM generate_series(1, 10) i;
INSERT INTO messages (id, org_id, tokens_used, created_at)
VALUES (200, :b, 1, '2024-03-01');
SELECT * FROM msgbilling.process_all_pending(:b);
SELECT * FROM msgbilling.process_all_pending(:a, 3);
-- the oldest three went first
SELECT id FROM messages WHERE id > 100 AND id < 200 AND billing_status = 'charged' ORDER BY id;
SELECT * FROM msgbilling.process_all_pending(max_messages => 0);
SELECT * FROM msgbilling.process_all_pending(max_messages => -1);
SELECT * FROM msgbilling.process_all_pending(42);
-- Batches of msgbilling.batch_size: one charge entry per org per batch.
SET msgbilling.batch_size = 3;
SELECT * FROM msgbilling.process_all_pending();
RESET msgbilling.batch_size;
SELECT message_count FROM msgbilling.ledger
 WHERE kind = 'charge' AND org_id = :a ORDER BY id DESC LIMIT 3;
SET msgbilling.batch_size = 0;

-- The guide's monitoring queries keep working.
SELECT COUNT(*) FROM messages WHERE billing_status = 'pending';
SELECT COUNT(*) FROM messages WHERE billing_status = 'charged';
SELECT COUNT(*) FROM messages WHERE billing_status = 'failed';
SELECT check_name, ok, detail FROM msgbilling.verify();

-- A deleted wallet: its org's messages fail with no_wallet, and verify()
-- reports the ledger entries left without a wallet.
DELETE FROM msgbilling.credits WHERE org_id = :d;
INSERT INTO messages (id, org_id, tokens_used) VALUES (300, :d, 1);
SELECT msgbilling.process_message_billing(300);
SELECT billing_error FROM messages WHERE id = 300;
SELECT check_name, ok, detail FROM msgbilling.verify() WHERE NOT ok;

-- Given ids in many orgs at once (the claim finds each org's older pending
-- messages through its newest given one, and looks the ids up hashed):
-- 200 orgs of 10 messages, the 6th of each given; the 5 before it are
-- billed with it, the 4 after stay pending.  And 20 orgs whose one message
-- failed (no wallet) and then got a wallet: given, it is billed again.
CREATE TEMP TABLE many AS
SELECT g, md5('org' || g)::uuid AS org FROM generate_series(1, 220) g;
SELECT count(msgbilling.top_up(org, 100)) FROM many WHERE g <= 200;
INSERT INTO messages (id, org_id, tokens_used, created_at)
SELECT 10000 + g * 10 + i, org, 1, '2024-08-01'::timestamptz + i * interval '1 min'
  FROM many, generate_series(1, 10) i WHERE g <= 200;
INSERT INTO messages (id, org_id, tokens_used, created_at)
SELECT 20000 + g, org, 1, '2024-08-01' FROM many WHERE g > 200;
SELECT charged, failed FROM msgbilling.process_batch_billing(
       ARRAY(SELECT 20000 + g FROM many WHERE g > 200));
SELECT count(msgbilling.top_up(org, 100)) FROM many WHERE g > 200;
SELECT billing_status, count(*) FROM messages WHERE id > 20000 GROUP BY 1;
SELECT charged, failed, skipped FROM msgbilling.process_batch_billing(
       ARRAY(SELECT 10000 + g * 10 + 6 FROM many WHERE g <= 200) ||
       ARRAY(SELECT 20000 + g FROM many WHERE g > 200));
SELECT (id - 10000) % 10 AS nth, billing_status, count(*) FROM messages
 WHERE id > 10000 AND id < 20000 GROUP BY 1, 2 ORDER BY 1, 2;
SELECT billing_status, count(*) FROM messages WHERE id > 20000 GROUP BY 1;
-- nothing wrong but the deleted wallet's entries, as above
SELECT check_name, ok FROM msgbilling.verify() WHERE NOT ok;

SELECT msgbilling.detach('messages', drop_columns => true, force => true);
DROP TABLE messages;
DROP EXTENSION msgbilling;
