-- pgcloud_admin: operator views, force-release, audit query and export.
-- Schema admin, owned by pgcloud_svc_admin (created by pgcloud.service_begin).
--
-- Decisions:
--   * Admin never reads another service's tables: everything it shows comes
--     from events into its own read models (admin.users, admin.allocations,
--     admin.nodes, admin.payments, admin.refunds, admin.audit), so it works
--     the same with one database or one database per service.
--   * The audit of every service reaches it as audit.recorded events (core's
--     pgcloud.audit() announces each row), keyed by (database, audit_id):
--     one query sees all services, and a redelivered event changes nothing.
--   * api.admin_audit() returns a table (not JSON), so PostgREST serves it as
--     CSV when asked with Accept: text/csv, and psql exports it with \copy.
--     It is keyset-paginated: pass the last row's seq as after.
--   * api.admin_force_release() only announces admin.force_release_requested
--     {allocation_id, reason}; provisioning honours it. The request is audited
--     with the reason.
--   * Read models are ordered by what the events carry: an allocation never
--     goes back to an earlier state, a node or account keeps its newest
--     update (updated_at, as_of, the ledger entry id).

INSERT INTO pgcloud.error_codes (code, http_status, message, service) VALUES
    ('allocation_not_live', 409, 'The allocation is not live (it is released, failed or being released).', 'admin'),
    ('audit_range_invalid', 400, 'The audit time range is not valid.', 'admin');
-- allocation_not_found is the core's (shared).

INSERT INTO pgcloud.policy_values (key, value, description) VALUES
    ('admin.audit_page_max', '10000', 'Most audit rows api.admin_audit() returns in one page.'),
    ('admin.audit_range_max_days', '366', 'Longest time range api.admin_audit() covers in one call (days).');
