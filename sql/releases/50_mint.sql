-- Access: a short-lived OpenSSH user certificate for an active allocation.

-- The one principal a certificate for an allocation may carry: the
-- allocation's own, which only its node's AuthorizedPrincipalsFile lists
-- (maas writes it at deploy time). Every minting path asks here, so no
-- certificate works on another allocation's node.
CREATE FUNCTION releases.access_principal(a releases.allocations) RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgcloud, releases
AS $$
BEGIN
    IF a.ssh_principal IS NULL THEN
        PERFORM pgcloud.raise('access_principal_missing',
            format('allocation %s was activated without an SSH principal for its node', a.allocation_id),
            'Its node was deployed without pgcloud''s AuthorizedPrincipalsFile; release it and allocate again.');
    END IF;
    RETURN a.ssh_principal;
END
$$;
COMMENT ON FUNCTION releases.access_principal(releases.allocations) IS 'The principal every certificate for the allocation carries, alone: its ssh_principal, which only the allocation''s node accepts (for its owner''s account). Raises access_principal_missing when the activation carried none.';

CREATE FUNCTION releases.mint_access_apply(p_allocation_id uuid, p_public_key text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, releases
AS $$
DECLARE
    v_user uuid := pgcloud.require_user();
    alloc_id uuid := p_allocation_id;
    a releases.allocations;
    uname text;
    principal text;
    k record;
    ca releases.ssh_ca_keys;
    ttl integer := pgcloud.policy('releases.cert_ttl_seconds', NULL::integer);
    skew integer := pgcloud.policy('releases.cert_clock_skew_seconds', NULL::integer);
    exts jsonb := pgcloud.policy('releases.cert_extensions', NULL::jsonb);
    ext_names text[];
    now_s timestamptz := date_trunc('second', now());
    v_after timestamptz;
    v_before timestamptz;
    serial bigint;
    kid text;
    cert text;
BEGIN
    IF alloc_id IS NULL THEN
        PERFORM pgcloud.raise('invalid_argument', 'allocation_id is required');
    END IF;
    IF ttl IS NULL OR ttl NOT BETWEEN 60 AND 86400 THEN
        PERFORM pgcloud.raise('policy_invalid', 'releases.cert_ttl_seconds must be between 60 and 86400');
    END IF;
    IF skew IS NULL OR skew NOT BETWEEN 0 AND 600 THEN
        PERFORM pgcloud.raise('policy_invalid', 'releases.cert_clock_skew_seconds must be between 0 and 600');
    END IF;
    IF jsonb_typeof(exts) IS DISTINCT FROM 'array'
       OR EXISTS (SELECT 1 FROM jsonb_array_elements(exts) e WHERE jsonb_typeof(e) <> 'string') THEN
        PERFORM pgcloud.raise('policy_invalid', 'releases.cert_extensions must be an array of strings');
    END IF;
    ext_names := ARRAY(SELECT jsonb_array_elements_text(exts));

    -- Someone else's allocation is as unknown as a missing one.
    SELECT * INTO a FROM releases.allocations x WHERE x.allocation_id = alloc_id AND x.user_id = v_user FOR SHARE;
    IF NOT FOUND THEN
        PERFORM pgcloud.raise('allocation_not_found', format('no allocation %s', alloc_id));
    END IF;
    IF a.state <> 'active' OR (a.ends_at IS NOT NULL AND a.ends_at <= now_s + interval '1 second') THEN
        PERFORM pgcloud.raise('allocation_not_active', format('allocation %s is %s', alloc_id,
                              CASE WHEN a.state = 'active' THEN 'past its end' ELSE a.state END),
                              'Access can be minted only while the allocation is active.');
    END IF;
    SELECT u.posix_username INTO uname FROM releases.users u WHERE u.user_id = v_user;
    IF uname IS NULL THEN
        PERFORM pgcloud.raise('posix_identity_missing', 'no POSIX username is known for your account yet',
                              'Try again in a moment; it is assigned when your account is created.');
    END IF;
    principal := releases.access_principal(a);

    SELECT * INTO k FROM releases.parse_key(p_public_key);
    v_after := now_s - make_interval(secs => skew);
    v_before := now_s + make_interval(secs => ttl);
    IF a.ends_at IS NOT NULL THEN
        v_before := least(v_before, date_trunc('second', a.ends_at));
    END IF;

    ca := releases.ca_current();
    serial := nextval('releases.certificate_serial_seq');
    kid := format('pgcloud user=%s allocation=%s', v_user, alloc_id);
    cert := releases.sign_certificate(k.canonical_key, ca.private_sealed, ca.public_blob, serial, kid,
                                      ARRAY[principal], v_after, v_before, ext_names,
                                      format('%s@pgcloud-%s', uname, serial));

    INSERT INTO releases.certificates (serial, user_id, allocation_id, key_fingerprint, ca_fingerprint, key_id,
                                       principals, valid_after, valid_before)
    VALUES (serial, v_user, alloc_id, k.fingerprint, ca.fingerprint, kid, ARRAY[principal], v_after, v_before);

    PERFORM pgcloud.audit('access.minted', 'allocation', alloc_id::text, 'ok',
        jsonb_build_object('serial', serial, 'key_fingerprint', k.fingerprint, 'ca_fingerprint', ca.fingerprint,
                           'principals', jsonb_build_array(principal), 'login', uname,
                           'valid_after', v_after, 'valid_before', v_before));
    PERFORM pgcloud.emit('access.minted', 'allocation', alloc_id::text,
        jsonb_build_object('allocation_id', alloc_id, 'user_id', v_user, 'serial', serial, 'key_id', kid,
                           'key_fingerprint', k.fingerprint, 'ca_fingerprint', ca.fingerprint,
                           'principals', jsonb_build_array(principal), 'login', uname, 'hostname', a.hostname,
                           'valid_after', v_after, 'valid_before', v_before));
    RETURN jsonb_build_object('certificate', cert, 'valid_after', v_after, 'valid_before', v_before,
                              'serial', serial, 'principals', jsonb_build_array(principal), 'login', uname, 'key_id', kid,
                              'key_fingerprint', k.fingerprint, 'ca_fingerprint', ca.fingerprint,
                              'hostname', a.hostname);
END
$$;
COMMENT ON FUNCTION releases.mint_access_apply(uuid, text) IS 'Internal to api.mint_access() (which authorizes): checks the allocation and the caller, signs a user certificate for the public key; audited and announced as access.minted.';

CREATE FUNCTION api.mint_access(allocation_id uuid, public_key text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, releases
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    RETURN coalesce(
        pgcloud.idempotent('releases.mint_access',
                           jsonb_build_object('allocation_id', allocation_id, 'public_key', public_key)),
        pgcloud.idempotent_done('releases.mint_access', releases.mint_access_apply(allocation_id, public_key)));
END
$$;
COMMENT ON FUNCTION api.mint_access(uuid, text) IS 'Short-lived SSH access to one of your active allocations: an OpenSSH user certificate for public_key (any accepted key type), signed by the platform CA (api.ssh_ca_public_key()), principal = the allocation''s own (pgcloud-alloc-...), which only its node accepts, for your account there (login = your POSIX username), valid for releases.cert_ttl_seconds and never past the allocation''s end. Returns {certificate, valid_after, valid_before, serial, principals, login, key_id, key_fingerprint, ca_fingerprint, hostname}; save certificate as e.g. ~/.ssh/id_ed25519-cert.pub. Unknown or another user''s allocation: 404 allocation_not_found; not active: 409 allocation_not_active. Safe to retry with X-Idempotency-Key.';
SELECT pgcloud.expose('api.mint_access(uuid, text)', 'user', 'admin');
