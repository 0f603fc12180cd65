# What CALL msgbilling.drain() has billed when it returns survives a crash
# that follows at once.  Its batches before the last commit without waiting
# for their WAL to reach disk; before it returns, drain waits for all of
# them, also when its last batch found nothing and wrote nothing.
#
# Holds survive kill -9 and restarts, and one in an open transaction when
# the server crashed never was.
use strict;
use warnings;

use IPC::Run;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('crash');
$node->init;
# no other writer of WAL, and a WAL writer that wakes rarely: a commit that
# drain did not wait for stays unflushed long enough to be seen
$node->append_conf(
	'postgresql.conf', q{
autovacuum = off
wal_writer_delay = '10s'
wal_writer_flush_after = '16MB'
restart_after_crash = on
});
$node->start;

sub sql
{
	my ($query) = @_;
	return $node->safe_psql('postgres', $query);
}

sql(q{
CREATE EXTENSION msgbilling;
CREATE TABLE messages (
    id bigserial PRIMARY KEY,
    org_id integer NOT NULL,
    tokens_used integer,
    created_at timestamptz NOT NULL DEFAULT now()
);
SELECT msgbilling.attach('messages', created_column => 'created_at');
SELECT msgbilling.set_price(NULL, 0.01, '2024-01-01');
SELECT msgbilling.top_up(o, 100) FROM generate_series(1, 20) o;
INSERT INTO messages (org_id, tokens_used, created_at)
SELECT 1 + i % 20, 10, '2024-06-01'::timestamptz + i * interval '1 s'
  FROM generate_series(1, 300) i;
});

# 300 messages in batches of 100: three batches, and a fourth that finds
# nothing, so the last commit has no WAL to flush; the crash (no shutdown
# checkpoint, WAL buffers lost) comes as soon as drain has returned
is( sql(q{
CALL msgbilling.drain(100);
SELECT sum(message_count) FROM msgbilling.ledger WHERE kind = 'charge';
}), '300', 'drain charged 300 messages');
$node->stop('immediate');
$node->start;
is( sql(q{SELECT charged, pending FROM msgbilling.stats()}),
	'300|0', 'after a crash right after drain returned, all 300 are charged');
is(sql(q{SELECT sum(balance) FROM msgbilling.credits}),
	'1970.000000', 'and the wallets were debited for them: 2000 - 300 x 0.1');
is(sql(q{SELECT bool_and(ok) FROM msgbilling.verify()}),
	't', 'verify() is clean after recovery');

# a session that asks for no wait gets none: drain leaves the setting alone
is( sql(q{
SET synchronous_commit = off;
INSERT INTO messages (org_id, tokens_used) SELECT 1 + i % 20, 10
  FROM generate_series(1, 50) i;
CALL msgbilling.drain(10);
SHOW synchronous_commit;
}), 'off', 'drain keeps the session\'s synchronous_commit');

# -------------------------------------------------------------------------
# holds across a kill -9 and a restart
# -------------------------------------------------------------------------

sql(q{SELECT msgbilling.top_up(21, 100)});
my $h1 = sql(q{SELECT msgbilling.hold(21, 30, '1 hour', 'call-1')});
my $h2 = sql(q{SELECT msgbilling.hold(21, 30, '1 hour')});
# a third, in a transaction still open when the backend is killed
my ($out, $err) = ('', '');
my $open = IPC::Run::start(
	[ 'psql', '-X', '-d', $node->connstr('postgres'), '-c',
	  "BEGIN; SELECT msgbilling.hold(21, 30, '1 hour'); SELECT pg_sleep(600);" ],
	'>', \$out, '2>', \$err);
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE query LIKE '%pg_sleep(600)%'"
	  . " AND wait_event = 'PgSleep'")
  or die 'the open hold did not start';
is(sql(q{SELECT msgbilling.hold(21, 30) IS NULL}), 't',
	'an uncommitted hold counts: a fourth hold of 30 of 100 is refused');
my $open_pid = sql(
	"SELECT pid FROM pg_stat_activity WHERE query LIKE '%pg_sleep(600)%'"
	  . " AND wait_event = 'PgSleep'");
kill 'KILL', $open_pid;
$open->finish;
$node->poll_query_until('postgres', 'SELECT true') or die;
is(sql(q{SELECT string_agg(amount::text, ',' ORDER BY id) FROM msgbilling.holds}),
	'30.000000,30.000000', 'after crash recovery the two committed holds are there');
is(sql(q{SELECT msgbilling.available(21)}), '40.000000',
	'and the killed one is gone: 40 available');
is(sql(qq{SELECT msgbilling.hold(21, 30, '1 hour', 'call-1') = $h1}), 't',
	'a hold key names the same hold after the crash');
$node->restart;
is(sql(q{SELECT msgbilling.available(21)}), '40.000000',
	'a restart keeps the holds');
my $h3 = sql(q{SELECT msgbilling.hold(21, 40)});
ok($h3 ne '', 'the 40 left can be held');
is(sql(q{SELECT msgbilling.hold(21, 0.000001) IS NULL}), 't',
	'and not a millionth more');
is(sql(qq{SELECT msgbilling.release($h2)}), 't', 'release after a restart');
is(sql(q{SELECT msgbilling.available(21)}), '30.000000',
	'frees its 30');
is(sql(q{SELECT bool_and(ok) FROM msgbilling.verify()}), 't',
	'verify() is clean');

$node->stop;
done_testing();
