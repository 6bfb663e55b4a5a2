# Database-per-service: deploy/init-databases.sql (generated from the
# registry) creates one database per service with its extension; roles are
# cluster-wide, so a second database installs cleanly; dropping pgcloud_core
# leaves nothing of ours behind. With pgcloud.databases naming every service
# database, each one's scheduler runs that service's jobs, there.
# services: core
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $repo = $ENV{PGCLOUD_REPO} or die 'PGCLOUD_REPO is not set';
my $node = PostgreSQL::Test::Cluster->new('databases');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'pgcloud'\n");
$node->start;

# Two databases with everything, one after the other.
$node->safe_psql('postgres', 'CREATE DATABASE one');
$node->safe_psql('postgres', 'CREATE DATABASE two');
$node->safe_psql('one', 'CREATE EXTENSION pgcloud CASCADE');
$node->safe_psql('two', 'CREATE EXTENSION pgcloud CASCADE');
is($node->safe_psql('two', "SELECT count(*) FROM pg_extension WHERE extname LIKE 'pgcloud%'"), '15',
    'a second database installs cleanly');

# One database per service from the generated script.
my ($ret, $out, $err) = $node->psql('postgres', undef,
    extra_params => ['-f', "$repo/deploy/init-databases.sql"]);
is($ret, 0, 'deploy/init-databases.sql runs') or diag($err);
my @services = split /\n/, $node->safe_psql('one', 'SELECT name || \' \' || database_name FROM pgcloud.services ORDER BY name');
is(scalar @services, 13, '13 services in the registry');
for my $line (@services) {
    my ($svc, $db) = split / /, $line;
    is($node->safe_psql($db, "SELECT extname FROM pg_extension WHERE extname LIKE 'pgcloud\\_%' AND extname <> 'pgcloud_core'"),
        "pgcloud_$svc", "$db holds pgcloud_$svc only");
}
# Each service's jobs run in its own database.
my $dbs = join(',', map { (split / /)[1] } @services);
$node->append_conf('postgresql.conf', "pgcloud.databases = '$dbs'\nmax_worker_processes = 64\n");
$node->restart;
for my $db ('pgcloud_maas', 'pgcloud_billing', 'pgcloud_auth') {
    is($node->poll_query_until($db, q{SELECT bool_and(runs > 0 AND last_status = 'succeeded') FROM pgcloud.jobs}), 1,
        "$db: its scheduler runs its jobs");
}
is($node->safe_psql('pgcloud_maas', q{SELECT string_agg(job, ',' ORDER BY job) FROM pgcloud.jobs WHERE service <> 'core'}),
    'maas.poll', 'pgcloud_maas runs the MAAS poller, and no other service\'s job');
is($node->safe_psql('pgcloud_billing', q{SELECT string_agg(job, ',' ORDER BY job) FROM pgcloud.jobs WHERE service <> 'core'}),
    'billing.accrue', 'pgcloud_billing runs the accrual');
is($node->safe_psql('pgcloud_inventory', q{SELECT count(*) FROM pgcloud.jobs WHERE service = 'core'}), '6',
    'every database prunes its own core tables');

is($node->safe_psql('postgres', "SELECT has_database_privilege('pgcloud_authenticator_auth', 'pgcloud_auth', 'CONNECT')"),
    't', "the auth service's PostgREST role may connect to its database");
is($node->safe_psql('postgres', "SELECT has_database_privilege('pgcloud_authenticator_billing', 'pgcloud_auth', 'CONNECT')"),
    'f', "billing's may not");
is($node->safe_psql('postgres', "SELECT has_database_privilege('pgcloud_authenticator', 'pgcloud_auth', 'CONNECT')"),
    'f', 'nor may the shared authenticator');
is($node->safe_psql('postgres', "SELECT has_database_privilege('pgcloud_anon', 'pgcloud_auth', 'CONNECT')"),
    'f', 'PUBLIC may not');

# A service's policies are set where it runs: elsewhere they would do nothing.
my ($prc, $pout, $perr) = $node->psql('pgcloud_billing', q{SELECT pgcloud.set_policy('provisioning.max_live_allocations_per_user', '3')});
isnt($prc, 0, "a policy of provisioning is refused in billing's database");
like($perr, qr/service \\?"provisioning\\?" is not installed in this database; set its policies in database pgcloud_provisioning/,
    '... naming the database where provisioning runs');
is($node->safe_psql('pgcloud_billing', q{SELECT count(*) FROM pgcloud.policy_values WHERE key LIKE 'provisioning.%'}), '0',
    '... and nothing is stored');
is($node->safe_psql('pgcloud_provisioning', q{SELECT pgcloud.set_policy('provisioning.max_live_allocations_per_user', '3') ->> 'value'}), '3',
    'in its own database it is set');
is($node->safe_psql('pgcloud_billing', q{SELECT pgcloud.set_policy('core.max_delivery_attempts', '6') ->> 'value'}), '6',
    'core policies are set in every database');

# Drop leaves nothing of ours behind.
$node->safe_psql('one', 'DROP EXTENSION pgcloud_core CASCADE');
is($node->safe_psql('one', q{
    SELECT count(*) FROM pg_namespace WHERE nspname IN ('pgcloud', 'api', 'auth', 'billing', 'payments')
    UNION ALL SELECT count(*) FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner WHERE r.rolname LIKE 'pgcloud%'
    UNION ALL SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner WHERE r.rolname LIKE 'pgcloud%'
    UNION ALL SELECT count(*) FROM pg_type t JOIN pg_roles r ON r.oid = t.typowner WHERE r.rolname LIKE 'pgcloud%'
}), "0\n0\n0\n0", 'DROP EXTENSION pgcloud_core CASCADE leaves no object behind');
is($node->safe_psql('two', "SELECT count(*) FROM pg_extension WHERE extname LIKE 'pgcloud%'"), '15',
    'the other database is untouched');

$node->stop;
done_testing();
