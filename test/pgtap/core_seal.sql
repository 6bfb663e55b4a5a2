-- Sealed secrets: the master key stays outside the database.
-- services: core
BEGIN;
SELECT * FROM no_plan();

SELECT is(convert_from(pgcloud.unseal(pgcloud.seal('sk_live_secret'::bytea, 'test.ctx'), 'test.ctx'), 'UTF8'),
    'sk_live_secret', 'seal then unseal returns the secret');
SELECT isnt(pgcloud.seal('x'::bytea, 'test.ctx'), pgcloud.seal('x'::bytea, 'test.ctx'),
    'two seals of one value differ (random nonce)');
SELECT ok(position('sk_live_secret'::bytea IN pgcloud.seal('sk_live_secret'::bytea, 'test.ctx')) = 0,
    'the sealed value does not contain the plaintext');
SELECT throws_ok($$ SELECT pgcloud.unseal(pgcloud.seal('x'::bytea, 'one'), 'two') $$,
    'XX001', 'sealed value cannot be opened', 'a value sealed for another context cannot be opened');
-- (byte 20 flipped, not set to 0: a random byte that was 0 already would leave the value intact)
SELECT throws_ok($$ SELECT pgcloud.unseal(set_byte(s, 20, get_byte(s, 20) # 255), 'c')
                      FROM (SELECT pgcloud.seal('secret'::bytea, 'c') AS s) x $$,
    'XX001', 'sealed value cannot be opened', 'a tampered value cannot be opened');
SELECT throws_ok($$ SELECT pgcloud.unseal('\x00'::bytea, 'c') $$,
    'XX001', 'value is not a pgcloud sealed value', 'garbage is rejected');
SELECT ok(NOT has_function_privilege('pgcloud_user', 'pgcloud.unseal(bytea, text)', 'EXECUTE')
      AND NOT has_function_privilege('pgcloud_anon', 'pgcloud.seal(bytea, text)', 'EXECUTE'),
    'API roles cannot seal or unseal');

SELECT * FROM finish();
ROLLBACK;
