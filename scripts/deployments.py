"""Deployment shapes (registry/deployments.conf) -> deploy/<shape>/.

Imported by scripts/generate.py: render_deployments() returns the files of
every shape, keyed by path relative to the repository, from the deployment
description and the already loaded service registry. Each shape says which
service's database lives on which PostgreSQL cluster; the code is the same
in all of them.

Per shape (deploy/<shape>/):
  layout.tsv                   one line per database: cluster port database services
  <cluster>/init.sql           CREATE DATABASE + CREATE EXTENSION + grants of that cluster
  <cluster>/postgresql.conf    settings to append: port, preload, pgcloud.databases, NATS
  <cluster>/pg_hba.conf        (per-service layouts) each service's PostgREST role logs in
                               to its own database only; worker and service roles never
  env/<service>.env            the service's DATABASE_URL (seed 004's format)
  postgrest/<service>.conf     one PostgREST per service, pointed at its database
  nats/<node>.conf             (per-service layouts) the 3 JetStream nodes, routed
  nats/authorization.conf      the per-service NATS users (same as deploy/nats)
  nats/streams.json            the stream, num_replicas from [nats] replicas
"""

import configparser
import json
import re

DEPLOYMENTS = "registry/deployments.conf"
HEADER = "generated from registry/deployments.conf and registry/services.conf — do not edit"
# Root directories the shapes are written into (for the staleness check).
LAYOUTS = ("single", "per-service")
NAME_RE = re.compile(r"^[a-z][a-z0-9-]*$")
# Where the node configurations expect their files (operators put them there;
# scripts/multicluster.sh and the TAP test rewrite these prefixes).
NATS_CERT_DIR = "/etc/pgcloud/nats"
NATS_STORE_DIR = "/var/lib/nats"
# Relative to the data directory of each cluster (the workers' cwd).
SECRETS_DIR = "pgcloud-secrets"
WORKERS_PER_DATABASE = 4      # relay, consumer, http, scheduler
# Background worker slots besides pgcloud's per-database workers: the pgcloud
# launcher, PostgreSQL's logical replication launcher, the parallel query
# workers (max_parallel_workers, taken from the same pool) and headroom.
PARALLEL_WORKERS = 4
OTHER_WORKER_SLOTS = 1 + 1 + PARALLEL_WORKERS + 4
# Client connections: each service's PostgREST pool and its operators, per database.
CONNECTIONS_PER_DATABASE = 20


def cluster_sizing(ndatabases):
    """The settings sized from the number of databases a cluster holds: every
    database's workers must find a slot (a worker that does not is missing
    until an operator restarts the cluster with more), after a crash-restart
    too."""
    return ["# Sized for %d database(s): %d pgcloud workers each, the launcher, PostgreSQL's own"
            % (ndatabases, WORKERS_PER_DATABASE),
            "# and %d parallel query workers (the same pool), and headroom." % PARALLEL_WORKERS,
            "max_worker_processes = %d" % (WORKERS_PER_DATABASE * ndatabases + OTHER_WORKER_SLOTS),
            "max_parallel_workers = %d" % PARALLEL_WORKERS,
            "max_connections = %d" % max(100, CONNECTIONS_PER_DATABASE * ndatabases)]


def authenticator_of(service):
    """The login role of a service's PostgREST in the per-service layouts:
    LOGIN NOINHERIT, the API roles, CONNECT on the service's database only."""
    return "pgcloud_authenticator_" + service


class DeploymentError(Exception):
    pass


def load(path, services):
    cp = configparser.ConfigParser(interpolation=None, delimiters=("=",),
                                   comment_prefixes=("#", ";"),
                                   inline_comment_prefixes=None)
    cp.optionxform = str
    with open(path, encoding="utf-8") as f:
        cp.read_file(f)
    errs = []
    names = [n for n, _ in services]
    if not cp.has_section("nats"):
        raise DeploymentError(["%s: no [nats] section" % DEPLOYMENTS])
    n = dict(cp.items("nats"))
    nats = {
        "nodes": n.get("nodes", "").split(),
        "host": n.get("host", "127.0.0.1"),
        "cluster_name": n.get("cluster_name", "pgcloud"),
    }
    for k in ("client_base_port", "route_base_port", "monitor_base_port", "replicas"):
        try:
            nats[k] = int(n[k])
        except (KeyError, ValueError):
            errs.append("[nats] %s: missing or not a number" % k)
    if len(nats["nodes"]) < 3:
        errs.append("[nats] nodes: a JetStream cluster needs at least 3 nodes")
    if not errs and nats["replicas"] > len(nats["nodes"]):
        errs.append("[nats] replicas: more than the nodes")
    shapes = []
    for sec in cp.sections():
        if sec == "nats":
            continue
        if not sec.startswith("shape."):
            errs.append("unknown section [%s]" % sec)
            continue
        name = sec[len("shape."):]
        if not NAME_RE.match(name):
            errs.append("[%s]: bad shape name" % sec)
            continue
        v = dict(cp.items(sec))
        layout = v.get("layout", "")
        if layout not in LAYOUTS:
            errs.append("[%s] layout: one of %s" % (sec, ", ".join(LAYOUTS)))
            continue
        clusters = []
        placed = {}
        for c in v.get("clusters", "").split():
            if not NAME_RE.match(c):
                errs.append("[%s]: bad cluster name %s" % (sec, c))
                continue
            try:
                port = int(v.get(c + ".port", ""))
            except ValueError:
                errs.append("[%s] %s.port: missing or not a number" % (sec, c))
                continue
            svcs = v.get(c + ".services", "").split()
            if svcs == ["*"]:
                svcs = list(names)
            for s in svcs:
                if s not in names:
                    errs.append("[%s] %s.services: no service %s" % (sec, c, s))
                elif s in placed:
                    errs.append("[%s]: service %s on %s and %s" % (sec, s, placed[s], c))
                else:
                    placed[s] = c
            # Registry order within a cluster.
            clusters.append({"name": c, "port": port,
                             "services": [s for s in names if s in svcs]})
        if not clusters:
            errs.append("[%s]: no clusters" % sec)
        missing = [s for s in names if s not in placed]
        if missing:
            errs.append("[%s]: services on no cluster: %s" % (sec, " ".join(missing)))
        if layout == "single" and len(clusters) != 1:
            errs.append("[%s]: layout single has exactly one cluster" % sec)
        ports = [c["port"] for c in clusters]
        if len(set(ports)) != len(ports):
            errs.append("[%s]: two clusters on one port" % sec)
        shapes.append({"name": name, "comment": v.get("comment", ""), "layout": layout,
                       "clusters": clusters})
    if errs:
        raise DeploymentError(errs)
    return nats, shapes


def nats_urls(nats):
    return ",".join("tls://%s:%d" % (nats["host"], nats["client_base_port"] + i)
                    for i in range(len(nats["nodes"])))


def render_deployments(root, platform, core, meta, services, base_out):
    """Files of every shape. base_out: generate.py's own output (the NATS
    users and stream of deploy/nats are reused, the replicas raised)."""
    import os
    nats, shapes = load(os.path.join(root, DEPLOYMENTS), services)
    svc = dict(services)
    names = [n for n, _ in services]
    base_port = int(platform["postgrest_base_port"])
    rest_port = {n: base_port + i for i, n in enumerate(names)}
    host = platform["pg_host"]
    out = {}
    for shape in shapes:
        d = "deploy/%s/" % shape["name"]
        single = shape["layout"] == "single"

        def database_of(n):
            return "pgcloud" if single else svc[n]["database"]

        cluster_of = {n: c for c in shape["clusters"] for n in c["services"]}
        auth_cluster = cluster_of.get("auth")
        # layout.tsv
        lines = ["# " + HEADER,
                 "# %s" % shape["comment"],
                 "# cluster port database services(comma-separated)"]
        for c in shape["clusters"]:
            if single:
                lines.append("%s %d pgcloud %s" % (c["name"], c["port"], ",".join(c["services"])))
            else:
                for n in c["services"]:
                    lines.append("%s %d %s %s" % (c["name"], c["port"], svc[n]["database"], n))
        out[d + "layout.tsv"] = "\n".join(lines) + "\n"

        for c in shape["clusters"]:
            # init.sql
            lines = ["-- " + HEADER,
                     "--",
                     "-- Cluster %s of shape %s (port %d): %s." % (
                         c["name"], shape["name"], c["port"],
                         "one database with every service" if single else
                         "one database per service, " + ", ".join(c["services"])),
                     "-- Run as a superuser: psql -X -d postgres -f %s%s/init.sql" % (d, c["name"]),
                     "",
                     "\\set ON_ERROR_STOP on"]
            if single:
                lines += ["",
                          "CREATE DATABASE pgcloud;",
                          "\\connect pgcloud",
                          "CREATE EXTENSION %s CASCADE;" % meta["extension"],
                          "REVOKE CONNECT ON DATABASE pgcloud FROM PUBLIC;",
                          "GRANT CONNECT ON DATABASE pgcloud TO pgcloud_authenticator;"]
            else:
                lines += ["",
                          "-- Nobody but a superuser connects to the maintenance databases.",
                          "REVOKE CONNECT, TEMPORARY ON DATABASE postgres FROM PUBLIC;",
                          "REVOKE CONNECT ON DATABASE template1 FROM PUBLIC;"]
                for n in c["services"]:
                    db = svc[n]["database"]
                    role = authenticator_of(n)
                    lines += ["",
                              "-- service %s: database %s, its PostgREST connects as %s" % (n, db, role),
                              "CREATE DATABASE %s;" % db,
                              "\\connect %s" % db,
                              "CREATE EXTENSION pgcloud_%s CASCADE;" % n,
                              "REVOKE CONNECT, TEMPORARY ON DATABASE %s FROM PUBLIC;" % db,
                              "-- The shared authenticator of the single-database shape may not connect:",
                              "-- each service's PostgREST has a login role of its own, for this database only.",
                              "REVOKE CONNECT ON DATABASE %s FROM pgcloud_authenticator;" % db,
                              "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = '%s') THEN "
                              "CREATE ROLE %s LOGIN NOINHERIT; END IF; END $$;" % (role, role),
                              "GRANT pgcloud_anon, pgcloud_user, pgcloud_admin, pgcloud_service TO %s;" % role,
                              "GRANT CONNECT ON DATABASE %s TO %s;" % (db, role)]
            out[d + c["name"] + "/init.sql"] = "\n".join(lines) + "\n"

            # postgresql.conf settings
            dbs = ["pgcloud"] if single else [svc[n]["database"] for n in c["services"]]
            lines = ["# " + HEADER,
                     "# Settings of cluster %s of shape %s: append to its postgresql.conf." % (
                         c["name"], shape["name"]),
                     "port = %d" % c["port"],
                     "shared_preload_libraries = 'pgcloud'",
                     "pgcloud.databases = '%s'" % ",".join(dbs)] + cluster_sizing(len(dbs))
            if not single:
                lines += [
                    "# Events leave and enter each database only through the NATS cluster.",
                    "# Each database's workers connect as its service's NATS user: the file",
                    "# %s/<database>.creds (mode 0600) holds pgcloud_<service>:<password>." % SECRETS_DIR,
                    "pgcloud.nats_url = '%s'" % nats_urls(nats),
                    "pgcloud.nats_credentials = '%s/%%d.creds'" % SECRETS_DIR,
                    "# The CA of the NATS servers' certificates (and of the HTTP targets').",
                    "pgcloud.ca_bundle = '%s/ca.crt'" % SECRETS_DIR]
            out[d + c["name"] + "/postgresql.conf"] = "\n".join(lines) + "\n"
            if not single:
                # pg_hba.conf: who may log in where. The first matching line wins.
                workers = "pgcloud_worker_relay,pgcloud_worker_consumer,pgcloud_worker_http"
                api_roles = "pgcloud_svc_core,pgcloud_anon,pgcloud_user,pgcloud_admin,pgcloud_service"
                lines = ["# " + HEADER,
                         "# pg_hba.conf of cluster %s of shape %s: replaces the cluster's own." % (
                             c["name"], shape["name"]),
                         "# TYPE  DATABASE  USER  ADDRESS  METHOD",
                         "# The background workers start inside the server and never authenticate:",
                         "# nobody logs in as them. The shared authenticator of the single-database",
                         "# shape has no place here (and no CONNECT on any service database).",
                         "local all %s,pgcloud_authenticator reject" % workers,
                         "host all %s,pgcloud_authenticator all reject" % workers,
                         "# Service roles own the objects, the API roles are what PostgREST switches",
                         "# to: they never log in (NOLOGIN, and here).",
                         "local all +pgcloud_services,%s reject" % api_roles,
                         "host all +pgcloud_services,%s all reject" % api_roles,
                         "# Each service's PostgREST: its own database, with its password (use",
                         "# hostssl where PostgREST is on another machine)."]
                for n in c["services"]:
                    lines.append("host %s %s all scram-sha-256" % (svc[n]["database"], authenticator_of(n)))
                lines += ["# Operators: the local superuser through the socket; nothing else.",
                          "local all all peer",
                          "host all all all reject"]
                out[d + c["name"] + "/pg_hba.conf"] = "\n".join(lines) + "\n"

        for n in names:
            c = cluster_of[n]
            login = "pgcloud_authenticator" if single else authenticator_of(n)
            uri = "postgresql://%s@%s:%d/%s" % (login, host, c["port"], database_of(n))
            out[d + "env/%s.env" % n] = "\n".join([
                "# " + HEADER,
                "# No password here: supply it through ~/.pgpass or PGPASSWORD.",
                "DATABASE_URL=" + uri,
                "PGCLOUD_SERVICE=" + n,
                "PGCLOUD_SCHEMA=" + svc[n]["schema"],
                "PGCLOUD_CLUSTER=" + c["name"],
                "PGRST_SERVER_PORT=%d" % rest_port[n],
            ]) + "\n"
            out[d + "postgrest/%s.conf" % n] = "\n".join([
                "# " + HEADER,
                "# PostgREST configuration of service %s (%s), shape %s, cluster %s." % (
                    n, svc[n]["route"], shape["name"], c["name"]),
                "",
                "# No password here. Set PGRST_DB_URI (it overrides this value) or",
                "# give the PostgREST user a ~/.pgpass entry.",
                'db-uri = "%s"' % uri,
                'db-schemas = "api"',
                'db-anon-role = "pgcloud_anon"',
                'db-pre-request = "pgcloud.pre_request"',
                "db-max-rows = 1000",
                "",
                "# The auth service's published keys: SELECT api.jwks(); in %s on" % database_of("auth"),
                "# cluster %s (port %d)%s" % (
                    auth_cluster["name"], auth_cluster["port"],
                    "." if single or n == "auth" else
                    ", as this service's own database learnt them:\n"
                    "# SELECT pgcloud.published_jwks(); in %s." % database_of(n)),
                "# api.admin_rotate_signing_key() announces a new key (signing_key.published)",
                "# before it signs: rewrite this file then and",
                "# reload PostgREST (scripts/multicluster.sh keys does both files).",
                'jwt-secret = "@/etc/pgcloud/jwks%s.json"' % ("" if single else "-" + n),
                'jwt-role-claim-key = ".role"',
                "",
                "server-port = %d" % rest_port[n],
                'openapi-mode = "follow-privileges"',
                'log-level = "error"',
            ]) + "\n"

        if single:
            continue
        # NATS: the users of deploy/nats, the stream with replicas, 3 nodes.
        out[d + "nats/authorization.conf"] = base_out["deploy/nats/authorization.conf"]
        streams = json.loads(base_out["deploy/nats/streams.json"])
        streams["_comment"] = HEADER
        for s in streams["streams"]:
            s["num_replicas"] = nats["replicas"]
        out[d + "nats/streams.json"] = json.dumps(streams, indent=2, ensure_ascii=False) + "\n"
        count = len(nats["nodes"])
        for i, node in enumerate(nats["nodes"]):
            routes = ["nats-route://%s:%d" % (nats["host"], nats["route_base_port"] + j)
                      for j in range(count) if j != i]
            out[d + "nats/%s.conf" % node] = "\n".join([
                "# " + HEADER,
                "# NATS node %s of %d (JetStream cluster %s). Clients: the pgcloud workers" % (
                    node, count, nats["cluster_name"]),
                "# of every database (pgcloud.nats_url lists all nodes). Passwords come",
                "# from the environment (PGCLOUD_NATS_PASSWORD_<SERVICE>, ..._OPERATOR).",
                "# sync_interval: always (fsync before the ack) needs nats-server >= 2.10;",
                "# with 2.9 (Debian 12) a quorum of 3 replicas is what an ack means.",
                "server_name: %s" % node,
                "listen: %s:%d" % (nats["host"], nats["client_base_port"] + i),
                "http: %s:%d" % (nats["host"], nats["monitor_base_port"] + i),
                "tls {",
                "  cert_file: %s/server-cert.pem" % NATS_CERT_DIR,
                "  key_file: %s/server-key.pem" % NATS_CERT_DIR,
                "  timeout: 2",
                "}",
                "include ./authorization.conf",
                "jetstream {",
                "  store_dir: %s/%s" % (NATS_STORE_DIR, node),
                "  max_file_store: 64GB",
                "}",
                "cluster {",
                "  name: %s" % nats["cluster_name"],
                "  listen: %s:%d" % (nats["host"], nats["route_base_port"] + i),
                "  # Routes are authenticated both ways by TLS client certificates: a",
                "  # node accepts a route only from a certificate of ca.pem (the CA of",
                "  # the NATS nodes alone: it must sign no other certificate).",
                "  tls {",
                "    cert_file: %s/server-cert.pem" % NATS_CERT_DIR,
                "    key_file: %s/server-key.pem" % NATS_CERT_DIR,
                "    ca_file: %s/ca.pem" % NATS_CERT_DIR,
                "    verify: true",
                "    timeout: 2",
                "  }",
                "  routes = [",
                "\n".join("    " + r for r in routes),
                "  ]",
                "}",
            ]) + "\n"
    return out


def stale(root, out):
    """Files under deploy/<shape>/ carrying HEADER that are no longer produced."""
    import os
    found = []
    deploy = os.path.join(root, "deploy")
    if not os.path.isdir(deploy):
        return found
    for shape in sorted(os.listdir(deploy)):
        top = os.path.join(deploy, shape)
        if not os.path.isdir(top) or not os.path.exists(os.path.join(top, "layout.tsv")) \
                and not any(rel.startswith("deploy/%s/" % shape) for rel in out):
            continue
        for dirpath, _, files in os.walk(top):
            for name in sorted(files):
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, root)
                if rel in out or os.path.islink(path):
                    continue
                try:
                    with open(path, "rb") as f:
                        head = f.read(4096).decode("utf-8", "replace")
                except OSError:
                    continue
                if HEADER in head:
                    found.append(rel)
    return found
