# A poison event lands in pgcloud.dead_letters after N tries while the
# others keep flowing (embedded and NATS modes); SIGTERM stops the workers
# cleanly and pg_ctl stop -m fast does not hang.
# services: core
use strict;
use warnings;
use lib $ENV{PGCLOUD_REPO} . '/test/t';
use PgcloudTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

sub poison {
    my ($node, $mode) = @_;
    add_test_subscriber($node);
    $node->safe_psql('postgres', q{
        SELECT pgcloud.set_policy('core.max_delivery_attempts', '3');
        SELECT pgcloud.set_policy('core.delivery_retry_base_ms', '50');
        SELECT pgcloud.emit('load.tick', 'thing', 'x', '{"seq": 1}');
        SELECT pgcloud.emit('bad.event', 'thing', 'p', '{"poison": true}');
        SELECT pgcloud.emit('load.tick', 'thing', 'y', '{"seq": 2}');
    });
    is(wait_until($node, "SELECT count(*) FROM pgcloud.dead_letters WHERE subscriber = 'loadsvc'", '1', 60), '1',
        "$mode: the poison event is dead-lettered");
    is($node->safe_psql('postgres', "SELECT attempts >= 3 AND error LIKE '%poison event%' FROM pgcloud.dead_letters"),
        't', "$mode: with its attempts and error");
    is(wait_until($node, 'SELECT count(*) FROM loadsvc.effects', '2', 30), '2', "$mode: the other events were applied");
    is($node->safe_psql('postgres', "SELECT count(*) FROM pgcloud.outbox WHERE event_type = 'platform.alert'"), '1',
        "$mode: one alert event");
    # More events still flow afterwards.
    $node->safe_psql('postgres', q{SELECT pgcloud.emit('load.tick', 'thing', 'p', '{"seq": 3}')});
    is(wait_until($node, 'SELECT count(*) FROM loadsvc.effects', '3', 30), '3', "$mode: later events flow");
}

sub clean_stop {
    my ($node, $mode) = @_;
    my $t0 = time();
    $node->stop('fast');
    my $took = time() - $t0;
    cmp_ok($took, '<', 10, "$mode: pg_ctl stop -m fast returned in ${\ sprintf('%.1f', $took)} s");
    my $log = slurp_file($node->logfile);
    unlike($log, qr/terminated by signal|was terminated by exception/, "$mode: no worker crashed");
}

my $node = pgcloud_node('poison');
poison($node, 'embedded');
clean_stop($node, 'embedded');

my $natsdir = "$PostgreSQL::Test::Utils::tmp_check/nats_poison";
my ($port, $nats) = start_nats($natsdir);
my $nnode = pgcloud_node('poison_nats', nats_settings($port));
poison($nnode, 'NATS');
# Stop while NATS is gone: the relay is backing off, it still stops at once.
stop_nats($nats);
$nnode->safe_psql('postgres', q{SELECT pgcloud.emit('load.tick', 'thing', 'z', '{"seq": 9}')});
sleep(1);
clean_stop($nnode, 'NATS');
done_testing();
