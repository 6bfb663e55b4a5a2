# Storage end to end against the fake S3 (test/fakes/fake_s3.py), which
# checks AWS SigV4 pre-signed URLs with its own implementation:
#   a PUT URL from api.presign uploads; a tampered, expired or wrongly signed
#   URL is refused; api.complete_upload -> a HEAD through the HTTP executor
#   (signed at send time) makes the object stored with S3's size and ETag
#   (object.stored); GET and HEAD URLs read it back; api.delete_object removes
#   the bytes through the executor; an object never uploaded becomes missing.
# And: botocore's generate_presigned_url (Debian python3-botocore) makes the
# very same URLs byte for byte (keys with spaces, UTF-8 and reserved
# characters; GET, PUT, HEAD, DELETE; path-style and virtual-hosted), and a
# botocore URL is accepted by the fake; the secret key is in no table or log.
use strict;
use warnings;
use lib $ENV{PGCLOUD_REPO} . '/test/t';
use lib $ENV{PGCLOUD_REPO} . '/test/fakes';
use PgcloudTest;
use PgcloudFakes;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use JSON::PP;
use Encode ();

my ($bucket, $region, $ak, $sk) = ('pgcloud-objects', 'eu-test-1', 'AKIDPGCLOUDTAP', 'tap/Secret+Key0123456789');
my $tmp = PostgreSQL::Test::Utils::tempdir();
my $s3 = PgcloudFakes->start('s3', dir => "$tmp/s3",
    args => ['--bucket', $bucket, '--region', $region, '--access-key', $ak, '--secret-key', $sk]);
my $endpoint = $s3->url;
my $node = pgcloud_node('storage', "pgcloud.s3_endpoint = '$endpoint'\npgcloud.s3_region = '$region'\n"
    . "pgcloud.s3_bucket = '$bucket'\npgcloud.s3_access_key_id = '$ak'\n"
    . "pgcloud.s3_secret_access_key = '$sk'\npgcloud.s3_path_style = on\n");
sql_node($node, 'postgres');

my $user = '70000000-0000-4000-8000-000000000007';
# [http status, body] of a request to URL.
sub http
{
    my ($method, $url, @extra) = @_;
    my ($out, $err);
    my @cmd = ('curl', '-s', '-g', '-X', $method, '-o', "$tmp/body", '-w', '%{http_code}', @extra, $url);
    @cmd = ('curl', '-s', '-g', '-I', '-o', "$tmp/body", '-w', '%{http_code}', @extra, $url) if $method eq 'HEAD';
    IPC::Run::run(\@cmd, '>', \$out, '2>', \$err);
    return ($out, slurp_file("$tmp/body"));
}
sub state { return $s3->state }

sql(q{SELECT pgcloud.set_policy('core.http_backoff_base_ms', '200');
      SELECT pgcloud.set_policy('storage.confirm_interval_seconds', '1');});

# ---- upload through a PUT URL --------------------------------------------------
as_user($user, q{SELECT api.create_namespace('photos')});
my $put = decode_json(as_user($user, q{SELECT api.presign('photos', 'holiday/beach 1+ü.jpg', 'PUT', 300)}));
like($put->{url}, qr{^\Q$endpoint/$bucket/\E[0-9a-f-]{36}/holiday/beach%201%2B%C3%BC\.jpg\?X-Amz-Algorithm=AWS4-HMAC-SHA256&},
    'a path-style URL with the key encoded as SigV4 wants');
is(sql(q{SELECT state FROM storage.objects WHERE path = 'holiday/beach 1+ü.jpg'}), 'pending', 'the object is pending');

my $content = "JPEG\x00bytes " x 100;
open(my $fh, '>:raw', "$tmp/upload") or die; print $fh $content; close $fh;
my ($code) = http('PUT', $put->{url}, '--data-binary', "\@$tmp/upload", '-H', 'Content-Type: image/jpeg');
is($code, '200', 'the fake S3 accepts our PUT URL');

# ---- refused URLs -------------------------------------------------------------
(my $tampered = $put->{url}) =~ s/beach%201/beach%202/;
is((http('PUT', $tampered, '--data-binary', 'x'))[0], '403', 'another key with the same signature is refused');
(my $longer = $put->{url}) =~ s/X-Amz-Expires=300/X-Amz-Expires=3000/;
is((http('PUT', $longer, '--data-binary', 'x'))[0], '403', 'a longer validity with the same signature is refused');
(my $as_get = $put->{url});
is((http('DELETE', $as_get))[0], '403', 'a PUT URL does not allow a DELETE');
my $wrong = sql(qq{SELECT url FROM storage.presign_with('PUT', 'x', now(), 60, '$endpoint', '$region', '$bucket', '$ak', 'not-the-secret', true)});
is((http('PUT', $wrong, '--data-binary', 'x'))[0], '403', 'a URL signed with another secret is refused');
my $expired = sql(qq{SELECT url FROM storage.presign_with('GET', 'x', now() - interval '120 seconds', 60, '$endpoint', '$region', '$bucket', '$ak', '$sk', true)});
my ($ecode, $ebody) = http('GET', $expired);
is($ecode, '403', 'an expired URL is refused');
like($ebody, qr{Request has expired}, '... because it expired');
my $fresh = sql(qq{SELECT url FROM storage.presign_with('GET', 'nothing-here', now(), 60, '$endpoint', '$region', '$bucket', '$ak', '$sk', true)});
is((http('GET', $fresh))[0], '404', 'the same URL made now passes the signature check (404: no such key)');
is(scalar(keys %{ state()->{objects} }), 1, 'no refused request stored anything');

# ---- confirmation by HEAD through the executor ---------------------------------------
my $obj = decode_json(as_user($user, q{SELECT api.complete_upload('photos', 'holiday/beach 1+ü.jpg')}));
is(wait_until($node, q{SELECT state FROM storage.objects WHERE path = 'holiday/beach 1+ü.jpg'}, 'stored', 60), 'stored',
    'the HEAD confirmed the upload');
my ($key) = grep { /holiday/ } keys %{ state()->{objects} };
my $remote = state()->{objects}{$key};
is(sql(q{SELECT size || ' ' || etag || ' ' || content_type FROM storage.objects WHERE path = 'holiday/beach 1+ü.jpg'}),
    length($content) . " $remote->{etag} image/jpeg", "size, ETag and content type are S3's");
is(sql(q{SELECT count(*) FROM pgcloud.http_intents WHERE target = 's3' AND method = 'HEAD' AND state = 'succeeded'}), '1',
    'one HEAD, answered 200');
is(sql(qq{SELECT payload ->> 'size' FROM pgcloud.outbox WHERE event_type = 'object.stored'}), length($content),
    'object.stored announced with the size');

my $get = decode_json(as_user($user, q{SELECT api.presign('photos', 'holiday/beach 1+ü.jpg', 'GET', 60)}));
my ($gcode, $gbody) = http('GET', $get->{url});
is($gcode, '200', 'the GET URL reads the object');
ok($gbody eq $content, '... byte for byte');
my $head = decode_json(as_user($user, q{SELECT api.presign('photos', 'holiday/beach 1+ü.jpg', 'HEAD', 60)}));
is((http('HEAD', $head->{url}))[0], '200', 'the HEAD URL works');

# ---- deletion ------------------------------------------------------------------
as_user($user, q{SELECT api.delete_object('photos', 'holiday/beach 1+ü.jpg')});
ok($node->poll_query_until('postgres',
    q{SELECT count(*) = 1 FROM pgcloud.http_intents WHERE target = 's3' AND method = 'DELETE' AND state = 'succeeded'}),
    'the S3 DELETE went through the executor');
is(scalar(keys %{ state()->{objects} }), 0, 'the bytes are gone from S3');
is(as_user($user, q{SELECT api.list_objects('photos') -> 'objects'}), '[]', 'and from the listing');

# ---- never uploaded -> missing --------------------------------------------------------
sql(q{SELECT pgcloud.set_policy('storage.missing_grace_seconds', '0')});
as_user($user, q{SELECT api.presign('photos', 'never.bin', 'PUT', 1)});
sleep(2);
sql(q{UPDATE storage.objects SET next_check_at = now() WHERE path = 'never.bin'});
is(sql(q{SELECT storage.check_pending()}), '1', 'the periodic check asks for one HEAD');
is(wait_until($node, q{SELECT state FROM storage.objects WHERE path = 'never.bin'}, 'missing', 60), 'missing',
    'a 404 after the URL expired makes the object missing');

# ---- botocore makes the same URLs -------------------------------------------------------
my @cases;
for my $k ('plain.txt', 'a b/c d.txt', "\x{fc}n\x{ef}c\x{f6}d\x{e9}/\x{444}\x{430}\x{439}\x{43b}.bin",
           q{reserved !"#$&'()*+,:;=?@[]^`{|}}, '~tilde/x-y_z.', '100%/per cent')
{
    for my $m ('GET', 'PUT', 'HEAD', 'DELETE')
    {
        for my $ps (JSON::PP::true, JSON::PP::false)
        {
            for my $ep ('http://127.0.0.1:9000', 'https://s3.eu-west-3.amazonaws.com', 'http://objects.example.test:8333')
            {
                push @cases, { method => $m, key => $k, at => 1700000000 + 7 * scalar(@cases), expires => 3600 + scalar(@cases),
                               endpoint => $ep, region => 'eu-west-3', bucket => 'my-bucket',
                               access_key_id => 'AKIAEXAMPLE', secret_access_key => 'wJalr/K7+example', path_style => $ps };
            }
        }
    }
}
my $json = JSON::PP->new->utf8->canonical;
my $in = join('', map { $json->encode($_) . "\n" } @cases);
my ($boto, $berr);
IPC::Run::run(['python3', "$ENV{PGCLOUD_REPO}/test/fakes/botocore_presign.py"], '<', \$in, '>', \$boto, '2>', \$berr)
    or BAIL_OUT("botocore_presign.py failed: $berr");
my @boto = split /\n/, $boto;
is(scalar(@boto), scalar(@cases), 'botocore signed every case');
my $mismatch = 0;
for my $i (0 .. $#cases)
{
    my $c = $cases[$i];
    my $lit = sub { my $s = shift; $s =~ s/'/''/g; return "'$s'" };
    my $q = sprintf(q{SELECT url FROM storage.presign_with(%s, convert_from(decode(%s, 'hex'), 'UTF8'), to_timestamp(%d), %d, %s, %s, %s, %s, %s, %s)},
        $lit->($c->{method}), $lit->(unpack('H*', Encode::encode('UTF-8', $c->{key}))), $c->{at}, $c->{expires},
        $lit->($c->{endpoint}), $lit->($c->{region}), $lit->($c->{bucket}), $lit->($c->{access_key_id}),
        $lit->($c->{secret_access_key}), $c->{path_style} ? 'true' : 'false');
    my $ours = sql($q);
    if ($ours ne $boto[$i])
    {
        $mismatch++;
        diag("case $i ($c->{method} $c->{key}):\n ours:     $ours\n botocore: $boto[$i]");
    }
}
is($mismatch, 0, "pgcloud's C signer and botocore agree byte for byte on all " . scalar(@cases) . ' URLs');

# A botocore URL for the live fake, signed now: the fake (a third implementation) accepts it.
my $now_case = $json->encode({ method => 'PUT', key => 'boto/made.txt', at => time(), expires => 60, endpoint => $endpoint,
    region => $region, bucket => $bucket, access_key_id => $ak, secret_access_key => $sk, path_style => JSON::PP::true }) . "\n";
my $boto_url;
IPC::Run::run(['python3', "$ENV{PGCLOUD_REPO}/test/fakes/botocore_presign.py"], '<', \$now_case, '>', \$boto_url);
chomp $boto_url;
is((http('PUT', $boto_url, '--data-binary', 'from botocore'))[0], '200', "the fake S3 accepts botocore's URL too");

# ---- the secret stays out of tables and logs ----------------------------------------------
is(sql(qq{SELECT count(*) FROM pgcloud.http_intents WHERE concat_ws(' ', path, headers, body, last_error, response_body) LIKE '%$sk%'}),
    '0', 'no intent holds the secret key');
is(sql(qq{SELECT count(*) FROM pgcloud.audit_logs WHERE details::text LIKE '%$sk%'}), '0', 'no audit row holds it');
# The test's own statements name the secret (log_statement = all): every other line must not.
my @leaks = grep { /\Q$sk\E/ && !/ statement: / } split /\n/, slurp_file($node->logfile);
is(scalar(@leaks), 0, "no server log line but the test's own statements holds the secret key");

$node->stop;
$s3->stop;
done_testing();
