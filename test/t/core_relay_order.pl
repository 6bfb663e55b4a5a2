# The NATS relay keeps one batch in flight while it claims and writes the
# next. An event larger than the stream takes (its max_msg_size, which the
# relay reads every second and at once after a refusal) is not sent: it and
# every later event of its aggregate stay in the outbox, in whichever batch
# they were claimed, and none of them reaches the stream ahead of it; other
# aggregates' events go on. Once the stream takes it, the aggregate's events
# follow in order, each exactly once.
# services: core
use strict;
use warnings;
use lib $ENV{PGCLOUD_REPO} . '/test/t';
use PgcloudTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep);

my $natsdir = "$PostgreSQL::Test::Utils::tmp_check/nats_order";
my ($port, $nats) = start_nats($natsdir);
my $node = pgcloud_node('order', nats_settings($port));
add_test_subscriber($node);
$node->safe_psql('postgres', 'ALTER TABLE loadsvc.effects ADD COLUMN applied_order bigserial');

$node->safe_psql('postgres', q{SELECT pgcloud.emit('load.tick', 'thing', 'warm', '{"seq": 0}')});
is(wait_until($node, 'SELECT count(*) FROM loadsvc.effects', '1', 60), '1', 'events flow through NATS');

# The stream refuses messages over 1,000 bytes from now on.
{
    local $ENV{NATSTOOL_MAX_MSG_SIZE} = 1000;
    natstool('stream', nats_url($port, 'operator'), 'PGCLOUD_EVENTS', "'pgcloud.>'");
}
sleep(1.5);    # older than the relay's reading of the limits

# 20 aggregates, 30 events each, in 30 transactions of 20 events (one per
# aggregate), so an aggregate's events are spread over many relay batches.
# The 3rd event of agg-1..agg-4 is too large for the stream.
my $load = $node->background_psql('postgres');
$load->query_until(qr/started/, q{
    \echo started
    DO $$
    BEGIN
        FOR t IN 1 .. 30 LOOP
            PERFORM pgcloud.emit('load.tick', 'thing', 'agg-' || a,
                                 jsonb_build_object('seq', t, 'pad', CASE WHEN t = 3 AND a <= 4 THEN repeat('x', 2000) END))
               FROM generate_series(1, 20) AS a;
            COMMIT;
            PERFORM pg_sleep(0.05);
        END LOOP;
    END $$;
    \echo done
});
$load->query_until(qr/done/, '');
$load->quit;

# The 16 other aggregates get through whole: 480 events, plus the first two of each held one.
is(wait_until($node, q{SELECT count(*) FROM loadsvc.effects WHERE aggregate_id <> 'warm'}, '488', 120), '488',
    "the other aggregates' events and the held ones' first two are applied");
sleep(3);
is($node->safe_psql('postgres', q{
    SELECT count(*) FROM pgcloud.outbox
     WHERE aggregate_id IN ('agg-1', 'agg-2', 'agg-3', 'agg-4') AND (payload ->> 'seq')::int >= 3
       AND published_at IS NOT NULL}),
    '0', 'nothing from the refused event on is marked published for its aggregate');
my $in_stream = natstool('read', nats_url($port, 'operator'), 'PGCLOUD_EVENTS', "'pgcloud.load.>'", 1000);
my %seen;
$seen{$1}++ while $in_stream =~ /\\"aggregate_id\\":\s*\\"(agg-[1-4])\\"/g;
is(join(',', map { $seen{"agg-$_"} // 0 } 1 .. 4), '2,2,2,2',
    'the stream holds only the first two events of each held aggregate');
is($node->safe_psql('postgres', q{SELECT count(*) FROM pgcloud.outbox WHERE published_at IS NULL}), '112',
    'the refused event and the 27 after it stay pending, for each of the 4 aggregates');

# The stream takes large messages again: the held events follow, in order.
{
    local $ENV{NATSTOOL_MAX_MSG_SIZE} = -1;
    natstool('stream', nats_url($port, 'operator'), 'PGCLOUD_EVENTS', "'pgcloud.>'");
}
is(wait_until($node, q{SELECT count(*) FROM loadsvc.effects WHERE aggregate_id <> 'warm'}, '600', 120), '600',
    'every event is applied once the stream takes them');
is($node->safe_psql('postgres', 'SELECT count(*) FROM (SELECT event_id FROM loadsvc.effects GROUP BY 1 HAVING count(*) > 1) d'),
    '0', 'none applied twice');
is($node->safe_psql('postgres', q{
    SELECT count(*) FROM (SELECT seq, lag(seq) OVER (PARTITION BY aggregate_id ORDER BY applied_order) AS before
                            FROM loadsvc.effects) e
     WHERE e.before IS DISTINCT FROM e.seq - 1 AND e.before IS NOT NULL}),
    '0', "each aggregate's events applied in the order they were emitted, none skipped");
is(wait_until($node, 'SELECT count(*) FROM pgcloud.outbox WHERE published_at IS NULL', '0', 60), '0', 'the outbox drained');
unlike(slurp_file($node->logfile), qr/terminated by signal/, 'no worker crashed');

$node->stop('fast');
stop_nats($nats);
done_testing();
