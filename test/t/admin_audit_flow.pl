# Admin end to end: the main flow (sign-in, top-up through the Stripe fake,
# allocation deployed by the MAAS fake, release) with the real workers, each
# request carrying its own X-Correlation-Id; then, from admin's read models
# only (fed by events):
#   api.admin_audit shows the flow's audit rows in order with their
#   correlation ids (every service's pgcloud.audit row arrives as
#   audit.recorded), and its CSV export (psql \copy) parses with Python's csv
#   module; api.admin_users / admin_allocations / admin_nodes show the user's
#   balance, standing, allocation counts and last sign-in, the allocation and
#   the node; api.admin_force_release ends a second allocation through
#   provisioning and MAAS, audited with the reason.
use strict;
use warnings;
use lib $ENV{PGCLOUD_REPO} . '/test/t';
use lib $ENV{PGCLOUD_REPO} . '/test/fakes';
use PgcloudTest;
use PgcloudFakes;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use JSON::PP;

my $tmp = PostgreSQL::Test::Utils::tempdir();
my $stripe = PgcloudFakes->start('stripe', dir => "$tmp/stripe",
    args => ['--secret-key', 'sk_test_flow', '--webhook-secret', 'whsec_flow']);
my $maas = PgcloudFakes->start('maas', dir => "$tmp/maas",
    args => ['--machines', '2', '--api-key', 'fc:ft:fs', '--deploy-seconds', '0.5', '--release-seconds', '0.3',
             '--commission-seconds', '0.3']);
my $node = pgcloud_node('admin_flow', "pgcloud.maas_url = '" . $maas->url . "'\npgcloud.maas_api_key = 'fc:ft:fs'\n"
    . "pgcloud.stripe_api_url = '" . $stripe->url . "'\npgcloud.stripe_secret_key = 'sk_test_flow'\n"
    . "pgcloud.stripe_webhook_secrets = 'whsec_flow'\n");
sql_node($node, 'postgres');
sub wait_polling_maas
{
    my ($query, $what) = @_;
    for (1 .. 600)
    {
        sql('SELECT maas.poll()');
        return ok(1, $what) if sql($query) eq 't';
        Time::HiRes::sleep(0.1);
    }
    return ok(0, $what);
}
# A request as PostgREST makes it: role, claims and headers for one transaction.
sub request
{
    my ($claims, $headers, $q) = @_;
    my $role = decode_json($claims)->{role};
    my $out = sql(qq{BEGIN;
        SET LOCAL ROLE $role;
        SELECT set_config('request.jwt.claims', \$c\$$claims\$c\$, true) IS NULL;
        SELECT set_config('request.headers', \$h\$$headers\$h\$, true) IS NULL;
        $q;
        COMMIT;});
    return (split /\n/, $out)[-1];
}

my $since = sql('SELECT now()');
sql(q{SELECT pgcloud.set_policy('auth.dev_login_enabled', 'true');
      SELECT pgcloud.set_policy('maas.poll_interval_ms', '100');
      SELECT api.admin_upsert_sku('gpu.flow.1x', 'FLOW-GPU', 1, 8, 64, 500, 'flow-r', 3600, 'usd');
      SELECT api.admin_upsert_image('flow-jammy', 'jammy');});
my @machines = sort keys %{ $maas->state->{machines} };
sql(qq{SELECT api.admin_register_node('flow-node-$_', '$machines[$_]', 'gpu.flow.1x')}) for 0 .. 1;
wait_polling_maas(q{SELECT count(*) = 2 FROM inventory.nodes WHERE state = 'ready'}, 'both nodes commissioned and ready');

# ---- the main flow, one correlation id per request -------------------------------------------
my $anon = '{"role": "pgcloud_anon"}';
my $login = decode_json(request($anon, '{"x-correlation-id": "flow-1-signin"}',
    q{SELECT api.dev_login('ada@example.test')}));
my $claims = sql(qq{SELECT auth.verify_access_token('$login->{access_token}')});
my $ada = decode_json($claims)->{sub};
like($ada, qr/^[0-9a-f-]{36}$/, 'Ada signed in');

my $co = decode_json(request($claims, '{"x-correlation-id": "flow-2-topup"}', q{SELECT api.create_checkout(5000, 'usd')}));
wait_polling_maas(qq{SELECT status = 'open' FROM payments.payment_sessions WHERE id = '$co->{id}'}, 'the Checkout Session is open');
my $cs = sql(qq{SELECT stripe_session_id FROM payments.payment_sessions WHERE id = '$co->{id}'});
my $ev = $stripe->post_json("/v1/checkout/sessions/$cs/_complete");
my $hdr = encode_json({ 'stripe-signature' => $ev->{stripe_signature}, 'x-correlation-id' => 'flow-3-webhook' });
request($anon, $hdr, qq{SELECT api.stripe_webhook(\$pw\$$ev->{payload}\$pw\$)});
wait_polling_maas(qq{SELECT coalesce(balance, 0) > 0 FROM provisioning.account_standing WHERE user_id = '$ada'},
    'paid: provisioning knows Ada may allocate');
wait_polling_maas(qq{SELECT count(*) = 0 FROM pgcloud.outbox WHERE published_at IS NULL}, 'every event delivered');

my $alloc = decode_json(request($claims, '{"x-correlation-id": "flow-4-allocate"}',
    q{SELECT api.create_allocation('gpu.flow.1x', 'flow-jammy')}));
wait_polling_maas(qq{SELECT state = 'active' FROM provisioning.allocations WHERE id = '$alloc->{id}'}, 'MAAS deployed it: active');
request($claims, '{"x-correlation-id": "flow-5-release"}', qq{SELECT api.release_allocation('$alloc->{id}')});
wait_polling_maas(qq{SELECT state = 'released' FROM provisioning.allocations WHERE id = '$alloc->{id}'}, 'released');
wait_polling_maas(q{SELECT count(*) = 0 FROM pgcloud.outbox WHERE published_at IS NULL}, 'every event delivered');

# ---- the audit, as admin sees it ---------------------------------------------------------------------
my $admin = encode_json({ role => 'pgcloud_admin', sub => '0a000000-0000-4000-8000-00000000000a' });
my $until = sql(q{SELECT now() + interval '1 minute'});
is(sql(q{SELECT count(*) FROM pgcloud.audit_logs}), sql(q{SELECT count(*) FROM admin.audit}),
    'every audit row of every service reached admin as audit.recorded');
my $rows = request($admin, '{}', qq{SELECT jsonb_agg(jsonb_build_array(action, correlation_id, actor))
    FROM api.admin_audit('$since', '$until') WHERE correlation_id LIKE 'flow-%'});
my @flow = map { "$_->[0] $_->[1]" } @{ decode_json($rows) };
my @want = ('user.sign_in flow-1-signin', 'payment.checkout_created flow-2-topup', 'payment.succeeded flow-3-webhook',
            'allocation.created flow-4-allocate', 'allocation.release_requested flow-5-release');
my @seen = grep { my $r = $_; grep { $_ eq $r } @want } @flow;
is_deeply(\@seen, \@want, "the flow's audit, in order, with the correlation id of each request")
  or diag(explain(\@flow));
is(scalar(grep { defined $_->[2] && $_->[2] eq $ada } @{ decode_json($rows) }) > 0, 1, 'Ada is the actor of her requests');
my $by_ada = request($admin, '{}', qq{SELECT count(*) FROM api.admin_audit('$since', '$until', '$ada')});
is($by_ada, sql(qq{SELECT count(*) FROM pgcloud.audit_logs WHERE actor = '$ada'}), 'filtered by actor');

# CSV, as an operator exports it with \copy.
my ($csv, $err);
IPC::Run::run(['psql', '-X', '-q', '-d', $node->connstr('postgres'), '-c',
    qq{\\copy (SELECT * FROM api.admin_audit('$since', '$until')) TO STDOUT WITH (FORMAT csv, HEADER)}],
    '>', \$csv, '2>', \$err);
is($err, '', 'the export ran');
my $py = <<'PY';
import csv, json, sys
rows = list(csv.DictReader(sys.stdin))
for r in rows:
    json.loads(r["details"])
print(json.dumps({"n": len(rows), "columns": list(rows[0].keys()),
                  "flow": [r["action"] + " " + r["correlation_id"] for r in rows if r["correlation_id"].startswith("flow-")]}))
PY
my $parsed;
IPC::Run::run(['python3', '-c', $py], '<', \$csv, '>', \$parsed, '2>', \$err);
my $p = decode_json($parsed || '{}');
is($p->{n}, sql(q{SELECT count(*) FROM pgcloud.audit_logs}), "Python's csv module reads every row back");
is_deeply($p->{columns}, ['seq', 'at', 'database', 'audit_id', 'actor', 'role', 'action', 'target_type', 'target_id',
                          'result', 'correlation_id', 'details'], 'with a header of the columns');
is_deeply([grep { my $r = $_; grep { $_ eq $r } @want } @{ $p->{flow} }], \@want, 'in the same order');

# ---- cross-user views ----------------------------------------------------------------------------------
my $users = decode_json(request($admin, '{}', q{SELECT api.admin_users()}));
my ($u) = grep { $_->{user_id} eq $ada } @$users;
is($u->{email}, 'ada@example.test', 'admin_users: Ada');
ok(defined $u->{last_sign_in_at}, '... with her last sign-in');
is($u->{total_allocations}, 1, '... one allocation');
is($u->{paid}, 5000, '... what she paid');
is($u->{balance}, sql(qq{SELECT balance FROM billing.balances WHERE account_id = '$ada'}), '... her balance as billing has it');
is($u->{standing}, sql(qq{SELECT standing FROM billing.accounts WHERE account_id = '$ada'}), '... and her standing');
is(request($admin, '{}', q{SELECT jsonb_array_length(api.admin_allocations('released'))}), '1', 'admin_allocations(released)');
is(request($admin, '{}', q{SELECT jsonb_array_length(api.admin_nodes())}), '2', 'admin_nodes: both nodes');

# ---- force-release -----------------------------------------------------------------------------------------
my $a2 = decode_json(request($claims, '{}', q{SELECT api.create_allocation('gpu.flow.1x', 'flow-jammy')}));
wait_polling_maas(qq{SELECT state = 'active' FROM provisioning.allocations WHERE id = '$a2->{id}'}, 'a second allocation is active');
wait_polling_maas(q{SELECT count(*) = 0 FROM pgcloud.outbox WHERE published_at IS NULL}, 'admin knows it');
request($admin, '{"x-correlation-id": "flow-6-force"}', qq{SELECT api.admin_force_release('$a2->{id}', 'GPU fell off the bus')});
wait_polling_maas(qq{SELECT state = 'released' FROM provisioning.allocations WHERE id = '$a2->{id}'},
    'provisioning honoured admin.force_release_requested: released through MAAS');
like(sql(qq{SELECT reason FROM provisioning.allocations WHERE id = '$a2->{id}'}), qr/^admin: GPU fell off the bus/,
    'with the reason');
wait_polling_maas(q{SELECT count(*) = 0 FROM pgcloud.outbox WHERE published_at IS NULL}, 'every event delivered');
is(request($admin, '{}', qq{SELECT string_agg(action || ' ' || (details ->> 'reason'), ', ' ORDER BY seq)
    FROM api.admin_audit('$since', now() + interval '1 minute', NULL, 'admin.force_release')}),
    'admin.force_release GPU fell off the bus', 'audited with the reason');
is(request($admin, '{}', qq{SELECT a ->> 'state' FROM jsonb_array_elements(api.admin_allocations()) a
    WHERE a ->> 'allocation_id' = '$a2->{id}'}), 'released', "admin's read model follows");

$node->stop;
done_testing();
