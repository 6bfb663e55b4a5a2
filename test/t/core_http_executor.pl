# The HTTP intent executor against the fakes (test/fakes): Stripe Checkout
# Sessions through the real wire format, MAAS with OAuth 1.0 PLAINTEXT, and
# the injected failures: 500s, a lost answer, 429 with Retry-After, a hang
# (total timeout), connection resets, a 400, a target that stays down. The
# gaps between tries are measured from the fake's request log; callback
# effects and the fake's sessions are counted (nothing is applied twice).
# Then per-target concurrency, credentials kept out of logs and rows, and
# SIGTERM / pg_ctl stop -m fast while a request hangs.
# services: core payments maas notification
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
my $maas = PgcloudFakes->start('maas', dir => "$tmp/maas");

my $node = PostgreSQL::Test::Cluster->new('http_executor');
$node->init;
$node->append_conf('postgresql.conf', join("\n",
    "shared_preload_libraries = 'pgcloud'",
    "pgcloud.databases = 'pgcloud'",
    "pgcloud.stripe_api_url = '" . $stripe->url . "'",
    "pgcloud.stripe_secret_key = 'sk_test_pgcloud'",
    "pgcloud.maas_url = '" . $maas->url . "'",
    "pgcloud.maas_api_key = 'ck:tk:sec'",
    "pgcloud.test_http_url = '" . $maas->root_url . "'", ''));
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE pgcloud');
$node->safe_psql('pgcloud', 'CREATE EXTENSION pgcloud CASCADE');

sql_node($node, 'pgcloud');

$node->poll_query_until('pgcloud', "SELECT pid IS NOT NULL FROM pgcloud.workers WHERE worker = 'http'")
  or die 'the HTTP executor did not start';
sql(q{
    SELECT pgcloud.set_policy('core.http_max_attempts', '3');
    SELECT pgcloud.set_policy('core.http_backoff_base_ms', '300');
    SELECT pgcloud.set_policy('core.http_connect_timeout_ms', '1000');
    SELECT pgcloud.set_policy('core.http_total_timeout_ms', '1500');
    CREATE SCHEMA tap;
    GRANT USAGE ON SCHEMA tap TO pgcloud_svc_core;  -- the executor's entry points run as the core
    CREATE TABLE tap.effects (n serial, intent_id uuid, status integer, final boolean, body text, context jsonb);
    CREATE FUNCTION tap.cb(intent_id uuid, status integer, response_headers jsonb, response_body text,
                           context jsonb, final boolean) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog
    AS $$ INSERT INTO tap.effects (intent_id, status, final, body, context)
          VALUES (intent_id, status, final, response_body, context) $$;
    CREATE FUNCTION tap.checkout(tag text, body text DEFAULT NULL) RETURNS uuid LANGUAGE sql AS $$
        SELECT pgcloud.http_request('stripe', 'POST', '/v1/checkout/sessions',
            coalesce(body, 'mode=payment&success_url=https%3A%2F%2Fpgcloud.test%2Fok&cancel_url=https%3A%2F%2Fpgcloud.test%2Fno'
                || '&line_items[0][price_data][currency]=usd&line_items[0][price_data][unit_amount]=500'
                || '&line_items[0][price_data][product_data][name]=credit&line_items[0][quantity]=1'
                || '&client_reference_id=' || tag || '&metadata[tag]=' || tag),
            'application/x-www-form-urlencoded', '{}', NULL,
            'tap.cb(uuid, integer, jsonb, text, jsonb, boolean)', jsonb_build_object('tag', tag))
    $$;
});

sub wait_done
{
    my ($id) = @_;
    $node->poll_query_until('pgcloud',
        "SELECT state IN ('succeeded', 'dead') AND callback_done_at IS NOT NULL FROM pgcloud.http_intents WHERE id = '$id'")
      or diag("intent $id not done: " . sql("SELECT row(state, attempts, last_error) FROM pgcloud.http_intents WHERE id = '$id'"));
}

# The fake's log lines for one intent (its Idempotency-Key), without the
# second line a released hang writes.
sub tries
{
    my ($fake, $key) = @_;
    return grep { ($_->{headers}{'idempotency-key'} // '') eq $key && !$_->{released} } $fake->requests;
}

sub sessions_tagged
{
    my ($tag) = @_;
    my $s = $stripe->state->{sessions};
    return scalar grep { ($_->{client_reference_id} // '') eq $tag } values %$s;
}

sub effects
{
    my ($id) = @_;
    return sql("SELECT coalesce(string_agg(status::text || ':' || final::text, ',' ORDER BY n), '') FROM tap.effects WHERE intent_id = '$id'");
}

sub intent { my ($id, $cols) = @_; return sql("SELECT $cols FROM pgcloud.http_intents WHERE id = '$id'") }

# --- success: credentials and Idempotency-Key added at send time ------------------
$stripe->control(undef);
my $id = sql("SELECT tap.checkout('ok')");
wait_done($id);
my @t = tries($stripe, $id);
is(scalar @t, 1, 'success: one request');
is($t[0]{headers}{authorization}, 'Bearer sk_test_pgcloud', 'the Stripe key was added at send time (Bearer)');
ok($t[0]{auth_ok}, 'and Stripe accepted it');
is($t[0]{idempotency}, 'new', 'the Idempotency-Key (the intent id) was sent');
is(intent($id, "state || ' ' || attempts || ' ' || response_status"), 'succeeded 1 200', 'succeeded on the first try');
like(intent($id, 'response_body'), qr/"id": "cs_test_/, 'the response is recorded');
is(effects($id), '200:true', 'the callback ran once, final, with the status');
is(sql("SELECT body::jsonb ->> 'client_reference_id' FROM tap.effects WHERE intent_id = '$id'"), 'ok',
    'and got the response body');

# --- 500, 500, then 200: backoff with jitter, same key ----------------------------------------
$stripe->control({ status => 500, fail_next => 2 });
$id = sql("SELECT tap.checkout('r500')");
wait_done($id);
@t = tries($stripe, $id);
is(join(',', map { $_->{status} } @t), '500,500,200', '500 twice, then success');
my ($g1, $g2) = ($t[1]{ts} - $t[0]{ts}, $t[2]{ts} - $t[1]{ts});
cmp_ok($g1, '>=', 0.14, "first backoff >= 300 ms x 0.5 (was ${g1}s)");
cmp_ok($g1, '<', 1.5, 'and bounded (300 ms x 1.5 plus slack)');
cmp_ok($g2, '>=', 0.29, "second backoff doubles: >= 600 ms x 0.5 (was ${g2}s)");
cmp_ok($g2, '<', 2.0, 'and bounded (600 ms x 1.5 plus slack)');
is(intent($id, "state || ' ' || attempts"), 'succeeded 3', 'three tries');
is(effects($id), '500:false,500:false,200:true', 'callback: two failed tries, one final outcome');
is(sessions_tagged('r500'), 1, 'Stripe created one session');

# --- the answer is lost after Stripe did the work: the retry is replayed ----------------------
$stripe->control({ drop_connection => 1, phase => 'after', fail_next => 1 });
$id = sql("SELECT tap.checkout('lost')");
wait_done($id);
@t = tries($stripe, $id);
cmp_ok(scalar @t, '>=', 2, 'the request was sent again after the connection dropped');
is($t[0]{idempotency}, 'new', 'the first one executed');
ok($t[-1]{idempotent_replayed}, 'the retry got the saved answer (same Idempotency-Key)');
is(sessions_tagged('lost'), 1, 'one session, not two');
is(effects($id), '200:true', 'one final callback');

# --- 429 with Retry-After -------------------------------------------------------------------
$stripe->control({ status => 429, retry_after => 2, fail_next => 1 });
$id = sql("SELECT tap.checkout('r429')");
wait_done($id);
@t = tries($stripe, $id);
is(join(',', map { $_->{status} } @t), '429,200', '429, then success');
my $gap = $t[1]{ts} - $t[0]{ts};
cmp_ok($gap, '>=', 1.95, "Retry-After: 2 was honoured (gap ${gap}s)");
cmp_ok($gap, '<', 4, 'and not much more');

# --- a hang: the total timeout ends the try ---------------------------------------------------
$stripe->control({ hang => 1, fail_next => 1 });
$id = sql("SELECT tap.checkout('hang')");
wait_done($id);
@t = tries($stripe, $id);
is(join(',', map { $_->{injected} // 'none' } @t), 'hang,none', 'the first try hung, the second was answered');
$gap = $t[1]{ts} - $t[0]{ts};
cmp_ok($gap, '>=', 1.45, "the hung try was abandoned after the total timeout (1.5 s; gap ${gap}s)");
like(intent($id, 'last_error'), qr/timed out/i, 'the timeout is recorded');
$stripe->control(undef);    # releases the hung request: the fake replays it under the same key
$stripe->wait_for(sub { grep { $_->{released} } $_[0]->requests }, timeout => 5);
is(sessions_tagged('hang'), 1, 'the released request did not create a second session');

# --- connection resets --------------------------------------------------------------------------
$stripe->control({ drop_connection => 1, fail_next => 3 });
$id = sql("SELECT tap.checkout('reset')");
wait_done($id);
is(intent($id, 'state'), 'succeeded', 'connection resets are retried until an answer comes');
cmp_ok(intent($id, 'attempts'), '>=', 2, 'over more than one try');
like(intent($id, 'last_error'), qr/curl error/, 'the reset is recorded');
is(sql("SELECT count(*) FILTER (WHERE NOT final AND status IS NULL) + 1 FROM tap.effects WHERE intent_id = '$id'"),
    intent($id, 'attempts'), 'each failed try told the callback (no status)');
is(sql("SELECT count(*) FROM tap.effects WHERE intent_id = '$id' AND final"), 1, 'exactly one final callback');

# --- a 400 is final at once -----------------------------------------------------------------------
$stripe->control(undef);
$id = sql("SELECT tap.checkout('bad', 'mode=payment')");
wait_done($id);
@t = tries($stripe, $id);
is(scalar @t, 1, '400: no retry');
is(intent($id, "state || ' ' || attempts || ' ' || response_status"), 'dead 1 400', 'dead at once, status recorded');
is(effects($id), '400:true', 'the callback got the 400, final');
like(sql("SELECT body FROM tap.effects WHERE intent_id = '$id'"), qr/parameter_missing/, "with Stripe's error body");
is(sql("SELECT count(*) FROM pgcloud.outbox WHERE event_type = 'platform.alert' AND aggregate_id = '$id'"), 0,
    'no operator alert for a refusal');

# --- a target that stays down: dead letter after N tries -------------------------------------------
$stripe->control({ status => 503 });
$id = sql("SELECT tap.checkout('down')");
wait_done($id);
@t = tries($stripe, $id);
is(scalar @t, 3, 'three tries (core.http_max_attempts)');
is(intent($id, "state || ' ' || response_status"), 'dead 503', 'then dead');
is(effects($id), '503:false,503:false,503:true', 'exactly one final callback');
is(sql("SELECT payload ->> 'kind' FROM pgcloud.outbox WHERE event_type = 'platform.alert' AND aggregate_id = '$id'"),
    'http_dead', 'and a platform alert');
is(sql("SELECT dead FROM pgcloud.http_intents_status WHERE target = 'stripe'"), 2, 'the operator view counts the dead');
$stripe->control(undef);

# --- per-target concurrency --------------------------------------------------------------------------
sql(q{SELECT pgcloud.set_policy('core.http_concurrency', '{"stripe": 2, "maas": 4, "smtp": 2, "test": 4}')});
$stripe->control({ delay_seconds => 1 });
my $t0 = time();
my @ids = split /\n/, sql("SELECT tap.checkout('c' || i) FROM generate_series(1, 6) i");
wait_done($_) for @ids;
my $took = time() - $t0;
my @starts = sort { $a <=> $b } map { my @x = tries($stripe, $_); $x[0]{ts} } @ids;
my $min_spread = 99;
$min_spread = ($starts[$_ + 2] - $starts[$_] < $min_spread ? $starts[$_ + 2] - $starts[$_] : $min_spread) for 0 .. $#starts - 2;
cmp_ok($min_spread, '>=', 0.9, 'never more than 2 Stripe requests at once (any 3 starts span >= 1 answer time)');
cmp_ok($took, '>=', 2.9, "six 1-second requests two at a time take 3 s or more ($took s)");
# Two at a time, not one: some two requests started within one answer time
# of each other (measured at the fake, so a loaded machine cannot fake it).
my $max_overlap_gap = 99;
$max_overlap_gap = ($starts[$_ + 1] - $starts[$_] < $max_overlap_gap ? $starts[$_ + 1] - $starts[$_] : $max_overlap_gap) for 0 .. $#starts - 1;
cmp_ok($max_overlap_gap, '<', 0.9, 'but they do run two at a time (two starts within one answer time)');
$stripe->control(undef);

# --- MAAS: OAuth 1.0 PLAINTEXT, fresh nonce per request ----------------------------------------------
my @m = split /\n/, sql(q{
    SELECT pgcloud.http_request('maas', 'GET', '/api/2.0/machines/', callback => 'tap.cb(uuid, integer, jsonb, text, jsonb, boolean)')
      FROM generate_series(1, 2)});
wait_done($_) for @m;
my @mr = map { tries($maas, $_) } @m;
is(scalar(grep { $_->{auth_ok} } @mr), 2, 'MAAS accepted the OAuth header of both requests');
is($mr[0]{oauth}{oauth_signature_method}, 'PLAINTEXT', 'PLAINTEXT signature');
is($mr[0]{oauth}{oauth_consumer_key} . ':' . $mr[0]{oauth}{oauth_token}, 'ck:tk', 'consumer key and token from pgcloud.maas_api_key');
isnt($mr[0]{oauth}{oauth_nonce}, $mr[1]{oauth}{oauth_nonce}, 'a fresh nonce per request');
cmp_ok(abs($mr[0]{oauth}{oauth_timestamp} - time()), '<', 60, 'a current timestamp');
like(intent($m[0], 'response_body'), qr/"system_id": "abc123"/, 'the machines list is recorded');

# --- response bodies are kept up to core.http_response_max_bytes ----------------------------------------
sql(q{SELECT pgcloud.set_policy('core.http_response_max_bytes', '100')});
$id = sql(q{SELECT pgcloud.http_request('maas', 'GET', '/api/2.0/machines/',
                                       callback => 'tap.cb(uuid, integer, jsonb, text, jsonb, boolean)')});
wait_done($id);
is(intent($id, "state || ' ' || response_truncated || ' ' || octet_length(response_body)"), 'succeeded true 100',
    'a long answer is cut at core.http_response_max_bytes and marked truncated');
sql(q{SELECT pgcloud.set_policy('core.http_response_max_bytes', '65536')});

# --- the test target: a plain GET, no credentials -------------------------------------------------------
$id = sql(q{SELECT pgcloud.http_request('test', 'GET', '/MAAS/api/2.0/version/',
                                       callback => 'tap.cb(uuid, integer, jsonb, text, jsonb, boolean)')});
wait_done($id);
@t = tries($maas, $id);
ok(!exists $t[0]{headers}{authorization}, 'the test target gets no credentials');
is(intent($id, "response_headers ->> 'content-type'"), 'application/json', 'response headers are recorded, lower-case');

# --- connection reuse: many requests, few TCP connections ---------------------------------------------
# The executor keeps its connections across rounds (HTTP/1.1 keep-alive): 40
# requests at concurrency 4 come over at most 4 connections, which the fake
# tells apart by the client's port.
my @kept = split /\n/, sql(q{SELECT pgcloud.http_request('test', 'GET', '/MAAS/api/2.0/version/',
                                       callback => 'tap.cb(uuid, integer, jsonb, text, jsonb, boolean)')
                               FROM generate_series(1, 40)});
wait_done($_) for @kept;
my %peers;
my $sent = 0;
for my $k (@kept)
{
    for my $try (tries($maas, $k))
    {
        $sent++;
        $peers{ $try->{peer} // 'none' }++;
    }
}
is($sent, 40, '40 requests sent, once each');
ok(!exists $peers{none}, 'the fake saw the client port of every request');
cmp_ok(scalar(keys %peers), '<=', 4, '40 requests came over at most 4 TCP connections (' . scalar(keys %peers) . ')');
# Recorded in batches (one statement per round, the callbacks called from C,
# each in a subtransaction of its own): every callback ran once, as final,
# and every intent is marked done with it.
my $kept_ids = "'{" . join(',', @kept) . "}'::uuid[]";
is(sql("SELECT count(*) || ' ' || count(DISTINCT intent_id) || ' ' || bool_and(final) FROM tap.effects
         WHERE intent_id = ANY ($kept_ids)"), '40 40 true', 'the 40 callbacks ran once each, with the final outcome');
is(sql("SELECT count(*) FROM pgcloud.http_intents
         WHERE id = ANY ($kept_ids) AND state = 'succeeded' AND attempts = 1 AND callback_done_at IS NOT NULL"),
    40, 'and all 40 intents succeeded at the first try, their callbacks marked done');

# --- refused tries in batched rounds: no retry lost, no callback run twice -----------------------------
# A round may carry the outcomes of one window to the next round's record
# (one statement and one commit for both). The fake answers 503 to the next
# 6 requests of 24: each refused try is retried, each intent gets one final
# callback, and one best-effort callback per refused try.
$maas->control({ status => 503, fail_next => 6 });
my @mix = split /\n/, sql(q{SELECT pgcloud.http_request('test', 'GET', '/MAAS/api/2.0/version/',
                                       callback => 'tap.cb(uuid, integer, jsonb, text, jsonb, boolean)')
                               FROM generate_series(1, 24)});
wait_done($_) for @mix;
$maas->control(undef);
my $mix_ids = "'{" . join(',', @mix) . "}'::uuid[]";
is(sql("SELECT count(*) || ' ' || sum(attempts) FROM pgcloud.http_intents WHERE id = ANY ($mix_ids) AND state = 'succeeded'"),
    '24 30', 'all 24 succeeded, after 30 tries: the 6 refused ones were retried, none lost');
is(sql("SELECT count(*) FILTER (WHERE final) || ' ' || count(DISTINCT intent_id) FILTER (WHERE final) || ' '
               || count(*) FILTER (WHERE NOT final) || ' ' || count(*) FILTER (WHERE final AND status <> 200)
          FROM tap.effects WHERE intent_id = ANY ($mix_ids)"),
    '24 24 6 0', 'one final callback per intent (status 200), one not final per refused try');
my $mix_sent = 0;
$mix_sent += scalar(tries($maas, $_)) for @mix;
is($mix_sent, 30, 'the target saw 30 requests');

# --- the next intents go out while a round records the last outcomes ---------------------------------
# A round claims (committed in flight) and sends first, then records the
# outcomes of the transfers that finished and runs their callbacks: the target
# works while the callbacks run. At test concurrency 1, with answers after
# 1 s: the first intent's callback takes 3 s; the second intent is claimed
# in the round that records the first, and reaches the target before that
# callback is over (it used to wait for it: record, then claim).
sql(q{
    SELECT pgcloud.set_policy('core.http_concurrency', '{"stripe": 2, "maas": 4, "smtp": 2, "test": 1}');
    SELECT pgcloud.set_policy('core.http_total_timeout_ms', '20000');
    CREATE TABLE tap.slow_effects (intent_id uuid, started_at timestamptz);
    CREATE FUNCTION tap.slow_cb(intent_id uuid, status integer, response_headers jsonb, response_body text,
                                context jsonb, final boolean) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog
    AS $$ INSERT INTO tap.slow_effects VALUES (intent_id, clock_timestamp());
          SELECT pg_sleep(CASE WHEN (context ->> 'slow')::boolean THEN 3 ELSE 0 END) $$;
});
$maas->control({ delay_seconds => 1 });
my ($slow, $next) = split /\n/, sql(q{
    BEGIN;
    CREATE TEMP TABLE two AS
        SELECT i, pgcloud.http_request('test', 'GET', '/MAAS/api/2.0/version/',
                   callback => 'tap.slow_cb(uuid, integer, jsonb, text, jsonb, boolean)',
                   context => jsonb_build_object('slow', i = 1)) AS id
          FROM generate_series(1, 2) i;
    -- The slow one is due first (both were written at the same now()).
    UPDATE pgcloud.http_intents h SET next_attempt_at = h.next_attempt_at - interval '1 second'
      FROM two WHERE two.i = 1 AND h.id = two.id;
    COMMIT;
    SELECT id FROM two ORDER BY i});
wait_done($_) for ($slow, $next);
$maas->control(undef);
my @sent_next = tries($maas, $next);
my @sent_slow = tries($maas, $slow);
my $slow_cb_at = sql("SELECT extract(epoch FROM started_at) FROM tap.slow_effects WHERE intent_id = '$slow'");
is(scalar(@sent_slow) . ' ' . scalar(@sent_next), '1 1', 'each was sent once');
cmp_ok($sent_next[0]{ts} - $sent_slow[0]{ts}, '>=', 0.9, 'the second after the first was answered (concurrency 1)');
cmp_ok($sent_next[0]{ts}, '<', $slow_cb_at + 1,
    'and before the first one\'s 3-second callback was over: sent while that outcome was recorded');
is(sql("SELECT string_agg(state || ' ' || attempts, ', ') FROM pgcloud.http_intents WHERE id IN ('$slow', '$next')"),
    'succeeded 1, succeeded 1', 'both succeeded at the first try');
is(sql("SELECT count(*) FROM tap.slow_effects"), 2, 'both callbacks ran once');
sql(q{
    SELECT pgcloud.set_policy('core.http_concurrency', '{"stripe": 2, "maas": 4, "smtp": 2, "test": 4}');
    SELECT pgcloud.set_policy('core.http_total_timeout_ms', '1500');
});

# --- credentials never in the log or in a row ------------------------------------------------------------
my $log = slurp_file($node->logfile);
unlike($log, qr/sk_test_pgcloud/, 'the Stripe key is not in the server log');
unlike($log, qr/&sec"|oauth_signature/, 'nor the MAAS secret');
is(sql(q{SELECT count(*) FROM pgcloud.http_intents h
          WHERE h::text LIKE '%sk_test_pgcloud%' OR h::text LIKE '%oauth_signature%' OR h::text ILIKE '%bearer%'}), 0,
    'nor any intent (request, response or error)');

# --- SIGTERM and pg_ctl stop -m fast while a request hangs -------------------------------------------------
# A long total timeout: the request must still hang when we look, however loaded the machine.
sql(q{SELECT pgcloud.set_policy('core.http_total_timeout_ms', '60000')});
$stripe->control({ hang => 1 });
$id = sql("SELECT tap.checkout('term')");
$stripe->wait_for(sub { scalar tries($_[0], $id) }, timeout => 10) or diag('the request did not reach the fake');
my $pid = sql("SELECT pid FROM pgcloud.workers WHERE worker = 'http'");
is(intent($id, 'state'), 'in_flight', 'the request hangs in flight');
$t0 = time();
kill 'TERM', $pid;
my $gone = 0;
while (time() - $t0 < 10) { if (!kill(0, $pid)) { $gone = 1; last } sleep(0.05) }
ok($gone, 'SIGTERM ends the executor at once, hanging request or not (' . sprintf('%.2f', time() - $t0) . ' s)');
$node->poll_query_until('pgcloud', "SELECT pid IS NOT NULL AND pid <> $pid FROM pgcloud.workers WHERE worker = 'http'")
  or diag('the launcher did not start it again');
$stripe->wait_for(sub { scalar(tries($_[0], $id)) >= 2 }, timeout => 10);
is(scalar(tries($stripe, $id)), 2, 'the restarted executor sent the interrupted request again');
$log = slurp_file($node->logfile);
like($log, qr/pgcloud http: 1 intents left in flight are sent again/, 'after recovering it at start');
unlike($log, qr/terminated by signal/, 'no process crashed');
$t0 = time();
$node->stop('fast');
my $stop = time() - $t0;
cmp_ok($stop, '<', 10, sprintf('pg_ctl stop -m fast does not wait for the hanging target (%.2f s)', $stop));

$stripe->stop;
$maas->stop;
done_testing();
