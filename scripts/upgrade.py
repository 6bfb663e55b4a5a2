#!/usr/bin/python3
"""Generates the upgrade scripts of every pgcloud extension.

One platform version (registry/services.conf [platform] version) drives all
extensions. The install scripts of earlier releases are frozen, byte for
byte as `make` built them, in sql/history/<old version>/; for every old
version V and every extension E this script writes

    build/E--V--<current>.sql

from the frozen script and the current install script build/E--<current>.sql:

  * code is replaced: the extension's event triggers, triggers, row-level
    security policies and views are dropped and created again from the
    current script; its functions are created with CREATE OR REPLACE, and
    those the current script no longer defines are dropped, except functions
    something still refers to by oid (a regproc/regprocedure column such as
    pgcloud.scheduled_jobs.function or pgcloud.http_intents.callback, or an
    object of another extension, e.g. a trigger calling pgcloud.immutable());
    privileges on the extension's objects are reset to the owner's and
    granted again by the current script; comments are set again;
  * state is kept: a CREATE TABLE / INDEX / SEQUENCE / TYPE / DOMAIN / SCHEMA
    or ALTER TABLE / SEQUENCE / TYPE that is the same in both versions is
    not run; one that creates an object the old version did not have (a new
    table, a new index) is run; any other difference (a changed or removed
    table, column, constraint or type) needs the hand-written fragment
    sql/upgrades/E/V--<current>.sql, run after the old code is dropped and
    before the new code is created. Without it this script refuses (and so
    do `make` and `scripts/generate.py --check`);
  * calls that act on the objects the script has just created
    (pgcloud.service_end, pgcloud.hand_over, pg_extension_config_dump,
    pgcloud.wake_workers: ALWAYS below) run every time; a new call of that
    kind must be added to ALWAYS;
  * other statements with an effect (INSERT, SELECT f(...), DO) run once: at
    install, or in the upgrade whose script first has them. A new or changed
    INSERT tolerates the rows already there: error codes and registry rows
    are updated, a policy's description is updated but an operator's value
    kept, other rows are left as they are.

Usage:
  scripts/upgrade.py build <current version> <outdir>   write the scripts
  scripts/upgrade.py check                              only say what lacks a fragment

Python 3 standard library only.
"""

import glob
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sqlscan  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HISTORY = "sql/history"
FRAGMENTS = "sql/upgrades"

NAME = r'((?:"[^"]+"|[A-Za-z_][A-Za-z0-9_$]*)(?:\.(?:"[^"]+"|[A-Za-z_][A-Za-z0-9_$]*))?)'
STATE_CREATE = re.compile(
    r"^CREATE\s+(?:UNLOGGED\s+)?(TABLE|SEQUENCE|TYPE|DOMAIN|SCHEMA)\s+(?:IF\s+NOT\s+EXISTS\s+)?" + NAME,
    re.I)
STATE_INDEX = re.compile(
    r"^CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?" + NAME
    + r"\s+ON\s+(?:ONLY\s+)?" + NAME, re.I)
STATE_ALTER = re.compile(
    r"^ALTER\s+(TABLE|SEQUENCE|TYPE|DOMAIN)\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?" + NAME, re.I)
FUNCTION = re.compile(r"^CREATE\s+(?:OR\s+REPLACE\s+)?(FUNCTION|PROCEDURE)\b", re.I)
CODE = re.compile(
    r"^(CREATE\s+(?:OR\s+REPLACE\s+)?(?:TEMP\s+|TEMPORARY\s+|RECURSIVE\s+)*VIEW"
    r"|CREATE\s+(?:OR\s+REPLACE\s+)?(?:CONSTRAINT\s+)?TRIGGER"
    r"|CREATE\s+EVENT\s+TRIGGER|CREATE\s+POLICY|COMMENT\s+ON|GRANT|REVOKE"
    r"|ALTER\s+(?:FUNCTION|PROCEDURE|ROUTINE|VIEW|EVENT\s+TRIGGER|POLICY))\b", re.I)
# Calls that act on whatever the script has just created: run every time.
ALWAYS = re.compile(
    r"^SELECT\s+(?:pg_catalog\.)?(pg_extension_config_dump|pgcloud\.service_end"
    r"|pgcloud\.hand_over|pgcloud\.wake_workers)\s*\(", re.I)
BEGIN = re.compile(r"^SELECT\s+pgcloud\.service_begin\s*\(", re.I)
INSERT = re.compile(r"^INSERT\s+INTO\s+" + NAME + r"(?:\s+AS\s+\w+)?\s*\(([^)]*)\)", re.I)

# Rows of these tables come from install scripts: a new or changed INSERT
# updates them (key, columns updated; None: every column listed but the key).
# A column a table's INSERTs may leave to its default (error_codes.service:
# 'core' for the core's codes) is updated too: EXCLUDED carries the default.
UPSERT = {
    "pgcloud.error_codes": ("code", None),
    "pgcloud.services": ("name", None),
    "pgcloud.policy_values": ("key", ("description",)),   # an operator's value stays
}
DEFAULTED = {"pgcloud.error_codes": ("service",)}
# Rows wholly derived from the registry: replaced.
REPLACE = ("pgcloud.subscriptions",)


class UpgradeError(Exception):
    pass


def classify(st):
    """(kind, key) of a statement: kind in begin, always, function, code,
    state, once."""
    b = st.body
    if BEGIN.match(b):
        return "begin", None
    if ALWAYS.match(b):
        return "always", None
    if FUNCTION.match(b):
        return "function", None
    m = STATE_INDEX.match(b)
    if m:
        return "state", ("index", m.group(1).lower(), m.group(2).lower())
    m = STATE_CREATE.match(b)
    if m:
        return "state", (m.group(1).lower(), m.group(2).lower(), None)
    m = STATE_ALTER.match(b)
    if m:
        return "state", ("alter", m.group(2).lower(), m.group(1).lower())
    if CODE.match(b):
        return "code", None
    return "once", None


def tolerate_existing(st):
    """An INSERT that may meet rows already there."""
    b = st.body.rstrip().rstrip(";").rstrip()
    m = INSERT.match(b)
    if not m or re.search(r"\bON\s+CONFLICT\b", st.shape, re.I):
        return b + ";"
    table = m.group(1).lower()
    cols = [c.strip() for c in m.group(2).split(",") if c.strip()]
    if table in REPLACE:
        return "DELETE FROM %s;\n%s;" % (table, b)
    if table in UPSERT:
        key, only = UPSERT[table]
        upd = [c for c in cols if c != key and (only is None or c in only)]
        upd += [c for c in DEFAULTED.get(table, ()) if c not in upd]
        if upd:
            return "%s\nON CONFLICT (%s) DO UPDATE SET %s;" % (
                b, key, ", ".join("%s = EXCLUDED.%s" % (c, c) for c in upd))
    return b + "\nON CONFLICT DO NOTHING;"


def plan(ext, old_text, new_text, fragment):
    """The body of E--old--new.sql, or UpgradeError naming the state changes
    that need a fragment when there is none."""
    old = [(st, *classify(st)) for st in sqlscan.split(old_text)]
    new = [(st, *classify(st)) for st in sqlscan.split(new_text)]
    old_norms = {st.norm for st, _, _ in old}
    new_norms = {st.norm for st, _, _ in new}
    old_objects = {(k[0], k[1]) for _, kind, k in old if kind == "state" and k[0] != "alter"}
    new_tables = {k[1] for _, kind, k in new
                  if kind == "state" and k[0] == "table" and ("table", k[1]) not in old_objects}
    needs = []
    body = []
    for st, kind, key in new:
        if kind == "begin":
            continue
        if kind == "function":
            body.append(FUNCTION.sub(lambda m: "CREATE OR REPLACE " + m.group(1), st.body, count=1))
        elif kind in ("code", "always"):
            body.append(st.body)
        elif kind == "state":
            if st.norm in old_norms:
                continue
            if key[0] == "alter":
                if key[1] in new_tables:
                    body.append(st.body)
                else:
                    needs.append("changed: " + short(st))
            elif (key[0], key[1]) not in old_objects or (key[0] == "index" and key[2] in new_tables):
                body.append(st.body)   # a new object
            else:
                needs.append("changed: " + short(st))
        else:  # once
            if st.norm in old_norms:
                continue
            body.append(tolerate_existing(st) if INSERT.match(st.body) else st.body)
    for st, kind, key in old:
        if kind == "state" and st.norm not in new_norms:
            if not any(k == key for _, kd, k in new if kd == "state"):
                needs.append("removed: " + short(st))
    if needs and fragment is None:
        raise UpgradeError(needs)
    return body, needs


def short(st):
    s = st.norm
    return s if len(s) <= 110 else s[:107] + "..."


PREPARE = r"""
-- 1. Replace the code: drop what the current version creates again.
DO $pgcloud_upgrade$
DECLARE
    ext oid := (SELECT e.oid FROM pg_catalog.pg_extension e WHERE e.extname = %(ext)s);
    r record;
    names text;
    oids oid[];
    keep oid[] := '{}';
BEGIN
    FOR r IN SELECT t.evtname FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_event_trigger t ON t.oid = d.objid
              WHERE d.classid = 'pg_catalog.pg_event_trigger'::pg_catalog.regclass AND d.refobjid = ext AND d.deptype = 'e'
    LOOP
        EXECUTE pg_catalog.format('DROP EVENT TRIGGER %%I', r.evtname);
    END LOOP;
    FOR r IN SELECT tg.tgname, tg.tgrelid::pg_catalog.regclass AS rel FROM pg_catalog.pg_trigger tg
               JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = tg.tgrelid
              WHERE d.refobjid = ext AND d.deptype = 'e' AND NOT tg.tgisinternal
    LOOP
        EXECUTE pg_catalog.format('DROP TRIGGER %%I ON %%s', r.tgname, r.rel);
    END LOOP;
    FOR r IN SELECT p.polname, p.polrelid::pg_catalog.regclass AS rel FROM pg_catalog.pg_policy p
               JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = p.polrelid
              WHERE d.refobjid = ext AND d.deptype = 'e'
    LOOP
        EXECUTE pg_catalog.format('DROP POLICY %%I ON %%s', r.polname, r.rel);
    END LOOP;
    SELECT pg_catalog.string_agg(c.oid::pg_catalog.regclass::text, ', ') INTO names
      FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_class c ON c.oid = d.objid
     WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid = ext AND d.deptype = 'e'
       AND c.relkind IN ('v', 'm');
    IF names IS NOT NULL THEN
        EXECUTE 'DROP VIEW ' || names;
    END IF;
    -- Functions something refers to by oid keep it (CREATE OR REPLACE below):
    -- regproc/regprocedure values in tables, and other extensions' objects.
    FOR r IN SELECT a.attrelid::pg_catalog.regclass AS rel, a.attname
               FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
              WHERE c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
                AND a.atttypid IN ('pg_catalog.regproc'::pg_catalog.regtype, 'pg_catalog.regprocedure'::pg_catalog.regtype)
                AND c.relnamespace NOT IN ('pg_catalog'::pg_catalog.regnamespace, 'information_schema'::pg_catalog.regnamespace)
    LOOP
        EXECUTE pg_catalog.format('SELECT pg_catalog.array_agg(DISTINCT %%I::pg_catalog.oid) FROM %%s', r.attname, r.rel) INTO oids;
        keep := keep || coalesce(oids, '{}');
    END LOOP;
    SELECT keep || coalesce(pg_catalog.array_agg(DISTINCT dep.refobjid), '{}') INTO keep
      FROM pg_catalog.pg_depend dep JOIN pg_catalog.pg_depend m
        ON m.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND m.objid = dep.refobjid AND m.refobjid = ext AND m.deptype = 'e'
     WHERE dep.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND dep.deptype = 'n'
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend o
                        WHERE o.classid = dep.classid AND o.objid = dep.objid AND o.refobjid = ext AND o.deptype = 'e');
    SELECT pg_catalog.string_agg(p.oid::pg_catalog.regprocedure::text, ', ') INTO names
      FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_proc p ON p.oid = d.objid
     WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.refobjid = ext AND d.deptype = 'e'
       AND p.prokind IN ('f', 'p') AND p.oid <> ALL (keep);
    IF names IS NOT NULL THEN
        EXECUTE 'DROP ROUTINE ' || names;
    END IF;
    -- Privileges: the owner's only; the script grants the current ones.
    FOR r IN SELECT p.oid::pg_catalog.regprocedure::text AS obj, 'ROUTINE' AS what, a.grantee
               FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_proc p ON p.oid = d.objid,
                    LATERAL pg_catalog.aclexplode(p.proacl) a
              WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.refobjid = ext AND d.deptype = 'e'
                AND a.grantee <> p.proowner
             UNION
             SELECT c.oid::pg_catalog.regclass::text, CASE c.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, a.grantee
               FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_class c ON c.oid = d.objid,
                    LATERAL pg_catalog.aclexplode(c.relacl) a
              WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid = ext AND d.deptype = 'e'
                AND a.grantee <> c.relowner
             UNION
             SELECT pg_catalog.quote_ident(n.nspname), 'SCHEMA', a.grantee
               FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_namespace n ON n.oid = d.objid,
                    LATERAL pg_catalog.aclexplode(n.nspacl) a
              WHERE d.classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND d.refobjid = ext AND d.deptype = 'e'
                AND a.grantee <> n.nspowner
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON %%s %%s FROM %%s', r.what, r.obj,
            CASE WHEN r.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(r.grantee)) END);
    END LOOP;
    FOR r IN SELECT DISTINCT c.oid::pg_catalog.regclass::text AS rel, att.attname, a.grantee
               FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_class c ON c.oid = d.objid
               JOIN pg_catalog.pg_attribute att ON att.attrelid = c.oid AND att.attacl IS NOT NULL,
                    LATERAL pg_catalog.aclexplode(att.attacl) a
              WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid = ext AND d.deptype = 'e'
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL (%%I) ON TABLE %%s FROM %%s', r.attname, r.rel,
            CASE WHEN r.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(r.grantee)) END);
    END LOOP;
END
$pgcloud_upgrade$;
"""


def sql_lit(s):
    return "'" + s.replace("'", "''") + "'"


def render(ext, old_version, new_version, old_text, new_text, fragment_path):
    fragment = None
    if fragment_path and os.path.exists(fragment_path):
        with open(fragment_path, encoding="utf-8") as f:
            fragment = f.read()
    body, needs = plan(ext, old_text, new_text, fragment)
    out = [
        "-- %s %s -> %s, generated by scripts/upgrade.py from sql/history/%s/ and the"
        % (ext, old_version, new_version, old_version),
        "-- %s install script — do not edit (table changes: %s/%s/%s--%s.sql)"
        % (new_version, FRAGMENTS, ext, old_version, new_version),
        '\\echo Use "ALTER EXTENSION %s UPDATE TO \'%s\'" to load this file. \\quit'
        % (ext, new_version),
    ]
    has_members = any(classify(st)[0] != "begin" for st in sqlscan.split(old_text))
    if has_members:
        out.append(PREPARE % {"ext": sql_lit(ext)})
    if fragment is not None:
        out += ["-- 2. Tables: %s/%s/%s--%s.sql (hand-written)" % (FRAGMENTS, ext, old_version, new_version)]
        for n in needs:
            out.append("--    covers " + n)
        out += [fragment.rstrip(), ""]
    if body:
        out.append("-- 3. The current code, new objects and new rows.")
        out += [b if b.rstrip().endswith(";") else b + ";" for b in body]
    return "\n".join(out[:3]) + "\n\n" + "\n\n".join(out[3:]) + "\n"


def extensions():
    """(extension, sources) in install order, as the Makefile builds them."""
    reg = open(os.path.join(ROOT, "registry/services.conf"), encoding="utf-8").read()
    services = re.findall(r"^\[service\.([a-z_]+)\]", reg, re.M)
    exts = [("pgcloud_core", sorted(glob.glob(os.path.join(ROOT, "sql/core/*.sql")))
             + [os.path.join(ROOT, "sql/generated/subscriptions.sql")])]
    for s in services:
        exts.append(("pgcloud_" + s, sorted(glob.glob(os.path.join(ROOT, "sql/%s/*.sql" % s)))))
    exts.append(("pgcloud", []))
    return exts, services


def assemble(ext, sources):
    """The install script as scripts/build-script.sh writes it."""
    svc = ext[len("pgcloud_"):] if ext.startswith("pgcloud_") and ext != "pgcloud_core" else None
    parts = []
    if svc:
        parts.append("SELECT pgcloud.service_begin('%s');\n" % svc)
    for f in sources:
        with open(f, encoding="utf-8") as fh:
            parts.append(fh.read() + "\n")
    if svc:
        parts.append("SELECT pgcloud.service_end('%s');\n" % svc)
    return "".join(parts)


def old_versions(current):
    d = os.path.join(ROOT, HISTORY)
    if not os.path.isdir(d):
        return []
    return sorted(v for v in os.listdir(d) if os.path.isdir(os.path.join(d, v)) and v != current)


def fragment_path(ext, old, new):
    return os.path.join(ROOT, FRAGMENTS, ext, "%s--%s.sql" % (old, new))


def check(current):
    """Problems (strings): state changes without a fragment, missing frozen scripts."""
    problems = []
    exts, _ = extensions()
    for v in old_versions(current):
        for ext, sources in exts:
            frozen = os.path.join(ROOT, HISTORY, v, "%s--%s.sql" % (ext, v))
            if not os.path.exists(frozen):
                continue   # an extension that did not exist in v
            old_text = open(frozen, encoding="utf-8").read()
            frag = fragment_path(ext, v, current)
            try:
                plan(ext, old_text, assemble(ext, sources), True if os.path.exists(frag) else None)
            except UpgradeError as e:
                for n in e.args[0]:
                    problems.append("%s %s -> %s: %s needs %s" % (
                        ext, v, current, n, os.path.relpath(frag, ROOT)))
    return problems


def main(argv):
    if len(argv) >= 2 and argv[1] == "check":
        reg = open(os.path.join(ROOT, "registry/services.conf"), encoding="utf-8").read()
        current = re.search(r"^version\s*=\s*(\S+)", reg, re.M).group(1)
        problems = check(current)
        for p in problems:
            sys.stderr.write("upgrade.py: " + p + "\n")
        return 1 if problems else 0
    if len(argv) != 4 or argv[1] != "build":
        sys.stderr.write(__doc__)
        return 2
    current, outdir = argv[2], argv[3]
    exts, _ = extensions()
    failed = False
    for v in old_versions(current):
        for ext, _ in exts:
            frozen = os.path.join(ROOT, HISTORY, v, "%s--%s.sql" % (ext, v))
            if not os.path.exists(frozen):
                continue
            with open(frozen, encoding="utf-8") as f:
                old_text = f.read()
            with open(os.path.join(outdir, "%s--%s.sql" % (ext, current)), encoding="utf-8") as f:
                new_text = f.read()
            try:
                text = render(ext, v, current, old_text, new_text, fragment_path(ext, v, current))
            except UpgradeError as e:
                failed = True
                for n in e.args[0]:
                    sys.stderr.write("upgrade.py: %s %s -> %s: %s needs %s\n" % (
                        ext, v, current, n, os.path.relpath(fragment_path(ext, v, current), ROOT)))
                continue
            out = os.path.join(outdir, "%s--%s--%s.sql" % (ext, v, current))
            with open(out + ".tmp", "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(out + ".tmp", out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
