# notification end to end: events emitted with pgcloud.emit() go through the
# relay worker to notification.on_<event>, which NOTIFYs the user's channel (a
# second session LISTENs, as a WebSocket gateway would) and queues e-mail
# that the HTTP executor sends to the fake SMTP relay over libcurl. Checks
# the envelope, the headers (From, To, Subject, Date, Message-ID) and the
# body, an RFC 2047 subject and base64 body, a 4xx that is retried, a 5xx
# that dead-letters, preferences that turn e-mail off, operator alerts.
# services: notification
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PgcloudTest;
use JSON::PP;
use MIME::Base64 qw(decode_base64);
use Encode qw(decode);

BEGIN { die "PGCLOUD_REPO is not set\n" unless $ENV{PGCLOUD_REPO} }
use lib "$ENV{PGCLOUD_REPO}/test/fakes";
use PgcloudFakes;

my $tmp = PostgreSQL::Test::Utils::tempdir();
my $smtp = PgcloudFakes->start('smtp', dir => "$tmp/smtp");

my $node = PostgreSQL::Test::Cluster->new('notification_email');
$node->init;
$node->append_conf('postgresql.conf', join("\n",
    "shared_preload_libraries = 'pgcloud'",
    "pgcloud.databases = 'pgcloud'",
    "pgcloud.smtp_url = '" . $smtp->url . "'", ''));
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE pgcloud');
$node->safe_psql('pgcloud', 'CREATE EXTENSION pgcloud_notification CASCADE');

sql_node($node, 'pgcloud');

$node->poll_query_until('pgcloud', "SELECT count(*) = 2 FROM pgcloud.workers WHERE worker IN ('http', 'relay') AND pid IS NOT NULL")
  or die 'the workers did not start';
sql(q{
    SELECT pgcloud.set_policy('core.http_backoff_base_ms', '200');
    SELECT pgcloud.set_policy('core.http_max_attempts', '3');
    SELECT pgcloud.set_policy('notification.operator_email', '"ops@example.com"');
});

my $alice = '0b7e6a52-5f4b-4d2a-9a51-0d1c2a3b4c5d';
(my $channel = "pgcloud_user_$alice") =~ s/-//g;

my $listener = $node->background_psql('pgcloud');
$listener->query_safe(qq{LISTEN $channel; LISTEN pgcloud_operators;});

# Emits an event and waits until notification has applied it.
sub emit
{
    my ($type, $payload) = @_;
    my $id = sql(qq{SELECT pgcloud.emit('$type', 'test', 'x', '$payload')});
    $node->poll_query_until('pgcloud',
        "SELECT EXISTS (SELECT 1 FROM pgcloud.inbox WHERE subscriber = 'notification' AND event_id = '$id')")
      or diag("event $type was not delivered: " . sql('SELECT row(last_error) FROM pgcloud.delivery_failures'));
    return $id;
}

sub email_state
{
    my ($event) = @_;
    return sql("SELECT state || ' ' || attempts || ' ' || coalesce(last_status::text, '-') FROM notification.emails WHERE event_id = '$event'");
}

sub wait_email
{
    my ($event, $state) = @_;
    $node->poll_query_until('pgcloud', "SELECT state = '$state' FROM notification.emails WHERE event_id = '$event'")
      or diag("e-mail of $event is not $state: " . email_state($event));
}

# Notifications psql received since the last call: [channel, payload].
sub notifications
{
    my $out = $listener->query_safe('SELECT 1');
    my @n;
    while ($out =~ /Asynchronous notification "([^"]+)" with payload "(.*?)" received from server process/g)
    {
        push @n, [ $1, JSON::PP->new->decode($2) ];
    }
    return @n;
}

# --- user.created: read model, channel, welcome e-mail ----------------------------------------------
my $ev = emit('user.created', qq{{"user_id": "$alice", "email": "alice\@example.com", "posix_username": "alice", "uid": 20001, "gid": 20001}});
wait_email($ev, 'sent');
my @msgs = $smtp->messages;
is(scalar @msgs, 1, 'the SMTP relay received the welcome e-mail');
my $m = $msgs[0];
is($m->{mail_from}, 'noreply@pgcloud.invalid', 'envelope sender from notification.email_from');
is_deeply($m->{rcpt_to}, ['alice@example.com'], 'envelope recipient from the user.created read model');
is($m->{headers}{from}, 'pgcloud <noreply@pgcloud.invalid>', 'From');
is($m->{headers}{to}, 'alice@example.com', 'To');
like($m->{data}, qr/\r\nTo: alice\@example\.com\r\n/, 'To, as sent');
is($m->{subject}, 'Welcome to pgcloud', 'Subject');
like($m->{headers}{date}, qr/^[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d \+0000$/, 'Date (RFC 5322)');
is($m->{message_id}, '<' . sql("SELECT id FROM notification.emails WHERE event_id = '$ev'") . '@pgcloud.invalid>',
    "Message-ID: the outbox row's id at the sender's domain");
like($m->{data}, qr/\r\n\r\nYour pgcloud account is ready\. Add an SSH key and create your first allocation\.\r\n/,
    'the body');
ok(!$m->{bare_lf}, 'CRLF line ends only');
is(email_state($ev), 'sent 1 250', 'the outbox row is sent');
is(sql("SELECT count(*) FROM pgcloud.outbox WHERE event_type = 'notification.sent' AND payload ->> 'event_id' = '$ev'"), 1,
    'notification.sent was emitted');
my @n = notifications();
is(scalar @n, 1, "one notification on the user's channel");
is($n[0][0], $channel, "channel $channel");
is($n[0][1]{type}, 'user.created', 'payload: the event type');
is($n[0][1]{event_id}, $ev, 'the event id');
like($n[0][1]{message}, qr/^Your pgcloud account is ready/, 'a human message');
unlike(encode_json($n[0][1]), qr/alice\@example\.com|posix/, 'not the event payload (no address)');

# --- a subject and body that are not ASCII ---------------------------------------------------------
sql(q{UPDATE notification.templates SET subject = 'Zahlung über {amount_display} erhalten – danke',
                                        body = 'Grüße! Wir haben {amount_display} erhalten.'
       WHERE event_type = 'payment.succeeded'});
$ev = emit('payment.succeeded', qq{{"user_id": "$alice", "payment_id": "p-1", "amount": 1250, "currency": "eur", "checkout_session_id": "cs_test_notification"}});
wait_email($ev, 'sent');
($m) = grep { $_->{message_id} =~ /^<\Q@{[sql("SELECT id FROM notification.emails WHERE event_id = '$ev'")]}\E@/ } $smtp->messages;
is($m->{subject}, "Zahlung \x{fc}ber 12.50 EUR erhalten \x{2013} danke", 'an RFC 2047 subject decodes to the original');
my ($encoded) = $m->{data} =~ /\r\n\r\n(.*)\z/s;
like($m->{data}, qr/Content-Transfer-Encoding: base64\r\n/, 'the body goes base64');
like(decode('UTF-8', decode_base64($encoded)), qr/^Gr\x{fc}\x{df}e! Wir haben 12\.50 EUR erhalten\.\r\n/,
    'and decodes to the original');
@n = notifications();
is($n[0][1]{ids}{payment_id}, 'p-1', 'the channel payload carries the ids');

# --- 451: retried ---------------------------------------------------------------------------------
$smtp->control({ reject_rcpt => '451', fail_next => 2 });
$ev = emit('allocation.released', qq{{"user_id": "$alice", "allocation_id": "9a9a9a9a-0000-4000-8000-000000000009"}});
wait_email($ev, 'sent');
is(email_state($ev), 'sent 3 250', 'RCPT refused twice with 451, accepted the third time');
is(scalar(grep { $_->{command} eq 'RCPT' && $_->{status} == 451 } $smtp->requests), 2, 'the relay saw the two refusals');
ok((grep { $_->{subject} eq 'Your allocation was released' } $smtp->messages), 'and then got the message');

# --- 554: dead letter -----------------------------------------------------------------------------
$smtp->control({ reject_data => '554', fail_next => 1 });
$ev = emit('allocation.failed', qq{{"user_id": "$alice", "allocation_id": "9a9a9a9a-0000-4000-8000-000000000010", "reason": "no capacity"}});
wait_email($ev, 'dead');
is(email_state($ev), 'dead 1 554', 'the message refused with 554 is dead after one try');
ok(!(grep { $_->{subject} eq 'Your allocation failed' } $smtp->messages), 'the relay did not keep it');
is(sql("SELECT payload ->> 'status' FROM pgcloud.outbox WHERE event_type = 'notification.dead_lettered' AND payload ->> 'event_id' = '$ev'"),
    '554', 'notification.dead_lettered was emitted');
is(sql('SELECT row(sent, dead) FROM notification.email_outbox_status'), '(3,1)', 'the operator view counts them');
like(sql("SELECT h.last_error FROM notification.dead_emails d JOIN pgcloud.http_intents h ON h.id = d.intent_id"),
    qr/554/, 'and the executor kept the reason');
$smtp->control(undef);

# --- preferences: e-mail off, the channel still notified ---------------------------------------------------
is($node->safe_psql('pgcloud', qq{
    SET request.jwt.claims = '{"role": "pgcloud_user", "sub": "$alice"}';
    SET ROLE pgcloud_user;
    SELECT api.set_notification_preferences(false, NULL) ->> 'email_enabled';}), 'false',
    'alice turns e-mail off through the API as pgcloud_user');
notifications();
$ev = emit('billing.low_balance', qq{{"user_id": "$alice", "balance": 120, "threshold": 500, "currency": "usd"}});
is(sql("SELECT count(*) FROM notification.emails WHERE event_id = '$ev'"), 0, 'no e-mail for the low balance');
@n = notifications();
is(join(',', map { $_->[1]{type} } @n), 'billing.low_balance', 'but the channel notification');
like($n[0][1]{message}, qr/Your balance is 1\.20 USD, below 5\.00 USD/, 'with its message');

# --- operators ------------------------------------------------------------------------------
$ev = emit('platform.alert', q{{"kind": "dead_letter", "subscriber": "billing", "event_type": "x.y", "error": "boom"}});
wait_email($ev, 'sent');
my ($ops) = grep { $_->{rcpt_to}[0] eq 'ops@example.com' } $smtp->messages;
is($ops->{subject}, 'pgcloud alert: dead_letter', 'platform.alert is mailed to notification.operator_email');
like($ops->{data}, qr/"subscriber": "billing"/, 'with the details');
@n = notifications();
is($n[0][0], 'pgcloud_operators', 'and notified on pgcloud_operators');

$listener->quit;
$node->stop('fast');
$smtp->stop;
done_testing();
