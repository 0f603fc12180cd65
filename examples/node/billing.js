'use strict';
// billing.js — the migration guide's app, with msgbilling doing the billing.
//
// The guide's MessageBillingService becomes one SQL call per method: the app
// saves each message as 'pending' and msgbilling bills it afterwards, inside
// PostgreSQL.  Every function takes a pg.Pool (or anything with query()).
//
// msgbilling's functions take their ids as "any" (a value of the attached
// table's type, or its text form), so an untyped parameter is an error
// ("could not determine data type of parameter $1"): every parameter below
// carries a cast.  This app's messages have bigint ids and uuid org ids.

// Counts come back as bigint, which node-postgres returns as strings; they
// fit a JS number.  Credits stay strings: numeric(…, 6), exact.
function counts(row) {
  return {
    charged: Number(row.charged),
    failed: Number(row.failed),
    skipped: Number(row.skipped),
    credits: row.credits,
  };
}

// The usage of an OpenAI response, as saveMessage takes it.  Chat
// Completions: usage.prompt_tokens (which includes the cached ones),
// usage.completion_tokens (reasoning included) and
// usage.prompt_tokens_details.cached_tokens; the Responses API names them
// input_tokens, output_tokens and input_tokens_details.cached_tokens.  A
// response without usage gives null.
function usageFromOpenAI(response) {
  const u = response && response.usage;
  if (!u) return null;
  if (u.prompt_tokens !== undefined) {
    return {
      promptTokens: u.prompt_tokens,
      completionTokens: u.completion_tokens,
      cachedTokens: u.prompt_tokens_details?.cached_tokens ?? 0,
    };
  }
  return {
    promptTokens: u.input_tokens,
    completionTokens: u.output_tokens,
    cachedTokens: u.input_tokens_details?.cached_tokens ?? 0,
  };
}

// Save one message, as the app does after an LLM call: in its own
// transaction, billing_status defaulting to 'pending'.  No billing happens
// here, so a billing problem can never fail the answer.
//
// usage is { promptTokens, completionTokens, cachedTokens } as the provider
// reports it (promptTokens includes cachedTokens; a missing cachedTokens is
// 0), e.g. usageFromOpenAI(response); null for a user's message, which is
// stored and never charged (billing_status 'no_charge').  A reply saved
// without usage fails billing with invalid_tokens.  model is the name the
// tariffs know: the one requested ('gpt-4o-mini'), not the dated snapshot
// a response names ('gpt-4o-mini-2024-07-18'), which the default tariff
// would price.  holdId is the hold taken for the call (holdCredits), or
// null: billing the message, whatever its outcome, ends that hold.
async function saveMessage(pool, { orgId, role = 'assistant', content, model = null, usage = null,
                                   holdId = null }) {
  const tokens = usage == null ? [null, null, null]
    : [usage.promptTokens ?? null, usage.completionTokens ?? null, usage.cachedTokens ?? 0];
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const { rows } = await client.query(
      `INSERT INTO messages (org_id, role, content, model,
                             prompt_tokens, completion_tokens, cached_tokens, hold_id)
       VALUES ($1::uuid, $2::text, $3::text, $4::text, $5::integer, $6::integer, $7::integer,
               $8::bigint)
       RETURNING id, billing_status`,
      [orgId, role, content, model, ...tokens, holdId]);
    await client.query('COMMIT');
    return { id: rows[0].id, billingStatus: rows[0].billing_status };
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  } finally {
    client.release();
  }
}

// messageBillingService.processMessageBilling(id): the message's status
// afterwards ('charged', 'failed', 'no_charge' for a message that is not
// billable, or 'pending' when another biller holds it).
async function processMessageBilling(pool, messageId) {
  const { rows } = await pool.query(
    'SELECT msgbilling.process_message_billing($1::bigint) AS status', [messageId]);
  return rows[0].status;
}

// processBatchBilling(ids): { charged, failed, skipped, credits }.  The
// no_charge messages billed are in none of the counts.
async function processBatchBilling(pool, messageIds) {
  const { rows } = await pool.query(
    'SELECT * FROM msgbilling.process_batch_billing($1::bigint[])', [messageIds]);
  return counts(rows[0]);
}

// processAllPendingMessages(): everything pending, or one org's, in the
// caller's transaction.  For a large backlog prefer drain().
async function processAllPendingMessages(pool, orgId = null) {
  const { rows } = orgId == null
    ? await pool.query('SELECT * FROM msgbilling.process_all_pending()')
    : await pool.query('SELECT * FROM msgbilling.process_all_pending($1::text)', [orgId]);
  return counts(rows[0]);
}

// Everything pending, one committed transaction per batch.  A procedure: it
// returns nothing, and commits only outside a transaction block, so it runs
// on a pooled connection in autocommit, never inside BEGIN.
async function drain(pool) {
  await pool.query('CALL msgbilling.drain()');
}

// The statistics the guide's GET endpoint and wallet page show.
async function getBillingStats(pool, orgId = null) {
  const { rows } = orgId == null
    ? await pool.query('SELECT * FROM msgbilling.stats()')
    : await pool.query('SELECT * FROM msgbilling.stats($1::text)', [orgId]);
  const s = rows[0];
  return {
    pending: Number(s.pending),
    charged: Number(s.charged),
    failed: Number(s.failed),
    refunded: Number(s.refunded),
    credits_charged: s.credits_charged,
    oldest_pending: s.oldest_pending,
    no_charge: Number(s.no_charge),     // messages billed as no_charge
  };
}

// The wallet page (Dashboard → Wallet): balance, statistics and the org's
// latest messages with their charges, in one round trip: stats and history
// rows as msgbilling names their columns (history's tokens is the sum of
// input_tokens, output_tokens and cached_tokens).
async function getWalletPage(pool, orgId, limit = 50) {
  const { rows } = await pool.query(
    `SELECT msgbilling.balance($1::uuid) AS balance,
            (SELECT row_to_json(s) FROM msgbilling.stats($1::uuid) s) AS stats,
            (SELECT coalesce(json_agg(h), '[]') FROM msgbilling.history($1::uuid, $2::integer) h) AS history`,
    [orgId, limit]);
  const { balance, stats, history } = rows[0];
  return { balance, stats, history };
}

// Credit a wallet: the new balance.  The same idempotency key credits once
// (a payment webhook delivered twice).  Any change to a wallet makes the
// org's insufficient_credits failures pending again, for the next billing run.
async function topUp(pool, orgId, amount, note = null, idempotencyKey = null) {
  const { rows } = await pool.query(
    'SELECT msgbilling.top_up($1::uuid, $2::numeric, $3::text, $4::text) AS balance',
    [orgId, String(amount), note, idempotencyKey]);
  return rows[0].balance;
}

// Admission, before the LLM call (what the old interceptor's pre-check
// did, without debiting anything): reserve the call's estimated cost with
// msgbilling.hold.  { holdId, estimate }; holdId null when the org has
// less than estimate available (balance + overdraft - active holds, capped
// by a hard budget): the caller answers 402 and makes no call.
//
// The estimate is an upper bound for all but tiny prompts, from the
// tariff billing will use (msgbilling.tariff_at, the app's role needs
// EXECUTE on it): every prompt token at the input rate, with the prompt's
// length in UTF-8 bytes as its token count (a token is at least one byte;
// the chat format adds a few per message), plus maxTokens at the output
// rate, rounded up to the 0.000001 credits amounts have.  The tariffs of
// schema.sql have no per-message part or minimum to add.  Billing later
// charges what the call really used and ends the hold; the estimate only
// decides whether the call is made.
//
// requestId is the hold key: the same request retried gets the same hold
// while it is active, not a second one.  The ttl covers the call and the
// wait for billing; a hold not ended by then stops counting by itself.
async function holdCredits(pool, { orgId, model = null, prompt = '', maxTokens, requestId = null,
                                   ttl = '2 minutes' }) {
  const { rows } = await pool.query(
    `SELECT e.estimate,
            msgbilling.hold($1::uuid, e.estimate, $5::interval, $6::text) AS hold_id
       FROM (SELECT round(ceil((t.input_per_token * $3::integer
                                + t.output_per_token * $4::integer) * 1000000) / 1000000, 6)
                    AS estimate
               FROM msgbilling.tariff_at($2::text) t) e`,
    [orgId, model, Buffer.byteLength(prompt, 'utf8'), maxTokens, ttl, requestId]);
  if (rows.length === 0) throw new Error(`no tariff for model ${model}`);
  return { holdId: rows[0].hold_id, estimate: rows[0].estimate };
}

// End a hold before billing does, e.g. when the LLM call failed: true if
// it was still active.
async function releaseHold(pool, holdId) {
  const { rows } = await pool.query('SELECT msgbilling.release($1::bigint) AS released', [holdId]);
  return rows[0].released;
}

// What a hold may take now: balance + overdraft - active holds, no more
// than a hard budget has left; '0.000000' for an org without a wallet.
async function getAvailable(pool, orgId) {
  const { rows } = await pool.query('SELECT msgbilling.available($1::uuid) AS available', [orgId]);
  return rows[0].available;
}

async function getBalance(pool, orgId) {
  const { rows } = await pool.query('SELECT msgbilling.balance($1::uuid) AS balance', [orgId]);
  return rows[0].balance;
}

module.exports = {
  usageFromOpenAI,
  saveMessage,
  processMessageBilling,
  processBatchBilling,
  processAllPendingMessages,
  drain,
  getBillingStats,
  getWalletPage,
  topUp,
  getBalance,
  holdCredits,
  releaseHold,
  getAvailable,
};
