'use strict';
// alerts.js — msgbilling's low-balance and budget alerts, as they happen.
//
// msgbilling adds a row to msgbilling.alerts when a balance crosses below a
// threshold of set_alert ('low'), back up to it ('recovered'), or a soft
// budget is spent ('budget'), and sends it at commit as NOTIFY
// msgbilling_alerts, payload {"org_id", "kind", "threshold", "balance"}.
// LISTEN needs a session of its own for as long as it listens, so the
// listener has one dedicated client, never one of the pool's: a pooled
// connection goes back to the pool, and its LISTEN with it.
//
// A notification sent while the listener is disconnected is lost; the
// listener connects again by itself, and msgbilling.alerts keeps every
// alert for whoever needs them all.

const { EventEmitter } = require('node:events');
const { Client } = require('pg');

const CHANNEL = 'msgbilling_alerts';

// The payload's threshold and balance are numeric(20,6), sent as JSON
// numbers; keep them as strings, exact, as the rest of the example keeps
// credits, by quoting them before JSON.parse.
function parseAlert(payload) {
  return JSON.parse(payload.replace(/("(?:threshold|balance)"\s*:\s*)(-?[0-9][0-9.eE+-]*)/g, '$1"$2"'));
}

function describe(a) {
  return `[msgbilling-alert] ${a.kind} org=${a.org_id} balance=${a.balance} threshold=${a.threshold}`;
}

// new AlertListener({ client config for pg.Client, keep, log, retryMs });
// start() connects and LISTENs; 'alert' events carry the parsed payload,
// recent holds the last `keep` of them (oldest first); stop() ends it.
class AlertListener extends EventEmitter {
  constructor({ connection = {}, keep = 20, log = console.log, retryMs = 1000 } = {}) {
    super();
    this.connection = connection;
    this.keep = keep;
    this.log = log;
    this.retryMs = retryMs;
    this.recent = [];
    this.client = null;
    this.stopped = false;
    this.retry = null;
  }

  async start() {
    this.stopped = false;
    const client = new Client(this.connection);
    client.on('notification', (msg) => {
      if (msg.channel === CHANNEL) this.received(msg.payload);
    });
    client.on('error', (err) => this.lost(client, err));
    client.on('end', () => this.lost(client, null));
    try {
      await client.connect();
      await client.query(`LISTEN ${CHANNEL}`);
    } catch (err) {
      client.end().catch(() => {});
      throw err;
    }
    if (this.stopped) {           // stop() was called meanwhile
      await client.end().catch(() => {});
      return;
    }
    this.client = client;
    this.emit('listening', client.processID);
  }

  received(payload) {
    let alert;
    try {
      alert = parseAlert(payload);
    } catch {
      this.log(`[msgbilling-alert] unreadable payload: ${payload}`);
      return;
    }
    this.recent.push(alert);
    if (this.recent.length > this.keep) this.recent.shift();
    this.log(describe(alert));
    this.emit('alert', alert);
  }

  // The listening connection broke (the server restarted, or terminated
  // it): connect again every retryMs until that works or stop() is called.
  lost(client, err) {
    if (client !== this.client || this.stopped) return;
    this.client = null;
    client.end().catch(() => {});
    this.log(`[msgbilling-alert] connection lost${err ? `: ${err.message}` : ''}; reconnecting`);
    const again = () => {
      this.retry = null;
      if (this.stopped) return;
      this.start().catch((e) => {
        this.log(`[msgbilling-alert] reconnecting failed: ${e.message}`);
        if (!this.stopped) this.retry = setTimeout(again, this.retryMs);
      });
    };
    this.retry = setTimeout(again, this.retryMs);
  }

  async stop() {
    this.stopped = true;
    if (this.retry) clearTimeout(this.retry);
    this.retry = null;
    const client = this.client;
    this.client = null;
    if (client) await client.end().catch(() => {});
  }
}

module.exports = { AlertListener, parseAlert, CHANNEL };
