-- Who may call what (pgcloud.service_end revokes PUBLIC's EXECUTE).
GRANT EXECUTE ON FUNCTION api.publish_app_manifest(jsonb, boolean), api.list_app_manifests(),
    api.launch_app(uuid, text, jsonb), api.stop_app(uuid), api.get_app(uuid), api.list_apps(),
    api.add_app_member(uuid, uuid, text), api.remove_app_member(uuid, uuid), api.app_events(uuid)
    TO pgcloud_user, pgcloud_admin;
GRANT EXECUTE ON FUNCTION api.service_app_work(), api.service_app_report(uuid, text, text) TO pgcloud_service;
