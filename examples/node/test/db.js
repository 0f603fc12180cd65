'use strict';
// A database of its own for each test file, with schema.sql applied, on the
// cluster the PG* environment variables point at (run-tests.sh sets them).

const fs = require('node:fs');
const path = require('node:path');
const { Client, Pool } = require('pg');

const schema = fs.readFileSync(path.join(__dirname, '..', 'schema.sql'), 'utf8');

async function admin(sql) {
  const client = new Client();          // PGDATABASE, normally postgres
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

async function freshDatabase(name) {
  await admin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await admin(`CREATE DATABASE ${name}`);
  const pool = new Pool({ database: name, max: 5 });
  await pool.query(schema);
  return {
    pool,
    name,
    async drop() {
      // pool.end() returns before its connections are closed; without
      // FORCE, DROP DATABASE waits (up to 5 s) for them to go instead of
      // terminating them under the pool's feet.
      await pool.end();
      await admin(`DROP DATABASE IF EXISTS ${name}`);
    },
  };
}

module.exports = { freshDatabase };
