-- pgcloud.safe_path(): the case table. Each row: input, and either the
-- normalised path or the refusal (its reason and byte offset).
CREATE FUNCTION pg_temp.check(p text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE m text; r text;
BEGIN
    r := pgcloud.safe_path(p);
    RETURN 'ok: ' || CASE WHEN octet_length(r) > 40 THEN octet_length(r) || ' bytes, ' || (length(r) - length(replace(r, '/', '')) + 1) || ' segments' ELSE r END;
EXCEPTION WHEN SQLSTATE 'PGRST' THEN
    GET STACKED DIAGNOSTICS m = MESSAGE_TEXT;
    RETURN (m::jsonb ->> 'code') || ': ' || substring(m::jsonb ->> 'details' from '\(([a-z_0-9]+ at byte [0-9]+)\)');
END $$;
SELECT n, label, pg_temp.check(input) AS verdict
  FROM (VALUES
    (1,  'plain',                       'a.txt'),
    (2,  'nested',                      'photos/2024/cat.jpg'),
    (3,  'dot segment dropped',         './a/./b'),
    (4,  'UTF-8 kept',                  'café/naïve résumé.txt'),
    (5,  'spaces and reserved',         'a b/c+d=e&f?g#h'),
    (6,  'dots inside names',           'a..b/.hidden/v1.2..3'),
    (7,  'NFC',                         E'cafe\u0301.txt'),
    (8,  'empty',                       ''),
    (9,  'only a dot',                  '.'),
    (10, 'absolute',                    '/etc/passwd'),
    (11, 'parent',                      '../x'),
    (12, 'parent inside',               'a/../../x'),
    (13, 'parent at the end',           'a/..'),
    (14, 'three dots',                  'a/.../b'),
    (15, 'empty segment',               'a//b'),
    (16, 'trailing slash',              'a/b/'),
    (17, 'backslash',                   E'a\\..\\b'),
    (18, 'tab',                         E'a\tb'),
    (19, 'newline',                     E'a\nb'),
    (20, 'DEL',                         E'a\x7fb'),
    (21, 'C1 control (U+0085)',         E'a\u0085b'),
    (22, 'fullwidth solidus',           E'a\uFF0Fb'),
    (23, 'division slash',              E'a\u2215..\u2215b'),
    (24, 'fraction slash',              E'a\u2044b'),
    (25, 'fullwidth full stop',         E'\uFF0E\uFF0E/x'),
    (26, 'one dot leader',              E'\u2024\u2024/x'),
    (27, 'two dot leader',              E'a/\u2025'),
    (28, 'ideographic full stop',       E'a\u3002b'),
    (29, 'small full stop',             E'a\uFE52b'),
    (30, 'fullwidth reverse solidus',   E'a\uFF3Cb'),
    (31, 'set minus',                   E'a\u2216b'),
    (32, 'zero-width space',            E'a\u200Bb'),
    (33, 'right-to-left override',      E'evil\u202Etxt.exe'),
    (34, 'BOM',                         E'\uFEFFa'),
    (35, 'noncharacter',                E'a\uFFFEb'),
    (36, 'segment of 255 bytes',        repeat('x', 255)),
    (37, 'segment of 256 bytes',        repeat('x', 256)),
    (38, 'path of 1024 bytes',          repeat(repeat('y', 254) || '/', 4) || 'zzzz'),
    (39, 'path of 1025 bytes',          repeat(repeat('y', 254) || '/', 4) || 'zzzzz'),
    (40, '64 segments',                 rtrim(repeat('s/', 64), '/')),
    (41, '65 segments',                 rtrim(repeat('s/', 65), '/')),
    (42, 'emoji (4-byte UTF-8)',        E'\U0001F600.png')
  ) AS t (n, label, input)
 ORDER BY n;
-- Invalid UTF-8 cannot be a text value in a UTF-8 database; the C checker
-- refuses it (overlong, surrogate, truncated) and the fuzz target exercises it.
SELECT pgcloud.safe_path(NULL) IS NULL AS null_in_null_out;
-- The error as PostgREST and psql see it.
SELECT pgcloud.safe_path('../secret');
