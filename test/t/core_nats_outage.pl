# NATS stops for 10 s during a load and comes back: nothing lost, nothing
# applied twice, each aggregate's events applied in the order they were
# emitted (the relay keeps a batch in flight while it claims the next), and
# the relay and consumer recover by themselves.
# services: core
use strict;
use warnings;
use lib $ENV{PGCLOUD_REPO} . '/test/t';
use PgcloudTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep);

my $natsdir = "$PostgreSQL::Test::Utils::tmp_check/nats_outage";
my ($port, $nats) = start_nats($natsdir);
my $node = pgcloud_node('outage', nats_settings($port));
add_test_subscriber($node);
# The order in which the handler applied the events.
$node->safe_psql('postgres', 'ALTER TABLE loadsvc.effects ADD COLUMN applied_order bigserial');

# 40 transactions of 50 events, one every 0.5 s (about 20 s of load).
my $load = $node->background_psql('postgres');
$load->query_until(qr/started/, q{
    \echo started
    DO $$
    BEGIN
        FOR t IN 1 .. 40 LOOP
            PERFORM pgcloud.emit('load.tick', 'thing', 'agg-' || (i % 10), jsonb_build_object('seq', t * 100 + i))
               FROM generate_series(1, 50) AS i;
            COMMIT;
            PERFORM pg_sleep(0.5);
        END LOOP;
    END $$;
    \echo done
});

is(wait_until($node, 'SELECT count(*) > 0 FROM loadsvc.effects', 't', 60), 't', 'events flow through NATS');
sleep(2);
stop_nats($nats);
note('nats-server stopped');
sleep(10);
my $pending = $node->safe_psql('postgres', 'SELECT count(*) FROM pgcloud.outbox WHERE published_at IS NULL');
cmp_ok($pending, '>', 0, "events wait in the outbox while NATS is down ($pending pending)");
($port, $nats) = start_nats($natsdir, $port);
note('nats-server started again');
$load->query_until(qr/done/, '');
$load->quit;

is(wait_until($node, 'SELECT count(*) FROM loadsvc.effects', '2000', 120), '2000', 'all 2000 events applied');
is($node->safe_psql('postgres', 'SELECT count(*) FROM (SELECT event_id FROM loadsvc.effects GROUP BY 1 HAVING count(*) > 1) d'),
    '0', 'none applied twice');
is($node->safe_psql('postgres', q{
    SELECT count(*) FROM (SELECT seq, lag(seq) OVER (PARTITION BY aggregate_id ORDER BY applied_order) AS before
                            FROM loadsvc.effects) e
     WHERE e.before > e.seq}),
    '0', "each aggregate's events applied in the order they were emitted");
is(wait_until($node, 'SELECT count(*) FROM pgcloud.outbox WHERE published_at IS NULL', '0', 60), '0', 'the outbox drained');
is($node->safe_psql('postgres', "SELECT count(*) FROM pgcloud.workers WHERE state = 'running' AND worker IN ('relay', 'consumer')"), '2',
    'relay and consumer are running');
my $log = slurp_file($node->logfile);
like($log, qr/connected to NATS again/, 'the workers reconnected by themselves');
unlike($log, qr/terminated by signal/, 'no worker crashed');

$node->stop('fast');
stop_nats($nats);
done_testing();
