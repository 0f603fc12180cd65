-- Billing a table with uuid message keys and text org ids, no model and
-- no created column (messages are priced at billing time, billed in key
-- order).
CREATE EXTENSION msgbilling;
CREATE TABLE chat_messages (
    message_uuid uuid PRIMARY KEY,
    tenant text NOT NULL,
    tokens smallint
);
-- Rows that exist before attach were billed by the old system: legacy.
INSERT INTO chat_messages VALUES
    ('00000000-0000-0000-0000-000000000001', 'acme', 100);
SELECT msgbilling.attach('chat_messages', org_column => 'tenant',
                         tokens_column => 'tokens');
SELECT billing_status FROM chat_messages;
SELECT msgbilling.set_price(NULL, 0.5, now() - interval '1 hour') > 0 AS priced;
SELECT msgbilling.top_up('acme', 10);
SELECT msgbilling.top_up('globex', 1);

INSERT INTO chat_messages (message_uuid, tenant, tokens) VALUES
    ('00000000-0000-0000-0000-000000000010', 'acme', 4),
    ('00000000-0000-0000-0000-000000000011', 'acme', 6),
    ('00000000-0000-0000-0000-000000000020', 'globex', 1),
    ('00000000-0000-0000-0000-000000000021', 'globex', 2),
    ('00000000-0000-0000-0000-000000000030', 'initech', 1);

-- uuid ids as text literals or uuid values; integers are refused.
SELECT msgbilling.process_message_billing('00000000-0000-0000-0000-000000000010');
SELECT msgbilling.process_message_billing('00000000-0000-0000-0000-000000000010'::uuid);
SELECT msgbilling.process_message_billing(10);
SELECT msgbilling.process_message_billing('not-a-uuid');
SELECT msgbilling.process_message_billing('00000000-0000-0000-0000-0000000000ff'::uuid);
-- A legacy message is never billed.
SELECT msgbilling.process_message_billing('00000000-0000-0000-0000-000000000001');

SELECT * FROM msgbilling.process_batch_billing(ARRAY[
    '00000000-0000-0000-0000-000000000011',
    '00000000-0000-0000-0000-000000000011',
    '00000000-0000-0000-0000-000000000001']::uuid[]);
SELECT * FROM msgbilling.process_batch_billing(ARRAY[
    '00000000-0000-0000-0000-000000000020',
    '00000000-0000-0000-0000-000000000021']);
SELECT * FROM msgbilling.process_batch_billing(ARRAY[1, 2]);

-- Text org ids: strings only; a number, a boolean or json is not an org id.
SELECT msgbilling.top_up(42, 1);
SELECT msgbilling.top_up(true, 1);
SELECT msgbilling.top_up('{"a": 1}'::json, 1);
SELECT msgbilling.top_up('acme'::varchar, 1) > 0 AS varchar_is_fine;
SELECT * FROM msgbilling.process_all_pending('initech');
SELECT * FROM msgbilling.process_all_pending('nobody');
SELECT message_uuid, tenant, billing_status, cost_credits, billing_error
  FROM chat_messages ORDER BY message_uuid;
SELECT org_id, balance FROM msgbilling.credits ORDER BY org_id;
SELECT pg_typeof(org_id) FROM msgbilling.ledger LIMIT 1;
SELECT * FROM msgbilling.stats();
SELECT * FROM msgbilling.stats('globex');
SELECT message_id, tokens, cost_credits, billing_status, failure_reason
  FROM msgbilling.history('globex');
SELECT check_name, ok FROM msgbilling.verify();

-- A billing column renamed, or a column's type changed, after attach:
-- every function says so clearly.
ALTER TABLE chat_messages RENAME COLUMN cost_credits TO cc;
SELECT * FROM msgbilling.process_all_pending();
ALTER TABLE chat_messages RENAME COLUMN cc TO cost_credits;
ALTER TABLE chat_messages ALTER COLUMN tokens TYPE text;
SELECT * FROM msgbilling.stats();
ALTER TABLE chat_messages ALTER COLUMN tokens TYPE smallint USING tokens::smallint;
SELECT pending FROM msgbilling.stats();

SELECT msgbilling.detach('chat_messages', drop_columns => true, force => true);
DROP TABLE chat_messages;
DROP EXTENSION msgbilling;
