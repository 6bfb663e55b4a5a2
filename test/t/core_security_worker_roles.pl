# Security tier, workers (issue 10, item 7): the relay, the NATS consumer and
# the HTTP executor do not run as a superuser. Each connects as its own
# least-privilege role (pgcloud_worker_relay, _consumer, _http), whose
# search_path is pg_catalog, and may call only its own entry points; the
# scheduler alone stays superuser (it runs each job as the job's service
# role). Attacks: as each worker role, read auth secrets, write the ledger,
# write or forge events, create objects, call another worker's entry point.
# Delivery still works end to end through NATS (relay -> broker -> consumer).
use strict;
use warnings;
use lib $ENV{PGCLOUD_REPO} . '/test/t';
use PgcloudTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $natsdir = "$PostgreSQL::Test::Utils::tmp_check/nats_worker_roles";
my ($port, $nats) = start_nats($natsdir);
my $node = pgcloud_node('worker_roles', nats_settings($port));
add_test_subscriber($node);

my %role = (relay => 'pgcloud_worker_relay', consumer => 'pgcloud_worker_consumer', http => 'pgcloud_worker_http');
for my $kind (sort keys %role) {
    my $got = wait_until($node, qq{SELECT a.usename || '/' || r.rolsuper FROM pg_stat_activity a
        JOIN pg_roles r ON r.rolname = a.usename WHERE a.backend_type = 'pgcloud $kind'}, "$role{$kind}/false", 60);
    is($got, "$role{$kind}/false", "the $kind worker runs as $role{$kind}, not a superuser");
}
is($node->safe_psql('postgres', q{SELECT r.rolsuper FROM pg_stat_activity a JOIN pg_roles r ON r.rolname = a.usename
    WHERE a.backend_type = 'pgcloud scheduler'}), 't', 'the scheduler alone stays superuser (it runs jobs as their service roles)');
is($node->safe_psql('postgres', q{SELECT string_agg(rolname || ':' || rolsuper || rolcreaterole || rolcreatedb
    || rolreplication || rolbypassrls || coalesce(array_to_string(rolconfig, ','), ''), ' ' ORDER BY rolname)
    FROM pg_roles WHERE rolname LIKE 'pgcloud\_worker\_%'}),
    join(' ', map { "$_:falsefalsefalsefalsefalsesearch_path=pg_catalog" } sort values %role),
    'the worker roles have no attribute beyond LOGIN, and their search_path is pg_catalog');

# Delivery works as these roles: an event goes relay -> NATS -> consumer -> handler.
$node->safe_psql('postgres', q{SELECT pgcloud.emit('load.tick', 'thing', 'w1', '{"seq": 1}')});
is(wait_until($node, q{SELECT count(*) FROM loadsvc.effects WHERE aggregate_id = 'w1'}, '1', 60), '1',
    'an event is published by the relay and applied by the consumer, both as their roles');
is($node->safe_psql('postgres', q{SELECT count(*) FROM pgcloud.outbox WHERE published_at IS NULL AND event_type = 'load.tick'}),
    '0', 'the relay marked it published');

# Runs $sql connected as $user; returns (ok, stderr).
sub as_role {
    my ($user, $sql) = @_;
    my ($ret, $out, $err) = $node->psql('postgres', $sql, extra_params => [ '-U', $user ], on_error_stop => 1);
    return ($ret == 0, $err // '');
}

my @attacks = (
    [ 'read the platform JWT signing keys (auth secrets)', 'SELECT * FROM auth.signing_keys' ],
    [ 'read refresh tokens', 'SELECT * FROM auth.refresh_tokens' ],
    [ 'write the ledger directly',
      q{INSERT INTO billing.ledger_entries (id, account_id, kind, amount, currency, balance_after, cause_type, cause_id)
        VALUES (1, gen_random_uuid(), 'credit', 5000000, 'usd', 5000000, 'payment', 'forged')} ],
    [ 'insert into the outbox', q{INSERT INTO pgcloud.outbox (event_type) VALUES ('payment.succeeded')} ],
    [ 'emit a forged payment', q{SELECT pgcloud.emit('payment.succeeded', 'payment', 'x', '{"amount": 5000000}')} ],
    [ 'rewrite an event payload', q{UPDATE pgcloud.outbox SET payload = '{"amount": 5000000}'} ],
    [ 'unseal a secret', q{SELECT pgcloud.unseal('\x00'::bytea, 'releases.ssh_ca')} ],
    [ 'call a service handler directly',
      q{SELECT billing.on_payment_succeeded(ROW(gen_random_uuid(), 'payment.succeeded', 'payment', 'x', '{}', '{}')::pgcloud.event_envelope)} ],
    [ 'change policy', q{SELECT pgcloud.set_policy('core.rate_limit_burst', '100000')} ],
    [ 'create a table', 'CREATE TABLE public.planted (x int)' ],
    [ 'create a function in pgcloud', 'CREATE FUNCTION pgcloud.planted() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$' ],
    [ 'become a superuser', 'SET ROLE postgres' ],
    [ 'become a service role', 'SET ROLE pgcloud_svc_billing' ],
);
for my $kind (sort keys %role) {
    for my $a (@attacks) {
        my ($ok, $err) = as_role($role{$kind}, $a->[1]);
        ok(!$ok && $err =~ /permission denied|must be owner|must be superuser|not permitted/,
            "$role{$kind} cannot $a->[0]") or diag("ok=$ok $err");
    }
}
# Each may call only its own entry points.
my %entry = (
    relay    => 'SELECT pgcloud.relay_once(0)',
    consumer => 'SELECT count(*) FROM pgcloud.nats_subscribers()',
    http     => q{SELECT pgcloud.http_next_due_ms('{test}')},
);
for my $kind (sort keys %role) {
    for my $other (sort keys %entry) {
        my ($ok, $err) = as_role($role{$kind}, $entry{$other});
        if ($kind eq $other) {
            ok($ok, "$role{$kind} may call its own entry point") or diag($err);
        } else {
            ok(!$ok && $err =~ /permission denied/, "$role{$kind} cannot call the $other worker's entry point")
              or diag($err);
        }
    }
}
my ($ok, $err) = as_role('pgcloud_worker_relay', q{SELECT count(*) FROM pgcloud.outbox; UPDATE pgcloud.outbox SET published_at = published_at WHERE false});
ok($ok, 'the relay may read the outbox and mark events published (what it publishes to NATS)') or diag($err);

# A deployment revokes CONNECT from PUBLIC (deploy/*/init.sql does): the
# workers keep connecting, through the grant the installation gives them.
$node->safe_psql('postgres', q{REVOKE CONNECT ON DATABASE postgres FROM PUBLIC});
$node->restart;
for my $kind (sort keys %role) {
    is(wait_until($node, qq{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pgcloud $kind'
        AND usename = '$role{$kind}'}, '1', 60), '1', "with CONNECT revoked from PUBLIC the $kind worker still connects");
}
$node->safe_psql('postgres', q{SELECT pgcloud.emit('load.tick', 'thing', 'w2', '{"seq": 1}')});
is(wait_until($node, q{SELECT count(*) FROM loadsvc.effects WHERE aggregate_id = 'w2'}, '1', 60), '1',
    '... and delivery still works');
($ok, $err) = as_role('pgcloud_authenticator', 'SELECT 1');
ok(!$ok && $err =~ /permission denied for database/, 'while a role without the grant is refused') or diag($err);

$node->stop('fast');
stop_nats($nats);
done_testing();
