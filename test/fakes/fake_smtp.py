#!/usr/bin/env python3
"""Fake SMTP relay (RFC 5321 subset) for the pgcloud test suite.

    python3 test/fakes/fake_smtp.py --port 0 --state-dir DIR [--user U --password P]
        [--tls-cert CERT --tls-key KEY [--starttls]] [--max-size BYTES] [--hostname NAME]

Commands: EHLO, HELO, AUTH PLAIN / AUTH LOGIN (only when --user is given, and
then required before MAIL), MAIL FROM, RCPT TO, DATA (dot-stuffing undone),
RSET, NOOP, VRFY, HELP, QUIT, and STARTTLS with --starttls. With --tls-cert and
no --starttls the whole session is TLS from the first byte (smtps://).
Accepted messages go to DIR/messages.jsonl, every command to DIR/requests.jsonl.
Failure injection only through DIR/control.json (re-read on every command).
See README.md.
"""

import base64
import binascii
import json
import os
import re
import socket
import socketserver
import ssl
import sys
import threading
from email import policy
from email.parser import BytesParser

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fakelib                                   # noqa: E402
from fakelib import now                         # noqa: E402

MAX_LINE = 2048
MAX_RCPT = 100
SMTP_EFFECTS = ("reject_rcpt", "reject_mail", "reject_data", "reject_connect")
REPLY_TEXT = {
    421: "Service not available, closing transmission channel",
    450: "Requested mail action not taken: mailbox unavailable",
    451: "Requested action aborted: local error in processing",
    452: "Requested action not taken: insufficient system storage",
    550: "Requested action not taken: mailbox unavailable",
    551: "User not local",
    552: "Requested mail action aborted: exceeded storage allocation",
    553: "Requested action not taken: mailbox name not allowed",
    554: "Transaction failed",
}
ADDR_RE = re.compile(r"^\s*<([^<>]*)>\s*(.*)$")


class Dropped(Exception):
    """The connection is to be closed without a reply (or has gone)."""


class SmtpFake:
    name = "fake_smtp"

    def __init__(self, args):
        self.args = args
        self.verbose = args.verbose
        self.state_dir = args.state_dir
        self.stopping = threading.Event()
        self.log = fakelib.RequestLog(os.path.join(args.state_dir, "requests.jsonl"))
        self.control = fakelib.Control(args.state_dir, SMTP_EFFECTS)
        self.messages_path = os.path.join(args.state_dir, "messages.jsonl")
        self.lock = threading.Lock()
        self.msg_seq = fakelib.count_lines(self.messages_path)
        self.session_seq = 0
        self.tls_ctx = (fakelib.server_tls_context(args.tls_cert, args.tls_key)
                        if args.tls_cert else None)

    def debug(self, msg):
        if self.verbose:
            sys.stderr.write("fake_smtp: %s\n" % msg)

    def next_session(self):
        with self.lock:
            self.session_seq += 1
            return self.session_seq

    def store(self, msg):
        with self.lock:
            self.msg_seq += 1
            msg["seq"] = self.msg_seq
            msg["id"] = "fake-%06d" % self.msg_seq
            with open(self.messages_path, "a") as f:
                f.write(json.dumps(msg, sort_keys=True) + "\n")
            return msg["id"]


class SmtpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, addr, fake):
        self.fake = fake
        super().__init__(addr, SmtpSession)

    def finish_request(self, request, client_address):
        fake = self.fake
        if fake.tls_ctx is None or fake.args.starttls:
            return super().finish_request(request, client_address)
        request.settimeout(10)
        try:
            tls = fake.tls_ctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            fake.debug("TLS handshake failed: %s" % e)
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        if self.fake.verbose:
            super().handle_error(request, client_address)


class SmtpSession(socketserver.StreamRequestHandler):
    timeout = 120

    # -- i/o -------------------------------------------------------------
    def setup(self):
        super().setup()
        self.fake = self.server.fake
        self.session = self.fake.next_session()
        self.tls = isinstance(self.request, ssl.SSLSocket)
        self.helo = None
        self.esmtp = False
        self.auth_user = None
        self.starttls_done = False
        self.reset()

    def reset(self):
        self.mail_from = None
        self.mail_params = ""
        self.rcpt_to = []

    def send(self, code, text):
        lines = text if isinstance(text, list) else [text]
        out = []
        for i, line in enumerate(lines):
            sep = "-" if i < len(lines) - 1 else " "
            out.append("%d%s%s\r\n" % (code, sep, line))
        try:
            self.wfile.write("".join(out).encode())
            self.wfile.flush()
        except OSError:
            raise Dropped()

    def readline(self):
        try:
            line = self.rfile.readline(MAX_LINE + 1)
        except (OSError, socket.timeout):
            raise Dropped()
        if not line:
            raise Dropped()
        return line

    def drop(self):
        try:
            self.request.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        raise Dropped()

    def log(self, command, arg, code, text, **extra):
        entry = {"seq": self.fake.log.next_seq(), "ts": round(now(), 6), "fake": "fake_smtp",
                 "session": self.session, "client": self.client_address[0], "tls": self.tls,
                 "command": command, "arg": arg, "status": code, "reply": text}
        entry.update(extra)
        entry.setdefault("injected", None)
        self.fake.log.write(entry)

    # -- failure injection -------------------------------------------------
    def inject(self, command, effects=None):
        """Apply the generic effects (hang, drop, delay) of a matching rule; return
        the rule (so the caller can apply its reject_* effect) or {}."""
        rule, key = self.fake.control.match({"command": command}, effects)
        if not rule:
            return {}, None
        if fakelib._truthy(rule.get("hang")):
            self.log(command, None, None, None, injected="hang")
            self.fake.control.wait_released(key, self.fake.stopping)
            if self.fake.stopping.is_set():
                self.drop()
        if fakelib._truthy(rule.get("drop_connection")):
            self.log(command, None, None, None, injected="drop_connection")
            self.drop()
        if rule.get("delay_seconds"):
            self.fake.stopping.wait(float(rule["delay_seconds"]))
        return rule, key

    @staticmethod
    def reject_reply(rule, effect):
        value = str(rule[effect])[:3]
        code = int(value) if value.isdigit() and 400 <= int(value) <= 599 else 550
        return code, str(rule.get("message") or REPLY_TEXT.get(code, "Rejected (test control)"))

    # -- session -----------------------------------------------------------
    def handle(self):
        try:
            self.converse()
        except Dropped:
            pass

    def finish(self):
        try:
            super().finish()
        except OSError:
            pass
        if self.starttls_done:          # the upgraded socket is ours to close
            try:
                self.request.close()
            except OSError:
                pass

    def converse(self):
        rule, _ = self.inject("CONNECT", fakelib.GENERIC_EFFECTS + ("reject_connect",))
        if rule.get("reject_connect"):
            code, text = self.reject_reply(rule, "reject_connect")
            self.log("CONNECT", None, code, text, injected="reject_connect")
            self.send(code, text)
            return
        self.log("CONNECT", None, 220, "greeting")
        self.send(220, "%s ESMTP fake_smtp ready" % self.fake.args.hostname)
        while True:
            raw = self.readline()
            if len(raw) > MAX_LINE:
                self.log("?", None, 500, "Line too long")
                self.send(500, "Line too long")
                while not raw.endswith(b"\n"):
                    raw = self.readline()
                continue
            line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
            verb, _, arg = line.partition(" ")
            verb = verb.upper()
            if verb == "QUIT":
                self.log("QUIT", arg, 221, "Bye")
                self.send(221, "Bye")
                return
            getattr(self, "cmd_" + verb, self.cmd_unknown)(verb, arg)

    # -- commands -----------------------------------------------------------
    def reply(self, verb, arg, code, text, **extra):
        rule, _ = self.inject(verb, fakelib.GENERIC_EFFECTS)
        if rule:
            extra.setdefault("injected", "delay" if rule.get("delay_seconds") else None)
        self.log(verb, arg, code, text if isinstance(text, str) else text[-1], **extra)
        self.send(code, text)

    def cmd_unknown(self, verb, arg):
        self.reply(verb, arg, 500, "Command not recognized")

    def cmd_EHLO(self, verb, arg):
        if not arg.strip():
            return self.reply(verb, arg, 501, "Syntax: EHLO hostname")
        self.helo, self.esmtp = arg.strip(), True
        self.reset()
        lines = ["%s greets %s" % (self.fake.args.hostname, self.helo),
                 "SIZE %d" % self.fake.args.max_size, "8BITMIME", "PIPELINING"]
        if self.fake.args.user is not None:
            lines.append("AUTH PLAIN LOGIN")
        if self.fake.args.starttls and self.fake.tls_ctx and not self.tls:
            lines.append("STARTTLS")
        lines.append("HELP")
        self.reply(verb, arg, 250, lines)

    def cmd_HELO(self, verb, arg):
        if not arg.strip():
            return self.reply(verb, arg, 501, "Syntax: HELO hostname")
        self.helo, self.esmtp = arg.strip(), False
        self.reset()
        self.reply(verb, arg, 250, self.fake.args.hostname)

    def cmd_NOOP(self, verb, arg):
        self.reply(verb, arg, 250, "OK")

    def cmd_RSET(self, verb, arg):
        self.reset()
        self.reply(verb, arg, 250, "OK")

    def cmd_VRFY(self, verb, arg):
        self.reply(verb, arg, 252, "Cannot VRFY user, but will accept message and attempt "
                   "delivery")

    def cmd_HELP(self, verb, arg):
        self.reply(verb, arg, 214, "Commands: EHLO HELO AUTH MAIL RCPT DATA RSET NOOP VRFY "
                   "HELP QUIT STARTTLS")

    def cmd_STARTTLS(self, verb, arg):
        if not (self.fake.args.starttls and self.fake.tls_ctx) or self.tls:
            return self.reply(verb, arg, 502, "Command not implemented")
        if self.helo is None:
            return self.reply(verb, arg, 503, "Send EHLO first")
        self.reply(verb, arg, 220, "Ready to start TLS")
        try:
            self.request.settimeout(10)
            tls = self.fake.tls_ctx.wrap_socket(self.request, server_side=True)
            tls.settimeout(self.timeout)
        except (ssl.SSLError, OSError) as e:
            self.fake.debug("STARTTLS handshake failed: %s" % e)
            raise Dropped()
        # Discard anything buffered before the handshake (RFC 3207 section 4.2).
        self.request = self.connection = tls
        self.rfile = tls.makefile("rb")
        self.wfile = tls.makefile("wb")
        self.tls = self.starttls_done = True
        self.helo, self.esmtp, self.auth_user = None, False, None
        self.reset()

    def cmd_AUTH(self, verb, arg):
        mech, _, initial = arg.strip().partition(" ")
        mech = mech.upper()
        shown = mech + (" <redacted>" if initial else "")
        if self.fake.args.user is None:
            return self.reply(verb, shown, 502, "Command not implemented")
        if self.helo is None or not self.esmtp:
            return self.reply(verb, shown, 503, "Send EHLO first")
        if self.auth_user is not None:
            return self.reply(verb, shown, 503, "Already authenticated")
        if self.mail_from is not None:
            return self.reply(verb, shown, 503, "AUTH not permitted during a mail transaction")
        try:
            if mech == "PLAIN":
                if not initial:
                    self.send(334, "")
                    initial = self.readline().strip().decode()
                if initial == "*":
                    return self.reply(verb, shown, 501, "Authentication cancelled")
                parts = base64.b64decode(initial, validate=True).decode().split("\0")
                if len(parts) != 3:
                    raise ValueError("PLAIN needs authzid\\0user\\0password")
                user, password = parts[1], parts[2]
            elif mech == "LOGIN":
                if initial:
                    user = base64.b64decode(initial, validate=True).decode()
                else:
                    self.send(334, "VXNlcm5hbWU6")
                    answer = self.readline().strip().decode()
                    if answer == "*":
                        return self.reply(verb, shown, 501, "Authentication cancelled")
                    user = base64.b64decode(answer, validate=True).decode()
                self.send(334, "UGFzc3dvcmQ6")
                answer = self.readline().strip().decode()
                if answer == "*":
                    return self.reply(verb, shown, 501, "Authentication cancelled")
                password = base64.b64decode(answer, validate=True).decode()
            else:
                return self.reply(verb, shown, 504, "Unrecognized authentication type")
        except (binascii.Error, ValueError, UnicodeDecodeError):
            return self.reply(verb, shown, 501, "Cannot decode response", auth_ok=False)
        ok = user == self.fake.args.user and password == self.fake.args.password
        if ok:
            self.auth_user = user
            return self.reply(verb, shown, 235, "Authentication successful", auth_ok=True,
                              auth_user=user)
        return self.reply(verb, shown, 535, "Authentication credentials invalid", auth_ok=False,
                          auth_user=user)

    def cmd_MAIL(self, verb, arg):
        if self.helo is None:
            return self.reply(verb, arg, 503, "Send HELO/EHLO first")
        if self.fake.args.user is not None and self.auth_user is None:
            return self.reply(verb, arg, 530, "Authentication required")
        if self.mail_from is not None:
            return self.reply(verb, arg, 503, "Sender already specified")
        if not arg.upper().startswith("FROM:"):
            return self.reply(verb, arg, 501, "Syntax: MAIL FROM:<address>")
        m = ADDR_RE.match(arg[5:])
        if not m:
            return self.reply(verb, arg, 501, "Syntax: MAIL FROM:<address>")
        addr, params = m.group(1), m.group(2).strip()
        size = re.search(r"(?i)\bSIZE=([0-9]+)", params)
        if size and int(size.group(1)) > self.fake.args.max_size:
            return self.reply(verb, arg, 552, "Message size exceeds fixed maximum message size")
        rule, _ = self.fake.control.match({"command": "MAIL"}, ("reject_mail",))
        if rule:
            code, text = self.reject_reply(rule, "reject_mail")
            return self.reply(verb, arg, code, text, injected="reject_mail")
        self.mail_from, self.mail_params = addr, params
        self.reply(verb, arg, 250, "OK")

    def cmd_RCPT(self, verb, arg):
        if self.mail_from is None:
            return self.reply(verb, arg, 503, "Need MAIL command")
        if not arg.upper().startswith("TO:"):
            return self.reply(verb, arg, 501, "Syntax: RCPT TO:<address>")
        m = ADDR_RE.match(arg[3:])
        if not m or not m.group(1):
            return self.reply(verb, arg, 501, "Syntax: RCPT TO:<address>")
        if len(self.rcpt_to) >= MAX_RCPT:
            return self.reply(verb, arg, 452, "Too many recipients")
        rule, _ = self.fake.control.match({"command": "RCPT"}, ("reject_rcpt",))
        if rule:
            code, text = self.reject_reply(rule, "reject_rcpt")
            return self.reply(verb, arg, code, text, injected="reject_rcpt")
        self.rcpt_to.append(m.group(1))
        self.reply(verb, arg, 250, "OK")

    def cmd_DATA(self, verb, arg):
        if self.mail_from is None:
            return self.reply(verb, arg, 503, "Need MAIL command")
        if not self.rcpt_to:
            return self.reply(verb, arg, 554, "No valid recipients")
        self.reply(verb, arg, 354, "End data with <CR><LF>.<CR><LF>")
        lines, size, too_big, bare_lf = [], 0, False, False
        while True:
            raw = self.readline()
            if raw in (b".\r\n", b".\n"):
                break
            if not raw.endswith(b"\r\n"):
                bare_lf = True
            if raw.startswith(b"."):
                raw = raw[1:]                           # undo dot-stuffing
            size += len(raw)
            if size > self.fake.args.max_size:
                too_big = True
            elif not too_big:
                lines.append(raw)
        if too_big:
            self.reset()
            return self.reply("END-OF-DATA", None, 552, "Message size exceeds fixed maximum "
                              "message size")
        # Generic effects scoped to the end of DATA: drop here = the client sent the
        # whole message and never learns whether it was accepted (it is not stored).
        rule, _ = self.inject("END-OF-DATA", fakelib.GENERIC_EFFECTS)
        reject, _ = self.fake.control.match({"command": "END-OF-DATA"}, ("reject_data",))
        if reject:
            code, text = self.reject_reply(reject, "reject_data")
            self.reset()
            self.log("END-OF-DATA", None, code, text, injected="reject_data")
            return self.send(code, text)
        data = b"".join(lines)
        msg = BytesParser(policy=policy.default).parsebytes(data, headersonly=True)
        record = {
            "ts": round(now(), 6), "session": self.session, "mail_from": self.mail_from,
            "mail_params": self.mail_params, "rcpt_to": list(self.rcpt_to),
            "data": data.decode("utf-8", "replace"), "size": len(data),
            "subject": _hdr(msg, "subject"), "to": _hdr(msg, "to"), "from": _hdr(msg, "from"),
            "cc": _hdr(msg, "cc"), "message_id": _hdr(msg, "message-id"),
            "headers": {k.lower(): _text(v) for k, v in msg.items()},
            "auth_user": self.auth_user, "tls": self.tls, "helo": self.helo,
            "bare_lf": bare_lf,
        }
        mid = self.fake.store(record)
        self.reset()
        text = "OK: queued as %s" % mid
        self.log("END-OF-DATA", None, 250, text, message_id=mid, size=len(data),
                 injected="delay" if rule.get("delay_seconds") else None)
        self.send(250, text)


def _text(v):
    try:
        return str(v)
    except Exception:                      # undecodable header: keep what we can
        return repr(v)


def _hdr(msg, name):
    v = msg.get(name)
    return None if v is None else _text(v)


def main():
    p = fakelib.base_arg_parser("Fake SMTP relay for the pgcloud tests")
    p.add_argument("--user", help="require AUTH with this user name")
    p.add_argument("--password", default="", help="password for --user")
    p.add_argument("--starttls", action="store_true",
                   help="with --tls-cert: offer STARTTLS instead of implicit TLS")
    p.add_argument("--max-size", type=int, default=10 * 1024 * 1024)
    p.add_argument("--hostname", default="fake-smtp.pgcloud.test")
    args = p.parse_args()
    fakelib.check_tls_args(p, args)
    if args.starttls and not args.tls_cert:
        p.error("--starttls needs --tls-cert and --tls-key")
    fakelib.prepare_state_dir(args.state_dir)
    fake = SmtpFake(args)
    server = SmtpServer((args.host, args.port), fake)
    fakelib.run_until_signalled(server, args.state_dir, fake.stopping)
    return 0


if __name__ == "__main__":
    sys.exit(main())
