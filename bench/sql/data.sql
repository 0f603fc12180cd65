-- :n pending messages over :orgs funded orgs, two models plus the default
-- price, created one millisecond apart (so the heap is in creation order).
-- Works on both schemas: the guide's (plain tables) and msgbilling's.
\set ON_ERROR_STOP on
SELECT (to_regclass('msgbilling.config') IS NOT NULL) AS mb \gset
\if :mb
SELECT msgbilling.set_price(NULL, 0.000002, '2020-01-01');
SELECT msgbilling.set_price('gpt-4o', 0.00001, '2020-01-01');
SELECT msgbilling.set_price('gpt-4o-mini', 0.0000006, '2020-01-01');
SELECT count(msgbilling.top_up(md5(o::text)::uuid, 1000000))
  FROM generate_series(1, :orgs) o;
\else
INSERT INTO prices VALUES (NULL, 0.000002), ('gpt-4o', 0.00001),
                          ('gpt-4o-mini', 0.0000006);
INSERT INTO credits SELECT md5(o::text)::uuid, 1000000 FROM generate_series(1, :orgs) o;
INSERT INTO ledger (org_id, kind, amount, balance_after, message_count)
SELECT org_id, 'top_up', balance, balance, 0 FROM credits;
\endif
\ir insert_messages.sql
VACUUM ANALYZE;
