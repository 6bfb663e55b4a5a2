# The main flow of core_multicluster.pl, unchanged, in shape per-service of
# registry/deployments.conf: (b) one cluster, one database per service, joined
# only by the 3-node NATS JetStream cluster, brought up by
# scripts/multicluster.sh from deploy/per-service/ (deploy/init-databases.sql's
# layout). With it, the shape-(b) statement of issue 14: each service's
# PostgREST role logs in to its own database only, and no worker, service or
# API role logs in anywhere (the attacks are core_deploy_isolation.pl's). The
# fault drills (NATS node killed, quorum lost, a cluster stopped) are shape
# (c)'s and run in core_multicluster.pl only.
# services: core auth billing payments releases inventory provisioning maas admin notification terminal appruntime databases storage
# tap-lock: deploy (brings up a whole deployment on the port plan of registry/deployments.conf)
use strict;
use warnings;
# Loaded here, at compile time: their INIT blocks set the test up (too late under do).
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
$ENV{PGCLOUD_TEST_SHAPE} = 'per-service';
my $flow = "$ENV{PGCLOUD_REPO}/test/t/core_multicluster.pl";
do $flow;
die "$flow: $@" if $@;
