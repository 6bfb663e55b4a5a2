-- releases: per-user keys (RLS), limits, idempotency, access minting rules,
-- the event read model, the CA and grants.
BEGIN;
SELECT * FROM no_plan();

\set k1 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMOwPp55P+3rXvN52Am9GxAqi24MMrCru+LnotcYcsbn test-ed25519'
\set k2 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGH0adccsKaI+zwzZ0Oc3/JiKzJtNi+7cBLNC/z21t0I tap-key-2'
\set k3 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE8ENVC85yqnk7SrdklOouxLbx8NLQOzrBp0eHiuQDKH tap-key-3'
\set weak 'ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDgwESLYD7sMIxKQ2boKVq2/SlJ9dOno6trXDnj6OSNFOSmAMZSKpArsIlMFk9bdxqXZ7DRdd1URp7h1nA13GDPH6mX8hBqwaT4bHExDz93Tcf9qeX+YLbTlzpKh28QYXgSNs5ITyyv5UBnB8VrbZxkAu+9UP2SyMFduoa0wNuP3w== test-rsab1024'
\set p384 'ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBF1W5qdZ7frSTrEMmbf83nw2Bd1WyOH6aSDhqnCV33LpUWQmPMNBYZxgxQoWJL9pCkdn9qvAwAg0KKW0ZGI3dhrXD4bv860xsX1TFYfljdY75QQsfGVLl91qvYpu3G5jFw== test-ecdsab384'
\set alice '''aaaaaaaa-0000-4000-8000-000000000001'''
\set bob '''bbbbbbbb-0000-4000-8000-000000000002'''
\set carol '''cccccccc-0000-4000-8000-000000000003'''
\set a1 '''a1a1a1a1-0000-4000-8000-000000000001'''
\set a2 '''a2a2a2a2-0000-4000-8000-000000000002'''
\set a3 '''a3a3a3a3-0000-4000-8000-000000000003'''
\set a4 '''a4a4a4a4-0000-4000-8000-000000000004'''
\set a5 '''a5a5a5a5-0000-4000-8000-000000000005'''
\set c1 '''c1c1c1c1-0000-4000-8000-000000000001'''


-- ---- read model through releases.on_event ------------------------------
SELECT pg_temp.handle('releases', 'user.created', :alice, jsonb_build_object('user_id', :alice, 'email', 'alice@example.com',
                  'posix_username', 'alice', 'uid', 2001, 'gid', 2001));
SELECT pg_temp.handle('releases', 'user.created', :bob, jsonb_build_object('user_id', :bob, 'email', 'bob@example.com',
                  'posix_username', 'bob', 'uid', 2002, 'gid', 2002));
SELECT pg_temp.handle('releases', 'user.created', :carol, jsonb_build_object('user_id', :carol, 'email', 'carol@example.com'));
SELECT pg_temp.handle('releases', 'allocation.activated', :a1, jsonb_build_object('allocation_id', :a1, 'user_id', :alice,
                  'sku', 'h100x1', 'hostname', 'gpu-01', 'started_at', now() - interval '1 hour',
                  'ssh_principal', 'pgcloud-alloc-' || :a1));
SELECT pg_temp.handle('releases', 'allocation.activated', :a2, jsonb_build_object('allocation_id', :a2, 'user_id', :bob,
                  'sku', 'h100x1', 'hostname', 'gpu-02'));
SELECT pg_temp.handle('releases', 'allocation.activated', :a3, jsonb_build_object('allocation_id', :a3, 'user_id', :alice, 'sku', 'a10'));
SELECT pg_temp.handle('releases', 'allocation.released', :a3, jsonb_build_object('allocation_id', :a3, 'user_id', :alice,
                  'ended_at', now()));
SELECT pg_temp.handle('releases', 'allocation.activated', :a4, jsonb_build_object('allocation_id', :a4, 'user_id', :alice,
                  'ends_at', date_trunc('second', now()) + interval '300 seconds', 'ssh_principal', 'pgcloud-alloc-' || :a4));
-- Activated without a principal (a node deployed without pgcloud's AuthorizedPrincipalsFile).
SELECT pg_temp.handle('releases', 'allocation.activated', 'a6a6a6a6-0000-4000-8000-000000000006',
                  jsonb_build_object('allocation_id', 'a6a6a6a6-0000-4000-8000-000000000006', 'user_id', :alice));
SELECT pg_temp.handle('releases', 'allocation.activated', :a5, jsonb_build_object('allocation_id', :a5, 'user_id', :alice));
SELECT pg_temp.handle('releases', 'allocation.failed', :a5, jsonb_build_object('allocation_id', :a5));
SELECT pg_temp.handle('releases', 'allocation.activated', :c1, jsonb_build_object('allocation_id', :c1, 'user_id', :carol));
SELECT pg_temp.handle('releases', 'payment.succeeded', 'x', '{"amount": 1}');

SELECT is((SELECT posix_username || '/' || uid || '/' || gid FROM releases.users WHERE user_id = :alice),
    'alice/2001/2001', 'user.created fills the users read model');
SELECT is((SELECT posix_username FROM releases.users WHERE user_id = :carol), NULL,
    'a user without a POSIX username is kept without one');
SELECT is((SELECT array_agg(state ORDER BY allocation_id) FROM releases.allocations
             WHERE allocation_id IN (:a1, :a2, :a3, :a4, :a5, :c1)),
    ARRAY['active', 'active', 'ended', 'active', 'ended', 'active'],
    'allocation.activated makes allocations active; released and failed end them');
SELECT is((SELECT hostname || ' ' || sku FROM releases.allocations WHERE allocation_id = :a1), 'gpu-01 h100x1',
    'the allocation carries its node hostname and sku');
SELECT pg_temp.handle('releases', 'allocation.activated', :a3, jsonb_build_object('allocation_id', :a3, 'user_id', :alice));
SELECT is((SELECT state FROM releases.allocations WHERE allocation_id = :a3), 'ended',
    'a late allocation.activated does not revive an ended allocation');
SELECT pg_temp.handle('releases', 'allocation.released', 'dddddddd-0000-4000-8000-000000000000', '{}');
SELECT is((SELECT state FROM releases.allocations WHERE allocation_id = 'dddddddd-0000-4000-8000-000000000000'), 'ended',
    'a release of an unknown allocation is recorded (the aggregate id names it)');
SELECT is(pg_temp.error_of($$ SELECT pg_temp.handle('releases', 'user.created', 'x', '{"user_id": "not-a-uuid"}') $$),
    '{"code": "invalid_event", "status": 400}', 'a malformed payload is invalid_event (retried, then dead-lettered)');
SELECT is(pg_temp.error_of($$ SELECT pg_temp.handle('releases', 'user.created', 'x',
        '{"user_id": "eeeeeeee-0000-4000-8000-000000000000", "posix_username": "Robert; rm"}') $$),
    '{"code": "invalid_event", "status": 400}', 'a POSIX username that is not one is refused');
SELECT is(pg_temp.error_of($$ UPDATE releases.allocations SET state = 'active' WHERE allocation_id = 'a3a3a3a3-0000-4000-8000-000000000003' $$),
    '{"code": "invalid_state_transition", "status": 409}', 'ended is terminal (transition guard)');

-- ---- keys ------------------------------------------------------------------
SELECT pgcloud.set_policy('releases.max_keys_per_user', '2');

SELECT pg_temp.as_user(:alice);
SET LOCAL ROLE pgcloud_user;
SELECT is((SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(api.add_ssh_key(:'k1', 'first')) k),
    ARRAY['bits', 'created_at', 'fingerprint', 'id', 'name', 'type'], 'add_ssh_key returns id, fingerprint, type, bits, name, created_at');
SELECT is(pg_temp.error_of(format('SELECT api.add_ssh_key(%L)', :'k1')), '{"code": "ssh_key_duplicate", "status": 409}',
    'the same key twice for one user is 409 ssh_key_duplicate');
SET LOCAL request.headers = '{"x-idempotency-key": "add-k2"}';
SELECT api.add_ssh_key(:'k2') ->> 'id' AS first_id \gset
SELECT is(api.add_ssh_key(:'k2') ->> 'id', :'first_id', 'a retried add with the same idempotency key returns the first response');
SELECT is(jsonb_array_length(api.list_ssh_keys()), 2, '... and adds nothing');
RESET request.headers;
SELECT is(pg_temp.error_of(format('SELECT api.add_ssh_key(%L)', :'k3')), '{"code": "ssh_key_limit_reached", "status": 409}',
    'at releases.max_keys_per_user keys a further add is 409 ssh_key_limit_reached');
SELECT is(pg_temp.error_of(format('SELECT api.add_ssh_key(%L)', :'weak')), '{"code": "ssh_key_too_weak", "status": 400}',
    'an RSA-1024 key is 400 ssh_key_too_weak');

SELECT pg_temp.as_user(:bob);
SELECT is(api.add_ssh_key(:'k1') ->> 'fingerprint', 'SHA256:SObfRdTHHEyFYm2/yxczcCN6KtEYHSlSERjaCetHK0s',
    'another user may register the same key');
SELECT is(jsonb_array_length(api.list_ssh_keys()), 1, 'a user lists only their own keys');
SELECT is(pg_temp.error_of(format('SELECT api.delete_ssh_key(%L)', :'first_id')), '{"code": "ssh_key_not_found", "status": 404}',
    'deleting another user''s key is 404, as for an unknown key');
RESET ROLE;
SELECT is((SELECT count(*)::int FROM releases.ssh_keys WHERE id = :'first_id'), 1, '... and the key is still there');

-- Row-level security holds for the owning role itself (FORCE).
SELECT ok((SELECT relrowsecurity AND relforcerowsecurity FROM pg_class WHERE oid = 'releases.ssh_keys'::regclass),
    'releases.ssh_keys has forced row-level security');
SET LOCAL ROLE pgcloud_svc_releases;
SELECT is((SELECT count(*)::int FROM releases.ssh_keys), 1, 'the service role sees only the request user''s rows');
RESET ROLE;
SELECT throws_ok(format($q$ SET LOCAL ROLE pgcloud_svc_releases; INSERT INTO releases.ssh_keys (user_id, key_type, bits, fingerprint, public_key) VALUES (%L, 'ssh-ed25519', 256, 'SHA256:3k/7llW3Agb2i3B84zb/T3leMrcgXt5kFEztrup1/3c', 'x') $q$, :alice),
    '42501', NULL, 'a row for another user cannot be written under RLS');
RESET ROLE;

SELECT pg_temp.as_user(:alice);
SET LOCAL ROLE pgcloud_user;
SELECT is(api.delete_ssh_key(:'first_id') ->> 'deleted', 'true', 'a user deletes their own key');
SELECT is(jsonb_array_length(api.list_ssh_keys()), 1, '... which leaves the list');
RESET ROLE;
SELECT is((SELECT array_agg(event_type ORDER BY id) FROM pgcloud.outbox WHERE aggregate_type = 'ssh_key'
             AND payload ->> 'user_id' IN (:alice, :bob)),
    ARRAY['ssh_key.added', 'ssh_key.added', 'ssh_key.added', 'ssh_key.deleted'], 'ssh_key.added and ssh_key.deleted are emitted');
SELECT is((SELECT payload ->> 'fingerprint' FROM pgcloud.outbox WHERE event_type = 'ssh_key.deleted'
             AND payload ->> 'user_id' = :alice),
    'SHA256:3k/7llW3Agb2i3B84zb/T3leMrcgXt5kFEztrup1/3c', 'the deletion event names the key''s fingerprint');
SELECT is((SELECT count(*)::int FROM pgcloud.audit_logs WHERE action IN ('ssh_key.added', 'ssh_key.deleted') AND actor IN (:alice, :bob)
             AND details ? 'fingerprint' AND details::text NOT LIKE '%AAAA%'), 4,
    'adds and deletes are audited with fingerprints and without key material');

-- ---- minting ---------------------------------------------------------------
SELECT pg_temp.as_user(:alice);
SET LOCAL ROLE pgcloud_user;
SELECT api.mint_access(:a1, :'k1') AS m1 \gset
SELECT ok(:'m1'::jsonb ->> 'certificate' ~ '^ssh-ed25519-cert-v01@openssh\.com AAAA[A-Za-z0-9+/]+=* alice@pgcloud-[0-9]+$',
    'mint_access returns one OpenSSH certificate line of the key''s type');
SELECT is(:'m1'::jsonb -> 'principals', jsonb_build_array('pgcloud-alloc-' || :a1),
    'the one principal is the allocation''s own, not the POSIX username (which every node''s account would take)');
SELECT is(:'m1'::jsonb ->> 'login', 'alice', 'the login is the POSIX account the deploy created');
SELECT is(api.mint_access(:a4, :'k1') -> 'principals', jsonb_build_array('pgcloud-alloc-' || :a4),
    'another allocation of the same user: another principal');
SELECT is(pg_temp.error_of(format('SELECT api.mint_access(%L, %L)', 'a6a6a6a6-0000-4000-8000-000000000006', :'k1')),
    '{"code": "access_principal_missing", "status": 409}',
    'an allocation whose node has no principal gets no certificate (never one valid on every node)');
SELECT is(:'m1'::jsonb ->> 'key_id', format('pgcloud user=%s allocation=%s', :alice, :a1), 'the key id names user and allocation');
SELECT is(((:'m1'::jsonb ->> 'valid_before')::timestamptz - (:'m1'::jsonb ->> 'valid_after')::timestamptz),
    interval '960 seconds', 'valid for releases.cert_ttl_seconds (900) after a clock-skew allowance (60)');
SELECT ok((:'m1'::jsonb ->> 'valid_before')::timestamptz BETWEEN now() + interval '899 seconds' AND now() + interval '900 seconds',
    'valid_before is now + ttl');
SELECT ok(api.mint_access(:a1, :'p384') ->> 'certificate' LIKE 'ecdsa-sha2-nistp384-cert-v01@openssh.com %',
    'an ECDSA key gets an ECDSA certificate');
SELECT is((SELECT count(DISTINCT (r ->> 'serial')::bigint)::int
             FROM (SELECT api.mint_access(:a1, :'k1') UNION ALL SELECT api.mint_access(:a1, :'k1')) t(r)), 2,
    'every certificate has its own serial');
SELECT is((api.mint_access(:a4, :'k1') ->> 'valid_before')::timestamptz, date_trunc('second', now()) + interval '300 seconds',
    'never valid past the allocation''s known end');
SET LOCAL request.headers = '{"x-idempotency-key": "mint-1"}';
SELECT is(api.mint_access(:a1, :'k2') ->> 'serial', api.mint_access(:a1, :'k2') ->> 'serial',
    'a retried mint with the same idempotency key returns the same certificate');
RESET request.headers;
SELECT is(pg_temp.error_of(format('SELECT api.mint_access(%L, %L)', :a2, :'k1')), '{"code": "allocation_not_found", "status": 404}',
    'someone else''s allocation is 404');
SELECT is(pg_temp.error_of(format('SELECT api.mint_access(%L, %L)', 'ffffffff-0000-4000-8000-000000000000', :'k1')),
    '{"code": "allocation_not_found", "status": 404}', 'an unknown allocation is 404 too');
SELECT is(pg_temp.error_of(format('SELECT api.mint_access(%L, %L)', :a3, :'k1')), '{"code": "allocation_not_active", "status": 409}',
    'a released allocation is 409 allocation_not_active');
SELECT is(pg_temp.error_of(format('SELECT api.mint_access(%L, %L)', :a5, :'k1')), '{"code": "allocation_not_active", "status": 409}',
    'a failed allocation is 409 allocation_not_active');
SELECT is(pg_temp.error_of(format('SELECT api.mint_access(%L, %L)', :a1, :'weak')), '{"code": "ssh_key_too_weak", "status": 400}',
    'minting checks the key like add_ssh_key');
SELECT pg_temp.as_user(:carol);
SELECT is(pg_temp.error_of(format('SELECT api.mint_access(%L, %L)', :c1, :'k1')), '{"code": "posix_identity_missing", "status": 409}',
    'a user without a POSIX username cannot get a certificate');
RESET ROLE;

SELECT pg_temp.handle('releases', 'allocation.released', :a1, jsonb_build_object('allocation_id', :a1, 'user_id', :alice));
SELECT pg_temp.as_user(:alice);
SET LOCAL ROLE pgcloud_user;
SELECT is(pg_temp.error_of(format('SELECT api.mint_access(%L, %L)', :a1, :'k1')), '{"code": "allocation_not_active", "status": 409}',
    'after allocation.released no certificate is minted');
RESET ROLE;

SELECT is((SELECT count(*)::int FROM releases.certificates WHERE user_id = :alice), 7, 'every minted certificate is recorded');
SELECT is((SELECT principals FROM releases.certificates WHERE serial = (:'m1'::jsonb ->> 'serial')::bigint),
    ARRAY['pgcloud-alloc-' || :a1], 'the certificate record names the principal');
SELECT is((SELECT count(*)::int FROM pgcloud.outbox WHERE event_type = 'access.minted'
             AND payload ->> 'user_id' = :alice), 7, 'access.minted is emitted for each');
SELECT is((SELECT count(*)::int FROM pgcloud.audit_logs WHERE action = 'access.minted' AND actor = :alice
             AND details ? 'key_fingerprint' AND details::text NOT LIKE '%AAAA%'), 7,
    'minting is audited with fingerprints and without key material');
SELECT throws_ok($$ UPDATE releases.certificates SET valid_before = valid_before + interval '1 day' $$, NULL, NULL,
    'the certificate record is append-only');

-- ---- the CA ------------------------------------------------------------------
SELECT is((SELECT count(*)::int FROM releases.ssh_ca_keys WHERE retired_at IS NULL), 1, 'one current CA key');
SELECT set_config('request.jwt.claims', '{"role": "pgcloud_anon"}', true);
SET LOCAL ROLE pgcloud_anon;
SELECT api.ssh_ca_public_key() AS ca \gset
RESET ROLE;
SELECT is(:'ca', (SELECT public_key FROM releases.ssh_ca_keys WHERE retired_at IS NULL),
    'anonymous callers get the CA public key');
SELECT is(:'m1'::jsonb ->> 'ca_fingerprint', (SELECT fingerprint FROM releases.ssh_ca_keys WHERE retired_at IS NULL),
    'certificates are signed by the published CA');
SELECT ok(position((SELECT public_blob FROM releases.ssh_ca_keys WHERE retired_at IS NULL)
                   IN decode(split_part(:'m1'::jsonb ->> 'certificate', ' ', 2), 'base64')) > 0,
    'the certificate embeds the CA public key as its signature key');
SELECT is((SELECT length(pgcloud.unseal(private_sealed, 'releases.ssh_ca')) FROM releases.ssh_ca_keys WHERE retired_at IS NULL),
    32, 'the CA private key is stored sealed (opens only for context releases.ssh_ca)');
SELECT throws_ok($$ SELECT pgcloud.unseal(private_sealed, 'other') FROM releases.ssh_ca_keys $$, 'XX001', NULL,
    '... and not for another context');

SELECT pg_temp.as_user(:alice);
SET LOCAL ROLE pgcloud_user;
SELECT throws_ok('SELECT api.admin_rotate_ssh_ca()', '42501', NULL, 'users cannot rotate the CA');
RESET ROLE;
SELECT set_config('request.jwt.claims', '{"role": "pgcloud_admin", "sub": "ad000000-0000-4000-8000-000000000000"}', true);
SET LOCAL ROLE pgcloud_admin;
SELECT api.admin_rotate_ssh_ca() AS rot \gset
RESET ROLE;
SELECT is(:'rot'::jsonb ->> 'previous_fingerprint', :'m1'::jsonb ->> 'ca_fingerprint', 'rotation retires the current CA key');
SELECT isnt(:'rot'::jsonb ->> 'fingerprint', :'rot'::jsonb ->> 'previous_fingerprint', '... for a new one');
SELECT is((SELECT public_key FROM releases.ssh_ca_keys WHERE retired_at IS NULL), :'rot'::jsonb ->> 'public_key',
    'the new key is the one published');
SELECT is((SELECT count(*)::int FROM pgcloud.audit_logs WHERE action = 'ssh_ca.rotated'
             AND details ->> 'previous_fingerprint' = :'m1'::jsonb ->> 'ca_fingerprint'), 1, 'rotation is audited');

-- ---- grants ------------------------------------------------------------------
SELECT is((SELECT array_agg(p.oid::regprocedure::text ORDER BY 1) FROM pg_proc p
            JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_roles r ON r.oid = p.proowner
           WHERE n.nspname = 'api' AND r.rolname = 'pgcloud_svc_releases'
             AND has_function_privilege('pgcloud_anon', p.oid, 'EXECUTE')),
    ARRAY['api.ssh_ca_public_key()'], 'anon may call only api.ssh_ca_public_key()');
SELECT ok(has_function_privilege('pgcloud_user', 'api.add_ssh_key(text, text)', 'EXECUTE')
      AND has_function_privilege('pgcloud_user', 'api.list_ssh_keys()', 'EXECUTE')
      AND has_function_privilege('pgcloud_user', 'api.delete_ssh_key(uuid)', 'EXECUTE')
      AND has_function_privilege('pgcloud_user', 'api.mint_access(uuid, text)', 'EXECUTE')
      AND NOT has_function_privilege('pgcloud_user', 'api.admin_rotate_ssh_ca()', 'EXECUTE')
      AND has_function_privilege('pgcloud_admin', 'api.admin_rotate_ssh_ca()', 'EXECUTE'),
    'users may manage keys and mint; only admins rotate the CA');
SELECT is_empty($$
    SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE n.nspname = 'releases'
       AND (has_function_privilege('pgcloud_anon', p.oid, 'EXECUTE') OR has_function_privilege('pgcloud_user', p.oid, 'EXECUTE')
         OR has_function_privilege('pgcloud_admin', p.oid, 'EXECUTE') OR has_function_privilege('pgcloud_service', p.oid, 'EXECUTE'))
$$, 'no API role may call the service''s internal functions (sign_certificate, the on_<event> handlers, ...)');
SELECT ok(NOT has_table_privilege('pgcloud_user', 'releases.ssh_keys', 'SELECT')
      AND NOT has_table_privilege('pgcloud_anon', 'releases.ssh_ca_keys', 'SELECT'),
    'API roles cannot read the service tables');

SELECT * FROM finish();
ROLLBACK;
