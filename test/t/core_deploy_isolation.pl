# Shape (b) of registry/deployments.conf (one cluster, one database per
# service): no role of one service can connect to, or read, another
# service's database. deploy/per-service/dev/init.sql and pg_hba.conf
# (generated) give each service's PostgREST a login role of its own,
# pgcloud_authenticator_<service>, with CONNECT on its own database only; the
# shared pgcloud_authenticator, the worker roles and the service roles may not
# log in at all. Attacks: every service's role, with its own valid password,
# against every other database (refused by pg_hba.conf); the same with a
# permissive pg_hba.conf (refused by the missing CONNECT privilege); the
# worker roles, the shared authenticator and a service role through the
# socket and TCP; reading across databases through dblink/postgres_fdw.
# Shape (c) runs the same attacks across clusters in core_multicluster.pl.
use strict;
use warnings;
use lib $ENV{PGCLOUD_REPO} . '/test/t';
use PgcloudTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

my $repo = $ENV{PGCLOUD_REPO};
my $gen = "$repo/deploy/per-service";
my $node = PostgreSQL::Test::Cluster->new('deploy_isolation');
$node->init;
# No pgcloud.databases: no workers (nothing here needs events).
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'pgcloud'\nlisten_addresses = '127.0.0.1'\n");
$node->start;
my $port = $node->port;

my ($ret, $out, $err) = $node->psql('postgres', undef, extra_params => ['-f', "$gen/dev/init.sql"]);
is($ret, 0, 'deploy/per-service/dev/init.sql runs') or diag($err);

# service -> database, from the generated layout.
my %db;
for my $line (split /\n/, slurp("$gen/layout.tsv")) {
    next if $line =~ /^#/;
    my (undef, undef, $d, $svc) = split / /, $line;
    $db{$svc} = $d;
}
is(scalar(keys %db), 13, '13 service databases');
my @databases = ((sort values %db), 'postgres', 'template1');
for my $svc (sort keys %db) {
    $node->safe_psql('postgres', "ALTER ROLE pgcloud_authenticator_$svc PASSWORD 'pw-$svc'");
}
is(slurp("$gen/env/billing.env") =~ m{^DATABASE_URL=postgresql://pgcloud_authenticator_billing\@[^/]+/pgcloud_billing$}m ? 1 : 0, 1,
    "billing's DATABASE_URL names its own login role and database");

# The generated pg_hba.conf replaces the cluster's.
system('cp', "$gen/dev/pg_hba.conf", $node->data_dir . '/pg_hba.conf') == 0 or die;
$node->reload;

# Connects as $user (password $pw) to $db, over TCP or (tcp => 0) the socket;
# returns (ok, stderr).
sub try_connect {
    my ($user, $pw, $db, %o) = @_;
    my $host = ($o{tcp} // 1) ? '127.0.0.1' : $node->host;
    my ($stdout, $stderr) = ('', '');
    local $ENV{PGPASSWORD} = $pw // '';
    local $ENV{PGCONNECT_TIMEOUT} = 5;
    IPC::Run::run(['psql', '-X', '-w', '-tA', '-v', 'ON_ERROR_STOP=1', '-h', $host, '-p', $port, '-U', $user, '-d', $db,
                   '-c', 'SELECT current_database()'], '>', \$stdout, '2>', \$stderr);
    chomp $stdout;
    return ($? == 0 && $stdout eq $db, $stderr);
}

# ---- each service's PostgREST role: its own database, and no other -----------------------------------------
my ($own_ok, $refused, $total) = (0, 0, 0);
for my $svc (sort keys %db) {
    my ($ok, $e) = try_connect("pgcloud_authenticator_$svc", "pw-$svc", $db{$svc});
    $own_ok++ if $ok;
    diag("$svc to its own database: $e") unless $ok;
    for my $d (@databases) {
        next if $d eq $db{$svc};
        $total++;
        my ($ok2, $e2) = try_connect("pgcloud_authenticator_$svc", "pw-$svc", $d);
        if (!$ok2 && $e2 =~ /no pg_hba\.conf entry|rejects connection/) { $refused++ }
        else { diag("pgcloud_authenticator_$svc reached $d: ok=$ok2 $e2") }
    }
}
is($own_ok, 13, "each service's PostgREST role connects to its own database with its password");
is($refused, $total, "and is refused by pg_hba.conf by each of the other $total databases (incl. postgres, template1)");
my ($okw, $ew) = try_connect('pgcloud_authenticator_billing', 'wrong', 'pgcloud_billing');
ok(!$okw && $ew =~ /password authentication failed/, 'a wrong password is refused') or diag($ew);

# ---- roles that never log in: workers, the shared authenticator, service roles --------------------------------
my @never = qw(pgcloud_worker_relay pgcloud_worker_consumer pgcloud_worker_http pgcloud_authenticator
               pgcloud_svc_billing pgcloud_svc_auth pgcloud_svc_core pgcloud_admin pgcloud_service);
for my $role (@never) {
    my $bad = 0;
    for my $d (@databases) {
        for my $tcp (1, 0) {
            my ($ok, $e) = try_connect($role, 'x', $d, tcp => $tcp);
            if ($ok || $e !~ /rejects connection|no pg_hba\.conf entry|not permitted to log in/) {
                $bad++;
                diag("$role to $d (" . ($tcp ? 'tcp' : 'socket') . "): ok=$ok $e");
            }
        }
    }
    is($bad, 0, "$role cannot log in to any database, through TCP or the socket");
}

# ---- the privilege layer alone: with a permissive pg_hba.conf --------------------------------------------------
# Were pg_hba.conf wrong (trust for everyone), the missing CONNECT privilege
# still keeps each service's role, and the shared authenticator, out of
# every other database.
my $hba = $node->data_dir . '/pg_hba.conf';
my $generated = slurp($hba);
spew($hba, "host all all 127.0.0.1/32 trust\nlocal all all peer\n");
$node->reload;
($refused, $total) = (0, 0);
for my $svc (sort keys %db) {
    for my $d (@databases) {
        next if $d eq $db{$svc};
        $total++;
        my ($ok, $e) = try_connect("pgcloud_authenticator_$svc", undef, $d);
        if (!$ok && $e =~ /permission denied for database/) { $refused++ }
        else { diag("pgcloud_authenticator_$svc reached $d under trust: ok=$ok $e") }
    }
}
is($refused, $total, "under a permissive pg_hba.conf, CONNECT still refuses each service's role the $total other databases");
my $shared = 0;
for my $d (@databases) {
    my ($ok, $e) = try_connect('pgcloud_authenticator', undef, $d);
    $shared++ if !$ok && $e =~ /permission denied for database/;
}
is($shared, scalar(@databases), 'and the shared pgcloud_authenticator has CONNECT on no database of this shape');
# What the catalogue says, role by role: the only login roles with CONNECT on
# a service database are that service's PostgREST role and the cluster's
# background-worker roles (which pg_hba.conf never lets log in).
my $grants = $node->safe_psql('postgres', q{
    SELECT string_agg(r.rolname || '>' || d.datname, ' ' ORDER BY r.rolname, d.datname)
      FROM pg_roles r CROSS JOIN pg_database d
     WHERE r.rolcanlogin AND NOT r.rolsuper AND d.datname LIKE 'pgcloud\_%'
       AND has_database_privilege(r.oid, d.oid, 'CONNECT')
       AND r.rolname NOT LIKE 'pgcloud\_worker\_%'});
is($grants, join(' ', map { "pgcloud_authenticator_$_>$db{$_}" } sort keys %db),
    'no login role but its own PostgREST role may connect to a service database');
spew($hba, $generated);
$node->reload;

# ---- reading across databases -------------------------------------------------------------------------------
my ($ok, $e) = try_connect('pgcloud_authenticator_billing', 'pw-billing', 'pgcloud_billing');
ok($ok, 'billing role connects again under the generated pg_hba.conf');
for my $ext ('dblink', 'postgres_fdw') {
    local $ENV{PGPASSWORD} = 'pw-billing';
    my ($o, $er) = ('', '');
    IPC::Run::run(['psql', '-X', '-w', '-tA', '-v', 'ON_ERROR_STOP=1', '-h', '127.0.0.1', '-p', $port,
                   '-U', 'pgcloud_authenticator_billing', '-d', 'pgcloud_billing',
                   '-c', "SET ROLE pgcloud_admin; CREATE EXTENSION $ext"], '>', \$o, '2>', \$er);
    ok($? != 0 && $er =~ /permission denied|must be superuser|not available|is not available/,
        "billing's role (as pgcloud_admin) cannot install $ext to read another database") or diag($er);
}
my $bridges = 0;
for my $d (sort values %db) {
    $bridges += $node->safe_psql($d, q{SELECT count(*) FROM pg_extension WHERE extname IN ('dblink', 'postgres_fdw')});
}
is($bridges, 0, 'no database holds dblink or postgres_fdw');

$node->stop;
done_testing();
