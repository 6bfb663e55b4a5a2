# The upgrade path: every extension installed at each earlier release from
# its frozen install script (sql/history/<version>/), filled with data
# through the API of that release (a user and its session, an SSH key, a
# top-up on the ledger, a node, an allocation, a namespace, an environment,
# a checkout and its HTTP intent, events in the outbox and the inbox), then
# ALTER EXTENSION ... UPDATE for every extension. The catalogue must equal a
# fresh install of the current version in another database (functions with
# their definitions, volatility, security and settings; tables, columns,
# types, defaults, constraints, indexes, triggers, views, policies, grants,
# comments, extension membership, and the rows install scripts write), and
# the data must be intact (row counts of every table, the ledger verified,
# the balance), and the upgraded code must run.
# services: core auth inventory provisioning maas releases billing payments terminal appruntime storage admin notification databases
use strict;
use warnings;
use lib $ENV{PGCLOUD_REPO} . '/test/t';
use PgcloudTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;

my $repo = $ENV{PGCLOUD_REPO};
my $registry = slurp_file("$repo/registry/services.conf");
my ($current) = $registry =~ /^version\s*=\s*(\S+)/m;
my @services = $registry =~ /^\[service\.([a-z_]+)\]/mg;
my @extensions = ('pgcloud_core', (map { "pgcloud_$_" } @services), 'pgcloud');
opendir(my $dh, "$repo/sql/history") or die "sql/history: $!";
my @old = sort grep { /^\d+(\.\d+)*$/ && $_ ne $current } readdir $dh;
closedir $dh;
ok(@old > 0, "there are earlier releases to upgrade from (@old)");

# No pgcloud.databases: no workers, so the test drives delivery itself
# (pgcloud.relay_once) and nothing runs while the extensions change.
my $node = PostgreSQL::Test::Cluster->new('upgrade');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'pgcloud'\nmax_worker_processes = 16\n");
$node->start;

# The catalogue of a database, one line per fact, in a stable order.
my $catalog_sql = q{
WITH ext AS (
    SELECT e.oid, e.extname FROM pg_extension e WHERE e.extname = 'pgcloud' OR e.extname LIKE 'pgcloud\_%'
), member AS (
    SELECT d.classid, d.objid, x.extname FROM pg_depend d JOIN ext x ON x.oid = d.refobjid WHERE d.deptype = 'e'
), ns AS (
    SELECT n.oid, n.nspname FROM pg_namespace n JOIN member m ON m.classid = 'pg_namespace'::regclass AND m.objid = n.oid
)
SELECT line FROM (
  SELECT 'schema ' || n.nspname || ' owner=' || pg_get_userbyid(nn.nspowner)
         || ' acl=' || array_to_string(ARRAY(SELECT a::text FROM unnest(coalesce(nn.nspacl, acldefault('n', nn.nspowner))) a ORDER BY 1), ',')
         || ' comment=' || coalesce(obj_description(n.oid, 'pg_namespace'), '-') AS line, 1 AS part, n.nspname AS k, 0 AS n
    FROM ns n JOIN pg_namespace nn ON nn.oid = n.oid
  UNION ALL
  SELECT 'member ' || m.extname || ' ' || pg_describe_object(m.classid, m.objid, 0), 2, pg_describe_object(m.classid, m.objid, 0), 0
    FROM member m
  UNION ALL
  SELECT 'function ' || p.oid::regprocedure || ' owner=' || pg_get_userbyid(p.proowner)
         || ' acl=' || array_to_string(ARRAY(SELECT a::text FROM unnest(coalesce(p.proacl, acldefault('f', p.proowner))) a ORDER BY 1), ',')
         || ' comment=' || coalesce(obj_description(p.oid, 'pg_proc'), '-'), 3, p.oid::regprocedure::text, 0
    FROM pg_proc p JOIN ns ON ns.oid = p.pronamespace
  UNION ALL
  SELECT 'function ' || p.oid::regprocedure || ' | ' || l.line, 3, p.oid::regprocedure::text, l.n
    FROM pg_proc p JOIN ns ON ns.oid = p.pronamespace,
         LATERAL regexp_split_to_table(pg_get_functiondef(p.oid), E'\n') WITH ORDINALITY AS l(line, n)
   WHERE p.prokind IN ('f', 'p')
  UNION ALL
  SELECT 'relation ' || c.oid::regclass || ' kind=' || c.relkind::text || ' owner=' || pg_get_userbyid(c.relowner)
         || ' persistence=' || c.relpersistence::text || ' rls=' || c.relrowsecurity || '/' || c.relforcerowsecurity
         || ' acl=' || array_to_string(ARRAY(SELECT a::text FROM unnest(coalesce(c.relacl, acldefault((CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END)::"char", c.relowner))) a ORDER BY 1), ',')
         || ' comment=' || coalesce(obj_description(c.oid, 'pg_class'), '-'), 4, c.oid::regclass::text, 0
    FROM pg_class c JOIN ns ON ns.oid = c.relnamespace WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c')
  UNION ALL
  SELECT 'relation ' || c.oid::regclass || ' column ' || row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum) || ' ' || a.attname
         || ' ' || format_type(a.atttypid, a.atttypmod) || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
         || coalesce(' default ' || pg_get_expr(ad.adbin, ad.adrelid), '') || coalesce(' identity ' || nullif(a.attidentity::text, ''), '')
         || coalesce(' generated ' || nullif(a.attgenerated::text, ''), '')
         || coalesce(' acl=' || array_to_string(ARRAY(SELECT x::text FROM unnest(a.attacl) x ORDER BY 1), ','), '')
         || ' comment=' || coalesce(col_description(c.oid, a.attnum), '-'), 4, c.oid::regclass::text, a.attnum
    FROM pg_class c JOIN ns ON ns.oid = c.relnamespace JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_attrdef ad ON ad.adrelid = c.oid AND ad.adnum = a.attnum
   WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c')
  UNION ALL
  SELECT 'relation ' || c.oid::regclass || ' constraint ' || co.conname || ' ' || pg_get_constraintdef(co.oid)
         || ' comment=' || coalesce(obj_description(co.oid, 'pg_constraint'), '-'), 4, c.oid::regclass::text, 100000
    FROM pg_constraint co JOIN pg_class c ON c.oid = co.conrelid JOIN ns ON ns.oid = c.relnamespace
  UNION ALL
  SELECT 'relation ' || c.oid::regclass || ' index ' || pg_get_indexdef(i.indexrelid)
         || ' comment=' || coalesce(obj_description(i.indexrelid, 'pg_class'), '-'), 4, c.oid::regclass::text, 200000
    FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN ns ON ns.oid = c.relnamespace
  UNION ALL
  SELECT 'relation ' || c.oid::regclass || ' trigger ' || pg_get_triggerdef(t.oid) || ' enabled=' || t.tgenabled::text
         || ' comment=' || coalesce(obj_description(t.oid, 'pg_trigger'), '-'), 4, c.oid::regclass::text, 300000
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN ns ON ns.oid = c.relnamespace WHERE NOT t.tgisinternal
  UNION ALL
  SELECT 'relation ' || c.oid::regclass || ' policy ' || p.polname || ' cmd=' || p.polcmd::text || ' permissive=' || p.polpermissive
         || ' roles=' || array_to_string(ARRAY(SELECT CASE r WHEN 0 THEN 'public' ELSE pg_get_userbyid(r) END FROM unnest(p.polroles) r ORDER BY 1), ',')
         || ' using=' || coalesce(pg_get_expr(p.polqual, p.polrelid), '-') || ' check=' || coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '-'),
         4, c.oid::regclass::text, 400000
    FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN ns ON ns.oid = c.relnamespace
  UNION ALL
  SELECT 'relation ' || c.oid::regclass || ' view | ' || l.line, 4, c.oid::regclass::text, 500000 + l.n
    FROM pg_class c JOIN ns ON ns.oid = c.relnamespace,
         LATERAL regexp_split_to_table(pg_get_viewdef(c.oid), E'\n') WITH ORDINALITY AS l(line, n)
   WHERE c.relkind IN ('v', 'm')
  UNION ALL
  SELECT 'relation ' || c.oid::regclass || ' sequence ' || format_type(s.seqtypid, NULL) || ' start=' || s.seqstart
         || ' inc=' || s.seqincrement || ' min=' || s.seqmin || ' max=' || s.seqmax || ' cache=' || s.seqcache || ' cycle=' || s.seqcycle,
         4, c.oid::regclass::text, 600000
    FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN ns ON ns.oid = c.relnamespace
  UNION ALL
  SELECT 'type ' || t.oid::regtype || ' kind=' || t.typtype::text || ' owner=' || pg_get_userbyid(t.typowner)
         || coalesce(' base=' || nullif(t.typbasetype, 0)::regtype, '') || coalesce(' default=' || t.typdefault, '')
         || ' notnull=' || t.typnotnull
         || coalesce(' labels=' || (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid), '')
         || coalesce(' checks=' || (SELECT string_agg(pg_get_constraintdef(co.oid), ' AND ' ORDER BY co.conname) FROM pg_constraint co WHERE co.contypid = t.oid), '')
         || ' comment=' || coalesce(obj_description(t.oid, 'pg_type'), '-'), 5, t.oid::regtype::text, 0
    FROM pg_type t JOIN ns ON ns.oid = t.typnamespace WHERE t.typtype IN ('e', 'd', 'r', 'b') OR (t.typtype = 'c' AND t.typrelid <> 0 AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
  UNION ALL
  SELECT 'event trigger ' || et.evtname || ' on ' || et.evtevent || ' ' || et.evtfoid::regprocedure || ' tags=' || coalesce(array_to_string(et.evttags, ','), '-')
         || ' enabled=' || et.evtenabled::text || ' owner=' || pg_get_userbyid(et.evtowner), 6, et.evtname, 0
    FROM pg_event_trigger et JOIN member m ON m.classid = 'pg_event_trigger'::regclass AND m.objid = et.oid
  UNION ALL
  SELECT 'error code ' || code || ' ' || http_status || ' ' || service || ' ' || message, 7, code, 0 FROM pgcloud.error_codes
  UNION ALL
  SELECT 'policy ' || key || ' ' || description, 8, key, 0 FROM pgcloud.policy_values
  UNION ALL
  SELECT 'job ' || name || ' ' || service || ' ' || function::text || ' ' || interval_policy || ' ' || interval_unit || ' wake=' || run_on_wake
         || ' as_owner=' || run_as_owner || ' ' || description, 9, name, 0 FROM pgcloud.scheduled_jobs
  UNION ALL
  SELECT 'service ' || s::text, 10, s.name, 0 FROM pgcloud.services s
  UNION ALL
  SELECT 'subscription ' || s::text, 11, s::text, 0 FROM pgcloud.subscriptions s
) facts
ORDER BY part, k COLLATE "C", n, line COLLATE "C";
};

sub catalog { my ($db) = @_; return $node->safe_psql($db, $catalog_sql) }

# Row counts of every table of every pgcloud extension.
sub counts {
    my ($db) = @_;
    my $q = $node->safe_psql($db, q{
        SELECT string_agg(format('SELECT %L AS t, count(*) AS n FROM %s', c.oid::regclass, c.oid::regclass), ' UNION ALL '
                          ORDER BY c.oid::regclass::text)
          FROM pg_class c JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
          JOIN pg_extension e ON e.oid = d.refobjid AND e.extname LIKE 'pgcloud%'
         WHERE c.relkind IN ('r', 'p')});
    return $node->safe_psql($db, "SELECT t || ' ' || n FROM ($q) x ORDER BY t");
}

sub diff_text {
    my ($a, $b, $na, $nb) = @_;
    my $dir = PostgreSQL::Test::Utils::tempdir();
    open(my $fa, '>', "$dir/$na") or die; print $fa "$a\n"; close $fa;
    open(my $fb, '>', "$dir/$nb") or die; print $fb "$b\n"; close $fb;
    my $d = `cd $dir && diff -u $na $nb`;
    return $d;
}

# The data, filled through the API of the old release.
my $fill = q{
\set ON_ERROR_STOP 1
SELECT pgcloud.set_policy('auth.dev_login_enabled', 'true');
BEGIN;
SET LOCAL request.jwt.claims = '{"role": "pgcloud_anon"}';
SET LOCAL ROLE pgcloud_anon;
SELECT api.dev_login('ada@example.com') IS NOT NULL;
COMMIT;
SELECT id AS ada FROM auth.users WHERE email = 'ada@example.com' \gset
SELECT pgcloud.relay_once();
BEGIN;
SET LOCAL request.jwt.claims = '{"role": "pgcloud_admin", "sub": "00000000-0000-4000-8000-0000000000ad"}';
SET LOCAL ROLE pgcloud_admin;
SELECT api.admin_adjust_balance(:'ada', 500000, 'upgrade test top-up') IS NOT NULL;
SELECT api.admin_upsert_sku('h100x8', 'H100-SXM', 8, 128, 1024, 8000, 'eu-west', 2400) IS NOT NULL;
SELECT api.admin_upsert_image('ubuntu-22.04', 'jammy') IS NOT NULL;
SELECT api.admin_register_node('gpu-node-1', 'abc123', 'h100x8') IS NOT NULL;
COMMIT;
SELECT pgcloud.relay_once();
BEGIN;
SELECT set_config('request.jwt.claims', json_build_object('role', 'pgcloud_user', 'sub', :'ada')::text, true) IS NOT NULL;
SET LOCAL ROLE pgcloud_user;
SELECT api.add_ssh_key('ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMOwPp55P+3rXvN52Am9GxAqi24MMrCru+LnotcYcsbn', 'laptop') ->> 'id' AS key \gset
SELECT api.create_namespace('upgrade-test') IS NOT NULL;
SELECT api.create_environment('staging') IS NOT NULL;
SELECT api.set_notification_preferences(true) IS NOT NULL;
SELECT api.create_checkout(2000) IS NOT NULL;
COMMIT;
SELECT pgcloud.relay_once();
SELECT pgcloud.emit('maas.machine_commissioned', 'machine', 'abc123', '{"system_id": "abc123"}') IS NOT NULL;
SELECT pgcloud.relay_once();
SELECT pgcloud.relay_once();
BEGIN;
SELECT set_config('request.jwt.claims', json_build_object('role', 'pgcloud_user', 'sub', :'ada')::text, true) IS NOT NULL;
SET LOCAL ROLE pgcloud_user;
SELECT api.create_allocation('h100x8', 'ubuntu-22.04', ARRAY[:'key']::uuid[]) IS NOT NULL;
COMMIT;
SELECT pgcloud.relay_once();
SELECT pgcloud.relay_once();
};

sub ledger_problems {
    my ($db) = @_;
    return $node->safe_psql($db, 'SELECT count(*) FROM billing.verify_ledger()');
}
my $balance_sql = q{SELECT string_agg(a.account_id || '=' || coalesce((SELECT e.balance_after FROM billing.ledger_entries e
                       WHERE e.account_id = a.account_id ORDER BY e.id DESC LIMIT 1), 0), ',' ORDER BY a.account_id)
                      FROM billing.accounts a};

$node->safe_psql('postgres', "CREATE DATABASE fresh");
$node->safe_psql('fresh', 'CREATE EXTENSION pgcloud CASCADE');
is($node->safe_psql('fresh', q{SELECT string_agg(DISTINCT extversion, ',') FROM pg_extension WHERE extname LIKE 'pgcloud%'}),
    $current, "a fresh install is at $current");
my $fresh = catalog('fresh');
like($fresh, qr/^function api\./m, 'the catalogue dump sees the api functions');
like($fresh, qr/^relation billing\.ledger_entries trigger /m, '... triggers');
like($fresh, qr/^relation \S+ view \| /m, '... views');

for my $v (@old) {
    my $db = 'from_' . ($v =~ tr/./_/r);
    $node->safe_psql('postgres', "CREATE DATABASE $db");
    my @here = grep { -f "$repo/sql/history/$v/$_--$v.sql" } @extensions;
    is_deeply(\@here, \@extensions, "every extension has a frozen $v install script");
    $node->safe_psql($db, join('', map { "CREATE EXTENSION $_ VERSION '$v';\n" } @here));
    is($node->safe_psql($db, q{SELECT string_agg(DISTINCT extversion, ',') FROM pg_extension WHERE extname LIKE 'pgcloud%'}),
        $v, "installed $v from its install scripts");

    my ($ret, $out, $err) = $node->psql($db, $fill, on_error_stop => 1);
    is($ret, 0, "data filled through the $v API") or diag($err);
    my $before = counts($db);
    like($before, qr/^billing\.ledger_entries [1-9]/m, 'the ledger has entries');
    like($before, qr/^pgcloud\.outbox [1-9]/m, 'the outbox has events');
    like($before, qr/^pgcloud\.inbox [1-9]/m, 'the inbox has applied events');
    like($before, qr/^provisioning\.allocations 1$/m, 'there is an allocation');
    like($before, qr/^releases\.ssh_keys 1$/m, 'and an SSH key');
    like($before, qr/^auth\.sessions 1$/m, 'and a session');
    my $balance = $node->safe_psql($db, $balance_sql);
    like($balance, qr/=500000$/, 'the top-up is on the balance');

    # The upgrade: every extension, core first, in one transaction.
    ($ret, $out, $err) = $node->psql($db, join('', "BEGIN;\n",
        (map { "ALTER EXTENSION $_ UPDATE TO '$current';\n" } @extensions), "COMMIT;\n"), on_error_stop => 1);
    is($ret, 0, "ALTER EXTENSION ... UPDATE TO '$current' for every extension") or diag($err);
    is($node->safe_psql($db, q{SELECT string_agg(DISTINCT extversion, ',') FROM pg_extension WHERE extname LIKE 'pgcloud%'}),
        $current, "every extension is at $current");

    my $upgraded = catalog($db);
    my $d = diff_text($fresh, $upgraded, "fresh-$current", "upgraded-from-$v");
    is($d, '', "the catalogue upgraded from $v equals a fresh $current install");
    diag($d) if $d ne '';

    # Tables the install scripts fill (rows in a fresh install: error codes,
    # policies, transitions, ...) may gain rows; every other table keeps its
    # rows exactly. The rows install scripts write are in the catalogue diff.
    my %after = map { split / / } split /\n/, counts($db);
    my %seed = map { my ($t, $n) = split / /; $n > 0 ? ($t => 1) : () } split /\n/, counts('fresh');
    my @lost;
    for (split /\n/, $before) {
        my ($t, $n) = split / /;
        push @lost, "$t: $n before, " . ($after{$t} // 'no table') . ' after'
          if !defined $after{$t} || ($seed{$t} ? $after{$t} < $n : $after{$t} != $n);
    }
    is(join("\n", @lost), '', 'every table keeps its rows');
    is(ledger_problems($db), '0', 'the ledger verifies');
    is($node->safe_psql($db, $balance_sql), $balance, 'balances are unchanged');

    # The upgraded code runs: events flow, the API answers.
    $node->safe_psql($db, q{SELECT pgcloud.emit('maas.machine_status_changed', 'machine', 'abc123', '{"system_id": "abc123", "status": "Deployed"}')});
    ($ret, $out, $err) = $node->psql($db, 'SELECT pgcloud.relay_once()', on_error_stop => 1);
    is($ret, 0, 'the relay delivers after the upgrade') or diag($err);
    is($node->safe_psql($db, q{SELECT count(*) FROM pgcloud.dead_letters}), '0', 'no event is dead-lettered');
    my $ada = $node->safe_psql($db, q{SELECT id FROM auth.users WHERE email = 'ada@example.com'});
    my ($ok, $bal, $e2) = api_call_db($db, { role => 'pgcloud_user', sub => $ada }, 'SELECT api.balance()');
    ok($ok, 'api.balance() answers after the upgrade') or diag($e2);
    like($bal, qr/500000/, 'with the balance');
}

sub api_call_db {
    my ($db, $claims, $sql) = @_;
    my $json = JSON::PP->new->canonical->encode($claims);
    my ($ret, $out, $err) = $node->psql($db, qq{BEGIN; SET LOCAL request.jwt.claims = '$json';
        SET LOCAL ROLE $claims->{role}; $sql; COMMIT;});
    return ($ret == 0 && $err !~ /ERROR/, $out, $err);
}

$node->stop;
done_testing();
