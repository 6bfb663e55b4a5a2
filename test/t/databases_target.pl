# databases: managed PostgreSQL on a second, real cluster (the target server).
# Provisioning, the URI with psql and psycopg2, isolation between customers,
# redeploy, idempotent replay, no plaintext password anywhere, rotation with
# grace, deletion, and kill -9 of the target and of the platform during
# provisioning.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use PgcloudTest;
use JSON::PP qw(decode_json);

my $node = pgcloud_node('platform');
my $target = PostgreSQL::Test::Cluster->new('target');
$target->init;
$target->append_conf('postgresql.conf', "listen_addresses = '127.0.0.1'\nlog_statement = 'all'\n");
# Customers and the platform's administrator come over TCP with SCRAM; the harness over the socket.
open my $hba, '>', $target->data_dir . '/pg_hba.conf' or die;
print $hba "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n";
close $hba;
$target->start;
$target->safe_psql('postgres', "CREATE ROLE tadmin SUPERUSER LOGIN PASSWORD 'admin-secret-9'");
my $tport = $target->port;

sub pq { my ($sql) = @_; return $node->safe_psql('postgres', $sql); }
sub tq { my ($sql) = @_; return $target->safe_psql('postgres', $sql); }

# Runs $sql as user $uid (a request as PostgREST makes it); returns (rc, stdout, stderr).
sub as_user_with_key {
    my ($uid, $sql, $key) = @_;
    my $headers = $key ? qq({"x-idempotency-key": "$key"}) : '{}';
    my ($rc, $out, $err) = $node->psql('postgres', qq{
        BEGIN;
        SET LOCAL request.jwt.claims = '{"role": "pgcloud_user", "sub": "$uid"}';
        SET LOCAL request.headers = '$headers';
        $sql;
        COMMIT;});
    return ($rc, $out, $err);
}
sub user_json {
    my ($uid, $sql, $key) = @_;
    my ($rc, $out, $err) = as_user_with_key($uid, $sql, $key);
    die "as_user_with_key failed: $err" if $rc != 0;
    return $out;
}
# A field of a JSON result, parsed here (so no URI travels back into a logged statement).
sub jget {
    my ($json, $path) = @_;
    my $v = decode_json($json);
    for my $k (split /,/, $path) {
        $v = ref($v) eq 'ARRAY' ? $v->[$k] : $v->{$k};
    }
    return defined $v ? "$v" : '';
}
sub uri_psql {
    my ($uri, $sql) = @_;
    my ($stdout, $stderr) = ('', '');
    my $ok = IPC::Run::run([$node->installed_command('psql'), '-XAtq', '-d', $uri, '-c', $sql],
        '>', \$stdout, '2>', \$stderr);
    chomp $stdout;
    return ($ok, $stdout, $stderr);
}

my $alice = '0a0a0a0a-0000-4000-8000-00000000000a';
my $bob   = '0b0b0b0b-0000-4000-8000-00000000000b';

# ---- operator registers the target --------------------------------------------------------
my ($rc, $out, $err) = $node->psql('postgres',
    "SELECT api.admin_register_database_server('t1', '127.0.0.1', $tport, 'tadmin', 'wrong-password')");
like($err, qr/database_server_unreachable/, 'a wrong admin password: database_server_unreachable');
is(pq('SELECT count(*) FROM databases.servers'), '0', '... and no server row');
my $server = pq("SELECT api.admin_register_database_server('t1', '127.0.0.1', $tport, 'tadmin', 'admin-secret-9') ->> 'id'");
like($server, qr/^[0-9a-f-]{36}$/, 'server registered');
is(pq("SELECT major_version FROM databases.servers WHERE id = '$server'"), $target->safe_psql('postgres', "SELECT current_setting('server_version_num')::int / 10000"),
   'its major version recorded');
is(pq("SELECT position('admin-secret-9' IN encode(admin_password_sealed, 'escape')) FROM databases.servers"), '0',
   'the admin password is sealed');
($rc, $out, $err) = as_user_with_key($alice, "SELECT api.admin_register_database_server('t2', '127.0.0.1', $tport, 'tadmin', 'admin-secret-9')");
like($err, qr/forbidden/, 'a user cannot register a server');

# ---- alice creates a database service with deploy_now ----------------------------------
my $env = jget(user_json($alice, "SELECT api.create_environment('production')"), 'id');
my $created = user_json($alice, "SELECT api.create_database_service('$env', 'Orders DB', 'postgres', '$server', true)", 'create-1');
my $svc = jget($created, 'service,id');
my $dep = jget($created, 'deployment_id');
my $uri = jget($created, 'connection_uri');
is(jget($created, 'deployment_status'), 'running', 'the deployment is running when the call returns');
is(jget($created, 'service,visibility'), 'private', 'visibility is private');
like($uri, qr{^postgresql://u[0-9a-f]{16}:[A-Za-z0-9_-]{43}\@127\.0\.0\.1:$tport/orders_db_[0-9a-f]{8}$}, 'URI with generated user, 32-byte password, database from the slug');
my ($password) = $uri =~ m{://[^:]+:([^@]+)@};
my ($user) = $uri =~ m{://([^:]+):};
my ($dbname) = $uri =~ m{/([a-z0-9_]+)$};
is(jget(user_json($alice, "SELECT api.get_deployment('$dep')"), 'status'), 'running', 'api.get_deployment shows running');

my ($ok, $res, $e) = uri_psql($uri, 'CREATE TABLE orders (id int PRIMARY KEY, item text); INSERT INTO orders VALUES (1, $$tea$$); SELECT item FROM orders');
ok($ok, 'psql connects with the URI') or diag($e);
is($res, 'tea', '... creates a table and reads it back');
my $py = `/usr/bin/python3 -c 'import psycopg2, sys; c = psycopg2.connect(sys.argv[1]); cur = c.cursor(); cur.execute("SELECT item FROM orders WHERE id = 1"); print(cur.fetchone()[0])' '$uri' 2>&1`;
chomp $py;
is($py, 'tea', 'psycopg2 connects with the URI and reads the row');

# On the server: role with a SCRAM password, database owned by the service's owner role, no PUBLIC connect.
is(tq("SELECT left(rolpassword, 13) FROM pg_authid WHERE rolname = '$user'"), 'SCRAM-SHA-256', 'login role with a SCRAM verifier');
is(tq("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '$dbname'"), "${dbname}_owner", 'database owned by the service role');
is(tq("SELECT datconnlimit FROM pg_database WHERE datname = '$dbname'"), '20', 'connection limit from policy');
is(tq("SELECT count(*) FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = '$dbname' AND a.grantee = 0"), '0',
   'no privilege for PUBLIC on the database');

# ---- idempotent replay --------------------------------------------------------------------
my $replay = user_json($alice, "SELECT api.create_database_service('$env', 'Orders DB', 'postgres', '$server', true)", 'create-1');
is(jget($replay, 'service,id'), $svc, 'a replay returns the same service');
is(jget($replay, 'deployment_id'), $dep, '... and the same deployment');
is(jget($replay, 'connection_uri'), '', '... without the password');
is(pq("SELECT count(*) FROM databases.services"), '1', '... and creates nothing');
my $conn = user_json($alice, "SELECT api.get_database_connection('$svc')");
is(jget($conn, 'connection_uri'), $uri, 'api.get_database_connection shows the URI to the owner');
is(pq("SELECT count(*) FROM pgcloud.audit_logs WHERE action = 'service.reveal_connection' AND target_id = '$svc'"), '1', '... audited');
is(pq("SELECT count(*) FROM pgcloud.audit_logs WHERE action = 'service.create_database' AND target_id = '$svc'"), '1', 'service.create_database audited once');
is(pq("SELECT count(*) FROM pgcloud.outbox WHERE event_type = 'service.created' AND aggregate_id = '$svc'"), '1', 'service.created emitted');
is(pq("SELECT string_agg(payload ->> 'to', ',' ORDER BY id) FROM pgcloud.outbox WHERE event_type = 'deployment.state_changed' AND payload ->> 'deployment_id' = '$dep'"),
   'pending,provisioning,running', 'deployment.state_changed for each state');
is(pq("SELECT string_agg(key || ':' || kind, ',' ORDER BY key) FROM databases.config WHERE service_id = '$svc'"),
   'POSTGRES_DB:variable,POSTGRES_PASSWORD:secret,POSTGRES_USER:variable', 'config: user and db variables, password secret');

# ---- another customer ------------------------------------------------------------------------
($rc, $out, $err) = as_user_with_key($bob, "SELECT api.get_database_connection('$svc')");
like($err, qr/database_service_not_found/, 'another user cannot see the connection');
($rc, $out, $err) = as_user_with_key($bob, "SELECT api.create_database_service('$env', 'sneaky', 'postgres', '$server', true)");
like($err, qr/environment_not_found/, 'another user cannot create in the environment');
my $benv = jget(user_json($bob, "SELECT api.create_environment('bobs')"), 'id');
my $bob_created = user_json($bob, "SELECT api.create_database_service('$benv', 'Orders DB', 'postgres', '$server', true)");
my $bob_uri = jget($bob_created, 'connection_uri');
(my $cross = $bob_uri) =~ s{/[a-z0-9_]+$}{/$dbname};
($ok, $res, $e) = uri_psql($cross, 'SELECT count(*) FROM orders');
ok(!$ok, "another customer's credentials cannot reach this database");
like($e, qr/permission denied for database/, '... refused by CONNECT');
($ok, $res, $e) = uri_psql($bob_uri, 'SELECT current_database()');
ok($ok, "... while bob's own URI works");

# ---- redeploy keeps the data ----------------------------------------------------------------
my $redeploy = user_json($alice, "SELECT api.deploy_database_service('$svc')");
is(jget($redeploy, 'deployment_status'), 'running', 'a redeploy runs');
is(pq("SELECT status FROM databases.deployments WHERE id = '$dep'"), 'stopped', '... and stops the first deployment');
($ok, $res, $e) = uri_psql($uri, 'SELECT item FROM orders WHERE id = 1');
is($res, 'tea', 'the data survives the redeploy');

# ---- rotation ----------------------------------------------------------------------------------
pq("SELECT pgcloud.set_policy('databases.rotation_grace_seconds', '600')");
my $rot = user_json($alice, "SELECT api.rotate_database_credentials('$svc')");
my $new_uri = jget($rot, 'connection_uri');
isnt($new_uri, $uri, 'rotation returns a new URI');
($ok, $res, $e) = uri_psql($new_uri, 'SELECT item FROM orders WHERE id = 1');
is($res, 'tea', 'the new password works at once and sees the data');
($ok, $res, $e) = uri_psql($uri, 'INSERT INTO orders VALUES (2, $$cake$$) RETURNING item');
is($res, 'cake', 'the old password still works during the grace period');
is(pq("SELECT round(extract(epoch FROM remove_after - now()) / 60) FROM databases.credentials WHERE username = '$user'"), '10',
   '... which ends rotation_grace_seconds after the rotation');
# The grace ends (time moved on, not waited for): the deployer then removes the login.
pq("UPDATE databases.credentials SET remove_after = now() WHERE username = '$user'; SELECT pgcloud.wake_scheduler()");
is(wait_until($node, "SELECT status FROM databases.credentials WHERE username = '$user'", 'removed', 60), 'removed',
   'after the grace the deployer removes the old login');
($ok, $res, $e) = uri_psql($uri, 'SELECT 1');
ok(!$ok, 'the old password no longer works');
($ok, $res, $e) = uri_psql($new_uri, 'SELECT string_agg(item, $$,$$ ORDER BY id) FROM orders');
is($res, 'tea,cake', 'the new one does, with all the data');
$uri = $new_uri;
($password) = $uri =~ m{://[^:]+:([^@]+)@};

# ---- no plaintext password anywhere ----------------------------------------------------------
my $bob_password = ($bob_uri =~ m{://[^:]+:([^@]+)@})[0];
my $found = 0;
for my $rel (split /\n/, pq(q{SELECT c.oid::regclass FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
                               WHERE c.relkind = 'r' AND s.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')})) {
    my $rows = pq("SELECT t::text FROM $rel t");
    if (index($rows, $password) >= 0 || index($rows, $bob_password) >= 0 || index($rows, 'admin-secret-9') >= 0) {
        diag("password found in $rel");
        $found++;
    }
}
is($found, '0', 'no table holds a password in plaintext (outbox, audit log, idempotency keys included)');
ok(pq("SELECT count(*) FROM pgcloud.outbox") > 5, '... while there are events to look through');
for my $n ($node, $target) {
    my $log = slurp_file($n->logfile);
    for my $line (split /\n/, $log) {
        diag('password in the log: ' . $n->name . ": $line") if index($line, $password) >= 0 || index($line, $bob_password) >= 0;
    }
    unlike($log, qr/\Q$password\E|\Q$bob_password\E/, 'no password in the server log of ' . $n->name . ' (both log every statement)');
}
like(slurp_file($target->logfile), qr/SCRAM-SHA-256/, '... which shows the target got only the verifier');

# ---- kill -9 of the target during provisioning ---------------------------------------------
pq("SELECT pgcloud.set_policy('databases.inline_provisioning', 'false')");
pq("SELECT pgcloud.set_policy('databases.deploy_retry_base_seconds', '1')");
my $c2 = user_json($alice, "SELECT api.create_database_service('$env', 'crashy', 'postgres', '$server', false)");
my $svc2 = jget($c2, 'service,id');
my $db2 = jget($c2, 'service,database');
is(jget($c2, 'deployment_id'), '', 'without deploy_now: no deployment');
is(tq("SELECT count(*) FROM pg_database WHERE datname = '$db2'"), '0', '... and nothing on the server');
# Hold the owner role's name in an open transaction: the deployer's role step waits on it.
my $blocker = $target->background_psql('postgres', on_error_stop => 0);
$blocker->query_safe("BEGIN; CREATE ROLE ${db2}_owner;");
my $dep2 = jget(user_json($alice, "SELECT api.deploy_database_service('$svc2')"), 'deployment_id');
is(wait_until($target, "SELECT count(*) > 0 FROM pg_stat_activity WHERE application_name = 'pgcloud databases' AND wait_event_type = 'Lock'", 't', 60),
   't', 'the deployer is mid-provisioning (database made, roles waiting)');
is(tq("SELECT count(*) FROM pg_database WHERE datname = '$db2'"), '1', '... the database exists');
is(pq("SELECT status FROM databases.deployments WHERE id = '$dep2'"), 'provisioning', '... state provisioning');
$target->kill9;
eval { $blocker->quit };
restart_after_crash($target);
is(wait_until($node, "SELECT status FROM databases.deployments WHERE id = '$dep2'", 'running', 90), 'running',
   'after kill -9 and restart of the target the deployment converges to running');
like(pq("SELECT string_agg(coalesce(reason, ''), '|' ORDER BY id) FROM databases.deployment_history WHERE deployment_id = '$dep2'"),
     qr/server/, 'the failed attempt left its reason in the history');
is(tq(q{SELECT count(*) FROM pg_roles r WHERE r.rolname ~ '^[a-z0-9_]+_owner$' AND r.rolname !~ '^pg_'
        AND NOT EXISTS (SELECT 1 FROM pg_database d WHERE d.datname || '_owner' = r.rolname)}), '0',
   'no owner role without its database');
my $uri2 = jget(user_json($alice, "SELECT api.get_database_connection('$svc2')"), 'connection_uri');
($ok, $res, $e) = uri_psql($uri2, 'SELECT current_user');
is($res, "${db2}_owner", 'its URI connects (acting as the owner role)');

# ---- kill -9 of the platform during provisioning --------------------------------------------
my $c3 = user_json($alice, "SELECT api.create_database_service('$env', 'platform crash', 'postgres', '$server', false)");
my $svc3 = jget($c3, 'service,id');
my $db3 = jget($c3, 'service,database');
$blocker = $target->background_psql('postgres', on_error_stop => 0);
$blocker->query_safe("BEGIN; CREATE ROLE ${db3}_owner;");
my $dep3 = jget(user_json($alice, "SELECT api.deploy_database_service('$svc3')"), 'deployment_id');
is(wait_until($target, "SELECT count(*) > 0 FROM pg_stat_activity WHERE application_name = 'pgcloud databases' AND wait_event_type = 'Lock'", 't', 60),
   't', 'the deployer is mid-provisioning again');
$node->kill9;
restart_after_crash($node);
$blocker->query_safe("ROLLBACK");
$blocker->quit;
is(wait_until($node, "SELECT status FROM databases.deployments WHERE id = '$dep3'", 'running', 90), 'running',
   'after kill -9 of the platform the deployment converges to running');
is(tq("SELECT count(*) FROM pg_database WHERE datname = '$db3'"), '1', '... with its database');

# ---- a server that stays down: failed, with the reason ------------------------------------
pq("SELECT pgcloud.set_policy('databases.deploy_max_attempts', '2')");
$target->stop('immediate');
my $c4 = user_json($alice, "SELECT api.create_database_service('$env', 'doomed', 'postgres', '$server', true)");
my $dep4 = jget($c4, 'deployment_id');
is(wait_until($node, "SELECT status FROM databases.deployments WHERE id = '$dep4'", 'failed', 60), 'failed',
   'a deployment whose server stays down fails');
like(jget(user_json($alice, "SELECT api.get_deployment('$dep4')"), 'reason'), qr/127\.0\.0\.1:$tport/, '... with its reason');
$target->start;
my $db4 = jget($c4, 'service,database');
is(tq("SELECT count(*) FROM pg_roles WHERE rolname LIKE '${db4}%'"), '0', '... and no role of it on the server');

# ---- the deployer is a job of the scheduler, not a worker of its own ----------------------
is(pq(q{SELECT string_agg(worker, ',' ORDER BY worker) FROM pgcloud.workers WHERE database = 'postgres'}),
   'consumer,http,relay,scheduler', 'no deployer worker: the workers are the launcher\'s relay, consumer, http and scheduler');
like(pq(q{SELECT schedule FROM pgcloud.jobs WHERE job = 'databases.deploy'}), qr/databases\.deployer_interval_ms.*when woken/,
   'databases.deploy is a scheduled job that also runs when woken');
ok(pq(q{SELECT runs > 0 AND failures = 0 FROM pgcloud.jobs WHERE job = 'databases.deploy'}) eq 't',
   '... it has run, and never failed') or diag(pq(q{SELECT last_error FROM pgcloud.jobs WHERE job = 'databases.deploy'}));
# Conditional locks: with a table of the service held exclusively the job steps aside (no wait, no deadlock).
my $locker = $node->background_psql('postgres', on_error_stop => 0);
$locker->query_safe('BEGIN; LOCK TABLE databases.deployments IN ACCESS EXCLUSIVE MODE;');
my $runs = pq(q{SELECT runs FROM pgcloud.jobs WHERE job = 'databases.deploy'});
pq('SELECT pgcloud.wake_scheduler()');
is(wait_until($node, qq{SELECT runs > $runs AND last_result LIKE 'busy%' FROM pgcloud.jobs WHERE job = 'databases.deploy'}, 't', 30), 't',
   'a locked table: the job returns busy at once instead of waiting');
$locker->query_safe('ROLLBACK');
$locker->quit;

# ---- deletion ------------------------------------------------------------------------------------
# The job's interval is made long: the deletion is done because delete_service wakes the scheduler.
$runs = pq(q{SELECT runs FROM pgcloud.jobs WHERE job = 'databases.deploy'});
pq("SELECT pgcloud.set_policy('databases.deployer_interval_ms', '600000')");
is(wait_until($node, qq{SELECT runs > $runs AND next_run > now() + interval '5 minutes' FROM pgcloud.jobs WHERE job = 'databases.deploy'}, 't', 30), 't',
   'after one more run the job is next due in 10 minutes');
pq("SELECT pgcloud.set_policy('databases.delete_grace_seconds', '0')");
my $del = user_json($alice, "SELECT api.delete_service('$svc')");
is(jget($del, 'status'), 'deleting', 'delete_service schedules the drop');
is(wait_until($node, "SELECT status FROM databases.services WHERE id = '$svc'", 'deleted', 30), 'deleted',
   'the deployer job deletes it after the grace, woken by the deletion (its interval is 10 minutes)');
is(tq("SELECT count(*) FROM pg_database WHERE datname = '$dbname'"), '0', 'its database is dropped on the server');
is(tq("SELECT count(*) FROM pg_roles WHERE rolname LIKE '${dbname}%' OR rolname = '$user'"), '0', '... and its roles');
is(pq("SELECT string_agg(DISTINCT status, ',') FROM databases.deployments WHERE service_id = '$svc'"), 'deleted', 'its deployments are deleted');
is(pq("SELECT count(*) FROM databases.config WHERE service_id = '$svc'"), '0', 'its config is gone');
is(pq("SELECT count(*) FROM pgcloud.audit_logs WHERE action IN ('service.delete', 'service.deleted') AND target_id = '$svc'"), '2', 'deletion audited');
my @listed = map { $_->{name} } @{ decode_json(user_json($alice, "SELECT api.list_services('$env')")) };
is(join(',', sort @listed), 'crashy,doomed,platform crash', 'a deleted service is not listed; the others are');

done_testing();
