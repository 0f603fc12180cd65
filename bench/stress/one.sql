-- Bill one random recent id (pending, failed, charged or not visible yet).
SELECT last_value AS maxid FROM messages_id_seq \gset
\set id random(greatest(1, :maxid - 500), :maxid + 2)
SELECT stress.bill_one(:id);
