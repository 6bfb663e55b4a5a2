-- C: the key parser and the certificate authority (src/releases/).

CREATE FUNCTION releases.parse_key(public_key text, OUT key_type text, OUT bits integer, OUT fingerprint text,
                                   OUT canonical_key text, OUT comment text)
RETURNS record
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'pgcloud_releases_parse_key';
COMMENT ON FUNCTION releases.parse_key(text) IS 'Parses one OpenSSH authorized_keys line (C): type, bits and SHA256 fingerprint as ssh-keygen -l prints them, the canonical "<type> <base64>" form and the comment. Raises ssh_key_invalid, ssh_key_type_unsupported, ssh_key_too_weak or ssh_key_options_unsupported.';

CREATE FUNCTION releases.ca_generate(OUT public_key text, OUT fingerprint text, OUT public_blob bytea,
                                     OUT private_sealed bytea)
RETURNS record
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'pgcloud_releases_ca_generate';
COMMENT ON FUNCTION releases.ca_generate() IS 'Generates an Ed25519 CA key with OpenSSL (C); returns its public key and the private seed sealed for context releases.ssh_ca. The plaintext private key never leaves C.';

CREATE FUNCTION releases.sign_certificate(public_key text, ca_private_sealed bytea, ca_public_blob bytea,
                                          serial bigint, key_id text, principals text[],
                                          valid_after timestamptz, valid_before timestamptz,
                                          extensions text[], comment text)
RETURNS text
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'pgcloud_releases_sign_certificate';
COMMENT ON FUNCTION releases.sign_certificate(text, bytea, bytea, bigint, text, text[], timestamptz, timestamptz, text[], text) IS 'Builds and signs (C, Ed25519 via EVP_DigestSign) an OpenSSH user certificate (PROTOCOL.certkeys) for public_key; returns it as one "<type>-cert-v01@openssh.com <base64> <comment>" line.';
