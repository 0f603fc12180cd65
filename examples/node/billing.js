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

// Save one message, as the app does after an LLM call: in its own
// transaction, billing_status defaulting to 'pending'.  No billing happens
// here, so a billing problem can never fail the answer.
async function saveMessage(pool, { orgId, role = 'assistant', content, model = null, tokensUsed }) {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const { rows } = await client.query(
      `INSERT INTO messages (org_id, role, content, model, tokens_used)
       VALUES ($1::uuid, $2::text, $3::text, $4::text, $5::integer)
       RETURNING id, billing_status`,
      [orgId, role, content, model, tokensUsed]);
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
// afterwards ('charged', 'failed', or 'pending' when another biller holds it).
async function processMessageBilling(pool, messageId) {
  const { rows } = await pool.query(
    'SELECT msgbilling.process_message_billing($1::bigint) AS status', [messageId]);
  return rows[0].status;
}

// processBatchBilling(ids): { charged, failed, skipped, credits }.
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
  };
}

// The wallet page (Dashboard → Wallet): balance, statistics and the org's
// latest messages with their charges, in one round trip.
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

async function getBalance(pool, orgId) {
  const { rows } = await pool.query('SELECT msgbilling.balance($1::uuid) AS balance', [orgId]);
  return rows[0].balance;
}

module.exports = {
  saveMessage,
  processMessageBilling,
  processBatchBilling,
  processAllPendingMessages,
  drain,
  getBillingStats,
  getWalletPage,
  topUp,
  getBalance,
};
