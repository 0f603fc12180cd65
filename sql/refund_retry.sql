-- refund and retry_failed, and the top-up that makes failures pending.
CREATE EXTENSION msgbilling;
CREATE TABLE messages (
    id integer PRIMARY KEY,
    org_id bigint NOT NULL,
    tokens_used integer,
    model text,
    created_at timestamptz NOT NULL
);
SELECT msgbilling.attach('messages', model_column => 'model',
                         created_column => 'created_at');
SELECT msgbilling.set_price(NULL, 0.1, '2024-01-01') > 0 AS priced;
SELECT msgbilling.top_up(1, 3);
INSERT INTO messages VALUES
    (1, 1, 10, NULL, '2024-02-01 10:00'),   -- 1.00 charged
    (2, 1, 10, NULL, '2024-02-01 10:01'),   -- 1.00 charged
    (3, 1, 20, NULL, '2024-02-01 10:02'),   -- 2.00 insufficient
    (4, 1, 5, 'no-such', '2024-02-01 10:03'),  -- insufficient (after 3)
    (5, 2, 10, NULL, '2024-02-01 10:00');   -- org 2: no wallet
SELECT * FROM msgbilling.process_all_pending();

-- refund: the cost goes back through a ledger entry; status refunded.
SELECT msgbilling.refund(1, 'bad answer');
SELECT billing_status, cost_credits, charged_at IS NOT NULL AS kept_charged_at
  FROM messages WHERE id = 1;
SELECT kind, amount, balance_after, message_id, note FROM msgbilling.ledger
 WHERE kind = 'refund';
-- A second refund is refused; so is refunding what was never charged.
SELECT msgbilling.refund(1);
SELECT msgbilling.refund(3);
SELECT msgbilling.refund(999);
SELECT msgbilling.refund(NULL);
SELECT msgbilling.refund('x');
-- A refunded message is never billed again.
SELECT msgbilling.process_message_billing(1);
SELECT * FROM msgbilling.process_batch_billing(ARRAY[1]);
SELECT msgbilling.balance(1);

-- Any change to the wallet (here the refund) makes the org's
-- insufficient_credits failures pending again, and only those.
SELECT id, billing_status, billing_error FROM messages ORDER BY id;
SELECT * FROM msgbilling.process_all_pending();
SELECT id, billing_status, billing_error FROM messages ORDER BY id;
-- So does a top-up.
SELECT msgbilling.top_up(1, 1);
SELECT id, billing_status, billing_error FROM messages ORDER BY id;
SELECT * FROM msgbilling.process_all_pending();
SELECT id, billing_status, cost_credits, billing_error FROM messages ORDER BY id;

-- retry_failed: failed -> pending, for one org or all.
SELECT msgbilling.retry_failed(1);
SELECT msgbilling.retry_failed(2);
SELECT billing_status, billing_error FROM messages WHERE id = 5;
SELECT * FROM msgbilling.process_all_pending();
SELECT msgbilling.retry_failed();
SELECT msgbilling.retry_failed('x');
SELECT msgbilling.retry_failed(1::bigint);

-- set_overdraft also lets insufficient_credits failures be billed again.
INSERT INTO messages VALUES (6, 1, 100, NULL, '2024-02-02');
SELECT * FROM msgbilling.process_all_pending();
SELECT msgbilling.set_overdraft(1, 20);
SELECT billing_status FROM messages WHERE id = 6;
SELECT * FROM msgbilling.process_all_pending();
SELECT msgbilling.balance(1);

SELECT kind, amount, balance_after FROM msgbilling.ledger ORDER BY id;
SELECT check_name, ok FROM msgbilling.verify();

SELECT msgbilling.detach('messages', drop_columns => true, force => true);
DROP TABLE messages;
DROP EXTENSION msgbilling;
