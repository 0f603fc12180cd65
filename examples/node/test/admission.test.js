'use strict';
// Admission before the LLM call, the old DebitInterceptor's job done with
// holds: POST /api/chat reserves the call's estimate (msgbilling.hold) or
// answers 402 without calling, saves the reply with its hold, and billing
// charges the reply and ends the hold.  Alerts arrive over LISTEN.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { freshDatabase } = require('./db');
const billing = require('../billing');
const { createServer } = require('../server');
const { AlertListener } = require('../alerts');

const FUNDED = 'e0000000-0000-4000-8000-00000000000e';
const POOR = 'f0000000-0000-4000-8000-00000000000f';
const NO_WALLET = 'f1000000-0000-4000-8000-0000000000f1';
const RACE = 'f2000000-0000-4000-8000-0000000000f2';
const FLAKY = 'f3000000-0000-4000-8000-0000000000f3';
const ALERTED = 'f4000000-0000-4000-8000-0000000000f4';
const BUDGETED = 'f5000000-0000-4000-8000-0000000000f5';

// Every request below asks gpt-4o (the default tariff of schema.sql:
// 0.0000025 input, 0.00001 output) with a prompt of 200 bytes and
// max_tokens 1000: the estimate is 200 × 0.0000025 + 1000 × 0.00001 =
// 0.0005 + 0.01 = 0.0105 credits.
const PROMPT = 'x'.repeat(200);
const ESTIMATE = '0.010500';

let db;
let pool;
let server;
let base;
let alerts;
const logged = [];

// The LLM, in the tests' hands: what it answers (usage as OpenAI reports
// it), whether it fails, and a gate a call may wait at.
const llm = {
  calls: 0,
  usage: { prompt_tokens: 50, completion_tokens: 300 },   // 0.000125 + 0.003 = 0.003125
  fail: false,
  gate: null,
  async call({ model, prompt }) {
    llm.calls += 1;
    if (llm.onCall) llm.onCall();
    if (llm.gate) await llm.gate;
    if (llm.fail) throw new Error('upstream 503');
    return {
      object: 'chat.completion',
      model,
      choices: [{ index: 0, message: { role: 'assistant', content: `answer to ${prompt.length} bytes` } }],
      usage: { ...llm.usage, total_tokens: llm.usage.prompt_tokens + llm.usage.completion_tokens },
    };
  },
};

before(async () => {
  db = await freshDatabase('mb_node_admission');
  pool = db.pool;
  alerts = new AlertListener({ connection: { database: db.name }, retryMs: 50,
                               log: (line) => logged.push(line) });
  await alerts.start();
  server = createServer({ pool, llm: llm.call, alerts });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${server.address().port}`;
});

after(async () => {
  if (alerts) await alerts.stop();
  if (server) await new Promise((resolve) => server.close(resolve));
  if (db) await db.drop();
});

async function post(path, body, headers = {}) {
  const res = await fetch(base + path, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

const ask = (orgId, extra = {}, headers = {}) =>
  post('/api/chat', { org_id: orgId, model: 'gpt-4o', prompt: PROMPT, max_tokens: 1000, ...extra },
       headers);
const bill = (orgId) => post('/api/billing/process-messages', { org_id: orgId });

// msgbilling.holds, as the superuser the tests connect as sees it
async function holds(orgId) {
  const { rows } = await pool.query(
    'SELECT id, amount, hold_key FROM msgbilling.holds WHERE org_id = $1::uuid ORDER BY id', [orgId]);
  return rows;
}

async function messages(orgId) {
  const { rows } = await pool.query(
    `SELECT id, hold_id, billing_status, billing_error, cost_credits
       FROM messages WHERE org_id = $1::uuid ORDER BY id`, [orgId]);
  return rows;
}

// The next alert that matches, whether it came before this call or not;
// rejects after ms.  Call it before the action that sends the alert.
function nextAlert(match, ms = 10000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      alerts.off('alert', seen);
      reject(new Error('no matching alert within the timeout'));
    }, ms);
    function seen(a) {
      if (!match(a)) return;
      clearTimeout(timer);
      alerts.off('alert', seen);
      resolve(a);
    }
    alerts.on('alert', seen);
  });
}

test('a funded org: 200, its hold until billing, then the actual cost charged', async () => {
  assert.equal(await billing.topUp(pool, FUNDED, 1, 'pack', 'pay_funded'), '1.000000');
  const calls = llm.calls;
  const res = await ask(FUNDED, {}, { 'X-Request-Id': 'req-funded-1' });
  assert.equal(res.status, 200);
  assert.equal(res.body.success, true);
  assert.equal(res.body.estimate, ESTIMATE);
  assert.equal(llm.calls, calls + 1);

  // held while the reply waits for billing: 1 - 0.0105
  assert.deepEqual(await holds(FUNDED),
    [{ id: res.body.hold_id, amount: ESTIMATE, hold_key: 'req-funded-1' }]);
  assert.equal(await billing.getAvailable(pool, FUNDED), '0.989500');
  assert.equal(await billing.getBalance(pool, FUNDED), '1.000000');
  assert.deepEqual(await messages(FUNDED), [{
    id: res.body.message_id, hold_id: res.body.hold_id,
    billing_status: 'pending', billing_error: null, cost_credits: null,
  }]);

  // billing charges what the call used, 50 × 0.0000025 + 300 × 0.00001 =
  // 0.003125, and the hold is gone: available is the balance again
  const billed = await bill(FUNDED);
  assert.deepEqual(billed.body,
    { success: true, org_id: FUNDED, charged: 1, failed: 0, skipped: 0, credits: '0.003125' });
  assert.deepEqual(await holds(FUNDED), []);
  assert.equal(await billing.getBalance(pool, FUNDED), '0.996875');
  assert.equal(await billing.getAvailable(pool, FUNDED), '0.996875');
  assert.equal((await messages(FUNDED))[0].billing_status, 'charged');
});

test('available below the estimate: 402, no LLM call, no message', async () => {
  // 0.0105 needed, 0.0104 there
  assert.equal(await billing.topUp(pool, POOR, 0.0104, 'pack', 'pay_poor'), '0.010400');
  const calls = llm.calls;
  for (const org of [POOR, NO_WALLET]) {
    const res = await ask(org);
    assert.equal(res.status, 402);
    assert.deepEqual(res.body, { success: false, error: 'out of credits', estimate: ESTIMATE });
    assert.deepEqual(await messages(org), []);
    assert.deepEqual(await holds(org), []);
  }
  assert.equal(llm.calls, calls);
  assert.equal(await billing.getAvailable(pool, POOR), '0.010400');
  assert.equal(await billing.getAvailable(pool, NO_WALLET), '0.000000');
  // a smaller call fits: max_tokens 500 is 0.0005 + 0.005 = 0.0055
  const small = await ask(POOR, { max_tokens: 500 });
  assert.equal(small.status, 200);
  assert.equal(small.body.estimate, '0.005500');
  assert.equal(await billing.getAvailable(pool, POOR), '0.004900');
});

test('six requests at once for three estimates: exactly three served', { timeout: 30000 }, async () => {
  // exactly 3 × 0.0105; each call uses all it may (200 prompt tokens, 1000
  // completion tokens: its estimate)
  assert.equal(await billing.topUp(pool, RACE, 0.0315, 'pack', 'pay_race'), '0.031500');
  llm.usage = { prompt_tokens: 200, completion_tokens: 1000 };
  // every served call waits at the gate until all six have been decided
  // (served calls waiting, refused ones answered): the three holds are
  // taken while the other requests ask, not one after another
  const calls = llm.calls;
  let refused = 0;
  let open;
  llm.gate = new Promise((resolve) => { open = resolve; });
  const decided = () => { if (llm.calls - calls + refused === 6) open(); };
  llm.onCall = decided;
  try {
    const results = await Promise.all(Array.from({ length: 6 }, async (_, i) => {
      const res = await fetch(`${base}/api/chat`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'X-Request-Id': `race-${i}` },
        body: JSON.stringify({ org_id: RACE, model: 'gpt-4o', prompt: PROMPT, max_tokens: 1000 }),
      });
      if (res.status !== 200) { refused += 1; decided(); }   // answered without the gate
      return { status: res.status, body: await res.json() };
    }));
    assert.deepEqual(results.map((r) => r.status).sort(), [200, 200, 200, 402, 402, 402]);
    assert.equal(llm.calls - calls, 3);
  } finally {
    llm.gate = null;
    llm.onCall = null;
  }
  const held = await holds(RACE);
  assert.deepEqual(held.map((h) => h.amount), [ESTIMATE, ESTIMATE, ESTIMATE]);
  assert.equal(await billing.getAvailable(pool, RACE), '0.000000');
  const saved = await messages(RACE);
  assert.deepEqual(saved.map((m) => m.hold_id).sort(), held.map((h) => h.id).sort());

  // billed: all three paid, to the last credit, and no hold left
  const billed = await bill(RACE);
  assert.deepEqual(billed.body,
    { success: true, org_id: RACE, charged: 3, failed: 0, skipped: 0, credits: '0.031500' });
  assert.deepEqual(await holds(RACE), []);
  assert.equal(await billing.getBalance(pool, RACE), '0.000000');
  assert.equal(await billing.getAvailable(pool, RACE), '0.000000');
  llm.usage = { prompt_tokens: 50, completion_tokens: 300 };
});

test('a failed LLM call releases its hold and saves nothing', async () => {
  assert.equal(await billing.topUp(pool, FLAKY, 0.02, 'pack', 'pay_flaky'), '0.020000');
  llm.fail = true;
  let res;
  try {
    res = await ask(FLAKY);
  } finally {
    llm.fail = false;
  }
  assert.equal(res.status, 502);
  assert.deepEqual(res.body, { success: false, error: 'LLM call failed' });
  assert.deepEqual(await holds(FLAKY), []);
  assert.deepEqual(await messages(FLAKY), []);
  assert.equal(await billing.getAvailable(pool, FLAKY), '0.020000');
  // so the next call has the whole balance again
  assert.equal((await ask(FLAKY)).status, 200);
});

test('billing below a threshold: a low alert over LISTEN; a top-up: recovered', async () => {
  assert.equal(await billing.topUp(pool, ALERTED, 0.012, 'pack', 'pay_alerted'), '0.012000');
  await pool.query('SELECT msgbilling.set_alert($1::uuid, $2::numeric)', [ALERTED, '0.01']);
  assert.equal((await ask(ALERTED)).status, 200);

  // 0.012 - 0.003125 = 0.008875, below 0.01
  const low = nextAlert((a) => a.org_id === ALERTED && a.kind === 'low');
  assert.equal((await bill(ALERTED)).body.charged, 1);
  assert.deepEqual(await low,
    { org_id: ALERTED, kind: 'low', threshold: '0.010000', balance: '0.008875' });
  assert.ok(logged.includes(
    `[msgbilling-alert] low org=${ALERTED} balance=0.008875 threshold=0.010000`));
  const { rows } = await pool.query(
    'SELECT kind, threshold, balance FROM msgbilling.alerts WHERE org_id = $1::uuid ORDER BY id',
    [ALERTED]);
  assert.deepEqual(rows, [{ kind: 'low', threshold: '0.010000', balance: '0.008875' }]);

  const recovered = nextAlert((a) => a.org_id === ALERTED && a.kind === 'recovered');
  await billing.topUp(pool, ALERTED, 1, 'pack', 'pay_alerted2');
  assert.deepEqual(await recovered,
    { org_id: ALERTED, kind: 'recovered', threshold: '0.010000', balance: '1.008875' });

  // the server keeps the last ones
  const res = await fetch(`${base}/api/billing/alerts`);
  const kept = (await res.json()).alerts.filter((a) => a.org_id === ALERTED);
  assert.deepEqual(kept.map((a) => [a.kind, a.balance]), [['low', '0.008875'], ['recovered', '1.008875']]);
});

test('a threshold an org is already below alerts at once, also after the listener reconnects', async () => {
  // the listener's connection dies; it connects and listens again by itself
  const pid = alerts.client.processID;
  const back = new Promise((resolve) => alerts.once('listening', resolve));
  await pool.query('SELECT pg_terminate_backend($1::integer)', [pid]);
  assert.notEqual(await back, pid);

  const low = nextAlert((a) => a.org_id === ALERTED && a.kind === 'low');
  await pool.query('SELECT msgbilling.set_alert($1::uuid, $2::numeric)', [ALERTED, '2']);
  assert.deepEqual(await low,
    { org_id: ALERTED, kind: 'low', threshold: '2.000000', balance: '1.008875' });
});

test('a hard budget refuses holds beyond what it has left: 402', async () => {
  assert.equal(await billing.topUp(pool, BUDGETED, 10, 'pack', 'pay_budgeted'), '10.000000');
  await pool.query("SELECT msgbilling.set_budget($1::uuid, 'day', $2::numeric)", [BUDGETED, '0.01']);
  assert.equal(await billing.getAvailable(pool, BUDGETED), '0.010000');   // the budget, not the 10
  const calls = llm.calls;
  const res = await ask(BUDGETED);
  assert.equal(res.status, 402);
  assert.deepEqual(res.body, { success: false, error: 'out of credits', estimate: ESTIMATE });
  assert.equal(llm.calls, calls);
  assert.deepEqual(await messages(BUDGETED), []);

  // 0.0055 fits the 0.01; billed, the budget has 0.01 - 0.003125 left
  assert.equal((await ask(BUDGETED, { max_tokens: 500 })).status, 200);
  assert.equal(await billing.getAvailable(pool, BUDGETED), '0.004500');
  assert.equal((await bill(BUDGETED)).body.charged, 1);
  const { rows } = await pool.query(
    'SELECT amount, spent, remaining, hard FROM msgbilling.budget_status($1::uuid)', [BUDGETED]);
  assert.deepEqual(rows, [{ amount: '0.010000', spent: '0.003125', remaining: '0.006875', hard: true }]);
  assert.equal(await billing.getAvailable(pool, BUDGETED), '0.006875');
  assert.equal(await billing.getBalance(pool, BUDGETED), '9.996875');
  assert.equal((await ask(BUDGETED)).status, 402);
});

test('bad chat requests: 400, nothing held', async () => {
  const cases = [
    [{ prompt: PROMPT }, 'org_id is required'],
    [{ org_id: FUNDED }, 'prompt is required'],
    [{ org_id: FUNDED, prompt: PROMPT, max_tokens: 0 }, 'max_tokens must be an integer from 1 to 100000'],
  ];
  for (const [body, error] of cases) {
    const res = await post('/api/chat', body);
    assert.equal(res.status, 400);
    assert.deepEqual(res.body, { success: false, error });
  }
  const long = await post('/api/chat', { org_id: FUNDED, prompt: PROMPT }, { 'X-Request-Id': 'r'.repeat(256) });
  assert.equal(long.status, 400);
  assert.deepEqual(long.body, { success: false, error: 'X-Request-Id must be at most 255 bytes' });
  const bad = await post('/api/chat', { org_id: 'not-a-uuid', prompt: PROMPT });
  assert.equal(bad.status, 400);
  assert.equal(bad.body.code, '22P02');
  assert.deepEqual(await holds(FUNDED), []);
});

test("msgbilling's books balance", async () => {
  const { rows } = await pool.query('SELECT check_name, ok FROM msgbilling.verify()');
  assert.ok(rows.length > 0);
  for (const r of rows) assert.equal(r.ok, true, r.check_name);
});
