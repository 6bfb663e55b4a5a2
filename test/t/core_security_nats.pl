# Security tier, NATS (issue 10). The broker is TLS-only and authenticates
# every connection with the users deploy/nats/authorization.conf derives
# from the registry: anonymous clients are refused, a service's user cannot
# publish another service's event types, a relay connecting as a service
# (credentials file) gets only its own events through. Fault injection: a
# JetStream storage limit refuses events; the relay must not mark published
# any event the stream lacks (the acknowledgement race of bgworkers/relay.c).
use strict;
use warnings;
use lib $ENV{PGCLOUD_REPO} . '/test/t';
use PgcloudTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep);
use Encode ();
use JSON::PP ();

my $natsdir = "$PostgreSQL::Test::Utils::tmp_check/nats_security";
my ($port, $nats) = start_nats($natsdir);
natstool('count', nats_url($port, 'operator'), 'NOSUCHSTREAM');    # builds natstool
my $tool = "$ENV{TESTDIR}/natstool";

# Runs natstool with a deadline; returns (exit status, output).
sub tool {
    my ($user, @args) = @_;
    local $ENV{NATSTOOL_CA} = nats_ca();
    local $ENV{NATSTOOL_INBOX} = $user ? "_INBOX_pgcloud_$user" : '';
    my $url = $user ? nats_url($port, $user) : "tls://127.0.0.1:$port";
    my $out = `timeout 15 $tool $args[0] $url @args[1 .. $#args] 2>&1`;
    return ($? >> 8, $out);
}

# 1. Who may connect.
my ($rc, $out) = tool(undef, 'count', 'PGCLOUD_EVENTS');
isnt($rc, 0, 'an anonymous client is refused');
like($out, qr/Authorization|Authentication/i, '... with an authorization violation');
{
    local $ENV{NATSTOOL_CA} = nats_ca();
    $out = `timeout 15 $tool count tls://pgcloud_payments:wrong\@127.0.0.1:$port PGCLOUD_EVENTS 2>&1`;
    isnt($? >> 8, 0, 'a wrong password is refused');
}
my $conf = slurp_file("$ENV{PGCLOUD_REPO}/deploy/nats/nats-server.conf");
unlike($conf, qr/^\s*(no_auth_user|authorization\s*\{\s*\})/m, 'the shipped server configuration has no anonymous user');
like($conf, qr/^tls \{/m, 'the shipped server configuration requires TLS');
like($conf, qr/^include \.\/authorization\.conf/m, 'and takes its users from the generated authorization.conf');

# 2. The operator creates the stream, with a storage limit of 50 messages
#    that refuses new ones (the fault for step 4).
($rc, $out) = tool('operator', 'stream', 'PGCLOUD_EVENTS', "'pgcloud.>'", 50);
is($rc, 0, 'the operator user creates the stream') or diag($out);

# 3. A compromised notification service tries to publish payment.succeeded.
($rc, $out) = tool('notification', 'publish', 'pgcloud.payment.succeeded', 1, 64);
isnt($rc, 0, "notification's NATS user cannot publish payment.succeeded");
($rc, $out) = tool('operator', 'count', 'PGCLOUD_EVENTS');
is($out + 0, 0, 'the stream holds nothing from it');

# 4. A relay connecting as the notification service (credentials file with
#    "%d" = database name) gets notification's events through and not a
#    payment.succeeded a superuser slipped into its outbox.
my $creds = "$natsdir.creds";
mkdir $creds;
open(my $fh, '>', "$creds/postgres.creds") or die;
print $fh "pgcloud_notification:pw-notification\n";
close $fh;
chmod 0600, "$creds/postgres.creds";
my $svc = pgcloud_node('svcnode', "pgcloud.nats_url = 'tls://127.0.0.1:$port'\n"
    . "pgcloud.nats_credentials = '$creds/%d.creds'\npgcloud.ca_bundle = '" . nats_ca() . "'\n");
$svc->safe_psql('postgres', q{
    SET ROLE pgcloud_svc_notification;
    SELECT pgcloud.emit('notification.sent', 'notification', 'n-1', '{"to": "x"}');
    RESET ROLE;
    SELECT pgcloud.emit('payment.succeeded', 'payment', 'forged', '{"amount": 5000000}');
});
is(wait_until($svc, "SELECT count(*) FROM pgcloud.outbox WHERE published_at IS NOT NULL AND event_type = 'notification.sent'", '1', 60),
    '1', 'the service relay publishes its own event as its NATS user');
sleep(12);    # past the relay's ack wait
is($svc->safe_psql('postgres', "SELECT count(*) FROM pgcloud.outbox WHERE published_at IS NULL AND event_type = 'payment.succeeded'"),
    '1', 'the broker refused the foreign event type: it is still pending, not published');
($rc, $out) = tool('operator', 'count', 'PGCLOUD_EVENTS');
is($out + 0, 1, 'the stream holds only the notification event');
$svc->stop('fast');

# 5. Fault injection: 300 events, 49 places left in the stream.
my $node = pgcloud_node('limits', nats_settings($port));
$node->safe_psql('postgres', q{
    SELECT count(pgcloud.emit('load.tick', 'thing', 'agg-' || i,
                              jsonb_build_object('seq', i, 'note', E'quote " backslash \\\\ tab \t newline \n \u00e9 \u2028 \u0001',
                                                 'n', 1.50, 'big', 12345678901234567890, 'nested', jsonb_build_object('a', ARRAY[1, 2], 'b', NULL),
                                                 'empty', '{}'::jsonb, 'list', '[]'::jsonb, 't', true)))
      FROM generate_series(1, 300) i;
});
wait_until($node, 'SELECT count(*) FROM pgcloud.outbox WHERE published_at IS NOT NULL', '49', 60);
sleep(3);
my $published = $node->safe_psql('postgres', "SELECT count(*) FROM pgcloud.outbox WHERE published_at IS NOT NULL AND event_type = 'load.tick'");
($rc, $out) = tool('operator', 'count', 'PGCLOUD_EVENTS');
is($out + 0, 50, 'the stream is full (50 messages)');
is($published, '49', 'exactly the 49 events the stream took are marked published');
($rc, $out) = tool('operator', 'read', 'PGCLOUD_EVENTS', "'pgcloud.load.>'", 100);
my %in_stream = map { $_ => 1 } ($out =~ /"Nats-Msg-Id":\s*"([0-9a-f-]{36})"/g);
my @ids = split /\n/, $node->safe_psql('postgres',
    "SELECT event_id FROM pgcloud.outbox WHERE published_at IS NOT NULL AND event_type = 'load.tick'");
is(scalar(grep { !$in_stream{$_} } @ids), 0, 'no event is marked published that the stream lacks');
# The message body is the event envelope, byte for byte the JSON text of
# jsonb_build_object over the outbox row (the relay writes it in C).
my %envelope = map { my ($id, $text) = split /\t/, $_, 2; ($id => Encode::decode('UTF-8', $text)) }
    split /\n/, $node->safe_psql('postgres', q{
        SELECT event_id || E'\t' || jsonb_build_object('event_id', event_id, 'event_type', event_type,
               'aggregate_type', aggregate_type, 'aggregate_id', aggregate_id, 'payload', payload, 'headers', headers,
               'source', source, 'created_at', created_at)::text
          FROM pgcloud.outbox WHERE published_at IS NOT NULL AND event_type = 'load.tick'});
my ($same, $compared) = (0, 0);
for my $line (split /\n/, $out) {
    my $m = eval { JSON::PP->new->utf8->decode($line) } or next;
    my $id = $m->{headers}{'Nats-Msg-Id'} // next;
    next unless exists $envelope{$id};
    $compared++;
    if ($m->{data} eq $envelope{$id}) { $same++ } else { diag("body: $m->{data}\nsql:  $envelope{$id}") if $compared - $same == 1 }
}
is($compared, 49, 'every published message compared with its outbox row');
is($same, 49, '... and each body is the envelope jsonb_build_object gives, byte for byte');
is($node->safe_psql('postgres', "SELECT count(*) FROM pgcloud.outbox WHERE published_at IS NULL"), '251',
    'the 251 refused events wait in the outbox');
unlike(slurp_file($node->logfile), qr/terminated by signal/, 'no worker crashed');

$node->stop('fast');
stop_nats($nats);
done_testing();
