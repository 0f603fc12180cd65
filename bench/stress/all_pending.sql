-- Bill up to 500 pending messages of all orgs.
SELECT * FROM msgbilling.process_all_pending(NULL, 500);
