'use strict';
// The guide's app against a real cluster: messages saved as pending in the
// app's own transactions, billed afterwards one, a batch or all at a time,
// the wallet page, and a top-up that lets failed messages be billed.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { freshDatabase } = require('./db');
const billing = require('../billing');

const ORG_A = 'a0000000-0000-4000-8000-00000000000a';  // plenty of credits
const ORG_B = 'b0000000-0000-4000-8000-00000000000b';  // too few credits
const ORG_C = 'c0000000-0000-4000-8000-00000000000c';  // no wallet yet

let db;
let pool;

before(async () => {
  db = await freshDatabase('mb_node_billing');
  pool = db.pool;
});

after(async () => {
  if (db) await db.drop();
});

async function row(id) {
  const { rows } = await pool.query(
    `SELECT billing_status, cost_credits, charged_at, billing_error
       FROM messages WHERE id = $1::bigint`, [id]);
  return rows[0];
}

// Prices (schema.sql): 0.001 credits per token by default, 0.0001 for
// gpt-4o-mini.
const save = (orgId, tokensUsed, model = null) =>
  billing.saveMessage(pool, { orgId, content: `answer of ${tokensUsed} tokens`, model, tokensUsed });

let first;

test('a saved message is committed as pending, with no charge yet', async () => {
  const saved = await save(ORG_A, 1000);
  first = saved.id;
  assert.equal(saved.billingStatus, 'pending');
  // committed: another connection of the pool sees it
  const r = await row(first);
  assert.equal(r.billing_status, 'pending');
  assert.equal(r.cost_credits, null);
  assert.equal(r.charged_at, null);
  const stats = await billing.getBillingStats(pool);
  assert.deepEqual([stats.pending, stats.charged, stats.failed, stats.refunded],
    [1, 0, 0, 0]);
  assert.ok(stats.oldest_pending instanceof Date);
});

test('a failed save rolls back its own transaction and bills nothing', async () => {
  // an invalid org id: the INSERT fails, nothing is left behind
  await assert.rejects(save('not-a-uuid', 1000), { code: '22P02' });
  const { rows } = await pool.query('SELECT count(*)::int AS n FROM messages');
  assert.equal(rows[0].n, 1);
  assert.equal((await billing.getBillingStats(pool)).pending, 1);
});

test('processMessageBilling charges one message', async () => {
  assert.equal(await billing.topUp(pool, ORG_A, 10, 'first credit pack', 'pay_a1'), '10.000000');
  assert.equal(await billing.processMessageBilling(pool, first), 'charged');
  const r = await row(first);
  assert.equal(r.billing_status, 'charged');
  assert.equal(r.cost_credits, '1.000000');
  assert.ok(r.charged_at instanceof Date);
  assert.equal(await billing.getBalance(pool, ORG_A), '9.000000');
  // billing it again changes nothing
  assert.equal(await billing.processMessageBilling(pool, first), 'charged');
  assert.equal(await billing.getBalance(pool, ORG_A), '9.000000');
});

test('processBatchBilling charges the given messages once', async () => {
  const ids = [
    (await save(ORG_A, 1000, 'gpt-4o-mini')).id,  // 0.1
    (await save(ORG_A, 2000)).id,                 // 2
    (await save(ORG_A, 500)).id,                  // 0.5
  ];
  // the already charged one is skipped, a repeated id counts once
  const result = await billing.processBatchBilling(pool, [first, ...ids, ids[0]]);
  assert.deepEqual(result, { charged: 3, failed: 0, skipped: 1, credits: '2.600000' });
  assert.deepEqual((await Promise.all(ids.map(row))).map((r) => [r.billing_status, r.cost_credits]),
    [['charged', '0.100000'], ['charged', '2.000000'], ['charged', '0.500000']]);
  assert.equal(await billing.getBalance(pool, ORG_A), '6.400000');
});

let bIds;
let cId;

test('processAllPendingMessages bills every org; short wallets fail', async () => {
  assert.equal(await billing.topUp(pool, ORG_B, 1.5, 'small pack', 'pay_b0'), '1.500000');
  bIds = [];
  for (let i = 0; i < 3; i++) bIds.push((await save(ORG_B, 1000)).id);
  cId = (await save(ORG_C, 100)).id;
  const aId = (await save(ORG_A, 1000)).id;

  const result = await billing.processAllPendingMessages(pool);
  // A's message and B's first; B's other two and C's fail
  assert.deepEqual(result, { charged: 2, failed: 3, skipped: 0, credits: '2.000000' });
  assert.equal((await row(aId)).billing_status, 'charged');
  assert.deepEqual((await Promise.all(bIds.map(row))).map((r) => [r.billing_status, r.billing_error]),
    [['charged', null], ['failed', 'insufficient_credits'], ['failed', 'insufficient_credits']]);
  assert.deepEqual([(await row(cId)).billing_status, (await row(cId)).billing_error],
    ['failed', 'no_wallet']);
  assert.equal(await billing.getBalance(pool, ORG_A), '5.400000');
  assert.equal(await billing.getBalance(pool, ORG_B), '0.500000');
  assert.equal(await billing.getBalance(pool, ORG_C), null);

  const stats = await billing.getBillingStats(pool);
  assert.deepEqual({ ...stats, oldest_pending: undefined },
    { pending: 0, charged: 6, failed: 3, refunded: 0, credits_charged: '5.600000', oldest_pending: undefined });
  assert.equal(stats.oldest_pending, null);
});

test('the wallet page: balance, stats and history of one org', async () => {
  const page = await billing.getWalletPage(pool, ORG_B, 10);
  assert.equal(page.balance, '0.500000');
  assert.equal(page.stats.pending, 0);
  assert.equal(page.stats.charged, 1);
  assert.equal(page.stats.failed, 2);
  assert.equal(page.stats.credits_charged, 1);
  assert.equal(page.history.length, 3);
  // newest first
  assert.deepEqual(page.history.map((h) => h.message_id), bIds.slice().reverse().map(String));
  assert.deepEqual(page.history.map((h) => [h.billing_status, h.failure_reason]),
    [['failed', 'insufficient_credits'], ['failed', 'insufficient_credits'], ['charged', null]]);
  assert.deepEqual(page.history.map((h) => h.tokens), [1000, 1000, 1000]);
  // max rows
  assert.equal((await billing.getWalletPage(pool, ORG_B, 1)).history.length, 1);
  // an org with no messages and no wallet
  const empty = await billing.getWalletPage(pool, 'd0000000-0000-4000-8000-00000000000d');
  assert.equal(empty.balance, null);
  assert.equal(empty.stats.charged, 0);
  assert.deepEqual(empty.history, []);
});

test('a top-up makes the failed messages billable again, once per payment', async () => {
  assert.equal(await billing.topUp(pool, ORG_B, 5, 'card payment', 'pay_b1'), '5.500000');
  // the webhook delivered twice: credited once
  assert.equal(await billing.topUp(pool, ORG_B, 5, 'card payment', 'pay_b1'), '5.500000');
  let stats = await billing.getBillingStats(pool, ORG_B);
  assert.equal(stats.pending, 2);
  assert.equal(stats.failed, 0);

  assert.deepEqual(await billing.processAllPendingMessages(pool, ORG_B),
    { charged: 2, failed: 0, skipped: 0, credits: '2.000000' });
  assert.equal(await billing.getBalance(pool, ORG_B), '3.500000');
  stats = await billing.getBillingStats(pool, ORG_B);
  assert.deepEqual([stats.pending, stats.charged, stats.failed, stats.credits_charged],
    [0, 3, 0, '3.000000']);
  const page = await billing.getWalletPage(pool, ORG_B, 10);
  assert.deepEqual(page.history.map((h) => h.billing_status), ['charged', 'charged', 'charged']);
  // the ledger: two top-ups and the charges
  const { rows } = await pool.query(
    `SELECT kind, amount, balance_after FROM msgbilling.ledger
      WHERE org_id = $1::uuid ORDER BY id`, [ORG_B]);
  assert.deepEqual(rows.map((r) => [r.kind, r.amount, r.balance_after]), [
    ['top_up', '1.500000', '1.500000'],
    ['charge', '-1.000000', '0.500000'],
    ['top_up', '5.000000', '5.500000'],
    ['charge', '-2.000000', '3.500000'],
  ]);
});

test('an org without a wallet: its first top-up, then the message billed', async () => {
  assert.equal(await billing.topUp(pool, ORG_C, 1, 'first pack', 'pay_c1'), '1.000000');
  // processMessageBilling tries a failed message again
  assert.equal(await billing.processMessageBilling(pool, cId), 'charged');
  assert.equal(await billing.getBalance(pool, ORG_C), '0.900000');
});

test('drain bills everything pending, a batch per transaction', async () => {
  for (let i = 0; i < 5; i++) await save(ORG_A, 100);
  assert.equal((await billing.getBillingStats(pool)).pending, 5);
  await billing.drain(pool);
  const stats = await billing.getBillingStats(pool);
  assert.equal(stats.pending, 0);
  assert.equal(stats.failed, 0);
  assert.equal(stats.charged, 14);
  assert.equal(await billing.getBalance(pool, ORG_A), '4.900000');
});

test("msgbilling's books balance", async () => {
  const { rows } = await pool.query('SELECT check_name, ok FROM msgbilling.verify()');
  assert.ok(rows.length > 0);
  for (const r of rows) assert.equal(r.ok, true, r.check_name);
});
