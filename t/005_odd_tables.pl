# The billing worker over the tables real apps have, on real clusters: a
# message without an org (1.0 crashed the server at every look, 108 times
# in 30 s); a table owner, no superuser, whose trigger tries to become one
# when the worker bills its table (the server must not restart, the other
# orgs must be billed, and the owner must stay what it was); a table in
# monthly partitions, in a database of its own; and a chatbot's, of three
# token columns and messages that are not billable.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $node = PostgreSQL::Test::Cluster->new('odd');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'msgbilling'
msgbilling.database = 'postgres'
msgbilling.naptime = '200ms'
restart_after_crash = on
});
$node->start;

sub sql
{
	my ($query) = @_;
	return $node->safe_psql('postgres', $query);
}

my $started = sql('SELECT pg_postmaster_start_time()');
my $worker = sql(
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'msgbilling worker'"
	  . " AND datname = 'postgres'");

# The guide's shape: uuid orgs without NOT NULL; the table belongs to the
# app's migration role, whose trigger tries to make it a superuser.
sql(q{
CREATE EXTENSION msgbilling;
CREATE ROLE app_owner LOGIN;
GRANT CREATE ON SCHEMA public TO app_owner;
SET ROLE app_owner;
CREATE TABLE messages (
    id bigserial PRIMARY KEY,
    org_id uuid,
    tokens_used integer,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE escalations (run_as text, outcome text);
CREATE FUNCTION escalate() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    outcome text := 'succeeded';
BEGIN
    BEGIN
        EXECUTE 'ALTER ROLE app_owner SUPERUSER';
    EXCEPTION WHEN OTHERS THEN
        outcome := SQLSTATE;
    END;
    INSERT INTO public.escalations VALUES (current_user, outcome);
    RETURN NEW;
END;
$$;
RESET ROLE;
SELECT msgbilling.attach('messages', created_column => 'created_at');
SET ROLE app_owner;
CREATE TRIGGER escalate AFTER UPDATE ON messages
    FOR EACH ROW EXECUTE FUNCTION escalate();
RESET ROLE;
SELECT msgbilling.set_price(NULL, 0.001);
SELECT msgbilling.top_up('aaaaaaaa-0000-0000-0000-000000000000', 100);
SELECT msgbilling.top_up('bbbbbbbb-0000-0000-0000-000000000000', 100);
});

# One committed message without an org among the others, then more of
# both kinds while the worker runs for a while.
sql(q{
SET ROLE app_owner;
INSERT INTO messages (org_id, tokens_used) VALUES
    ('aaaaaaaa-0000-0000-0000-000000000000', 100),
    (NULL, 100),
    ('bbbbbbbb-0000-0000-0000-000000000000', 100);
});
for my $round (1 .. 10)
{
	sql(q{
SET ROLE app_owner;
INSERT INTO messages (org_id, tokens_used)
SELECT CASE WHEN i % 3 = 0 THEN NULL
            WHEN i % 3 = 1 THEN 'aaaaaaaa-0000-0000-0000-000000000000'::uuid
            ELSE 'bbbbbbbb-0000-0000-0000-000000000000'::uuid END, 10
  FROM generate_series(1, 30) i;
});
	usleep(300_000);
}
$node->poll_query_until('postgres', 'SELECT msgbilling.backlog() = 0')
  or die 'the worker did not bill the backlog';

is(sql('SELECT pg_postmaster_start_time()'), $started,
	'the server never restarted');
is( sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'msgbilling worker'"
		  . " AND datname = 'postgres'"),
	$worker, 'the worker is the one that started: it never crashed');
is(sql(q{SELECT count(*) FROM messages WHERE org_id IS NULL
          AND billing_status = 'failed' AND billing_error = 'no_org'}),
	'101', 'every message without an org failed with no_org');
is(sql(q{SELECT count(*) FROM messages WHERE org_id IS NOT NULL
          AND billing_status = 'charged'}),
	'202', 'every message of the two orgs was charged');
is( sql(q{SELECT string_agg(check_name, ', ') FROM msgbilling.verify() WHERE NOT ok}),
	'', 'verify() is clean');
unlike(slurp_file($node->logfile), qr/terminated by signal|server process .* was terminated/,
	'no backend died');

# The owner's trigger ran, as the owner, at every message the worker
# billed, and was refused each time it tried to escalate.
is(sql(q{SELECT rolsuper FROM pg_roles WHERE rolname = 'app_owner'}),
	'f', 'the table owner is no superuser');
is(sql(q{SELECT run_as || ' ' || outcome || ' ' || count(*)
           FROM escalations GROUP BY run_as, outcome}),
	'app_owner 42501 303',
	'its trigger ran as the owner for every billed message, refused each time');

# The same through the app's own trigger, by the app's role: an INSERT of
# a message without an org goes through, and is failed at once.
sql(q{
CREATE ROLE app LOGIN;
GRANT INSERT, SELECT ON messages TO app;
GRANT USAGE ON SEQUENCE messages_id_seq TO app;
CREATE TRIGGER bill_each AFTER INSERT ON messages
    FOR EACH ROW EXECUTE FUNCTION msgbilling.bill_on_insert();
});
sql(q{
SET ROLE app;
INSERT INTO messages (org_id, tokens_used) VALUES (NULL, 1);
});
is( sql(q{SELECT billing_status || ' ' || billing_error FROM messages
           ORDER BY id DESC LIMIT 1}),
	'failed no_org', "the app's INSERT of an org-less message went through, failed");
is(sql('SELECT pg_postmaster_start_time()'), $started,
	'the server still never restarted');
is(sql(q{SELECT rolsuper FROM pg_roles WHERE rolname = 'app_owner'}),
	'f', 'and the owner is still no superuser');

# Monthly partitions, PRIMARY KEY (id, created_at), two orgs at prices a
# million apart, a partition created while the worker runs: every message
# is charged its own tokens at its own price, whatever partition it is in.
# (A worker is started for each database named when the server starts.)
$node->safe_psql('postgres', 'CREATE DATABASE parts');
$node->safe_psql('postgres', "ALTER SYSTEM SET msgbilling.database = 'postgres,parts'");
$node->restart;
$node->safe_psql('parts', q{
CREATE EXTENSION msgbilling;
CREATE TABLE messages (
    id bigserial,
    org_id bigint NOT NULL,
    tokens_used integer,
    model text,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE messages_2025_01 PARTITION OF messages
    FOR VALUES FROM ('2025-01-01 00:00+00') TO ('2025-02-01 00:00+00');
CREATE TABLE messages_2025_02 PARTITION OF messages
    FOR VALUES FROM ('2025-02-01 00:00+00') TO ('2025-03-01 00:00+00');
SELECT msgbilling.attach('messages', model_column => 'model',
                         created_column => 'created_at');
SELECT msgbilling.set_price(NULL, 0.000001, '2024-01-01');
SELECT msgbilling.set_price('big', 1, '2024-01-01');
SELECT msgbilling.top_up(1, 10);
SELECT msgbilling.top_up(2, 10000000);
});
my $add = q{
INSERT INTO messages (org_id, tokens_used, model, created_at)
SELECT 1 + i % 2, i, CASE WHEN i % 2 = 1 THEN 'big' END,
       '%s-05 00:00+00'::timestamptz + i * interval '1 second'
  FROM generate_series(1, 500) i;
};
$node->safe_psql('parts', sprintf($add, '2025-01') . sprintf($add, '2025-02'));
$node->safe_psql('parts', q{
CREATE TABLE messages_2025_03 PARTITION OF messages
    FOR VALUES FROM ('2025-03-01 00:00+00') TO ('2025-04-01 00:00+00');
} . sprintf($add, '2025-03'));
$node->poll_query_until('parts', 'SELECT msgbilling.backlog() = 0')
  or die 'the worker did not bill the partitioned table';
is( $node->safe_psql('parts', q{
SELECT count(*) FILTER (WHERE billing_status = 'charged'
                          AND cost_credits = round(tokens_used *
                              CASE model WHEN 'big' THEN 1 ELSE 0.000001 END, 6)),
       count(*)
  FROM messages}),
	'1500|1500', 'the worker charged every partitioned message its own cost');
is( $node->safe_psql('parts', q{
SELECT string_agg(org_id || ' ' || balance, ', ' ORDER BY org_id) FROM msgbilling.credits}),
	'1 9.811750, 2 9812500.000000',
	'each org paid for its own messages');
is( $node->safe_psql('parts',
		q{SELECT string_agg(check_name, ', ') FROM msgbilling.verify() WHERE NOT ok}),
	'', 'verify() is clean on the partitioned table');

# A chatbot's table: three token columns at a tariff with a fee, a minimum
# and rounding up, and the users' messages not billable.  The worker bills
# the replies at the formula's cost and the rest as no_charge, in batches
# of 100 that are often all no_charge.
$node->safe_psql('postgres', 'CREATE DATABASE chat');
$node->safe_psql('postgres',
	"ALTER SYSTEM SET msgbilling.database = 'postgres,parts,chat'");
$node->safe_psql('postgres', "ALTER SYSTEM SET msgbilling.batch_size = 100");
$node->restart;
$node->safe_psql('chat', q{
CREATE EXTENSION msgbilling;
CREATE TABLE messages (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id bigint NOT NULL,
    direction text NOT NULL,
    input_tokens integer, output_tokens integer, cached_tokens integer,
    billable boolean GENERATED ALWAYS AS (direction = 'outbound') STORED,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
SELECT msgbilling.attach('messages', tokens_column => NULL, created_column => 'created_at',
                         input_tokens_column => 'input_tokens',
                         output_tokens_column => 'output_tokens',
                         cached_tokens_column => 'cached_tokens',
                         billable_column => 'billable');
SELECT msgbilling.set_tariff(NULL, 0.000003, 0.000015, 0.0000003, per_message => 0.001,
                             minimum_charge => 0.002, increment => 0.0001, rounding => 'up',
                             effective_from => '2024-01-01');
SELECT msgbilling.top_up(o, 100) FROM generate_series(1, 3) o;
INSERT INTO messages (org_id, direction, input_tokens, output_tokens, cached_tokens)
SELECT 1 + i % 3, CASE WHEN i / 150 % 2 = 0 THEN 'inbound' ELSE 'outbound' END,
       i * 7, i * 3, i % 5 * 100
  FROM generate_series(1, 600) i;
});
$node->poll_query_until('chat', 'SELECT msgbilling.backlog() = 0')
  or die 'the worker did not bill the chat table';
is( $node->safe_psql('chat', q{
SELECT count(*) FILTER (WHERE direction = 'outbound' AND billing_status = 'charged'
                          AND cost_credits = ceil(greatest(0.001 + input_tokens * 0.000003
                              + output_tokens * 0.000015 + cached_tokens * 0.0000003, 0.002)
                              / 0.0001) * 0.0001),
       count(*) FILTER (WHERE direction = 'inbound' AND billing_status = 'no_charge'
                          AND cost_credits = 0 AND charged_at IS NOT NULL)
  FROM messages}),
	'300|300', 'the worker charged each reply the tariff and the rest nothing');
is( $node->safe_psql('chat', q{SELECT charged, no_charge FROM msgbilling.stats()}),
	'300|300', 'stats() counts both');
is( $node->safe_psql('chat',
		q{SELECT string_agg(check_name, ', ') FROM msgbilling.verify() WHERE NOT ok}),
	'', 'verify() is clean on the chat table');

$node->stop;
done_testing();
