-- Access for platform services: the terminal relay and the app runtime agent
-- log in to a node with an ephemeral key and a certificate minted here, as
-- the allocation owner's POSIX user, valid for minutes, for that allocation
-- only (pgcloud_service with scope access:mint).

INSERT INTO pgcloud.policy_values (key, value, description) VALUES
    ('releases.service_cert_ttl_seconds', '120', 'Lifetime of a certificate minted for a platform service (terminal relay, app runtime) (seconds, 30 to 3600).');

CREATE FUNCTION releases.service_mint_access_apply(p_allocation_id uuid, p_public_key text, p_on_behalf_of uuid,
                                                   p_purpose text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, releases
AS $$
DECLARE
    alloc_id uuid := p_allocation_id;
    on_behalf uuid := p_on_behalf_of;
    purpose text := coalesce(p_purpose, 'service');
    a releases.allocations;
    uname text;
    principal text;
    k record;
    ca releases.ssh_ca_keys;
    ttl integer := pgcloud.policy('releases.service_cert_ttl_seconds', NULL::integer);
    skew integer := pgcloud.policy('releases.cert_clock_skew_seconds', NULL::integer);
    exts jsonb := pgcloud.policy('releases.cert_extensions', NULL::jsonb);
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
    IF purpose !~ '^[a-z][a-z0-9_]{0,30}$' THEN
        PERFORM pgcloud.raise('invalid_argument', 'purpose must be a short lower-case word such as terminal');
    END IF;
    IF ttl IS NULL OR ttl NOT BETWEEN 30 AND 3600 THEN
        PERFORM pgcloud.raise('policy_invalid', 'releases.service_cert_ttl_seconds must be between 30 and 3600');
    END IF;
    IF skew IS NULL OR skew NOT BETWEEN 0 AND 600 THEN
        PERFORM pgcloud.raise('policy_invalid', 'releases.cert_clock_skew_seconds must be between 0 and 600');
    END IF;
    IF jsonb_typeof(exts) IS DISTINCT FROM 'array'
       OR EXISTS (SELECT 1 FROM jsonb_array_elements(exts) e WHERE jsonb_typeof(e) <> 'string') THEN
        PERFORM pgcloud.raise('policy_invalid', 'releases.cert_extensions must be an array of strings');
    END IF;
    SELECT * INTO a FROM releases.allocations x WHERE x.allocation_id = alloc_id FOR SHARE;
    IF NOT FOUND THEN
        PERFORM pgcloud.raise('allocation_not_found', format('no allocation %s', alloc_id));
    END IF;
    IF a.state <> 'active' OR (a.ends_at IS NOT NULL AND a.ends_at <= now_s + interval '1 second') THEN
        PERFORM pgcloud.raise('allocation_not_active', format('allocation %s is not active', alloc_id));
    END IF;
    SELECT u.posix_username INTO uname FROM releases.users u WHERE u.user_id = a.user_id;
    IF uname IS NULL THEN
        PERFORM pgcloud.raise('posix_identity_missing', 'no POSIX username is known for the allocation''s owner');
    END IF;
    -- The allocation's own principal, as for api.mint_access(): only its node
    -- accepts it (for the owner's account), so the certificate opens no other.
    principal := releases.access_principal(a);
    SELECT * INTO k FROM releases.parse_key(p_public_key);
    v_after := now_s - make_interval(secs => skew);
    v_before := now_s + make_interval(secs => ttl);
    IF a.ends_at IS NOT NULL THEN
        v_before := least(v_before, date_trunc('second', a.ends_at));
    END IF;
    ca := releases.ca_current();
    serial := nextval('releases.certificate_serial_seq');
    kid := format('pgcloud %s user=%s allocation=%s', purpose, coalesce(on_behalf, a.user_id), alloc_id);
    cert := releases.sign_certificate(k.canonical_key, ca.private_sealed, ca.public_blob, serial, kid,
                                      ARRAY[principal], v_after, v_before,
                                      ARRAY(SELECT jsonb_array_elements_text(exts)),
                                      format('%s@pgcloud-%s', uname, serial));
    INSERT INTO releases.certificates (serial, user_id, allocation_id, key_fingerprint, ca_fingerprint, key_id,
                                       principals, valid_after, valid_before)
    VALUES (serial, coalesce(on_behalf, a.user_id), alloc_id, k.fingerprint, ca.fingerprint, kid, ARRAY[principal],
            v_after, v_before);
    PERFORM pgcloud.audit('access.minted', 'allocation', alloc_id::text, 'ok',
        jsonb_build_object('serial', serial, 'key_fingerprint', k.fingerprint, 'ca_fingerprint', ca.fingerprint,
                           'principals', jsonb_build_array(principal), 'login', uname, 'purpose', purpose, 'on_behalf_of', on_behalf,
                           'valid_after', v_after, 'valid_before', v_before));
    PERFORM pgcloud.emit('access.minted', 'allocation', alloc_id::text,
        jsonb_build_object('allocation_id', alloc_id, 'user_id', coalesce(on_behalf, a.user_id), 'serial', serial,
                           'key_id', kid, 'key_fingerprint', k.fingerprint, 'ca_fingerprint', ca.fingerprint,
                           'principals', jsonb_build_array(principal), 'login', uname, 'hostname', a.hostname, 'purpose', purpose,
                           'valid_after', v_after, 'valid_before', v_before));
    RETURN jsonb_build_object('certificate', cert, 'valid_after', v_after, 'valid_before', v_before,
                              'serial', serial, 'principals', jsonb_build_array(principal), 'login', uname, 'key_id', kid,
                              'hostname', a.hostname);
END
$$;
COMMENT ON FUNCTION releases.service_mint_access_apply(uuid, text, uuid, text) IS 'Internal to api.service_mint_access() (which authorizes): signs a short-lived certificate for the public key, naming purpose and the user acted for (on_behalf_of), for the allocation''s principal (login: the owner''s POSIX user).';

CREATE FUNCTION api.service_mint_access(allocation_id uuid, public_key text, on_behalf_of uuid DEFAULT NULL,
                                        purpose text DEFAULT 'service')
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, releases
AS $$
BEGIN
    PERFORM pgcloud.authorize_service('access:mint');
    RETURN coalesce(
        pgcloud.idempotent('releases.service_mint_access',
                           jsonb_build_object('allocation_id', allocation_id, 'public_key', public_key,
                                              'on_behalf_of', on_behalf_of, 'purpose', purpose)),
        pgcloud.idempotent_done('releases.service_mint_access',
                                releases.service_mint_access_apply(allocation_id, public_key, on_behalf_of, purpose)));
END
$$;
COMMENT ON FUNCTION api.service_mint_access(uuid, text, uuid, text) IS 'Platform services (pgcloud_service with scope access:mint; the terminal relay, the app runtime agent): an OpenSSH user certificate for an ephemeral public_key, principal = the allocation''s own (pgcloud-alloc-<id>, accepted only by its node for the owner''s account, login = the owner''s POSIX username), valid releases.service_cert_ttl_seconds and never past the allocation''s end; the key id names purpose, the user acted for (on_behalf_of, default the owner) and the allocation. Returns {certificate, valid_after, valid_before, serial, principals, login, key_id, hostname}. Unknown allocation: 404 allocation_not_found; not active: 409 allocation_not_active; activated without a principal: 409 access_principal_missing.';
SELECT pgcloud.expose('api.service_mint_access(uuid, text, uuid, text)', 'service');

