# kill -9 of the postmaster (1) in the middle of a large accrual run and (2)
# while webhooks are being verified and payments credited by the relay
# worker. After each restart: the ledger is consistent (balance = sum of
# entries, unbroken chains), and once the work is redone (the job runs again,
# Stripe redelivers every webhook, the relay resumes) nothing was charged or
# credited twice and nothing is missing.
# services: billing payments
use strict;
use warnings;
use Digest::SHA qw(hmac_sha256_hex);
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep time);
use lib $ENV{PGCLOUD_REPO} . '/test/t';
use PgcloudTest;

my $secret = 'whsec_crash_test';
# Part 1 runs without background workers (the accrual needs none, and the
# relay would then spend minutes delivering its 70,000 events); part 2 with
# them (the relay turns payment.succeeded into credits).
my $node = PostgreSQL::Test::Cluster->new('money_accrual_crash');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'pgcloud'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pgcloud CASCADE');
sql_node($node, 'postgres');

# Runs SQL in a background psql (from a file: IPC::Run only feeds a scalar
# to stdin while it is pumped); returns the harness.
my $scripts = 0;
sub background
{
    my ($script) = @_;
    my $file = "$PostgreSQL::Test::Utils::tmp_check/money_crash_" . ++$scripts . '.sql';
    open(my $fh, '>', $file) or die "$file: $!";
    print $fh $script;
    close($fh);
    return IPC::Run::start(['psql', '-X', '-q', '-v', 'ON_ERROR_STOP=0', '-d', $node->connstr('postgres'), '-f', $file],
        '>', '/dev/null', '2>', "$file.err");
}

# Waits until a query of ours has run for $secs in a backend.
sub running_for
{
    my ($pattern, $secs) = @_;
    return $node->poll_query_until('postgres', qq{
        SELECT count(*) > 0 FROM pg_stat_activity
         WHERE state = 'active' AND query LIKE '$pattern' AND now() - query_start > interval '$secs seconds'});
}

# kill -9 of a backend running our query: the postmaster treats it as a
# crash (every backend and worker is stopped, shared memory reinitialised,
# WAL replayed) and comes back by itself. Killing the postmaster alone would
# not do: a busy backend only notices at its next wait, after committing.
sub crash_backend
{
    my ($pattern) = @_;
    my $pid = '';
    for (1 .. 200)    # a backend between two statements is idle: look again
    {
        $pid = sql(qq{SELECT pid FROM pg_stat_activity
                       WHERE state = 'active' AND query LIKE '$pattern' AND pid <> pg_backend_pid() LIMIT 1});
        last if $pid =~ /^\d+$/;
        sleep(0.01);
    }
    die "no backend runs $pattern" unless $pid =~ /^\d+$/;
    kill 'KILL', $pid;
    # The test clusters run with restart_after_crash = off: the postmaster
    # stops every process and exits; start it again (crash recovery).
    my $pidfile = $node->data_dir . '/postmaster.pid';
    for (1 .. 200)
    {
        last unless -e $pidfile;
        sleep(0.05);
    }
    $node->{_pid} = undef;
    restart_after_crash($node);
    return $pid;
}

sub check_books
{
    my ($what) = @_;
    is(sql('SELECT count(*) FROM billing.verify_ledger()'), '0', "$what: verify_ledger finds nothing wrong");
    is(sql('SELECT count(*) FROM billing.balances a WHERE a.balance <> coalesce((SELECT sum(e.amount) FROM billing.ledger_entries e WHERE e.account_id = a.account_id), 0)'),
        '0', "$what: every balance is the sum of its entries");
}

# ---- 1. accrual --------------------------------------------------------------------------------
# 400 allocations over 40 accounts, started 3 hours ago at odd prices: one run
# charges 72,000 intervals in one transaction.
sql(q{
    SELECT count(billing.open_account(('c0000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid, 'usd'))
      FROM generate_series(1, 40) i;
    INSERT INTO billing.allocations (allocation_id, account_id, sku, price_per_hour, currency, interval_seconds, started_at)
    SELECT ('a0000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid,
           ('c0000000-0000-4000-8000-' || lpad((1 + i % 40)::text, 12, '0'))::uuid,
           'h100x1', 997 + i * 13, 'usd', 60, now() - interval '3 hours' - make_interval(secs => i * 0.37)
      FROM generate_series(1, 400) i;
});
my $h = background('SELECT billing.accrue();');
ok(running_for('SELECT billing.accrue()%', 1.5), 'the accrual run is under way');
crash_backend('SELECT billing.accrue()%');
$h->finish;
like(slurp_file($node->logfile), qr/was terminated by signal 9/, 'the server crashed (backend killed with signal 9)');
is(sql('SELECT count(*) FROM billing.usage_records'), '0', 'the interrupted run left nothing: one transaction');
check_books('after the crash in the accrual');

# The job runs again (twice, and once concurrently with itself).
my $h1 = background('SELECT billing.accrue();');
my $h2 = background('SELECT billing.accrue();');
$h1->finish;
$h2->finish;
sql('SELECT billing.accrue()');
is(sql(q{SELECT count(*) FROM billing.allocations a
          WHERE a.charged_amount <> billing.prorate(a.price_per_hour, a.next_interval::bigint * 60)
             OR (SELECT coalesce(sum(u.amount), 0) FROM billing.usage_records u WHERE u.allocation_id = a.allocation_id) <> a.charged_amount}),
    '0', 'every allocation charged exactly its complete intervals at its price');
is(sql(q{SELECT count(*) - count(DISTINCT (allocation_id, interval_no)) FROM billing.usage_records}), '0',
    'no interval charged twice');
is(sql(q{SELECT count(*) FROM billing.usage_records}), sql(q{SELECT sum(next_interval) FROM billing.allocations}),
    'and none missing');
is(sql(q{SELECT count(*) FROM billing.ledger_entries WHERE kind = 'usage_debit'}),
   sql(q{SELECT count(*) FROM billing.usage_records WHERE amount > 0}), 'one ledger debit per charged interval');
check_books('after the accrual ran again');

$node->stop;

# ---- 2. webhooks ---------------------------------------------------------------------------------------
$node = pgcloud_node('money_webhook_crash', "pgcloud.stripe_webhook_secrets = '$secret'\n");
sql_node($node, 'postgres');
sql(q{SELECT count(billing.open_account(('c0000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid, 'usd'))
        FROM generate_series(1, 40) i});
# 300 paid Checkout Sessions; their webhooks arrive from 4 connections at once,
# each session's event twice, while the relay worker credits the ledger.
my $n = 1500;
sql(qq{
    INSERT INTO payments.payment_sessions (id, user_id, amount, currency, status, intent_id)
    SELECT ('5e550000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid,
           ('c0000000-0000-4000-8000-' || lpad((1 + i % 40)::text, 12, '0'))::uuid,
           1000 + i, 'usd', 'creating', gen_random_uuid()
      FROM generate_series(1, $n) i;
});
my @deliveries;
for my $i (1 .. $n)
{
    my $sid = sprintf('5e550000-0000-4000-8000-%012d', $i);
    my $payload = sprintf('{"id": "evt_crash_%d", "object": "event", "type": "checkout.session.completed", '
        . '"data": {"object": {"id": "cs_test_crash_%d", "object": "checkout.session", "client_reference_id": "%s", '
        . '"amount_total": %d, "currency": "usd", "payment_status": "paid", "payment_intent": "pi_crash_%d"}}}',
        $i, $i, $sid, 1000 + $i, $i);
    push @deliveries, $payload;
}
sub delivery_script
{
    my @payloads = @_;
    my $script = "SET request.jwt.claims = '{\"role\": \"pgcloud_anon\"}';\nSET ROLE pgcloud_anon;\n";
    for my $p (@payloads)
    {
        my $t = time();
        $t = int($t);
        my $sig = "t=$t,v1=" . hmac_sha256_hex("$t.$p", $secret);
        $script .= "SET request.headers = '{\"stripe-signature\": \"$sig\"}';\n"
            . "SELECT api.stripe_webhook(\$pw\$$p\$pw\$);\n";
    }
    return $script;
}
my @order1 = @deliveries;
my @order2 = reverse @deliveries;
my @order3 = @deliveries[map { ($_ * 7) % $n } 0 .. $n - 1];
my @order4 = @deliveries[map { ($_ * 11) % $n } 0 .. $n - 1];
my @hooks = map { background(delivery_script(@$_)) } \@order1, \@order2, \@order3, \@order4;
$node->poll_query_until('postgres', "SELECT count(*) > 200 FROM payments.payments")
  or diag('fewer than 200 payments recorded');
my $credited = sql("SELECT count(*) FROM billing.ledger_entries WHERE kind = 'credit'");
my $recorded = sql('SELECT count(*) FROM payments.payments');
crash_backend('%api.stripe_webhook%');
$_->finish for @hooks;
# The backend was picked while it ran api.stripe_webhook; by the kill it may
# have moved on to its next statement of the same delivery script.
like(slurp_file($node->logfile), qr/was terminated by signal 9.*\n.*(api\.stripe_webhook|request\.headers)/,
    'the server crashed during the webhook deliveries (a delivering backend killed with signal 9)');
note("at the crash: $recorded payments recorded, $credited credited");
ok($recorded < $n, 'the crash came before every webhook was processed') or diag("recorded $recorded");
ok($credited < $n, 'and before every payment was credited') or diag("credited $credited");
check_books('after the crash in webhook processing');

# Stripe redelivers every event (it never got our 200 for some); the relay resumes.
background(delivery_script(@deliveries))->finish;
is(sql('SELECT count(*) FROM payments.payments'), $n, 'every paid session recorded once');
ok($node->poll_query_until('postgres', "SELECT count(*) FROM billing.ledger_entries WHERE kind = 'credit'", $n),
    'the relay credited every payment');
ok($node->poll_query_until('postgres', 'SELECT count(*) FROM pgcloud.outbox WHERE published_at IS NULL', '0'),
    'nothing left to deliver');
is(sql(q{SELECT count(*) FROM (SELECT cause_id FROM billing.ledger_entries WHERE kind = 'credit' GROUP BY 1 HAVING count(*) > 1) d}),
    '0', 'no session credited twice');
is(sql(q{SELECT sum(amount) FROM billing.ledger_entries WHERE kind = 'credit'}), sql(qq{SELECT sum(1000 + i) FROM generate_series(1, $n) i}),
    'the credits add up to what was paid');
is(sql(q{SELECT count(*) FROM pgcloud.outbox WHERE event_type = 'payment.succeeded'}), $n, 'one payment.succeeded per session');
is(sql('SELECT count(*) FROM pgcloud.dead_letters'), '0', 'nothing dead-lettered');
check_books('after redelivery');

$node->stop;
done_testing();
