# Capacity end to end against the fake MAAS (test/fakes/fake_maas.py): the
# relay, the HTTP executor (OAuth 1.0 PLAINTEXT from pgcloud.maas_api_key)
# and the poller (the scheduler's maas.poll job, started by the launcher) running for real.
#   register nodes -> MAAS commissions them -> ready;
#   create_allocation -> allocate + deploy (user data with the SSH key) ->
#   the fake walks Deploying -> Deployed -> active, allocation.activated
#   with the price; release -> Releasing -> Ready -> released;
#   a failed deployment -> failed with MAAS's reason, slots freed;
#   a stalled deployment -> the deploy timeout fails it and releases it;
#   kill -9 of the postmaster while MAAS deploys -> after the restart the
#   allocation ends active or failed, slots consistent, and a failed one
#   was never activated (nothing billed).
# And: every request authenticated with a fresh nonce; the API key in no
# table, intent or log line.
# services: inventory provisioning maas billing
use strict;
use warnings;
use lib $ENV{PGCLOUD_REPO} . '/test/t';
use lib $ENV{PGCLOUD_REPO} . '/test/fakes';
use PgcloudTest;
use PgcloudFakes;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(time sleep);

my $secret = 'Sup3rS3cretMaasKey';
my $tmp = PostgreSQL::Test::Utils::tempdir();
my $maas = PgcloudFakes->start('maas', dir => "$tmp/maas",
    args => ['--machines', '4', '--api-key', "pgck:pgtk:$secret", '--deploy-seconds', '1.5',
             '--release-seconds', '0.5', '--commission-seconds', '0.5']);
my $node = pgcloud_node('capacity', "pgcloud.maas_url = '" . $maas->url . "'\n"
    . "pgcloud.maas_api_key = 'pgck:pgtk:$secret'\n");
sql_node($node, 'postgres');

sql(q{
    SELECT pgcloud.set_policy('maas.poll_interval_ms', '200');
    SELECT pgcloud.set_policy('core.http_backoff_base_ms', '200');
});

# Nothing to start: the scheduler worker runs the poller (job maas.poll) by itself.
is(sql("SELECT enabled FROM pgcloud.jobs WHERE job = 'maas.poll'"), 't', 'the MAAS poller is a scheduled job');

my $user = '60000000-0000-4000-8000-000000000001';
sub machine { return $maas->state->{machines}{ $_[0] } }
sub alloc_state { return sql("SELECT state FROM provisioning.allocations WHERE id = '$_[0]'") }

# ---- catalogue and nodes -----------------------------------------------
sql(q{
    SELECT api.admin_upsert_sku('h100x8', 'H100-SXM', 8, 128, 1024, 8000, 'eu-west', 2400);
    SELECT api.admin_upsert_image('ubuntu-22.04', 'jammy');
    SELECT api.admin_register_node('gpu-node-1', 'abc123', 'h100x8');
    SELECT api.admin_register_node('gpu-node-2', 'abc124', 'h100x8');
    SELECT api.admin_register_node('gpu-node-3', 'abc125', 'h100x8');
});
is(wait_for(q{SELECT string_agg(state, ',' ORDER BY hostname) FROM inventory.nodes}, 'ready,ready,ready'),
    'ready,ready,ready', 'registered nodes are commissioned by MAAS and become ready');
is(wait_for(q{SELECT string_agg(state || '/' || free_slots, ',' ORDER BY hostname) FROM provisioning.nodes}, 'ready/8,ready/8,ready/8'),
    'ready/8,ready/8,ready/8', 'provisioning sees them ready with their slots');
is(join(',', map { $_->{status_name} } @{ machine('abc123')->{history} }), 'Ready,Commissioning,Ready',
    'the fake walked abc123 through Commissioning');
is(machine('abc126')->{history}[-1]{status_name}, 'Ready', 'an unregistered machine was left alone');
is(scalar(@{ machine('abc126')->{history} }), 1, '(never touched)');

# ---- an allocation, deployed -----------------------------------------------
my $key = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMOwPp55P+3rXvN52Am9GxAqi24MMrCru+LnotcYcsbn';
sql(qq{
    -- A top-up through billing, which reports the standing (account.standing_changed).
    SELECT api.admin_adjust_balance('60000000-0000-4000-8000-000000000001', 500000, 'test top-up');
    SELECT pgcloud.emit('ssh_key.added', 'ssh_key', '6e000000-0000-4000-8000-000000000001',
        '{"id": "6e000000-0000-4000-8000-000000000001", "user_id": "60000000-0000-4000-8000-000000000001", "public_key": "$key"}');
});
wait_for(q{SELECT count(*) FROM provisioning.ssh_keys}, '1');
wait_for(q{SELECT count(*) FROM provisioning.account_standing WHERE standing = 'good'}, '1');
my $a1 = as_user($user, q{SELECT api.create_allocation('h100x8', 'ubuntu-22.04', '{6e000000-0000-4000-8000-000000000001}') ->> 'id'});
like($a1, qr/^[0-9a-f-]{36}$/, 'create_allocation returns at once');
is(alloc_state($a1), 'provisioning', 'provisioning while MAAS deploys');
is(wait_for("SELECT state FROM provisioning.allocations WHERE id = '$a1'", 'active'), 'active', 'the allocation becomes active');
my $host1 = sql("SELECT node_hostname FROM provisioning.allocations WHERE id = '$a1'");
my $sid1 = sql("SELECT maas_system_id FROM provisioning.allocations WHERE id = '$a1'");
is(join(',', map { $_->{status_name} } @{ machine($sid1)->{history} }[3 .. 5]), 'Allocated,Deploying,Deployed',
    'the fake walked the machine Allocated -> Deploying -> Deployed');
my ($deploy) = grep { ($_->{op} // '') eq 'deploy' } $maas->requests;
is($deploy->{distro_series}, 'jammy', "deployed with the image's series");
is($deploy->{user_data}, "#cloud-config\nssh_authorized_keys:\n  - \"$key\"\n", 'user data carries the SSH key');
is(sql("SELECT payload ->> 'price_per_hour' || ' ' || (payload ->> 'currency') || ' ' || (payload ->> 'node_hostname')
          || ' ' || ((payload ->> 'started_at')::timestamptz IS NOT NULL)
          FROM pgcloud.outbox WHERE event_type = 'allocation.activated' AND aggregate_id = '$a1'"),
    "2400 usd $host1 true", 'allocation.activated carries price, currency, start and node');
is(sql("SELECT available FROM inventory.marketplace WHERE sku = 'h100x8'"), '2', 'the marketplace counts the node taken');

# ---- release ------------------------------------------------------------
as_user($user, "SELECT api.release_allocation('$a1')");
is(wait_for("SELECT state FROM provisioning.allocations WHERE id = '$a1'", 'released'), 'released', 'released');
is(machine($sid1)->{status_name}, 'Ready', 'the machine is Ready again in MAAS');
is(machine($sid1)->{owner}, undef, 'and has no owner');
is(sql("SELECT free_slots FROM provisioning.nodes WHERE maas_system_id = '$sid1'"), '8', 'its slots are free');

# ---- a failed deployment ----------------------------------------------------
$maas->control({ fail_deploy => ['abc123', 'abc124', 'abc125'] });
my $a2 = as_user($user, q{SELECT api.create_allocation('h100x8', 'ubuntu-22.04') ->> 'id'});
is(wait_for("SELECT state FROM provisioning.allocations WHERE id = '$a2'", 'failed'), 'failed', 'a failed deployment fails the allocation');
like(sql("SELECT reason FROM provisioning.allocations WHERE id = '$a2'"), qr/^deployment failed \(MAAS status: Failed deployment/,
    "with MAAS's status as the reason");
is(sql("SELECT count(*) FROM provisioning.slot_claims WHERE allocation_id = '$a2'"), '0', 'its slots are freed');
is(wait_for("SELECT count(*) FROM inventory.slots WHERE allocation_id = '$a2'", '0'), '0', 'in the marketplace too');
is(sql("SELECT count(*) FROM pgcloud.outbox WHERE event_type = 'allocation.activated' AND aggregate_id = '$a2'"), '0',
    'nothing billed for it');
my $sid2 = sql("SELECT maas_system_id FROM provisioning.allocations WHERE id = '$a2'");
is(wait_for("SELECT status_name || '/' || goal FROM maas.machines WHERE system_id = '$sid2'", 'Ready/none'), 'Ready/none',
    'the machine was released back to Ready');
$maas->control(undef);

# ---- a stalled deployment: the deploy timeout -------------------------------
sql(q{SELECT pgcloud.set_policy('maas.deploy_timeout_seconds', '3')});
$maas->control({ stall => ['abc123', 'abc124', 'abc125'] });
my $a3 = as_user($user, q{SELECT api.create_allocation('h100x8', 'ubuntu-22.04') ->> 'id'});
is(wait_for("SELECT state FROM provisioning.allocations WHERE id = '$a3'", 'failed'), 'failed', 'a stalled deployment times out');
like(sql("SELECT reason FROM provisioning.allocations WHERE id = '$a3'"),
    qr/^the deployment did not finish within 3 s \(MAAS status: Deploying\)$/, 'the reason says so');
my $sid3 = sql("SELECT maas_system_id FROM provisioning.allocations WHERE id = '$a3'");
is(wait_for("SELECT status_name || '/' || goal FROM maas.machines WHERE system_id = '$sid3'", 'Ready/none'), 'Ready/none',
    'the stalled machine was released');
$maas->control(undef);
sql(q{SELECT pgcloud.set_policy('maas.deploy_timeout_seconds', '2400')});

# ---- kill -9 while MAAS deploys -------------------------------------------------
$maas->control({ deploy_seconds => 3 });
my $a4 = as_user($user, q{SELECT api.create_allocation('h100x8', 'ubuntu-22.04') ->> 'id'});
my $sid4 = sql("SELECT maas_system_id FROM provisioning.allocations WHERE id = '$a4'");
ok($maas->wait_for(sub { (machine($sid4)->{status_name} // '') eq 'Deploying' }, timeout => 30), 'MAAS is deploying');
$node->kill9;
restart_after_crash($node);
my $end = wait_for("SELECT state IN ('active', 'failed') FROM provisioning.allocations WHERE id = '$a4'", 't', 90);
is($end, 't', 'after the restart the allocation completes or fails cleanly');
my $st4 = alloc_state($a4);
note("after the crash: $st4");
is(sql("SELECT count(*) FROM pgcloud.outbox WHERE event_type = 'allocation.activated' AND aggregate_id = '$a4'"),
    $st4 eq 'active' ? '1' : '0', 'activated exactly once if active, never if failed');
is(sql("SELECT count(*) FROM provisioning.slot_claims WHERE allocation_id = '$a4'"), $st4 eq 'active' ? '8' : '0',
    'its claims match its state');
is(machine($sid4)->{status_name}, $st4 eq 'active' ? 'Deployed' : machine($sid4)->{status_name},
    'MAAS agrees (Deployed when active)');
$maas->control(undef);
as_user($user, "SELECT api.release_allocation('$a4')") if $st4 eq 'active';
is(wait_for(q{SELECT count(*) FROM provisioning.allocations WHERE state NOT IN ('released', 'failed')}, '0'), '0',
    'every allocation ended');
is(wait_for(q{SELECT count(*) FROM maas.machines WHERE goal <> 'none'}, '0'), '0', 'MAAS has nothing left to do');

# ---- consistency and secrets ------------------------------------------------
is(sql('SELECT count(*) FROM provisioning.capacity_problems'), '0', 'claims, counters and allocations agree');
is(sql('SELECT count(*) FROM provisioning.slot_claims'), '0', 'no slot held');
is(wait_for('SELECT count(*) FROM inventory.slots WHERE allocation_id IS NOT NULL', '0'), '0', 'inventory agrees');
is(sql(q{SELECT count(*) FROM pgcloud.outbox o WHERE o.event_type = 'allocation.activated'
          AND EXISTS (SELECT 1 FROM provisioning.allocations a WHERE a.id = o.aggregate_id::uuid AND a.state = 'failed')}), '0',
    'no failed allocation was ever activated');
is(sql('SELECT count(*) FROM pgcloud.dead_letters'), '0', 'no event was dead-lettered');
my @reqs = grep { $_->{path} ne '/MAAS/api/2.0/version/' } $maas->requests;
cmp_ok(scalar(@reqs), '>', 20, 'MAAS saw ' . scalar(@reqs) . ' requests');
is(scalar(grep { !$_->{auth_ok} } @reqs), 0, 'every one authenticated (OAuth 1.0 PLAINTEXT)');
my %nonces = map { ($_->{oauth}{oauth_nonce} // '') => 1 } @reqs;
is(scalar(keys %nonces), scalar(@reqs), 'each with a fresh nonce');
# (The secret is spelt backwards in SQL so that the statement log does not hold it.)
my $rsecret = reverse $secret;
is(sql("SELECT count(*) FROM pgcloud.http_intents h WHERE h::text LIKE '%' || reverse('$rsecret') || '%'"), '0',
    'the API key is in no intent');
is(sql("SELECT count(*) FROM maas.machines m WHERE m::text LIKE '%' || reverse('$rsecret') || '%'"), '0', "nor in maas's tables");
my $log = slurp_file($node->logfile);
unlike($log, qr/\Q$secret\E/, 'nor in the server log (every statement is logged here)');

$node->stop;
done_testing();
