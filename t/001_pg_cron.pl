# 001_pg_cron.pl — msgbilling.schedule() and unschedule() with pg_cron.
#
# A cluster that preloads pg_cron (jobs run as background workers, no TCP):
# schedule() registers the msgbilling-drain job, scheduling again updates
# it, pg_cron runs CALL msgbilling.drain() and bills the pending messages,
# and unschedule() removes the job.  A second cluster without pg_cron: both
# functions fail with a clear error.  pg_cron 1.4 runs jobs at minute
# boundaries, so the wait for a run takes up to a minute.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep time);

# Run $sql in $db, expecting an error; returns psql's stderr in verbose
# form ("ERROR:  SQLSTATE: message", DETAIL, HINT).
sub sql_error
{
	my ($node, $db, $sql) = @_;
	my ($ret, $stdout, $stderr) =
	  $node->psql($db, "\\set VERBOSITY verbose\n$sql");
	return $ret == 0 ? "(no error; returned: $stdout)" : $stderr;
}

###############################################################################
# With pg_cron
###############################################################################

my $node = PostgreSQL::Test::Cluster->new('cron');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'pg_cron'
cron.database_name = 'postgres'
cron.use_background_workers = on
max_worker_processes = 32
});
$node->start;

$node->safe_psql(
	'postgres', q{
CREATE EXTENSION pg_cron;
CREATE EXTENSION msgbilling;
CREATE TABLE messages (id bigint PRIMARY KEY, org_id int, tokens_used int);
SELECT msgbilling.attach('messages');
SELECT msgbilling.set_price(NULL, 0.01, '2020-01-01');
SELECT msgbilling.top_up(1, 100);
-- 40 messages of 10 tokens: 0.1 credits each
INSERT INTO messages (id, org_id, tokens_used)
SELECT i, 1, 10 FROM generate_series(1, 40) i;
});
is($node->safe_psql('postgres', 'SELECT pending FROM msgbilling.stats()'),
	'40', 'forty messages are pending');

# the job as cron.job shows it
my $job_sql = q{
SELECT jobid, jobname, schedule, command, database, username
  FROM cron.job ORDER BY jobid};

my $job_id = $node->safe_psql('postgres', 'SELECT msgbilling.schedule()');
like($job_id, qr/^\d+$/, 'schedule() returns a job id');
is( $node->safe_psql('postgres', $job_sql),
	"$job_id|msgbilling-drain|*/5 * * * *|CALL msgbilling.drain()|postgres|postgres",
	'schedule() registers one job that drains every five minutes');

is($node->safe_psql('postgres', q{SELECT msgbilling.schedule('* * * * *')}),
	$job_id, 'scheduling again returns the same job id');
is( $node->safe_psql('postgres', $job_sql),
	"$job_id|msgbilling-drain|* * * * *|CALL msgbilling.drain()|postgres|postgres",
	'scheduling again updates the one job');

# bad schedules change nothing
like(
	sql_error($node, 'postgres', 'SELECT msgbilling.schedule(NULL)'),
	qr/ERROR:  22004: schedule must not be NULL/,
	'a NULL schedule is an error');
like(
	sql_error($node, 'postgres', q{SELECT msgbilling.schedule(' ')}),
	qr/ERROR:  22023: schedule must not be empty/,
	'an empty schedule is an error');
like(
	sql_error($node, 'postgres', q{SELECT msgbilling.schedule('every minute')}),
	qr/ERROR:  22023: invalid schedule: every minute/,
	'an invalid cron expression is pg_cron\'s error');
is( $node->safe_psql('postgres', $job_sql),
	"$job_id|msgbilling-drain|* * * * *|CALL msgbilling.drain()|postgres|postgres",
	'the job is unchanged after the errors');

# Wait for pg_cron to run the job (it starts runs at minute boundaries).
my $run_sql = qq{
SELECT status, coalesce(return_message, '')
  FROM cron.job_run_details WHERE jobid = $job_id AND status IN ('succeeded', 'failed')
 ORDER BY runid LIMIT 1};
my $run     = '';
my $started = time();
while (time() - $started < 150)
{
	$run = $node->safe_psql('postgres', $run_sql);
	last if $run ne '';
	sleep(0.5);
}
note(sprintf('first run finished after %.1f s', time() - $started));
is($run, 'succeeded|CALL', 'pg_cron ran CALL msgbilling.drain() successfully');

is( $node->safe_psql(
		'postgres', q{
SELECT billing_status, count(*), sum(cost_credits)
  FROM messages GROUP BY 1 ORDER BY 1}),
	'charged|40|4.000000',
	'the job charged every pending message');
is( $node->safe_psql(
		'postgres',
		'SELECT pending, charged, failed FROM msgbilling.stats()'),
	'0|40|0',
	'stats() shows nothing pending');
is($node->safe_psql('postgres', 'SELECT msgbilling.balance(1)'),
	'96.000000', 'the wallet was debited');
is( $node->safe_psql(
		'postgres',
		q{SELECT count(*) > 0 AND bool_and(ok) FROM msgbilling.verify()}),
	't',
	'verify() is all ok');

is($node->safe_psql('postgres', 'SELECT msgbilling.unschedule()'),
	't', 'unschedule() removes the job');
is($node->safe_psql('postgres', $job_sql), '', 'no job is left');
is($node->safe_psql('postgres', 'SELECT msgbilling.unschedule()'),
	'f', 'unschedule() without a job returns false');

# The job runs as the role that schedules it: a role granted schedule()
# but not drain() is refused; with the grants its job is its own.
$node->safe_psql(
	'postgres', q{
CREATE ROLE mb_cron_biller LOGIN;
GRANT USAGE ON SCHEMA msgbilling, cron TO mb_cron_biller;
GRANT EXECUTE ON FUNCTION msgbilling.schedule(text), msgbilling.unschedule()
    TO mb_cron_biller;
});
like(
	sql_error(
		$node, 'postgres',
		"SET ROLE mb_cron_biller;\nSELECT msgbilling.schedule();"),
	qr/ERROR:  42501: role "mb_cron_biller" may not run msgbilling.drain\(\)/,
	'a role that may not drain cannot schedule the job');
$node->safe_psql(
	'postgres', q{
GRANT EXECUTE ON PROCEDURE msgbilling.drain(integer, "any", integer) TO mb_cron_biller;
GRANT EXECUTE ON FUNCTION msgbilling.process_all_pending("any", bigint, integer, integer)
    TO mb_cron_biller;
SET ROLE mb_cron_biller;
SELECT msgbilling.schedule();
});
is( $node->safe_psql('postgres', 'SELECT jobname, username FROM cron.job'),
	'msgbilling-drain|mb_cron_biller',
	'the job of a role runs as that role');
is( $node->safe_psql(
		'postgres', "SET ROLE mb_cron_biller;\nSELECT msgbilling.unschedule();"),
	't',
	'the role unschedules its job');

# A database other than cron.database_name cannot have the job.
$node->safe_psql('postgres', 'CREATE DATABASE app');
$node->safe_psql('app',      'CREATE EXTENSION msgbilling');
my $err = sql_error($node, 'app', 'SELECT msgbilling.schedule()');
like(
	$err,
	qr/ERROR:  55000: pg_cron is not installed in database "app"/,
	'in another database, schedule() fails with SQLSTATE 55000');
like(
	$err,
	qr/HINT:  In database postgres, run SELECT cron\.schedule_in_database\('msgbilling-drain', '\*\/5 \* \* \* \*', 'CALL msgbilling\.drain\(\)', 'app'\)/,
	'in another database, schedule() points to cron.database_name');

$node->stop;

###############################################################################
# Without pg_cron: msgbilling works, scheduling is a clear error
###############################################################################

my $plain = PostgreSQL::Test::Cluster->new('plain');
$plain->init;
$plain->start;
$plain->safe_psql('postgres', 'CREATE EXTENSION msgbilling');

foreach my $call ('schedule()', 'unschedule()')
{
	my $err = sql_error($plain, 'postgres', "SELECT msgbilling.$call");
	like(
		$err,
		qr/ERROR:  55000: pg_cron is not installed in database "postgres"/,
		"without pg_cron, $call fails with SQLSTATE 55000");
	like(
		$err,
		qr/HINT:  Install pg_cron .*shared_preload_libraries = 'pg_cron'.*cron\.database_name = 'postgres'.*CREATE EXTENSION pg_cron/,
		"without pg_cron, $call hints at shared_preload_libraries");
}

$plain->stop;

done_testing();
