-- Wallets: top_up, balance, set_overdraft, adjust, and their bad inputs.
CREATE EXTENSION msgbilling;
CREATE TABLE messages (
    id bigserial PRIMARY KEY,
    org_id uuid NOT NULL,
    tokens_used integer
);

-- Nothing works before a table is attached: the org id type is not known.
SELECT msgbilling.top_up('00000000-0000-0000-0000-00000000000a', 10);
SELECT msgbilling.attach('messages');

-- top_up creates the wallet and returns the new balance.
SELECT msgbilling.top_up('00000000-0000-0000-0000-00000000000a', 10);
SELECT msgbilling.top_up('00000000-0000-0000-0000-00000000000a'::uuid, 2.5, 'second');
SELECT msgbilling.balance('00000000-0000-0000-0000-00000000000a');
-- An org without a wallet has no balance.
SELECT msgbilling.balance('00000000-0000-0000-0000-00000000000b') IS NULL AS no_wallet;

-- Amounts must be finite, > 0, at most 6 decimals, and fit the balance.
SELECT msgbilling.top_up('00000000-0000-0000-0000-00000000000a', 0);
SELECT msgbilling.top_up('00000000-0000-0000-0000-00000000000a', -5);
SELECT msgbilling.top_up('00000000-0000-0000-0000-00000000000a', 'NaN');
SELECT msgbilling.top_up('00000000-0000-0000-0000-00000000000a', 'Infinity');
SELECT msgbilling.top_up('00000000-0000-0000-0000-00000000000a', '-Infinity');
SELECT msgbilling.top_up('00000000-0000-0000-0000-00000000000a', 0.0000001);
SELECT msgbilling.top_up('00000000-0000-0000-0000-00000000000a', 1e14);
SELECT msgbilling.top_up('00000000-0000-0000-0000-00000000000a', NULL);
SELECT msgbilling.top_up(NULL, 1);
-- Org ids must be of the table's org type, or its text form.
SELECT msgbilling.top_up(42, 1);
SELECT msgbilling.top_up('not-a-uuid', 1);
SELECT msgbilling.top_up(now(), 1);
-- Nothing was credited by the failed calls.
SELECT msgbilling.balance('00000000-0000-0000-0000-00000000000a');

-- An idempotency key credits once, however often it is repeated.
SELECT msgbilling.top_up('00000000-0000-0000-0000-00000000000a', 5, 'order 1', 'order-1');
SELECT msgbilling.top_up('00000000-0000-0000-0000-00000000000a', 5, 'order 1', 'order-1');
SELECT count(*) AS entries FROM msgbilling.ledger WHERE idempotency_key = 'order-1';
-- Reusing a key for another amount or another org is an error.
SELECT msgbilling.top_up('00000000-0000-0000-0000-00000000000a', 6, NULL, 'order-1');
SELECT msgbilling.top_up('00000000-0000-0000-0000-00000000000c', 5, NULL, 'order-1');
SELECT msgbilling.balance('00000000-0000-0000-0000-00000000000a');

-- Overdraft: a limit of zero or more, creating the wallet if needed.
SELECT msgbilling.set_overdraft('00000000-0000-0000-0000-00000000000b', 3);
SELECT balance, overdraft_limit FROM msgbilling.credits
 WHERE org_id = '00000000-0000-0000-0000-00000000000b';
SELECT msgbilling.set_overdraft('00000000-0000-0000-0000-00000000000b', -1);
SELECT msgbilling.set_overdraft('00000000-0000-0000-0000-00000000000b', 'NaN');
SELECT msgbilling.set_overdraft('00000000-0000-0000-0000-00000000000b', NULL);

-- Adjustments: either sign, never zero, always with a note.
SELECT msgbilling.adjust('00000000-0000-0000-0000-00000000000a', -0.5, 'goodwill correction');
SELECT msgbilling.adjust('00000000-0000-0000-0000-00000000000a', 0, 'nothing');
SELECT msgbilling.adjust('00000000-0000-0000-0000-00000000000a', 1, NULL);

-- The ledger has every change with the balance after it, and it sums up.
SELECT kind, amount, balance_after, note, idempotency_key
  FROM msgbilling.ledger ORDER BY id;
SELECT c.org_id, c.balance, sum(l.amount) AS ledger_sum
  FROM msgbilling.credits c LEFT JOIN msgbilling.ledger l USING (org_id)
 GROUP BY c.org_id, c.balance ORDER BY c.org_id;
SELECT check_name, ok FROM msgbilling.verify();

-- The ledger is append-only: without the repair switch even the owner
-- cannot change, delete or truncate an entry.
UPDATE msgbilling.ledger SET amount = 0;
DELETE FROM msgbilling.ledger;
TRUNCATE msgbilling.ledger;
SELECT count(*) AS entries FROM msgbilling.ledger;

-- Integer org ids: literals, text and bigint all name the same wallet.
SELECT msgbilling.detach('messages', drop_columns => true);
-- (starting over takes the superuser's repair switch: the ledger is
-- append-only)
SET msgbilling.repair = on;
DELETE FROM msgbilling.ledger;
DELETE FROM msgbilling.credits;
RESET msgbilling.repair;
CREATE TABLE int_messages (id integer PRIMARY KEY, org_id bigint, tokens_used integer);
SELECT msgbilling.attach('int_messages');
SELECT msgbilling.top_up(7, 1);
SELECT msgbilling.top_up('7', 1);
SELECT msgbilling.top_up(7::bigint, 1);
SELECT msgbilling.top_up(7.5, 1);
SELECT msgbilling.top_up('00000000-0000-0000-0000-00000000000a'::uuid, 1);
SELECT org_id, balance FROM msgbilling.credits;

SELECT msgbilling.detach('int_messages', drop_columns => true);
DROP TABLE messages, int_messages;
DROP EXTENSION msgbilling;
