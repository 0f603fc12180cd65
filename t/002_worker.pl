# The billing background worker on real clusters: it drains a backlog,
# wakes on commit, bills the commits of a wake_interval together, keeps to
# its worker_max_rate, resumes its peeks, follows a naptime change on
# SIGHUP, survives kill -9 of itself and of a backend in the middle of a
# drain, backs off without flooding the log, stops at once on SIGTERM, and
# bills nothing on a standby until promotion.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(time usleep);

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'msgbilling'
msgbilling.database = 'postgres'
msgbilling.naptime = '1h'
msgbilling.batch_size = 5000
msgbilling.worker_max_rate = 50000
restart_after_crash = on
});
$primary->start;

# Run SQL on a node and return its output.
sub sql
{
	my ($node, $query) = @_;
	return $node->safe_psql('postgres', $query);
}

# The worker's pid, or '' when it is not running.
sub worker_pid
{
	my ($node) = @_;
	return sql($node,
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'msgbilling worker'");
}

# How often a line occurs in the node's log.
sub log_count
{
	my ($node, $pattern) = @_;
	my $log = slurp_file($node->logfile);
	my @hits = ($log =~ /$pattern/g);
	return scalar @hits;
}

# -------------------------------------------------------------------------
# Started, visible, and quiet where there is nothing to bill
# -------------------------------------------------------------------------

$primary->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'msgbilling worker'")
  or die "the worker did not start";
pass('the worker runs with its own backend type');
is( sql($primary,
		"SELECT count(*) FROM pg_settings WHERE name IN ('msgbilling.database',"
		  . " 'msgbilling.naptime', 'msgbilling.batch_size', 'msgbilling.role',"
		  . " 'msgbilling.enabled', 'msgbilling.wake_on_commit',"
		  . " 'msgbilling.wake_interval', 'msgbilling.worker_yield_interval',"
		  . " 'msgbilling.worker_max_rate')"),
	'9', 'its settings are in pg_settings');
is(sql($primary, 'SHOW msgbilling.worker_yield_interval'),
	'100us', 'the worker yields its core every 100us by default');
my (undef, undef, $refused) = $primary->psql('postgres',
	"ALTER SYSTEM SET msgbilling.worker_yield_interval = '-1ms'");
like($refused, qr/outside the valid range for parameter "msgbilling.worker_yield_interval"/,
	'a negative worker_yield_interval is refused');
is( sql($primary,
		"SELECT boot_val FROM pg_settings WHERE name = 'msgbilling.worker_max_rate'"),
	'10000', 'the worker bills at most 10,000 messages a second by default');
(undef, undef, $refused) = $primary->psql('postgres',
	"ALTER SYSTEM SET msgbilling.worker_max_rate = -1");
like($refused, qr/outside the valid range for parameter "msgbilling.worker_max_rate"/,
	'a negative worker_max_rate is refused');
# wake it a few times: it must log "not installed" once, not every time
for (1 .. 3)
{
	$primary->reload;
	usleep(300_000);
}
is(log_count($primary, qr/msgbilling is not installed in this database; idle/),
	1, 'not installed: said once, not on every wake-up');

sql(
	$primary, q{
CREATE EXTENSION msgbilling;
CREATE TABLE messages (id bigserial PRIMARY KEY, org_id integer NOT NULL,
                       tokens_used integer,
                       created_at timestamptz NOT NULL DEFAULT now());
SELECT msgbilling.attach('messages', created_column => 'created_at');
SELECT msgbilling.set_price(NULL, 0.001, '2020-01-01');
SELECT count(msgbilling.top_up(o, 1000000)) FROM generate_series(1, 100) o;
});

# -------------------------------------------------------------------------
# Drains a backlog; the INSERT's commit wakes it (naptime is one hour)
# -------------------------------------------------------------------------

sql($primary,
	"INSERT INTO messages (org_id, tokens_used)"
	  . " SELECT 1 + i % 100, 100 FROM generate_series(1, 30000) i");
ok( $primary->poll_query_until('postgres', 'SELECT msgbilling.backlog() = 0'),
	'the worker drained a backlog of 30000 messages');
is(sql($primary, 'SELECT charged, failed FROM msgbilling.stats()'),
	'30000|0', 'all 30000 charged');
# a batch bills whole runs of an org's messages: the 6 batches of 5000
# split at most 5 of the 100 orgs (300 messages each) in two
is( sql($primary,
		'SELECT sum(n) <= 105, max(n) <= 2 FROM (SELECT count(*) AS n'
		  . ' FROM msgbilling.ledger WHERE kind = \'charge\' GROUP BY org_id) e'),
	't|t', 'in batches of 5000: one charge entry per org per batch, orgs kept whole');
is(sql($primary, 'SELECT bool_and(ok) FROM msgbilling.verify()'),
	't', 'verify() is clean');
like(
	sql($primary,
		"SELECT query FROM pg_stat_activity WHERE backend_type = 'msgbilling worker'"),
	qr/^msgbilling worker: \w+; billed \d+ since start; backlog \d+$/,
	'pg_stat_activity shows its progress');

is( sql($primary,
		"SELECT worker_running, worker_pid > 0, backlog, charged FROM msgbilling.metrics"),
	't|t|0|30000', 'msgbilling.metrics shows the worker and the counts');
is( sql($primary,
		"SELECT database, state, billed >= 30000, last_run IS NOT NULL FROM msgbilling.worker_status()"),
	'postgres|sleeping|t|t', 'worker_status() reports it');

my $start = time();
sql($primary, 'INSERT INTO messages (org_id, tokens_used) VALUES (1, 10)');
$primary->poll_query_until('postgres', 'SELECT msgbilling.backlog() = 0')
  or die 'the fresh message was not billed';
my $delay = time() - $start;
ok($delay < 30, "wake on commit: a fresh message billed after ${delay}s, naptime 1h");

# -------------------------------------------------------------------------
# wake_interval: commits that wake the worker within it are billed together
# -------------------------------------------------------------------------

sql($primary, "ALTER SYSTEM SET msgbilling.wake_interval = '5s'");
$primary->reload;
sleep 1;
# its last drain began long ago: this commit is billed at once
sql($primary, 'INSERT INTO messages (org_id, tokens_used) VALUES (4, 10)');
$primary->poll_query_until('postgres', 'SELECT msgbilling.backlog() = 0')
  or die 'the message was not billed';
# two more commits right after that drain began: they wait for its interval
sql($primary, 'INSERT INTO messages (org_id, tokens_used) VALUES (4, 11)');
sql($primary, 'INSERT INTO messages (org_id, tokens_used) VALUES (4, 12)');
is(sql($primary, 'SELECT msgbilling.backlog()'),
	'2', 'commits within wake_interval of the last drain wait for its end');
ok($primary->poll_query_until('postgres', 'SELECT msgbilling.backlog() = 0'),
	'then they are billed');
is( sql($primary,
		'SELECT count(DISTINCT billing_ledger_id), min(billing_status) FROM messages'
		  . ' WHERE org_id = 4 AND tokens_used IN (11, 12)'),
	'1|charged', 'together: one transaction, one charge entry for both');
sql($primary, "ALTER SYSTEM RESET msgbilling.wake_interval");
$primary->reload;

# -------------------------------------------------------------------------
# worker_max_rate: the worker bills no faster than that (pace.c)
# -------------------------------------------------------------------------

sql($primary, "ALTER SYSTEM SET msgbilling.worker_max_rate = 200");
$primary->reload;
sleep 1;
$start = time();
sql($primary,
	'INSERT INTO messages (org_id, tokens_used) SELECT 5, 1 FROM generate_series(1, 400)');
$primary->poll_query_until('postgres', 'SELECT msgbilling.backlog() = 0')
  or die 'the 400 messages were not billed';
my $took = time() - $start;
# 2 s at that rate, less the 10 ms it may make up: it can only take longer
ok($took >= 1.5, "at 200 messages a second, 400 messages took ${took}s");
is(sql($primary, "SELECT count(*) FROM messages WHERE org_id = 5 AND tokens_used = 1"
		  . " AND billing_status = 'charged'"),
	'400', 'and all of them were charged');
sql($primary, "ALTER SYSTEM RESET msgbilling.worker_max_rate");
$primary->reload;

# -------------------------------------------------------------------------
# Resumed peeks: the worker looks from just before the oldest message it
# last found, and at the whole backlog once a naptime (resume.c)
# -------------------------------------------------------------------------

sql($primary, 'SELECT count(msgbilling.top_up(o, 1000)) FROM generate_series(107, 109) o');
sleep 1;
sql($primary,
	"INSERT INTO messages (org_id, tokens_used, created_at) VALUES (107, 10, now() - interval '1 day')");
sql($primary, 'INSERT INTO messages (org_id, tokens_used) VALUES (108, 10)');
ok( $primary->poll_query_until('postgres',
		"SELECT billing_status = 'charged' FROM messages WHERE org_id = 108"),
	'a fresh message is billed from the resume point');
is( sql($primary, "SELECT billing_status FROM messages WHERE org_id = 107"),
	'pending', 'a message a day older than the resume point waits for a whole look');
sql($primary, 'INSERT INTO messages (org_id, tokens_used) VALUES (107, 11)');
ok($primary->poll_query_until('postgres', 'SELECT msgbilling.backlog() = 0'),
	'a fresh message of its org brings it along');
is( sql($primary,
		"SELECT count(*), count(DISTINCT billing_ledger_id), min(billing_status)"
		  . " FROM messages WHERE org_id = 107"),
	'2|1|charged', 'both charged, in one charge entry');
sql($primary,
	"INSERT INTO messages (org_id, tokens_used, created_at) VALUES (109, 10, now() - interval '1 day')");
sql($primary, "ALTER SYSTEM SET msgbilling.naptime = '1s'");
$primary->reload;
ok($primary->poll_query_until('postgres', 'SELECT msgbilling.backlog() = 0'),
	'the whole look, once a naptime, bills an old-dated message alone');
sql($primary, "ALTER SYSTEM SET msgbilling.naptime = '1h'");
$primary->reload;
# retry_failed makes old messages pending: its commit asks for a whole look
sql($primary,
	"INSERT INTO messages (org_id, tokens_used, created_at) VALUES (110, 10, now() - interval '1 day')");
is( sql($primary,
		'SELECT msgbilling.process_message_billing(max(id)) FROM messages WHERE org_id = 110'),
	'failed', 'an old-dated message of an org with no wallet fails');
# a fresh message moves the resume point past the old one
sql($primary, 'INSERT INTO messages (org_id, tokens_used) VALUES (108, 12)');
$primary->poll_query_until('postgres',
	"SELECT billing_status = 'charged' FROM messages WHERE org_id = 108 AND tokens_used = 12")
  or die 'the fresh message was not billed';
sql($primary, 'SELECT msgbilling.top_up(110, 1000)');
is(sql($primary, 'SELECT msgbilling.retry_failed(110)'), '1', 'retried');
ok( $primary->poll_query_until('postgres',
		"SELECT billing_status = 'charged' FROM messages WHERE org_id = 110"),
	'the retried message is billed at once, not a naptime (1h) later');

# -------------------------------------------------------------------------
# SIGHUP: a new naptime applies without a restart
# -------------------------------------------------------------------------

sql($primary, "ALTER SYSTEM SET msgbilling.wake_on_commit = off");
$primary->reload;
sleep 1;
sql($primary, 'INSERT INTO messages (org_id, tokens_used) VALUES (2, 10)');
sleep 2;
is(sql($primary, 'SELECT msgbilling.backlog()'),
	'1', 'without wake-on-commit the message waits for the naptime');
sql($primary, "ALTER SYSTEM SET msgbilling.naptime = '200ms'");
$primary->reload;
ok($primary->poll_query_until('postgres', 'SELECT msgbilling.backlog() = 0'),
	'after SIGHUP the new naptime applies');
sql($primary, 'INSERT INTO messages (org_id, tokens_used) VALUES (3, 10)');
ok($primary->poll_query_until('postgres', 'SELECT msgbilling.backlog() = 0'),
	'and keeps applying');
sql($primary, "ALTER SYSTEM RESET msgbilling.wake_on_commit");
sql($primary, "ALTER SYSTEM SET msgbilling.naptime = '1h'");
$primary->reload;

# -------------------------------------------------------------------------
# A failing batch: logged once, backed off, recovered from
# -------------------------------------------------------------------------

sql($primary, 'ALTER TABLE messages RENAME COLUMN tokens_used TO tokens');
sql($primary, 'INSERT INTO messages (org_id, tokens) VALUES (1, 10)');
sleep 4;
is(log_count($primary, qr/worker: billing failed: tokens column/),
	1, 'a batch that keeps failing is logged once');
ok(worker_pid($primary) ne '', 'and the worker lives on');
sql($primary, 'ALTER TABLE messages RENAME COLUMN tokens TO tokens_used');
sql($primary, 'INSERT INTO messages (org_id, tokens_used) VALUES (1, 10)');
ok($primary->poll_query_until('postgres', 'SELECT msgbilling.backlog() = 0'),
	'once the cause is gone it bills again');
ok(log_count($primary, qr/worker: billing again/) >= 1, 'and says so');

# -------------------------------------------------------------------------
# kill -9 of the worker: crash recovery, and the worker comes back
# -------------------------------------------------------------------------

my $old_pid = worker_pid($primary);
kill 'KILL', $old_pid;
$primary->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'msgbilling worker'"
	  . " AND pid <> $old_pid")
  or die 'the worker did not come back';
pass('after kill -9 the worker is back');
sql($primary, 'INSERT INTO messages (org_id, tokens_used) SELECT 5, 1 FROM generate_series(1, 100)');
ok($primary->poll_query_until('postgres', 'SELECT msgbilling.backlog() = 0'),
	'and carries on billing');
is(sql($primary, 'SELECT bool_and(ok) FROM msgbilling.verify()'), 't',
	'verify() is clean after the crash');

# -------------------------------------------------------------------------
# kill -9 of a backend in the middle of a large drain
# -------------------------------------------------------------------------

sql($primary, "ALTER SYSTEM SET msgbilling.enabled = off");
$primary->reload;
sleep 1;
my $charged_before = sql($primary, 'SELECT charged FROM msgbilling.stats()');
sql($primary,
	"INSERT INTO messages (org_id, tokens_used)"
	  . " SELECT 1 + i % 100, 1 FROM generate_series(1, 400000) i");
my $charges_before = sql($primary,
	"SELECT count(*) FROM msgbilling.ledger WHERE kind = 'charge'");
my ($out, $err) = ('', '');
my $drain = IPC::Run::start(
	[ 'psql', '-X', '-d', $primary->connstr('postgres'),
	  '-c', 'CALL msgbilling.drain(20000)' ],
	'>', \$out, '2>', \$err);
$primary->poll_query_until('postgres',
	"SELECT count(*) > $charges_before FROM msgbilling.ledger WHERE kind = 'charge'")
  or die 'the drain did not commit a batch';
my $drain_pid = sql($primary,
	"SELECT pid FROM pg_stat_activity WHERE query LIKE 'CALL msgbilling.drain%'");
kill 'KILL', $drain_pid;
$drain->finish;
$primary->poll_query_until('postgres', 'SELECT true') or die;
my ($charged, $pending) = split /\|/,
  sql($primary, 'SELECT charged, pending FROM msgbilling.stats()');
ok($pending > 0, "the drain was killed part way ($pending left pending)");
is(($charged - $charged_before) % 20000, 0,
	'only whole batches of 20000 were committed');
is(sql($primary, 'SELECT bool_and(ok) FROM msgbilling.verify()'), 't',
	'verify() is clean after crash recovery');
sql($primary, "ALTER SYSTEM RESET msgbilling.enabled");
$primary->reload;
ok($primary->poll_query_until('postgres', 'SELECT msgbilling.backlog() = 0'),
	'the worker finishes the rest');
is( sql($primary, 'SELECT charged, failed FROM msgbilling.stats()'),
	($charged_before + 400000) . '|0',
	'every message charged exactly once');
is(sql($primary, 'SELECT bool_and(ok) FROM msgbilling.verify()'), 't',
	'verify() is clean');

# -------------------------------------------------------------------------
# SIGTERM while the worker waits out its wake interval stops it at once:
# that wait takes the latch the signal set, and the worker must not go on
# to sleep a naptime (1h) before it looks at the signal
# -------------------------------------------------------------------------

sql($primary, "ALTER SYSTEM SET msgbilling.wake_interval = '60s'");
$primary->reload;
sleep 1;
sql($primary, 'INSERT INTO messages (org_id, tokens_used) VALUES (4, 13)');
$primary->poll_query_until('postgres', 'SELECT msgbilling.backlog() = 0')
  or die 'the message was not billed';
# this commit wakes the worker into the rest of its 60 s interval
sql($primary, 'INSERT INTO messages (org_id, tokens_used) VALUES (4, 14)');
sleep 1;
my $waiting_pid = worker_pid($primary);
my $stops_before = log_count($primary, qr/worker for database "postgres" stopping/);
sql($primary, "SELECT pg_terminate_backend($waiting_pid)");
ok( $primary->poll_query_until(
		'postgres', "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $waiting_pid"),
	'SIGTERM during the wake interval stops the worker, not a naptime later');
is(log_count($primary, qr/worker for database "postgres" stopping/),
	$stops_before + 1, 'and it says it is stopping');
sql($primary, "ALTER SYSTEM RESET msgbilling.wake_interval");
$primary->reload;
# the message it left is billed by hand; the worker comes back in a minute
sql($primary, 'SELECT msgbilling.process_all_pending()');

# -------------------------------------------------------------------------
# A streaming standby bills nothing; promotion makes it bill
# -------------------------------------------------------------------------

$primary->backup('backup');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'backup', has_streaming => 1);
$standby->start;
sql($primary, "ALTER SYSTEM SET msgbilling.enabled = off");
$primary->reload;
sleep 1;
sql($primary, 'INSERT INTO messages (org_id, tokens_used) SELECT 7, 1 FROM generate_series(1, 50)');
$primary->wait_for_catchup($standby);
sleep 2;
# SIGTERM (a fast shutdown sends it) stops the worker between batches
$primary->stop('fast');
ok(log_count($primary, qr/worker for database "postgres" stopping/) >= 1,
	'the worker stops cleanly on SIGTERM');
is(sql($standby, 'SELECT msgbilling.backlog()'), '50',
	'the standby sees the pending messages');
is(worker_pid($standby), '', 'no worker runs on the standby');
$standby->promote;
ok($standby->poll_query_until('postgres', 'SELECT msgbilling.backlog() = 0'),
	'after promotion the new primary bills them');
is(sql($standby, 'SELECT bool_and(ok) FROM msgbilling.verify()'), 't',
	'verify() is clean on the promoted standby');

$standby->stop;
done_testing();
