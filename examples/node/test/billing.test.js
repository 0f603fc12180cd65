'use strict';
// The guide's app against a real cluster: messages saved as pending in the
// app's own transactions, billed afterwards one, a batch or all at a time
// at an LLM tariff (cached tokens at their own rate, the user's messages
// no_charge), the wallet page, and a top-up that lets failed messages be
// billed.

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

// Tariffs (schema.sql), credits per token: gpt-4o-mini 0.00000015 input,
// 0.000000075 cached, 0.0000006 output; any other model 0.0000025 input,
// 0.00000125 cached, 0.00001 output.  usage is as OpenAI reports it:
// prompt includes cached.
const usage = (promptTokens, completionTokens, cachedTokens = 0) =>
  ({ promptTokens, completionTokens, cachedTokens });
// A model's reply, billed; 2000 + 500 tokens of the default tariff cost
// 2000 × 0.0000025 + 500 × 0.00001 = 0.01.
const reply = (orgId, promptTokens, completionTokens, model = null, cachedTokens = 0) =>
  billing.saveMessage(pool, {
    orgId, content: `answer of ${completionTokens} tokens`, model,
    usage: usage(promptTokens, completionTokens, cachedTokens),
  });
// A user's message: stored, never charged.
const ask = (orgId, content = 'a question') =>
  billing.saveMessage(pool, { orgId, role: 'user', content });

let first;

test('a saved message is committed as pending, with no charge yet', async () => {
  const saved = await reply(ORG_A, 2000, 500);
  first = saved.id;
  assert.equal(saved.billingStatus, 'pending');
  // committed: another connection of the pool sees it
  const r = await row(first);
  assert.equal(r.billing_status, 'pending');
  assert.equal(r.cost_credits, null);
  assert.equal(r.charged_at, null);
  const stats = await billing.getBillingStats(pool);
  assert.deepEqual([stats.pending, stats.charged, stats.failed, stats.refunded, stats.no_charge],
    [1, 0, 0, 0, 0]);
  assert.ok(stats.oldest_pending instanceof Date);
});

test('a failed save rolls back its own transaction and bills nothing', async () => {
  // an invalid org id: the INSERT fails, nothing is left behind
  await assert.rejects(reply('not-a-uuid', 2000, 500), { code: '22P02' });
  const { rows } = await pool.query('SELECT count(*)::int AS n FROM messages');
  assert.equal(rows[0].n, 1);
  assert.equal((await billing.getBillingStats(pool)).pending, 1);
});

test('processMessageBilling charges one message', async () => {
  assert.equal(await billing.topUp(pool, ORG_A, 10, 'first credit pack', 'pay_a1'), '10.000000');
  assert.equal(await billing.processMessageBilling(pool, first), 'charged');
  const r = await row(first);
  assert.equal(r.billing_status, 'charged');
  assert.equal(r.cost_credits, '0.010000');
  assert.ok(r.charged_at instanceof Date);
  assert.equal(await billing.getBalance(pool, ORG_A), '9.990000');
  // billing it again changes nothing
  assert.equal(await billing.processMessageBilling(pool, first), 'charged');
  assert.equal(await billing.getBalance(pool, ORG_A), '9.990000');
});

test('processBatchBilling charges the given messages once', async () => {
  const ids = [
    // 1000 × 0.00000015 + 1000 × 0.0000006 = 0.00015 + 0.0006 = 0.00075
    (await reply(ORG_A, 1000, 1000, 'gpt-4o-mini')).id,
    // 4000 × 0.0000025 + 1000 × 0.00001 = 0.01 + 0.01 = 0.02
    (await reply(ORG_A, 4000, 1000)).id,
    // 1000 × 0.0000025 + 250 × 0.00001 = 0.0025 + 0.0025 = 0.005
    (await reply(ORG_A, 1000, 250)).id,
  ];
  // the already charged one is skipped, a repeated id counts once
  const result = await billing.processBatchBilling(pool, [first, ...ids, ids[0]]);
  assert.deepEqual(result, { charged: 3, failed: 0, skipped: 1, credits: '0.025750' });
  assert.deepEqual((await Promise.all(ids.map(row))).map((r) => [r.billing_status, r.cost_credits]),
    [['charged', '0.000750'], ['charged', '0.020000'], ['charged', '0.005000']]);
  // 9.99 - 0.02575
  assert.equal(await billing.getBalance(pool, ORG_A), '9.964250');
});

test('cached tokens are billed at the cached rate, the rest of the prompt at the input rate', async () => {
  // a Chat Completions response of gpt-4o-mini, as the SDK returns it
  const response = {
    id: 'chatcmpl-example',
    object: 'chat.completion',
    model: 'gpt-4o-mini-2024-07-18',
    choices: [{ index: 0, message: { role: 'assistant', content: 'Sure: …' }, finish_reason: 'stop' }],
    usage: {
      prompt_tokens: 10000,
      completion_tokens: 500,
      total_tokens: 10500,
      prompt_tokens_details: { cached_tokens: 8000, audio_tokens: 0 },
      completion_tokens_details: { reasoning_tokens: 0, audio_tokens: 0 },
    },
  };
  assert.deepEqual(billing.usageFromOpenAI(response),
    { promptTokens: 10000, completionTokens: 500, cachedTokens: 8000 });
  // the Responses API's names, and a usage without cache details
  assert.deepEqual(billing.usageFromOpenAI({ usage: { input_tokens: 30, output_tokens: 7 } }),
    { promptTokens: 30, completionTokens: 7, cachedTokens: 0 });
  assert.equal(billing.usageFromOpenAI({}), null);

  const mini = (await billing.saveMessage(pool, {
    orgId: ORG_A, content: response.choices[0].message.content,
    model: 'gpt-4o-mini',          // the model requested, which has a tariff
    usage: billing.usageFromOpenAI(response),
  })).id;
  const ids = [
    mini,
    (await reply(ORG_A, 1200, 300, null, 1000)).id,      // the default tariff
    (await reply(ORG_A, 10, 0, 'gpt-4o-mini')).id,       // rounded
  ];
  // mini: (10000 - 8000) × 0.00000015 + 8000 × 0.000000075 + 500 × 0.0000006
  //       = 0.0003 + 0.0006 + 0.0003 = 0.0012
  // 2nd:  200 × 0.0000025 + 1000 × 0.00000125 + 300 × 0.00001
  //       = 0.0005 + 0.00125 + 0.003 = 0.00475
  // 3rd:  10 × 0.00000015 = 0.0000015, to the nearest 0.000001 (half away
  //       from zero) = 0.000002
  assert.deepEqual(await billing.processBatchBilling(pool, ids),
    { charged: 3, failed: 0, skipped: 0, credits: '0.005952' });
  const { rows } = await pool.query(
    `SELECT input_tokens, cost_credits FROM messages
      WHERE id = ANY($1::bigint[]) ORDER BY id`, [ids]);
  assert.deepEqual(rows.map((r) => [r.input_tokens, r.cost_credits]),
    [[2000, '0.001200'], [200, '0.004750'], [10, '0.000002']]);
  // 9.96425 - 0.005952
  assert.equal(await billing.getBalance(pool, ORG_A), '9.958298');

  // the wallet page's history: each count, and their sum (OpenAI's total_tokens)
  const page = await billing.getWalletPage(pool, ORG_A, 3);
  assert.deepEqual(page.history.map((h) => h.message_id), ids.slice().reverse().map(String));
  assert.deepEqual(
    page.history.map((h) => [h.tokens, h.input_tokens, h.output_tokens, h.cached_tokens, h.cost_credits]),
    [[10, 10, 0, 0, 0.000002], [1500, 200, 300, 1000, 0.00475], [10500, 2000, 500, 8000, 0.0012]]);
});

test("a user's message is no_charge: cost 0, nothing debited", async () => {
  const ledger = async () => (await pool.query(
    'SELECT count(*)::int AS n FROM msgbilling.ledger WHERE org_id = $1::uuid', [ORG_A])).rows[0].n;
  const entries = await ledger();
  const question = (await ask(ORG_A, 'What is a cached token?')).id;
  assert.equal((await row(question)).billing_status, 'pending');
  assert.equal(await billing.processMessageBilling(pool, question), 'no_charge');
  const r = await row(question);
  assert.equal(r.billing_status, 'no_charge');
  assert.equal(r.cost_credits, '0.000000');
  assert.ok(r.charged_at instanceof Date);
  assert.equal(r.billing_error, null);
  assert.equal(await billing.getBalance(pool, ORG_A), '9.958298');
  assert.equal(await ledger(), entries);

  // a question and its answer: only the answer is charged (and counted)
  const next = (await ask(ORG_A, 'And a completion token?')).id;
  const answer = (await reply(ORG_A, 2000, 500)).id;
  assert.deepEqual(await billing.processAllPendingMessages(pool, ORG_A),
    { charged: 1, failed: 0, skipped: 0, credits: '0.010000' });
  assert.deepEqual([(await row(next)).billing_status, (await row(answer)).billing_status],
    ['no_charge', 'charged']);
  assert.equal(await billing.getBalance(pool, ORG_A), '9.948298');
  assert.equal(await ledger(), entries + 1);

  const stats = await billing.getBillingStats(pool, ORG_A);
  assert.deepEqual([stats.pending, stats.charged, stats.no_charge, stats.credits_charged],
    [0, 8, 2, '0.051702']);
});

let bIds;
let bQuestion;
let cId;

test('processAllPendingMessages bills every org; short wallets fail', async () => {
  assert.equal(await billing.topUp(pool, ORG_B, 0.015, 'small pack', 'pay_b0'), '0.015000');
  bIds = [];
  for (let i = 0; i < 3; i++) bIds.push((await reply(ORG_B, 2000, 500)).id);   // 0.01 each
  bQuestion = (await ask(ORG_B)).id;
  // 400 × 0.0000025 + 100 × 0.00001 = 0.001 + 0.001 = 0.002
  cId = (await reply(ORG_C, 400, 100)).id;
  const aId = (await reply(ORG_A, 2000, 500)).id;

  const result = await billing.processAllPendingMessages(pool);
  // A's message and B's first; B's other two and C's fail
  assert.deepEqual(result, { charged: 2, failed: 3, skipped: 0, credits: '0.020000' });
  assert.equal((await row(aId)).billing_status, 'charged');
  assert.deepEqual((await Promise.all(bIds.map(row))).map((r) => [r.billing_status, r.billing_error]),
    [['charged', null], ['failed', 'insufficient_credits'], ['failed', 'insufficient_credits']]);
  // B's question waits behind none of its unpaid replies
  assert.equal((await row(bQuestion)).billing_status, 'no_charge');
  assert.deepEqual([(await row(cId)).billing_status, (await row(cId)).billing_error],
    ['failed', 'no_wallet']);
  assert.equal(await billing.getBalance(pool, ORG_A), '9.938298');
  assert.equal(await billing.getBalance(pool, ORG_B), '0.005000');
  assert.equal(await billing.getBalance(pool, ORG_C), null);

  const stats = await billing.getBillingStats(pool);
  assert.deepEqual({ ...stats, oldest_pending: undefined }, {
    pending: 0, charged: 10, failed: 3, refunded: 0, credits_charged: '0.071702',
    oldest_pending: undefined, no_charge: 3,
  });
  assert.equal(stats.oldest_pending, null);
});

test('the wallet page: balance, stats and history of one org', async () => {
  const page = await billing.getWalletPage(pool, ORG_B, 10);
  assert.equal(page.balance, '0.005000');
  assert.equal(page.stats.pending, 0);
  assert.equal(page.stats.charged, 1);
  assert.equal(page.stats.failed, 2);
  assert.equal(page.stats.no_charge, 1);
  assert.equal(page.stats.credits_charged, 0.01);
  assert.equal(page.history.length, 4);
  // newest first
  assert.deepEqual(page.history.map((h) => h.message_id),
    [bQuestion, ...bIds.slice().reverse()].map(String));
  assert.deepEqual(page.history.map((h) => [h.billing_status, h.failure_reason, h.cost_credits]), [
    ['no_charge', null, 0],
    ['failed', 'insufficient_credits', null],
    ['failed', 'insufficient_credits', null],
    ['charged', null, 0.01],
  ]);
  assert.deepEqual(page.history.slice(1).map((h) =>
    [h.tokens, h.input_tokens, h.output_tokens, h.cached_tokens]),
  [[2500, 2000, 500, 0], [2500, 2000, 500, 0], [2500, 2000, 500, 0]]);
  // max rows
  assert.equal((await billing.getWalletPage(pool, ORG_B, 1)).history.length, 1);
  // an org with no messages and no wallet
  const empty = await billing.getWalletPage(pool, 'd0000000-0000-4000-8000-00000000000d');
  assert.equal(empty.balance, null);
  assert.equal(empty.stats.charged, 0);
  assert.deepEqual(empty.history, []);
});

test('a top-up makes the failed messages billable again, once per payment', async () => {
  assert.equal(await billing.topUp(pool, ORG_B, 5, 'card payment', 'pay_b1'), '5.005000');
  // the webhook delivered twice: credited once
  assert.equal(await billing.topUp(pool, ORG_B, 5, 'card payment', 'pay_b1'), '5.005000');
  let stats = await billing.getBillingStats(pool, ORG_B);
  assert.equal(stats.pending, 2);
  assert.equal(stats.failed, 0);

  assert.deepEqual(await billing.processAllPendingMessages(pool, ORG_B),
    { charged: 2, failed: 0, skipped: 0, credits: '0.020000' });
  assert.equal(await billing.getBalance(pool, ORG_B), '4.985000');
  stats = await billing.getBillingStats(pool, ORG_B);
  assert.deepEqual([stats.pending, stats.charged, stats.failed, stats.no_charge, stats.credits_charged],
    [0, 3, 0, 1, '0.030000']);
  const page = await billing.getWalletPage(pool, ORG_B, 10);
  assert.deepEqual(page.history.map((h) => h.billing_status),
    ['no_charge', 'charged', 'charged', 'charged']);
  // the ledger: two top-ups and the charges; nothing for the question
  const { rows } = await pool.query(
    `SELECT kind, amount, balance_after FROM msgbilling.ledger
      WHERE org_id = $1::uuid ORDER BY id`, [ORG_B]);
  assert.deepEqual(rows.map((r) => [r.kind, r.amount, r.balance_after]), [
    ['top_up', '0.015000', '0.015000'],
    ['charge', '-0.010000', '0.005000'],
    ['top_up', '5.000000', '5.005000'],
    ['charge', '-0.020000', '4.985000'],
  ]);
});

test('an org without a wallet: its first top-up, then the message billed', async () => {
  assert.equal(await billing.topUp(pool, ORG_C, 1, 'first pack', 'pay_c1'), '1.000000');
  // processMessageBilling tries a failed message again
  assert.equal(await billing.processMessageBilling(pool, cId), 'charged');
  assert.equal(await billing.getBalance(pool, ORG_C), '0.998000');
});

test('drain bills everything pending, a batch per transaction', async () => {
  for (let i = 0; i < 5; i++) {
    await ask(ORG_A);
    await reply(ORG_A, 400, 100);            // 0.002
  }
  assert.equal((await billing.getBillingStats(pool)).pending, 10);
  await billing.drain(pool);
  const stats = await billing.getBillingStats(pool);
  assert.equal(stats.pending, 0);
  assert.equal(stats.failed, 0);
  assert.equal(stats.charged, 18);
  assert.equal(stats.no_charge, 8);
  // 9.938298 - 5 × 0.002
  assert.equal(await billing.getBalance(pool, ORG_A), '9.928298');
});

test('a reply saved without its usage fails with invalid_tokens, charging nothing', async () => {
  const id = (await billing.saveMessage(pool, { orgId: ORG_A, content: 'lost usage' })).id;
  assert.equal(await billing.processMessageBilling(pool, id), 'failed');
  const r = await row(id);
  assert.deepEqual([r.billing_error, r.cost_credits], ['invalid_tokens', null]);
  assert.equal(await billing.getBalance(pool, ORG_A), '9.928298');
});

test("msgbilling's books balance", async () => {
  const { rows } = await pool.query('SELECT check_name, ok FROM msgbilling.verify()');
  assert.ok(rows.length > 0);
  for (const r of rows) assert.equal(r.ok, true, r.check_name);
});
