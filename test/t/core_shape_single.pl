# The main flow of core_multicluster.pl, unchanged, in shape single of
# registry/deployments.conf: (a) one database holding every service, the embedded relay (no NATS),
# brought up by scripts/multicluster.sh from deploy/single/. The checks that
# need NATS or several clusters run where the shape has them (see there).
# services: core auth billing payments releases inventory provisioning maas admin notification terminal appruntime databases storage
# tap-lock: deploy (brings up a whole deployment on the port plan of registry/deployments.conf)
use strict;
use warnings;
# Loaded here, at compile time: their INIT blocks set the test up (too late under do).
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
$ENV{PGCLOUD_TEST_SHAPE} = 'single';
my $flow = "$ENV{PGCLOUD_REPO}/test/t/core_multicluster.pl";
do $flow;
die "$flow: $@" if $@;
