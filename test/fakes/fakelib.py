"""Shared machinery of the pgcloud test fakes (Python 3 standard library only).

What every fake gets from here:
  * the command line common to all fakes (--port, --state-dir, --tls-cert, --tls-key, --host);
  * the start-up contract: bind 127.0.0.1, write the chosen port to DIR/port once
    listening (atomically, via a rename), remove it again on exit, exit 0 on SIGTERM;
  * the request log DIR/requests.jsonl (one JSON object per line) mirrored in memory;
  * failure injection (Control): rules read from `POST /_control` and from
    DIR/control.json, the file being re-read on every request;
  * an HTTP/1.1 server (keep-alive, chunked request bodies, optional TLS with the
    handshake done in the connection's own thread) that routes /_control/* to the
    control API and everything else through the injection logic to the fake.

See README.md in this directory for the control keys and the log format.
"""

import argparse
import json
import os
import signal
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 8 * 1024 * 1024          # bytes of request body a fake accepts
MAX_LOG_BODY = 64 * 1024            # bytes of body text kept in one log line
GENERIC_EFFECTS = ("status", "delay_seconds", "hang", "drop_connection")
SCOPE_KEYS = ("path", "method", "op", "command")


# --------------------------------------------------------------------------
# Command line and process life cycle
# --------------------------------------------------------------------------

def base_arg_parser(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--port", type=int, default=0, help="TCP port, 0 = pick a free one")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--state-dir", required=True,
                   help="directory for port, requests.jsonl, control.json, ...")
    p.add_argument("--tls-cert", help="PEM server certificate: serve TLS")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument("--verbose", action="store_true", help="log to stderr")
    return p


def check_tls_args(parser, args):
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")


def server_tls_context(cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


def write_port_file(state_dir, port):
    tmp = os.path.join(state_dir, ".port.tmp")
    with open(tmp, "w") as f:
        f.write("%d\n" % port)
    os.replace(tmp, os.path.join(state_dir, "port"))


def remove_port_file(state_dir):
    try:
        os.unlink(os.path.join(state_dir, "port"))
    except FileNotFoundError:
        pass


def prepare_state_dir(state_dir):
    os.makedirs(state_dir, exist_ok=True)
    remove_port_file(state_dir)     # a stale port file would mislead a polling test


def run_until_signalled(server, state_dir, stopping, on_exit=None):
    """Serve in a thread, write the port file, return after SIGTERM/SIGINT."""
    def handler(signum, frame):
        stopping.set()
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                         daemon=True)
    t.start()
    write_port_file(state_dir, server.server_address[1])
    while not stopping.wait(0.2):
        pass
    server.shutdown()
    server.server_close()
    if on_exit:
        on_exit()
    remove_port_file(state_dir)


def now():
    return time.time()


# --------------------------------------------------------------------------
# Request log
# --------------------------------------------------------------------------

class RequestLog:
    """DIR/requests.jsonl plus an in-memory copy for GET /_control/requests."""

    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        self.entries = []
        self.seq = count_lines(path)     # a restarted fake continues the numbering

    def next_seq(self):
        with self.lock:
            self.seq += 1
            return self.seq

    def write(self, entry):
        line = json.dumps(entry, sort_keys=True, default=str)
        with self.lock:
            self.entries.append(entry)
            with open(self.path, "a") as f:
                f.write(line + "\n")

    def since(self, seq):
        with self.lock:
            return [e for e in self.entries if e.get("seq", 0) > seq]


def count_lines(path):
    """Lines of an existing JSON-lines file (creating it if absent)."""
    with open(path, "a+") as f:
        f.seek(0)
        return sum(1 for _ in f)


def body_for_log(body):
    text = body[:MAX_LOG_BODY].decode("utf-8", errors="replace")
    return text


# --------------------------------------------------------------------------
# Failure injection
# --------------------------------------------------------------------------

class Control:
    """Failure-injection rules from two sources, `http` (POST /_control) and `file`
    (DIR/control.json, re-read on every call).

    A control document is a JSON object. Its top-level keys form one rule (if it
    has any effect key) and are also the fake's "settings" (e.g. fail_deploy);
    "rules": [...] adds more rules. The first active rule whose scope matches a
    request applies, wholly. A rule with "fail_next": n applies to n matching
    requests of its generation; a generation starts whenever its source changes
    (a POST to /_control, or a change of the file's content).
    """

    def __init__(self, state_dir, extra_effects=()):
        self.path = os.path.join(state_dir, "control.json")
        self.lock = threading.RLock()
        self.effects = tuple(GENERIC_EFFECTS) + tuple(extra_effects)
        self.docs = {"http": {}, "file": {}}
        self.gens = {"http": 0, "file": 0}
        self.file_raw = None
        self.file_error = None
        self.used = {}

    # -- sources -----------------------------------------------------------
    def _reload_file(self):
        try:
            with open(self.path, "rb") as f:
                raw = f.read(1024 * 1024)
        except (FileNotFoundError, IsADirectoryError):
            raw = b""
        if raw == self.file_raw:
            return
        self.file_raw = raw
        self.gens["file"] += 1
        doc = {}
        self.file_error = None
        if raw.strip():
            try:
                doc = json.loads(raw)
                if not isinstance(doc, dict):
                    raise ValueError("control.json must hold a JSON object")
            except ValueError as e:      # a half-written file reads as "no control"
                self.file_error = str(e)
                doc = {}
        self.docs["file"] = doc

    def set_http(self, doc):
        if not isinstance(doc, dict):
            raise ValueError("control must be a JSON object")
        with self.lock:
            self.docs["http"] = doc
            self.gens["http"] += 1

    def snapshot(self):
        with self.lock:
            self._reload_file()
            return {"http": self.docs["http"], "file": self.docs["file"],
                    "file_error": self.file_error, "settings": self._settings()}

    # -- settings (fake-specific top-level keys) ---------------------------
    def _settings(self):
        merged = {}
        for source in ("http", "file"):
            for k, v in self.docs[source].items():
                if k != "rules":
                    merged[k] = v
        return merged

    def settings(self):
        with self.lock:
            self._reload_file()
            return self._settings()

    # -- rules -------------------------------------------------------------
    def _rules(self, source):
        doc = self.docs[source]
        top = {k: v for k, v in doc.items() if k != "rules"}
        out = []
        if any(_truthy(top.get(k)) for k in self.effects):
            out.append((-1, top))
        rules = doc.get("rules")
        if isinstance(rules, list):
            for i, r in enumerate(rules):
                if isinstance(r, dict):
                    out.append((i, r))
        return out

    @staticmethod
    def _scope_ok(rule, ctx):
        for k in SCOPE_KEYS:
            want = rule.get(k)
            if want is None:
                continue
            have = ctx.get(k)
            if have is None:
                return False
            if k == "path":
                if not str(have).startswith(str(want)):
                    return False
            elif str(have).upper() != str(want).upper():
                return False
        return True

    def match(self, ctx, effects=None):
        """The rule that applies to a request (and consume one of its fail_next),
        as (rule dict, key) or ({}, None). `effects` restricts which effect keys
        count (e.g. only reject_rcpt for a RCPT command)."""
        effects = effects or self.effects
        with self.lock:
            self._reload_file()
            for source in ("http", "file"):
                for idx, rule in self._rules(source):
                    if not any(_truthy(rule.get(k)) for k in effects):
                        continue
                    if not self._scope_ok(rule, ctx):
                        continue
                    key = (source, self.gens[source], idx)
                    limit = rule.get("fail_next")
                    if limit is not None:
                        try:
                            limit = int(limit)
                        except (TypeError, ValueError):
                            limit = 0
                        if self.used.get(key, 0) >= limit:
                            continue
                        self.used[key] = self.used.get(key, 0) + 1
                    return rule, key
        return {}, None

    def still_current(self, key):
        """True while the source that produced rule `key` is unchanged."""
        if key is None:
            return False
        with self.lock:
            self._reload_file()
            return self.gens[key[0]] == key[1]

    def wait_released(self, key, stopping, poll=0.05):
        """Block (a hung request) until its control source changes or the fake stops."""
        while self.still_current(key) and not stopping.is_set():
            stopping.wait(poll)


def _truthy(v):
    return v is not None and v is not False and v != 0 and v != "" and v != []


# --------------------------------------------------------------------------
# HTTP server
# --------------------------------------------------------------------------

class Request:
    """What a fake's handle() sees."""

    def __init__(self, method, raw_path, headers, body, client):
        parts = urllib.parse.urlsplit(raw_path)
        self.method = method
        self.raw_path = raw_path
        self.path = urllib.parse.unquote(parts.path)
        self.query_raw = parts.query
        self.query_list = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        self.query = dict(self.query_list)
        self.headers = {}
        for k, v in headers.items():
            k = k.lower()
            self.headers[k] = v if k not in self.headers else self.headers[k] + ", " + v
        self.body = body
        self.client = client

    def header(self, name, default=None):
        return self.headers.get(name.lower(), default)

    def content_type(self):
        return (self.header("content-type") or "").split(";")[0].strip().lower()


class Response:
    def __init__(self, status, body=b"", content_type="application/json", headers=None):
        self.status = status
        if isinstance(body, (dict, list)):
            body = json.dumps(body, indent=2) + "\n"
        if isinstance(body, str):
            body = body.encode()
        self.body = body
        self.headers = [("Content-Type", content_type)] if content_type else []
        for k, v in (headers or {}).items():
            self.headers.append((k, str(v)))

    def add_header(self, k, v):
        self.headers.append((k, str(v)))

    def for_log(self):
        text = self.body.decode("utf-8", errors="replace")
        try:
            return json.loads(text)
        except ValueError:
            return text[:4000]


class FakeHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, addr, handler_class, fake, tls_ctx=None):
        self.fake = fake
        self.tls_ctx = tls_ctx
        super().__init__(addr, handler_class)

    def finish_request(self, request, client_address):
        if self.tls_ctx is None:
            return super().finish_request(request, client_address)
        request.settimeout(10)
        try:
            tls = self.tls_ctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            self.fake.debug("TLS handshake failed: %s" % e)
            return
        try:
            tls.settimeout(None)
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        if self.fake.verbose:
            super().handle_error(request, client_address)


class FakeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 120                  # idle keep-alive connections are closed after this
    disable_nagle_algorithm = True  # headers and body go in two writes: no 40 ms delayed-ACK stall

    def version_string(self):
        return self.server.fake.name

    def log_message(self, fmt, *args):
        if self.server.fake.verbose:
            sys.stderr.write("%s %s\n" % (self.server.fake.name, fmt % args))

    def do_GET(self):
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET

    # -- plumbing ----------------------------------------------------------
    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            chunks, total = [], 0
            while True:
                line = self.rfile.readline(1024)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > MAX_BODY:
                    raise ValueError("body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(16)
            return b"".join(chunks)
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        n = int(length)
        if n < 0 or n > MAX_BODY:
            raise ValueError("body too large")
        return self.rfile.read(n)

    def _send(self, resp):
        self.send_response(resp.status)
        for k, v in resp.headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(resp.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(resp.body)
        self.wfile.flush()

    def _drop(self):
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- dispatch ----------------------------------------------------------
    def _dispatch(self):
        fake = self.server.fake
        try:
            body = self._read_body()
        except ValueError:
            self.close_connection = True
            self._send(Response(413, {"error": "request body too large"}))
            return
        req = Request(self.command, self.path, self.headers, body, self.client_address[0])
        if req.path == "/_control" or req.path.startswith("/_control/"):
            self._send(fake.control_api(req))
            return

        record = {
            "seq": fake.log.next_seq(),
            "ts": round(now(), 6),
            "fake": fake.name,
            "method": req.method,
            "path": req.path,
            "query": req.query,
            "query_raw": req.query_raw,
            "headers": req.headers,
            "body": body_for_log(body),
            "injected": None,
            # the client's end of the TCP connection: requests that share one
            # came over one kept-alive connection
            "peer": "%s:%s" % tuple(self.client_address[:2]),
        }
        rule, key = fake.control.match(fake.match_context(req))
        phase = str(rule.get("phase", "before")).lower()
        resp = None

        if rule and phase == "before":
            if _truthy(rule.get("hang")):
                record["injected"] = "hang"
                record["status"] = None
                fake.log.write(record)
                fake.control.wait_released(key, fake.stopping)
                if fake.stopping.is_set():
                    self._drop()
                    return
                record = dict(record, released=True, injected=None, ts=round(now(), 6))
            elif _truthy(rule.get("drop_connection")):
                record["injected"] = "drop_connection"
                record["status"] = None
                fake.log.write(record)
                self._drop()
                return
            elif _truthy(rule.get("status")):
                record["injected"] = "status"
                resp = fake.safe_injected_response(rule, req)

        if resp is None:
            try:
                resp = fake.handle(req, record)
            except Exception as e:          # a bug in the fake must not look like a hang
                import traceback
                traceback.print_exc()
                record["fake_exception"] = repr(e)
                resp = Response(500, {"error": "fake crashed: %r" % e})
            if rule and phase == "after":
                if _truthy(rule.get("hang")):
                    record["injected"] = "hang"
                elif _truthy(rule.get("drop_connection")):
                    record["injected"] = "drop_connection"
                elif _truthy(rule.get("status")):
                    record["injected"] = "status"
                    record["processed_status"] = resp.status
                    resp = fake.safe_injected_response(rule, req)

        delay = rule.get("delay_seconds") if rule else None
        if delay:
            record["delay_seconds"] = float(delay)
        record["status"] = None if record["injected"] == "drop_connection" else resp.status
        record["response"] = None if record["injected"] == "drop_connection" else resp.for_log()
        fake.log.write(record)

        if record["injected"] == "drop_connection":
            self._drop()
            return
        if record["injected"] == "hang":
            fake.control.wait_released(key, fake.stopping)
            if fake.stopping.is_set():
                self._drop()
                return
        if delay:
            fake.stopping.wait(float(delay))
        try:
            self._send(resp)
        except OSError:
            self.close_connection = True


class HTTPFake:
    """Base of the HTTP fakes. Subclasses set `name`, implement handle(req, record),
    injected_response(rule, req) and optionally state(), match_context()."""

    name = "fake"
    extra_effects = ()

    def __init__(self, args):
        self.args = args
        self.verbose = args.verbose
        self.state_dir = args.state_dir
        self.stopping = threading.Event()
        self.log = RequestLog(os.path.join(args.state_dir, "requests.jsonl"))
        self.control = Control(args.state_dir, self.extra_effects)
        self.lock = threading.RLock()

    def debug(self, msg):
        if self.verbose:
            sys.stderr.write("%s: %s\n" % (self.name, msg))

    def match_context(self, req):
        return {"path": req.path, "method": req.method}

    def state(self):
        return {}

    def control_api(self, req):
        if req.path == "/_control" and req.method == "POST":
            try:
                doc = json.loads(req.body or b"{}")
                self.control.set_http(doc)
            except ValueError as e:
                return Response(400, {"error": "invalid control: %s" % e})
            return Response(200, {"ok": True, "control": doc})
        if req.path == "/_control" and req.method == "GET":
            return Response(200, self.control.snapshot())
        if req.path == "/_control/requests" and req.method == "GET":
            try:
                since = int(req.query.get("since", "0"))
            except ValueError:
                since = 0
            return Response(200, self.log.since(since))
        if req.path == "/_control/state" and req.method == "GET":
            with self.lock:
                return Response(200, self.state())
        return Response(404, {"error": "unknown control endpoint %s %s" % (req.method, req.path)})

    def handle(self, req, record):
        raise NotImplementedError

    def safe_injected_response(self, rule, req):
        try:
            return self.injected_response(rule, req)
        except (TypeError, ValueError) as e:       # a malformed control document
            return Response(500, {"error": "bad control rule %r: %s" % (rule, e)})

    def injected_response(self, rule, req):
        status = int(rule.get("status"))
        headers = {}
        if rule.get("retry_after") is not None:
            headers["Retry-After"] = rule["retry_after"]
        body = rule.get("body")
        if body is None:
            body = {"error": "injected failure %d" % status}
        return Response(status, body, headers=headers)

    def serve(self):
        args = self.args
        tls = server_tls_context(args.tls_cert, args.tls_key) if args.tls_cert else None
        server = FakeHTTPServer((args.host, args.port), FakeHandler, self, tls)
        self.start_background()
        run_until_signalled(server, self.state_dir, self.stopping)
        return 0

    def start_background(self):
        pass
