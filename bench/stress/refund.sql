-- A refund: a third of the time of a random recent id (often pending,
-- failed or refunded already: a caught 55000), once in a while of an id
-- that does not exist (a caught P0002), else of a recently charged message.
SELECT last_value AS maxid FROM messages_id_seq \gset
\set pick random(1, 30)
\set id random(greatest(1, :maxid - 300), :maxid)
\if :pick <= 10
SELECT stress.refund(:id);
\elif :pick = 11
SELECT stress.refund(-:id);
\else
SELECT stress.refund((SELECT m.id FROM messages m
                       WHERE m.id > :maxid - 2000 AND m.billing_status = 'charged'
                       ORDER BY random() LIMIT 1));
\endif
