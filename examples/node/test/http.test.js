'use strict';
// The guide's endpoints, called with the guide's own curl lines (only the
// port changed, and -sS -w so that curl prints the status code), against
// server.js on 127.0.0.1 and a real cluster.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFile } = require('node:child_process');
const { freshDatabase } = require('./db');
const billing = require('../billing');
const { createServer } = require('../server');

// Verbatim from the migration guide ("Como Usar o Novo Sistema").
const GUIDE_PROCESS_ALL = `curl -X POST http://localhost:3000/api/billing/process-messages \\
  -H "Content-Type: application/json" \\
  -d '{"process_all": true}'`;
const GUIDE_PROCESS_ORG = `curl -X POST http://localhost:3000/api/billing/process-messages \\
  -H "Content-Type: application/json" \\
  -d '{"org_id": "your-org-id"}'`;
const GUIDE_CRON = '*/5 * * * * curl -X GET "http://localhost:3000/api/cron/process-billing?secret=your-secret"';
const GUIDE_CRON_SECRET = 'your-secret';   // CRON_SECRET=your-secret-key in the guide's .env example

const ORG_X = '11111111-1111-4111-8111-111111111111';
const ORG_Y = '22222222-2222-4222-8222-222222222222';

let db;
let pool;
let server;
let port;

before(async () => {
  db = await freshDatabase('mb_node_http');
  pool = db.pool;
  server = createServer({ pool, cronSecret: GUIDE_CRON_SECRET });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = server.address().port;
});

after(async () => {
  if (server) await new Promise((resolve) => server.close(resolve));
  if (db) await db.drop();
});

// Run a guide's curl line against our port: its status and JSON body.
function curl(line) {
  const cmd = line.replace(/^(\S+\s+){5}(?=curl )/, '')     // a crontab line's schedule
    .replaceAll('localhost:3000', `localhost:${port}`)
    + " -sS -w '\\n%{http_code}'";
  return new Promise((resolve, reject) => {
    execFile('sh', ['-c', cmd], { timeout: 30000 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`${cmd}: ${err.message}\n${stderr}`));
      const nl = stdout.lastIndexOf('\n');
      resolve({ status: Number(stdout.slice(nl + 1)), body: JSON.parse(stdout.slice(0, nl)) });
    });
  });
}

async function statuses(orgId) {
  const { rows } = await pool.query(
    'SELECT billing_status FROM messages WHERE org_id = $1::uuid ORDER BY id', [orgId]);
  return rows.map((r) => r.billing_status);
}

// A reply at the default tariff (schema.sql): 0.0000025 credits per prompt
// token, 0.00001 per completion token; 2000 + 500 tokens cost 0.01.
const reply = (orgId, promptTokens, completionTokens) =>
  billing.saveMessage(pool, { orgId, content: 'hi', usage: { promptTokens, completionTokens } });
// A user's message: no_charge.
const ask = (orgId) => billing.saveMessage(pool, { orgId, role: 'user', content: 'hello' });

test('POST {"org_id": …} bills that org only', async () => {
  await billing.topUp(pool, ORG_X, 0.1, 'pack', 'pay_x');
  await billing.topUp(pool, ORG_Y, 0.02, 'pack', 'pay_y');
  await reply(ORG_X, 2000, 500);     // 0.01
  await ask(ORG_X);                  // no_charge, in none of the counts
  await reply(ORG_X, 4000, 1000);    // 0.02
  for (let i = 0; i < 3; i++) await reply(ORG_Y, 2000, 500);

  // the guide's line as written: "your-org-id" is not a uuid
  const bad = await curl(GUIDE_PROCESS_ORG);
  assert.equal(bad.status, 400);
  assert.equal(bad.body.success, false);
  assert.equal(bad.body.code, '22P02');
  assert.match(bad.body.error, /invalid input syntax for type uuid/);

  const res = await curl(GUIDE_PROCESS_ORG.replace('your-org-id', ORG_X));
  assert.equal(res.status, 200);
  assert.deepEqual(res.body,
    { success: true, org_id: ORG_X, charged: 2, failed: 0, skipped: 0, credits: '0.030000' });
  assert.deepEqual(await statuses(ORG_X), ['charged', 'no_charge', 'charged']);
  assert.deepEqual(await statuses(ORG_Y), ['pending', 'pending', 'pending']);
  assert.equal(await billing.getBalance(pool, ORG_X), '0.070000');
});

test('POST {"process_all": true} bills every org', async () => {
  const res = await curl(GUIDE_PROCESS_ALL);
  assert.equal(res.status, 200);
  assert.deepEqual(res.body,
    { success: true, charged: 2, failed: 1, skipped: 0, credits: '0.020000' });
  assert.deepEqual(await statuses(ORG_Y), ['charged', 'charged', 'failed']);
  assert.equal(await billing.getBalance(pool, ORG_Y), '0.000000');
});

test('GET /api/billing/process-messages returns the statistics', async () => {
  const res = await curl(`curl http://localhost:3000/api/billing/process-messages`);
  assert.equal(res.status, 200);
  assert.deepEqual(res.body.stats, {
    pending: 0, charged: 4, failed: 1, refunded: 0,
    credits_charged: '0.050000', oldest_pending: null, no_charge: 1,
  });
  const one = await curl(`curl "http://localhost:3000/api/billing/process-messages?org_id=${ORG_Y}"`);
  assert.equal(one.status, 200);
  assert.deepEqual([one.body.stats.charged, one.body.stats.failed], [2, 1]);
});

test('GET /api/cron/process-billing without the right secret: 401, nothing billed', async () => {
  await billing.topUp(pool, ORG_Y, 0.01, 'second pack', 'pay_y2');  // Y's failure is pending again
  await reply(ORG_X, 1000, 250);     // 0.005
  for (const line of [
    GUIDE_CRON.replace('your-secret', 'wrong-secret'),
    GUIDE_CRON.replace('?secret=your-secret', ''),
  ]) {
    const res = await curl(line);
    assert.equal(res.status, 401);
    assert.deepEqual(res.body, { success: false, error: 'unauthorized' });
  }
  assert.equal((await billing.getBillingStats(pool)).pending, 2);
});

test('GET /api/cron/process-billing?secret=… drains the backlog', async () => {
  const res = await curl(GUIDE_CRON);
  assert.equal(res.status, 200);
  assert.deepEqual(res.body, { success: true });
  assert.deepEqual(await statuses(ORG_X), ['charged', 'no_charge', 'charged', 'charged']);
  assert.deepEqual(await statuses(ORG_Y), ['charged', 'charged', 'charged']);
  assert.equal(await billing.getBalance(pool, ORG_X), '0.065000');
  assert.equal(await billing.getBalance(pool, ORG_Y), '0.000000');
  const stats = await billing.getBillingStats(pool);
  assert.deepEqual([stats.pending, stats.charged, stats.failed, stats.no_charge], [0, 6, 0, 1]);
});

test('an unset CRON_SECRET lets nobody in', async () => {
  const closed = createServer({ pool, cronSecret: undefined });
  await new Promise((resolve) => closed.listen(0, '127.0.0.1', resolve));
  try {
    const res = await curl(GUIDE_CRON.replace(':3000', `:${closed.address().port}`)
      .replace('localhost', '127.0.0.1'));
    assert.equal(res.status, 401);
  } finally {
    await new Promise((resolve) => closed.close(resolve));
  }
});

test('bad requests', async () => {
  const notJson = await curl(GUIDE_PROCESS_ALL.replace(`'{"process_all": true}'`, `'{process_all'`));
  assert.equal(notJson.status, 400);
  assert.equal(notJson.body.error, 'request body is not valid JSON');
  const nothing = await curl(GUIDE_PROCESS_ALL.replace('"process_all": true', '"process_all": false'));
  assert.equal(nothing.status, 400);
  const missing = await curl('curl http://localhost:3000/api/billing/nope');
  assert.equal(missing.status, 404);
  const method = await curl('curl -X DELETE http://localhost:3000/api/billing/process-messages');
  assert.equal(method.status, 405);
});

test('POST {"message_ids": […]} bills those messages, and older pending ones of their orgs first', async () => {
  const a = (await reply(ORG_X, 2000, 500)).id;
  const b = (await reply(ORG_X, 2000, 500)).id;
  const c = (await reply(ORG_X, 2000, 500)).id;
  const d = (await reply(ORG_X, 2000, 500)).id;
  // billing never skips ahead of an older pending message of the same
  // org: asking for a and c bills b too (counted in charged), not d
  const res = await curl(GUIDE_PROCESS_ALL.replace('"process_all": true', `"message_ids": [${a}, ${c}]`));
  assert.equal(res.status, 200);
  assert.deepEqual(res.body, { success: true, charged: 3, failed: 0, skipped: 0, credits: '0.030000' });
  const { rows } = await pool.query(
    'SELECT billing_status FROM messages WHERE id = ANY($1::bigint[]) ORDER BY id', [[a, b, c, d]]);
  assert.deepEqual(rows.map((r) => r.billing_status), ['charged', 'charged', 'charged', 'pending']);
  assert.equal(await billing.getBalance(pool, ORG_X), '0.035000');
});
