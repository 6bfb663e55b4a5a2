#!/usr/bin/env python3
"""Checks META.json against the required fields of the PGXN meta spec 1.0.0
and against the installed extensions: one provides entry per control file."""
import glob
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
errors = []
meta = json.load(open(os.path.join(ROOT, "META.json")))
for key in ("name", "abstract", "maintainer", "license", "provides", "version", "meta-spec"):
    if key not in meta:
        errors.append("missing required key %r" % key)
semver = re.compile(r"^\d+\.\d+\.\d+$")
if not semver.match(meta.get("version", "")):
    errors.append("version must be a semantic version")
if meta.get("meta-spec", {}).get("version") != "1.0.0":
    errors.append("meta-spec.version must be 1.0.0")
if meta.get("license") not in ("postgresql", "bsd", "mit", "apache_2_0", "gpl_3", "restricted", "open_source"):
    errors.append("license %r is not a PGXN license string" % meta.get("license"))
for name, p in meta.get("provides", {}).items():
    for key in ("file", "version"):
        if key not in p:
            errors.append("provides.%s lacks %r" % (name, key))
    if not semver.match(p.get("version", "")):
        errors.append("provides.%s.version is not semantic" % name)
for key in meta:
    if key not in ("name", "abstract", "description", "version", "maintainer", "license", "provides",
                   "prereqs", "release_status", "resources", "generated_by", "tags", "no_index",
                   "meta-spec") and not key.startswith("x_"):
        errors.append("unknown key %r (custom keys start with x_)" % key)
controls = sorted(os.path.basename(c)[:-len(".control")] for c in glob.glob(os.path.join(ROOT, "extension/*.control")))
if sorted(meta.get("provides", {})) != controls:
    errors.append("provides %s != extensions %s" % (sorted(meta.get("provides", {})), controls))
# No stubs: every extension provided has its page, and every service its
# schema's tables and functions in sql/<service>/.
for name, p in meta.get("provides", {}).items():
    doc = p.get("docfile")
    if not doc or not os.path.isfile(os.path.join(ROOT, doc)):
        errors.append("provides.%s has no docfile %r" % (name, doc))
    if name.startswith("pgcloud_") and name != "pgcloud_core":
        src = "".join(open(f, encoding="utf-8").read()
                      for f in glob.glob(os.path.join(ROOT, "sql", name[len("pgcloud_"):], "*.sql")))
        if not re.search(r"^CREATE TABLE", src, re.M) or not re.search(r"^CREATE FUNCTION api\.", src, re.M):
            errors.append("provides.%s looks like a stub: sql/%s/ has no table or no api function"
                          % (name, name[len("pgcloud_"):]))
for e in errors:
    print("META.json: " + e, file=sys.stderr)
sys.exit(1 if errors else 0)
