# The launcher: a database without pgcloud, or one that does not exist, gets
# one clear log line and no crash loop; installing pgcloud starts the workers
# at once; a terminated worker is started again.
# services: core
use strict;
use warnings;
use lib $ENV{PGCLOUD_REPO} . '/test/t';
use PgcloudTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep time);

my $node = PostgreSQL::Test::Cluster->new('launcher');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'pgcloud'\n"
    . "pgcloud.databases = 'plain, nosuchdb, postgres'\n"
    . "max_worker_processes = 16\n");    # 3 workers per served database, the launcher, PostgreSQL's own
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE plain');
$node->safe_psql('postgres', 'CREATE EXTENSION pgcloud CASCADE');
sleep(12);    # two and more re-check periods

my $log = slurp_file($node->logfile);
my $plain = () = $log =~ /pgcloud is not installed in database "plain"/g;
is($plain, 1, 'one log line for the database without pgcloud');
my $missing = () = $log =~ /database "nosuchdb" named in pgcloud.databases does not exist/g;
is($missing, 1, 'one log line for the database that does not exist');
unlike($log, qr/FATAL:.*database "nosuchdb" does not exist/, 'no worker tries to connect to it');
is($node->safe_psql('postgres', q{SELECT state FROM pgcloud.workers WHERE database = 'postgres' AND worker = 'relay'}),
    'running', 'the relay runs where pgcloud is installed');
is($node->safe_psql('postgres', q{SELECT state FROM pgcloud.workers WHERE database = 'plain' AND worker = 'relay'}),
    'not installed', 'the status view says why nothing runs in "plain"');

# Installing pgcloud there starts its relay at once (woken at commit).
# Timed from the commit (the re-check period is 5 s): the install itself
# takes seconds on a loaded machine.
$node->safe_psql('plain', 'CREATE EXTENSION pgcloud CASCADE');
my $t0 = time();
is(wait_until($node, q{SELECT state FROM pgcloud.workers WHERE database = 'plain' AND worker = 'relay'}, 'running', 30),
    'running', 'installing pgcloud starts the relay');
cmp_ok(time() - $t0, '<', 4, 'without waiting for the re-check period');

# A worker that is terminated is started again by the launcher.
my $pid = $node->safe_psql('postgres', q{SELECT pid FROM pgcloud.workers WHERE database = 'postgres' AND worker = 'relay'});
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
is(wait_until($node, qq{SELECT pid IS NOT NULL AND pid <> $pid FROM pgcloud.workers WHERE database = 'postgres' AND worker = 'relay'}, 't', 30),
    't', 'a terminated relay is started again');

$node->stop('fast');
done_testing();
