-- Ownership and privileges of the core. Everything belongs to
-- pgcloud_svc_core; PUBLIC gets nothing; each group gets what it must.
SELECT pgcloud.hand_over('pgcloud_core', 'pgcloud_svc_core');

-- Install-time and operator-only routines stay superuser-only.
REVOKE ALL ON ROUTINE pgcloud.service_begin(text), pgcloud.service_end(text), pgcloud.hand_over(name, name),
    pgcloud.expose(regprocedure, text[]),
    pgcloud.rate_limit_reset(text),
    pgcloud.relay_once(integer), pgcloud.consume_event(text, jsonb, text), pgcloud.wake_workers(),
    pgcloud.http_recover(), pgcloud.http_claim(text, integer), pgcloud.http_claim_all(text[], integer[]),
    pgcloud.http_record(uuid, integer, integer, jsonb, text, boolean, text, integer),
    pgcloud.http_record_all(uuid[], integer[], integer[], jsonb[], text[], boolean[], text[], integer[]),
    pgcloud.http_run_callback(uuid, boolean), pgcloud.http_callback_failed(uuid, boolean, text),
    pgcloud.http_call_callback(regprocedure, uuid, integer, jsonb, text, jsonb, boolean, text),
    pgcloud.http_callbacks_due(integer),
    pgcloud.http_next_due_ms(text[]), pgcloud.http_backoff_ms(integer),
    pgcloud.register_job(text, regprocedure, text, text, text, boolean, boolean),
    pgcloud.due_jobs(boolean), pgcloud.job_finished(text, boolean, text, text, timestamptz),
    pgcloud.jobs_next_in_ms(), pgcloud.prune_cron_history()
    FROM pgcloud_svc_core;

-- Every API role: the pre-request hook and the scrubber.
GRANT EXECUTE ON ROUTINE pgcloud.pre_request(), pgcloud.sanitize(text)
    TO pgcloud_anon, pgcloud_user, pgcloud_admin, pgcloud_service;
-- Signed-in callers may check a path before they ask for a URL.
GRANT EXECUTE ON ROUTINE pgcloud.safe_path(text) TO pgcloud_user, pgcloud_admin, pgcloud_service;

-- Request context and the primitives services build on.
GRANT EXECUTE ON ROUTINE
    pgcloud.claims(), pgcloud.headers(), pgcloud.header(text), pgcloud.request_role(), pgcloud.user_id(),
    pgcloud.correlation_id(), pgcloud.context(), pgcloud.raise(text, text, text, jsonb),
    pgcloud.is_operator(), pgcloud.authorize(text), pgcloud.authorize_scope(text, text, text),
    pgcloud.authorize_service(text, text, text), pgcloud.refuse_unscoped_service(),
    pgcloud.scopes(), pgcloud.valid_scope(text), pgcloud.idempotency_principal(),
    pgcloud.idempotent(text, jsonb), pgcloud.idempotent_done(text, jsonb), pgcloud.idempotency_begin(text, text, bytea),
    pgcloud.idempotency_finish(text, text, bytea, jsonb), pgcloud.require_user()
    TO pgcloud_services, pgcloud_admin, pgcloud_user, pgcloud_service;
-- Event handlers' payload accessors; the pg_cron guard.
GRANT EXECUTE ON ROUTINE
    pgcloud.payload_uuid(jsonb, text, text), pgcloud.payload_text(jsonb, text, text),
    pgcloud.payload_time(jsonb, text), pgcloud.handler_name(text), pgcloud.require_pg_cron()
    TO pgcloud_services;
GRANT EXECUTE ON ROUTINE
    pgcloud.emit(text, text, text, jsonb), pgcloud.emit(text, text, text, jsonb, boolean),
    pgcloud.audit(text, text, text, text, jsonb),
    pgcloud.policy(text, anyelement), pgcloud.event_matches(text, text), pgcloud.is_event_type(text),
    pgcloud.subscribers(text),
    pgcloud.immutable(), pgcloud.transition(), pgcloud.build_info(),
    pgcloud.seal(bytea, text), pgcloud.unseal(bytea, text), pgcloud.revoke_session(uuid, timestamptz),
    pgcloud.sanitize(text), pgcloud.wake_scheduler(), pgcloud.safe_path(text)
    TO pgcloud_services;
-- No INSERT on pgcloud.outbox: only pgcloud.emit() writes it (as the outbox
-- owner, after checking the caller owns the event type).
GRANT EXECUTE ON ROUTINE pgcloud.publisher_of(text), pgcloud.event_authentic(text, text), pgcloud.alert(text, text, jsonb)
    TO pgcloud_services;
-- Outbound HTTP: services write intents (the guard trigger records who).
GRANT EXECUTE ON ROUTINE
    pgcloud.http_request(text, text, text, text, text, jsonb, text, regprocedure, jsonb), pgcloud.http_wake()
    TO pgcloud_services;
GRANT INSERT ON pgcloud.http_intents TO pgcloud_services;
GRANT SELECT ON pgcloud.http_intent_transitions TO pgcloud_services;
GRANT SELECT ON pgcloud.services, pgcloud.subscriptions, pgcloud.error_codes, pgcloud.policy_values TO pgcloud_services;

-- Admins: policy changes and the rate limiter's state.
GRANT EXECUTE ON ROUTINE pgcloud.set_policy(text, jsonb), pgcloud.set_policy_apply(text, jsonb),
    pgcloud.rate_limit_status(), pgcloud.build_info(), pgcloud.worker_status(),
    pgcloud.set_job_enabled(text, boolean)
    TO pgcloud_admin;
GRANT SELECT ON pgcloud.outbox_lag, pgcloud.oldest_undelivered, pgcloud.workers, pgcloud.dead_letters,
    pgcloud.http_intents_status, pgcloud.http_dead_intents, pgcloud.jobs
    TO pgcloud_admin;

-- The workers (bgworkers/common.c) connect as their own roles, not as a
-- superuser: each may call only its entry points, which run as the core's
-- owner (SECURITY DEFINER, search_path pinned) and hand each event or HTTP
-- outcome to the service's own SECURITY DEFINER handler. No worker role may
-- read a service's tables, write the outbox other than marking it published,
-- or create anything.
ALTER FUNCTION pgcloud.relay_once(integer) SECURITY DEFINER;
ALTER FUNCTION pgcloud.consume_event(text, jsonb, text) SECURITY DEFINER;
ALTER FUNCTION pgcloud.consume_failed(text, text, text, text, integer) SECURITY DEFINER;
ALTER FUNCTION pgcloud.nats_subscribers() SECURITY DEFINER;
ALTER FUNCTION pgcloud.nats_applied_patterns(text) SECURITY DEFINER;
ALTER FUNCTION pgcloud.http_recover() SECURITY DEFINER;
ALTER FUNCTION pgcloud.http_claim_all(text[], integer[]) SECURITY DEFINER;
ALTER FUNCTION pgcloud.http_record(uuid, integer, integer, jsonb, text, boolean, text, integer) SECURITY DEFINER;
ALTER FUNCTION pgcloud.http_record_all(uuid[], integer[], integer[], jsonb[], text[], boolean[], text[], integer[])
    SECURITY DEFINER;
ALTER FUNCTION pgcloud.http_run_callback(uuid, boolean) SECURITY DEFINER;
ALTER FUNCTION pgcloud.http_callbacks_due(integer) SECURITY DEFINER;
ALTER FUNCTION pgcloud.http_next_due_ms(text[]) SECURITY DEFINER;
REVOKE ALL ON ROUTINE pgcloud.consume_failed(text, text, text, text, integer), pgcloud.nats_subscribers(),
    pgcloud.nats_applied_patterns(text)
    FROM pgcloud_svc_core;
-- What the entry points call in turn, running as the core's owner.
GRANT EXECUTE ON ROUTINE pgcloud.http_run_callback(uuid, boolean), pgcloud.http_backoff_ms(integer),
    pgcloud.http_callback_failed(uuid, boolean, text),
    pgcloud.http_record_outcomes(uuid[], integer[], integer[], jsonb[], text[], boolean[], text[], integer[]),
    pgcloud.http_call_callback(regprocedure, uuid, integer, jsonb, text, jsonb, boolean, text)
    TO pgcloud_svc_core;
GRANT USAGE ON SCHEMA pgcloud TO pgcloud_worker_relay, pgcloud_worker_consumer, pgcloud_worker_http;
-- Policies are configuration, not secrets; the workers read theirs.
GRANT SELECT ON pgcloud.policy_values TO pgcloud_worker_relay, pgcloud_worker_consumer, pgcloud_worker_http;
-- Relay: embedded delivery, and in NATS mode the outbox batch it publishes.
GRANT EXECUTE ON ROUTINE pgcloud.relay_once(integer) TO pgcloud_worker_relay;
GRANT SELECT ON pgcloud.outbox, pgcloud.delivery_failures TO pgcloud_worker_relay;
GRANT UPDATE (published_at) ON pgcloud.outbox TO pgcloud_worker_relay;
GRANT EXECUTE ON ROUTINE pgcloud.is_event_type(text) TO pgcloud_worker_relay;  -- the outbox's check, on its mark
-- Consumer: NATS messages to the subscribers of this database.
GRANT EXECUTE ON ROUTINE pgcloud.nats_subscribers(), pgcloud.nats_applied_patterns(text), pgcloud.consume_event(text, jsonb, text),
    pgcloud.consume_failed(text, text, text, text, integer)
    TO pgcloud_worker_consumer;
-- HTTP executor: claim, record, callbacks; its policies.
GRANT EXECUTE ON ROUTINE pgcloud.http_recover(), pgcloud.http_claim_all(text[], integer[]),
    pgcloud.http_record(uuid, integer, integer, jsonb, text, boolean, text, integer),
    pgcloud.http_record_all(uuid[], integer[], integer[], jsonb[], text[], boolean[], text[], integer[]),
    pgcloud.http_run_callback(uuid, boolean), pgcloud.http_callbacks_due(integer),
    pgcloud.http_next_due_ms(text[]), pgcloud.policy(text, anyelement)
    TO pgcloud_worker_http;

-- Start this database's workers as soon as the installation commits.
SELECT pgcloud.wake_workers();
