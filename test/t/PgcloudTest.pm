# Shared helpers of pgcloud's TAP tests.
package PgcloudTest;
use strict;
use warnings;
use Exporter 'import';
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

our @EXPORT = qw(pgcloud_node start_nats stop_nats add_test_subscriber wait_until natstool restart_after_crash);

my $repo = $ENV{PGCLOUD_REPO} or die 'PGCLOUD_REPO is not set';

# A cluster with pgcloud preloaded and installed in database "postgres",
# whose workers run there. Extra settings are appended to postgresql.conf.
sub pgcloud_node {
    my ($name, $extra) = @_;
    my $node = PostgreSQL::Test::Cluster->new($name);
    $node->init;
    $node->append_conf('postgresql.conf', "shared_preload_libraries = 'pgcloud'\n"
        . "pgcloud.databases = 'postgres'\nmax_worker_processes = 16\n" . ($extra // ''));
    $node->start;
    $node->safe_psql('postgres', 'CREATE EXTENSION pgcloud CASCADE');
    return $node;
}

# nats-server with JetStream and file storage in $dir on a free port.
sub start_nats {
    my ($dir, $port) = @_;
    $port //= PostgreSQL::Test::Cluster::get_free_port();
    mkdir $dir;
    my ($out, $err);
    my $h = IPC::Run::start(['nats-server', '-js', '-a', '127.0.0.1', '-p', $port, '-sd', $dir],
        '>', "$dir.log", '2>&1');
    # Wait for the port.
    for (1 .. 100) {
        last if system("bash -c 'echo > /dev/tcp/127.0.0.1/$port' 2>/dev/null") == 0;
        usleep(100_000);
    }
    return ($port, $h);
}

sub stop_nats {
    my ($h) = @_;
    $h->signal('KILL');
    $h->finish;
}

# A subscriber service "loadsvc" subscribed to load.* and bad.*, whose
# handler records each event it applies (and fails on {"poison": true}).
sub add_test_subscriber {
    my ($node) = @_;
    $node->safe_psql('postgres', q{
        INSERT INTO pgcloud.services (name, schema_name, database_name, layer, route_prefix, publishes, subscribes, depends_on)
        VALUES ('loadsvc', 'loadsvc', 'postgres', 'domain', '/loadsvc', '{}', '{load.*,bad.*}', '{}');
        INSERT INTO pgcloud.subscriptions VALUES ('loadsvc', 'load.*'), ('loadsvc', 'bad.*');
        CREATE SCHEMA loadsvc;
        CREATE TABLE loadsvc.effects (event_id uuid, aggregate_id text, seq int, applied_at timestamptz DEFAULT clock_timestamp());
        CREATE FUNCTION loadsvc.on_event(event_id uuid, event_type text, aggregate_type text, aggregate_id text,
                                         payload jsonb, headers jsonb) RETURNS void LANGUAGE plpgsql AS $$
        BEGIN
            IF payload ? 'poison' THEN
                RAISE EXCEPTION 'poison event';
            END IF;
            INSERT INTO loadsvc.effects (event_id, aggregate_id, seq) VALUES (event_id, aggregate_id, (payload ->> 'seq')::int);
        END $$;
        SELECT pgcloud.wake_workers();
    });
}

# Polls $query until it returns $want or $timeout seconds pass; returns the last value.
sub wait_until {
    my ($node, $query, $want, $timeout) = @_;
    my $deadline = time() + ($timeout // 120);
    my $got;
    while (time() < $deadline) {
        $got = $node->safe_psql('postgres', $query);
        return $got if $got eq $want;
        usleep(100_000);
    }
    return $got;
}

# After kill9 the children notice the postmaster's death in a moment; start
# again once they are gone.
sub restart_after_crash {
    my ($node) = @_;
    for (1 .. 100) {
        my $ok = eval { $node->start(fail_ok => 1) };
        return if $ok;
        $node->{_pid} = undef;    # start() read the dead postmaster's pid file
        usleep(200_000);
    }
    die 'the node did not start again';
}

sub natstool {
    my @args = @_;
    my $bin = "$ENV{TESTDIR}/natstool";
    if (!-x $bin) {
        system('gcc', '-O2', '-o', $bin, "$repo/test/tools/natstool.c", '-lnats') == 0 or die 'cannot build natstool';
    }
    my $out = `$bin @args`;
    return $out;
}

1;
