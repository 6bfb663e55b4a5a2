# kill -9 of the postmaster while 10,000 events are being relayed: after a
# restart every event reached its subscriber exactly once — embedded mode
# and NATS JetStream mode.
# services: core
use strict;
use warnings;
use lib $ENV{PGCLOUD_REPO} . '/test/t';
use PgcloudTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $N = 10000;

sub crash_and_check {
    my ($node, $mode) = @_;
    add_test_subscriber($node);
    # 10,000 events over 100 aggregates, committed in 10 transactions.
    for my $t (1 .. 10) {
        $node->safe_psql('postgres', qq{
            SELECT count(pgcloud.emit('load.tick', 'thing', 'agg-' || (i % 100), jsonb_build_object('seq', i)))
              FROM generate_series(($t - 1) * 1000 + 1, $t * 1000) AS i});
    }
    # Crash in the middle of the relaying.
    my $seen = wait_until($node, 'SELECT count(*) > 0 FROM loadsvc.effects', 't', 60);
    is($seen, 't', "$mode: relaying started");
    my $before = $node->safe_psql('postgres', 'SELECT count(*) FROM loadsvc.effects');
    $node->kill9;
    restart_after_crash($node);
    note("$mode: $before of $N applied at the crash");
    my $applied = wait_until($node, 'SELECT count(*) FROM loadsvc.effects', $N, 180);
    is($applied, $N, "$mode: every event applied after the restart");
    is($node->safe_psql('postgres', 'SELECT count(*) FROM (SELECT event_id FROM loadsvc.effects GROUP BY 1 HAVING count(*) > 1) d'),
        '0', "$mode: no event applied twice");
    is($node->safe_psql('postgres', "SELECT count(*) FROM pgcloud.inbox WHERE subscriber = 'loadsvc'"),
        $N, "$mode: inbox count = emitted count");
    is(wait_until($node, 'SELECT count(*) FROM pgcloud.outbox WHERE published_at IS NULL', '0', 60), '0',
        "$mode: nothing left in the outbox");
    # Per-aggregate order: within each aggregate, seq grows with applied order.
    is($node->safe_psql('postgres', q{
        SELECT count(*) FROM (
            SELECT seq < lag(seq) OVER (PARTITION BY aggregate_id ORDER BY applied_at, seq) AS backwards
              FROM loadsvc.effects) x WHERE backwards}), '0', "$mode: per-aggregate order kept");
}

# Embedded mode.
my $node = pgcloud_node('embedded');
crash_and_check($node, 'embedded');
$node->stop;

# NATS mode.
my $natsdir = "$PostgreSQL::Test::Utils::tmp_check/nats_crash";
my ($port, $nats) = start_nats($natsdir);
my $nnode = pgcloud_node('nats', nats_settings($port));
crash_and_check($nnode, 'NATS');
is(natstool('count', nats_url($port), 'PGCLOUD_EVENTS') + 0, $N,
    'NATS: the stream holds each event once (Nats-Msg-Id deduplication)');
$nnode->stop;
stop_nats($nats);
done_testing();
