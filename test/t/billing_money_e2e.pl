# End to end, against the Stripe fake over TLS (its CA in pgcloud.ca_bundle),
# with the real workers (embedded event relay, HTTP executor):
#   api.create_checkout -> executor -> POST /v1/checkout/sessions -> id and URL stored;
#   the fake's _complete -> signed checkout.session.completed -> api.stripe_webhook
#     -> payment.succeeded -> ledger credit (once, however often Stripe redelivers);
#   api.admin_refund -> billing debit -> POST /v1/refunds -> succeeded;
#   charge.refunded webhook reconciles; refund.updated (failed) reverses the debit.
# services: billing payments
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PgcloudTest;

BEGIN { die "PGCLOUD_REPO is not set\n" unless $ENV{PGCLOUD_REPO} }
use lib "$ENV{PGCLOUD_REPO}/test/fakes";
use PgcloudFakes;

my $tmp = PostgreSQL::Test::Utils::tempdir();
my $certs = PgcloudFakes::make_certs("$tmp/certs");
my $stripe = PgcloudFakes->start('stripe', dir => "$tmp/stripe", tls => $certs);
like($stripe->url, qr{^https://}, 'the Stripe fake speaks HTTPS');

my $node = PostgreSQL::Test::Cluster->new('money_e2e');
$node->init;
$node->append_conf('postgresql.conf', join("\n",
    "shared_preload_libraries = 'pgcloud'",
    "pgcloud.databases = 'pgcloud'",
    "max_worker_processes = 16",
    "pgcloud.stripe_api_url = '" . $stripe->url . "'",
    "pgcloud.stripe_secret_key = 'sk_test_pgcloud'",
    "pgcloud.stripe_webhook_secrets = 'whsec_rotated_out, whsec_pgcloud_test'",
    "pgcloud.ca_bundle = '$certs->{ca}'", ''));
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE pgcloud');
$node->safe_psql('pgcloud', 'CREATE EXTENSION pgcloud CASCADE');

sql_node($node, 'pgcloud');
sub wait_ok
{
    my ($query, $want, $what) = @_;
    ok($node->poll_query_until('pgcloud', $query, $want), $what);
}

my $user = '0e2e0e2e-0000-4000-8000-000000000001';
sub as_user_in_tx
{
    my ($q) = @_;
    return sql(qq{BEGIN;
        SET LOCAL request.jwt.claims = '{"role": "pgcloud_user", "sub": "$user"}';
        SET LOCAL ROLE pgcloud_user;
        $q;
        COMMIT;});
}
# Delivers a webhook as PostgREST would: role pgcloud_anon, the header from the request.
sub webhook
{
    my ($ev) = @_;
    my $sig = $ev->{stripe_signature};
    my $payload = $ev->{payload};
    die 'payload holds the quote tag' if $payload =~ /\$pw\$/;
    return sql(qq{BEGIN;
        SET LOCAL request.jwt.claims = '{"role": "pgcloud_anon"}';
        SET LOCAL request.headers = '{"stripe-signature": "$sig"}';
        SET LOCAL ROLE pgcloud_anon;
        SELECT api.stripe_webhook(\$pw\$$payload\$pw\$) - 'event_id';
        COMMIT;});
}

$node->poll_query_until('pgcloud', "SELECT count(*) = 2 FROM pgcloud.workers WHERE worker IN ('relay', 'http') AND pid IS NOT NULL")
  or die 'the workers did not start';
sql(qq{SELECT pgcloud.emit('user.created', 'user', '$user', jsonb_build_object('user_id', '$user', 'email', 'e2e\@example.com'))});
wait_ok("SELECT count(*) FROM billing.accounts WHERE account_id = '$user'", '1', 'user.created opened the billing account');

# ---- checkout -------------------------------------------------------------------------------
my $session = as_user_in_tx(q{SELECT api.create_checkout(2500, 'usd') ->> 'id'});
like($session, qr/^[0-9a-f-]{36}$/, 'api.create_checkout returns our session id');
wait_ok("SELECT status FROM payments.payment_sessions WHERE id = '$session'", 'open',
    'the executor created the Checkout Session and the callback stored it');
my $checkout = as_user_in_tx(qq{SELECT api.get_checkout('$session')::text});
like($checkout, qr{"url": "https://checkout\.stripe\.com/c/pay/cs_test_}, 'api.get_checkout returns the Stripe URL');
my ($cs) = $checkout =~ /"stripe_session_id": "(cs_test_\w+)"/;
ok($cs, "the Checkout Session id is stored ($cs)");

my @reqs = grep { $_->{path} eq '/v1/checkout/sessions' } $stripe->requests;
is(scalar @reqs, 1, 'one POST /v1/checkout/sessions');
my $r = $reqs[0];
ok($r->{auth_ok} && $r->{auth_scheme} eq 'bearer', 'with Authorization: Bearer and the configured secret key');
is($r->{idempotency_key}, $session, 'Idempotency-Key = our session id');
is($r->{form}{client_reference_id}, $session, 'client_reference_id = our session id');
is($r->{form}{'metadata[pgcloud_session_id]'}, $session, 'metadata carries our session id');
is($r->{form}{'line_items[0][price_data][unit_amount]'}, '2500', 'the amount, as a line item');
is($r->{form}{customer_email}, 'e2e@example.com', 'prefilled with the user\'s e-mail (user.created)');

# ---- payment: signed webhook, one credit ----------------------------------------------------------
my $ev = $stripe->post_json("/v1/checkout/sessions/$cs/_complete");
is($ev->{event}{type}, 'checkout.session.completed', 'the fake completes the session and signs the event');
like(webhook($ev), qr/"outcome": "payment_recorded"/, 'api.stripe_webhook verifies and records the payment');
wait_ok("SELECT balance FROM billing.balances WHERE account_id = '$user'", '2500',
    'the relay delivered payment.succeeded: the ledger is credited');
my $again = $stripe->post_json("/v1/checkout/sessions/$cs/_complete");
is($again->{event}{id}, $ev->{event}{id}, 'Stripe redelivers the same event');
like(webhook($again), qr/"duplicate": true/, 'a duplicate');
like(webhook($ev), qr/"duplicate": true/, 'and the old delivery again too');
sleep(1);
is(sql("SELECT count(*) || ' ' || sum(amount) FROM billing.ledger_entries WHERE account_id = '$user' AND kind = 'credit'"),
    '1 2500', 'credited exactly once');
is(as_user_in_tx(qq{SELECT api.get_checkout('$session') ->> 'status'}), 'complete', 'the checkout is complete');
is(as_user_in_tx(q{SELECT api.balance() ->> 'balance'}), '2500', 'api.balance() shows it');

# ---- refund: debit first, then Stripe; then webhooks reconcile ------------------------------------------
my $payment = sql("SELECT id FROM payments.payments WHERE checkout_session_id = '$cs'");
my $refund = sql(qq{SELECT api.admin_refund('$payment', 1000, 'requested_by_customer') ->> 'id'});
like($refund, qr/^[0-9a-f-]{36}$/, 'api.admin_refund (operator)');
wait_ok("SELECT status FROM payments.refunds WHERE id = '$refund'", 'succeeded',
    'billing debited, payments sent the refund, Stripe answered succeeded');
is(sql("SELECT amount FROM billing.ledger_entries WHERE kind = 'refund_debit' AND cause_id = '$refund'"), '-1000',
    'the ledger debit');
my @refunds = grep { $_->{path} eq '/v1/refunds' } $stripe->requests;
is(scalar @refunds, 1, 'one POST /v1/refunds');
is($refunds[0]{idempotency_key}, $refund, 'Idempotency-Key = our refund id');
is($refunds[0]{form}{amount}, '1000', 'the amount');
like($refunds[0]{form}{payment_intent}, qr/^pi_/, 'against the PaymentIntent');
is($refunds[0]{form}{'metadata[pgcloud_refund_id]'}, $refund, 'our refund id in metadata');
my $re = sql("SELECT stripe_refund_id FROM payments.refunds WHERE id = '$refund'");
like($re, qr/^re_/, "Stripe's refund id is stored ($re)");

my $charge_ev = $stripe->post_json("/v1/refunds/$re/_event?type=charge.refunded");
like(webhook($charge_ev), qr/"outcome": "charge_reconciled"/, 'charge.refunded is reconciled');
is(sql("SELECT stripe_amount_refunded || ' ' || amount_refunded || ' ' || status FROM payments.payments WHERE id = '$payment'"),
    '1000 1000 partially_refunded', 'Stripe\'s refunded total matches ours');
my $failed_ev = $stripe->post_json("/v1/refunds/$re/_event?type=refund.updated&status=failed");
like(webhook($failed_ev), qr/"outcome": "refund_failed"/, 'refund.updated: the refund failed at Stripe');
wait_ok("SELECT balance FROM billing.balances WHERE account_id = '$user'", '2500',
    'refund.failed: billing reversed the debit');
is(sql("SELECT count(*) FROM billing.ledger_entries WHERE cause_id = '$refund'"), '2', 'one debit, one reversal');

# ---- a refund Stripe refuses: more than the charge has left ---------------------------------------------
$stripe->control({ status => 400, path => '/v1/refunds',
                   body => { error => { type => 'invalid_request_error', code => 'charge_already_refunded',
                                        message => 'Charge has already been refunded.' } } });
my $refused = sql(qq{SELECT api.admin_refund('$payment', 500, 'duplicate') ->> 'id'});
wait_ok("SELECT status FROM payments.refunds WHERE id = '$refused'", 'failed', 'Stripe refuses: the refund fails');
wait_ok("SELECT count(*) FROM billing.ledger_entries WHERE cause_id = '$refused'", '2', 'and its debit is reversed');
$stripe->control(undef);

# ---- the books ---------------------------------------------------------------------------------------------
is(sql("SELECT count(*) FROM billing.verify_ledger()"), '0', 'verify_ledger: consistent');
is(sql("SELECT balance FROM billing.balances WHERE account_id = '$user'"),
   sql("SELECT sum(amount) FROM billing.ledger_entries WHERE account_id = '$user'"), 'balance = sum of entries');
is(sql("SELECT count(*) FROM pgcloud.dead_letters"), '0', 'no event was dead-lettered');
is(sql("SELECT count(*) FROM pgcloud.audit_logs WHERE action = 'payment.webhook_rejected'"), '0', 'no webhook was refused');

$node->stop('fast');
$stripe->stop;
done_testing();
