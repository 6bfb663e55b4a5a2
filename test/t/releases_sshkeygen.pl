# releases against real OpenSSH: keys made by ssh-keygen are accepted with
# the fingerprints `ssh-keygen -lf` prints; certificates from
# api.mint_access() are read by `ssh-keygen -L` with the right fields and
# signing CA; and a throwaway sshd on a loopback port (run as this
# unprivileged user, TrustedUserCAKeys = api.ssh_ca_public_key()) lets the
# certificate in and keeps out a key without it, a certificate for another
# principal and a certificate from a CA it does not trust.
#
# Needs the Debian packages openssh-client (ssh, ssh-keygen) and
# openssh-server (sshd).
# services: releases
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PgcloudTest;
use IPC::Run;
use IO::Socket::INET;
use JSON::PP;
use Time::HiRes qw(usleep);

my $repo = $ENV{PGCLOUD_REPO} or die 'PGCLOUD_REPO is not set';
my $sshd = '/usr/sbin/sshd';
for my $tool ('ssh-keygen', 'ssh') {
	system("command -v $tool >/dev/null 2>&1") == 0
	  or BAIL_OUT("$tool is missing: install the Debian package openssh-client");
}
-x $sshd or BAIL_OUT("$sshd is missing: install the Debian package openssh-server");

$ENV{TZ} = 'UTC';    # ssh-keygen -L prints validity in local time
my $dir = PostgreSQL::Test::Utils::tempdir();
my $login = getpwuid($<);
like($login, qr/^[a-z_][a-z0-9_-]{0,31}$/, "the OS user ($login) is a POSIX username the platform accepts");

my $node = PostgreSQL::Test::Cluster->new('releases');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'pgcloud'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pgcloud CASCADE');

my $user  = '0a1b2c3d-0000-4000-8000-00000000aaaa';
my $other = '0a1b2c3d-0000-4000-8000-00000000bbbb';
my $alloc = '0a1b2c3d-0000-4000-8000-0000000a110c';
my $alloc_other = '0a1b2c3d-0000-4000-8000-0000000b110c';

sub event
{
	my ($type, $agg, %payload) = @_;
	my $json = encode_json(\%payload);
	$node->safe_psql('postgres',
		"SELECT pgcloud.deliver('releases', gen_random_uuid(), '$type', 'x', '$agg', \$j\$$json\$j\$, '{}')");
}

# Runs SQL as an API request of the given role and user; returns the output.
sub api
{
	my ($sub, $sql, $role) = @_;
	$role //= 'pgcloud_user';
	my $claims = encode_json({ role => $role, $sub ? (sub => $sub) : () });
	return $node->safe_psql('postgres', qq{
		BEGIN;
		SET LOCAL request.jwt.claims = '$claims';
		SET LOCAL ROLE $role;
		$sql;
		COMMIT;});
}


sub keygen_fingerprint
{
	my $file = shift;
	my ($out, $err);
	IPC::Run::run([ 'ssh-keygen', '-l', '-f', $file ], '>', \$out, '2>', \$err)
	  or die "ssh-keygen -l -f $file: $err";
	$out =~ /^(\d+) (SHA256:\S+) / or die "unexpected ssh-keygen -l output: $out";
	return ($1, $2);
}

event('user.created', $user, user_id => $user, email => 'tap@example.com',
	posix_username => $login, uid => 4001, gid => 4001);
event('user.created', $other, user_id => $other, email => 'other@example.com',
	posix_username => 'someoneelse', uid => 4002, gid => 4002);
event('allocation.activated', $alloc, allocation_id => $alloc, user_id => $user, sku => 'h100x1',
	hostname => 'gpu-tap-01', ssh_principal => "pgcloud-alloc-$alloc");
event('allocation.activated', $alloc_other, allocation_id => $alloc_other, user_id => $other, sku => 'h100x1',
	hostname => 'gpu-tap-02', ssh_principal => "pgcloud-alloc-$alloc_other");

# ---- keys made by ssh-keygen, fingerprints as ssh-keygen -l -------------------
my @types = (
	[ 'ed25519',   [ '-t', 'ed25519' ],           'ssh-ed25519',         'ED25519' ],
	[ 'ecdsa256',  [ '-t', 'ecdsa', '-b', 256 ],  'ecdsa-sha2-nistp256', 'ECDSA' ],
	[ 'ecdsa384',  [ '-t', 'ecdsa', '-b', 384 ],  'ecdsa-sha2-nistp384', 'ECDSA' ],
	[ 'ecdsa521',  [ '-t', 'ecdsa', '-b', 521 ],  'ecdsa-sha2-nistp521', 'ECDSA' ],
	[ 'rsa2048',   [ '-t', 'rsa', '-b', 2048 ],   'ssh-rsa',             'RSA' ],
	[ 'rsa3072',   [ '-t', 'rsa', '-b', 3072 ],   'ssh-rsa',             'RSA' ],);
my %cert;
for my $t (@types)
{
	my ($name, $args, $type, $label) = @$t;
	my $key = "$dir/$name";
	my ($o, $e);
	IPC::Run::run([ 'ssh-keygen', '-q', @$args, '-N', '', '-C', "tap-$name", '-f', $key ], '>', \$o, '2>', \$e)
	  or die "ssh-keygen $name: $e";
	my ($bits, $fp) = keygen_fingerprint("$key.pub");
	my $pub = slurp("$key.pub");
	chomp $pub;
	my $added = decode_json(api($user, "SELECT api.add_ssh_key(\$k\$$pub\$k\$)"));
	is($added->{fingerprint}, $fp, "$name: our fingerprint is ssh-keygen's ($fp)");
	is($added->{bits}, $bits, "$name: $bits bits, as ssh-keygen says");
	is($added->{type}, $type, "$name: type $type");

	# A certificate for each key type, read back by ssh-keygen -L.
	my $m = decode_json(api($user, "SELECT api.mint_access('$alloc', \$k\$$pub\$k\$)"));
	spew("$key.cert", "$m->{certificate}\n");
	my ($out, $err);
	IPC::Run::run([ 'ssh-keygen', '-L', '-f', "$key.cert" ], '>', \$out, '2>', \$err);
	like($out, qr/Type: \Q$type\E-cert-v01\@openssh\.com user certificate/, "$name: ssh-keygen -L reads a $type user certificate")
	  or diag($err);
	like($out, qr/Public key: \Q$label\E-CERT \Q$fp\E\n/, "$name: the certificate holds this key");
	$cert{$name} = { mint => $m, listing => $out };
}
is(scalar @{ decode_json(api($user, 'SELECT api.list_ssh_keys()')) }, 6, 'the six keys are listed');

# ---- one certificate in full ------------------------------------------------------
my $ca = api(undef, 'SELECT api.ssh_ca_public_key()', 'pgcloud_anon');
like($ca, qr/^ssh-ed25519 AAAA[A-Za-z0-9+\/]+=* pgcloud-ssh-ca$/, 'anyone can fetch the CA public key');
spew("$dir/ca.pub", "$ca\n");
my (undef, $ca_fp) = keygen_fingerprint("$dir/ca.pub");
my $m = $cert{ed25519}{mint};
my $listing = $cert{ed25519}{listing};
is($m->{ca_fingerprint}, $ca_fp, 'mint_access names the CA by the fingerprint ssh-keygen gives the published key');
like($listing, qr/Signing CA: ED25519 \Q$ca_fp\E \(using ssh-ed25519\)/, 'ssh-keygen -L: signed by the published CA');
like($listing, qr/Key ID: "pgcloud user=$user allocation=$alloc"/, 'ssh-keygen -L: the key id names user and allocation');
like($listing, qr/Serial: $m->{serial}\n/, "ssh-keygen -L: serial $m->{serial}");
my ($from, $to) = split /\|/, $node->safe_psql('postgres', qq{
	SELECT to_char('$m->{valid_after}'::timestamptz AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS') || '|' ||
	       to_char('$m->{valid_before}'::timestamptz AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')});
like($listing, qr/Valid: from \Q$from\E to \Q$to\E\n/, "ssh-keygen -L: valid from $from to $to");
like($listing, qr/Principals: \n\s+pgcloud-alloc-\Q$alloc\E\n\s+Critical Options: \(none\)\n/,
	"ssh-keygen -L: the allocation's principal alone, no critical options");
like($listing,
	qr/Extensions: \n\s+permit-X11-forwarding\n\s+permit-agent-forwarding\n\s+permit-port-forwarding\n\s+permit-pty\n\s+permit-user-rc\n/,
	'ssh-keygen -L: the OpenSSH default user extensions, in order');
my %serials = map { $cert{$_}{mint}{serial} => 1 } keys %cert;
is(scalar keys %serials, 6, 'six certificates, six serials');

# ---- a real sshd -------------------------------------------------------------------
my ($o1, $e1);
IPC::Run::run([ 'ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', "$dir/hostkey" ], '>', \$o1, '2>', \$e1)
  or die "host key: $e1";
my $port = PostgreSQL::Test::Cluster::get_free_port();
spew("$dir/trusted_ca.pub", "$ca\n");
# As the deploy configures a node (maas.user_data): the account's
# AuthorizedPrincipalsFile lists the principal of the allocation on it.
mkdir("$dir/principals") or die "mkdir: $!";
spew("$dir/principals/$login", "pgcloud-alloc-$alloc\n");
spew("$dir/sshd_config", <<"EOF");
Port $port
ListenAddress 127.0.0.1
HostKey $dir/hostkey
PidFile $dir/sshd.pid
TrustedUserCAKeys $dir/trusted_ca.pub
AuthorizedPrincipalsFile $dir/principals/%u
AuthorizedKeysFile none
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
LogLevel VERBOSE
EOF
my ($tout, $terr);
ok(IPC::Run::run([ $sshd, '-t', '-f', "$dir/sshd_config" ], '>', \$tout, '2>', \$terr),
	'sshd -t accepts a config trusting the published CA') or diag($terr);

my $sshd_log = "$dir/sshd.log";
my $h = IPC::Run::start([ $sshd, '-D', '-e', '-f', "$dir/sshd_config" ], '>', '/dev/null', '2>', $sshd_log);
my $up = 0;
for (1 .. 100)
{
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp');
	if ($s) { close $s; $up = 1; last; }
	usleep(100_000);
}
ok($up, "sshd listens on 127.0.0.1:$port") or diag(slurp($sshd_log));

sub ssh_login
{
	my ($key, $certfile) = @_;
	my @cmd = ('ssh', '-F', '/dev/null', '-i', $key, '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes',
		'-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'GlobalKnownHostsFile=/dev/null',
		'-o', 'LogLevel=ERROR', '-o', 'ConnectTimeout=20', '-p', $port);
	push @cmd, ('-o', "CertificateFile=$certfile") if $certfile;
	my ($out, $err) = ('', '');
	IPC::Run::run([ @cmd, "$login\@127.0.0.1", 'echo pgcloud-cert-login-ok' ], '<', \undef, '>', \$out, '2>', \$err,
		IPC::Run::timeout(60));
	return ($out, $err);
}

for my $name ('ed25519', 'ecdsa384', 'rsa3072')
{
	my ($out, $err) = ssh_login("$dir/$name", "$dir/$name.cert");
	like($out, qr/pgcloud-cert-login-ok/, "$name: sshd lets the certificate in") or diag($err);
}
like(slurp($sshd_log), qr/Accepted certificate ID "pgcloud user=$user allocation=$alloc" \(serial $m->{serial}\) signed by ED25519 CA \Q$ca_fp\E/,
	'sshd logs the key id, serial and CA of the certificate');

my ($out, $err) = ssh_login("$dir/ed25519", undef);
unlike($out, qr/pgcloud-cert-login-ok/, 'the key alone, without its certificate, is refused');
like($err, qr/Permission denied/, '... with permission denied');

# A certificate for another principal (another user, their own allocation).
my $pub = slurp("$dir/ed25519.pub");
chomp $pub;
my $m_other = decode_json(api($other, "SELECT api.mint_access('$alloc_other', \$k\$$pub\$k\$)"));
is_deeply($m_other->{principals}, ["pgcloud-alloc-$alloc_other"], 'the other user\'s certificate names their own allocation\'s principal');
spew("$dir/other.cert", "$m_other->{certificate}\n");
($out, $err) = ssh_login("$dir/ed25519", "$dir/other.cert");
unlike($out, qr/pgcloud-cert-login-ok/, "a certificate for another allocation's principal does not log in as $login");
like($err, qr/Permission denied/, '... sshd denies it');

# After a CA rotation, nodes still trusting the old CA refuse new certificates
# until they fetch the new CA key.
my $rot = decode_json(api('0a1b2c3d-0000-4000-8000-00000000adad', 'SELECT api.admin_rotate_ssh_ca()', 'pgcloud_admin'));
is($rot->{previous_fingerprint}, $ca_fp, 'the CA is rotated');
my $m_new = decode_json(api($user, "SELECT api.mint_access('$alloc', \$k\$$pub\$k\$)"));
spew("$dir/new.cert", "$m_new->{certificate}\n");
($out, $err) = ssh_login("$dir/ed25519", "$dir/new.cert");
unlike($out, qr/pgcloud-cert-login-ok/, 'a certificate of the new CA is refused where only the old CA is trusted');
like($err, qr/Permission denied/, '... sshd denies it');
my $new_ca = api(undef, 'SELECT api.ssh_ca_public_key()', 'pgcloud_anon');
isnt($new_ca, $ca, 'the published CA key changed');
spew("$dir/trusted_ca.pub", "$new_ca\n");
($out, $err) = ssh_login("$dir/ed25519", "$dir/new.cert");
like($out, qr/pgcloud-cert-login-ok/, '... and accepted once the node trusts the new CA') or diag($err);

# After release no certificate is minted; the last one stays bounded by its validity.
event('allocation.released', $alloc, allocation_id => $alloc, user_id => $user);
my ($ret, $stdout, $stderr) = $node->psql('postgres', qq{
	BEGIN;
	SET LOCAL request.jwt.claims = '{"role": "pgcloud_user", "sub": "$user"}';
	SELECT api.mint_access('$alloc', \$k\$$pub\$k\$);
	COMMIT;});
like($stderr, qr/"code": "allocation_not_active"/, 'after allocation.released: 409 allocation_not_active');

# A dump keeps the keys and the (sealed) CA: the tables are marked as
# extension configuration.
my ($dump, $derr) = ('', '');
IPC::Run::run([ 'pg_dump', '--data-only', '-d', $node->connstr('postgres') ], '>', \$dump, '2>', \$derr);
like($dump, qr/COPY releases\.ssh_ca_keys .*\Q$ca_fp\E/s, 'pg_dump includes the CA keys') or diag($derr);
like($dump, qr/COPY releases\.ssh_keys .*\Q$cert{rsa3072}{mint}{key_fingerprint}\E/s, 'pg_dump includes the users\' keys');

$h->signal('TERM');
$h->finish;
$node->stop;
done_testing();
