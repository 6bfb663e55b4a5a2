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
use JSON::PP;

our @EXPORT = qw(pgcloud_node start_nats stop_nats add_test_subscriber wait_until natstool restart_after_crash
                 start_ssh_node api_call emit_event start_termrelay);

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


# A throwaway sshd on a loopback port standing in for an allocation's node:
# run as this (unprivileged) OS user, trusting the platform CA
# (api.ssh_ca_public_key()). Returns {port, known_hosts, handle, log}.
sub start_ssh_node {
    my ($node, $dir) = @_;
    my $sshd = '/usr/sbin/sshd';
    -x $sshd or BAIL_OUT("$sshd is missing: install the Debian package openssh-server");
    # An unprivileged sshd gives itself a PTY only if it may chown the pty to group tty.
    my $devpts = `grep ' /dev/pts devpts ' /proc/mounts`;
    $devpts =~ /gid=5\b/ or (grep { $_ == getgrnam('tty') } split ' ', $))
      or BAIL_OUT('the test user must be in group tty (devpts is not mounted with gid=5): run scripts/deps.sh as root');
    mkdir $dir;
    my ($o, $e);
    IPC::Run::run([ 'ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', "$dir/hostkey" ], '>', \$o, '2>', \$e)
      or die "host key: $e";
    my $ca = $node->safe_psql('postgres', 'SELECT api.ssh_ca_public_key()');
    my $port = PostgreSQL::Test::Cluster::get_free_port();
    _spew("$dir/trusted_ca.pub", "$ca\n");
    _spew("$dir/sshd_config", join("\n",
        "Port $port", 'ListenAddress 127.0.0.1', "HostKey $dir/hostkey", "PidFile $dir/sshd.pid",
        "TrustedUserCAKeys $dir/trusted_ca.pub", 'AuthorizedKeysFile none', 'PubkeyAuthentication yes',
        'PasswordAuthentication no', 'KbdInteractiveAuthentication no', 'UsePAM no', 'StrictModes no',
        'AllowTcpForwarding yes', 'MaxSessions 1000', 'MaxStartups 1000', 'LogLevel VERBOSE', ''));
    my $hostpub = _slurp("$dir/hostkey.pub");
    my ($type, $blob) = split ' ', $hostpub;
    _spew("$dir/known_hosts", "[127.0.0.1]:$port $type $blob\n");
    my $h = IPC::Run::start([ $sshd, '-D', '-e', '-f', "$dir/sshd_config" ], '>', '/dev/null', '2>', "$dir/sshd.log");
    for (1 .. 100) {
        last if system("bash -c 'echo > /dev/tcp/127.0.0.1/$port' 2>/dev/null") == 0;
        usleep(100_000);
    }
    return { port => $port, known_hosts => "$dir/known_hosts", handle => $h, log => "$dir/sshd.log" };
}

# Runs SQL as an API request with the given claims; returns (ok, stdout, stderr).
sub api_call {
    my ($node, $claims, $sql) = @_;
    my $json = JSON::PP->new->canonical->encode($claims);
    my $role = $claims->{role} // 'pgcloud_user';
    my ($ret, $out, $err) = $node->psql('postgres', qq{
        BEGIN;
        SET LOCAL request.jwt.claims = '$json';
        SET LOCAL ROLE $role;
        $sql;
        COMMIT;});
    return ($ret == 0 && $err !~ /ERROR/, $out, $err);
}

# Emits an event through the outbox (delivered by the embedded relay worker).
sub emit_event {
    my ($node, $type, $agg_type, $agg, $payload) = @_;
    my $json = JSON::PP->new->canonical->encode($payload);
    $node->safe_psql('postgres', "SELECT pgcloud.emit('$type', '$agg_type', '$agg', \$j\$$json\$j\$)");
}

# The terminal relay (termrelay/pgcloud-termrelay) with a config file in $dir
# (TLS with a throwaway certificate); extra settings override the defaults.
# Returns {port, handle, log, config}.
sub start_termrelay {
    my ($node, $dir, $ssh, %extra) = @_;
    my $bin = "$repo/termrelay/pgcloud-termrelay";
    -x $bin or BAIL_OUT("$bin is missing: run make");
    mkdir $dir;
    my $port = $extra{port} // PostgreSQL::Test::Cluster::get_free_port();
    if (!-f "$dir/tls.crt") {
        system("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=127.0.0.1 "
            . "-addext subjectAltName=IP:127.0.0.1 -keyout $dir/tls.key -out $dir/tls.crt >/dev/null 2>&1") == 0
          or die 'openssl req failed';
    }
    my %cfg = (
        listen => '127.0.0.1', port => $port, tls_certificate => "$dir/tls.crt", tls_private_key => "$dir/tls.key",
        static_dir => "$repo/termrelay/build/www", conninfo => $node->connstr('postgres'),
        service_account => '7e1a7e1a-0000-4000-8000-00000000beef', relay_name => 'relay-tap',
        ssh_port => $ssh->{port}, known_hosts => $ssh->{known_hosts}, idle_timeout_seconds => 600,
        heartbeat_ms => 300, %extra);
    _spew("$dir/termrelay.conf", join('', map { "$_ = $cfg{$_}\n" } sort keys %cfg));
    my $log = "$dir/termrelay.log";
    my $h = IPC::Run::start([ $bin, "$dir/termrelay.conf" ], '>', '/dev/null', '2>>', $log);
    for (1 .. 100) {
        last if system("bash -c 'echo > /dev/tcp/127.0.0.1/$port' 2>/dev/null") == 0;
        usleep(100_000);
    }
    return { port => $port, handle => $h, log => $log, config => "$dir/termrelay.conf" };
}

sub _slurp { my $f = shift; open my $fh, '<', $f or die "$f: $!"; local $/; my $s = <$fh>; close $fh; return $s; }
sub _spew { my ($f, $s) = @_; open my $fh, '>', $f or die "$f: $!"; print $fh $s; close $fh; }

1;
