# appruntime end to end: the app runtime agent (termrelay/pgcloud-appagent)
# starts a manifest's process on a node (a throwaway sshd trusting the
# platform CA) over SSH with a platform certificate, the instance is running
# only once its port answers, stop really stops it (process and port gone),
# a process that dies fails the instance; members' rights (a viewer may not
# stop it nor open a terminal, an editor may); the history is immutable; the
# allocation's release ends its instances.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use IO::Socket::INET;
use JSON::PP;
use Time::HiRes qw(usleep time);
use PgcloudTest;

my $repo = $ENV{PGCLOUD_REPO} or die 'PGCLOUD_REPO is not set';
my $bin = "$repo/termrelay/pgcloud-appagent";
-x $bin or BAIL_OUT("$bin is missing: run make");
my $dir = PostgreSQL::Test::Utils::tempdir();
my $login = getpwuid($<);
my $home = (getpwuid($<))[7];
my $node = pgcloud_node('appruntime');

my $alice = '7a000000-0000-4000-8000-00000000a11c';
my $bob   = '7a000000-0000-4000-8000-000000000b0b';
my $alloc = '7a000000-0000-4000-8000-00000000a001';
my $alloc2 = '7a000000-0000-4000-8000-00000000a002';
emit_event($node, 'user.created', 'user', $alice, { user_id => $alice, posix_username => $login });
emit_event($node, 'user.created', 'user', $bob, { user_id => $bob, posix_username => 'bob' });
for my $a ($alloc, $alloc2) {
    emit_event($node, 'allocation.activated', 'allocation', $a,
        { allocation_id => $a, user_id => $alice, sku => 'tap', node_hostname => 'tap-node', ip_addresses => ['127.0.0.1'],
          ssh_principal => "pgcloud-alloc-$a" });
}
is(wait_until($node, q{SELECT count(*) FROM appruntime.allocations WHERE state = 'active'}, '2'), '2', 'appruntime learnt the allocations');
wait_until($node, q{SELECT count(*) FROM releases.allocations WHERE state = 'active'}, '2');

my $ssh = start_ssh_node($node, "$dir/node", principals => [ map { "pgcloud-alloc-$_" } $alloc, $alloc2 ]);
open my $fh, '>', "$dir/agent.conf" or die;
print $fh join('', map { "$_\n" } (
    'conninfo = ' . $node->connstr('postgres'), 'service_account = 7a1a7e1a-0000-4000-8000-00000000beef',
    'agent_name = agent-tap', "ssh_port = $ssh->{port}", "known_hosts = $ssh->{known_hosts}", 'poll_ms = 200'));
close $fh;
my $agent = IPC::Run::start([ $bin, "$dir/agent.conf" ], '>', '/dev/null', '2>', "$dir/agent.log");

my $ua = { role => 'pgcloud_user', sub => $alice, sid => '7a000000-0000-4000-8000-0000000005a1' };
my $ub = { role => 'pgcloud_user', sub => $bob, sid => '7a000000-0000-4000-8000-0000000005b1' };
sub api { my ($claims, $sql) = @_; my ($ok, $out, $err) = api_call($node, $claims, $sql); return $ok ? decode_json($out) : { error => $err }; }
sub port_answers { my $p = shift; my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $p, Proto => 'tcp', Timeout => 2); close $s if $s; return $s ? 1 : 0; }
sub state_of { my $i = shift; return $node->safe_psql('postgres', "SELECT state FROM appruntime.instances WHERE id = '$i'"); }

# ---- manifests -------------------------------------------------------------------
my $port = PostgreSQL::Test::Cluster::get_free_port();
my $manifest = {
    name => 'web', version => '1.0', ports => [ $port + 0 ], resources => { memory_mb => 64 },
    start => 'echo "$GREETING" > greeting-$PORT.txt; sleep 2; exec python3 -m http.server "$PORT" --bind 127.0.0.1',
    env => { PORT => { type => 'integer', required => JSON::PP::true }, GREETING => { type => 'string', default => 'hello' } } };
my $mjson = encode_json($manifest);
my $pub = decode_json($node->safe_psql('postgres', "SELECT api.publish_app_manifest(\$m\$$mjson\$m\$, true)"));
ok($pub->{catalogue}, 'an operator publishes web@1.0 to the catalogue');
my $r = api($ua, "SELECT api.publish_app_manifest(\$m\$$mjson\$m\$, true)");
like($r->{error}, qr/"code": "forbidden"/, 'a user may not publish to the catalogue');
$r = api($ua, q{SELECT api.publish_app_manifest('{"name": "x", "version": "1", "start": "true", "ports": [70000]}')});
like($r->{error}, qr/"code": "app_manifest_invalid"/, 'a manifest with a bad port is refused');
my $dies = api($ua, q{SELECT api.publish_app_manifest('{"name": "dies", "version": "1", "start": "echo bye; exit 3", "ports": [9]}')});
is($dies->{catalogue}, JSON::PP::false, 'a user publishes their own manifest');
is(scalar @{ api($ua, 'SELECT api.list_app_manifests()') }, 2, 'alice sees the catalogue and her own');
is(scalar @{ api($ub, 'SELECT api.list_app_manifests()') }, 1, 'bob sees only the catalogue');

# ---- launch: running only when the port answers ----------------------------------
$r = api($ua, "SELECT api.launch_app('$alloc', 'web')");
like($r->{error}, qr/"code": "app_env_invalid"/, 'launch without the required PORT is refused');
my $inst = api($ua, "SELECT api.launch_app('$alloc', 'web\@1.0', '{\"PORT\": $port, \"GREETING\": \"hi from tap\"}')");
is($inst->{state}, 'launch', 'launch_app: state launch');
is(wait_until($node, "SELECT state FROM appruntime.instances WHERE id = '$inst->{id}'", 'starting', 30), 'starting',
   'the agent started the process: starting');
ok(!port_answers($port), '... while the port does not answer yet, it is not running');
is(wait_until($node, "SELECT state FROM appruntime.instances WHERE id = '$inst->{id}'", 'running', 30), 'running',
   'running once the port answers');
ok(port_answers($port), "... and the app answers on port $port");
my ($o, $e);
IPC::Run::run([ 'curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', "http://127.0.0.1:$port/" ], '>', \$o, '2>', \$e);
is($o, '200', '... with HTTP 200');
my $greeting = `cat $home/.pgcloud/apps/greeting-$port.txt`;
is($greeting, "hi from tap\n", 'the environment reached the process');
like(slurp($ssh->{log}), qr/Accepted certificate ID "pgcloud appruntime user=$alice allocation=$alloc"/,
     'the agent logged in with a platform certificate for the allocation');

# ---- members -----------------------------------------------------------------------
like(api($ub, "SELECT api.get_app('$inst->{id}')")->{error}, qr/"code": "app_instance_not_found"/,
     'a stranger does not see the instance');
api($ua, "SELECT api.add_app_member('$inst->{id}', '$bob', 'viewer')");
is(api($ub, "SELECT api.get_app('$inst->{id}')")->{state}, 'running', 'a viewer sees it');
like(api($ub, "SELECT api.stop_app('$inst->{id}')")->{error}, qr/"code": "forbidden"/, 'a viewer may not stop it');
like(api($ub, "SELECT api.add_app_member('$inst->{id}', '$bob', 'owner')")->{error}, qr/"code": "forbidden"/,
     'a viewer may not give roles');
wait_until($node, "SELECT role FROM terminal.app_members WHERE user_id = '$bob'", 'viewer', 30);
like(api($ub, "SELECT api.mint_terminal_token('$alloc')")->{error}, qr/"code": "allocation_not_found"/,
     'a viewer may not open a terminal to the allocation');
api($ua, "SELECT api.add_app_member('$inst->{id}', '$bob', 'editor')");
is(wait_until($node, "SELECT role FROM terminal.app_members WHERE user_id = '$bob'", 'editor', 30), 'editor',
   'terminal learnt the editor role from app.member_added');
like(api($ub, "SELECT api.mint_terminal_token('$alloc')")->{token}, qr/^pgt_/, 'an editor may open a terminal');
is(scalar @{ api($ub, 'SELECT api.list_apps()') }, 1, 'bob lists the instance he is a member of');

# ---- stop: the process and its port are gone -----------------------------------------
my $pid = `cat $home/.pgcloud/apps/$inst->{unit}.pid`;
chomp $pid;
ok($pid =~ /^\d+$/ && kill(0, $pid), "the process runs on the node (pid $pid)");
is(api($ub, "SELECT api.stop_app('$inst->{id}')")->{state}, 'stopping', 'an editor stops it: stopping');
is(wait_until($node, "SELECT state FROM appruntime.instances WHERE id = '$inst->{id}'", 'stopped', 30), 'stopped', 'stopped');
ok(!kill(0, $pid), '... the process is gone');
ok(!port_answers($port), '... and the port is closed');
is(api($ub, "SELECT api.stop_app('$inst->{id}')")->{state}, 'stopped', 'stopping again changes nothing');

my $kinds = join ',', map { $_->{kind} } @{ api($ua, "SELECT api.app_events('$inst->{id}')") };
is($kinds, 'launched,member_added,starting,running,member_added,member_added,stop_requested,stopped',
   'the history tells the story in order');
my ($ret, $out, $err) = $node->psql('postgres', "UPDATE appruntime.instance_events SET kind = 'x' WHERE instance_id = '$inst->{id}'");
isnt($ret, 0, 'the history is immutable');
($ret, $out, $err) = $node->psql('postgres', "UPDATE appruntime.instances SET state = 'running' WHERE id = '$inst->{id}'");
like($err, qr/invalid_state_transition/, 'the transition trigger refuses stopped -> running');

# ---- a process that dies ------------------------------------------------------------------
my $d = api($ua, "SELECT api.launch_app('$alloc', 'dies')");
is(wait_until($node, "SELECT state FROM appruntime.instances WHERE id = '$d->{id}'", 'failed', 30), 'failed',
   'a process that exits before its port answers: failed');
like($node->safe_psql('postgres', "SELECT detail FROM appruntime.instances WHERE id = '$d->{id}'"), qr/bye/,
     '... with the end of its output');

# ---- release of the allocation ends the instance ---------------------------------------------
my $port2 = $port;    # the manifest's port, free again
my $i2 = api($ua, "SELECT api.launch_app('$alloc2', 'web', '{\"PORT\": $port2}')");
is(wait_until($node, "SELECT state FROM appruntime.instances WHERE id = '$i2->{id}'", 'running', 30), 'running', 'a second instance runs');
emit_event($node, 'allocation.released', 'allocation', $alloc2, { allocation_id => $alloc2, user_id => $alice });
is(wait_until($node, "SELECT state FROM appruntime.instances WHERE id = '$i2->{id}'", 'released', 30), 'released',
   'allocation.released: the instance is released');
is($node->safe_psql('postgres', "SELECT count(*) FROM pgcloud.outbox WHERE event_type = 'app.instance_released' AND aggregate_id = '$i2->{id}'"),
   '1', '... and app.instance_released is announced');
like(api($ua, "SELECT api.launch_app('$alloc2', 'web', '{\"PORT\": $port2}')")->{error}, qr/"code": "allocation_not_active"/,
     'no launch on a released allocation');

# The node would be wiped with the allocation; here it is our own process.
my $pid2 = `cat $home/.pgcloud/apps/$i2->{unit}.pid`;
chomp $pid2;
kill 'KILL', -$pid2 if $pid2 =~ /^\d+$/;

# Our files on the "node" (the test user's home).
for my $u (grep { defined } map { $_->{unit} } ($inst, $d, $i2)) {
    unlink glob("$home/.pgcloud/apps/$u.*");
}
unlink "$home/.pgcloud/apps/greeting-$port.txt";

$agent->signal('TERM');
$agent->finish;
$ssh->{handle}->signal('TERM');
$ssh->{handle}->finish;
$node->stop;
done_testing();

