# Every server log line passes through the scrubber: an error raised with an
# e-mail address, a JWT and a postgresql:// URI with a password appears
# scrubbed in the server log (message and STATEMENT lines alike).
# services: core
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('scrub');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'pgcloud'\nlog_min_error_statement = error\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pgcloud CASCADE');

my $email = 'alice.secret@example.com';
my $jwt = 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U';
my $uri = 'postgresql://bob:hunter2pass@db.internal:5432/prod';
my $card = '4242 4242 4242 4242';

my ($ret, $stdout, $stderr) = $node->psql('postgres',
    "DO \$\$ BEGIN RAISE EXCEPTION 'contact $email token $jwt uri $uri' USING DETAIL = 'card $card', HINT = 'Authorization: Bearer $jwt'; END \$\$;");
isnt($ret, 0, 'the statement failed');
like($stderr, qr/\[email\]/, 'the client also sees the scrubbed message');

# A NOTICE and a plain log line too.
$node->psql('postgres', "DO \$\$ BEGIN RAISE LOG 'log line for $email with $uri'; END \$\$;");

my $log = slurp_file($node->logfile);
unlike($log, qr/alice\.secret\@example\.com/, 'no e-mail address in the server log');
unlike($log, qr/hunter2pass/, 'no URI password in the server log');
unlike($log, qr/dozjgNryP4J3jVmNHl0w5N/, 'no JWT in the server log');
unlike($log, qr/4242 4242 4242 4242/, 'no card number in the server log');
like($log, qr/ERROR:.*contact \[email\] token \[jwt\] uri postgresql:\/\/bob:\[redacted\]\@db\.internal/,
    'the error line is present, scrubbed');
like($log, qr/STATEMENT:.*\[email\]/, 'the STATEMENT line is scrubbed');
like($log, qr/LOG:.*log line for \[email\]/, 'plain log lines are scrubbed');

# pgcloud.sanitize() is the same scrubber.
is($node->safe_psql('postgres', "SELECT pgcloud.sanitize('mail $email')"), 'mail [email]', 'sanitize() agrees');

$node->stop;
done_testing();
