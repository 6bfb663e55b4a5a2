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

our @EXPORT = qw(pgcloud_node start_nats stop_nats add_test_subscriber wait_until natstool restart_after_crash
                 nats_url nats_settings nats_ca);

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

# Every NATS test runs against an authenticated, TLS-only server: the users
# and permissions of deploy/nats/authorization.conf (generated from the
# registry) plus "pgcloud_tests", which may publish any pgcloud.> subject
# (the tests' own event types). User pgcloud_<x>'s password is "pw-<x>".
my $nats_certs;
sub nats_ca {
    if (!$nats_certs) {
        $nats_certs = "$PostgreSQL::Test::Utils::tmp_check/nats-certs";
        system('bash', "$repo/test/fakes/make_certs.sh", $nats_certs) == 0 or die 'cannot make NATS certificates';
        chmod 0755, $nats_certs;
    }
    return "$nats_certs/ca.crt";
}

# tls://pgcloud_<user>:pw-<user>@127.0.0.1:port (user defaults to "tests").
sub nats_url {
    my ($port, $user) = @_;
    $user //= 'tests';
    return "tls://pgcloud_$user:pw-$user\@127.0.0.1:$port";
}

# postgresql.conf lines for a node whose workers connect as pgcloud_<user>.
sub nats_settings {
    my ($port, $user) = @_;
    return "pgcloud.nats_url = '" . nats_url($port, $user) . "'\npgcloud.ca_bundle = '" . nats_ca() . "'\n";
}

# nats-server with JetStream and file storage in $dir on a free port.
sub start_nats {
    my ($dir, $port) = @_;
    $port //= PostgreSQL::Test::Cluster::get_free_port();
    mkdir $dir;
    my $ca = nats_ca();
    my $auth = slurp_file("$repo/deploy/nats/authorization.conf");
    my @users = ($auth =~ /\$(PGCLOUD_NATS_PASSWORD_[A-Z_]+)/g);
    $ENV{$_} = 'pw-' . lc(substr($_, length('PGCLOUD_NATS_PASSWORD_'))) for @users;
    my $tests_user = join("\n",
        '    {',
        '      user: pgcloud_tests',
        '      password: "pw-tests"',
        '      permissions: {publish: {allow: ["pgcloud.>", "$JS.API.>", "$JS.ACK.>"]}, subscribe: {allow: ["_INBOX_pgcloud_tests.>"]}}',
        '    }');
    $auth =~ s/\n  \]\n\}\n*\z/\n$tests_user\n  ]\n}\n/ or die 'unexpected authorization.conf';
    open(my $fh, '>', "$dir.authorization.conf") or die;
    print $fh $auth;
    close $fh;
    (my $authname = "$dir.authorization.conf") =~ s{.*/}{};
    open($fh, '>', "$dir.conf") or die;
    print $fh "listen: 127.0.0.1:$port\n"
      . "jetstream { store_dir: \"$dir\" }\n"
      . "tls { cert_file: \"$nats_certs/server.crt\", key_file: \"$nats_certs/server.key\", timeout: 2 }\n"
      . "include ./$authname\n";
    close $fh;
    my $h = IPC::Run::start(['nats-server', '-c', "$dir.conf"], '>', "$dir.log", '2>&1');
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
                                         payload jsonb, headers jsonb) RETURNS void LANGUAGE plpgsql
        SECURITY DEFINER SET search_path = pg_catalog AS $$
        BEGIN
            IF payload ? 'poison' THEN
                RAISE EXCEPTION 'poison event';
            END IF;
            INSERT INTO loadsvc.effects (event_id, aggregate_id, seq) VALUES (event_id, aggregate_id, (payload ->> 'seq')::int);
        END $$;
        -- Delivery runs as the core (pgcloud_svc_core), which calls the handler.
        GRANT USAGE ON SCHEMA loadsvc TO pgcloud_svc_core;
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
    local $ENV{NATSTOOL_CA} = nats_ca();
    local $ENV{NATSTOOL_INBOX} = ($args[1] =~ m{://(pgcloud_[a-z_]+):}) ? "_INBOX_$1" : '';
    my $out = `$bin @args`;
    return $out;
}

1;
