#!/usr/bin/env python3
"""Fake Canonical MAAS 2.0 REST API (the machine subset pgcloud uses).

    python3 test/fakes/fake_maas.py --port 0 --state-dir DIR
        [--api-key ck:tk:sec] [--user pgcloud] [--machines 4] [--new]
        [--system-ids id1,id2,...] [--deploy-seconds 2] [--release-seconds 1]
        [--commission-seconds 1] [--timestamp-skew 300] [--series focal,jammy,noble]
        [--default-series jammy] [--tls-cert CERT --tls-key KEY]

API root: http://127.0.0.1:<port>/MAAS/api/2.0/ (so pgcloud.maas_url is
http://127.0.0.1:<port>/MAAS). Every API request must carry an OAuth 1.0
PLAINTEXT Authorization header for --api-key; nonces may not be reused and the
timestamp must be within --timestamp-skew seconds. Machine status changes happen
on a clock in a background thread. See README.md.
"""

import base64
import binascii
import json
import os
import re
import sys
import threading
import urllib.parse
from email import policy
from email.parser import BytesParser

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fakelib                                   # noqa: E402
from fakelib import Response, now               # noqa: E402

PREFIX = "/MAAS/api/2.0/"
NEW, COMMISSIONING, FAILED_COMMISSIONING, READY = 0, 1, 2, 4
DEPLOYED, BROKEN, DEPLOYING, ALLOCATED = 6, 8, 9, 10
FAILED_DEPLOYMENT, RELEASING, DISK_ERASING = 11, 12, 14
FAILED_RELEASING, FAILED_DISK_ERASING = 13, 15
STATUS_NAMES = {
    0: "New", 1: "Commissioning", 2: "Failed commissioning", 3: "Missing", 4: "Ready",
    5: "Reserved", 6: "Deployed", 7: "Retired", 8: "Broken", 9: "Deploying", 10: "Allocated",
    11: "Failed deployment", 12: "Releasing", 13: "Releasing failed", 14: "Disk erasing",
    15: "Failed disk erasing",
}
RELEASABLE = {ALLOCATED, DEPLOYED, DEPLOYING, FAILED_DEPLOYMENT, BROKEN, FAILED_RELEASING,
              FAILED_DISK_ERASING}
COMMISSIONABLE = {NEW, READY, FAILED_COMMISSIONING, BROKEN, FAILED_DEPLOYMENT}
MAX_NONCES = 100000


def parse_oauth_header(value):
    """'OAuth realm="", oauth_x="v", ...' -> dict (values percent-decoded), or None."""
    if not value:
        return None
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "oauth":
        return None
    params = {}
    for m in re.finditer(r'([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?:"([^"]*)"|([^,\s]*))', rest):
        raw = m.group(2) if m.group(2) is not None else m.group(3)
        params[m.group(1)] = urllib.parse.unquote(raw)
    return params


def parse_form(req):
    """urlencoded or multipart/form-data body -> list of (name, value)."""
    ct = req.content_type()
    if not req.body:
        return []
    if ct == "application/x-www-form-urlencoded":
        return urllib.parse.parse_qsl(req.body.decode("utf-8", "replace"),
                                      keep_blank_values=True)
    if ct == "multipart/form-data":
        head = b"Content-Type: " + req.header("content-type").encode() + b"\r\n\r\n"
        msg = BytesParser(policy=policy.HTTP).parsebytes(head + req.body)
        if not msg.is_multipart():
            raise ValueError("malformed multipart body")
        out = []
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name is None:
                continue
            payload = part.get_payload(decode=True) or b""
            out.append((name, payload.decode("utf-8", "replace")))
        return out
    raise ValueError("unsupported Content-Type %s" % (ct or "(none)"))


class MaasError(Exception):
    def __init__(self, status, body, content_type="text/plain; charset=utf-8", headers=None):
        super().__init__(body if isinstance(body, str) else json.dumps(body))
        self.status = status
        self.body = body
        self.content_type = content_type if isinstance(body, str) else "application/json"
        self.headers = headers or {}

    def response(self):
        return Response(self.status, self.body, self.content_type, self.headers)


def system_ids(args):
    if args.system_ids:
        ids = [s.strip() for s in args.system_ids.split(",") if s.strip()]
        if len(ids) != args.machines:
            raise SystemExit("--system-ids must list exactly --machines ids")
        return ids
    return ["abc%03d" % (122 + i) for i in range(1, args.machines + 1)]


class MaasFake(fakelib.HTTPFake):
    name = "fake_maas"

    def __init__(self, args):
        super().__init__(args)
        parts = args.api_key.split(":")
        if len(parts) != 3:
            raise SystemExit("--api-key must be consumer:token:secret")
        self.consumer, self.token, self.secret = parts
        self.user = args.user
        self.nonces = {}
        self.transitions_path = os.path.join(args.state_dir, "transitions.jsonl")
        open(self.transitions_path, "a").close()
        self.machines = {}
        for i, sid in enumerate(system_ids(args), start=1):
            self.machines[sid] = {
                "system_id": sid, "hostname": "gpu-node-%d" % i, "index": i,
                "status": NEW if args.new else READY, "status_message": "",
                "osystem": "", "distro_series": "", "owner": None, "power_state": "off",
                "ip_addresses": [], "user_data": None, "deadline": None,
                "agent_name": "", "history": [],
            }
            self._history(self.machines[sid])

    # -- machine state -------------------------------------------------------
    def _history(self, m):
        entry = {"ts": round(now(), 6), "system_id": m["system_id"], "status": m["status"],
                 "status_name": STATUS_NAMES[m["status"]]}
        m["history"].append(entry)
        with open(self.transitions_path, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def _set(self, m, status, message="", deadline=None):
        m["status"] = status
        m["status_message"] = message
        m["deadline"] = deadline
        self._history(m)

    def _to_ready(self, m):
        m.update(owner=None, osystem="", distro_series="", power_state="off", ip_addresses=[],
                 user_data=None, agent_name="")
        self._set(m, READY, "Ready")

    def _seconds(self, key):
        v = self.control.settings().get(key)
        return float(v) if v is not None else float(getattr(self.args, key))

    def tick(self):
        s = self.control.settings()
        broken = set(s.get("broken") or [])
        stall = set(s.get("stall") or [])
        fail_deploy = set(s.get("fail_deploy") or [])
        fail_commission = set(s.get("fail_commission") or [])
        t = now()
        with self.lock:
            for sid, m in self.machines.items():
                if sid in broken:
                    if m["status"] != BROKEN:
                        self._set(m, BROKEN, "Marked broken by test control")
                    continue
                if m["deadline"] is None or t < m["deadline"]:
                    continue
                st = m["status"]
                if st == DEPLOYING:
                    if sid in stall:
                        continue
                    if sid in fail_deploy:
                        self._set(m, FAILED_DEPLOYMENT, "Failed deployment (test control)")
                    else:
                        m["ip_addresses"] = ["192.0.2.%d" % (10 + m["index"] % 240)]
                        self._set(m, DEPLOYED, "Deployed")
                elif st in (RELEASING, DISK_ERASING):
                    self._to_ready(m)
                elif st == COMMISSIONING:
                    m["power_state"] = "off"
                    if sid in fail_commission:
                        self._set(m, FAILED_COMMISSIONING, "Failed commissioning (test control)")
                    else:
                        self._set(m, READY, "Ready")
                else:
                    m["deadline"] = None

    def start_background(self):
        def loop():
            while not self.stopping.wait(0.05):
                try:
                    self.tick()
                except Exception:                  # keep ticking; tests see the traceback
                    import traceback
                    traceback.print_exc()
        threading.Thread(target=loop, daemon=True).start()

    def machine_json(self, m):
        sid = m["system_id"]
        return {
            "system_id": sid,
            "hostname": m["hostname"],
            "fqdn": m["hostname"] + ".maas",
            "domain": {"authoritative": True, "ttl": None, "resource_record_count": 0,
                       "name": "maas", "id": 0, "is_default": True,
                       "resource_uri": "/MAAS/api/2.0/domains/0/"},
            "description": "",
            "architecture": "amd64/generic",
            "status": m["status"],
            "status_name": STATUS_NAMES[m["status"]],
            "status_message": m["status_message"],
            "osystem": m["osystem"],
            "distro_series": m["distro_series"],
            "hwe_kernel": None,
            "owner": m["owner"],
            "owner_data": {},
            "locked": False,
            "power_state": m["power_state"],
            "power_type": "ipmi",
            "ip_addresses": list(m["ip_addresses"]),
            "cpu_count": 64,
            "cpu_speed": 2600,
            "memory": 524288,
            "storage": 1920383.2,
            "swap_size": None,
            "tag_names": ["gpu"],
            "zone": {"name": "default", "description": "", "id": 1,
                     "resource_uri": "/MAAS/api/2.0/zones/default/"},
            "pool": {"name": "default", "description": "Default pool", "id": 0,
                     "resource_uri": "/MAAS/api/2.0/resourcepool/0/"},
            "node_type": 0,
            "node_type_name": "Machine",
            "netboot": m["status"] != DEPLOYED,
            "resource_uri": "/MAAS/api/2.0/machines/%s/" % sid,
        }

    def state(self):
        out = {}
        for sid, m in self.machines.items():
            j = self.machine_json(m)
            j["user_data"] = m["user_data"]
            j["history"] = m["history"]
            out[sid] = j
        return {"machines": out}

    # -- HTTP ----------------------------------------------------------------
    def match_context(self, req):
        ctx = {"path": req.path, "method": req.method, "op": req.query.get("op")}
        return ctx

    def injected_response(self, rule, req):
        status = int(rule["status"])
        body = rule.get("body")
        if body is None:
            body = {500: "Internal server error", 502: "Bad Gateway",
                    503: "Service Unavailable"}.get(status, "Injected failure (HTTP %d)" % status)
        headers = {}
        if rule.get("retry_after") is not None:
            headers["Retry-After"] = rule["retry_after"]
        ct = "text/plain; charset=utf-8" if isinstance(body, str) else "application/json"
        return Response(status, body, ct, headers)

    def _auth(self, req, record):
        params = parse_oauth_header(req.header("authorization"))
        record["oauth"] = {k: v for k, v in (params or {}).items() if k != "oauth_signature"}
        reason = None
        t = now()
        if params is None:
            reason = "no OAuth Authorization header"
        elif params.get("oauth_signature_method") != "PLAINTEXT":
            reason = "unsupported signature method %r" % params.get("oauth_signature_method")
        elif params.get("oauth_version", "1.0") != "1.0":
            reason = "unsupported OAuth version %r" % params.get("oauth_version")
        elif params.get("oauth_consumer_key") != self.consumer:
            reason = "Invalid consumer: %r" % params.get("oauth_consumer_key")
        elif params.get("oauth_token") != self.token:
            reason = "Invalid access token: %r" % params.get("oauth_token")
        elif params.get("oauth_signature") != "&" + self.secret:
            reason = "Invalid signature"
        elif not params.get("oauth_nonce"):
            reason = "Missing oauth_nonce"
        elif not re.fullmatch(r"[0-9]+", params.get("oauth_timestamp", "")):
            reason = "Missing or invalid oauth_timestamp"
        elif abs(t - int(params["oauth_timestamp"])) > self.args.timestamp_skew:
            reason = "Expired timestamp: given %s and now %d has a greater difference than " \
                     "threshold %d" % (params["oauth_timestamp"], int(t),
                                       self.args.timestamp_skew)
        else:
            with self.lock:
                nkey = (params["oauth_consumer_key"], params["oauth_token"], params["oauth_nonce"])
                if nkey in self.nonces:
                    reason = "Nonce already used: %s" % params["oauth_nonce"]
                else:
                    if len(self.nonces) >= MAX_NONCES:     # forget the oldest
                        for k in sorted(self.nonces, key=self.nonces.get)[:MAX_NONCES // 2]:
                            del self.nonces[k]
                    self.nonces[nkey] = t
        record["auth_ok"] = reason is None
        record["auth_reason"] = reason
        if reason:
            raise MaasError(401, "Authorization Error: %s" % reason,
                            headers={"WWW-Authenticate": 'OAuth realm="OAuth"'})

    def handle(self, req, record):
        try:
            return self._handle(req, record)
        except MaasError as e:
            record["error"] = e.body if isinstance(e.body, str) else json.dumps(e.body)
            return e.response()

    def _handle(self, req, record):
        if not req.path.startswith(PREFIX):
            raise MaasError(404, "Not Found")
        rel = req.path[len(PREFIX):]
        if rel == "version/" and req.method == "GET":
            return Response(200, {"capabilities": ["networks-management", "static-ipaddresses",
                                                   "ipv6-deployment-ubuntu", "devices-management",
                                                   "storage-deployment-ubuntu",
                                                   "network-deployment-ubuntu"],
                                  "version": "3.4.0", "subversion": "fake-pgcloud"})
        self._auth(req, record)
        try:
            form = parse_form(req) if req.method in ("POST", "PUT") else []
        except ValueError as e:
            raise MaasError(400, str(e))
        fields = dict(form)
        record["form"] = fields
        op = req.query.get("op") or fields.get("op")
        record["op"] = op
        if rel == "users/" and req.method == "GET" and op == "whoami":
            return Response(200, {"username": self.user, "email": self.user + "@example.com",
                                  "is_superuser": False, "is_local": True,
                                  "resource_uri": "/MAAS/api/2.0/users/%s/" % self.user})
        if rel == "machines/":
            return self._machines(req, op, fields)
        m = re.fullmatch(r"machines/([^/]+)/", rel)
        if m:
            return self._machine(req, m.group(1), op, fields, record)
        raise MaasError(404, "Unknown API endpoint: %s." % req.path)

    def _unrecognised(self, req, op):
        return MaasError(400, "Unrecognised signature: method=%s op=%s" % (req.method, op))

    def _machines(self, req, op, fields):
        with self.lock:
            if req.method == "GET" and op is None:
                ids = [v for k, v in req.query_list if k == "id"]
                hosts = [v for k, v in req.query_list if k == "hostname"]
                out = [self.machine_json(m) for m in self.machines.values()
                       if (not ids or m["system_id"] in ids)
                       and (not hosts or m["hostname"] in hosts)]
                return Response(200, out)
            if req.method == "POST" and op == "allocate":
                return self._allocate(fields)
        raise self._unrecognised(req, op)

    def _allocate(self, fields):
        want_id = fields.get("system_id")
        want_name = fields.get("name")
        for m in self.machines.values():
            if m["status"] != READY or m["owner"] is not None:
                continue
            if want_id and m["system_id"] != want_id:
                continue
            if want_name and want_name not in (m["hostname"], m["hostname"] + ".maas"):
                continue
            m["owner"] = self.user
            m["agent_name"] = fields.get("agent_name", "")
            self._set(m, ALLOCATED, "Allocated")
            return Response(200, self.machine_json(m))
        constraints = []
        if want_id:
            constraints.append("system_id=%s" % want_id)
        if want_name:
            constraints.append("name=%s" % want_name)
        raise MaasError(409, "No available machine matches constraints: %s (resolved to \"%s\")"
                        % ([(c.split("=")[0], [c.split("=", 1)[1]]) for c in constraints],
                           " ".join(constraints)))

    def _machine(self, req, sid, op, fields, record):
        with self.lock:
            m = self.machines.get(sid)
            if m is None:
                raise MaasError(404, "No Machine matches the given query.")
            if req.method == "GET" and op is None:
                return Response(200, self.machine_json(m))
            if req.method != "POST":
                raise self._unrecognised(req, op)
            st = m["status"]
            name = STATUS_NAMES[st]
            if op == "deploy":
                return self._deploy(m, fields, record)
            if op == "release":
                if st not in RELEASABLE:
                    raise MaasError(409, "Machine cannot be released in its current state "
                                    "('%s')." % name)
                erase = str(fields.get("erase", "")).lower() in ("true", "1", "on", "yes")
                record["erase"] = erase
                deadline = now() + self._seconds("release_seconds")
                if erase:
                    m["power_state"] = "on"
                    self._set(m, DISK_ERASING, "Erasing disks", deadline)
                else:
                    self._set(m, RELEASING, "Releasing", deadline)
                return Response(200, self.machine_json(m))
            if op == "commission":
                if st not in COMMISSIONABLE:
                    raise MaasError(409, "Machine cannot be commissioned in its current state "
                                    "('%s')." % name)
                m.update(owner=None, power_state="on", osystem="", distro_series="",
                         ip_addresses=[], user_data=None)
                self._set(m, COMMISSIONING, "Commissioning",
                          now() + self._seconds("commission_seconds"))
                return Response(200, self.machine_json(m))
            if op == "mark_broken":
                self._set(m, BROKEN, fields.get("comment") or "Marked broken")
                return Response(200, self.machine_json(m))
            if op == "mark_fixed":
                if st != BROKEN:
                    raise MaasError(409, "Machine cannot be marked fixed in its current state "
                                    "('%s')." % name)
                self._to_ready(m)
                return Response(200, self.machine_json(m))
        raise self._unrecognised(req, op)

    def _deploy(self, m, fields, record):
        st = m["status"]
        if st == READY and m["owner"] is None:          # MAAS allocates on deploy
            m["owner"] = self.user
            self._set(m, ALLOCATED, "Allocated")
            st = ALLOCATED
        if st != ALLOCATED:
            raise MaasError(409, "Can't deploy a machine that is in the '%s' state."
                            % STATUS_NAMES[st])
        if m["owner"] != self.user:
            raise MaasError(403, "Can't deploy a machine owned by another user.")
        osystem = fields.get("osystem") or "ubuntu"
        series = fields.get("distro_series") or self.args.default_series
        if "/" in series:
            osystem, series = series.split("/", 1)
        allowed = [s for s in self.args.series.split(",") if s]
        if osystem != "ubuntu":
            raise MaasError(400, {"osystem": ["'%s' is not a valid osystem.  It should be one "
                                              "of: '', 'ubuntu'." % osystem]})
        if series not in allowed:
            raise MaasError(400, {"distro_series": [
                "'%s' is not a valid distro_series.  It should be one of: ''%s."
                % (series, "".join(", 'ubuntu/%s'" % s for s in allowed))]})
        user_data = None
        if fields.get("user_data"):
            raw = re.sub(r"\s+", "", fields["user_data"])
            try:
                user_data = base64.b64decode(raw, validate=True).decode("utf-8", "replace")
            except (binascii.Error, ValueError):
                record["user_data_ok"] = False
                raise MaasError(400, {"user_data": ["Enter a valid base64-encoded string."]})
            record["user_data_ok"] = True
        record["user_data"] = user_data
        record["distro_series"] = series
        m.update(osystem=osystem, distro_series=series, power_state="on", user_data=user_data,
                 agent_name=fields.get("agent_name", m["agent_name"]))
        self._set(m, DEPLOYING, "Deploying", now() + self._seconds("deploy_seconds"))
        return Response(200, self.machine_json(m))


def main():
    p = fakelib.base_arg_parser("Fake Canonical MAAS 2.0 API for the pgcloud tests")
    p.add_argument("--api-key", default="ck:tk:sec", help="consumer:token:secret")
    p.add_argument("--user", default="pgcloud", help="MAAS user the key belongs to (owner)")
    p.add_argument("--machines", type=int, default=4)
    p.add_argument("--system-ids", help="comma-separated system ids (default abc123, abc124, ...)")
    p.add_argument("--new", action="store_true", help="machines start in status New")
    p.add_argument("--deploy-seconds", type=float, default=2.0)
    p.add_argument("--release-seconds", type=float, default=1.0)
    p.add_argument("--commission-seconds", type=float, default=1.0)
    p.add_argument("--timestamp-skew", type=int, default=300)
    p.add_argument("--series", default="focal,jammy,noble", help="valid distro_series")
    p.add_argument("--default-series", default="jammy")
    args = p.parse_args()
    fakelib.check_tls_args(p, args)
    if not 0 <= args.machines <= 800:
        p.error("--machines must be between 0 and 800")
    fakelib.prepare_state_dir(args.state_dir)
    return MaasFake(args).serve()


if __name__ == "__main__":
    sys.exit(main())
