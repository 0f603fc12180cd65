-- :n messages over :orgs orgs, two models with a price plus one without,
-- created one millisecond apart (so the heap is in creation order).
-- With -v realistic=1, content as chat apps store it: 200 to 2,000 bytes,
-- and one message in ten 2,500 to 6,000 bytes, TOASTed (hex digests do
-- not compress).  With -v tariffed=1, the three counts of a tariffed
-- table (mb_tariff_schema.sql) instead of tokens_used.
\if :{?realistic}
\set content '(SELECT string_agg(md5(i || ''.'' || g), '''') FROM generate_series(1, CASE WHEN i % 10 = 0 THEN 2500 + (i::bigint * 31) % 3500 ELSE 200 + (i::bigint * 7919) % 1800 END / 32) g)'
\else
\set content '''message '' || i'
\endif
\if :{?tariffed}
INSERT INTO messages (org_id, content, model, input_tokens, output_tokens, cached_tokens,
                      created_at)
SELECT md5((1 + (i::bigint * 7919) % :orgs)::text)::uuid, :content,
       (ARRAY['gpt-4o', 'gpt-4o-mini', 'llama'])[1 + i % 3],
       50 + (i::bigint * 31) % 4000, 20 + (i::bigint * 17) % 800,
       CASE WHEN i % 3 = 0 THEN (i::bigint * 13) % 2000 ELSE 0 END,
       '2024-01-01'::timestamptz + i * interval '1 ms'
  FROM generate_series(1, :n) i;
\else
INSERT INTO messages (org_id, content, model, tokens_used, created_at)
SELECT md5((1 + (i::bigint * 7919) % :orgs)::text)::uuid,
       :content,
       (ARRAY['gpt-4o', 'gpt-4o-mini', 'llama'])[1 + i % 3],
       50 + (i::bigint * 31) % 4000,
       '2024-01-01'::timestamptz + i * interval '1 ms'
  FROM generate_series(1, :n) i;
\endif
