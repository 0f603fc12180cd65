'use strict';
// server.js — the guide's billing endpoints as a thin node:http handler:
// each request is one SQL call to msgbilling.
//
//   POST /api/billing/process-messages  {"process_all": true}
//        → SELECT * FROM msgbilling.process_all_pending()
//   POST /api/billing/process-messages  {"org_id": "…"}
//        → SELECT * FROM msgbilling.process_all_pending($1)
//   POST /api/billing/process-messages  {"message_ids": [1, 2]}
//        → SELECT * FROM msgbilling.process_batch_billing($1::bigint[])
//   GET  /api/billing/process-messages[?org_id=…]
//        → SELECT * FROM msgbilling.stats([$1])
//   GET  /api/cron/process-billing?secret=…   (CRON_SECRET, else 401)
//        → CALL msgbilling.drain()
//
// and the app's own LLM endpoint, with the admission the old
// DebitInterceptor did before the call, as holds:
//
//   POST /api/chat  {"org_id": "…", "prompt": "…", "model": "gpt-4o-mini",
//                    "max_tokens": 1000}   (X-Request-Id: the hold key)
//        → SELECT msgbilling.hold(org, estimate, '2 minutes', request id)
//          NULL: 402 {"error": "out of credits"}, and no LLM call
//        → the LLM call; failed: SELECT msgbilling.release(hold), 502
//        → INSERT INTO messages (…, hold_id): billing it ends the hold
//   GET  /api/billing/alerts   the last alerts the server heard (LISTEN)
//
// Run it:  PGHOST=… PGDATABASE=… CRON_SECRET=… PORT=3000 node server.js
// It prints every msgbilling alert (alerts.js) as it arrives.

const http = require('node:http');
const crypto = require('node:crypto');
const billing = require('./billing');
const { AlertListener } = require('./alerts');

const MAX_BODY = 64 * 1024;

function send(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(text),
  });
  res.end(text);
}

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function readJson(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY) {
        reject(new HttpError(413, 'request body too large'));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      if (text.trim() === '') return resolve({});
      try {
        resolve(JSON.parse(text));
      } catch {
        reject(new HttpError(400, 'request body is not valid JSON'));
      }
    });
    req.on('error', reject);
  });
}

// Constant-time comparison; an unset CRON_SECRET lets nobody in.
function secretMatches(given, expected) {
  if (!expected || typeof given !== 'string') return false;
  const a = crypto.createHash('sha256').update(given).digest();
  const b = crypto.createHash('sha256').update(expected).digest();
  return crypto.timingSafeEqual(a, b);
}

async function processMessages(pool, req, res) {
  const body = await readJson(req);
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new HttpError(400, 'expected a JSON object');
  }
  if (body.process_all === true) {
    return send(res, 200, { success: true, ...await billing.processAllPendingMessages(pool) });
  }
  if (typeof body.org_id === 'string' && body.org_id !== '') {
    return send(res, 200, {
      success: true, org_id: body.org_id,
      ...await billing.processAllPendingMessages(pool, body.org_id),
    });
  }
  if (Array.isArray(body.message_ids)) {
    return send(res, 200, { success: true, ...await billing.processBatchBilling(pool, body.message_ids) });
  }
  throw new HttpError(400, 'pass {"process_all": true}, {"org_id": "…"} or {"message_ids": […]}');
}

// The LLM call, simulated: an OpenAI Chat Completions response, its usage
// counted roughly (4 bytes a token), never more than maxTokens of output.
// A real app calls its provider here; createServer({ llm }) replaces it.
async function simulatedLLM({ model, prompt, maxTokens }) {
  const promptTokens = Math.ceil(Buffer.byteLength(prompt, 'utf8') / 4);
  const completionTokens = Math.min(maxTokens, 50);
  return {
    object: 'chat.completion',
    model,
    choices: [{ index: 0, message: { role: 'assistant', content: `(simulated answer to ${promptTokens} tokens)` },
                finish_reason: 'stop' }],
    usage: { prompt_tokens: promptTokens, completion_tokens: completionTokens,
             total_tokens: promptTokens + completionTokens },
  };
}

const MAX_TOKENS = 100000;
const MAX_REQUEST_ID = 255;           // msgbilling's limit for a key

async function chat(pool, llm, req, res) {
  const body = await readJson(req);
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new HttpError(400, 'expected a JSON object');
  }
  const { org_id: orgId, prompt, model = 'gpt-4o-mini', max_tokens: maxTokens = 1000 } = body;
  if (typeof orgId !== 'string' || orgId === '') throw new HttpError(400, 'org_id is required');
  if (typeof prompt !== 'string' || prompt === '') throw new HttpError(400, 'prompt is required');
  if (typeof model !== 'string' || model === '') throw new HttpError(400, 'model must be a string');
  if (!Number.isInteger(maxTokens) || maxTokens < 1 || maxTokens > MAX_TOKENS) {
    throw new HttpError(400, `max_tokens must be an integer from 1 to ${MAX_TOKENS}`);
  }
  // the hold key: a client's retry of one request takes one hold
  const requestId = req.headers['x-request-id'] || crypto.randomUUID();
  if (Buffer.byteLength(requestId, 'utf8') > MAX_REQUEST_ID) {
    throw new HttpError(400, `X-Request-Id must be at most ${MAX_REQUEST_ID} bytes`);
  }

  // 1. admission: reserve the estimated cost, or refuse before calling
  const { holdId, estimate } = await billing.holdCredits(pool, {
    orgId, model, prompt, maxTokens, requestId, ttl: '2 minutes',
  });
  if (holdId == null) {
    return send(res, 402, { success: false, error: 'out of credits', estimate });
  }

  // 2. the LLM call; a failed one gives its credits back at once
  let response;
  try {
    response = await llm({ model, prompt, maxTokens });
  } catch (err) {
    await billing.releaseHold(pool, holdId);
    console.error('[chat] LLM call failed:', err.message);
    return send(res, 502, { success: false, error: 'LLM call failed' });
  }

  // 3. the reply, saved pending with its usage and hold; billing charges
  // what it used and ends the hold, in one transaction
  let saved;
  try {
    saved = await billing.saveMessage(pool, {
      orgId, model, content: response.choices?.[0]?.message?.content ?? null,
      usage: billing.usageFromOpenAI(response), holdId,
    });
  } catch (err) {
    await billing.releaseHold(pool, holdId).catch(() => {});
    throw err;
  }
  return send(res, 200, {
    success: true,
    message_id: saved.id,
    hold_id: holdId,
    estimate,
    content: response.choices?.[0]?.message?.content ?? null,
    usage: response.usage ?? null,
  });
}

function createServer({ pool, cronSecret = process.env.CRON_SECRET, llm = simulatedLLM, alerts = null } = {}) {
  return http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://localhost');
    try {
      if (url.pathname === '/api/chat') {
        if (req.method === 'POST') return await chat(pool, llm, req, res);
        res.setHeader('Allow', 'POST');
        throw new HttpError(405, 'method not allowed');
      }
      if (url.pathname === '/api/billing/alerts') {
        if (req.method !== 'GET') {
          res.setHeader('Allow', 'GET');
          throw new HttpError(405, 'method not allowed');
        }
        return send(res, 200, { success: true, alerts: alerts ? alerts.recent : [] });
      }
      if (url.pathname === '/api/billing/process-messages') {
        if (req.method === 'POST') return await processMessages(pool, req, res);
        if (req.method === 'GET') {
          const orgId = url.searchParams.get('org_id');
          return send(res, 200, { success: true, stats: await billing.getBillingStats(pool, orgId) });
        }
        res.setHeader('Allow', 'GET, POST');
        throw new HttpError(405, 'method not allowed');
      }
      if (url.pathname === '/api/cron/process-billing') {
        if (req.method !== 'GET' && req.method !== 'POST') {
          res.setHeader('Allow', 'GET, POST');
          throw new HttpError(405, 'method not allowed');
        }
        if (!secretMatches(url.searchParams.get('secret'), cronSecret)) {
          throw new HttpError(401, 'unauthorized');
        }
        await billing.drain(pool);
        return send(res, 200, { success: true });
      }
      throw new HttpError(404, 'not found');
    } catch (err) {
      if (err instanceof HttpError) return send(res, err.status, { success: false, error: err.message });
      // PostgreSQL's "data exception" class (22…): a bad id or amount from
      // the caller, e.g. an org_id that is not a uuid.
      if (typeof err.code === 'string' && err.code.startsWith('22')) {
        return send(res, 400, { success: false, error: err.message, code: err.code });
      }
      console.error('[billing-api]', req.method, url.pathname, err);
      return send(res, 500, { success: false, error: 'internal error' });
    }
  });
}

module.exports = { createServer, simulatedLLM };

if (require.main === module) {
  const { Pool } = require('pg');
  const pool = new Pool();               // PGHOST, PGPORT, PGUSER, PGDATABASE…
  const alerts = new AlertListener();    // its own connection, the same PG* settings
  const port = Number(process.env.PORT || 3000);
  const host = process.env.HOST || '127.0.0.1';
  const server = createServer({ pool, alerts });
  alerts.start().catch((err) => console.error('[msgbilling-alert] cannot LISTEN:', err.message));
  server.listen(port, host, () => console.log(`[billing-api] listening on http://${host}:${port}`));
  const stop = () => server.close(() => Promise.all([alerts.stop(), pool.end()]));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
