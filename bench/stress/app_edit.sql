-- The app edits a recent message (its content, not a billing column) in a
-- transaction that does a little more work before it commits: the row is
-- locked meanwhile, and billers, refunds and re-pending must cope with it.
SELECT last_value AS maxid FROM messages_id_seq \gset
\set id random(greatest(1, :maxid - 2000), :maxid)
BEGIN;
UPDATE messages SET content = 'stress, edited' WHERE id = :id;
\sleep 10 ms
COMMIT;
