-- pgcloud_appruntime: application manifests and instances on allocations.
-- Schema appruntime, owned by pgcloud_svc_appruntime.
--
-- Decisions:
--   * A manifest is a JSON document {name, version, start, stop, ports,
--     resources, env}: start and stop are shell commands run on the node as
--     the allocation owner's POSIX user; ports are the TCP ports the app
--     serves on the node (the first one is probed); env is the environment
--     schema {NAME: {type: string|integer|boolean, required, default}}.
--     Administrators publish to the catalogue (owner NULL); users publish
--     their own. launch_app names one as "name" or "name@version" (own
--     manifests first, then the catalogue; newest version when none given).
--   * The process is started and stopped by the app runtime agent
--     (termrelay/pgcloud-appagent, pgcloud_service with scope apps:run) over
--     SSH with a platform certificate (api.service_mint_access): a
--     systemd-run --user unit where a user manager runs, else a supervised
--     process group. An instance is running only once its port answers.
--   * States: launch -> starting -> running -> stopping -> stopped; failed;
--     released when the allocation ends. The transition trigger guards them.
--   * Members: owner, editor, viewer. Owners add members; owners and editors
--     stop the app and may open terminals to its allocation (terminal keeps a
--     read model of app.member_added); viewers only look.

INSERT INTO pgcloud.error_codes (code, http_status, message, service) VALUES
    ('app_manifest_invalid',     400, 'The application manifest is not valid.', 'appruntime'),
    ('app_manifest_not_found',   404, 'No such application manifest.', 'appruntime'),
    ('app_env_invalid',          400, 'The environment does not match the manifest''s schema.', 'appruntime'),
    ('app_instance_not_found',   404, 'The application instance does not exist.', 'appruntime'),
    ('app_not_stoppable',        409, 'The application instance is not running.', 'appruntime'),
    ('app_member_role_invalid',  400, 'The role must be owner, editor or viewer.', 'appruntime'),
    ('app_user_not_found',       404, 'No such user.', 'appruntime');
-- allocation_not_found and allocation_not_active are the core's (shared).

INSERT INTO pgcloud.policy_values (key, value, description) VALUES
    ('appruntime.start_timeout_seconds', '60', 'How long an instance may stay starting before its port must answer (seconds, 5 to 3600); then it fails.'),
    ('appruntime.max_manifests_per_user', '50', 'How many manifests (all versions) one user may publish.');
