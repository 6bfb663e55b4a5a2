# JWT interoperability with PyJWT (Debian's python3-jwt) both ways, for
# HS256, RS256, ES256 and EdDSA; platform tokens verified by PyJWT with
# api.jwks(); the HS256-with-the-RSA-public-key-PEM attack; the master key
# file (0600) and the sealed signing key surviving a restart; no token in
# the server log. Keys are generated into this test's temporary directory.
# services: auth
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;

my $python = '/usr/bin/python3';
my $tmp = PostgreSQL::Test::Utils::tempdir;
my $json = JSON::PP->new->canonical;

# --- PyJWT makes keys and tokens --------------------------------------------
my $gen = <<'PY';
import json, sys, time, hmac, hashlib, base64
import jwt
from jwt.algorithms import RSAAlgorithm, ECAlgorithm, OKPAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa, ec, ed25519
from cryptography.hazmat.primitives import serialization

out = sys.argv[1]
now = int(time.time())
def b64(b): return base64.urlsafe_b64encode(b).rstrip(b'=').decode()
keys = {
    'RS256': rsa.generate_private_key(public_exponent=65537, key_size=2048),
    'ES256': ec.generate_private_key(ec.SECP256R1()),
    'EdDSA': ed25519.Ed25519PrivateKey.generate(),
}
alg_cls = {'RS256': RSAAlgorithm, 'ES256': ECAlgorithm, 'EdDSA': OKPAlgorithm}
secret = b'pyjwt-interop-secret-0123456789-abcdefgh'
res = {'private': {}, 'public': {}, 'tokens': {}, 'claims': {'iss': 'https://pyjwt.example', 'aud': 'pgcloud-test',
       'sub': 'pyjwt-user', 'iat': now, 'exp': now + 600, 'n': [1, 2.5, True, None, {'x': 'é'}]}}
for alg, k in keys.items():
    priv = json.loads(alg_cls[alg].to_jwk(k)); priv['kid'] = alg + '-key'
    pub = json.loads(alg_cls[alg].to_jwk(k.public_key())); pub['kid'] = alg + '-key'
    res['private'][alg] = priv; res['public'][alg] = pub
    res['tokens'][alg] = jwt.encode(res['claims'], k, algorithm=alg, headers={'kid': alg + '-key'})
res['private']['HS256'] = {'kty': 'oct', 'k': b64(secret), 'kid': 'HS256-key'}
res['public']['HS256'] = res['private']['HS256']
res['tokens']['HS256'] = jwt.encode(res['claims'], secret, algorithm='HS256', headers={'kid': 'HS256-key'})
# The classic attack: an HS256 token whose HMAC key is the RSA public key PEM.
pem = keys['RS256'].public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
h = b64(json.dumps({'alg': 'HS256', 'kid': 'RS256-key', 'typ': 'JWT'}, separators=(',', ':')).encode())
p = b64(json.dumps({**res['claims'], 'sub': 'mallory'}, separators=(',', ':')).encode())
res['pem_attack'] = h + '.' + p + '.' + b64(hmac.new(pem, (h + '.' + p).encode(), hashlib.sha256).digest())
json.dump(res, open(out, 'w'))
PY
open(my $fh, '>', "$tmp/gen.py") or die; print $fh $gen; close $fh;
system($python, "$tmp/gen.py", "$tmp/pyjwt.json") == 0 or die "PyJWT key generation failed";
my $py = $json->decode(slurp_file("$tmp/pyjwt.json"));

my $node = PostgreSQL::Test::Cluster->new('auth');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'pgcloud'\nlog_min_error_statement = error\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pgcloud CASCADE');

sub sqlq { my $s = shift; $s =~ s/'/''/g; return "'$s'"; }

# --- 1. PyJWT's tokens verify in C -------------------------------------------
my $claims = $json->encode($py->{claims});
for my $alg (qw(HS256 RS256 ES256 EdDSA)) {
    my $keys = $json->encode({ keys => [ $py->{public}{$alg} ] });
    my $got = $node->safe_psql('postgres',
        "SELECT auth.jwt_verify(" . sqlq($py->{tokens}{$alg}) . ", " . sqlq($keys) . "::jsonb, "
        . "'{\"iss\": \"https://pyjwt.example\", \"aud\": \"pgcloud-test\"}') = " . sqlq($claims) . "::jsonb");
    is($got, 't', "a PyJWT $alg token verifies in C with the claims PyJWT signed");
    my ($rc, $out, $err) = $node->psql('postgres',
        "SELECT auth.jwt_verify(" . sqlq(substr($py->{tokens}{$alg}, 0, -4) . 'AAAA') . ", " . sqlq($keys) . "::jsonb)");
    like($err, qr/"code": "invalid_token"/, "a PyJWT $alg token with a changed signature does not");
}

# --- 2. Our tokens verify in PyJWT, and deterministic signatures agree ---------
my $check = <<'PY';
import json, sys, jwt
data = json.load(open(sys.argv[1]))
ours = json.load(open(sys.argv[2]))
res = {}
for alg, tok in ours['tokens'].items():
    key = jwt.PyJWK(data['public'][alg], algorithm=alg).key if alg != 'HS256' else \
          jwt.PyJWK(data['public'][alg], algorithm='HS256').key
    try:
        claims = jwt.decode(tok, key, algorithms=[alg], audience='pgcloud-test', issuer='https://pyjwt.example')
        res[alg] = claims == data['claims']
    except Exception as e:
        res[alg] = 'error: %s' % e
    # Deterministic algorithms: PyJWT signs the same header and claims to the
    # same token (ASCII claims: PyJWT escapes non-ASCII, we keep UTF-8).
    if alg in ('HS256', 'RS256', 'EdDSA'):
        tok = ours['ascii'][alg]
        hdr = jwt.get_unverified_header(tok)
        payload = json.loads(jwt.api_jws.base64url_decode(tok.split('.')[1]))
        priv = jwt.PyJWK(data['private'][alg], algorithm=alg).key
        again = jwt.encode(payload, priv, algorithm=alg, headers={k: v for k, v in hdr.items() if k != 'alg'})
        res[alg + '-same'] = again == tok
# Platform tokens with api.jwks()
jwks = ours['jwks']
hdr = jwt.get_unverified_header(ours['platform'])
key = [k for k in jwks['keys'] if k['kid'] == hdr['kid']][0]
claims = jwt.decode(ours['platform'], jwt.PyJWK(key).key, algorithms=['ES256'], audience='pgcloud-api', issuer='pgcloud')
res['platform'] = claims['role'] == 'pgcloud_user' and 'sid' in claims and hdr['alg'] == 'ES256'
print(json.dumps(res, sort_keys=True))
PY
open($fh, '>', "$tmp/check.py") or die; print $fh $check; close $fh;

my %ours;
for my $alg (qw(HS256 RS256 ES256 EdDSA)) {
    $ours{tokens}{$alg} = $node->safe_psql('postgres',
        "SELECT auth.jwt_sign(" . sqlq($claims) . "::jsonb, " . sqlq($json->encode($py->{private}{$alg})) . "::jsonb)");
    $ours{ascii}{$alg} = $node->safe_psql('postgres',
        "SELECT auth.jwt_sign(" . sqlq($claims) . "::jsonb - 'n' || '{\"scope\": \"a b\", \"x\": [1.5, false, null]}', "
        . sqlq($json->encode($py->{private}{$alg})) . "::jsonb)");
}
$node->safe_psql('postgres', "SELECT pgcloud.set_policy('auth.dev_login_enabled', 'true')");
$ours{platform} = $node->safe_psql('postgres', "SELECT api.dev_login('interop\@example.com') ->> 'access_token'");
$ours{jwks} = $json->decode($node->safe_psql('postgres', 'SELECT api.jwks()'));
open($fh, '>', "$tmp/ours.json") or die; print $fh $json->encode(\%ours); close $fh;
my $verdict = `$python $tmp/check.py $tmp/pyjwt.json $tmp/ours.json`;
is($?, 0, 'the PyJWT check ran');
my $v = $json->decode($verdict || '{}');
for my $alg (qw(HS256 RS256 ES256 EdDSA)) {
    is($v->{$alg}, JSON::PP::true, "our $alg token verifies in PyJWT with the same claims");
}
for my $alg (qw(HS256 RS256 EdDSA)) {
    is($v->{"$alg-same"}, JSON::PP::true, "PyJWT signs the same $alg token byte for byte");
}
is($v->{platform}, JSON::PP::true, 'a platform access token verifies in PyJWT with the key api.jwks() publishes');

# --- 3. HS256 signed with the RSA public key PEM as secret ----------------------
$node->safe_psql('postgres', "SELECT api.admin_upsert_oidc_provider('https://pyjwt.example', 'pgcloud-test', "
    . sqlq($json->encode({ keys => [ $py->{public}{RS256} ] })) . "::jsonb)");
my ($rc, $out, $err) = $node->psql('postgres', "SELECT api.token_exchange(" . sqlq($py->{pem_attack}) . ")");
like($err, qr/"code": "invalid_token".*alg HS256 is not accepted here/, 'token exchange refuses HS256 signed with the RSA public key PEM');
($rc, $out, $err) = $node->psql('postgres', "SELECT auth.jwt_verify(" . sqlq($py->{pem_attack}) . ", "
    . sqlq($json->encode($py->{public}{RS256})) . "::jsonb)");
like($err, qr/alg HS256 does not match the key type RSA/, 'and the verifier never checks an HS256 token against an RSA key');
is($node->safe_psql('postgres', "SELECT (api.token_exchange(" . sqlq($py->{tokens}{RS256}) . ")) ? 'access_token'"), 't',
    'the genuine PyJWT RS256 ID token is exchanged');

# --- 4. The master key file and the sealed signing key -------------------------
my $keyfile = $node->data_dir . '/pgcloud.key';
ok(-f $keyfile, 'the master key was generated into the data directory');
is(sprintf('%04o', (stat $keyfile)[2] & 07777), '0600', 'with mode 0600');
my $kid = $node->safe_psql('postgres', "SELECT (auth.active_signing_key()).kid");
my $jwks_before = $node->safe_psql('postgres', 'SELECT api.jwks()');
$node->restart;
is($node->safe_psql('postgres', "SELECT auth.jwt_decode(api.dev_login('interop\@example.com') ->> 'access_token') #>> '{header,kid}'"),
    $kid, 'after a restart the same sealed key signs');
is($node->safe_psql('postgres', 'SELECT api.jwks()'), $jwks_before, 'and api.jwks() is unchanged');
my $dump = `pg_dump -h @{[$node->host]} -p @{[$node->port]} -d postgres -a -t auth.signing_keys 2>&1`;
like($dump, qr/$kid/, 'pg_dump keeps the signing keys (extension config table)');
my $priv_d = $py->{private}{ES256}{d};
unlike($node->safe_psql('postgres', 'SELECT string_agg(private_key::text, \',\') FROM auth.signing_keys'),
    qr/BEGIN|PRIVATE/, 'the stored private key is not PEM text');

# --- 5. Nothing of a token reaches the server log --------------------------------
my $sig = (split /\./, $py->{tokens}{ES256})[2];
$node->psql('postgres', "SELECT api.token_exchange(" . sqlq($py->{tokens}{ES256}) . ")");
my $log = slurp_file($node->logfile);
like($log, qr/invalid_token/, 'the refused exchange is in the log');
unlike($log, qr/\Q$sig\E/, 'the token itself is not');

$node->stop;
done_testing();
