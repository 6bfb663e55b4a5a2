-- releases: SSH public key parsing, fingerprints and every rejection, through
-- api.add_ssh_key() as a signed-in user. The keys below were made with
-- ssh-keygen; the fingerprints expected are those `ssh-keygen -lf` printed.
\set VERBOSITY default
\set SHOW_CONTEXT never
CREATE FUNCTION pg_temp.b64(b bytea) RETURNS text LANGUAGE sql IMMUTABLE
    AS $$ SELECT translate(encode(b, 'base64'), E'\n', '') $$;
CREATE FUNCTION pg_temp.blob(k text) RETURNS bytea LANGUAGE sql IMMUTABLE
    AS $$ SELECT decode(split_part(k, ' ', 2), 'base64') $$;
\set ed25519 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMOwPp55P+3rXvN52Am9GxAqi24MMrCru+LnotcYcsbn test-ed25519'
\set ecdsab256 'ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBGQz35tF/sQEqiX4N9WFW167aNlFQNREuIoGrHRqNDwNVhKKSIA38DrErk8nTzxNVJIeHvM1a3M/YgmdUux/1U8= test-ecdsab256'
\set ecdsab384 'ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBF1W5qdZ7frSTrEMmbf83nw2Bd1WyOH6aSDhqnCV33LpUWQmPMNBYZxgxQoWJL9pCkdn9qvAwAg0KKW0ZGI3dhrXD4bv860xsX1TFYfljdY75QQsfGVLl91qvYpu3G5jFw== test-ecdsab384'
\set ecdsab521 'ecdsa-sha2-nistp521 AAAAE2VjZHNhLXNoYTItbmlzdHA1MjEAAAAIbmlzdHA1MjEAAACFBABpG+EQy/xffloA1ueY9AJpJ0rsPx1TyvMOWQHRZTWN+Fp+vCRB2D8z4ZuLwAV+auDTvcjRqvkrylEkwGkLxTXE+wC9WSZ4v656q9xxJztpcInmAHtZFSbsaafS5GRtftoUfUtLpqYuG254W7ROfTz+sDbRg66Pp3++nInLflD+zdrgBA== test-ecdsab521'
\set rsab2048 'ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDD6216wnupNaCWYFHbzO3wT6ITUHEhmktKS6doYtxZOSiKHkiQu+7FnfV3lNlQN4RjipBGuqlJOkFmkHeeULO4QihqY2/K7Mm4v2aLtvEHMJJKomF/9JnxGrTPjLSenz1WO6JIy5dJ+BtP0YY2N7Fvoptq144d1/zUY/FZF7WZqwsqMfObKGPThdoPmepjHoT2pRIcmqcYiOC/HdJOO4miLJnoakibHCiSmQbeB9PADMsJ7PNzqlSs0EjWg6EbmwnGIhfYqhGJEN9iFAiEpvTjYPZ/r+9BILaBsL/WyRM5ketkU58DbMHLrDrXxZd938SHn9tsJ1E1+Bk72UslCo7Z test-rsab2048'
\set rsab1024 'ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDgwESLYD7sMIxKQ2boKVq2/SlJ9dOno6trXDnj6OSNFOSmAMZSKpArsIlMFk9bdxqXZ7DRdd1URp7h1nA13GDPH6mX8hBqwaT4bHExDz93Tcf9qeX+YLbTlzpKh28QYXgSNs5ITyyv5UBnB8VrbZxkAu+9UP2SyMFduoa0wNuP3w== test-rsab1024'
\set dsa 'ssh-dss AAAAB3NzaC1kc3MAAACBANhsRZDmqMprUKAepCwpGhpqPGFesZdcqQytW8wxDmiPXxaATYtB4MKdq66HmrkMcDMhADWgt8e6FQqdB3q2hr7AA7+rRE3VhJbpF0DS1q+F7klY9nClnI2H890H1Xx8/rpm4MCDb8Yx4l5MpvY31FpgGUjoJToCySsug5FYAxLlAAAAFQDRbsbTZKfOBZ3LXOkI+achemeWNQAAAIEAqQgoNyv/sBvIuYGCdyBsm1MPlr/SeqbNhl/aliHhgRG5AKROgXjGk9ir7+UQAExSXVYWgb6uBPHGOhcEzXhJl0lajwNY6p9+RiN9rW/2zwvLwXaDDbBwwOaH6JzSdhac+t0efyBbp/fT8tnO8FWAV0nHZ2gIzIoMYzDRrOWPMlgAAACBAMYwrO+AL3tIoGR9sXUIYuZqQjfC6TIteOtS7oWoznjhEkZUPPNVQ7dgb3Siq1uSWVr7vMa4I3mFfi0h+dCqShW1ewC9kMRQXzfgQ8EGtMJzDxA3OS50/ZXkR0PHOHKsRfcznB6UuLB1lfaSaziIG3mI1vBsP+QeZzFMR+33VUAg test-dsa'
SELECT pgcloud.deliver('releases', gen_random_uuid(), 'user.created', 'user', '7e57a11c-0000-4000-8000-000000000001',
    '{"user_id": "7e57a11c-0000-4000-8000-000000000001", "email": "regress@example.com", "posix_username": "regress", "uid": 3001, "gid": 3001}', '{}');
-- API functions run as the service role whoever calls them: the claims
-- make the request (grants are tested in test/pgtap/releases_access.sql).
SET request.jwt.claims = '{"role": "pgcloud_user", "sub": "7e57a11c-0000-4000-8000-000000000001"}';

-- Empty and oversized input.
SELECT api.add_ssh_key(NULL);
SELECT api.add_ssh_key('');
SELECT api.add_ssh_key(E'  \t\n');
SELECT api.add_ssh_key(repeat('A', 100000));
SELECT api.add_ssh_key('ssh-ed25519 ' || repeat('AAAA', 2100));
SELECT api.add_ssh_key(:'ed25519' || repeat('x', 1100));

-- Not one key on one line.
SELECT api.add_ssh_key(:'ed25519' || E'\n' || :'ecdsab256');
SELECT api.add_ssh_key('# ' || :'ed25519');
SELECT api.add_ssh_key(replace(:'ed25519', 'test-', E'te\x01st-'));
SELECT api.add_ssh_key('hello');
SELECT api.add_ssh_key('ssh-ed25519');
SELECT api.add_ssh_key('ssh-ed25519   ');

-- authorized_keys options are rejected, not stripped (a restriction the
-- user wrote must not silently disappear).
SELECT api.add_ssh_key('command="echo hi",no-pty ' || :'ed25519');
SELECT api.add_ssh_key('from="10.0.0.0/8 , 192.168.0.0/16" ' || :'ed25519');
SELECT api.add_ssh_key('no-port-forwarding ' || :'ed25519');
SELECT api.add_ssh_key('restrict ' || :'dsa');

-- Key types that are not accepted.
SELECT api.add_ssh_key(:'dsa');
SELECT api.add_ssh_key(:'rsab1024');
SELECT api.add_ssh_key('ssh-foo ' || split_part(:'ed25519', ' ', 2));
SELECT api.add_ssh_key('sk-ssh-ed25519@openssh.com ' || split_part(:'ed25519', ' ', 2));
SELECT api.add_ssh_key('ssh-ed25519-cert-v01@openssh.com ' || split_part(:'ed25519', ' ', 2));
-- The blob says ssh-dss under an ssh-dss prefix; under an ssh-ed25519 prefix it is a mismatch.
SELECT api.add_ssh_key('ssh-ed25519 ' || split_part(:'dsa', ' ', 2));

-- Base64.
SELECT api.add_ssh_key('ssh-ed25519 ' || left(split_part(:'ed25519', ' ', 2), 66));
SELECT api.add_ssh_key('ssh-ed25519 ' || overlay(split_part(:'ed25519', ' ', 2) placing '!' from 30 for 1));
SELECT api.add_ssh_key('ssh-ed25519 ' || overlay(split_part(:'ed25519', ' ', 2) placing ' ' from 30 for 1));
SELECT api.add_ssh_key('ecdsa-sha2-nistp256 ' || rtrim(split_part(:'ecdsab256', ' ', 2), '='));
-- non-canonical: the unused low bits before the padding are not zero
SELECT api.add_ssh_key('ecdsa-sha2-nistp256 ' || overlay(split_part(:'ecdsab256', ' ', 2) placing
    translate(substr(split_part(:'ecdsab256', ' ', 2), 139, 1),
              'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/',
              'BADCFEHGJILKNMPORQTSVUXWZYbadcfehgjilknmporqtsvuxwzy1032547698/+') from 139 for 1));

-- The blob.
SELECT api.add_ssh_key('ssh-ed25519 ' || pg_temp.b64(substr(pg_temp.blob(:'ed25519'), 1, 48)));
SELECT api.add_ssh_key('ssh-ed25519 ' || pg_temp.b64(pg_temp.blob(:'ed25519') || '\x00'::bytea));
SELECT api.add_ssh_key('ssh-ed25519 ' || pg_temp.b64('\x0000000b'::bytea || 'ssh-ed25519'::bytea || '\x0000001f'::bytea
    || substr(pg_temp.blob(:'ed25519'), 20, 31)));
SELECT api.add_ssh_key('ssh-ed25519 ' || pg_temp.b64('\xffffffff'::bytea || pg_temp.blob(:'ed25519')));
SELECT api.add_ssh_key('ssh-rsa ' || split_part(:'ed25519', ' ', 2));
SELECT api.add_ssh_key('ecdsa-sha2-nistp384 ' || split_part(:'ecdsab256', ' ', 2));
-- an ecdsa-sha2-nistp256 blob naming the curve nistp384
SELECT api.add_ssh_key('ecdsa-sha2-nistp256 ' || pg_temp.b64(overlay(pg_temp.blob(:'ecdsab256') placing 'nistp384'::bytea from 28 for 8)));
-- the point moved off the curve (last byte of Y changed)
SELECT api.add_ssh_key('ecdsa-sha2-nistp256 ' || pg_temp.b64(set_byte(pg_temp.blob(:'ecdsab256'), 103,
    get_byte(pg_temp.blob(:'ecdsab256'), 103) # 1)));
-- a compressed point
SELECT api.add_ssh_key('ecdsa-sha2-nistp256 ' || pg_temp.b64(substr(pg_temp.blob(:'ecdsab256'), 1, 35)
    || '\x0000002102'::bytea || substr(pg_temp.blob(:'ecdsab256'), 41, 32)));
-- RSA: an exponent with a needless leading zero, an even modulus
SELECT api.add_ssh_key('ssh-rsa ' || pg_temp.b64(substr(pg_temp.blob(:'rsab2048'), 1, 11) || '\x0000000400010001'::bytea
    || substr(pg_temp.blob(:'rsab2048'), 19)));
SELECT api.add_ssh_key('ssh-rsa ' || pg_temp.b64(set_byte(pg_temp.blob(:'rsab2048'), length(pg_temp.blob(:'rsab2048')) - 1,
    get_byte(pg_temp.blob(:'rsab2048'), length(pg_temp.blob(:'rsab2048')) - 1) & 254)));

-- Accepted: type, bits and the fingerprint ssh-keygen -l prints; the name
-- defaults to the key's comment.
SELECT r ->> 'type' AS type, r ->> 'bits' AS bits, r ->> 'fingerprint' AS fingerprint, r ->> 'name' AS name
  FROM api.add_ssh_key(:'ed25519') r;
SELECT r ->> 'type' AS type, r ->> 'bits' AS bits, r ->> 'fingerprint' AS fingerprint, r ->> 'name' AS name
  FROM api.add_ssh_key(:'ecdsab256', '  work laptop ') r;
SELECT r ->> 'type' AS type, r ->> 'bits' AS bits, r ->> 'fingerprint' AS fingerprint, r ->> 'name' AS name
  FROM api.add_ssh_key(:'ecdsab384') r;
SELECT r ->> 'type' AS type, r ->> 'bits' AS bits, r ->> 'fingerprint' AS fingerprint, r ->> 'name' AS name
  FROM api.add_ssh_key('  ' || :'ecdsab521' || E'\r\n') r;
SELECT r ->> 'type' AS type, r ->> 'bits' AS bits, r ->> 'fingerprint' AS fingerprint, r ->> 'name' AS name
  FROM api.add_ssh_key(split_part(:'rsab2048', ' ', 1) || E'\t' || split_part(:'rsab2048', ' ', 2)) r;

-- The same key again (comment or blanks do not matter): 409.
SELECT api.add_ssh_key(split_part(:'ed25519', ' ', 1) || ' ' || split_part(:'ed25519', ' ', 2) || ' other comment');
-- Names.
SELECT api.add_ssh_key(:'ed25519', repeat('n', 101));
SELECT api.add_ssh_key(:'ed25519', E'bad\nname');

-- The list: canonical public keys (no comment), oldest first.
SELECT k ->> 'type' AS type, k ->> 'name' AS name, k ->> 'fingerprint' AS fingerprint,
       k ->> 'public_key' = split_part(:'ecdsab256', ' ', 1) || ' ' || split_part(:'ecdsab256', ' ', 2) AS is_p256
  FROM jsonb_array_elements(api.list_ssh_keys()) k;

-- Deleting: unknown ids are 404.
SELECT api.delete_ssh_key('00000000-0000-4000-8000-000000000000');
SELECT api.delete_ssh_key(NULL);
SELECT api.delete_ssh_key((api.list_ssh_keys() -> 0 ->> 'id')::uuid) ->> 'fingerprint' AS deleted;
SELECT jsonb_array_length(api.list_ssh_keys()) AS keys_left;

-- Without a user: 401.
SET request.jwt.claims = '{"role": "pgcloud_anon"}';
SELECT api.add_ssh_key(:'ed25519');
SELECT api.list_ssh_keys();
RESET request.jwt.claims;

-- Audit rows carry fingerprints, never key material.
SELECT action, details ->> 'fingerprint' AS fingerprint, details::text LIKE '%AAAA%' AS has_key_material
  FROM pgcloud.audit_logs WHERE action LIKE 'ssh_key.%' ORDER BY id;
