# Shape (c) of registry/deployments.conf, brought up by scripts/multicluster.sh
# from deploy/multi/: three PostgreSQL clusters (identity: auth admin
# notification storage databases; money: billing payments releases terminal;
# capacity: inventory provisioning maas appruntime), one database per service,
# joined only by a 3-node NATS JetStream cluster (TLS, per-service users, the
# stream with 3 replicas). The main flow crosses the clusters as events only:
#   dev login (auth) -> user.created -> billing, payments, releases, ...
#   Stripe checkout and signed webhook (payments) -> payment.succeeded -> billing
#     -> account.standing_changed -> provisioning
#   SSH key (releases) -> provisioning; SKU, image, nodes (inventory) <-> MAAS
#   allocation (provisioning) -> deploy.requested -> maas -> fake MAAS -> active
#   certificate (releases), metering (billing), release, settlement, ledger.
# Faults: a NATS node killed during the flow and restarted; the NATS cluster
# losing its quorum for 10 s (n2 and n3 stopped while events are committed);
# the money cluster stopped for 30 s while the allocation is released (its
# events wait in JetStream, the other clusters go on) and catching up.
# Nothing lost or applied twice: balance = sum of entries, the stream holds
# each event once, every event of every outbox applied exactly once by every
# subscriber of its type. A session revoked in the auth database is refused
# by the billing database's pre-request (another cluster) within 5 s, and by
# every other database. Isolation: no service's PostgREST role can log in to
# another service's database (own cluster or another), the worker, shared
# authenticator, service and API roles log in nowhere; NATS routes refuse a
# server without the nodes' client certificate. A signing key rotated in
# reaches every database and every PostgREST configuration before it signs.
# Jobs run, policy changes and read models (admin, notification) are where
# each service lives.
# services: core auth billing payments releases inventory provisioning maas admin notification terminal appruntime databases storage
# tap-lock: deploy (brings up a whole deployment on the port plan of registry/deployments.conf)
use strict;
use warnings;
use lib $ENV{PGCLOUD_REPO} . '/test/t';
use lib $ENV{PGCLOUD_REPO} . '/test/fakes';
use PgcloudTest;
use PgcloudFakes;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use MIME::Base64 qw(decode_base64);
use Time::HiRes qw(time sleep);

my $repo = $ENV{PGCLOUD_REPO};
# The shape: (c) multi, unless a wrapper test runs this flow in another
# (core_shape_single.pl: (a), core_shape_per_service.pl: (b)). The checks of
# NATS and of several clusters apply where the shape has them.
my $shape = $ENV{PGCLOUD_TEST_SHAPE} // 'multi';
my $nats = $shape ne 'single';     # one database per service, joined by NATS
my $multi = $shape eq 'multi';     # and spread over several clusters
# The fault drills (a NATS node killed, the NATS quorum lost, a cluster
# stopped) and the NATS route attacks are shape (c)'s; shape (b) runs the
# same NATS configuration, so the flow there goes without them (lean suite).
my $faults = $multi;
my $tmp = PostgreSQL::Test::Utils::tempdir();
my $dir = "$tmp/$shape";
# The ports of deploy/<shape> (those scripts/multicluster.sh shifts), moved
# by a random shift out of the kernel's ephemeral range and out of
# PostgreSQL::Test::Cluster's range (10200-32767): a port of the plan that is
# free for a moment (before a node starts, while a drill has it stopped) is
# otherwise taken by any outgoing connection's local port, or by another
# test's cluster or fake, and the node cannot listen again ("NATS node n2 did
# not start").
my @plan = do {
    my %p;
    for my $f (glob("$repo/deploy/$shape/*.tsv $repo/deploy/$shape/*/*")) {
        next unless -f $f;
        my $text = slurp_file($f);
        $p{$_} = 1 for $text =~ /127\.0\.0\.1:(\d+)/g, $text =~ /^port = (\d+)/mg;
        $p{$_} = 1 for $f =~ /layout\.tsv$/ ? $text =~ /^\S+\s+(\d+)\s/mg : ();
    }
    sort { $a <=> $b } keys %p;
};
my ($eph_lo, $eph_hi) = split(' ', slurp_file('/proc/sys/net/ipv4/ip_local_port_range'));
my @shifts = grep {
    my $s = $_;
    !grep { my $q = $_ + $s; $q < 1024 || $q > 65535 || ($q >= $eph_lo && $q <= $eph_hi) || ($q >= 10200 && $q <= 32767) } @plan
} -60000 .. 60000;
die "no shift puts the ports of deploy/$shape (@plan) outside $eph_lo-$eph_hi and 10200-32767" unless @shifts;
# Above the ephemeral range where the plan fits there (below 10200 is where
# other software on the machine listens).
my @high = grep { $plan[0] + $_ > $eph_hi } @shifts;
@shifts = @high if @high;
my $shift = $shifts[int(rand(@shifts))];
note("ports of deploy/$shape shifted by $shift: " . join(' ', map { $_ + $shift } @plan));
$ENV{PGCLOUD_MULTI_DIR} = $dir;
$ENV{PGCLOUD_MULTI_PORT_SHIFT} = $shift;
# The PostgreSQL under test is the one on PATH (scripts/lib.sh must not
# relocate it again).
delete $ENV{PGCLOUD_PG_ROOT};
$ENV{PG_CONFIG} = 'pg_config';

# The script's certificates, made first so that the Stripe fake uses them too.
my $certs = PgcloudFakes::make_certs("$tmp/certs");
mkdir $dir;
mkdir "$dir/certs";
system("cp $certs->{ca} $dir/certs/ca.pem && cp $certs->{cert} $dir/certs/server-cert.pem"
    . " && cp $certs->{key} $dir/certs/server-key.pem") == 0 or die 'cannot copy certificates';
my $stripe = PgcloudFakes->start('stripe', dir => "$tmp/stripe", tls => $certs);
my $maas = PgcloudFakes->start('maas', dir => "$tmp/maas",
    args => ['--machines', '3', '--api-key', 'k:t:s', '--deploy-seconds', '1',
             '--release-seconds', '0.5', '--commission-seconds', '0.5']);
$ENV{PGCLOUD_MULTI_SETTINGS} = join("\n",
    "pgcloud.maas_url = '" . $maas->url . "'",
    "pgcloud.maas_api_key = 'k:t:s'",
    "pgcloud.stripe_api_url = '" . $stripe->url . "'",
    "pgcloud.stripe_secret_key = 'sk_test_pgcloud'",
    "pgcloud.stripe_webhook_secrets = 'whsec_pgcloud_test'",
    # The per-service shapes name pgcloud-secrets/ca.crt (the NATS CA, which
    # signed the Stripe fake's certificate too); the single one names none.
    $nats ? () : "pgcloud.ca_bundle = '$dir/certs/ca.pem'");

sub script
{
    my $out = `$repo/scripts/multicluster.sh @_ 2>&1`;
    return ($? >> 8, $out);
}
# Whatever ends the test (a died check, a signal), the deployment's servers
# do not outlive it: a NATS node left running would hold its store and ports.
my $down_done = 0;
END { system("$repo/scripts/multicluster.sh down $shape >/dev/null 2>&1") if defined $repo && !$down_done; }
my ($rc, $out) = script('up', $shape);
is($rc, 0, "scripts/multicluster.sh up brings shape $shape up") or diag($out);
like($out, qr/stream PGCLOUD_EVENTS: replicas=3 leader=n\d current=3/, 'the stream has 3 replicas, all current') if $nats;

# Where each service's database is, from the generated layout.
my (%port, %db, %cluster);
for my $line (split /\n/, slurp_file("$repo/deploy/$shape/layout.tsv")) {
    next if $line =~ /^#/;
    my ($c, $p, $d, $svcs) = split / /, $line;
    ($port{$_}, $db{$_}, $cluster{$_}) = ($p + $shift, $d, $c) for split /,/, $svcs;
}
is(scalar(keys %port), 13, 'every service has its place');
is(scalar(keys %{ { map { $_ => 1 } values %db } }), $nats ? 13 : 1, $nats ? 'one database per service' : 'in one database');
is(scalar(keys %{ { map { $_ => 1 } values %port } }), $multi ? 3 : 1, $multi ? 'on three clusters' : 'on one cluster');

sub dbq
{
    my ($svc, $sql, %o) = @_;
    my @cmd = ('psql', '-X', '-q', '-tA', '-v', 'ON_ERROR_STOP=1', '-h', "$dir/run", '-p', $port{$svc}, '-d', $db{$svc});
    my ($stdout, $stderr) = ('', '');
    IPC::Run::run([@cmd, '-c', $sql], '>', \$stdout, '2>', \$stderr);
    chomp $stdout;
    die "psql $svc: $stderr" if $? != 0 && !$o{fail_ok};
    return $o{fail_ok} ? ($? >> 8, $stdout, $stderr) : $stdout;
}
# A query's answer for a diagnostic (or its error).
sub qdiag
{
    my ($rc, $out, $err) = dbq(@_, fail_ok => 1);
    return $rc == 0 ? $out : "error: $err";
}
sub wait_q
{
    my ($svc, $sql, $want, $timeout) = @_;
    my $deadline = time() + ($timeout // 60);
    my $got;
    while (time() < $deadline) {
        $got = eval { dbq($svc, $sql) } // '';
        return $got if $got eq $want;
        sleep(0.2);
    }
    return $got;
}
# Why events stopped somewhere, printed once when a check fails: every
# database's outbox, durables (applied, dead letters) and workers (state,
# failures, last error), each durable's backlog in JetStream, and what the
# clusters' logs say about crashed or missing workers.
my $explained = 0;
sub why_stalled
{
    return if $explained++;
    my $lag = `$repo/scripts/multicluster.sh lag $shape 2>&1`;
    diag("scripts/multicluster.sh lag $shape:\n$lag");
    for my $log (glob("$dir/pg-*/server.log")) {
        my @lines = grep { /terminated by signal|could not start its|Raise max_worker|PANIC|database "" does not exist|durable consumer failed/ }
            split /\n/, slurp_file($log);
        diag(sprintf("%s: %d lines of crashes and missing workers%s", $log, scalar(@lines),
            @lines ? ", the last ones:\n" . join("\n", @lines[($#lines > 20 ? $#lines - 20 : 0) .. $#lines]) : ''));
    }
    return;
}
my $claims;
sub as_user_on
{
    my ($svc, $sql) = @_;
    return dbq($svc, "SET request.jwt.claims = '$claims'; SET ROLE pgcloud_user; $sql");
}

# ---- the databases ----------------------------------------------------------------
if ($nats) {
is(dbq('billing', q{SELECT string_agg(extname, ',' ORDER BY extname) FROM pg_extension WHERE extname LIKE 'pgcloud%'}),
    'pgcloud_billing,pgcloud_core', 'pgcloud_billing holds billing only');
is(dbq('billing', q{SELECT count(*) FROM pg_database WHERE datname IN ('pgcloud_auth', 'pgcloud_provisioning')}), '0',
    'the auth and provisioning databases are on other clusters') if $multi;
is(dbq('billing', q{SELECT has_database_privilege('pgcloud_svc_payments', 'pgcloud_billing', 'CONNECT')}), 'f',
    "payments' role may not connect to billing's database");


# ---- no role of one service can connect to another service's database (shapes b, c) -------------
# Each service's PostgREST logs in as pgcloud_authenticator_<service> with its
# password (pg-passwords.env); the clusters run the generated pg_hba.conf.
my %pgpw = map { /^PGCLOUD_PG_PASSWORD_([A-Z_]+)=(.*)$/ ? (lc($1) => $2) : () } split /\n/, slurp_file("$dir/pg-passwords.env");
is(scalar(keys %pgpw), 13, 'a PostgREST password per service');
sub try_login
{
    my ($user, $pw, $p, $d, %o) = @_;
    my ($stdout, $stderr) = ('', '');
    local $ENV{PGPASSWORD} = $pw // '';
    local $ENV{PGCONNECT_TIMEOUT} = 5;
    IPC::Run::run(['psql', '-X', '-w', '-tA', '-h', ($o{socket} ? "$dir/run" : '127.0.0.1'), '-p', $p, '-U', $user, '-d', $d,
                   '-c', 'SELECT current_database()'], '>', \$stdout, '2>', \$stderr);
    chomp $stdout;
    return ($? == 0 && $stdout eq $d, $stderr);
}
my ($own, $kept_out, $tries) = (0, 0, 0);
for my $svc (sort keys %db) {
    my ($ok, $e) = try_login("pgcloud_authenticator_$svc", $pgpw{$svc}, $port{$svc}, $db{$svc});
    $ok ? $own++ : diag("$svc to its own database: $e");
    for my $other (sort keys %db) {
        next if $other eq $svc;
        $tries++;
        my ($ok2, $e2) = try_login("pgcloud_authenticator_$svc", $pgpw{$svc}, $port{$other}, $db{$other});
        if (!$ok2 && $e2 =~ /no pg_hba\.conf entry|rejects connection|password authentication failed|does not exist/) { $kept_out++ }
        else { diag("pgcloud_authenticator_$svc reached $db{$other} on $cluster{$other}: ok=$ok2 $e2") }
    }
}
is($own, 13, "each service's PostgREST role logs in to its own database, on its cluster");
is($kept_out, $tries, "and is refused by the other $tries service databases, on its cluster and the others");
my $never = 0;
my %cluster_port = map { $cluster{$_} => $port{$_} } keys %port;
for my $role (qw(pgcloud_worker_relay pgcloud_worker_consumer pgcloud_worker_http pgcloud_authenticator pgcloud_svc_billing pgcloud_admin)) {
    for my $svc (sort keys %db) {
        for my $socket (0, 1) {
            my ($ok, $e) = try_login($role, 'x', $port{$svc}, $db{$svc}, socket => $socket);
            # (A role another cluster does not have falls through to peer authentication.)
            next if !$ok && $e =~ /rejects connection|no pg_hba\.conf entry|not permitted to log in|Peer authentication failed/;
            $never++;
            diag("$role reached $db{$svc}: ok=$ok $e");
        }
    }
}
is($never, 0, 'the worker roles, the shared authenticator, a service role and an API role log in nowhere (TCP or socket)');
my $extra = 0;
for my $c (sort keys %cluster_port) {
    my $svc = (grep { $cluster{$_} eq $c } sort keys %db)[0];
    $extra += dbq($svc, q{SELECT count(*) FROM pg_roles r CROSS JOIN pg_database d
        WHERE r.rolcanlogin AND NOT r.rolsuper AND r.rolname NOT LIKE 'pgcloud\_worker\_%'
          AND d.datallowconn AND has_database_privilege(r.oid, d.oid, 'CONNECT')
          AND NOT (r.rolname LIKE 'pgcloud\_authenticator\_%' AND d.datname = 'pgcloud_' || substr(r.rolname, 23))});
}
is($extra, 0, "no login role of any cluster has CONNECT on a database but its own service's");

# ---- NATS routes are authenticated (TLS client certificates of the nodes' CA) ---------------------------
if ($multi) {
# A rogue server tries to join the cluster through n2's route port: without
# TLS, and trusting the nodes' CA but with a certificate of another CA (which
# only n2's demand for a client certificate refuses). Neither becomes a route.
my ($route2) = slurp_file("$dir/nats/n2.conf") =~ /^  listen: 127\.0\.0\.1:(\d+)$/m;
my ($mon2) = slurp_file("$dir/nats/n2.conf") =~ /^http: 127\.0\.0\.1:(\d+)$/m;
my $rogue_certs = PgcloudFakes::make_certs("$tmp/rogue-certs");
my @rogues;
for my $variant ('plain', 'other-ca') {
    my $rp = PostgreSQL::Test::Cluster::get_free_port();
    my $tls = $variant eq 'plain' ? '' : "  tls { cert_file: \"$rogue_certs->{cert}\", key_file: \"$rogue_certs->{key}\", ca_file: \"$dir/certs/ca.pem\", timeout: 2 }\n";
    spew("$tmp/rogue-$variant.conf", "server_name: rogue_$variant\nlisten: 127.0.0.1:" . PostgreSQL::Test::Cluster::get_free_port() . "\n"
        . "cluster {\n  name: pgcloud\n  listen: 127.0.0.1:$rp\n$tls  routes = [ nats-route://127.0.0.1:$route2 ]\n}\n");
    push @rogues, IPC::Run::start(['nats-server', '-c', "$tmp/rogue-$variant.conf"], '>', "$tmp/rogue-$variant.log", '2>&1');
}
sleep(4);
my $routez = `curl -fsS http://127.0.0.1:$mon2/routez`;
my ($nroutes) = $routez =~ /"num_routes":\s*(\d+)/;
is($nroutes, 2, 'n2 routes to n1 and n3 only: a server without a certificate, or with one of another CA, is refused')
    or diag($routez);
like(slurp_file("$dir/nats/n2.log") . slurp_file("$tmp/rogue-plain.log") . slurp_file("$tmp/rogue-other-ca.log"),
    qr/TLS|tls|certificate/, 'the refusals are TLS handshake errors');
$_->kill_kill for @rogues;
}
}

# ---- dev login in auth; the user reaches the other clusters as user.created ----------------------
dbq('auth', q{SELECT pgcloud.set_policy('auth.dev_login_enabled', 'true')});
my $token = dbq('auth', q{SET ROLE pgcloud_anon; SELECT api.dev_login('multi@example.com') ->> 'access_token'});
my ($payload) = (split /\./, $token)[1];
$payload =~ tr{-_}{+/};
$payload .= '=' x ((4 - length($payload) % 4) % 4);
my $json = decode_base64($payload);
my ($sub) = $json =~ /"sub"\s*:\s*"([0-9a-f-]{36})"/;
my ($sid) = $json =~ /"sid"\s*:\s*"([0-9a-f-]{36})"/;
ok($sub && $sid, 'dev login returns an access token with sub and sid');
# What PostgREST would set after verifying the token with the auth service's keys.
$claims = qq{{"role": "pgcloud_user", "sub": "$sub", "sid": "$sid"}};
is(wait_q('billing', "SELECT count(*) FROM billing.accounts WHERE account_id = '$sub'", '1'), '1',
    'user.created opened the billing account on the money cluster');

# ---- capacity: SKU, image and nodes; MAAS commissions them ---------------------------------
dbq('maas', q{SELECT pgcloud.set_policy('maas.poll_interval_ms', '200'); SELECT pgcloud.set_policy('core.http_backoff_base_ms', '200')});
dbq('billing', q{SELECT pgcloud.set_policy('billing.accrual_interval_seconds', '2')});
dbq('inventory', q{
    SELECT api.admin_upsert_sku('a100x8', 'A100', 8, 64, 512, 4000, 'eu-west', 3600);
    SELECT api.admin_upsert_image('ubuntu-22.04', 'jammy');
    SELECT api.admin_register_node('node-1', 'abc123', 'a100x8');
    SELECT api.admin_register_node('node-2', 'abc124', 'a100x8');
});
is(wait_q('provisioning', q{SELECT string_agg(state, ',' ORDER BY hostname) FROM provisioning.nodes}, 'ready,ready'),
    'ready,ready', 'inventory -> maas -> MAAS -> inventory -> provisioning: the nodes are ready');

# ---- top-up: Stripe checkout and signed webhook; a NATS node dies meanwhile ------------------------
my $session = as_user_on('payments', q{SELECT api.create_checkout(100000, 'usd') ->> 'id'});
is(wait_q('payments', "SELECT status FROM payments.payment_sessions WHERE id = '$session'", 'open'), 'open',
    'the Checkout Session is created at Stripe');
my ($cs) = as_user_on('payments', "SELECT api.get_checkout('$session')::text") =~ /"stripe_session_id": "(cs_test_\w+)"/;
my @reqs = grep { $_->{path} eq '/v1/checkout/sessions' } $stripe->requests;
is($reqs[0]{form}{customer_email}, 'multi@example.com', "payments knew the user's e-mail (user.created across clusters)");

if ($faults) {
my $victim = `cat $dir/nats/n1.pid`;
chomp $victim;
kill 'KILL', $victim;
my $gone = 0;
for (1 .. 50) {
    my $stat = `ps -o stat= -p $victim`;
    if ($stat eq '' || $stat =~ /Z/) { $gone = 1; last }
    sleep(0.1);
}
ok($gone, 'NATS node n1 is killed');
}
my $t_kill = time();
my $ev = $stripe->post_json("/v1/checkout/sessions/$cs/_complete");
my $sig = $ev->{stripe_signature};
like(dbq('payments', qq{SET request.jwt.claims = '{"role": "pgcloud_anon"}'; SET request.headers = '{"stripe-signature": "$sig"}';
    SET ROLE pgcloud_anon; SELECT api.stripe_webhook(\$pw\$$ev->{payload}\$pw\$)::text}),
    qr/payment_recorded/, 'the signed webhook is verified and recorded' . ($faults ? ' (n1 down)' : ''));
is(wait_q('billing', "SELECT balance FROM billing.balances WHERE account_id = '$sub'", '100000', 150), '100000',
    'payment.succeeded crossed to billing' . ($faults ? ' through the two remaining nodes' : ''));
# Failover (new stream and consumer leaders, reconnection with backoff,
# redelivery after the ack wait) took from seconds to over a minute under load.
diag(sprintf('credited %.1f s after the webhook%s', time() - $t_kill, $faults ? ' (n1 killed)' : ''));
if ($faults) {
($rc, $out) = script('up', $shape);
is($rc, 0, 'n1 is started again') or diag($out);
like($out, qr/current=3/, 'and the stream has its 3 replicas current again');
}
is(wait_q('provisioning', "SELECT standing FROM provisioning.account_standing WHERE user_id = '$sub'", 'good'), 'good',
    'billing told provisioning the account is in good standing');

# ---- the NATS cluster loses its quorum for 10 s: n2 and n3 stopped -----------------------------------
# Events committed meanwhile (an SSH key in releases, a third node in
# inventory) wait in their outboxes: JetStream cannot store them without a
# quorum. Once the nodes are back they go out and are applied once each.
my $lost = time();
if ($faults) {
for my $n ('n2', 'n3') {
    my $pid = `cat $dir/nats/$n.pid`;
    chomp $pid;
    kill 'TERM', $pid;
}
$lost = time();
my $down = 0;
for (1 .. 100) {
    $down = 0;
    for my $n ('n2', 'n3') {
        my $pid = `cat $dir/nats/$n.pid`;
        chomp $pid;
        my $stat = `ps -o stat= -p $pid`;
        $down++ if $stat eq '' || $stat =~ /Z/;
    }
    last if $down == 2;
    sleep(0.1);
}
is($down, 2, 'NATS nodes n2 and n3 are stopped: the JetStream cluster has no quorum');
}
my $key = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMOwPp55P+3rXvN52Am9GxAqi24MMrCru+LnotcYcsbn';
my $key_id = as_user_on('releases', "SELECT api.add_ssh_key('$key', 'laptop') ->> 'id'");
like($key_id, qr/^[0-9a-f-]{36}$/, 'an SSH key is added in releases' . ($faults ? ' (no quorum)' : ''));
dbq('inventory', q{SELECT api.admin_register_node('node-3', 'abc125', 'a100x8')});
if ($faults) {
sleep(3);
is(dbq('releases', "SELECT count(*) FROM pgcloud.outbox WHERE event_type = 'ssh_key.added' AND published_at IS NULL"), '1',
    'without a quorum ssh_key.added waits in the releases outbox');
sleep(10 - (time() - $lost)) if time() - $lost < 10;
($rc, $out) = script('up', $shape);
is($rc, 0, 'n2 and n3 start again after 10 s') or diag($out);
like($out, qr/current=3/, 'the stream has a quorum and its 3 replicas current again');
}
is(wait_q('provisioning', "SELECT count(*) FROM pgcloud.inbox WHERE subscriber = 'provisioning' AND event_type = 'ssh_key.added'", '1', 120),
    '1', 'provisioning received ssh_key.added once');
is(wait_q('provisioning', q{SELECT string_agg(state, ',' ORDER BY hostname) FROM provisioning.nodes}, 'ready,ready,ready', 120),
    'ready,ready,ready', 'the node registered without a quorum is commissioned and ready');
diag(sprintf('the quorum loss was over %.1f s after it began', time() - $lost)) if $faults;

# ---- SSH key, allocation deployed by MAAS, certificate ---------------------------------------------
my $alloc = as_user_on('provisioning', "SELECT api.create_allocation('a100x8', 'ubuntu-22.04', ARRAY['$key_id']::uuid[]) ->> 'id'");
like($alloc, qr/^[0-9a-f-]{36}$/, 'an allocation is requested');
is(wait_q('provisioning', "SELECT state FROM provisioning.allocations WHERE id = '$alloc'", 'active', 60), 'active',
    'provisioning -> maas -> fake MAAS -> provisioning: the allocation is active');
is(wait_q('releases', "SELECT count(*) FROM pgcloud.inbox WHERE subscriber = 'releases' AND event_type = 'allocation.activated'", '1'), '1',
    'releases saw the allocation activated');
like(as_user_on('releases', "SELECT api.mint_access('$alloc', '$key')::text"), qr/ssh-ed25519-cert-v01\@openssh\.com/,
    'releases mints an OpenSSH certificate for the active allocation');
ok(wait_q('billing', "SELECT count(*) >= 1 FROM billing.usage_records WHERE allocation_id = '$alloc'", 't', 30) eq 't',
    'billing meters the allocation') or diag(
    "billing's read model of the allocation: ",
    qdiag('billing', "SELECT row_to_json(a)::text FROM billing.allocations a WHERE allocation_id = '$alloc'"),
    "\nbilling's events: ",
    qdiag('billing', "SELECT string_agg(format('%s %s', event_type, processed_at), '; ' ORDER BY processed_at) FROM pgcloud.inbox WHERE subscriber = 'billing'"),
    "\nthe accrual job: ",
    qdiag('billing', "SELECT row_to_json(j)::text FROM pgcloud.scheduled_jobs j WHERE name = 'billing.accrue'"),
    "\nthe policy: ", qdiag('billing', "SELECT pgcloud.policy('billing.accrual_interval_seconds', NULL::int)"),
    "\nwho holds a lock on billing.allocations: ",
    qdiag('billing', "SELECT string_agg(format('pid %s %s %s granted=%s xact_start=%s state=%s query=%s', l.pid, l.locktype, l.mode, l.granted, a.xact_start, a.state, left(a.query, 120)), '; ') FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE (l.relation = 'billing.allocations'::regclass AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())) OR (l.locktype = 'transactionid' AND NOT l.granted)"),
    "\nnow: ", qdiag('billing', 'SELECT clock_timestamp()'));

# ---- session revocation: auth -> every database's pre-request ------------------------------------
my ($r0) = dbq('billing', "SET request.jwt.claims = '$claims'; SET ROLE pgcloud_user; SELECT pgcloud.pre_request()", fail_ok => 1);
is($r0, 0, "before logout the billing database's pre-request lets the session through");
as_user_on('auth', 'SELECT api.logout()');
my $t0 = time();
my $refused = 0;
while (time() - $t0 < 5) {
    my ($r, undef, $err) = dbq('billing', "SET request.jwt.claims = '$claims'; SET ROLE pgcloud_user; SELECT pgcloud.pre_request()", fail_ok => 1);
    if ($r != 0 && $err =~ /session_revoked|revoked/) { $refused = 1; last }
    sleep(0.1);
}
ok($refused, sprintf('the billing database (another cluster) refuses the revoked session after %.1f s', time() - $t0));
my (undef, undef, $perr) = dbq('provisioning', "SET request.jwt.claims = '$claims'; SET ROLE pgcloud_user; SELECT pgcloud.pre_request()", fail_ok => 1);
like($perr, qr/revoked/, 'so does the provisioning database (a third cluster)');
# Every database refuses it, also those whose services do not subscribe to
# session.revoked (pgcloud_databases subscribes to nothing at all: it has a
# durable of its own for this).
for my $svc (qw(terminal appruntime databases admin)) {
    my $got = 0;
    my $t1 = time();
    while (time() - $t1 < 10) {
        my (undef, undef, $e) = dbq($svc, "SET request.jwt.claims = '$claims'; SET ROLE pgcloud_user; SELECT pgcloud.pre_request()", fail_ok => 1);
        if ($e =~ /revoked/) { $got = 1; last }
        sleep(0.2);
    }
    ok($got, "the $svc database ($cluster{$svc} cluster) refuses the revoked session too");
}
$claims = qq{{"role": "pgcloud_user", "sub": "$sub"}};    # a fresh session, as it were

# ---- signing-key rotation: every database and PostgREST config has the key before it signs ---------
($rc, $out) = script('keys', $shape);
is($rc, 0, 'scripts/multicluster.sh keys') or diag($out);
my $old_set = slurp_file("$dir/postgrest/billing.jwks.json");
my $rot = dbq('auth', q{SELECT api.admin_rotate_signing_key(40)::text});
my ($new_kid) = $rot =~ /"kid": "([^"]+)"/;
my ($activates) = $rot =~ /"activates_at": "([^"]+)"/;
ok($new_kid, "a signing key is rotated in, to sign at $activates");
if ($nats) {
my $learnt = 0;
for my $svc (sort keys %db) {
    next if $svc eq 'auth';
    $learnt++ if wait_q($svc, "SELECT pgcloud.published_jwks()::text LIKE '%$new_kid%'", 't', 40) eq 't';
}
is($learnt, 12, 'every other database learnt the new key (signing_key.published)') or why_stalled();
}
($rc, $out) = script('keys', $shape);
is($rc, 0, 'the PostgREST configurations are written again') or diag($out);
is(scalar(() = $out =~ /^keys \w+ (?:auth|learnt) [^\n]*\Q$new_kid\E/mg), 13,
    "each service's jwt-secret, from its own database, holds the new key");
is(dbq('auth', "SELECT now() < '$activates'"), 't', '... before it signs');
like(slurp_file("$dir/postgrest/billing.conf"), qr{^jwt-secret = "\@\Q$dir\E/postgrest/billing\.jwks\.json"$}m,
    "billing's PostgREST configuration points at its own key file");
sleep(0.5) while dbq('auth', "SELECT now() < '$activates'") eq 't';
my $token2 = dbq('auth', q{SET ROLE pgcloud_anon; SELECT api.dev_login('multi@example.com') ->> 'access_token'});
my ($head2) = split /\./, $token2;
$head2 =~ tr{-_}{+/};
$head2 .= '=' x ((4 - length($head2) % 4) % 4);
like(decode_base64($head2), qr/"kid"\s*:\s*"\Q$new_kid\E"/, 'after its activation time the new key signs');
my $billing_set = slurp_file("$dir/postgrest/billing.jwks.json");
chomp $billing_set;
like(dbq('auth', "SELECT auth.jwt_verify('$token2', '$billing_set'::jsonb) ->> 'sub'"), qr/^$sub$/,
    "billing's PostgREST keys verify the token");
my (undef, undef, $verr) = dbq('auth', "SELECT auth.jwt_verify('$token2', '$old_set'::jsonb)", fail_ok => 1);
like($verr, qr/\S/, 'the key set of before the rotation would not have (the refresh mattered)');

# ---- the money cluster stopped for 30 s while the allocation is released ------------------------------
my $stopped = time();
if ($multi) {
($rc, $out) = script('cluster-stop', 'money');
is($rc, 0, 'the money cluster (billing, payments, releases, terminal) is stopped') or diag($out);
$stopped = time();
}
as_user_on('provisioning', "SELECT api.release_allocation('$alloc')");
is(wait_q('provisioning', "SELECT state FROM provisioning.allocations WHERE id = '$alloc'", 'released', 30), 'released',
    'the other clusters go on: the allocation is released through MAAS');
if ($multi) {
sleep(30 - (time() - $stopped)) if time() - $stopped < 30;
($rc, $out) = script('cluster-start', 'money');
is($rc, 0, 'the money cluster starts again after 30 s') or diag($out);
}
is(wait_q('billing', "SELECT ended_at IS NOT NULL AND settled FROM billing.allocations WHERE allocation_id = '$alloc'", 't', 60), 't',
    'billing caught up: allocation.released applied, usage settled');
is(wait_q('releases', "SELECT count(*) FROM pgcloud.inbox WHERE subscriber = 'releases' AND event_type = 'allocation.released'", '1'), '1',
    'releases caught up too');

# ---- nothing lost, nothing applied twice ----------------------------------------------------------
is(dbq('billing', 'SELECT count(*) FROM billing.verify_ledger()'), '0', 'verify_ledger: consistent');
is(dbq('billing', "SELECT balance = (SELECT sum(amount) FROM billing.ledger_entries WHERE account_id = '$sub') FROM billing.balances WHERE account_id = '$sub'"),
    't', 'balance = sum of entries');
is(dbq('billing', "SELECT count(*) FROM billing.ledger_entries WHERE account_id = '$sub' AND kind = 'credit'"), '1',
    'the top-up is credited once');
my ($published, $dead, $pending) = (0, 0, 0);
for my $svc (sort keys %db) {
    is(wait_q($svc, 'SELECT count(*) FROM pgcloud.outbox WHERE published_at IS NULL', '0', 60), '0', "$svc: outbox drained");
    $published += dbq($svc, 'SELECT count(*) FROM pgcloud.outbox');
    $dead += dbq($svc, 'SELECT count(*) FROM pgcloud.dead_letters');
}
is($dead, 0, 'no dead letters in any database');
if ($nats) {
my $operator = "tls://pgcloud_operator:" . `sed -n 's/^PGCLOUD_NATS_PASSWORD_OPERATOR=//p' $dir/nats/passwords.env`;
chomp $operator;
my ($nport) = slurp_file("$dir/nats/n2.conf") =~ /^listen: 127\.0\.0\.1:(\d+)$/m;
$ENV{NATSTOOL_CA} = "$dir/certs/ca.pem";
$ENV{NATSTOOL_INBOX} = '_INBOX_pgcloud_operator';
# Jobs keep emitting (billing's accrual, the MAAS poller): the stream is
# compared with the outboxes at a moment when no database emitted between
# two counts of them and every outbox row is published.
my $info;
my $count_outboxes = sub {
    my $n = 0;
    for my $svc (sort keys %db) {
        $n += dbq($svc, 'SELECT count(*) FROM pgcloud.outbox');
        $n += 1_000_000 * dbq($svc, 'SELECT count(*) FROM pgcloud.outbox WHERE published_at IS NULL');
    }
    return $n;
};
my $quiet_deadline = time() + 60;
while (1) {
    my $before = $count_outboxes->();
    $info = `$dir/bin/natstool info $operator\@127.0.0.1:$nport PGCLOUD_EVENTS`;
    my $after = $count_outboxes->();
    $published = $after;
    last if ($before == $after && $info =~ /messages=$after\b/) || time() > $quiet_deadline;
    sleep(1);
}
like($info, qr/messages=$published\b/, "the stream holds each of the $published events exactly once ($info)") or do {
    # Which messages: those no outbox holds, and those stored twice (their
    # Nats-Msg-Id, the event id, and the relay's published time).
    my %ids;
    for my $svc (sort keys %db) {
        $ids{$_} = $svc for split /\n/, dbq($svc, q{SELECT event_id || ' ' || event_type || ' published ' || published_at FROM pgcloud.outbox});
    }
    my %outbox = map { (split / /)[0] => $_ } keys %ids;
    my %seen;
    for my $m (split /\n/, `$dir/bin/natstool read $operator\@127.0.0.1:$nport PGCLOUD_EVENTS 'pgcloud.>' 100000`) {
        my ($id) = $m =~ /"Nats-Msg-Id": "([^"]+)"/;
        my ($subject) = $m =~ /"subject": "([^"]+)"/;
        $id //= '(no Nats-Msg-Id)';
        diag("in the stream twice: $subject $id (outbox: " . ($outbox{$id} // '-') . ')') if $seen{$id}++;
        diag("in the stream, in no outbox: $subject $id") unless $outbox{$id};
    }
    why_stalled();
};
}
# Every event applied once per subscriber: each inbox row is unique by
# construction; each subscribed event has one.
for my $svc (qw(billing releases payments notification storage admin)) {
    is(wait_q($svc, "SELECT count(*) FROM pgcloud.inbox WHERE subscriber = '$svc' AND event_type = 'user.created'", '1', 60), '1',
        "$svc applied user.created once") or why_stalled();
}

# Every event of every outbox applied exactly once by every subscriber of its
# type, in whichever database and cluster that subscriber lives.
my %events;
for my $svc (sort keys %db) {
    for my $row (split /\n/, dbq($svc, q{SELECT event_id || ' ' || event_type FROM pgcloud.outbox})) {
        my ($id, $type) = split / /, $row;
        $events{$id} = $type;
    }
}
my $values = join(',', map { "('$_'::uuid, '$events{$_}')" } sort keys %events);
my ($missing, $applied, $stray, @short);
my $apply_deadline = time() + 90;    # every outbox is drained: what is published is applied soon
while (1) {
($missing, $applied, $stray, @short) = (0, 0, 0);
for my $svc (sort keys %db) {
    next unless dbq($svc, "SELECT count(*) FROM pgcloud.subscriptions WHERE subscriber = '$svc'") > 0;
    my ($m, $a, $x) = split /\|/, dbq($svc, qq{
        WITH v(id, t) AS (VALUES $values)
        SELECT (SELECT count(*) FROM v WHERE pgcloud.is_subscribed('$svc', v.t)
                   AND NOT EXISTS (SELECT 1 FROM pgcloud.inbox i WHERE i.subscriber = '$svc' AND i.event_id = v.id)),
               (SELECT count(*) FROM pgcloud.inbox i WHERE i.subscriber = '$svc'),
               (SELECT count(*) FROM pgcloud.inbox i WHERE i.subscriber = '$svc' AND NOT EXISTS (SELECT 1 FROM v WHERE v.id = i.event_id))});
    push @short, "$svc: $m subscribed events not applied" if $m;
    ($missing, $applied, $stray) = ($missing + $m, $applied + $a, $stray + $x);
}
last if $missing == 0 || time() > $apply_deadline;
sleep(1);
}
is($missing, 0, sprintf('every one of the %d events was applied by every subscriber of its type (%d applications)',
    scalar(keys %events), $applied)) or do { diag($_) for @short; why_stalled() };
is($stray, 0, 'no subscriber applied an event that no outbox holds');

# ---- jobs, policy and read models where each service lives ----------------------------------------------
if ($nats) {
my $foreign = 0;
for my $svc (sort keys %db) {
    $foreign += dbq($svc, "SELECT count(*) FROM pgcloud.jobs WHERE service NOT IN ('core', '$svc')");
}
is($foreign, 0, "no database schedules another service's job");
}
is(dbq('billing', q{SELECT runs > 0 AND last_status = 'succeeded' FROM pgcloud.jobs WHERE job = 'billing.accrue'}), 't',
    "billing's accrual ran in billing's database (money cluster)");
is(dbq('maas', q{SELECT runs > 0 AND last_status = 'succeeded' FROM pgcloud.jobs WHERE job = 'maas.poll'}), 't',
    "the MAAS poller ran in maas's database (capacity cluster)");
is(dbq('billing', q{SELECT pgcloud.policy('billing.accrual_interval_seconds', NULL::int)}), '2',
    "billing's policy was changed where billing lives (and took effect there: it metered)");
isnt(dbq('admin', q{SELECT pgcloud.policy('billing.accrual_interval_seconds', NULL::int)}), '2',
    '... and nowhere else') if $nats;
is(wait_q('admin', "SELECT email || ' ' || balance || ' ' || standing FROM admin.users WHERE user_id = '$sub'",
    dbq('billing', "SELECT 'multi\@example.com ' || balance || ' good' FROM billing.balances WHERE account_id = '$sub'"), 30),
    dbq('billing', "SELECT 'multi\@example.com ' || balance || ' good' FROM billing.balances WHERE account_id = '$sub'"),
    "admin's read model (identity cluster) has the user with billing's balance and standing (money cluster)");
is(wait_q('admin', "SELECT state FROM admin.allocations WHERE allocation_id = '$alloc'", 'released', 30), 'released',
    "... and the allocation as provisioning (capacity cluster) left it");
is(wait_q('admin', q{SELECT count(*) FROM admin.nodes}, '3', 30), '3', '... and the three nodes');
wait_q('notification', "SELECT count(DISTINCT event_type) FROM notification.emails WHERE user_id = '$sub'
    AND event_type IN ('allocation.activated', 'payment.succeeded')", '2', 60);
like(dbq('notification', "SELECT string_agg(DISTINCT event_type, ',' ORDER BY event_type) FROM notification.emails WHERE user_id = '$sub'"),
    qr/allocation\.activated.*payment\.succeeded/,
    'notification (identity cluster) wrote the e-mails of the allocation and the payment (other clusters)') or why_stalled();

# ---- the operator's view ------------------------------------------------------------------------
($rc, $out) = script('lag', $shape);
is($rc, 0, 'scripts/multicluster.sh lag gathers every database');
my $ndb = scalar(keys %{ { map { $_ => 1 } values %db } });
is(scalar(() = $out =~ /^\w+ pgcloud\w* outbox pending=0 /mg), $ndb, "outbox lag of all $ndb databases, nothing pending");
like($out, qr/^\w+ pgcloud_databases durable databases applied=\d+/m, 'pgcloud_databases has a durable of its own') if $nats;
like($out, qr/^$cluster{billing} $db{billing} durable billing applied=\d+/m, 'applied events per durable');
like($out, qr/^nats n\d durable billing pending \d+ ack_pending \d+/m, "and each durable's backlog in JetStream") if $nats;

why_stalled() unless Test::More->builder->is_passing;
($rc, $out) = script('down', $shape);
$down_done = 1;
is($rc, 0, 'scripts/multicluster.sh down') or diag($out);
$stripe->stop;
$maas->stop;
done_testing();
