# A 1.0 install holding money, updated the way a user updates it: the 1.0
# package (library and scripts, built from the 1.0 release in git) bills
# for a while; the new package replaces it; until ALTER EXTENSION
# msgbilling UPDATE runs, the new library refuses to bill through the old
# objects while the app's INSERTs go on; after it, every balance, entry and
# status is kept, and billing goes on where 1.0 left it.
#
# The server runs from a copy of this PostgreSQL installation whose lib and
# extension directories hold one msgbilling at a time: the binaries are
# copied, everything else is linked, and the server finds $libdir and its
# extension scripts next to the binaries it runs from.
use strict;
use warnings;

use File::Copy;
use File::Path qw(make_path);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# the commit msgbilling 1.0 was released from
my $release_1_0 = '4c2cb943b86fcd81df3af0688e715e7b59ea014a';

my $pg_config = $ENV{PG_CONFIG} || 'pg_config';
my %dir;
for my $d (qw(bindir pkglibdir sharedir))
{
	chomp($dir{$d} = `$pg_config --$d`);
	die "$pg_config --$d failed" if $? != 0;
}
my $root = PostgreSQL::Test::Utils::tempdir('install');

# Links to the entries of $from in $to, but for those matching $skip.
sub link_entries
{
	my ($from, $to, $skip) = @_;
	make_path($to);
	opendir(my $dh, $from) or die "opendir $from: $!";
	for my $e (grep { !/^\.\.?$/ && !/$skip/ } readdir $dh)
	{
		symlink("$from/$e", "$to/$e") or die "symlink $to/$e: $!";
	}
	closedir $dh;
}

# Put a msgbilling package into the copy: its library from $lib, its
# control file and scripts from $share, in place of the one there.
sub install_package
{
	my ($lib, $share) = @_;
	for my $f (grep { -e } glob("$root$dir{sharedir}/extension/msgbilling*"),
		"$root$dir{pkglibdir}/msgbilling.so")
	{
		unlink $f or die "unlink $f: $!";
	}
	copy("$lib/msgbilling.so", "$root$dir{pkglibdir}/msgbilling.so")
	  or die "copy $lib/msgbilling.so: $!";
	for my $f (glob("$share/msgbilling.control"), glob("$share/msgbilling--*.sql"))
	{
		copy($f, "$root$dir{sharedir}/extension/") or die "copy $f: $!";
	}
}

make_path("$root$dir{bindir}");
opendir(my $bh, $dir{bindir}) or die "opendir $dir{bindir}: $!";
for my $b (grep { -f "$dir{bindir}/$_" } readdir $bh)
{
	copy("$dir{bindir}/$b", "$root$dir{bindir}/$b") or die "copy $b: $!";
	chmod 0755, "$root$dir{bindir}/$b";
}
closedir $bh;
link_entries($dir{pkglibdir}, "$root$dir{pkglibdir}", qr/^msgbilling/);
link_entries($dir{sharedir}, "$root$dir{sharedir}", qr/^extension$/);
link_entries("$dir{sharedir}/extension", "$root$dir{sharedir}/extension",
	qr/^msgbilling/);
my $relocated_config = "$root$dir{bindir}/pg_config";
is(`$relocated_config --pkglibdir`, "$root$dir{pkglibdir}\n",
	'the copied installation has a lib directory of its own');

# msgbilling 1.0, built from its release and installed into the copy
my $src = "$root/msgbilling-1.0";
make_path($src);
command_ok([ 'sh', '-c', "git archive $release_1_0 | tar -x -C $src" ],
	'the 1.0 release is in git');
command_ok([ 'make', '-s', '-C', $src, "PG_CONFIG=$pg_config" ],
	'msgbilling 1.0 builds');
install_package($src, $src);

my $node = PostgreSQL::Test::Cluster->new('upgrade',
	install_path => "$root" . ($dir{bindir} =~ s{/bin$}{}r));
$node->init;
$node->append_conf('postgresql.conf', 'jit = off');
$node->start;

sub sql
{
	return $node->safe_psql('postgres', shift);
}

my $a = "'aaaaaaaa-0000-0000-0000-000000000000'";
my $b = "'bbbbbbbb-0000-0000-0000-000000000000'";

# 1.0 bills: charged, refunded, failed and pending messages, and balances
sql(qq{
CREATE EXTENSION msgbilling;
CREATE TABLE messages (
    id bigserial PRIMARY KEY,
    org_id uuid NOT NULL,
    model text,
    tokens_used integer,
    created_at timestamptz NOT NULL DEFAULT now()
);
SELECT msgbilling.attach('messages', model_column => 'model',
                         created_column => 'created_at');
SELECT msgbilling.set_price(NULL, 0.01, '2024-01-01');
SELECT msgbilling.set_price('gpt-4o', 0.05, '2024-01-01');
SELECT msgbilling.top_up($a, 10, 'card', 'pay-1');
SELECT msgbilling.top_up($b, 1);
INSERT INTO messages (org_id, model, tokens_used, created_at)
SELECT CASE WHEN i % 2 = 0 THEN ${a}::uuid ELSE ${b}::uuid END,
       CASE WHEN i % 3 = 0 THEN 'gpt-4o' END, 10 + i,
       '2024-06-01'::timestamptz + i * interval '1 minute'
  FROM generate_series(1, 30) i;
SELECT * FROM msgbilling.process_all_pending(max_messages => 20);
SELECT msgbilling.refund(2, 'bad answer');
});
is(sql('SELECT extversion FROM pg_extension WHERE extname = $$msgbilling$$'),
	'1.0', 'the install is at 1.0');

my $books = q{
SELECT (SELECT string_agg(billing_status || ':' || n, ',' ORDER BY billing_status)
          FROM (SELECT billing_status, count(*) AS n FROM messages GROUP BY 1) s),
       (SELECT string_agg(id || '/' || billing_status || '/' || COALESCE(cost_credits::text, '-')
                          || '/' || COALESCE(billing_ledger_id::text, '-'), ',' ORDER BY id)
          FROM messages),
       (SELECT string_agg(org_id || '=' || balance || '/' || charged_messages || '/'
                          || refunded_messages || '/' || credits_charged, ',' ORDER BY org_id)
          FROM msgbilling.credits),
       (SELECT string_agg(id || ':' || kind || ':' || amount || ':' || balance_after, ','
                          ORDER BY id) FROM msgbilling.ledger),
       (SELECT count(*) FROM msgbilling.prices)
};
my $before = sql($books);
like($before, qr/^charged:\d+,failed:\d+,pending:\d+,refunded:1\|/,
	'1.0 left charged, failed, pending and refunded messages');

# The new package replaces the old one; the server restarts on it.
$node->stop;
install_package($dir{pkglibdir}, "$dir{sharedir}/extension");
$node->start;

# Before the update: no billing, no wallet call, no report through the old
# objects, with an error that says what to run; the app goes on.
for my $call (
	'SELECT * FROM msgbilling.process_all_pending()',
	'SELECT msgbilling.process_message_billing(30)',
	"SELECT msgbilling.top_up($b, 5)",
	"SELECT msgbilling.refund(4)",
	'SELECT * FROM msgbilling.stats()',
	'SELECT * FROM msgbilling.verify()')
{
	my ($rc, $out, $err) = $node->psql('postgres', $call);
	like(
		$err,
		qr/objects in this database are at version 1\.0, its library at version 1\.1.*HINT:  Run ALTER EXTENSION msgbilling UPDATE/s,
		"before the update, refused: $call");
}
sql("INSERT INTO messages (org_id, tokens_used, created_at) VALUES ($a, 5, '2024-07-01')");
is(sql('SELECT billing_status FROM messages WHERE id = 31'),
	'pending', "the app's INSERT goes through, and the message waits");
my ($rc, $out, $err) = $node->psql('postgres',
	"UPDATE messages SET billing_status = 'charged' WHERE id = 31");
like($err, qr/change only through msgbilling/, 'the guards still guard');
sql('DELETE FROM messages WHERE id = 31');

is(sql($books), $before, 'nothing moved before the update');

sql('ALTER EXTENSION msgbilling UPDATE');
is(sql('SELECT extversion FROM pg_extension WHERE extname = $$msgbilling$$'),
	'1.1', 'ALTER EXTENSION msgbilling UPDATE brings it to 1.1');
is(sql($books), $before, 'the update keeps every status, cost, balance and entry');
is(sql('SELECT string_agg(check_name, $$,$$) FROM msgbilling.verify() WHERE NOT ok'),
	'', 'verify() is clean after the update');

# Billing goes on: the pending ones, and the failed ones after a top-up.
sql("SELECT msgbilling.top_up($b, 100)");
sql('SELECT * FROM msgbilling.process_all_pending()');
is( sql(
		"SELECT string_agg(billing_status || ':' || n, ',' ORDER BY billing_status)"
		  . ' FROM (SELECT billing_status, count(*) AS n FROM messages GROUP BY 1) s'),
	'charged:29,refunded:1', 'after the update every message is billed');
is( sql(
		'SELECT count(*) FROM messages WHERE billing_status = $$charged$$'
		  . ' AND cost_credits <> round(tokens_used * CASE WHEN model = $$gpt-4o$$'
		  . ' THEN 0.05 ELSE 0.01 END, 6)'),
	'0', 'at the prices set under 1.0');
my $refunded = sql(
	"SELECT balance + (SELECT cost_credits FROM messages WHERE id = 4)"
	  . " FROM msgbilling.credits WHERE org_id = $a");
is(sql('SELECT msgbilling.refund(4)'), $refunded,
	'a charge made under 1.0 is refunded under 1.1');
is( sql(
		"SELECT msgbilling.top_up($a, 10, 'card', 'pay-1') = msgbilling.balance($a)"),
	't', 'an idempotency key used under 1.0 credits nothing again');
is(sql('SELECT string_agg(check_name, $$,$$) FROM msgbilling.verify() WHERE NOT ok'),
	'', 'verify() is clean after billing under 1.1');

# spend control, new in 1.1, on the upgraded wallets
is( sql("SELECT string_agg(DISTINCT format_type(atttypid, NULL), ',') FROM pg_attribute"
		  . " WHERE attname = 'org_id' AND attrelid IN ('msgbilling.credits'::regclass,"
		  . " 'msgbilling.holds'::regclass, 'msgbilling.budgets'::regclass,"
		  . " 'msgbilling.alerts'::regclass, 'msgbilling.alert_rules'::regclass)"),
	sql("SELECT format_type(org_type, NULL) FROM msgbilling.config"),
	'the new tables take the org type of the wallets');
my $avail = sql("SELECT msgbilling.available($a)");
is($avail, sql("SELECT balance + overdraft_limit FROM msgbilling.credits WHERE org_id = $a"),
	'available() of an upgraded wallet is its balance and overdraft');
is(sql("SELECT msgbilling.hold($a, $avail) IS NOT NULL"), 't',
	'all of it can be held');
is(sql("SELECT msgbilling.hold($a, 0.000001) IS NULL"), 't',
	'and no more');
sql("SELECT msgbilling.set_alert($a, (SELECT balance FROM msgbilling.credits WHERE org_id = $a) + 1)");
is(sql("SELECT kind FROM msgbilling.alerts WHERE org_id = $a"), 'low',
	'an alert at a threshold above its balance comes at once');

$node->stop;
done_testing();
