# Every SQL block of README.md and docs/*.md runs: the ```sql fences of a
# file, in order, in a fresh database for that file, one assertion each, so
# that a renamed function or a changed signature breaks this test and not a
# reader's first try.  A block may build on the blocks before it in its
# file, as a reader following the text does.
#
# What a file takes as given (the app's messages table, a role, a table of
# the old billing system), and the step between two blocks that show two
# ways of doing one thing, is written in the file itself, in HTML comments
# that readers do not see and that name this test; each runs where it
# stands, as an assertion of its own:
#
#   <!-- t/008_docs.pl runs this first:
#   CREATE TABLE messages (...);
#   -->
#
# Other fences (```sh, and plain ``` for server settings, log lines, the
# guide's own crontab) are not SQL and are not run.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# Nothing in the docs' SQL needs msgbilling preloaded (without it there is
# no worker, and worker_status() is empty), so it is not.  pg_cron must be
# preloaded for CREATE EXTENSION pg_cron, and serves one database: every
# file's database has that name.
my $db = 'docs';
my $node = PostgreSQL::Test::Cluster->new('docs');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'pg_cron'\ncron.database_name = '$db'\n");
$node->start;

# The file's steps, in order: [name, sql].  Inside list items, fences and
# comments are indented, and their lines lose that indentation.
sub steps
{
	my ($file) = @_;
	my $text = slurp_file($file);
	my ($blocks, $setups, @steps) = (0, 0);
	while ($text =~ m{^([ \t]*)(?:<!--\s*t/008_docs\.pl[^\n]*:\n(.*?)^\1-->
					  |```(\w*)[^\n]*\n(.*?)^\1```)}msgx)
	{
		my ($indent, $setup, $lang, $body) = ($1, $2, $3, $4);
		if (defined $setup)
		{
			$setups++;
			push @steps, [ "$file setup $setups", $setup ];
		}
		elsif ($lang eq 'sql')
		{
			$blocks++;
			$body =~ s/^\Q$indent\E//mg;
			push @steps, [ "$file block $blocks", $body ];
		}
	}
	return @steps;
}

my @files = ('README.md', sort glob('docs/*.md'));
my $blocks = 0;
for my $file (@files)
{
	my @steps = steps($file);
	next unless @steps;
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	for my $step (@steps)
	{
		my ($name, $sql) = @$step;
		my ($rc, $out, $err) = $node->psql($db, $sql);
		is($rc, 0, "$name runs") or diag("$sql\n$err");
		$blocks++ if $name =~ / block /;
	}

	# the next file starts from nothing: no database, no roles of this one
	$node->safe_psql('postgres', "DROP DATABASE $db WITH (FORCE)");
	my $roles = $node->safe_psql('postgres',
		"SELECT string_agg(quote_ident(rolname), ', ') FROM pg_roles"
		  . " WHERE oid <> 10 AND rolname !~ '^pg_'");
	$node->safe_psql('postgres', "DROP ROLE $roles") if $roles ne '';
}
# a test that found no block would pass having run nothing
cmp_ok($blocks, '>', 0, 'the docs have SQL blocks');

$node->stop;
done_testing();
