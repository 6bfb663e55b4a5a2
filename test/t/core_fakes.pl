# The test fakes themselves (test/fakes/): the Perl helper other TAP tests use
# to start and drive them, then test/fakes/selftest.sh, which checks every
# fake against independent clients (curl, openssl, smtplib); each of its
# lines becomes one TAP result.
# services: core payments maas notification
use strict;
use warnings;
use File::Temp qw(tempdir);
use Test::More;

BEGIN { die "PGCLOUD_REPO is not set\n" unless $ENV{PGCLOUD_REPO} }
use lib "$ENV{PGCLOUD_REPO}/test/fakes";
use PgcloudFakes;

my $repo = $ENV{PGCLOUD_REPO};
my $tmp = tempdir('fakes.XXXXXX', TMPDIR => 1, CLEANUP => 1);

# --- the Perl helper ---------------------------------------------------------
my $certs = PgcloudFakes::make_certs("$tmp/certs");
ok(-s $certs->{ca} && -s $certs->{cert} && -s $certs->{key}, 'make_certs writes a CA and a server pair');

my $stripe = PgcloudFakes->start('stripe', dir => "$tmp/stripe", tls => $certs);
like($stripe->url, qr{^https://127\.0\.0\.1:\d+$}, 'stripe over TLS: url');
my ($code, $body) = $stripe->curl('POST', '/v1/checkout/sessions',
    '-H', 'Authorization: Bearer sk_test_pgcloud', '-H', 'Idempotency-Key: t090-1',
    '-d', 'mode=payment', '-d', 'success_url=https://pgcloud.test/ok', '-d', 'cancel_url=https://pgcloud.test/no',
    '-d', 'line_items[0][price_data][currency]=usd', '-d', 'line_items[0][price_data][unit_amount]=500',
    '-d', 'line_items[0][price_data][product_data][name]=credit', '-d', 'line_items[0][quantity]=1',
    '-d', 'client_reference_id=t090', '-d', 'metadata[k]=v');
is($code, 200, 'checkout session created through the CA-verified TLS connection');
my $sid = JSON::PP->new->decode($body)->{id};
my $done = $stripe->post_json("/v1/checkout/sessions/$sid/_complete");
is($done->{event}{type}, 'checkout.session.completed', 'post_json reaches the fake-only helper');

$stripe->control({ status => 503, fail_next => 1 });
($code) = $stripe->curl('GET', "/v1/checkout/sessions/$sid", '-H', 'Authorization: Bearer sk_test_pgcloud');
is($code, 503, 'control() writes control.json, read on the next request');
($code) = $stripe->curl('GET', "/v1/checkout/sessions/$sid", '-H', 'Authorization: Bearer sk_test_pgcloud');
is($code, 200, '... and fail_next runs out');
my @reqs = $stripe->requests;
is(scalar(grep { ($_->{injected} // '') eq 'status' } @reqs), 1, 'requests() reads the request log');

my $maas = PgcloudFakes->start('maas', dir => "$tmp/maas", args => ['--machines', '2']);
like($maas->url, qr{^http://127\.0\.0\.1:\d+/MAAS$}, 'maas url is what pgcloud.maas_url wants');
is_deeply([ sort keys %{ $maas->state->{machines} } ], [ 'abc123', 'abc124' ], 'state() lists the machines');

my $smtp = PgcloudFakes->start('smtp', dir => "$tmp/smtp");
like($smtp->url, qr{^smtp://127\.0\.0\.1:\d+$}, 'smtp url');
my $pid = $smtp->pid;
$_->stop for $stripe, $maas, $smtp;
ok(!kill(0, $pid), 'stop() ends the fake');
ok(!-e "$tmp/smtp/port", 'a stopped fake removes its port file');

# --- selftest.sh ---------------------------------------------------------------
open(my $st, '-|', 'bash', "$repo/test/fakes/selftest.sh") or die "selftest.sh: $!";
my ($checks, $summary) = (0, '');
while (my $line = <$st>)
{
    chomp $line;
    if ($line =~ /^ok\s+(.*)$/) { pass("selftest: $1"); $checks++; }
    elsif ($line =~ /^FAIL\s+(.*)$/) { fail("selftest: $1"); $checks++; }
    elsif ($line =~ /^\d+ passed, \d+ failed$/) { $summary = $line; }
    else { diag($line); }
}
close($st);
is($?, 0, "selftest.sh exits 0 ($summary)");
cmp_ok($checks, '>=', 90, 'selftest.sh ran all its checks');

done_testing();
