-- storage: grants, namespaces (names, per-user limit, isolation between
-- users), pre-signed URLs (validation, quotas before a PUT, the object
-- pending until a HEAD confirms it), the HEAD callback (stored, over the
-- byte quota, not yet there, missing), listing with keyset pagination,
-- deletion, idempotency, events and audit.
BEGIN;
SELECT * FROM no_plan();

SET LOCAL pgcloud.s3_endpoint = 'http://127.0.0.1:9';
SET LOCAL pgcloud.s3_region = 'eu-test-1';
SET LOCAL pgcloud.s3_bucket = 'tap-bucket';
SET LOCAL pgcloud.s3_access_key_id = 'AKIDTAP';
SET LOCAL pgcloud.s3_secret_access_key = 'tap-secret';
\set alice '''7a000000-0000-4000-8000-00000000000a'''
\set bob '''7b000000-0000-4000-8000-00000000000b'''

-- A user, with no idempotency key left from an earlier call.
CREATE FUNCTION pg_temp.as_user_without_key(sub text) RETURNS void LANGUAGE sql AS $$
    SELECT NULL::void FROM pg_temp.as_user(sub) a, set_config('request.headers', '{}', true) b
$$;
CREATE FUNCTION pg_temp.with_key(k text) RETURNS void LANGUAGE sql AS $$
    SELECT NULL::void FROM set_config('request.headers', jsonb_build_object('x-idempotency-key', k)::text, true)
$$;
-- The HEAD intent of an object and the executor's answer to it.
CREATE FUNCTION pg_temp.answer(p text, status int, headers jsonb) RETURNS void LANGUAGE sql AS $$
    SELECT storage.on_s3_result(o.check_intent_id, status, headers, '', jsonb_build_object('kind', 'confirm', 'object_id', o.id), true)
      FROM storage.objects o WHERE o.path = p AND o.state <> 'deleted'
$$;
CREATE FUNCTION pg_temp.state(p text) RETURNS text LANGUAGE sql AS $$
    SELECT state FROM storage.objects WHERE path = p ORDER BY created_at DESC LIMIT 1
$$;

-- ---- grants ------------------------------------------------------------
SELECT ok(NOT has_function_privilege('pgcloud_anon', 'api.presign(text, text, text, int)', 'EXECUTE')
      AND NOT has_function_privilege('pgcloud_anon', 'api.create_namespace(text)', 'EXECUTE')
      AND NOT has_function_privilege('pgcloud_service', 'api.list_objects(text, text, int, text)', 'EXECUTE'),
    'anonymous callers and services cannot use storage');
SELECT ok(has_function_privilege('pgcloud_user', 'api.presign(text, text, text, int)', 'EXECUTE')
      AND has_function_privilege('pgcloud_user', 'api.delete_object(text, text)', 'EXECUTE'), 'users can');
SELECT ok(NOT has_function_privilege('pgcloud_user', 'storage.presign_with(text, text, timestamptz, integer, text, text, text, text, text, boolean)', 'EXECUTE')
      AND NOT has_function_privilege('pgcloud_user', 'storage.presign_url(text, text, timestamptz, integer)', 'EXECUTE')
      AND NOT has_function_privilege('pgcloud_user', 'storage.on_s3_result(uuid, integer, jsonb, text, jsonb, boolean)', 'EXECUTE'),
    'users cannot call the signer or the callback directly');
SELECT ok(has_function_privilege('pgcloud_user', 'pgcloud.safe_path(text)', 'EXECUTE')
      AND has_function_privilege('pgcloud_service', 'pgcloud.safe_path(text)', 'EXECUTE'), 'pgcloud.safe_path is for every signed-in caller');
SELECT is_empty($$ SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = 'storage' AND has_table_privilege('pgcloud_user', c.oid, 'SELECT') $$,
    'users cannot read storage''s tables directly');

-- ---- namespaces ----------------------------------------------------------
SELECT is(pg_temp.error_of($$ SELECT api.create_namespace('x') $$), '{"code": "unauthenticated", "status": 401}',
    'no user, no namespace');
SELECT pg_temp.as_user_without_key(:alice);
SELECT is(api.create_namespace('photos') ->> 'name', 'photos', 'alice creates photos');
SELECT is((SELECT count(*)::int FROM pgcloud.outbox WHERE event_type = 'namespace.created' AND payload ->> 'name' = 'photos'), 1,
    'namespace.created announced');
SELECT is((SELECT count(*)::int FROM pgcloud.audit_logs WHERE action = 'storage.namespace_created' AND actor = :alice), 1, 'and audited');
SELECT is(pg_temp.error_of($$ SELECT api.create_namespace('photos') $$), '{"code": "namespace_exists", "status": 409}', 'twice: 409');
SELECT is(pg_temp.error_of($$ SELECT api.create_namespace('Photos') $$), '{"code": "namespace_invalid", "status": 400}', 'upper case: 400');
SELECT is(pg_temp.error_of($$ SELECT api.create_namespace('-x') $$), '{"code": "namespace_invalid", "status": 400}', 'leading dash: 400');
SELECT is(pg_temp.error_of($$ SELECT api.create_namespace('../x') $$), '{"code": "namespace_invalid", "status": 400}', 'a path: 400');
SELECT is(pg_temp.error_of($$ SELECT api.create_namespace(NULL) $$), '{"code": "namespace_invalid", "status": 400}', 'NULL: 400');
UPDATE pgcloud.policy_values SET value = '2' WHERE key = 'storage.max_namespaces_per_user';
SELECT lives_ok($$ SELECT api.create_namespace('docs') $$, 'a second one');
SELECT is(pg_temp.error_of($$ SELECT api.create_namespace('third') $$), '{"code": "namespace_limit_reached", "status": 409}',
    'the per-user limit holds');
SELECT pg_temp.as_user_without_key(:bob);
SELECT is(api.create_namespace('photos') ->> 'name', 'photos', 'bob may have his own photos');
SELECT is(jsonb_array_length(api.list_namespaces()), 1, 'bob sees only his namespace');

-- ---- pre-signed URLs: validation ----------------------------------------------
SELECT pg_temp.as_user_without_key(:alice);
SELECT is(pg_temp.error_of($$ SELECT api.presign('photos', 'a.txt', 'POST', 60) $$), '{"code": "presign_invalid", "status": 400}', 'POST: 400');
SELECT is(pg_temp.error_of($$ SELECT api.presign('photos', 'a.txt', 'PUT', 0) $$), '{"code": "presign_invalid", "status": 400}', '0 s: 400');
SELECT is(pg_temp.error_of($$ SELECT api.presign('photos', 'a.txt', 'PUT', 3601) $$), '{"code": "presign_invalid", "status": 400}',
    'longer than storage.presign_max_expires_seconds: 400');
SELECT is(pg_temp.error_of($$ SELECT api.presign('photos', 'a.txt', 'PUT', NULL) $$), '{"code": "presign_invalid", "status": 400}', 'no expiry: 400');
SELECT is(pg_temp.error_of($$ SELECT api.presign('photos', '../b/a.txt', 'PUT', 60) $$), '{"code": "path_invalid", "status": 400}', '..: 400');
SELECT is(pg_temp.error_of($$ SELECT api.presign('photos', E'a\uFF0F..\uFF0Fb', 'PUT', 60) $$), '{"code": "path_invalid", "status": 400}',
    'full-width slashes: 400');
SELECT is(pg_temp.error_of($$ SELECT api.presign('photos', NULL, 'PUT', 60) $$), '{"code": "path_invalid", "status": 400}', 'no path: 400');
SELECT is(pg_temp.error_of($$ SELECT api.presign('nope', 'a.txt', 'PUT', 60) $$), '{"code": "namespace_not_found", "status": 404}',
    'unknown namespace: 404');
SELECT is(pg_temp.error_of($$ SELECT api.presign('photos', 'a.txt', 'GET', 60) $$), '{"code": "object_not_found", "status": 404}',
    'GET of nothing: 404');
SELECT is((SELECT count(*)::int FROM storage.objects), 0, 'refusals write nothing');

-- ---- PUT: pending --------------------------------------------------------------
SELECT pg_temp.with_key('put-1');
CREATE TEMP TABLE put1 AS SELECT api.presign('photos', './cats/tom.jpg', 'put', 600) AS r;
SELECT alike((SELECT r ->> 'url' FROM put1),
    'http://127.0.0.1:9/tap-bucket/%/cats/tom.jpg?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDTAP\%2F%\%2Feu-test-1\%2Fs3\%2Faws4\_request&X-Amz-Date=%&X-Amz-Expires=600&X-Amz-SignedHeaders=host&X-Amz-Signature=%',
    'a SigV4 URL for the normalised path under the namespace id');
SELECT is((SELECT r ->> 'method' FROM put1), 'PUT', 'the method, upper case');
SELECT ok((SELECT (r ->> 'expires_at')::timestamptz BETWEEN now() + interval '599 s' AND clock_timestamp() + interval '601 s' FROM put1),
    'expires_at is 600 s ahead');
SELECT is(api.presign('photos', './cats/tom.jpg', 'put', 600), (SELECT r FROM put1), 'the same key returns the same URL');
SELECT is(pg_temp.error_of($$ SELECT api.presign('photos', 'cats/tom.jpg', 'PUT', 601) $$),
    '{"code": "idempotency_key_reused", "status": 422}', 'the same key with other arguments: 422');
SELECT pg_temp.as_user_without_key(:alice);
SELECT is(pg_temp.state('cats/tom.jpg'), 'pending', 'the object is pending');
SELECT is((SELECT count(*)::int FROM pgcloud.audit_logs WHERE action = 'storage.presigned_put'), 1, 'the PUT URL is audited once');
SELECT is(pg_temp.error_of($$ SELECT api.presign('photos', 'cats/tom.jpg', 'GET', 60) $$), '{"code": "object_not_found", "status": 404}',
    'no GET before it is stored');
SELECT is(api.list_objects('photos') -> 'objects' -> 0 ->> 'state', 'pending', 'listed as pending');

-- ---- confirmation ------------------------------------------------------------------
SELECT is(api.complete_upload('photos', 'cats/tom.jpg') ->> 'state', 'pending', 'complete_upload asks for a HEAD');
SELECT is((SELECT method || ' ' || target FROM pgcloud.http_intents i JOIN storage.objects o ON o.check_intent_id = i.id
            WHERE o.path = 'cats/tom.jpg'), 'HEAD s3', 'a HEAD intent for target s3');
SELECT alike((SELECT i.path FROM pgcloud.http_intents i JOIN storage.objects o ON o.check_intent_id = i.id WHERE o.path = 'cats/tom.jpg'),
    '/%/cats/tom.jpg', 'its path is the key, without any credential');
SELECT pg_temp.answer('cats/tom.jpg', 404, '{}');
SELECT is(pg_temp.state('cats/tom.jpg'), 'pending', 'a 404 while the URL is valid: still pending');
SELECT storage.request_check(o) FROM storage.objects o WHERE o.path = 'cats/tom.jpg';
SELECT pg_temp.answer('cats/tom.jpg', 200, '{"content-length": "1234", "etag": "\"abc\"", "content-type": "image/jpeg"}');
SELECT is((SELECT state || ' ' || size || ' ' || etag || ' ' || content_type FROM storage.objects WHERE path = 'cats/tom.jpg'),
    'stored 1234 "abc" image/jpeg', 'a 200 stores it with size, ETag and type');
SELECT is((SELECT payload ->> 'size' FROM pgcloud.outbox WHERE event_type = 'object.stored'), '1234', 'object.stored announced');
SELECT pg_temp.answer('cats/tom.jpg', 200, '{"content-length": "99"}');
SELECT is((SELECT size FROM storage.objects WHERE path = 'cats/tom.jpg'), 1234::bigint, 'a late answer changes nothing');
SELECT alike(api.presign('photos', 'cats/tom.jpg', 'GET', 60) ->> 'url', '%X-Amz-Signature=%', 'now a GET URL');
SELECT alike(api.presign('photos', 'cats/tom.jpg', 'HEAD', 60) ->> 'url', '%X-Amz-Signature=%', 'and a HEAD URL');

-- ---- isolation ------------------------------------------------------------------
SELECT pg_temp.as_user_without_key(:bob);
SELECT is(api.list_objects('photos') -> 'objects', '[]', 'bob''s photos are not alice''s');
SELECT is(pg_temp.error_of($$ SELECT api.presign('photos', 'cats/tom.jpg', 'GET', 60) $$), '{"code": "object_not_found", "status": 404}',
    'bob cannot get a URL for alice''s object');
SELECT is(pg_temp.error_of($$ SELECT api.delete_object('docs', 'cats/tom.jpg') $$), '{"code": "namespace_not_found", "status": 404}',
    'nor reach alice''s other namespace');
SELECT pg_temp.as_user_without_key(:alice);

-- ---- quotas ----------------------------------------------------------------------
UPDATE pgcloud.policy_values SET value = '2' WHERE key = 'storage.max_objects_per_namespace';
SELECT lives_ok($$ SELECT api.presign('photos', 'cats/felix.jpg', 'PUT', 60) $$, 'a second object');
SELECT is(pg_temp.error_of($$ SELECT api.presign('photos', 'cats/third.jpg', 'PUT', 60) $$), '{"code": "quota_exceeded", "status": 409}',
    'a third is over the object quota: refused before signing');
SELECT lives_ok($$ SELECT api.presign('photos', 'cats/tom.jpg', 'PUT', 60) $$, 'overwriting one is fine');
SELECT is(pg_temp.state('cats/tom.jpg'), 'pending', 'the overwritten object is pending again');
UPDATE pgcloud.policy_values SET value = '100000' WHERE key = 'storage.max_objects_per_namespace';
UPDATE pgcloud.policy_values SET value = '2000' WHERE key = 'storage.max_bytes_per_namespace';
SELECT storage.request_check(o) FROM storage.objects o WHERE o.path IN ('cats/tom.jpg', 'cats/felix.jpg') AND o.state = 'pending';
SELECT pg_temp.answer('cats/tom.jpg', 200, '{"content-length": "1500", "etag": "\"t2\""}');
SELECT pg_temp.answer('cats/felix.jpg', 200, '{"content-length": "1500", "etag": "\"f1\""}');
SELECT is(pg_temp.state('cats/felix.jpg'), 'deleted', 'an upload over the byte quota is deleted again');
SELECT is((SELECT delete_reason FROM storage.objects WHERE path = 'cats/felix.jpg'), 'quota_exceeded', '... because of the quota');
SELECT is((SELECT count(*)::int FROM pgcloud.http_intents WHERE target = 's3' AND method = 'DELETE'), 1, 'its bytes are deleted from S3');
SELECT lives_ok($$ SELECT api.presign('photos', 'cats/more.jpg', 'PUT', 60) $$, '1500 of 2000 bytes used: a PUT is still signed');
UPDATE pgcloud.policy_values SET value = '1500' WHERE key = 'storage.max_bytes_per_namespace';
SELECT is(pg_temp.error_of($$ SELECT api.presign('photos', 'cats/most.jpg', 'PUT', 60) $$), '{"code": "quota_exceeded", "status": 409}',
    'at the byte limit: refused before signing');
UPDATE pgcloud.policy_values SET value = '10737418240' WHERE key = 'storage.max_bytes_per_namespace';

-- ---- listing ---------------------------------------------------------------------
SELECT api.presign('photos', p, 'PUT', 60) FROM unnest(ARRAY['dogs/a', 'dogs/b', 'dogs/c', 'dogs/B']) p;
SELECT is(api.list_objects('photos', 'dogs/', 2) -> 'objects', (SELECT jsonb_agg(x) FROM (
           SELECT storage.object_json(o, n) x FROM storage.objects o JOIN storage.namespaces n ON n.id = o.namespace_id
            WHERE o.path IN ('dogs/B', 'dogs/a') ORDER BY o.path COLLATE "C") y),
    'first page: byte order (B before a), two');
SELECT is(api.list_objects('photos', 'dogs/', 2) ->> 'next_after', 'dogs/a', 'next_after is the last path');
SELECT is((SELECT jsonb_agg(o ->> 'path') FROM jsonb_array_elements(api.list_objects('photos', 'dogs/', 2, 'dogs/a') -> 'objects') o),
    '["dogs/b", "dogs/c"]', 'second page');
SELECT is(api.list_objects('photos', 'dogs/', 2, 'dogs/c') -> 'objects', '[]', 'past the end: empty');
SELECT is(api.list_objects('photos', 'dogs/', 2, 'dogs/c') -> 'next_after', 'null', '... and no next page');
SELECT is(pg_temp.error_of($$ SELECT api.list_objects('photos', '', 0) $$), '{"code": "invalid_argument", "status": 400}', 'limit 0: 400');
SELECT is(pg_temp.error_of($$ SELECT api.list_objects('photos', '', 1001) $$), '{"code": "invalid_argument", "status": 400}',
    'over storage.list_max: 400');
SELECT is(pg_temp.error_of($$ SELECT api.list_objects('photos', E'a\nb') $$), '{"code": "invalid_argument", "status": 400}',
    'a control character in the prefix: 400');

-- ---- deletion ----------------------------------------------------------------------
SELECT is(api.delete_object('photos', 'dogs/a') ->> 'state', 'deleted', 'deleted');
SELECT is((SELECT count(*)::int FROM pgcloud.outbox WHERE event_type = 'object.deleted' AND payload ->> 'path' = 'dogs/a'), 1,
    'object.deleted announced');
SELECT is((SELECT count(*)::int FROM pgcloud.http_intents WHERE target = 's3' AND method = 'DELETE'), 2, 'an S3 DELETE written');
SELECT is(pg_temp.error_of($$ SELECT api.delete_object('photos', 'dogs/a') $$), '{"code": "object_not_found", "status": 404}',
    'a second delete: 404');
SELECT lives_ok($$ SELECT api.presign('photos', 'dogs/a', 'PUT', 60) $$, 'the path can be used again');
SELECT is(api.presign('photos', 'dogs/b', 'DELETE', 60) ->> 'method', 'DELETE', 'a DELETE URL');
SELECT is(pg_temp.state('dogs/b'), 'deleted', '... marks the object deleted');
SELECT is((SELECT delete_reason FROM storage.objects WHERE path = 'dogs/b'), 'presigned_delete', '... with its reason');

-- ---- missing ----------------------------------------------------------------------
SELECT storage.request_check(o) FROM storage.objects o WHERE o.path = 'dogs/c';
UPDATE storage.objects SET upload_expires_at = now() - interval '1 hour' WHERE path = 'dogs/c';
SELECT pg_temp.answer('dogs/c', 404, '{}');
SELECT is(pg_temp.state('dogs/c'), 'missing', 'a 404 after the URL expired and the grace: missing');
SELECT is((SELECT result FROM pgcloud.audit_logs WHERE action = 'storage.object_missing'), 'failed', 'audited');
UPDATE storage.objects SET next_check_at = now() - interval '1 s', check_intent_id = NULL WHERE state = 'pending';
SELECT is(storage.check_pending(), (SELECT count(*)::int FROM storage.objects WHERE state = 'pending'),
    'the periodic check asks for a HEAD of every due pending object');
SELECT is(storage.check_pending(), 0, '... once');

-- ---- deleting a namespace -------------------------------------------------------------
SELECT is(pg_temp.error_of($$ SELECT api.delete_namespace('photos') $$), '{"code": "namespace_not_empty", "status": 409}',
    'not while it holds objects');
SELECT is(api.delete_namespace('docs') ->> 'name', 'docs', 'an empty one goes');
SELECT is((SELECT count(*)::int FROM pgcloud.outbox WHERE event_type = 'namespace.deleted'), 1, 'namespace.deleted announced');
SELECT is(pg_temp.error_of($$ SELECT api.list_objects('docs') $$), '{"code": "namespace_not_found", "status": 404}', 'and is gone');

-- ---- the state machine ---------------------------------------------------------------
SELECT throws_ok($$ UPDATE storage.objects SET state = 'stored' WHERE path = 'dogs/b' $$, NULL, NULL,
    'a deleted object cannot come back');

-- ---- the user read model ---------------------------------------------------------------
SELECT pgcloud.deliver('storage', gen_random_uuid(), 'user.created', 'user', :alice, jsonb_build_object('user_id', :alice, 'email', 'alice@example.test'), '{}');
SELECT is((SELECT email FROM storage.namespace_usage WHERE name = 'photos' AND owner_id = :alice), 'alice@example.test',
    'operators see the owner in storage.namespace_usage');

SELECT * FROM finish();
ROLLBACK;
