# Billing through PgBouncer in transaction mode: a client's session
# setting stays with the server connection and reaches the next client
# that gets it, so everything a pooled client needs takes arguments
# instead.  One server connection for every client makes the leak sure.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes;
use IPC::Run;

my $pgbouncer = '/usr/sbin/pgbouncer';
-x $pgbouncer or die 'pgbouncer is not installed (scripts/common.sh installs it)';

my $node = PostgreSQL::Test::Cluster->new('pooled');
$node->init;
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION msgbilling;
CREATE TABLE messages (
    id bigserial PRIMARY KEY,
    org_id bigint NOT NULL,
    tokens_used integer,
    hold_id bigint,
    created_at timestamptz NOT NULL DEFAULT now()
);
SELECT msgbilling.attach('messages', created_column => 'created_at',
                         hold_column => 'hold_id');
SELECT msgbilling.set_price(NULL, 0.001, '2024-01-01');
SELECT msgbilling.top_up(1, 1000);
});

# PgBouncer on a socket of its own, one server connection per pool.
my $dir = $node->basedir . '/bouncer';
mkdir $dir or die "mkdir $dir: $!";
my $port = PostgreSQL::Test::Cluster::get_free_port();
my $host = $node->host;
my $node_port = $node->port;
open my $ini, '>', "$dir/pgbouncer.ini" or die $!;
print $ini <<EOF;
[databases]
app = host=$host port=$node_port dbname=postgres
[pgbouncer]
listen_addr =
listen_port = $port
unix_socket_dir = $dir
auth_type = trust
auth_file = $dir/users.txt
pool_mode = transaction
default_pool_size = 1
max_client_conn = 20
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
EOF
close $ini;
open my $users, '>', "$dir/users.txt" or die $!;
print $users qq{"$ENV{USER}" ""\n} if $ENV{USER};
print $users qq{"postgres" ""\n};
close $users;
system($pgbouncer, '-d', "$dir/pgbouncer.ini") == 0 or die 'pgbouncer did not start';

# psql through PgBouncer: output, and standard error.
sub pooled
{
	my ($sql) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'psql', '-X', '-qAt', '-h', $dir, '-p', $port, '-d', 'app',
			'-U', 'postgres', '-v', 'ON_ERROR_STOP=1', '-c', $sql ],
		'>', \$out, '2>', \$err);
	chomp $out;
	return wantarray ? ($out, $err) : $out;
}

# pgbouncer -d returns before it listens (1.24 takes half a second): wait
# for it, up to ten seconds
my $tries = 0;
Time::HiRes::usleep(100_000) until pooled('SELECT 1') eq '1' or $tries++ >= 100;
is(pooled('SELECT 1'), '1', 'psql reaches the server through PgBouncer');

# One client slows billing down for itself, with a session SET; it stays
# on the one server connection.
pooled('SET msgbilling.max_rate = 1');
is(pooled('SHOW msgbilling.max_rate'), '1',
	"another client's session setting reaches this one: the leak is real");

# The app inserts through the pool; the biller's calls set their own pace
# (0: full speed) and batch size.  Paced by the leaked setting, 300
# messages would take five minutes, past the timeout.
pooled(q{INSERT INTO messages (org_id, tokens_used)
         SELECT 1, 10 FROM generate_series(1, 300)});
my ($out, $err) = pooled(q{
BEGIN;
SET LOCAL statement_timeout = '60s';
SELECT charged FROM msgbilling.process_all_pending(max_rate => 0, batch_size => 100);
COMMIT;});
is($out, '300', 'process_all_pending with its own pace bills them all') or diag $err;
is( pooled(q{SELECT count(*) FROM msgbilling.ledger WHERE kind = 'charge'}),
	'3', 'in batches of the size it asked for');

pooled(q{INSERT INTO messages (org_id, tokens_used)
         SELECT 1, 10 FROM generate_series(1, 300)});
($out, $err) = pooled(q{SET statement_timeout = '60s'; CALL msgbilling.drain(max_rate => 0)});
is($err, '', 'drain with its own pace ran through the pool') or diag $err;
is( pooled(q{SELECT count(*) FROM messages WHERE billing_status = 'charged'}),
	'600', 'and billed every message');
is(pooled('RESET statement_timeout; RESET msgbilling.max_rate; SHOW msgbilling.max_rate'),
	'0', 'the leaked setting, reset');

# The reads and wallet calls a pooled app makes need no session state.
is(pooled('SELECT balance FROM msgbilling.credits WHERE org_id = 1'),
	pooled('SELECT msgbilling.balance(1)'), 'balance() through the pool');
is(pooled('SELECT charged FROM msgbilling.stats(1)'), '600', 'stats() through the pool');

# The admission flow through the pool: each call holds the org's lock only
# while it runs, so clients on one server connection never meet a lock
# left behind.
my $avail = pooled('SELECT msgbilling.available(1)');
my $hold = pooled('SELECT msgbilling.hold(1, 2.5)');
like($hold, qr/^\d+$/, 'hold() through the pool');
is(pooled('SELECT msgbilling.available(1)'), sprintf('%.6f', $avail - 2.5),
	'the next client sees it held');
pooled("INSERT INTO messages (org_id, tokens_used, hold_id) VALUES (1, 10, $hold)");
pooled('SELECT charged FROM msgbilling.process_all_pending(max_rate => 0)');
is(pooled("SELECT count(*) FROM msgbilling.holds WHERE id = $hold"), '0',
	'billing its message released it');
is(pooled('SELECT msgbilling.available(1)'), pooled('SELECT msgbilling.balance(1)'),
	'and available is the balance again');
is(pooled(q{SELECT string_agg(check_name, ', ') FROM msgbilling.verify() WHERE NOT ok}),
	'', 'verify() is clean');

my $pid = slurp_file("$dir/pgbouncer.pid");
chomp $pid;
kill 'TERM', $pid;
$node->stop;
done_testing();
