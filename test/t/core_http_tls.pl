# TLS verification of outbound calls: the Stripe fake serves HTTPS with a
# certificate from a throw-away CA (test/fakes/make_certs.sh). Without
# pgcloud.ca_bundle the executor refuses the connection; with a bundle of
# another CA too; with the right CA it succeeds.
# services: core payments
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
my $other = PgcloudFakes::make_certs("$tmp/other");
my $stripe = PgcloudFakes->start('stripe', dir => "$tmp/stripe", tls => $certs);
like($stripe->url, qr{^https://127\.0\.0\.1:\d+$}, 'the fake speaks HTTPS');

my $node = PostgreSQL::Test::Cluster->new('http_tls');
$node->init;
$node->append_conf('postgresql.conf', join("\n",
    "shared_preload_libraries = 'pgcloud'",
    "pgcloud.databases = 'pgcloud'",
    "pgcloud.stripe_api_url = '" . $stripe->url . "'",
    "pgcloud.stripe_secret_key = 'sk_test_pgcloud'", ''));
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE pgcloud');
$node->safe_psql('pgcloud', 'CREATE EXTENSION pgcloud CASCADE');

sql_node($node, 'pgcloud');

$node->poll_query_until('pgcloud', "SELECT pid IS NOT NULL FROM pgcloud.workers WHERE worker = 'http'")
  or die 'the HTTP executor did not start';
sql(q{SELECT pgcloud.set_policy('core.http_max_attempts', '1')});

sub session
{
    my ($tag) = @_;
    my $id = sql(qq{
        SELECT pgcloud.http_request('stripe', 'POST', '/v1/checkout/sessions',
            'mode=payment&success_url=https%3A%2F%2Fpgcloud.test%2Fok&cancel_url=https%3A%2F%2Fpgcloud.test%2Fno'
            || '&line_items[0][price_data][currency]=usd&line_items[0][price_data][unit_amount]=500'
            || '&line_items[0][price_data][product_data][name]=credit&line_items[0][quantity]=1'
            || '&client_reference_id=$tag&metadata[t]=1', 'application/x-www-form-urlencoded')});
    $node->poll_query_until('pgcloud', "SELECT state IN ('succeeded', 'dead') FROM pgcloud.http_intents WHERE id = '$id'")
      or diag("intent $id did not finish");
    return sql("SELECT state || ' ' || coalesce(response_status::text, '-') || ' ' || coalesce(last_error, '')
                  FROM pgcloud.http_intents WHERE id = '$id'");
}

sub reload_with_bundle
{
    my ($bundle) = @_;
    $node->safe_psql('postgres', "ALTER SYSTEM SET pgcloud.ca_bundle = '$bundle'; SELECT pg_reload_conf();");
    $node->poll_query_until('pgcloud', "SELECT current_setting('pgcloud.ca_bundle') = '$bundle'")
      or die 'the setting did not take';
    sleep(1);    # the worker rereads the configuration when its latch is set (SIGHUP)
}

like(session('no_bundle'), qr/^dead - .*(certificate|SSL)/i,
    'without pgcloud.ca_bundle the self-signed chain is refused (verification is on)');
reload_with_bundle($other->{ca});
like(session('other_ca'), qr/^dead - .*(certificate|SSL)/i, 'a bundle of another CA does not help');
reload_with_bundle($certs->{ca});
like(session('right_ca'), qr/^succeeded 200 /, 'with the CA in pgcloud.ca_bundle the call succeeds');

my @reqs = $stripe->requests;
is(scalar @reqs, 1, 'only the verified connection carried a request');
is($reqs[0]{form}{client_reference_id}, 'right_ca', 'and it was the last one');

$node->stop('fast');
$stripe->stop;
done_testing();
