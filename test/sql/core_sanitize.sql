-- pgcloud.sanitize(): what is scrubbed, and near misses that are kept.
SELECT pgcloud.sanitize(x) FROM (VALUES
    ('contact alice@example.com now'),
    ('no tld: foo@bar'),
    ('jwt eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ end'),
    ('Authorization: Bearer abc.def-123'),
    ('authorization=Basic dXNlcjpwYXNz'),
    ('{"authorization": "Bearer xyz", "n": 1}'),
    ('host=db password=hunter2 user=app'),
    ('password=''with space'' dbname=x'),
    ('{"refresh_token":"r-123","ok":true}'),
    ('stripe sk_live_51Habcdefghijklmnop and whsec_abcdefghijkl'),
    ('too short: sk_live_abc'),
    ('refresh pgrt_Zm9vYmFyYmF6cXV4LV9fYWJjZGVmZ2hpamtsbW5vcHFyc3R1 and secret pgcs_abcdefgh-_ijkl'),
    ('too short: pgrt_abc'),
    ('card 4242 4242 4242 4242 ok'),
    ('card 4111-1111-1111-1111 ok'),
    ('order 1234567812345678 kept (fails Luhn)'),
    ('postgresql://app:s3cret@db.internal:5432/prod'),
    ('redis://:pw@cache:6379'),
    ('https://example.com/path@x'),
    ('nats://user@host:4222'),
    ('-----BEGIN PRIVATE KEY-----' || E'\nMIIEv\n' || '-----END PRIVATE KEY----- after'),
    ('nothing to see here')
) AS t(x);
SELECT pgcloud.sanitize(NULL) IS NULL AS strict;
SELECT length(pgcloud.sanitize(repeat('@', 100000))) AS long_input_kept;
