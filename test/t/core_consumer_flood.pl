# The NATS consumer under an event flood with several subscribing services in
# one database (one durable each): nats-server is killed -9 and restarted
# twice while thousands of events flow, the consumer is sent SIGHUP and latch
# wake-ups (pgcloud.wake_workers()) throughout, and two services are installed
# mid-flow (the subscriber list changes while pull requests are open). Every
# event is applied exactly once by every subscriber, in order per aggregate,
# and no worker crashes (a consumer once aborted with "double free or
# corruption" in such a flood, and once crashed on a list change mid-flow).
# services: core
use strict;
use warnings;
use lib $ENV{PGCLOUD_REPO} . '/test/t';
use PgcloudTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep);

my @subscribers = qw(floodsvc_a floodsvc_b floodsvc_c floodsvc_d);
my $batches = 60;          # transactions ...
my $per_batch = 50;        # ... of this many events: 3000 events
my $total = $batches * $per_batch;

my $natsdir = "$PostgreSQL::Test::Utils::tmp_check/consumer_flood";
my ($port, $nats) = start_nats($natsdir);
my $node = pgcloud_node('flood', nats_settings($port));

# Several subscribing services in database postgres, each with its own
# durable, each recording what it applies (database_name is only the
# database a service would have of its own; all are installed here).
sub add_service_sql {
    my ($svc) = @_;
    return qq{
        INSERT INTO pgcloud.services (name, schema_name, database_name, layer, route_prefix, publishes, subscribes, depends_on)
        VALUES ('$svc', '$svc', '$svc', 'domain', '/$svc', '{}', '{load.*}', '{}');
        INSERT INTO pgcloud.subscriptions VALUES ('$svc', 'load.*');
        CREATE SCHEMA $svc;
        CREATE TABLE $svc.effects (event_id uuid, aggregate_id text, seq int, applied_at timestamptz DEFAULT clock_timestamp());
        CREATE FUNCTION $svc.on_load_tick(event pgcloud.event_envelope) RETURNS void LANGUAGE plpgsql
        SECURITY DEFINER SET search_path = pg_catalog AS \$\$
        BEGIN
            INSERT INTO $svc.effects (event_id, aggregate_id, seq)
            VALUES (event.event_id, event.aggregate_id, (event.payload ->> 'seq')::int);
        END \$\$;
        GRANT USAGE ON SCHEMA $svc TO pgcloud_svc_core;
        SELECT pgcloud.wake_workers();
    };
}
sub add_service { $node->safe_psql('postgres', add_service_sql($_[0])) }
add_service($_) for @subscribers;

# The flood: $batches transactions of $per_batch events over 20 aggregates,
# a little pause between them so that it lasts through the NATS restarts.
my $load = $node->background_psql('postgres');
$load->query_until(qr/started/, qq{
    \\echo started
    DO \$\$
    BEGIN
        FOR t IN 1 .. $batches LOOP
            PERFORM pgcloud.emit('load.tick', 'thing', 'agg-' || (i % 20), jsonb_build_object('seq', t * 1000 + i))
               FROM generate_series(1, $per_batch) AS i;
            COMMIT;
            PERFORM pg_sleep(0.25);
        END LOOP;
    END \$\$;
    \\echo done
});

my $first = $subscribers[0];
is(wait_until($node, "SELECT count(*) > 0 FROM $first.effects", 't', 120), 't', 'events flow through NATS');

# Wake-ups and reloads while events flow, NATS killed -9 twice in between.
# The subscriber list changes twice mid-flow too (a service installed while
# the consumer's pull requests are open): each late durable starts from the
# stream's first event and applies all of them once.
for my $round (1 .. 2) {
    for my $i (1 .. 8) {
        $node->safe_psql('postgres', 'SELECT pgcloud.wake_workers()');
        add_service("floodsvc_late$round") if $i == 4;
        $node->reload;
        sleep(0.25);
    }
    stop_nats($nats);
    note("nats-server killed (round $round)");
    for (1 .. 4) {
        $node->safe_psql('postgres', 'SELECT pgcloud.wake_workers()');
        $node->reload;
        sleep(0.5);
    }
    ($port, $nats) = start_nats($natsdir, $port);
    note("nats-server started again (round $round)");
}
for (1 .. 8) {
    $node->safe_psql('postgres', 'SELECT pgcloud.wake_workers()');
    $node->reload;
    sleep(0.25);
}
$load->query_until(qr/done/, '');
$load->quit;

push @subscribers, 'floodsvc_late1', 'floodsvc_late2';
for my $svc (@subscribers) {
    is(wait_until($node, "SELECT count(DISTINCT event_id) FROM $svc.effects", "$total", 240), "$total",
        "$svc applied all $total events");
    is($node->safe_psql('postgres', "SELECT count(*) FROM $svc.effects"), "$total", "$svc applied none twice");
    is($node->safe_psql('postgres', qq{
        SELECT count(*) FROM (
            SELECT seq < lag(seq) OVER (PARTITION BY aggregate_id ORDER BY applied_at, seq) AS back
              FROM $svc.effects) x WHERE back}), '0', "$svc applied each aggregate's events in order");
}
is($node->safe_psql('postgres', "SELECT count(*) FROM pgcloud.workers WHERE state = 'running' AND worker = 'consumer'"), '1',
    'the consumer is running');
my $log = slurp_file($node->logfile);
like($log, qr/connected to NATS again/, 'the consumer reconnected by itself');
unlike($log, qr/terminated by signal|double free|malloc\(\)|corrupted/, 'no worker crashed');

# A service installed without a wake-up (one that reached no worker: sent
# before the consumer took its place, or its latch reset by a wait inside a
# round) still gets its durable: the consumer reads its subscribers again at
# least every 5 s, so the service's first event is applied.
(my $quiet = (add_service_sql('floodsvc_quiet'))) =~ s/SELECT pgcloud\.wake_workers\(\);//;
$node->safe_psql('postgres', $quiet);
$node->safe_psql('postgres', q{SELECT pgcloud.emit('load.tick', 'thing', 'quiet', '{"seq": 1}')});
is(wait_until($node, q{SELECT count(*) FROM floodsvc_quiet.effects WHERE aggregate_id = 'quiet'}, '1', 60), '1',
    'a service added with no wake-up is subscribed and applies its first event');

$node->stop('fast');
stop_nats($nats);
done_testing();
