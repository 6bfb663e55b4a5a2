# The terminal end to end, in a real browser: Debian's chromium (headless,
# driven through chromium-driver by python3-selenium,
# test/browser/terminal_driver.py; all Debian packages) opens the
# relay's page (termrelay/, TLS), connects with a freshly minted token in
# Sec-WebSocket-Protocol, types `whoami` and reads the POSIX username back
# from a PTY on a throwaway sshd that trusts the platform CA; resizes the
# terminal and sees `stty size` follow. Refused: a replayed token, an expired
# one, one in the query string, one for another user's allocation, one after
# the allocation is released (the open session closes too), one of a revoked
# session. Idle sessions close; a relay killed mid-session closes the browser's
# socket and leaves nothing marked live. Every session is audited with bytes.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use JSON::PP;
use Time::HiRes qw(usleep time);
use PgcloudTest;

my $repo = $ENV{PGCLOUD_REPO} or die 'PGCLOUD_REPO is not set';
-x '/usr/bin/chromium' or BAIL_OUT('/usr/bin/chromium is missing: install the Debian package chromium');
-x '/usr/bin/chromedriver' or BAIL_OUT('/usr/bin/chromedriver is missing: install the Debian package chromium-driver');
system('python3 -c "import selenium" 2>/dev/null') == 0
  or BAIL_OUT('selenium is missing: install the Debian package python3-selenium');

my $dir = PostgreSQL::Test::Utils::tempdir();
my $login = getpwuid($<);
my $node = pgcloud_node('terminal');
$node->safe_psql('postgres', q{
    UPDATE pgcloud.policy_values SET value = '3' WHERE key = 'terminal.session_stale_seconds';
    UPDATE pgcloud.policy_values SET value = '1' WHERE key = 'terminal.reap_interval_seconds';
});

my $alice = '7e000000-0000-4000-8000-00000000a11c';
my $bob   = '7e000000-0000-4000-8000-000000000b0b';
my $sid_a = '7e000000-0000-4000-8000-0000000005a1';
my $sid_b = '7e000000-0000-4000-8000-0000000005b1';
my $sid_r = '7e000000-0000-4000-8000-0000000005ee';
my ($alloc, $alloc2, $alloc_bob) = ('7e000000-0000-4000-8000-00000000a001', '7e000000-0000-4000-8000-00000000a002',
    '7e000000-0000-4000-8000-00000000b001');

emit_event($node, 'user.created', 'user', $alice, { user_id => $alice, posix_username => $login, email => 'alice@example.com' });
emit_event($node, 'user.created', 'user', $bob, { user_id => $bob, posix_username => 'bob', email => 'bob@example.com' });
for my $a ([ $alloc, $alice ], [ $alloc2, $alice ], [ $alloc_bob, $bob ]) {
    emit_event($node, 'allocation.activated', 'allocation', $a->[0],
        { allocation_id => $a->[0], user_id => $a->[1], sku => 'tap', node_hostname => 'tap-node', ip_addresses => ['127.0.0.1'],
          ssh_principal => "pgcloud-alloc-$a->[0]" });
}
is(wait_until($node, q{SELECT count(*) FROM terminal.allocations WHERE state = 'active'}, '3'), '3',
   'terminal learnt the three allocations from allocation.activated');
is(wait_until($node, q{SELECT count(*) FROM releases.allocations WHERE state = 'active'}, '3'), '3',
   'releases learnt them too');

my $ssh = start_ssh_node($node, "$dir/node", principals => [ map { "pgcloud-alloc-$_" } $alloc, $alloc2, $alloc_bob ]);
my $relay = start_termrelay($node, "$dir/relay", $ssh);
my $base = "https://127.0.0.1:$relay->{port}";

sub mint {
    my ($user, $sid, $a) = @_;
    my ($ok, $out, $err) = api_call($node, { role => 'pgcloud_user', sub => $user, sid => $sid },
        "SELECT api.mint_terminal_token('$a')");
    return $ok ? decode_json($out) : { error => $err };
}

# ---- the browser -------------------------------------------------------------
my ($din, $dout, $derr) = ('', '', '');
$ENV{BROWSER_PROFILE_PARENT} = "$dir/chromium-";
my $drv = IPC::Run::start([ 'python3', "$repo/test/browser/terminal_driver.py" ],
    '<', \$din, '>', \$dout, '2>', \$derr);
sub browser {
    my ($line, $timeout) = @_;
    $din .= "$line\n";
    my $deadline = time() + ($timeout // 60);
    while ($dout !~ /\n/) {
        $drv->pump_nb;
        die "browser driver: no answer to '$line'; stderr: $derr" if time() > $deadline;
        usleep(20_000);
    }
    (my $answer, $dout) = split /\n/, $dout, 2;
    return decode_json($answer);
}

# The first command also waits for Chromium to start: slow on a loaded machine.
my $g = browser("goto $base/", 180);
is($g->{status}, 200, 'chromium loads the relay page over TLS') or diag(encode_json($g));

my $t1 = mint($alice, $sid_a, $alloc);
like($t1->{token}, qr/^pgt_[A-Za-z0-9_-]{43}$/, 'a token is minted for the owner of an active allocation');
is($node->safe_psql('postgres', "SELECT count(*) FROM terminal.tokens WHERE token_hash = sha256(convert_to('$t1->{token}', 'UTF8'))"),
   '1', 'the token is stored only as its SHA-256');
is($node->safe_psql('postgres', "SELECT count(*) FROM terminal.tokens t WHERE t::text LIKE '%$t1->{token}%'"),
   '0', '... never in plain text');

browser("open $t1->{token}");
is(browser('wait_state connected 20000')->{state}, 'connected', 'the WebSocket opens with the token in Sec-WebSocket-Protocol');
browser('type ' . encode_json("whoami\r"));
my $w = browser("wait_text \\n\Q$login\E\\s*\\n 20000");
ok($w->{found}, "whoami in the browser terminal answers $login") or diag($w->{text});
browser('resize 120 40');
browser('type ' . encode_json("stty size\r"));
$w = browser('wait_text \n40 120\s*\n 20000');
ok($w->{found}, 'a resize reaches the PTY: stty size says 40 120') or diag($w->{text});
my $shot = "$PostgreSQL::Test::Utils::log_path/110_terminal_browser_whoami.png";
ok(browser("screenshot $shot")->{ok} && -s $shot > 1000, "a screenshot is kept: $shot");

my $live = decode_json($node->safe_psql('postgres', q{SELECT api.admin_terminal_sessions()}));
is(scalar @$live, 1, 'operators see one live session');
is($live->[0]{allocation_id}, $alloc, '... on the allocation');
is($live->[0]{posix_username}, $login, "... as $login");
is($live->[0]{relay}, 'relay-tap', '... held by relay-tap');
like(slurp($ssh->{log}), qr/Accepted certificate ID "pgcloud terminal user=$alice allocation=$alloc"/,
     'sshd let in a certificate minted for the terminal, naming the user and allocation');

# ---- refused -------------------------------------------------------------------
# A replayed token (a second page load, the same token).
browser("goto $base/");
browser("open $t1->{token}");
my $st = browser('wait_state closed 20000');
is($st->{code}, 4401, 'a replayed token: the socket closes with 4401');
is($st->{reason}, 'terminal_token_used', '... reason terminal_token_used');
is($node->safe_psql('postgres', q{SELECT details ->> 'code' FROM pgcloud.audit_logs WHERE action = 'terminal.token_refused'
    AND result = 'rejected' AND details ->> 'token_id' IS NOT NULL ORDER BY id DESC LIMIT 1}),
   'terminal_token_used', '... and the refusal is audited with the token id');

# Someone else's allocation: no token at all.
my $tb = mint($alice, $sid_a, $alloc_bob);
like($tb->{error}, qr/"code": "allocation_not_found"/, "a token for another user's allocation is refused (404)");

# A token in the query string: refused before anything else, never redeemed, never logged.
my $tq = mint($alice, $sid_a, $alloc);
my $r = browser("ws wss://127.0.0.1:$relay->{port}/ws?token=$tq->{token} [\"pgcloud.terminal\"]");
ok(!$r->{opened}, 'a WebSocket with the token in the query string is refused');
$r = browser("ws wss://127.0.0.1:$relay->{port}/ws?x=1 [\"pgcloud.terminal\",\"pgcloud.token.$tq->{token}\"]");
ok(!$r->{opened}, '... even when the subprotocol carries it too');
is(browser("goto $base/?token=$tq->{token}")->{status}, 400, 'a page request with a query string: 400');
is($node->safe_psql('postgres', "SELECT redeemed_at IS NULL FROM terminal.tokens WHERE token_hash = sha256(convert_to('$tq->{token}', 'UTF8'))"),
   't', '... and the token was not redeemed');
unlike(slurp($relay->{log}), qr/\Q$tq->{token}\E/, 'the relay never logged the token');
like(slurp($relay->{log}), qr/query string/, '... it logged the refusal');

# An expired token.
$node->safe_psql('postgres', q{UPDATE pgcloud.policy_values SET value = '5' WHERE key = 'terminal.token_ttl_seconds'});
my $te = mint($alice, $sid_a, $alloc);
sleep 6;
browser("goto $base/");
browser("open $te->{token}");
$st = browser('wait_state closed 20000');
is($st->{reason}, 'terminal_token_expired', 'an expired token: closed with terminal_token_expired');
$node->safe_psql('postgres', q{UPDATE pgcloud.policy_values SET value = '60' WHERE key = 'terminal.token_ttl_seconds'});

# ---- release of the allocation closes the open session ---------------------------
my $t2 = mint($alice, $sid_a, $alloc2);
my $t2b = mint($alice, $sid_a, $alloc2);    # minted, never used before the release
browser("goto $base/");
browser("open $t2->{token}");
is(browser('wait_state connected 20000')->{state}, 'connected', 'a session on the second allocation');
browser('type ' . encode_json("echo pgcloud-\$((40+2))\r"));
ok(browser('wait_text pgcloud-42 20000')->{found}, '... it runs commands');
emit_event($node, 'allocation.released', 'allocation', $alloc2, { allocation_id => $alloc2, user_id => $alice });
$st = browser('wait_state closed 20000');
is($st->{code}, 4410, 'allocation.released: the open terminal closes (4410)');
is($st->{reason}, 'allocation_ended', '... reason allocation_ended');
my ($ok, $out, $err) = api_call($node, { role => 'pgcloud_service', sub => '7e1a7e1a-0000-4000-8000-00000000beef',
    relay => 'x', scopes => 'terminal:redeem' }, "SELECT api.service_redeem_terminal_token('$t2b->{token}')");
like($err, qr/"code": "terminal_token_revoked"/, 'a token minted before the release is revoked with it');
my $t2c = mint($alice, $sid_a, $alloc2);
like($t2c->{error}, qr/"code": "allocation_not_active"/, 'no token after the release (409)');
my $ended = $node->safe_psql('postgres', qq{SELECT end_reason || ' ' || (bytes_in > 0) || ' ' || (bytes_out > 0)
    FROM terminal.sessions WHERE allocation_id = '$alloc2'});
is($ended, 'allocation_ended true true', 'the session ended as allocation_ended, with bytes both ways');
my $audit = $node->safe_psql('postgres', qq{SELECT details ->> 'bytes_in', details ->> 'bytes_out', details ->> 'reason'
    FROM pgcloud.audit_logs WHERE action = 'terminal.session_ended' AND target_id = '$alloc2'});
like($audit, qr/^[1-9]\d*\|[1-9]\d*\|allocation_ended$/, 'the end is audited with the bytes each way');
is($node->safe_psql('postgres', qq{SELECT count(*) FROM pgcloud.audit_logs WHERE action IN ('terminal.token_minted', 'terminal.token_redeemed') AND target_id = '$alloc2'}),
   '3', 'mints and the redeem are audited');

# ---- a revoked sign-in session ---------------------------------------------------
my $tr = mint($alice, $sid_r, $alloc);
browser("goto $base/");
browser("open $tr->{token}");
is(browser('wait_state connected 20000')->{state}, 'connected', 'a session opened from sign-in session R');
emit_event($node, 'session.revoked', 'session', $sid_r, { session_id => $sid_r, user_id => $alice, reason => 'logout' });
$st = browser('wait_state closed 20000');
is($st->{reason}, 'session_revoked', 'session.revoked closes its terminals');
my $tr2 = mint($alice, $sid_r, $alloc);
like($tr2->{error}, qr/"code": "session_revoked"/, '... and no new token comes from it');

# ---- idle timeout (a second relay with a short one) -----------------------------------
my $relay_idle = start_termrelay($node, "$dir/relay-idle", $ssh, relay_name => 'relay-idle', idle_timeout_seconds => 3);
my $ti = mint($alice, $sid_a, $alloc);
browser("goto https://127.0.0.1:$relay_idle->{port}/");
browser("open $ti->{token}");
is(browser('wait_state connected 20000')->{state}, 'connected', 'a session on a relay with a 3 s idle timeout');
my $t0 = time();
$st = browser('wait_state closed 20000');
is($st->{code}, 4408, 'left alone, it closes with 4408');
is($st->{reason}, 'idle', '... reason idle');
cmp_ok(time() - $t0, '<', 15, '... within seconds');
$relay_idle->{handle}->signal('TERM');
$relay_idle->{handle}->finish;

# ---- the relay killed mid-session ------------------------------------------------------
my $tk = mint($alice, $sid_a, $alloc);
browser("goto $base/");
browser("open $tk->{token}");
is(browser('wait_state connected 20000')->{state}, 'connected', 'a session before the relay dies');
is($node->safe_psql('postgres', q{SELECT count(*) FROM terminal.sessions WHERE state = 'live'}), '1',
   'one live session (leaving a page closed the earlier ones)');
$relay->{handle}->signal('KILL');
$relay->{handle}->finish;
$st = browser('wait_state closed 20000');
is($st->{state}, 'closed', 'kill -9 of the relay: the browser sees the close');
is(wait_until($node, q{SELECT count(*) FROM terminal.sessions WHERE state = 'live'}, '0', 30), '0',
   'nothing stays marked live: the scheduler job terminal.reap_sessions reaps it as relay_lost, nobody asking');
is($node->safe_psql('postgres', q{SELECT jsonb_array_length(api.admin_terminal_sessions())}), '0',
   '... and the operators see no live session');
is($node->safe_psql('postgres', q{SELECT count(*) FROM terminal.sessions WHERE end_reason = 'relay_lost'}), '1',
   '... it ended as relay_lost');

$din .= "quit\n";
$drv->finish;
$ssh->{handle}->signal('TERM');
$ssh->{handle}->finish;
$node->stop;
done_testing();

