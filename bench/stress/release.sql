-- A release: mostly of one of the last 20 holds granted to a hold-only org
-- (often released or expired already), else of a recent hold taken for a
-- message (the app's call failed), 3 times in 100 of an id near the end of
-- the holds' sequence (maybe not committed yet, or never granted).
\set r random(1, 100)
\set o random(301, 305)
\set n random(0, 19)
\if :r <= 85
SELECT stress.release((SELECT h.hold_id FROM stress.hold_log h
                        WHERE h.org = :o AND h.hold_id IS NOT NULL
                        ORDER BY h.id DESC OFFSET :n LIMIT 1));
\elif :r <= 97
SELECT stress.release((SELECT h.hold_id FROM stress.hold_log h
                        WHERE h.purpose = 'message' AND h.hold_id IS NOT NULL
                        ORDER BY h.id DESC OFFSET :n LIMIT 1));
\else
SELECT stress.release((SELECT last_value FROM msgbilling.holds_id_seq) + 2 - :n);
\endif
