-- Bill 50 random recent ids (some repeated, some maybe not visible yet).
SELECT last_value AS maxid FROM messages_id_seq \gset
\set lo greatest(1, :maxid - 1000)
SELECT * FROM msgbilling.process_batch_billing(
    ARRAY(SELECT :lo + floor(random() * (:maxid - :lo + 3))::bigint
            FROM generate_series(1, 50)));
