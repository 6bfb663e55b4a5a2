"""docs/services/<service>.md from the registry and the service's SQL.

Everything on a page comes from somewhere a change has to touch anyway: the
registry (what the service is, its database, route, events), the leading
comment of the service's first SQL file (its decisions), and the statements
of sql/<service>/*.sql, found by statement and not by file name:
  CREATE FUNCTION api.f(...)            signature and return type
  COMMENT ON FUNCTION api.f(...) IS     what it does
  GRANT EXECUTE ON FUNCTION api.f ...   who may call it
  pgcloud.authorize('...') in its body  the roles it accepts (a C function:
                                        PgcloudAuthorizeUser() in the body of
                                        its symbol under src/: user)
  INSERT INTO pgcloud.policy_values     its policies
  INSERT INTO pgcloud.error_codes       its error codes
  COMMENT ON TABLE / VIEW               its tables and views
  SELECT pgcloud.register_job(...)      its scheduled jobs
Imported by scripts/generate.py; Python 3 standard library only.
"""

import glob
import os
import re

import sqlscan

NAME = r'([A-Za-z_][A-Za-z0-9_]*)\.("[^"]+"|[A-Za-z_][A-Za-z0-9_]*)'
CREATE_FN = re.compile(r"^CREATE\s+(?:OR\s+REPLACE\s+)?(?:FUNCTION|PROCEDURE)\s+" + NAME + r"\s*\(", re.I)
COMMENT_FN = re.compile(r"^COMMENT\s+ON\s+(?:FUNCTION|PROCEDURE|ROUTINE)\s+" + NAME + r"\s*\(", re.I)
COMMENT_REL = re.compile(r"^COMMENT\s+ON\s+(TABLE|VIEW|MATERIALIZED\s+VIEW)\s+" + NAME + r"\s+IS\s+", re.I)
GRANT_FN = re.compile(r"^GRANT\s+EXECUTE\s+ON\s+(?:FUNCTION|ROUTINE|PROCEDURE)\s+(.*)\s+TO\s+(.*?)\s*;?\s*$", re.I | re.S)
INSERT = re.compile(r"^INSERT\s+INTO\s+" + NAME + r"\s*\(([^)]*)\)\s*VALUES\s*(.*)$", re.I | re.S)
AUTHORIZE = re.compile(r"pgcloud\.authorize\s*\(([^;]*?)\)\s*;", re.I)
C_SYMBOL = re.compile(r"\bLANGUAGE\s+C\b.*\bAS\s+'MODULE_PATHNAME'\s*,\s*'([A-Za-z0-9_]+)'", re.I | re.S)


def c_authorize(sql_path, symbol):
    """user when the C function symbol (under src/ of the repository of
    sql_path) calls PgcloudAuthorizeUser(), else None."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(sql_path))))
    for path in sorted(glob.glob(os.path.join(root, "src", "*", "*.c"))):
        with open(path, encoding="utf-8") as fh:
            src = fh.read()
        m = re.search(r"^Datum\s*\n" + symbol + r"\(PG_FUNCTION_ARGS\)\s*\n\{(.*?)^\}", src, re.M | re.S)
        if m:
            return "user" if "PgcloudAuthorizeUser()" in m.group(1) else None
    return None
JOB = re.compile(r"^SELECT\s+pgcloud\.register_job\s*\((.*)\)\s*;?\s*$", re.I | re.S)

MODES = ("in", "out", "inout", "variadic")
# Type names of more than one word: the first word, and what may follow it.
MULTI = {"double": ("precision",), "timestamp": ("with", "without", "("),
         "time": ("with", "without", "("), "character": ("varying", "("),
         "bit": ("varying", "("), "interval": ("year", "month", "day", "hour", "minute", "second", "(")}
ALIASES = {"int": "integer", "int4": "integer", "int8": "bigint", "int2": "smallint",
           "bool": "boolean", "float8": "double precision", "float4": "real",
           "timestamptz": "timestamp with time zone", "timetz": "time with time zone",
           "varchar": "character varying", "decimal": "numeric"}


def strip_default(arg):
    """(argument without its DEFAULT / = expression, the expression or None)."""
    m = re.search(r"\s+DEFAULT\s+|\s*=\s*", arg, re.I)
    if not m:
        return arg.strip(), None
    return arg[:m.start()].strip(), arg[m.end():].strip()


def parse_args(text):
    """[(mode, name, type, default)] of a parameter list."""
    out = []
    if not text.strip():
        return out
    for raw in sqlscan.top_level_split(text):
        raw = " ".join(raw.split())
        if not raw:
            continue
        head, default = strip_default(raw)
        words = head.split(" ")
        mode = "in"
        if words[0].lower() in MODES and len(words) > 1:
            mode = words.pop(0).lower()
        name = None
        if len(words) > 1:
            first, second = words[0].lower(), words[1].lower()
            is_type = first in MULTI and any(second.startswith(x) for x in MULTI[first])
            if not is_type:
                name = words.pop(0)
        out.append((mode, name, " ".join(words), default))
    return out


def norm_type(t):
    t = " ".join(t.lower().split())
    t = re.sub(r"\s*\(\s*", "(", t)
    arr = ""
    while t.endswith("[]"):
        arr += "[]"
        t = t[:-2].strip()
    t = re.sub(r"^pg_catalog\.", "", t)
    base = re.sub(r"\(.*\)$", "", t)
    return ALIASES.get(base, base) + arr


def identity(args):
    """The identity argument types (what COMMENT ON / GRANT name)."""
    return tuple(norm_type(t) for m, _, t, _ in args if m != "out")


def after_paren(body, open_at):
    close = sqlscan.matching_paren(body, open_at)
    return body[open_at + 1:close], body[close + 1:]


def literal(text):
    """The value of a literal expression, or the expression as written."""
    t = text.strip()
    m = re.match(r"^(E?'(?:[^']|'')*'|\$[A-Za-z_0-9]*\$.*\$[A-Za-z_0-9]*\$)(?:::[a-z_ ]+)?$", t, re.S)
    if m:
        return sqlscan.string_value(m.group(1))
    return t


def values_rows(text):
    """The tuples of a VALUES list (as lists of expressions)."""
    rows = []
    text = re.split(r"\bON\s+CONFLICT\b", text, flags=re.I)[0]
    for part in sqlscan.top_level_split(text):
        p = part.strip().rstrip(";").strip()
        if p.startswith("(") and p.endswith(")"):
            rows.append([x.strip() for x in sqlscan.top_level_split(p[1:-1])])
    return rows


def scan_service(paths, schema, api="api"):
    info = {"functions": {}, "comments": {}, "grants": {}, "policies": [], "errors": [],
            "relations": [], "jobs": [], "intro": ""}
    for i, path in enumerate(paths):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if i == 0:
            lines = []
            for line in text.splitlines():
                if line.startswith("--"):
                    lines.append(line[2:][1:] if line[2:3] == " " else line[2:])
                elif not line.strip() and not lines:
                    continue
                else:
                    break
            info["intro"] = "\n".join(lines).strip()
        for st in sqlscan.split(text):
            b = st.body
            m = CREATE_FN.match(b)
            if m and m.group(1) == api:
                args_text, rest = after_paren(b, m.end() - 1)
                args = parse_args(args_text)
                ret = re.search(r"\bRETURNS\s+(.*?)\s+(?:LANGUAGE|AS|SECURITY|STABLE|IMMUTABLE|VOLATILE|STRICT|SET|PARALLEL|CALLED|RETURNS\s+NULL)\b",
                                rest, re.I | re.S)
                auth = AUTHORIZE.search(rest)
                csym = C_SYMBOL.search(rest)
                key = (m.group(2), identity(args))
                info["functions"][key] = {
                    "name": m.group(2), "args": args,
                    "returns": " ".join(ret.group(1).split()) if ret else "",
                    "definer": bool(re.search(r"\bSECURITY\s+DEFINER\b", rest.split("$")[0], re.I)),
                    "authorize": (", ".join(literal(a) for a in sqlscan.top_level_split(auth.group(1))) if auth
                                  else c_authorize(path, csym.group(1)) if csym else None),
                }
                continue
            m = COMMENT_FN.match(b)
            if m and m.group(1) == api:
                args_text, rest = after_paren(b, m.end() - 1)
                lit = re.match(r"\s*IS\s+(.*?);?\s*$", rest, re.S | re.I)
                key = (m.group(2), identity(parse_args(args_text)))
                info["comments"][key] = literal(lit.group(1)) if lit else ""
                continue
            m = COMMENT_REL.match(b)
            if m and m.group(2).lower() == schema:
                lit = b[m.end():].rstrip().rstrip(";")
                info["relations"].append((m.group(1).split()[-1].lower(),
                                          "%s.%s" % (m.group(2), m.group(3)), literal(lit)))
                continue
            m = GRANT_FN.match(b)
            if m:
                roles = [r.strip() for r in m.group(2).split(",")]
                for fn in sqlscan.top_level_split(m.group(1)):
                    fm = re.match(r"^\s*" + NAME + r"\s*\((.*)\)\s*$", fn, re.S)
                    if fm and fm.group(1) == api:
                        key = (fm.group(2), identity(parse_args(fm.group(3))))
                        info["grants"].setdefault(key, [])
                        info["grants"][key] += [r for r in roles if r not in info["grants"][key]]
                continue
            m = INSERT.match(b)
            if m and m.group(1) == "pgcloud" and m.group(2) in ("policy_values", "error_codes"):
                cols = [c.strip() for c in m.group(3).split(",")]
                for row in values_rows(m.group(4)):
                    if len(row) == len(cols):
                        d = {c: literal(v) for c, v in zip(cols, row)}
                        info["policies" if m.group(2) == "policy_values" else "errors"].append(d)
                continue
            m = JOB.match(b)
            if m:
                a = [literal(x) for x in sqlscan.top_level_split(m.group(1))]
                if len(a) >= 3:
                    desc = next((x for x in a[4:] if len(x) > 20 and " " in x), "")
                    info["jobs"].append({"name": a[0], "function": a[1], "policy": a[2], "description": desc})
    return info


def cell(text):
    return " ".join(str(text).split()).replace("|", "\\|")


def who(info, key):
    f = info["functions"][key]
    parts = []
    roles = info["grants"].get(key)
    if roles:
        parts.append(", ".join(r.replace("pgcloud_", "") for r in roles))
    if f["authorize"]:
        parts.append("authorize(%s)" % f["authorize"])
    return "; ".join(parts) if parts else "—"


def signature(f, api="api"):
    args = []
    for mode, name, typ, default in f["args"]:
        s = ("%s " % mode.upper() if mode != "in" else "") + ("%s " % name if name else "") + typ
        if default is not None:
            s += " = " + default
        args.append(s)
    return "%s.%s(%s)" % (api, f["name"], ", ".join(args))


def render_page(header, name, svc, ext, sql_dir, core):
    paths = sorted(glob.glob(os.path.join(sql_dir, "*.sql")))
    schema = svc["schema"]
    api = "pgcloud" if name == "core" else "api"
    info = scan_service(paths, schema, api)
    rel_dir = os.path.relpath(sql_dir, os.path.dirname(os.path.dirname(sql_dir)))
    L = ["<!-- %s; API table from the COMMENTs in %s/ (scripts/generate.py) -->" % (header, rel_dir), ""]
    L.append("# %s" % name)
    L.append("")
    L.append("%s." % svc["comment"].rstrip("."))
    L.append("")
    L.append("| | |")
    L.append("|---|---|")
    L.append("| extension | `%s` |" % ext)
    L.append("| schema | `%s` (owned by `pgcloud_svc_%s`) |" % (schema, name) if name != "core"
             else "| schemas | `pgcloud`, `api` (owned by `pgcloud_svc_core`) |")
    if "layer" in svc:
        L.append("| layer | %s |" % svc["layer"])
        L.append("| own database (per-service deployment) | `%s` |" % svc["database"])
        L.append("| HTTP route | `%s` |" % svc["route"])
        L.append("| depends on | %s |" % (", ".join("[%s](%s.md)" % (d, d) for d in svc["depends_on"]) or "—"))
        L.append("| outbound HTTP targets | %s |" % (", ".join(svc["http_targets"]) or "—"))
    L.append("| sources | `%s/` |" % rel_dir)
    L.append("")
    if info["intro"]:
        L += ["## Design notes", "", "From the head of `%s`:" % os.path.relpath(paths[0], os.path.dirname(os.path.dirname(sql_dir))),
              "", "```text", info["intro"], "```", ""]
    if name == "core":
        L += ["## Functions of schema pgcloud", "",
              "The primitives the services build on (and what operators call). Who may call: the roles "
              "granted EXECUTE (`services` = every service role) and what `pgcloud.authorize()` accepts.", ""]
    else:
        L += ["## API", "", "Served by PostgREST at `%s/rpc/<name>`. Who may call: the API roles granted EXECUTE "
              "and what the function's `pgcloud.authorize()` call accepts." % svc.get("route", ""), ""]
    if info["functions"]:
        L += [
              "| function | returns | who may call | what it does |", "|---|---|---|---|"]
        for key in sorted(info["functions"], key=lambda k: (k[0], k[1])):
            f = info["functions"][key]
            L.append("| `%s` | `%s` | %s | %s |" % (
                cell(signature(f, api)), cell(f["returns"]), cell(who(info, key)),
                cell(info["comments"].get(key, "(no comment)"))))
    else:
        L.append("No functions in `%s`." % api)
    L.append("")
    L += ["## Events", ""]
    pub = svc.get("publishes", [])
    sub = svc.get("subscribes", [])
    L.append("Publishes: %s." % (", ".join("`%s`" % e for e in pub) if pub else "nothing"))
    L.append("")
    L.append("Subscribes to: %s." % (", ".join("`%s`" % e for e in sub) if sub else "nothing"))
    L.append("")
    if info["jobs"]:
        L += ["## Scheduled jobs", "", "| job | function | interval policy | what |", "|---|---|---|---|"]
        for j in info["jobs"]:
            L.append("| `%s` | `%s` | `%s` | %s |" % (cell(j["name"]), cell(j["function"]), cell(j["policy"]), cell(j["description"])))
        L.append("")
    L += ["## Policies", ""]
    if info["policies"]:
        L += ["Changed with `pgcloud.set_policy(key, value)` (operators; audited).", "",
              "| key | default | what |", "|---|---|---|"]
        for p in sorted(info["policies"], key=lambda d: d.get("key", "")):
            L.append("| `%s` | `%s` | %s |" % (cell(p.get("key", "")), cell(p.get("value", "")), cell(p.get("description", ""))))
    else:
        L.append("None.")
    L.append("")
    L += ["## Error codes", ""]
    if info["errors"]:
        L += ["| code | HTTP | message |", "|---|---|---|"]
        for e in sorted(info["errors"], key=lambda d: (d.get("code", ""))):
            L.append("| `%s` | %s | %s |" % (cell(e.get("code", "")), cell(e.get("http_status", "")), cell(e.get("message", ""))))
    else:
        L.append("None of its own.")
    L.append("")
    if info["relations"]:
        L += ["## Tables and views", "", "| | what |", "|---|---|"]
        for kind, rel, comment in sorted(info["relations"], key=lambda r: r[1]):
            L.append("| `%s` (%s) | %s |" % (cell(rel), kind, cell(comment)))
        L.append("")
    return "\n".join(L)


def render(root, header, core, meta, services, core_publishes):
    """{path: text}: one page per service and one for the core, and the
    README's service table."""
    out = {}
    rows = []
    core_svc = {"schema": core["schema"], "comment": core["comment"],
                "publishes": list(core_publishes), "subscribes": [], "route": ""}
    out["docs/services/core.md"] = render_page(header, "core", core_svc, core["extension"],
                                               os.path.join(root, "sql/core"), core)
    rows.append(("core", core["extension"], core["comment"]))
    for n, s in services:
        out["docs/services/%s.md" % n] = render_page(header, n, s, "pgcloud_" + n,
                                                      os.path.join(root, "sql", n), core)
        rows.append((n, "pgcloud_" + n, s["comment"]))
    table = ["| service | extension | what |", "|---|---|---|"]
    for n, ext, comment in rows:
        table.append("| [%s](docs/services/%s.md) | `%s` | %s |" % (n, n, ext, cell(comment)))
    readme_path = os.path.join(root, "README.md")
    with open(readme_path, encoding="utf-8") as f:
        readme = f.read()
    begin, end = "<!-- services:begin (generated by scripts/generate.py) -->", "<!-- services:end -->"
    if begin in readme and end in readme:
        pre, rest = readme.split(begin, 1)
        _, post = rest.split(end, 1)
        out["README.md"] = pre + begin + "\n" + "\n".join(table) + "\n" + end + post
    return out
