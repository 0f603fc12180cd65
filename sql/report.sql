-- stats(), history() and verify().
CREATE EXTENSION msgbilling;
CREATE TABLE messages (
    id bigint PRIMARY KEY,
    org_id integer NOT NULL,
    tokens_used integer,
    model text,
    created_at timestamptz NOT NULL
);
INSERT INTO messages VALUES (1, 1, 10, 'old', '2023-12-31');  -- legacy
SELECT msgbilling.attach('messages', model_column => 'model',
                         created_column => 'created_at');
SELECT msgbilling.set_price(NULL, 0.1, '2024-01-01') > 0 AS priced;
SELECT msgbilling.top_up(1, 2);
INSERT INTO messages
SELECT i, 1 + i % 2, 5, CASE WHEN i % 3 = 0 THEN 'gpt-4o' END,
       '2024-02-01'::timestamptz + i * interval '1 hour'
  FROM generate_series(2, 9) i;

-- Before billing: everything pending, oldest first.
SELECT * FROM msgbilling.stats();
SELECT * FROM msgbilling.stats(1);
SELECT * FROM msgbilling.stats(3);
SELECT * FROM msgbilling.process_all_pending();
SELECT msgbilling.refund(2);
-- stats: legacy messages are counted apart (not in any column);
-- credits_charged is what charged messages cost, net of refunds.
SELECT * FROM msgbilling.stats();
SELECT * FROM msgbilling.stats(1);
SELECT * FROM msgbilling.stats('2');
SELECT * FROM msgbilling.stats('x');

-- history: the org's messages, newest first, paged by creation time.
SELECT message_id, created_at, tokens, model, cost_credits, billing_status,
       charged_at IS NOT NULL AS charged, failure_reason
  FROM msgbilling.history(1);
SELECT message_id, created_at FROM msgbilling.history(1, 2);
SELECT message_id, created_at
  FROM msgbilling.history(1, 2, before => '2024-02-01 06:00+00');
SELECT * FROM msgbilling.history(1, 0);
SELECT * FROM msgbilling.history(1, 10001);
SELECT * FROM msgbilling.history(1, NULL);
SELECT * FROM msgbilling.history(NULL);
SELECT count(*) FROM msgbilling.history(42);

-- verify: every invariant holds ...
SELECT * FROM msgbilling.verify();
-- ... and each check catches the damage it is about (done under the
-- superuser's repair switch: the guards refuse it otherwise).
SET msgbilling.repair = on;
BEGIN;
UPDATE msgbilling.credits SET balance = balance + 1 WHERE org_id = 1;
SELECT check_name, ok, detail FROM msgbilling.verify() WHERE NOT ok;
ROLLBACK;
BEGIN;
UPDATE messages SET cost_credits = cost_credits + 1 WHERE id = 4;
SELECT check_name, ok, detail FROM msgbilling.verify() WHERE NOT ok;
ROLLBACK;
BEGIN;
UPDATE messages SET charged_at = NULL WHERE id = 4;
SELECT check_name, ok, detail FROM msgbilling.verify() WHERE NOT ok;
ROLLBACK;
BEGIN;
UPDATE messages SET charged_at = now() WHERE id = 3;
SELECT check_name, ok, detail FROM msgbilling.verify() WHERE NOT ok;
ROLLBACK;
BEGIN;
UPDATE msgbilling.ledger SET balance_after = 0 WHERE kind = 'top_up';
SELECT check_name, ok, detail FROM msgbilling.verify() WHERE NOT ok;
ROLLBACK;
-- A charge "lost" from its messages: the message is pending again.
BEGIN;
UPDATE messages SET billing_status = 'pending', cost_credits = NULL,
       charged_at = NULL, billing_ledger_id = NULL WHERE id = 4;
SELECT check_name, ok, detail FROM msgbilling.verify() WHERE NOT ok;
ROLLBACK;

RESET msgbilling.repair;

-- Without a created column, history pages by key only.
SELECT msgbilling.detach('messages');
SELECT msgbilling.attach('messages');
SELECT message_id, created_at, model FROM msgbilling.history(1, 3);
SELECT * FROM msgbilling.history(1, 3, now());
SELECT oldest_pending FROM msgbilling.stats();

SELECT msgbilling.detach('messages', drop_columns => true, force => true);
DROP TABLE messages;
DROP EXTENSION msgbilling;
