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
                 nats_url nats_settings nats_ca start_ssh_node api_call emit_event start_termrelay
                 sql_node sql as_user wait_for slurp spew);

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
        # One set per test file: the tier runs several files at once in one TESTDIR.
        $nats_certs = "$PostgreSQL::Test::Utils::tmp_check/nats-certs-$$";
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
        -- One handler per event type the tests emit: load.tick and bad.event.
        CREATE FUNCTION loadsvc.on_load_tick(event pgcloud.event_envelope) RETURNS void LANGUAGE plpgsql
        SECURITY DEFINER SET search_path = pg_catalog AS $$
        BEGIN
            IF event.payload ? 'poison' THEN
                RAISE EXCEPTION 'poison event';
            END IF;
            INSERT INTO loadsvc.effects (event_id, aggregate_id, seq)
            VALUES (event.event_id, event.aggregate_id, (event.payload ->> 'seq')::int);
        END $$;
        CREATE FUNCTION loadsvc.on_bad_event(event pgcloud.event_envelope) RETURNS void LANGUAGE sql
        SECURITY DEFINER SET search_path = pg_catalog AS $$ SELECT loadsvc.on_load_tick(event) $$;
        -- Delivery runs as the core (pgcloud_svc_core), which calls the handler.
        GRANT USAGE ON SCHEMA loadsvc TO pgcloud_svc_core;
        SELECT pgcloud.wake_workers();
    });
}

# Polls $query (in database $db, default postgres) until it returns $want or
# $timeout seconds pass; returns the last value.
sub wait_until {
    my ($node, $query, $want, $timeout, $db) = @_;
    my $deadline = time() + ($timeout // 120);
    my $got;
    while (time() < $deadline) {
        $got = $node->safe_psql($db // 'postgres', $query);
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
        # Built aside and renamed: another test file of the tier may build it at the same time.
        system('gcc', '-O2', '-o', "$bin.$$", "$repo/test/tools/natstool.c", '-lnats') == 0 or die 'cannot build natstool';
        rename("$bin.$$", $bin) or die "cannot install natstool: $!";
    }
    local $ENV{NATSTOOL_CA} = nats_ca();
    local $ENV{NATSTOOL_INBOX} = ($args[1] =~ m{://(pgcloud_[a-z_]+):}) ? "_INBOX_$1" : '';
    my $out = `$bin @args`;
    return $out;
}


# A throwaway sshd on a loopback port standing in for an allocation's node:
# run as this (unprivileged) OS user, trusting the platform CA
# (api.ssh_ca_public_key()), accepting for this user's account the
# certificate principals given (principals => [...]: the allocations'
# pgcloud-alloc-<id>, as maas's cloud-init writes AuthorizedPrincipalsFile).
# Returns {port, known_hosts, handle, log}.
sub start_ssh_node {
    my ($node, $dir, %opt) = @_;
    my $sshd = '/usr/sbin/sshd';
    -x $sshd or BAIL_OUT("$sshd is missing: install the Debian package openssh-server");
    # An unprivileged sshd gives itself a PTY only if it may chown the pty to
    # group tty: where /dev/pts is not mounted with gid=5 the user must be in
    # group tty (scripts/deps.sh adds it). A membership added since this
    # user's login is not in this process yet: then sshd starts through
    # `sudo -u <this user>`, which reads the groups afresh (and forwards
    # signals, so the handle stops it as before).
    my @as_me;
    my $devpts = `grep ' /dev/pts devpts ' /proc/mounts`;
    my $tty = getgrnam('tty');
    if ($devpts !~ /gid=5\b/ && defined $tty && !grep { $_ == $tty } split ' ', $)) {
        my $me = getpwuid($<);
        my $members = (getgrnam('tty'))[3] // '';
        grep { $_ eq $me } split ' ', $members
          or BAIL_OUT("the test user $me must be in group tty (devpts is not mounted with gid=5): run scripts/deps.sh");
        system('sudo -n true >/dev/null 2>&1') == 0
          or BAIL_OUT("$me joined group tty after logging in: log in again (or run the tests through sudo -u $me)");
        @as_me = ('sudo', '-n', '-u', $me, '--');
    }
    mkdir $dir;
    my ($o, $e);
    IPC::Run::run([ 'ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', "$dir/hostkey" ], '>', \$o, '2>', \$e)
      or die "host key: $e";
    my $ca = $node->safe_psql('postgres', 'SELECT api.ssh_ca_public_key()');
    my $port = PostgreSQL::Test::Cluster::get_free_port();
    spew("$dir/trusted_ca.pub", "$ca\n");
    spew("$dir/principals", join('', map { "$_\n" } @{ $opt{principals} // [] }));
    spew("$dir/sshd_config", join("\n",
        "Port $port", 'ListenAddress 127.0.0.1', "HostKey $dir/hostkey", "PidFile $dir/sshd.pid",
        "TrustedUserCAKeys $dir/trusted_ca.pub", "AuthorizedPrincipalsFile $dir/principals", 'AuthorizedKeysFile none', 'PubkeyAuthentication yes',
        'PasswordAuthentication no', 'KbdInteractiveAuthentication no', 'UsePAM no', 'StrictModes no',
        'AllowTcpForwarding yes', 'MaxSessions 1000', 'MaxStartups 1000', 'LogLevel VERBOSE', ''));
    my $hostpub = slurp("$dir/hostkey.pub");
    my ($type, $blob) = split ' ', $hostpub;
    spew("$dir/known_hosts", "[127.0.0.1]:$port $type $blob\n");
    my $h = IPC::Run::start([ @as_me, $sshd, '-D', '-e', '-f', "$dir/sshd_config" ], '>', '/dev/null', '2>', "$dir/sshd.log");
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
    spew("$dir/termrelay.conf", join('', map { "$_ = $cfg{$_}\n" } sort keys %cfg));
    my $log = "$dir/termrelay.log";
    my $h = IPC::Run::start([ $bin, "$dir/termrelay.conf" ], '>', '/dev/null', '2>>', $log);
    for (1 .. 100) {
        last if system("bash -c 'echo > /dev/tcp/127.0.0.1/$port' 2>/dev/null") == 0;
        usleep(100_000);
    }
    return { port => $port, handle => $h, log => $log, config => "$dir/termrelay.conf" };
}

# The node and database sql(), as_user() and wait_for() talk to: a test sets
# them once it has its node (and again when it makes another).
my ($sql_node, $sql_db);
sub sql_node {
    ($sql_node, $sql_db) = @_;
    $sql_db //= 'postgres';
    return $sql_node;
}

# Runs SQL there (safe_psql: dies on an error); returns its output.
sub sql {
    die 'sql(): call sql_node($node, $db) first' unless $sql_node;
    return $sql_node->safe_psql($sql_db, $_[0]);
}

# Runs SQL there as the signed-in user $sub (claims and role pgcloud_user, as
# PostgREST sets them).
sub as_user {
    my ($sub, $query) = @_;
    return sql(qq{SET request.jwt.claims = '{"role": "pgcloud_user", "sub": "$sub"}'; SET ROLE pgcloud_user; } . $query);
}

# wait_until() there; 60 s unless told.
sub wait_for {
    my ($query, $want, $timeout) = @_;
    return wait_until($sql_node, $query, $want, $timeout // 60, $sql_db);
}

sub slurp { my $f = shift; open my $fh, '<', $f or die "$f: $!"; local $/; my $s = <$fh>; close $fh; return $s; }
sub spew { my ($f, $s) = @_; open my $fh, '>', $f or die "$f: $!"; print $fh $s; close $fh; }

1;
