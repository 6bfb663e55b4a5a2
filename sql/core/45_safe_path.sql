-- Object paths users give us: checked and normalised in C (src/core/safe_path.c).

INSERT INTO pgcloud.error_codes (code, http_status, message, service) VALUES
    ('path_invalid', 400, 'The path is not a safe relative object path.', 'core');

CREATE FUNCTION pgcloud.safe_path(text) RETURNS text
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'pgcloud_storage_safe_path';
COMMENT ON FUNCTION pgcloud.safe_path(text) IS 'A user-supplied object path, checked and normalised (C): refuses empty and absolute paths, empty, ".." and all-dot segments, segments over 255 bytes, paths over 1024 bytes or 64 segments, NUL and control characters, backslashes, invalid UTF-8, Unicode look-alikes of "/", "\" and "." (full-width solidus, division and fraction slash, one-dot leader, ideographic full stop, ...) and invisible characters (zero-width, bidi controls, BOM), with error path_invalid (400) saying which and at what byte; drops "." segments and returns the path in NFC.';
