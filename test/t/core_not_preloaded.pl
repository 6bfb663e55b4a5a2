# Without shared_preload_libraries the extension installs, and the rate
# limiter says clearly that its shared memory does not exist.
# services: core
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('nopreload');
$node->init;
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pgcloud CASCADE');

my ($ret, $stdout, $stderr) = $node->psql('postgres', 'SELECT pgcloud.pre_request()');
isnt($ret, 0, 'pre_request() fails');
like($stderr, qr/pgcloud rate limiter is not available/, 'it says the limiter is not available');
like($stderr, qr/not in shared_preload_libraries/, 'it says why');
like($stderr, qr/HINT:.*shared_preload_libraries.*restart/, 'it says what to do');

($ret, $stdout, $stderr) = $node->psql('postgres', 'SELECT * FROM pgcloud.rate_limit_status()');
like($stderr, qr/not in shared_preload_libraries/, 'rate_limit_status() says the same');

# Everything else works without preloading.
is($node->safe_psql('postgres', "SELECT pgcloud.policy('core.rate_limit_burst', NULL::int)"), '40', 'policy works');

# After adding it to shared_preload_libraries and restarting, it works.
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'pgcloud'\n");
$node->restart;
is($node->psql('postgres', 'SELECT pgcloud.pre_request()'), 0, 'pre_request() works once preloaded');

$node->stop;
done_testing();
