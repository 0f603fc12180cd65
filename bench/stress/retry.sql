-- Failed messages back to pending: of an org with a wallet (its
-- insufficient_credits and invalid_tokens failures), 1 time in 100 of an
-- org without one, 1 time in 1000 of all orgs.  (Failures without a wallet
-- or a token count pile up all run long: retrying them too often would
-- turn the run into rewriting them.)
\set r random(1, 1000)
\set org CASE WHEN :r <= 10 THEN random(181, 200) ELSE random(1, 180) END
\if :r = 1000
SELECT msgbilling.retry_failed(NULL);
\else
SELECT msgbilling.retry_failed(:org);
\endif
