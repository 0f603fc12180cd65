-- :n messages over :orgs orgs, two models with a price plus one without,
-- created one millisecond apart (so the heap is in creation order).
INSERT INTO messages (org_id, content, model, tokens_used, created_at)
SELECT md5((1 + (i::bigint * 7919) % :orgs)::text)::uuid,
       'message ' || i,
       (ARRAY['gpt-4o', 'gpt-4o-mini', 'llama'])[1 + i % 3],
       50 + (i::bigint * 31) % 4000,
       '2024-01-01'::timestamptz + i * interval '1 ms'
  FROM generate_series(1, :n) i;
