-- Bill every pending message of one org.
\set org CASE WHEN random(1, 100) = 1 THEN random(181, 200) WHEN random(1, 2) = 1 THEN random_zipfian(1, 180, 1.1) ELSE random(1, 180) END
SELECT * FROM msgbilling.process_all_pending(:org);
