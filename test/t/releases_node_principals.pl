# Security tier, tenant isolation on nodes (issue 10, item 6): a certificate
# works only on its allocation's node. End to end against the fake MAAS:
# one user, two allocations that each fill a node; the deploy hands each
# node its configuration through cloud-init user data (maas.user_data): an
# account for the user, an sshd drop-in (TrustedUserCAKeys,
# AuthorizedPrincipalsFile /etc/ssh/pgcloud/principals/%u) and the
# account's principals file naming the allocation's principal. Each node is
# then a real sshd (run as this unprivileged OS user, which is the user's
# POSIX account) configured from exactly those files. The certificate
# api.mint_access() gives for allocation A logs in on A's node and is
# refused on B's, and the other way round.
#
# Needs openssh-client and openssh-server (like releases_sshkeygen).
# services: maas provisioning releases
use strict;
use warnings;
use lib $ENV{PGCLOUD_REPO} . '/test/t';
use lib $ENV{PGCLOUD_REPO} . '/test/fakes';
use PgcloudTest;
use PgcloudFakes;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use IO::Socket::INET;
use JSON::PP;
use Time::HiRes qw(usleep);

my $sshd = '/usr/sbin/sshd';
-x $sshd or BAIL_OUT("$sshd is missing: install the Debian package openssh-server");
my $login = getpwuid($<);
like($login, qr/^[a-z_][a-z0-9_-]{0,31}$/, "the OS user ($login) is a POSIX username the platform accepts");

my $secret = 'Sup3rS3cretMaasKey';
my $tmp = PostgreSQL::Test::Utils::tempdir();
my $maas = PgcloudFakes->start('maas', dir => "$tmp/maas",
    args => ['--machines', '2', '--api-key', "pgck:pgtk:$secret", '--deploy-seconds', '0.5',
             '--release-seconds', '0.5', '--commission-seconds', '0.5']);
my $node = pgcloud_node('principals', "pgcloud.maas_url = '" . $maas->url . "'\n"
    . "pgcloud.maas_api_key = 'pgck:pgtk:$secret'\n");
sql_node($node, 'postgres');

my $user = '60000000-0000-4000-8000-000000000001';

sql(q{
    SELECT pgcloud.set_policy('maas.poll_interval_ms', '200');
    SELECT pgcloud.set_policy('core.http_backoff_base_ms', '200');
    SELECT api.admin_upsert_sku('h100x8', 'H100-SXM', 8, 128, 1024, 8000, 'eu-west', 2400);
    SELECT api.admin_upsert_image('ubuntu-22.04', 'jammy');
    SELECT api.admin_register_node('gpu-node-1', 'abc123', 'h100x8');
    SELECT api.admin_register_node('gpu-node-2', 'abc124', 'h100x8');
});
is(wait_for(q{SELECT string_agg(state || '/' || free_slots, ',' ORDER BY hostname) FROM provisioning.nodes}, 'ready/8,ready/8'),
    'ready/8,ready/8', 'two nodes are commissioned and ready');

# The operator hands the CA to deployments (policy), the user exists with
# this OS user's name as POSIX account, and has money.
my $ca = sql(q{SET ROLE pgcloud_anon; SELECT api.ssh_ca_public_key()});
sql(qq{SELECT pgcloud.set_policy('maas.ssh_trusted_user_ca_keys', '["$ca"]')});
sql(qq{SELECT pgcloud.emit('user.created', 'user', '$user',
    '{"user_id": "$user", "email": "$login\@example.com", "posix_username": "$login", "uid": 4001, "gid": 4001}')});
is(wait_for(qq{SELECT posix_username || '/' || uid FROM maas.users WHERE user_id = '$user'}, "$login/4001"), "$login/4001",
    'maas knows the account to create on nodes (user.created)');
sql(qq{SELECT api.admin_adjust_balance('$user', 500000, 'test top-up')});
wait_for(q{SELECT count(*) FROM provisioning.account_standing WHERE standing = 'good'}, '1');

# Two allocations; each fills a node, so they land on different nodes.
my %alloc;
for my $n (1, 2) {
    my $id = as_user($user, q{SELECT api.create_allocation('h100x8', 'ubuntu-22.04') ->> 'id'});
    is(wait_for("SELECT state FROM provisioning.allocations WHERE id = '$id'", 'active'), 'active', "allocation $n is active");
    is(wait_for("SELECT state FROM releases.allocations WHERE allocation_id = '$id'", 'active'), 'active',
        "releases knows allocation $n is active");
    $alloc{$n} = { id => $id, sid => sql("SELECT maas_system_id FROM provisioning.allocations WHERE id = '$id'") };
}
isnt($alloc{1}{sid}, $alloc{2}{sid}, 'the two allocations are on different machines');
for my $n (1, 2) {
    my $a = $alloc{$n};
    is(sql("SELECT ssh_principal FROM maas.allocations WHERE allocation_id = '$a->{id}'"), "pgcloud-alloc-$a->{id}",
        "allocation $n has a principal of its own");
    is(sql("SELECT ssh_principal FROM releases.allocations WHERE allocation_id = '$a->{id}'"), "pgcloud-alloc-$a->{id}",
        '... which releases learnt from allocation.activated');
}

# ---- each node, configured from the user data MAAS received ------------------
my ($o, $e);
IPC::Run::run([ 'ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', "$tmp/hostkey" ], '>', \$o, '2>', \$e) or die $e;
IPC::Run::run([ 'ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', 'tap', '-f', "$tmp/id" ], '>', \$o, '2>', \$e) or die $e;
my $pub = slurp("$tmp/id.pub");
chomp $pub;

my @handles;
for my $n (1, 2) {
    my $a = $alloc{$n};
    my $ud = $maas->state->{machines}{ $a->{sid} }{user_data} // '';
    like($ud, qr/^#cloud-config\nusers:\n  - default\n  - name: \Q$login\E\n    uid: 4001\n/,
        "node $n: the deploy creates the user's own account");
    my %files;
    while ($ud =~ /^  - path: (\S+)\n    permissions: "\d+"\n    content: \|\n((?:      .*\n)+)/mg) {
        my ($path, $content) = ($1, $2);
        $content =~ s/^      //mg;
        $files{$path} = $content;
    }
    is($files{"/etc/ssh/pgcloud/principals/$login"}, "pgcloud-alloc-$a->{id}\n",
        "node $n: the account's AuthorizedPrincipalsFile names its allocation's principal alone");
    is($files{'/etc/ssh/pgcloud/trusted_user_ca_keys'}, "$ca\n", "node $n: the node trusts the platform CA");
    my $dropin = $files{'/etc/ssh/sshd_config.d/50-pgcloud.conf'} // '';
    like($dropin, qr{^AuthorizedPrincipalsFile /etc/ssh/pgcloud/principals/%u$}m, "node $n: sshd takes principals per account");

    # The node: /etc/ssh/pgcloud is $tmp/node$n.
    my $root = "$tmp/node$n";
    mkdir $root;
    mkdir "$root/principals";
    for my $path (keys %files) {
        next unless $path =~ m{^/etc/ssh/pgcloud/(.+)$};
        spew("$root/$1", $files{$path});
    }
    (my $conf = $dropin) =~ s{/etc/ssh/pgcloud/}{$root/}g;
    my $port = PostgreSQL::Test::Cluster::get_free_port();
    spew("$root/sshd_config", "Port $port\nListenAddress 127.0.0.1\nHostKey $tmp/hostkey\nPidFile $root/sshd.pid\n"
        . $conf . "AuthorizedKeysFile none\nPubkeyAuthentication yes\nPasswordAuthentication no\n"
        . "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nLogLevel VERBOSE\n");
    my ($tout, $terr);
    ok(IPC::Run::run([ $sshd, '-t', '-f', "$root/sshd_config" ], '>', \$tout, '2>', \$terr), "node $n: sshd -t accepts the config")
      or diag($terr);
    push @handles, IPC::Run::start([ $sshd, '-D', '-e', '-f', "$root/sshd_config" ], '>', '/dev/null', '2>', "$root/sshd.log");
    my $up = 0;
    for (1 .. 100) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp');
        if ($s) { close $s; $up = 1; last; }
        usleep(100_000);
    }
    ok($up, "node $n: sshd listens") or diag(slurp("$root/sshd.log"));
    $a->{port} = $port;

    my $m = decode_json(as_user($user, "SELECT api.mint_access('$a->{id}', \$k\$$pub\$k\$)"));
    is_deeply($m->{principals}, ["pgcloud-alloc-$a->{id}"], "allocation $n: the certificate names its principal alone");
    is($m->{login}, $login, "allocation $n: to log in as the user's account");
    spew("$tmp/cert$n", "$m->{certificate}\n");
}

sub ssh_login
{
    my ($port, $cert) = @_;
    my ($out, $err) = ('', '');
    IPC::Run::run([ 'ssh', '-F', '/dev/null', '-i', "$tmp/id", '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes',
        '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'GlobalKnownHostsFile=/dev/null',
        '-o', 'LogLevel=ERROR', '-o', 'ConnectTimeout=20', '-o', "CertificateFile=$cert", '-p', $port,
        "$login\@127.0.0.1", 'echo pgcloud-cert-login-ok' ], '<', \undef, '>', \$out, '2>', \$err, IPC::Run::timeout(60));
    return ($out, $err);
}

for my $n (1, 2) {
    my $other = 3 - $n;
    my ($out, $err) = ssh_login($alloc{$n}{port}, "$tmp/cert$n");
    like($out, qr/pgcloud-cert-login-ok/, "allocation $n's certificate logs in on its own node") or diag($err);
    ($out, $err) = ssh_login($alloc{$other}{port}, "$tmp/cert$n");
    unlike($out, qr/pgcloud-cert-login-ok/, "allocation $n's certificate is refused on allocation $other's node");
    like($err, qr/Permission denied/, '... sshd denies it');
}
like(slurp("$tmp/node2/sshd.log"), qr/not in AuthorizedPrincipalsFile|[Cc]ertificate does not contain an authorized principal/,
    "node 2's sshd refused allocation 1's certificate for its principal");

$_->signal('TERM') for @handles;
$_->finish for @handles;
$node->stop('fast');
done_testing();
