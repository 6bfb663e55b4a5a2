#!/usr/bin/python3
"""Generate extension control files and deploy artefacts from the registry.

Reads registry/services.conf (the single source of truth for every pgcloud
service), validates it, and writes:

  extension/<core>.control            control file of the core extension
  extension/pgcloud_<service>.control one per service
  extension/<meta>.control            meta-extension requiring all of the above
  deploy/init-databases.sql           psql script: one database per service
  deploy/env/<service>.env            environment of each service
  deploy/postgrest/<service>.conf     PostgREST config of each service
  deploy/nats/streams.json            JetStream stream and durable consumers
  deploy/nats/authorization.conf      NATS users and permissions per service
  deploy/routes.conf                  reverse-proxy routing table
  sql/generated/subscriptions.sql     rows for pgcloud.services/subscriptions
  META.json                           PGXN metadata, one "provides" per extension
  docs/services/<service>.md          one page per service (and core): what it
                                      is, its api functions from their
                                      CREATE FUNCTION / COMMENT / GRANT
                                      statements, events, jobs, policies,
                                      error codes, tables (scripts/servicedocs.py)
  README.md                           the table between the services:begin/end
                                      markers, linking those pages

--check also runs scripts/upgrade.py's check: a table changed since a release
frozen in sql/history/ without its sql/upgrades/ fragment fails it.

Usage:
  python3 scripts/generate.py           write the files that changed
  python3 scripts/generate.py --check   write nothing; exit 1 if anything
                                        would change (missing, different or
                                        stale files), 0 otherwise

Exit status: 0 success / up to date, 1 --check found changes, 2 invalid
registry or other error.

Python 3 standard library only (runs with Debian 12's /usr/bin/python3).
"""

import argparse
import configparser
import json
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REGISTRY = "registry/services.conf"
HEADER = "generated from registry/services.conf — do not edit"

# Directories whose generated files this script owns: a file there with the
# given suffix whose first line carries HEADER, and which is no longer
# produced, is deleted as stale.
OWNED_DIRS = {
    "extension": ".control",
    "deploy/env": ".env",
    "deploy/postgrest": ".conf",
    "docs/services": ".md",
}

PLATFORM_KEYS = (
    "version",
    "pg_host",
    "pg_port",
    "postgrest_base_port",
    "nats_stream",
    "nats_subject_prefix",
)
CORE_KEYS = ("extension", "schema", "comment")
META_KEYS = ("extension", "comment")
SERVICE_KEYS = (
    "schema",
    "database",
    "layer",
    "depends_on",
    "publishes",
    "subscribes",
    "route",
    "http_targets",
    "comment",
)
# Keys whose value may be empty (lists).
LIST_KEYS = ("depends_on", "publishes", "subscribes", "http_targets")
HTTP_TARGETS = ("stripe", "maas", "smtp", "s3", "test")
LAYERS = ("platform", "shared", "domain")

IDENT_RE = re.compile(r"^[a-z][a-z0-9_]*$")
EVENT_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
PATTERN_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*\.(\*|>)$")
VERSION_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
ROUTE_RE = re.compile(r"^(/[A-Za-z0-9._~-]+)+$")
STREAM_RE = re.compile(r"^[A-Za-z0-9_-]+$")
HOST_RE = re.compile(r"^[A-Za-z0-9.-]+$")

# Event types published by the core extension itself.
CORE_PUBLISHES = ("platform.alert", "audit.recorded")

AUTHENTICATOR = "pgcloud_authenticator"
ANON_ROLE = "pgcloud_anon"
MODULE_PATHNAME = "$libdir/pgcloud"


class RegistryError(Exception):
    pass


# --------------------------------------------------------------------------
# Registry loading and validation
# --------------------------------------------------------------------------


def load_registry(path):
    errors = []
    # default_section is set to a name no INI file can use, so that a
    # [DEFAULT] section is an ordinary (and therefore unknown) section rather
    # than silently leaking keys into every other section.
    cp = configparser.ConfigParser(
        interpolation=None,
        default_section="\x00no default section",
        strict=True,
        empty_lines_in_values=False,
    )
    cp.optionxform = str  # keep key case, so "Schema" is reported as unknown
    try:
        with open(path, encoding="utf-8") as f:
            cp.read_file(f, source=REGISTRY)
    except OSError as e:
        raise RegistryError(["cannot read %s: %s" % (REGISTRY, e)])
    except configparser.Error as e:
        raise RegistryError(["%s: %s" % (REGISTRY, " ".join(str(e).split()))])

    def section(name, keys):
        if not cp.has_section(name):
            errors.append("missing section [%s]" % name)
            return None
        values = {}
        for key in cp.options(name):
            if key not in keys:
                errors.append("[%s]: unknown key %r (allowed: %s)"
                              % (name, key, ", ".join(keys)))
        for key in keys:
            if not cp.has_option(name, key):
                errors.append("[%s]: missing key %r" % (name, key))
                continue
            value = cp.get(name, key).strip()
            if "\n" in value:
                errors.append("[%s] %s: value spans several lines" % (name, key))
            if key in LIST_KEYS:
                values[key] = value.split()
            else:
                if value == "":
                    errors.append("[%s]: key %r is empty" % (name, key))
                values[key] = value
        return values

    platform = section("platform", PLATFORM_KEYS)
    core = section("core", CORE_KEYS)
    meta = section("meta", META_KEYS)

    services = []  # list of (name, dict), registry order
    for name in cp.sections():
        if name in ("platform", "core", "meta"):
            continue
        if not name.startswith("service."):
            errors.append("unknown section [%s] (expected [platform], [core], "
                          "[meta] or [service.<name>])" % name)
            continue
        svc = name[len("service."):]
        values = section(name, SERVICE_KEYS)
        if not IDENT_RE.match(svc):
            errors.append("[%s]: service name %r is not snake_case "
                          "(^[a-z][a-z0-9_]*$)" % (name, svc))
        services.append((svc, values))

    if errors:
        raise RegistryError(errors)
    if not services:
        raise RegistryError(["no [service.<name>] sections"])

    validate(platform, core, meta, services)
    return platform, core, meta, services


def tokens_overlap(a, b):
    """True when some subject matches both NATS-style patterns a and b."""
    ta, tb = a.split("."), b.split(".")
    i = 0
    while True:
        ea, eb = i >= len(ta), i >= len(tb)
        if ea or eb:
            return ea and eb
        x, y = ta[i], tb[i]
        if x == ">" or y == ">":
            return True
        if x != "*" and y != "*" and x != y:
            return False
        i += 1


def pattern_matches(pattern, event):
    """True when subscription `pattern` matches concrete event type `event`."""
    return tokens_overlap(pattern, event)


def validate(platform, core, meta, services):
    errors = []

    def check_ident(where, what, value):
        if not IDENT_RE.match(value):
            errors.append("%s: %s %r is not snake_case (^[a-z][a-z0-9_]*$)"
                          % (where, what, value))

    # [platform]
    if not VERSION_RE.match(platform["version"]):
        errors.append("[platform]: version %r is not a dotted version number"
                      % platform["version"])
    if not HOST_RE.match(platform["pg_host"]):
        errors.append("[platform]: pg_host %r is not a host name"
                      % platform["pg_host"])
    for key in ("pg_port", "postgrest_base_port"):
        v = platform[key]
        if not v.isdigit() or not 1 <= int(v) <= 65535:
            errors.append("[platform]: %s %r is not a TCP port" % (key, v))
    if platform["postgrest_base_port"].isdigit():
        last = int(platform["postgrest_base_port"]) + len(services) - 1
        if last > 65535:
            errors.append("[platform]: postgrest_base_port leaves no room for "
                          "%d services" % len(services))
    if not STREAM_RE.match(platform["nats_stream"]):
        errors.append("[platform]: nats_stream %r may only hold letters, "
                      "digits, '_' and '-'" % platform["nats_stream"])
    if not IDENT_RE.match(platform["nats_subject_prefix"]):
        errors.append("[platform]: nats_subject_prefix %r must be a single "
                      "subject token (^[a-z][a-z0-9_]*$)"
                      % platform["nats_subject_prefix"])

    # [core] / [meta]
    check_ident("[core]", "extension", core["extension"])
    check_ident("[core]", "schema", core["schema"])
    check_ident("[meta]", "extension", meta["extension"])
    for where, sec in (("[core]", core), ("[meta]", meta)):
        if "'" in sec["comment"]:
            errors.append("%s: comment must not contain a single quote" % where)
    if core["extension"] == meta["extension"]:
        errors.append("[core] and [meta] name the same extension %r"
                      % core["extension"])

    names = [n for n, _ in services]
    seen = set()
    for n in names:
        if n in seen:
            errors.append("service %r is defined twice" % n)
        seen.add(n)

    ext_names = {core["extension"]: "[core]", meta["extension"]: "[meta]"}
    databases = {}
    routes = {}
    publishers = {e: "core" for e in CORE_PUBLISHES}

    for n, s in services:
        where = "[service.%s]" % n
        ext = "pgcloud_" + n
        if ext in ext_names:
            errors.append("%s: extension name %s clashes with %s"
                          % (where, ext, ext_names[ext]))
        ext_names[ext] = where
        if n == core["schema"]:
            errors.append("%s: service name clashes with the core schema %r"
                          % (where, core["schema"]))

        if s["schema"] != n:
            errors.append("%s: schema %r must equal the service name %r"
                          % (where, s["schema"], n))
        check_ident(where, "database", s["database"])
        if len(s["database"]) > 63:
            errors.append("%s: database name %r is longer than 63 bytes"
                          % (where, s["database"]))
        if s["database"] in databases:
            errors.append("%s: database %r is already used by %s"
                          % (where, s["database"], databases[s["database"]]))
        databases.setdefault(s["database"], where)

        if s["layer"] not in LAYERS:
            errors.append("%s: layer %r is not one of %s"
                          % (where, s["layer"], "|".join(LAYERS)))

        route = s["route"]
        if not ROUTE_RE.match(route):
            errors.append("%s: route %r must look like /segment[/segment...] "
                          "with no trailing slash" % (where, route))
        key = route.rstrip("/").lower()
        if key in routes:
            errors.append("%s: route prefix %r duplicates the one of %s"
                          % (where, route, routes[key]))
        routes.setdefault(key, where)

        if "'" in s["comment"]:
            errors.append("%s: comment must not contain a single quote" % where)

        for key in LIST_KEYS:
            dup = sorted({x for x in s[key] if s[key].count(x) > 1})
            if dup:
                errors.append("%s: %s lists %s more than once"
                              % (where, key, ", ".join(dup)))

        for d in s["depends_on"]:
            if d == n:
                errors.append("%s: depends_on names the service itself" % where)
            elif d not in names:
                errors.append("%s: depends_on names unknown service %r"
                              % (where, d))

        for e in s["publishes"]:
            if not EVENT_RE.match(e):
                errors.append("%s: published event type %r does not match "
                              "^[a-z][a-z0-9_]*(\\.[a-z][a-z0-9_]*)+$"
                              % (where, e))
                continue
            if e in publishers and publishers[e] != n:
                errors.append("%s: event type %r is already published by %s"
                              % (where, e, publishers[e]))
            publishers.setdefault(e, n)

        for t in s["http_targets"]:
            if t not in HTTP_TARGETS:
                errors.append("%s: http_targets names unknown target %r "
                              "(known: %s)" % (where, t, ", ".join(HTTP_TARGETS)))

        subs = s["subscribes"]
        for i, e in enumerate(subs):
            if not (EVENT_RE.match(e) or PATTERN_RE.match(e)):
                errors.append("%s: subscription %r is neither an event type "
                              "(a.b[.c...]) nor a pattern ending in .* or .>"
                              % (where, e))
                continue
            for f in subs[i + 1:]:
                if f != e and tokens_overlap(e, f):
                    errors.append("%s: subscriptions %r and %r overlap (a NATS "
                                  "consumer rejects overlapping filters)"
                                  % (where, e, f))

    if errors:
        raise RegistryError(errors)

    # Subscriptions must match something somebody publishes.
    for n, s in services:
        for e in s["subscribes"]:
            if not any(pattern_matches(e, p) for p in publishers):
                errors.append("[service.%s]: subscription %r matches no event "
                              "type any service (or the core) publishes"
                              % (n, e))
    if errors:
        raise RegistryError(errors)


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------


def sql_lit(s):
    return "'" + s.replace("'", "''") + "'"


def sql_array(items):
    if not items:
        return "'{}'::text[]"
    return "ARRAY[" + ", ".join(sql_lit(x) for x in items) + "]::text[]"


def control_file(comment, version, module_pathname, requires):
    lines = [
        "# " + HEADER,
        "comment = " + sql_lit(comment),
        "default_version = " + sql_lit(version),
    ]
    if module_pathname:
        lines.append("module_pathname = " + sql_lit(module_pathname))
    lines += ["relocatable = false", "superuser = true"]
    if requires:
        lines.append("requires = " + sql_lit(", ".join(requires)))
    return "\n".join(lines) + "\n"


def render(platform, core, meta, services):
    out = {}
    version = platform["version"]
    host = platform["pg_host"]
    pg_port = platform["pg_port"]
    base_port = int(platform["postgrest_base_port"])
    prefix = platform["nats_subject_prefix"]
    stream = platform["nats_stream"]
    ports = {n: base_port + i for i, (n, _) in enumerate(services)}

    def db_uri(n):
        # Each service's PostgREST logs in as a role of its own, which may
        # connect to the service's database only (init-databases.sql).
        return "postgresql://%s_%s@%s:%s/%s" % (AUTHENTICATOR, n, host, pg_port, dict(services)[n]["database"])

    # 1-3. Control files.
    out["extension/%s.control" % core["extension"]] = control_file(
        core["comment"], version, MODULE_PATHNAME, None)
    for n, s in services:
        out["extension/pgcloud_%s.control" % n] = control_file(
            s["comment"], version, MODULE_PATHNAME, [core["extension"]])
    out["extension/%s.control" % meta["extension"]] = control_file(
        meta["comment"], version, None,
        [core["extension"]] + ["pgcloud_" + n for n, _ in services])

    # 4. deploy/init-databases.sql
    lines = [
        "-- " + HEADER,
        "--",
        "-- Creates one database per pgcloud service and installs the service's",
        "-- extension (and, through CASCADE, %s) into it." % core["extension"],
        "-- Run as a superuser against an existing maintenance database:",
        "--   psql -X -d postgres -f deploy/init-databases.sql",
        "-- %s creates the cluster-wide roles (%s, %s and" % (
            core["extension"], AUTHENTICATOR, ANON_ROLE),
        "-- pgcloud_svc_<service>) when they are missing, so CONNECT is granted",
        "-- only after each CREATE EXTENSION.",
        "",
        "\\set ON_ERROR_STOP on",
    ]
    for n, s in services:
        db = s["database"]
        lines += [
            "",
            "-- service %s: database %s, schema %s, role pgcloud_svc_%s" % (
                n, db, s["schema"], n),
            "CREATE DATABASE %s;" % db,
            "\\connect %s" % db,
            "CREATE EXTENSION pgcloud_%s CASCADE;" % n,
            "REVOKE CONNECT, TEMPORARY ON DATABASE %s FROM PUBLIC;" % db,
            "-- Its PostgREST's login role, for this database only (not the shared %s)." % AUTHENTICATOR,
            "REVOKE CONNECT ON DATABASE %s FROM %s;" % (db, AUTHENTICATOR),
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = '%s_%s') THEN "
            "CREATE ROLE %s_%s LOGIN NOINHERIT; END IF; END $$;" % (AUTHENTICATOR, n, AUTHENTICATOR, n),
            "GRANT pgcloud_anon, pgcloud_user, pgcloud_admin, pgcloud_service TO %s_%s;" % (AUTHENTICATOR, n),
            "GRANT CONNECT ON DATABASE %s TO %s_%s;" % (db, AUTHENTICATOR, n),
        ]
    out["deploy/init-databases.sql"] = "\n".join(lines) + "\n"

    # 5. deploy/env/<service>.env
    for n, s in services:
        out["deploy/env/%s.env" % n] = "\n".join([
            "# " + HEADER,
            "# No password here: supply it through ~/.pgpass or PGPASSWORD.",
            "DATABASE_URL=" + db_uri(n),
            "PGCLOUD_SERVICE=" + n,
            "PGCLOUD_SCHEMA=" + s["schema"],
            "PGRST_SERVER_PORT=%d" % ports[n],
        ]) + "\n"

    # 6. deploy/postgrest/<service>.conf
    for n, s in services:
        out["deploy/postgrest/%s.conf" % n] = "\n".join([
            "# " + HEADER,
            "# PostgREST configuration of service %s (%s)." % (n, s["route"]),
            "",
            "# No password here. In production set PGRST_DB_URI (it overrides",
            "# this value) or give the PostgREST user a ~/.pgpass entry.",
            'db-uri = "%s"' % db_uri(n),
            'db-schemas = "api"',
            'db-anon-role = "%s"' % ANON_ROLE,
            'db-pre-request = "pgcloud.pre_request"',
            "db-max-rows = 1000",
            "",
            "# The file must hold the output of: SELECT api.jwks();",
            'jwt-secret = "@/etc/pgcloud/jwks.json"',
            'jwt-role-claim-key = ".role"',
            "",
            "server-port = %d" % ports[n],
            'openapi-mode = "follow-privileges"',
            'log-level = "error"',
        ]) + "\n"

    # 7. deploy/nats/streams.json
    consumers = []
    for n, s in services:
        # As pgcloud.nats_subscribers(): also a service that subscribes to
        # nothing but must learn of revoked sessions in a database of its own.
        if not s["subscribes"] and "session.revoked" in s["publishes"]:
            continue
        # One filter for the whole stream: nats-server 2.9 (Debian 12) has no
        # filter_subjects. The consumer worker acks events the service does not
        # subscribe to without applying them; "subscribes" documents the rest.
        consumers.append({
            "stream": stream,
            "durable_name": n,
            "filter_subject": prefix + ".>",
            "subscribes": [prefix + "." + e for e in s["subscribes"]],
            "ack_policy": "explicit",
            "deliver_policy": "all",
            "max_deliver": -1,
            "max_ack_pending": 1000,
            "ack_wait_seconds": 30,
        })
    doc = {
        "_comment": HEADER,
        "streams": [{
            "name": stream,
            "subjects": [prefix + ".>"],
            "storage": "file",
            "retention": "limits",
            "duplicate_window_seconds": 120,
            "num_replicas": 1,
        }],
        "consumers": consumers,
    }
    out["deploy/nats/streams.json"] = json.dumps(
        doc, indent=2, ensure_ascii=False) + "\n"
    out["deploy/nats/nats-server.conf"] = "\n".join([
        "# " + HEADER,
        "#",
        "# JetStream settings pgcloud requires in production. A JetStream ack is not",
        "# an fsync under nats-server's defaults (sync every 2 minutes): Jepsen's 2025",
        "# analysis lost acknowledged writes that way. The relay keeps an event in",
        "# the outbox until its ack, so the ack must mean 'on disk':",
        "#   - sync_interval: always  (nats-server >= 2.10) fsyncs before acking;",
        "#   - run a 3-node cluster and streams with num_replicas: 3, so an ack",
        "#     means a quorum has the message.",
        "# Debian 12 ships nats-server 2.9.10, which lacks sync_interval: the test",
        "# suite runs it with file storage only, and says so.",
        "",
        "#",
        "# Every connection is authenticated (no anonymous user) and encrypted:",
        "# each service database's relay and consumer connect as that service's",
        "# user (pgcloud.nats_url = tls://pgcloud_<service>:<password>@host:4222,",
        "# or the user and password in the file pgcloud.nats_credentials names),",
        "# whose permissions authorization.conf derives from the registry.",
        "# Passwords come from the environment of nats-server",
        "# (PGCLOUD_NATS_PASSWORD_<SERVICE>, ..._PLATFORM, ..._OPERATOR).",
        "",
        "listen: 0.0.0.0:4222",
        "tls {",
        "  cert_file: /etc/pgcloud/nats/server-cert.pem",
        "  key_file: /etc/pgcloud/nats/server-key.pem",
        "  timeout: 2",
        "}",
        "include ./authorization.conf",
        "jetstream {",
        "  store_dir: /var/lib/nats/jetstream",
        "  sync_interval: always",
        "  max_file_store: 64GB",
        "}",
        "",
    ])
    out["deploy/nats/authorization.conf"] = nats_authorization(
        platform, services)

    # 8. deploy/routes.conf
    width_r = max(len(s["route"]) for _, s in services)
    width_n = max(len(n) for n, _ in services)
    lines = [
        "# " + HEADER,
        "#",
        "# Reverse-proxy routing table, one service per line, columns separated",
        "# by spaces:",
        "#   <route prefix>  <service>  <upstream PostgREST base URL>",
        "# Requests under <route prefix> go to the upstream with the prefix",
        "# stripped.",
    ]
    for n, s in services:
        lines.append("%s %s http://127.0.0.1:%d" % (
            s["route"].ljust(width_r), n.ljust(width_n), ports[n]))
    out["deploy/routes.conf"] = "\n".join(lines) + "\n"

    # 9. sql/generated/subscriptions.sql
    lines = [
        "-- " + HEADER,
        "--",
        "-- Service and subscription registry rows. Concatenated into the",
        "-- %s install script: plain INSERTs only." % core["extension"],
        "",
        "INSERT INTO pgcloud.services (name, schema_name, database_name, layer, "
        "route_prefix, publishes, subscribes, depends_on, http_targets) VALUES",
    ]
    rows = []
    for n, s in services:
        rows.append("  (%s, %s, %s, %s, %s,\n   %s,\n   %s,\n   %s,\n   %s)" % (
            sql_lit(n), sql_lit(s["schema"]), sql_lit(s["database"]),
            sql_lit(s["layer"]), sql_lit(s["route"]),
            sql_array(s["publishes"]), sql_array(s["subscribes"]),
            sql_array(s["depends_on"]), sql_array(s["http_targets"])))
    lines.append(",\n".join(rows) + ";")
    rows = [(n, e) for n, s in services for e in s["subscribes"]]
    if rows:
        lines += [
            "",
            "INSERT INTO pgcloud.subscriptions (subscriber, event_type) VALUES",
            ",\n".join("  (%s, %s)" % (sql_lit(n), sql_lit(e))
                       for n, e in rows) + ";",
        ]
    out["sql/generated/subscriptions.sql"] = "\n".join(lines) + "\n"

    out["META.json"] = meta_json(platform, core, meta, services)

    # 10. docs/services/<service>.md and the README's service table.
    import servicedocs
    out.update(servicedocs.render(ROOT, HEADER, core, meta, services, CORE_PUBLISHES))
    return out


def nats_authorization(platform, services):
    """NATS users and permissions, one user per service, from the registry.

    A service's user may publish only the subjects of the event types it
    owns, and use only its own durable consumer; every reply travels on an
    inbox prefix of its own (the workers set it), so no user reads another's
    deliveries. pgcloud_platform serves a database that hosts every service
    (development); pgcloud_operator manages the stream.
    """
    prefix = platform["nats_subject_prefix"]
    stream = platform["nats_stream"]
    api = "$JS.API"

    def consumer_rights(durable):
        return [
            "%s.CONSUMER.INFO.%s.%s" % (api, stream, durable),
            "%s.CONSUMER.DURABLE.CREATE.%s.%s" % (api, stream, durable),
            "%s.CONSUMER.CREATE.%s.%s" % (api, stream, durable),
            "%s.CONSUMER.MSG.NEXT.%s.%s" % (api, stream, durable),
            # The consumer takes its durable over from the ack floor after a
            # crash (bgworkers/consumer.c, ensure_subscription): delete, create.
            "%s.CONSUMER.DELETE.%s.%s" % (api, stream, durable),
            "$JS.ACK.%s.%s.>" % (stream, durable),
        ]

    def user(name, env, publish, inbox):
        lines = [
            "    {",
            "      user: %s" % name,
            "      password: $%s" % env,
            "      permissions: {",
            "        publish: {allow: [%s]}" % ", ".join(
                json.dumps(x) for x in publish),
            "        subscribe: {allow: [%s]}" % json.dumps(inbox + ".>"),
            "      }",
            "    }",
        ]
        return "\n".join(lines)

    common = ["%s.INFO" % api, "%s.STREAM.INFO.%s" % (api, stream)]
    # The core of every database announces its audit rows and alerts: a
    # service's own database needs them through (subscribers still check
    # that their source is the core).
    core_subjects = ["%s.%s" % (prefix, e) for e in CORE_PUBLISHES]
    users = []
    for n, s in services:
        pub = ["%s.%s" % (prefix, e) for e in s["publishes"]] + core_subjects + common
        # pgcloud.nats_subscribers(): a service that subscribes to nothing has a
        # durable anyway (to learn of revoked sessions) unless it revokes them.
        if s["subscribes"] or "session.revoked" not in s["publishes"]:
            pub += consumer_rights(n)
        users.append(user("pgcloud_" + n, "PGCLOUD_NATS_PASSWORD_" + n.upper(),
                          pub, "_INBOX_pgcloud_" + n))
    allpub = ["%s.%s" % (prefix, e) for n, s in services for e in s["publishes"]]
    allpub += ["%s.platform.>" % prefix, "%s.audit.recorded" % prefix] + common
    for n, s in services:
        if s["subscribes"] or "session.revoked" not in s["publishes"]:
            allpub += consumer_rights(n)
    users.append(user("pgcloud_platform", "PGCLOUD_NATS_PASSWORD_PLATFORM",
                      allpub, "_INBOX_pgcloud_platform"))
    users.append("\n".join([
        "    {",
        "      user: pgcloud_operator",
        "      password: $PGCLOUD_NATS_PASSWORD_OPERATOR",
        "      permissions: {publish: {allow: [\"$JS.API.>\"]}, "
        "subscribe: {allow: [\"_INBOX_pgcloud_operator.>\"]}}",
        "    }",
    ]))
    return "\n".join([
        "# " + HEADER,
        "#",
        "# NATS users of pgcloud, derived from the registry: pgcloud_<service> may",
        "# publish only %s.<event type> for the event types the service" % prefix,
        "# publishes, read only through its own durable consumer, and receive",
        "# replies only on _INBOX_pgcloud_<service>.>. The relay and consumer of a",
        "# database connect as the user named in pgcloud.nats_url or",
        "# pgcloud.nats_credentials. pgcloud_platform is for a database that",
        "# hosts every service (development); pgcloud_operator creates and edits",
        "# the stream (deploy/nats/streams.json). Passwords are read from the",
        "# environment of nats-server; there is no anonymous user.",
        "",
        "authorization {",
        "  timeout: 2",
        "  users = [",
        "\n".join(users),
        "  ]",
        "}",
        "",
    ])


def meta_json(platform, core, meta, services):
    """META.json for PGXN (meta spec 1.0.0): one provides entry per extension."""
    version = platform["version"]

    def entry(ext, abstract, docfile=None):
        e = {"abstract": abstract, "file": "build/%s--%s.sql" % (ext, version),
             "version": version}
        if docfile:
            e["docfile"] = docfile
        return e

    provides = {meta["extension"]: entry(meta["extension"], meta["comment"], "README.md"),
                core["extension"]: entry(core["extension"], core["comment"], "docs/services/core.md")}
    for n, s in services:
        provides["pgcloud_" + n] = entry("pgcloud_" + n, s["comment"], "docs/services/%s.md" % n)
    doc = {
        "x_comment": HEADER,
        "name": "pgcloud",
        "abstract": "The backend of a bare-metal / GPU cloud as PostgreSQL extensions in C",
        "description": ("Sign-in and tokens, capacity and placement, MAAS provisioning, metering on an "
                        "immutable ledger, Stripe payments, terminal and app sessions, storage metadata, "
                        "managed databases, audit, notifications and an event stream (transactional "
                        "outbox, NATS JetStream) inside PostgreSQL 15, with an api schema PostgREST "
                        "serves as it is."),
        "version": version,
        "maintainer": ["pgcloud engineers"],
        "license": "postgresql",
        "provides": provides,
        "prereqs": {
            "runtime": {"requires": {"PostgreSQL": "15.0.0"},
                        "recommends": {"pg_cron": "1.4.0"}},
            "test": {"requires": {"pgtap": "1.2.0"}},
        },
        "release_status": "unstable",
        "generated_by": "scripts/generate.py",
        "tags": ["cloud", "gpu", "billing", "stripe", "maas", "nats", "outbox", "postgrest"],
        "meta-spec": {"version": "1.0.0", "url": "https://pgxn.org/meta/spec.txt"},
    }
    return json.dumps(doc, indent=3, sort_keys=False) + "\n"


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------


def read_text(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def stale_files(out):
    stale = []
    for d, suffix in sorted(OWNED_DIRS.items()):
        full = os.path.join(ROOT, d)
        if not os.path.isdir(full):
            continue
        for name in sorted(os.listdir(full)):
            rel = d + "/" + name
            path = os.path.join(full, name)
            if rel in out or not name.endswith(suffix):
                continue
            if not os.path.isfile(path) or os.path.islink(path):
                continue
            try:
                with open(path, "rb") as f:
                    first = f.readline(4096).decode("utf-8", "replace")
            except OSError:
                continue
            if HEADER in first:
                stale.append(rel)
    return stale


def write_atomic(path, text):
    d = os.path.dirname(path)
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".generate-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Generate extension/*.control, deploy/* and "
                    "sql/generated/subscriptions.sql from " + REGISTRY + ".")
    ap.add_argument("--check", action="store_true",
                    help="write nothing; exit 1 and list the files that would "
                         "change (missing, different or stale)")
    args = ap.parse_args(argv)

    try:
        platform, core, meta, services = load_registry(
            os.path.join(ROOT, REGISTRY))
    except RegistryError as e:
        errs = e.args[0]
        sys.stderr.write("generate.py: invalid %s (%d error%s):\n" % (
            REGISTRY, len(errs), "" if len(errs) == 1 else "s"))
        for msg in errs:
            sys.stderr.write("  " + msg + "\n")
        return 2

    out = render(platform, core, meta, services)
    # Deployment shapes (registry/deployments.conf -> deploy/<shape>/).
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import deployments
    try:
        out.update(deployments.render_deployments(ROOT, platform, core, meta,
                                                  services, out))
    except deployments.DeploymentError as e:
        sys.stderr.write("generate.py: invalid %s:\n" % deployments.DEPLOYMENTS)
        for msg in e.args[0]:
            sys.stderr.write("  " + msg + "\n")
        return 2
    changed = []
    for rel in sorted(out):
        current = read_text(os.path.join(ROOT, rel))
        if current is None:
            changed.append((rel, "missing"))
        elif current != out[rel]:
            changed.append((rel, "differs"))
    stale = stale_files(out) + deployments.stale(ROOT, out)
    # Upgrade scripts are built by make (scripts/upgrade.py); a table change
    # since an earlier release needs its hand-written fragment.
    import upgrade
    upgrade_problems = upgrade.check(platform["version"])
    for msg in upgrade_problems:
        sys.stderr.write("generate.py: upgrade from an earlier release: " + msg + "\n")

    if args.check:
        for rel, why in changed:
            print("would write %s (%s)" % (rel, why))
        for rel in stale:
            print("would delete %s (stale)" % rel)
        if changed or stale:
            sys.stderr.write("generate.py: generated files are out of date; "
                             "run: python3 scripts/generate.py\n")
            return 1
        return 1 if upgrade_problems else 0

    for rel, _ in changed:
        write_atomic(os.path.join(ROOT, rel), out[rel])
        print("wrote " + rel)
    for rel in stale:
        os.unlink(os.path.join(ROOT, rel))
        print("deleted " + rel)
    return 1 if upgrade_problems else 0


if __name__ == "__main__":
    sys.exit(main())
