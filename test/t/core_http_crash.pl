# kill -9 of the postmaster while Stripe requests are in flight. The fake
# answers each request after 2 s (the work is done at once, the answer is
# late) and the executor may run 2 at a time, so at the moment of the kill
# two intents are finished (callbacks committed), two are in flight (the
# fake has done their work) and two are pending. After the restart every
# intent completes exactly once: one final callback effect each, one
# Checkout Session each at the fake, and the two interrupted ones were sent
# again with the same Idempotency-Key and got the saved answer (whether the
# executor found them in flight at start or their claim was lost with the
# crash, which leaves them pending).
# services: core payments
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PgcloudTest;
use Time::HiRes qw(time sleep);

BEGIN { die "PGCLOUD_REPO is not set\n" unless $ENV{PGCLOUD_REPO} }
use lib "$ENV{PGCLOUD_REPO}/test/fakes";
use PgcloudFakes;

my $tmp = PostgreSQL::Test::Utils::tempdir();
my $stripe = PgcloudFakes->start('stripe', dir => "$tmp/stripe");

my $node = PostgreSQL::Test::Cluster->new('http_crash');
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
sql(q{
    SELECT pgcloud.set_policy('core.http_concurrency', '{"stripe": 2, "maas": 4, "smtp": 2, "test": 4}');
    SELECT pgcloud.set_policy('core.http_total_timeout_ms', '10000');
    CREATE SCHEMA tap;
    GRANT USAGE ON SCHEMA tap TO pgcloud_svc_core;  -- the executor's entry points run as the core
    CREATE TABLE tap.effects (n serial, intent_id uuid, status integer, final boolean, session text);
    CREATE FUNCTION tap.cb(intent_id uuid, status integer, response_headers jsonb, response_body text,
                           context jsonb, final boolean) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog
    AS $$ INSERT INTO tap.effects (intent_id, status, final, session)
          VALUES (intent_id, status, final, response_body::jsonb ->> 'id') $$;
});

$stripe->control({ delay_seconds => 2 });
my @ids = split /\n/, sql(q{
    SELECT pgcloud.http_request('stripe', 'POST', '/v1/checkout/sessions',
               'mode=payment&success_url=https%3A%2F%2Fpgcloud.test%2Fok&cancel_url=https%3A%2F%2Fpgcloud.test%2Fno'
               || '&line_items[0][price_data][currency]=usd&line_items[0][price_data][unit_amount]=' || (500 + i)
               || '&line_items[0][price_data][product_data][name]=credit&line_items[0][quantity]=1'
               || '&client_reference_id=crash' || i || '&metadata[i]=' || i,
               'application/x-www-form-urlencoded', '{}', 'checkout-crash-' || i,
               'tap.cb(uuid, integer, jsonb, text, jsonb, boolean)', jsonb_build_object('i', i))
      FROM generate_series(1, 6) i ORDER BY i});
is(scalar @ids, 6, 'six checkout intents');

# Wait until the third and fourth requests reached the fake: the first two are done by then.
$stripe->wait_for(sub { scalar($_[0]->requests) >= 4 }, timeout => 20) or die 'the requests did not reach the fake';
my ($pm) = slurp_file($node->data_dir . '/postmaster.pid') =~ /^(\d+)/;
my @children;
for my $dir (glob('/proc/[0-9]*'))
{
    my ($p) = $dir =~ m{(\d+)$};
    open(my $fh, '<', "$dir/stat") or next;
    my $stat = <$fh> // '';
    push @children, $p if $stat =~ /^\d+ \(.*\) \S (\d+)/ && $1 == $pm;
}
cmp_ok(scalar @children, '>=', 4, 'the postmaster has its children (workers, checkpointer, ...)');
my $done_before = sql("SELECT count(*) FROM pgcloud.http_intents WHERE state = 'succeeded'");
my $in_flight = sql("SELECT count(*) FROM pgcloud.http_intents WHERE state = 'in_flight'");
$node->kill9;
my $t0 = time();
sleep(0.05) while (grep { kill(0, $_) } @children) && time() - $t0 < 20;
ok(!(grep { kill(0, $_) } @children), 'kill -9 of the postmaster: its children noticed and exited');
is($done_before, 2, 'at the kill two intents had succeeded');
is($in_flight, 2, 'two were in flight');

$stripe->control(undef);
$node->start;
$node->poll_query_until('pgcloud', q{
    SELECT count(*) = 6 FROM pgcloud.http_intents WHERE state = 'succeeded' AND callback_done_at IS NOT NULL})
  or diag(sql('SELECT state, attempts, last_error FROM pgcloud.http_intents'));

is(sql("SELECT count(*) FROM pgcloud.http_intents WHERE state = 'succeeded'"), 6, 'after the restart all six succeeded');
is(sql('SELECT count(*) FROM tap.effects WHERE final'), 6, 'six final callback effects');
is(sql('SELECT count(DISTINCT intent_id) FROM tap.effects WHERE final'), 6, 'one per intent: none ran twice');
is(sql('SELECT count(DISTINCT session) FROM tap.effects WHERE final'), 6, 'each got its own session');
my $sessions = $stripe->state->{sessions};
is(scalar(grep { ($_->{client_reference_id} // '') =~ /^crash\d$/ } values %$sessions), 6,
    'Stripe holds six sessions, not eight: the resent requests were not applied twice');

my %by_key;
push @{ $by_key{ $_->{headers}{'idempotency-key'} // '' } }, $_ for $stripe->requests;
my @resent = grep { @{ $by_key{$_} } > 1 } keys %by_key;
is(scalar @resent, 2, 'two intents were sent twice');
is(scalar(grep { $by_key{$_}[0]{idempotency} eq 'new' && $by_key{$_}[1]{idempotency} eq 'replayed' } @resent), 2,
    'with the same Idempotency-Key: the second time Stripe replayed the saved answer');
# The claim commits asynchronously (a lost claim leaves the intent pending,
# which is what recovery makes of one in flight), so an interrupted try may
# or may not have been counted; none needed more than two.
is(sql('SELECT max(attempts) <= 2 AND sum(attempts) BETWEEN 6 AND 8 FROM pgcloud.http_intents'), 't',
    'no intent needed more than two tries');

$node->stop('fast');
$stripe->stop;
done_testing();
