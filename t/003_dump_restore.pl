# pg_dump of a database billing with msgbilling, restored into a fresh
# database: wallets, ledger, prices and configuration come back, verify()
# is clean, the guards are in place, and billing goes on.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('dump');
$node->init;
$node->start;

sub sql
{
	my ($db, $query) = @_;
	return $node->safe_psql($db, $query);
}

$node->safe_psql('postgres', 'CREATE DATABASE app');
sql(
	'app', q{
CREATE EXTENSION msgbilling;
CREATE TABLE messages (
    id bigserial PRIMARY KEY,
    org_id uuid NOT NULL,
    direction text NOT NULL DEFAULT 'outbound',
    content text,
    model text,
    tokens_used integer,
    output_tokens integer NOT NULL DEFAULT 0,
    billable boolean GENERATED ALWAYS AS (direction = 'outbound') STORED,
    hold_id bigint,
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO messages (org_id, tokens_used, created_at)
VALUES ('00000000-0000-0000-0000-000000000001', 5, '2023-01-01');   -- legacy
SELECT msgbilling.attach('messages', model_column => 'model',
                         created_column => 'created_at',
                         output_tokens_column => 'output_tokens',
                         billable_column => 'billable',
                         hold_column => 'hold_id');
SELECT msgbilling.set_price(NULL, 0.01, '2024-01-01');
SELECT msgbilling.set_tariff('gpt-4o', 0.02, 0.08, per_message => 0.01,
                             effective_from => '2024-01-01');
SELECT msgbilling.top_up('00000000-0000-0000-0000-000000000001', 10, 'card', 'pay-1');
SELECT msgbilling.top_up('00000000-0000-0000-0000-000000000002', 1);
SELECT msgbilling.set_overdraft('00000000-0000-0000-0000-000000000002', 2);
-- spend control: thresholds crossed by the billing below, a budget, holds
SELECT msgbilling.set_alert(NULL, 0.5);
SELECT msgbilling.set_alert('00000000-0000-0000-0000-000000000001', 9);
SELECT msgbilling.set_budget('00000000-0000-0000-0000-000000000001', 'month', 100);
SELECT msgbilling.hold('00000000-0000-0000-0000-000000000001', 1, '1 day', 'call-1');
SELECT msgbilling.hold('00000000-0000-0000-0000-000000000001', 2, '1 day');
INSERT INTO messages (org_id, direction, model, tokens_used, output_tokens, created_at)
SELECT ('00000000-0000-0000-0000-00000000000' || (1 + i % 3))::uuid,
       CASE WHEN i % 5 = 0 THEN 'inbound' ELSE 'outbound' END,
       CASE WHEN i % 2 = 0 THEN 'gpt-4o' END, 10 * i, i,
       '2024-06-01'::timestamptz + i * interval '1 minute'
  FROM generate_series(1, 30) i;
SELECT * FROM msgbilling.process_all_pending(max_messages => 20);
SELECT msgbilling.refund((SELECT min(id) FROM messages WHERE billing_status = 'charged'));
});

my $state = q{
SELECT (SELECT string_agg(billing_status || ':' || n, ',' ORDER BY billing_status)
          FROM (SELECT billing_status, count(*) AS n FROM messages GROUP BY 1) s),
       (SELECT string_agg(org_id || '=' || balance || '/' || overdraft_limit, ',' ORDER BY org_id)
          FROM msgbilling.credits),
       (SELECT count(*) || ' entries, sum ' || sum(amount) FROM msgbilling.ledger),
       (SELECT count(*) || ' prices, ' || sum(per_message) || ' in fees' FROM msgbilling.prices),
       (SELECT messages || ' ' || org_type || ' ' || tokens_column || ' ' || output_tokens_column
               || ' ' || billable_column FROM msgbilling.config),
       (SELECT sum(no_charge) FROM msgbilling.stats()),
       (SELECT count(*) || ' holds of ' || sum(amount) || ' ' || hold_column
          FROM msgbilling.holds, msgbilling.config GROUP BY hold_column),
       (SELECT string_agg(kind || ' ' || threshold, ',' ORDER BY id) FROM msgbilling.alerts),
       (SELECT string_agg(coalesce(org_id::text, 'default') || ' ' || threshold, ','
                          ORDER BY org_id NULLS FIRST) FROM msgbilling.alert_rules),
       (SELECT string_agg(period || ' ' || amount || ' ' || spent, ',') FROM msgbilling.budgets),
       (SELECT sum(msgbilling.available(c.org_id)) FROM msgbilling.credits c)
};
my $before = sql('app', $state);
like($before, qr/charged:\d+,.*failed:\d+,legacy:1,no_charge:\d+,pending:\d+,refunded:1/,
	'the source database has every status');
like($before, qr/2 holds of 3\.000000 hold_id\|low 0\.500000\|default 0\.500000,\S+ 9\.000000\|month 100\.000000 [\d.]+\|[\d.]+$/,
	'and holds, alerts, thresholds and a budget');

my $dump = $node->basedir . '/app.dump';
command_ok([ 'pg_dump', '-Fc', '-d', $node->connstr('app'), '-f', $dump ],
	'pg_dump');
$node->safe_psql('postgres', 'CREATE DATABASE restored');
command_ok([ 'pg_restore', '-d', $node->connstr('restored'), $dump ],
	'pg_restore into a fresh database');

is(sql('restored', $state), $before,
	'messages, wallets, ledger, prices and configuration came back');
is( sql('restored',
		"SELECT string_agg(format_type(atttypid, NULL), ',') FROM pg_attribute"
		  . " WHERE attname = 'org_id' AND attrelid IN"
		  . " ('msgbilling.credits'::regclass, 'msgbilling.ledger'::regclass,"
		  . " 'msgbilling.holds'::regclass, 'msgbilling.alerts'::regclass,"
		  . " 'msgbilling.alert_rules'::regclass, 'msgbilling.budgets'::regclass)"),
	'uuid,uuid,uuid,uuid,uuid,uuid', "msgbilling's org ids are uuid again");
is(sql('restored', 'SELECT bool_and(ok) FROM msgbilling.verify()'),
	't', 'verify() is clean after the restore');
is( sql('restored',
		"SELECT count(*) FROM pg_trigger WHERE tgrelid = 'messages'::regclass"
		  . " AND tgname LIKE 'msgbilling_guard_%'"),
	'5', 'the guard triggers came back');
my ($ok, $out, $err) = $node->psql('restored',
	"UPDATE messages SET billing_status = 'charged' WHERE billing_status = 'pending'");
like($err, qr/change only through msgbilling/, 'and guard the restored table');

# billing goes on: pending messages, new messages, top-ups, idempotency
sql('restored',
	"SELECT msgbilling.top_up('00000000-0000-0000-0000-000000000004', 5);"
	  . " INSERT INTO messages (org_id, tokens_used)"
	  . " VALUES ('00000000-0000-0000-0000-000000000004', 7)");
is( sql('restored',
		"SELECT charged FROM msgbilling.process_all_pending('00000000-0000-0000-0000-000000000004')"),
	'1', 'billing goes on in the restored database');
is( sql('restored',
		"SELECT msgbilling.top_up('00000000-0000-0000-0000-000000000001', 10, 'card', 'pay-1')"
		  . " = msgbilling.balance('00000000-0000-0000-0000-000000000001')"),
	't', 'an idempotency key used before the dump still credits nothing');
sql('restored',
	"SELECT msgbilling.top_up('00000000-0000-0000-0000-000000000002', 50)");
sql('restored', 'SELECT * FROM msgbilling.process_all_pending()');
is( sql('restored',
		"SELECT count(*) FROM messages WHERE billing_status IN ('pending', 'failed')"
		  . " AND org_id = '00000000-0000-0000-0000-000000000002'"),
	'0', 'after a top-up, the org\'s failures were billed');
is( sql('restored',
		'SELECT count(*) = count(DISTINCT id) FROM msgbilling.ledger'),
	't', 'new ledger entries continue the restored sequence');
is(sql('restored', 'SELECT bool_and(ok) FROM msgbilling.verify()'),
	't', 'verify() is clean after billing in the restored database');

# Parallel restores (-j 4, the usual way for a large database), of the
# custom and the directory format: each database comes back attached, with
# the same books, and bills.  The wallets' data may be loaded before the
# configuration row that gives their org ids their type.
my $dir = $node->basedir . '/app.dir';
command_ok([ 'pg_dump', '-Fd', '-j', '2', '-d', $node->connstr('app'), '-f', $dir ],
	'pg_dump -Fd -j 2');
for my $case ([ 'par_custom', $dump ], [ 'par_dir', $dir ])
{
	my ($db, $from) = @$case;
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	command_ok([ 'pg_restore', '-j', '4', '-d', $node->connstr($db), $from ],
		"pg_restore -j 4 into $db");
	is(sql($db, $state), $before, "$db: messages, wallets, ledger, prices and configuration");
	is( sql($db,
			"SELECT string_agg(format_type(atttypid, NULL), ',') FROM pg_attribute"
			  . " WHERE attname = 'org_id' AND attrelid IN"
			  . " ('msgbilling.credits'::regclass, 'msgbilling.ledger'::regclass,"
			  . " 'msgbilling.holds'::regclass, 'msgbilling.alerts'::regclass,"
			  . " 'msgbilling.alert_rules'::regclass, 'msgbilling.budgets'::regclass)"),
		'uuid,uuid,uuid,uuid,uuid,uuid', "$db: msgbilling's org ids are uuid");
	is(sql($db, 'SELECT bool_and(ok) FROM msgbilling.verify()'),
		't', "$db: verify() is clean");
	sql($db, "SELECT msgbilling.top_up('00000000-0000-0000-0000-000000000002', 50)");
	is( sql($db,
			"SELECT charged > 0 FROM msgbilling.process_all_pending()"),
		't', "$db: billing goes on");
}

# A monthly-partitioned table, with a partition made after attach and a
# deleted message, restored in parallel: the event triggers that watch the
# guards run during the restore's ALTER TABLEs of several partitions at
# once, and must neither deadlock with them nor clone a guard twice.
$node->safe_psql('postgres', 'CREATE DATABASE parts');
sql('parts', q{
CREATE EXTENSION msgbilling;
CREATE TABLE messages (id bigserial, org_id bigint NOT NULL, tokens_used integer,
                       created_at timestamptz NOT NULL, PRIMARY KEY (id, created_at))
    PARTITION BY RANGE (created_at);
CREATE TABLE messages_1 PARTITION OF messages FOR VALUES FROM ('2025-01-01') TO ('2025-02-01');
CREATE TABLE messages_2 PARTITION OF messages FOR VALUES FROM ('2025-02-01') TO ('2025-03-01');
SELECT msgbilling.attach('messages', created_column => 'created_at');
CREATE TABLE messages_3 PARTITION OF messages FOR VALUES FROM ('2025-03-01') TO ('2025-04-01');
SELECT msgbilling.set_price(NULL, 0.01, '2020-01-01');
SELECT msgbilling.top_up(1, 100);
INSERT INTO messages (org_id, tokens_used, created_at)
SELECT 1, 10, '2025-01-05'::timestamptz + i * interval '5 days' FROM generate_series(1, 15) i;
SELECT * FROM msgbilling.process_all_pending();
DELETE FROM messages_1 WHERE id = 1;
});
my $guards = q{SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'msgbilling_guard_%'};
my $parts_before = sql('parts', $state) . ' ' . sql('parts', $guards);
my $parts_dump = $node->basedir . '/parts.dump';
command_ok([ 'pg_dump', '-Fc', '-d', $node->connstr('parts'), '-f', $parts_dump ],
	'pg_dump of the partitioned table');
for my $round (1 .. 3)
{
	$node->safe_psql('postgres', "DROP DATABASE IF EXISTS parts_r; CREATE DATABASE parts_r");
	command_ok([ 'pg_restore', '-j', '4', '-d', $node->connstr('parts_r'), $parts_dump ],
		"pg_restore -j 4 of the partitioned table, round $round");
	is(sql('parts_r', $state) . ' ' . sql('parts_r', $guards), $parts_before,
		"round $round: the same books, and every guard once");
	is(sql('parts_r', 'SELECT bool_and(ok) FROM msgbilling.verify()'),
		't', "round $round: verify() is clean");
}

$node->stop;
done_testing();
