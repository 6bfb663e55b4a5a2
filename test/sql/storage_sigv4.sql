-- AWS Signature Version 4 in C, against AWS's published test vectors.
--
-- 1. The Signature Version 4 test suite (AWS General Reference; credentials
--    AKIDEXAMPLE / wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, us-east-1,
--    service "service", 20150830T123600Z): canonical request -> signature.
SELECT name, storage.sigv4_signature('wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY', '20150830T123600Z', 'us-east-1',
                                     'service', creq) = expected AS matches
  FROM (VALUES
    ('get-vanilla',
     E'GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
     '5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31'),
    ('post-vanilla',
     E'POST\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
     '5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b'),
    ('get-vanilla-query-order-key-case',
     E'GET\n/\nParam1=value1&Param2=value2\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
     'b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500'),
    ('get-unreserved',
     E'GET\n/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
     '07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f'),
    ('post-header-value-case',
     E'POST\n/\n\nhost:example.amazonaws.com\nmy-header1:VALUE1\nx-amz-date:20150830T123600Z\n\nhost;my-header1;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
     'cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d'),
    ('get-vanilla, one byte changed',
     E'GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123601Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
     '5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31')
  ) AS t (name, creq, expected);

-- 2. Amazon S3's own examples (S3 API reference, "Signature Calculations for
--    the Authorization Header" and "Query String Authentication"; credentials
--    AKIAIOSFODNN7EXAMPLE / wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY,
--    bucket examplebucket, us-east-1, 20130524T000000Z).
SELECT storage.sigv4_signature('wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY', '20130524T000000Z', 'us-east-1', 's3',
    E'GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\nx-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\nx-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855')
    = 'f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41' AS s3_get_object_header;
-- The pre-signed GET of test.txt for 86400 s, virtual-hosted: the whole URL and what was signed.
\x on
SELECT url, replace(canonical_request, E'\n', ' | ') AS canonical_request
  FROM storage.presign_with('GET', 'test.txt', '2013-05-24 00:00:00+00', 86400, 'https://s3.amazonaws.com',
                            'us-east-1', 'examplebucket', 'AKIAIOSFODNN7EXAMPLE',
                            'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY', false);
\x off
SELECT url ~ 'X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404$' AS s3_presigned_get
  FROM storage.presign_with('GET', 'test.txt', '2013-05-24 00:00:00+00', 86400, 'https://s3.amazonaws.com',
                            'us-east-1', 'examplebucket', 'AKIAIOSFODNN7EXAMPLE',
                            'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY', false);

-- 3. Path-style, a port, keys needing encoding; the default port is left out of Host.
SELECT url FROM storage.presign_with('PUT', 'ns/a b/ü+=&?.txt', '2024-01-02 03:04:05+00', 900, 'http://127.0.0.1:9000',
                                     'eu-west-1', 'bucket-1', 'AKID', 'secret', true);
SELECT split_part(canonical_request, E'\n', 4) AS host_line
  FROM storage.presign_with('HEAD', 'k', '2024-01-02 03:04:05+00', 60, 'https://s3.example.com:443',
                            'eu-west-1', 'bucket-1', 'AKID', 'secret', true);
SELECT storage.uri_encode('a b/ü~*', true) AS keep_slash, storage.uri_encode('a b/ü~*', false) AS encode_slash;

-- 4. What the signer refuses.
SELECT storage.presign_with('POST', 'k', now(), 60, 'http://h', 'r', 'bucket', 'a', 's', true);
SELECT storage.presign_with('GET', 'k', now(), 0, 'http://h', 'r', 'bucket', 'a', 's', true);
SELECT storage.presign_with('GET', 'k', now(), 604801, 'http://h', 'r', 'bucket', 'a', 's', true);
SELECT storage.presign_with('GET', 'k', now(), 60, 'ftp://h', 'r', 'bucket', 'a', 's', true);
SELECT storage.presign_with('GET', 'k', now(), 60, 'http://user@h', 'r', 'bucket', 'a', 's', true);
SELECT storage.presign_with('GET', 'k', now(), 60, 'http://h/base', 'r', 'bucket', 'a', 's', true);
SELECT storage.presign_with('GET', 'k', now(), 60, 'http://h', 'US_EAST', 'bucket', 'a', 's', true);
SELECT storage.presign_with('GET', 'k', now(), 60, 'http://h', 'r', 'Bad_Bucket', 'a', 's', true);
-- Without the pgcloud.s3_* settings, api-side signing is refused with a catalogued error.
SELECT storage.presign_url('GET', 'k', now(), 60);
