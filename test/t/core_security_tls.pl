# Security tier, TLS for credentials (issue 10): the HTTP executor sends the
# Stripe key and the MAAS OAuth secret only over https://, and mail only over
# smtps:// or STARTTLS, unless policy core.plaintext_allowed_hosts names the
# host. The fakes listen in plaintext on 127.0.0.1; with the policy emptied
# nothing reaches them, and with 127.0.0.1 named explicitly it does.
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
my $maas = PgcloudFakes->start('maas', dir => "$tmp/maas");
my $smtp = PgcloudFakes->start('smtp', dir => "$tmp/smtp");

my $node = PostgreSQL::Test::Cluster->new('security_tls');
$node->init;
$node->append_conf('postgresql.conf', join("\n",
    "shared_preload_libraries = 'pgcloud'",
    "pgcloud.databases = 'pgcloud'",
    "pgcloud.maas_url = '" . $maas->url . "'",
    "pgcloud.maas_api_key = 'ck:tk:sec'",
    "pgcloud.smtp_url = '" . $smtp->url . "'", ''));
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE pgcloud');
$node->safe_psql('pgcloud', 'CREATE EXTENSION pgcloud_core');
sql_node($node, 'pgcloud');
$node->poll_query_until('pgcloud', "SELECT pid IS NOT NULL FROM pgcloud.workers WHERE worker = 'http'")
  or die 'the HTTP executor did not start';

sql(q{
    SELECT pgcloud.set_policy('core.http_max_attempts', '1');
    SELECT pgcloud.set_policy('core.plaintext_allowed_hosts', '[]');
});
my $m1 = sql(q{SELECT pgcloud.http_request('maas', 'GET', '/api/2.0/machines/')});
my $s1 = sql(q{SELECT pgcloud.http_request('smtp', 'SEND', 'bob@example.com',
    E'From: <ops@example.com>\r\nTo: <bob@example.com>\r\nSubject: x\r\n\r\nsecret\r\n', NULL, '{"mail_from": "ops@example.com"}')});
$node->poll_query_until('pgcloud', "SELECT count(*) = 2 FROM pgcloud.http_intents WHERE state = 'dead'")
  or diag(sql('SELECT jsonb_agg(row(target, state, last_error)) FROM pgcloud.http_intents'));
like(sql("SELECT last_error FROM pgcloud.http_intents WHERE id = '$m1'"), qr/insecure transport: pgcloud\.maas_url is not https/,
    'MAAS over http:// to a host the policy does not name: refused before connecting');
is(scalar(my @r1 = $maas->requests), 0, 'the fake MAAS never saw the OAuth secret');
is(sql("SELECT state FROM pgcloud.http_intents WHERE id = '$s1'"), 'dead',
    'SMTP to a relay without STARTTLS, not named by the policy: the message is not sent');
is(scalar(my @r2 = $smtp->messages), 0, 'the fake SMTP relay received nothing');

# The test names the loopback host explicitly: now they go through.
sql(q{SELECT pgcloud.set_policy('core.plaintext_allowed_hosts', '["127.0.0.1"]')});
my $m2 = sql(q{SELECT pgcloud.http_request('maas', 'GET', '/api/2.0/machines/')});
my $s2 = sql(q{SELECT pgcloud.http_request('smtp', 'SEND', 'bob@example.com',
    E'From: <ops@example.com>\r\nTo: <bob@example.com>\r\nSubject: y\r\n\r\nhello\r\n', NULL, '{"mail_from": "ops@example.com"}')});
$node->poll_query_until('pgcloud', "SELECT count(*) = 2 FROM pgcloud.http_intents WHERE id IN ('$m2', '$s2') AND state = 'succeeded'")
  or diag(sql('SELECT jsonb_agg(row(target, state, last_error)) FROM pgcloud.http_intents'));
is(sql("SELECT state FROM pgcloud.http_intents WHERE id = '$m2'"), 'succeeded', 'with 127.0.0.1 allowed, MAAS over http:// works');
is(sql("SELECT state FROM pgcloud.http_intents WHERE id = '$s2'"), 'succeeded', 'and mail without STARTTLS');
is(sql(q{SELECT pgcloud.policy('core.plaintext_allowed_hosts', NULL::jsonb) @> '["maas.example"]'}), 'f',
    'no remote host is allowed plaintext by default');

$node->stop;
done_testing();
