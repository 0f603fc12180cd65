--
-- alerts.sql: low-balance alerts, once per crossing, by whatever moves the
-- balance.
--
-- bigint message keys, integer orgs.  set_alert and drop_alert set the
-- thresholds; every ledger entry that takes a balance from >= a threshold
-- to below it adds one 'low' alert, and back one 'recovered'.
--
CREATE EXTENSION msgbilling;
\set VERBOSITY default
\set SHOW_CONTEXT never

CREATE TABLE messages (
    id bigserial PRIMARY KEY,
    org_id integer NOT NULL,
    tokens_used integer,
    created_at timestamptz NOT NULL DEFAULT now()
);
SELECT msgbilling.attach('messages', created_column => 'created_at');
SELECT msgbilling.set_price(NULL, 0.01, '2020-01-01') > 0 AS priced;
SELECT msgbilling.top_up(1, 10), msgbilling.top_up(2, 10), msgbilling.top_up(3, 1);

CREATE VIEW seen AS
    SELECT id, org_id, threshold, kind, balance FROM msgbilling.alerts ORDER BY id;

-- the defaults: every org without thresholds of its own.  Org 3 is below
-- 5 already: its 'low' comes at once.
SELECT msgbilling.set_alert(NULL, 5);
SELECT * FROM seen;
-- org 1's own thresholds replace the defaults
SELECT msgbilling.set_alert(1, 8);
SELECT msgbilling.set_alert(1, 3);
SELECT msgbilling.set_alert(1, 8);               -- again: nothing new
SELECT org_id, threshold FROM msgbilling.alert_rules ORDER BY org_id NULLS FIRST, threshold;

-- billing: org 1 from 10 to 7 crosses 8; org 2 from 10 to 6 crosses nothing
INSERT INTO messages (org_id, tokens_used)
VALUES (1, 100), (1, 200), (2, 400);
SELECT * FROM msgbilling.process_all_pending();
SELECT * FROM seen WHERE id > 1;
-- one batch taking org 2 from 6 to 2 and org 1 from 7 to 1: one entry per
-- org, so one crossing each, of each threshold passed
INSERT INTO messages (org_id, tokens_used) VALUES (2, 200), (2, 200), (1, 600);
SELECT * FROM msgbilling.process_all_pending();
SELECT * FROM seen WHERE id > 2;

-- an aborted change alerts nothing
BEGIN;
SELECT msgbilling.top_up(1, 100);
ROLLBACK;
SELECT count(*) AS alerts FROM msgbilling.alerts;

-- adjust, top_up and refund move the balance too
SELECT msgbilling.top_up(1, 2);                  -- 3: back to 3, recovered
SELECT msgbilling.adjust(1, -0.5, 'correction'); -- 2.5: low again
SELECT msgbilling.refund(id) FROM messages WHERE org_id = 1 AND tokens_used = 600; -- 8.5
SELECT * FROM seen WHERE id > 4;
-- the balance at the threshold is not below it
SELECT msgbilling.adjust(2, 3, 'to exactly 5');
SELECT * FROM seen WHERE id > 7;

-- drop_alert: org 1 without thresholds of its own falls back to the default
SELECT msgbilling.drop_alert(1, 8), msgbilling.drop_alert(1, 3),
       msgbilling.drop_alert(1, 3) AS again;
SELECT msgbilling.adjust(1, -4, 'below the default');
SELECT * FROM seen WHERE id > 8;

-- bad input
SELECT msgbilling.set_alert(1, NULL);
SELECT msgbilling.set_alert(1, 'NaN');
SELECT msgbilling.set_alert(1, 1.0000001);
SELECT msgbilling.set_alert('x', 1);
SELECT msgbilling.drop_alert(1, NULL);

-- for the billing role: PUBLIC may not set them
CREATE ROLE regress_mb_nobody;
SET ROLE regress_mb_nobody;
SELECT msgbilling.set_alert(1, 1);
SELECT msgbilling.drop_alert(1, 1);
RESET ROLE;
DROP ROLE regress_mb_nobody;

-- the alerts and their rules survive in the books
SELECT check_name, ok FROM msgbilling.verify() WHERE NOT ok;
DROP VIEW seen;
SELECT msgbilling.detach('messages', drop_columns => true, force => true);
DROP TABLE messages;
DROP EXTENSION msgbilling;
DROP SCHEMA msgbilling;
