-- :n pending messages over :orgs funded orgs, two models plus the default
-- price, created one millisecond apart (so the heap is in creation order).
-- Works on both schemas: the guide's (plain tables) and msgbilling's;
-- -v realistic=1 and -v tariffed=1 as insert_messages.sql says.
\set ON_ERROR_STOP on
SELECT (to_regclass('msgbilling.config') IS NOT NULL) AS mb \gset
\if :{?tariffed}
-- per million: input, output, cached; 0.001 a message, at least 0.002,
-- rounded up to 0.0001
SELECT count(msgbilling.set_tariff(m, i, o, c, per_message => 0.001,
                                   minimum_charge => 0.002, increment => 0.0001,
                                   rounding => 'up', effective_from => '2020-01-01'))
  FROM (VALUES (NULL, 0.0000008, 0.0000008, NULL),
               ('gpt-4o', 0.0000025, 0.00001, 0.00000125),
               ('gpt-4o-mini', 0.00000015, 0.0000006, 0.000000075)) t(m, i, o, c);
SELECT count(msgbilling.top_up(md5(o::text)::uuid, 1000000))
  FROM generate_series(1, :orgs) o;
\elif :mb
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
