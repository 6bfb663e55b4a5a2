#!/usr/bin/env python3
"""Fake Stripe API (the subset pgcloud uses), for the pgcloud test suite.

    python3 test/fakes/fake_stripe.py --port 0 --state-dir DIR
        [--secret-key sk_test_pgcloud] [--webhook-secret whsec_pgcloud_test]
        [--api-version 2024-06-20] [--tls-cert CERT --tls-key KEY]

Real wire format: Bearer (or Basic) API key, application/x-www-form-urlencoded
bodies in Stripe's bracket notation, JSON answers and Stripe's error shape,
Idempotency-Key replay. Fake-only helpers (path segments starting with "_")
complete sessions and hand back signed webhook events. See README.md.
"""

import base64
import copy
import json
import os
import re
import secrets
import sys
import urllib.parse

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fakelib                                   # noqa: E402
from fakelib import Response, now               # noqa: E402
from stripe_sign import sign_header             # noqa: E402

ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
ZERO_DECIMAL = {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf",
                "ugx", "vnd", "vuv", "xaf", "xof", "xpf"}
SYMBOLS = {"usd": "$", "eur": "\u20ac", "gbp": "\u00a3", "jpy": "\u00a5"}
MIN_AMOUNT = 50                 # Stripe's minimum charge for usd/eur/gbp (cents)
MAX_UNIT_AMOUNT = 99999999

SESSION_PARAMS = {
    "mode", "success_url", "cancel_url", "line_items", "client_reference_id", "metadata",
    "customer", "customer_email", "customer_creation", "payment_method_types", "expires_at",
    "payment_intent_data", "locale", "submit_type", "expand", "billing_address_collection",
    "allow_promotion_codes", "ui_mode", "currency",
}
LINE_ITEM_PARAMS = {"price", "price_data", "quantity", "adjustable_quantity", "tax_rates",
                    "dynamic_tax_rates"}
PRICE_DATA_PARAMS = {"currency", "unit_amount", "product_data", "product", "tax_behavior",
                     "unit_amount_decimal"}
REFUND_PARAMS = {"charge", "payment_intent", "amount", "reason", "metadata", "expand",
                 "instructions_email", "refund_application_fee", "reverse_transfer"}
REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")
SESSION_EVENTS = ("checkout.session.completed", "checkout.session.expired",
                  "checkout.session.async_payment_succeeded",
                  "checkout.session.async_payment_failed")
REFUND_EVENTS = ("charge.refunded", "refund.created", "refund.updated", "refund.failed",
                 "charge.refund.updated")

KEY_RE = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
MAX_PARAM_DEPTH = 8
MAX_PARAMS = 2000


def new_id(prefix, n=24):
    return prefix + "".join(secrets.choice(ALNUM) for _ in range(n))


class StripeError(Exception):
    """An answer in Stripe's error shape. `cacheable`: saved under the
    Idempotency-Key (Stripe saves results once an endpoint began executing,
    not parameter-validation failures)."""

    def __init__(self, status, message, type_="invalid_request_error", code=None,
                 param=None, cacheable=False):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.cacheable = cacheable

    def body(self):
        e = {}
        if self.code:
            e["code"] = self.code
            e["doc_url"] = "https://stripe.com/docs/error-codes/" + self.code.replace("_", "-")
        e["message"] = self.message
        if self.param:
            e["param"] = self.param
        e["type"] = self.type
        return {"error": e}


def missing(param):
    return StripeError(400, "Missing required param: %s." % param, code="parameter_missing",
                       param=param)


def unknown(param):
    return StripeError(400, "Received unknown parameter: %s" % param, code="parameter_unknown",
                       param=param)


def invalid(param, message, code="parameter_invalid_string"):
    return StripeError(400, message, code=code, param=param)


# --------------------------------------------------------------------------
# Stripe's bracket notation
# --------------------------------------------------------------------------

def parse_bracket_form(pairs):
    """[("a[b][0][c]", "v"), ("l[]", "x")] -> {"a": {"b": [{"c": "v"}]}, "l": ["x"]}."""
    if len(pairs) > MAX_PARAMS:
        raise StripeError(400, "Too many parameters")
    root = {}
    for key, value in pairs:
        m = KEY_RE.match(key)
        if not m:
            raise StripeError(400, "Invalid parameter name: %s" % key, param=key)
        tokens = [m.group(1)] + re.findall(r"\[([^\[\]]*)\]", m.group(2))
        if len(tokens) > MAX_PARAM_DEPTH:
            raise StripeError(400, "Parameter nested too deeply: %s" % key, param=key)
        node = root
        for i, tok in enumerate(tokens):
            last = i == len(tokens) - 1
            if not isinstance(node, dict):
                raise StripeError(400, "Invalid hash: %s" % key, param=key)
            if tok == "":
                tok = str(len(node))            # "[]" appends
            if last:
                if isinstance(node.get(tok), dict):
                    raise StripeError(400, "Invalid hash: %s" % key, param=key)
                node[tok] = value
            else:
                child = node.setdefault(tok, {})
                if not isinstance(child, dict):
                    raise StripeError(400, "Invalid hash: %s" % key, param=key)
                node = child
    return _finalize(root, "")


def _finalize(node, path):
    if not isinstance(node, dict):
        return node
    hash_only = path == "metadata" or path.endswith("[metadata]")   # keys may be digits
    if node and not hash_only and all(k.isdigit() for k in node):
        idx = sorted(node, key=int)
        if [int(i) for i in idx] != list(range(len(idx))):
            raise StripeError(400, "Invalid array: %s" % (path or "params"), param=path)
        return [_finalize(node[i], "%s[%s]" % (path, i)) for i in idx]
    return {k: _finalize(v, "%s[%s]" % (path, k) if path else k) for k, v in node.items()}


def parse_int(value, param, minimum=None, maximum=None):
    if isinstance(value, (dict, list)) or not re.fullmatch(r"-?[0-9]+", str(value)):
        raise invalid(param, "Invalid integer: %s" % (value,), code="parameter_invalid_integer")
    n = int(value)
    if minimum is not None and n < minimum:
        raise invalid(param, "This value must be greater than or equal to %d." % minimum,
                      code="parameter_invalid_integer")
    if maximum is not None and n > maximum:
        raise invalid(param, "This value must be less than or equal to %d." % maximum,
                      code="parameter_invalid_integer")
    return n


def check_url(p, param):
    v = p.get(param)
    if v is None or v == "":
        raise missing(param)
    u = urllib.parse.urlsplit(str(v))
    if u.scheme not in ("http", "https") or not u.netloc:
        raise invalid(param, "Not a valid URL", code="url_invalid")
    return v


def check_metadata(md, param="metadata"):
    if md is None or md == "":
        return {}
    if not isinstance(md, dict):
        raise invalid(param, "Invalid object", code="parameter_invalid_string")
    if len(md) > 50:
        raise invalid(param, "Invalid metadata: metadata can have up to 50 keys")
    for k, v in md.items():
        if len(k) > 40:
            raise invalid("%s[%s]" % (param, k),
                          "Invalid metadata: keys can be at most 40 characters long")
        if not isinstance(v, str):
            raise invalid("%s[%s]" % (param, k), "Invalid metadata: values must be strings")
        if len(v) > 500:
            raise invalid("%s[%s]" % (param, k),
                          "Invalid metadata: values can be at most 500 characters long")
    return dict(md)


def check_known(p, known, prefix=""):
    for k in p:
        if k not in known:
            raise unknown("%s[%s]" % (prefix, k) if prefix else k)


def money(amount, currency):
    sym = SYMBOLS.get(currency, currency.upper() + " ")
    if currency in ZERO_DECIMAL:
        return "%s%d" % (sym, amount)
    return "%s%.2f" % (sym, amount / 100.0)


# --------------------------------------------------------------------------
# The fake
# --------------------------------------------------------------------------

class StripeFake(fakelib.HTTPFake):
    name = "fake_stripe"

    def __init__(self, args):
        super().__init__(args)
        self.secret_key = args.secret_key
        self.webhook_secret = args.webhook_secret
        self.api_version = args.api_version
        self.sessions = {}
        self.line_items = {}
        self.payment_intents = {}
        self.charges = {}
        self.refunds = {}
        self.events = {}
        self.session_events = {}
        self.idem = {}
        self.pi_metadata = {}

    # -- responses ---------------------------------------------------------
    def _response(self, status, body, extra_headers=None):
        r = Response(status, body)
        r.add_header("Request-Id", new_id("req_", 14))
        r.add_header("Stripe-Version", self.api_version)
        for k, v in (extra_headers or {}).items():
            r.add_header(k, v)
        return r

    def injected_response(self, rule, req):
        status = int(rule["status"])
        if rule.get("body") is not None:
            body = rule["body"]
        elif status == 429:
            body = StripeError(429, "Too many requests hit the API too quickly. We recommend "
                               "an exponential backoff of your requests.",
                               code="rate_limit").body()
        elif status >= 500:
            body = StripeError(status, "An unknown error occurred", type_="api_error").body()
        elif status == 402:
            body = StripeError(402, "Your card was declined.", type_="card_error",
                               code="card_declined").body()
        else:
            body = StripeError(status, "Injected failure (HTTP %d)" % status).body()
        headers = {}
        if rule.get("retry_after") is not None:
            headers["Retry-After"] = rule["retry_after"]
        if rule.get("should_retry") is not None:
            headers["Stripe-Should-Retry"] = "true" if rule["should_retry"] else "false"
        return self._response(status, body, headers)

    def state(self):
        return {"sessions": self.sessions, "payment_intents": self.payment_intents,
                "charges": self.charges, "refunds": self.refunds,
                "events": sorted(self.events), "idempotency_keys": sorted(self.idem)}

    # -- authentication ----------------------------------------------------
    def _check_auth(self, req, record):
        auth = req.header("authorization")
        key = None
        if auth:
            scheme, _, cred = auth.partition(" ")
            if scheme.lower() == "bearer":
                key = cred.strip()
                record["auth_scheme"] = "bearer"
            elif scheme.lower() == "basic":
                try:
                    key = base64.b64decode(cred.strip()).decode().split(":", 1)[0]
                except (ValueError, UnicodeDecodeError):
                    key = ""
                record["auth_scheme"] = "basic"
        if not key:
            record["auth_ok"] = False
            return StripeError(
                401, "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
                "YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for "
                "details, or we can help at https://support.stripe.com/.")
        if key != self.secret_key:
            record["auth_ok"] = False
            masked = key[:8] + "*" * max(0, len(key) - 12) + key[-4:] if len(key) > 12 else "****"
            return StripeError(401, "Invalid API Key provided: %s" % masked)
        record["auth_ok"] = True
        return None

    # -- request entry -------------------------------------------------------
    def handle(self, req, record):
        helper = any(seg.startswith("_") for seg in req.path.split("/"))
        record["helper"] = helper
        try:
            if not req.path.startswith("/v1/"):
                raise self._unrecognized(req)
            err = self._check_auth(req, record)
            if err and not helper:
                raise err
            params = self._params(req, record)
            if req.method == "POST" and not helper:
                return self._idempotent(req, record, params)
            status, body, _ = self._route(req, params, record)
            return self._response(status, body)
        except StripeError as e:
            record["error"] = e.message
            return self._response(e.status, e.body(),
                                  {"WWW-Authenticate": 'Bearer realm="Stripe"'}
                                  if e.status == 401 else None)

    def _unrecognized(self, req):
        return StripeError(404, "Unrecognized request URL (%s: %s). Please see "
                           "https://stripe.com/docs or we can help at "
                           "https://support.stripe.com/." % (req.method, req.path))

    def _params(self, req, record):
        if req.method == "POST":
            ct = req.content_type()
            if req.body and ct != "application/x-www-form-urlencoded":
                raise StripeError(400, "Invalid request: unsupported Content-Type %s. If error "
                                  "persists and you need assistance, please contact "
                                  "support@stripe.com." % (ct or "(none)"))
            try:
                text = req.body.decode("utf-8")
            except UnicodeDecodeError:
                raise StripeError(400, "Invalid request: body is not UTF-8")
            pairs = urllib.parse.parse_qsl(text, keep_blank_values=True)
        else:
            pairs = req.query_list
        record["form"] = dict(pairs)
        params = parse_bracket_form(pairs)
        record["params"] = params
        return params

    # -- idempotency ---------------------------------------------------------
    def _idempotent(self, req, record, params):
        key = req.header("idempotency-key")
        record["idempotency_key"] = key
        if not key:
            record["idempotency"] = "missing"
            raise StripeError(400, "Missing Idempotency-Key header: this fake requires one on "
                              "every POST (pgcloud must send it).",
                              code="idempotency_key_missing")
        if len(key) > 255:
            record["idempotency"] = "invalid"
            raise StripeError(400, "Invalid Idempotency-Key: keys can be at most 255 characters "
                              "long", type_="idempotency_error")
        endpoint = req.path
        canon = json.dumps(params, sort_keys=True)
        with self.lock:
            e = self.idem.get(key)
            if e is not None:
                if e["endpoint"] != endpoint:
                    record["idempotency"] = "endpoint_mismatch"
                    raise StripeError(
                        400, "Keys for idempotent requests can only be used for the same endpoint "
                        "they were first used for ('%s' vs '%s'). Try using a key other than "
                        "'%s' if you meant to execute a different request."
                        % (e["endpoint"], endpoint, key), type_="idempotency_error")
                if e["params"] != canon:
                    record["idempotency"] = "params_mismatch"
                    raise StripeError(
                        400, "Keys for idempotent requests can only be used with the same "
                        "parameters they were first used with. Try using a key other than '%s' "
                        "if you meant to execute a different request." % key,
                        type_="idempotency_error")
                if e["state"] == "in_flight":
                    record["idempotency"] = "in_flight"
                    raise StripeError(
                        409, "There is currently another in-progress request using this "
                        "Idempotent Key (that probably means you submitted twice, and the other "
                        "request is still going through): %s. Please try again later." % key,
                        type_="idempotency_error", code="idempotency_key_in_use")
                record["idempotency"] = "replayed"
                record["idempotent_replayed"] = True
                return self._response(e["status"], e["body"],
                                      {"Idempotent-Replayed": "true",
                                       "Original-Request": e["request_id"]})
            self.idem[key] = {"endpoint": endpoint, "params": canon, "state": "in_flight"}
        record["idempotency"] = "new"
        record["idempotent_replayed"] = False
        cacheable = False
        try:
            try:
                status, body, cacheable = self._route(req, params, record)
            except StripeError as err:
                status, body, cacheable = err.status, err.body(), err.cacheable
                record["error"] = err.message
            resp = self._response(status, body)
        finally:
            with self.lock:
                if cacheable:
                    self.idem[key].update(state="done", status=status, body=body,
                                          request_id=dict(resp.headers)["Request-Id"])
                else:
                    del self.idem[key]
        record["idempotency_saved"] = cacheable
        return resp

    # -- routing -------------------------------------------------------------
    def _route(self, req, p, record):
        """-> (status, body, cacheable)"""
        parts = [s for s in req.path.split("/") if s][1:]      # drop "v1"
        m = req.method
        with self.lock:
            if parts == ["checkout", "sessions"] and m == "POST":
                return 200, self._create_session(p), True
            if len(parts) >= 3 and parts[:2] == ["checkout", "sessions"]:
                sid = parts[2]
                rest = parts[3:]
                if m == "GET" and not rest:
                    return 200, self._session(sid), True
                if m == "GET" and rest == ["line_items"]:
                    self._session(sid)
                    data = self.line_items[sid]
                    return 200, {"object": "list", "data": data, "has_more": False,
                                 "url": "/v1/checkout/sessions/%s/line_items" % sid}, True
                if m == "POST" and rest == ["expire"]:
                    return 200, self._expire_session(sid), True
                if m == "POST" and rest == ["_complete"]:
                    return 200, self._complete_session(sid, req.query, record), False
                if m == "POST" and rest == ["_event"]:
                    return 200, self._session_event(sid, req.query, record), False
            if parts == ["refunds"] and m == "POST":
                return 200, self._create_refund(p, record), True
            if len(parts) == 2 and parts[0] == "refunds" and m == "GET":
                return 200, self._get(self.refunds, "refund", parts[1]), True
            if len(parts) == 3 and parts[0] == "refunds" and parts[2] == "_event" and m == "POST":
                return 200, self._refund_event(parts[1], req.query, record), False
            if len(parts) == 2 and parts[0] == "payment_intents" and m == "GET":
                return 200, self._get(self.payment_intents, "payment_intent", parts[1]), True
            if len(parts) == 2 and parts[0] == "charges" and m == "GET":
                return 200, self._get(self.charges, "charge", parts[1]), True
            if len(parts) == 2 and parts[0] == "events" and m == "GET":
                return 200, self._get(self.events, "event", parts[1]), True
        raise self._unrecognized(req)

    @staticmethod
    def _get(table, kind, oid):
        obj = table.get(oid)
        if obj is None:
            raise StripeError(404, "No such %s: '%s'" % (kind, oid), code="resource_missing",
                              param="id")
        return obj

    def _session(self, sid):
        return self._get(self.sessions, "checkout.session", sid)

    # -- checkout sessions ---------------------------------------------------
    def _create_session(self, p):
        check_known(p, SESSION_PARAMS)
        mode = p.get("mode")
        if not mode:
            raise missing("mode")
        if mode != "payment":
            raise invalid("mode", "Invalid mode: this fake supports only mode=payment, got %r"
                          % (mode,))
        success_url = check_url(p, "success_url")
        cancel_url = check_url(p, "cancel_url")
        items = p.get("line_items")
        if not items:
            raise missing("line_items")
        if not isinstance(items, list):
            raise invalid("line_items", "Invalid array")
        currency, total, stored = None, 0, []
        for i, li in enumerate(items):
            pre = "line_items[%d]" % i
            if not isinstance(li, dict):
                raise invalid(pre, "Invalid object")
            check_known(li, LINE_ITEM_PARAMS, pre)
            if "price" in li:
                raise StripeError(400, "No such price: '%s'" % li["price"],
                                  code="resource_missing", param=pre + "[price]")
            pd = li.get("price_data")
            if not isinstance(pd, dict):
                raise StripeError(400, "You must specify either `price` or `price_data` for "
                                  "each line item.", param=pre)
            check_known(pd, PRICE_DATA_PARAMS, pre + "[price_data]")
            cur = pd.get("currency")
            if not cur:
                raise missing(pre + "[price_data][currency]")
            cur = str(cur).lower()
            if not re.fullmatch(r"[a-z]{3}", cur):
                raise invalid(pre + "[price_data][currency]", "Invalid currency: %s" % cur)
            if "product" in pd:
                raise StripeError(400, "No such product: '%s'" % pd["product"],
                                  code="resource_missing", param=pre + "[price_data][product]")
            prod = pd.get("product_data")
            if not isinstance(prod, dict) or not prod.get("name"):
                raise missing(pre + "[price_data][product_data][name]")
            if "unit_amount" not in pd:
                raise missing(pre + "[price_data][unit_amount]")
            unit = parse_int(pd["unit_amount"], pre + "[price_data][unit_amount]", 0,
                             MAX_UNIT_AMOUNT)
            if "quantity" not in li:
                raise missing(pre + "[quantity]")
            qty = parse_int(li["quantity"], pre + "[quantity]", 1, 999999)
            if currency is not None and cur != currency:
                raise invalid(pre + "[price_data][currency]",
                              "All line items must be in the same currency (%s != %s)."
                              % (cur, currency))
            currency = cur
            total += unit * qty
            stored.append({
                "id": new_id("li_"), "object": "item", "amount_discount": 0,
                "amount_subtotal": unit * qty, "amount_tax": 0, "amount_total": unit * qty,
                "currency": cur, "description": prod["name"],
                "price": {"id": new_id("price_"), "object": "price", "active": False,
                          "currency": cur, "unit_amount": unit, "type": "one_time",
                          "product": new_id("prod_", 14)},
                "quantity": qty,
            })
        if "currency" in p and str(p["currency"]).lower() != currency:
            raise invalid("currency", "currency must match the line items' currency")
        crid = p.get("client_reference_id")
        if not crid:
            raise missing("client_reference_id")      # optional at Stripe, required here
        if len(crid) > 200:
            raise invalid("client_reference_id", "Invalid string: must be at most 200 "
                          "characters")
        if "metadata" not in p or p.get("metadata") in ("", {}):
            raise missing("metadata")                  # optional at Stripe, required here
        metadata = check_metadata(p.get("metadata"))
        minimum = 1 if currency in ZERO_DECIMAL else MIN_AMOUNT
        if total < minimum:
            raise StripeError(400, "The Checkout Session's total amount due must add up to at "
                              "least %s %s" % (money(minimum, currency), currency),
                              param="line_items")
        pmt = p.get("payment_method_types") or ["card"]
        if not isinstance(pmt, list):
            raise invalid("payment_method_types", "Invalid array")
        pid = p.get("payment_intent_data") or {}
        if not isinstance(pid, dict):
            raise invalid("payment_intent_data", "Invalid object")
        pi_metadata = check_metadata(pid.get("metadata"), "payment_intent_data[metadata]")
        created = int(now())
        expires_at = created + 86400
        if "expires_at" in p:
            expires_at = parse_int(p["expires_at"], "expires_at", created + 1800, created + 86400)
        sid = "cs_test_" + "a1" + "".join(secrets.choice(ALNUM) for _ in range(56))
        s = {
            "id": sid, "object": "checkout.session", "after_expiration": None,
            "allow_promotion_codes": None, "amount_subtotal": total, "amount_total": total,
            "automatic_tax": {"enabled": False, "liability": None, "status": None},
            "billing_address_collection": None, "cancel_url": cancel_url,
            "client_reference_id": crid, "client_secret": None, "consent": None,
            "consent_collection": None, "created": created, "currency": currency,
            "custom_fields": [], "customer": p.get("customer"),
            "customer_creation": "if_required", "customer_details": None,
            "customer_email": p.get("customer_email"), "expires_at": expires_at,
            "invoice": None, "livemode": False, "locale": p.get("locale"),
            "metadata": metadata, "mode": "payment", "payment_intent": None,
            "payment_link": None, "payment_method_collection": "if_required",
            "payment_method_types": pmt, "payment_status": "unpaid",
            "phone_number_collection": {"enabled": False}, "recovered_from": None,
            "setup_intent": None, "shipping_address_collection": None, "shipping_cost": None,
            "status": "open", "submit_type": p.get("submit_type"), "subscription": None,
            "success_url": success_url,
            "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
            "ui_mode": "hosted",
            "url": "https://checkout.stripe.com/c/pay/" + sid,
        }
        self.sessions[sid] = s
        self.line_items[sid] = stored
        self.pi_metadata[sid] = pi_metadata
        return s

    def _expire_session(self, sid):
        s = self._session(sid)
        if s["status"] != "open":
            raise StripeError(400, 'Only Checkout Sessions with a status in ["open"] can be '
                              'expired.', cacheable=True)
        s.update(status="expired", url=None)
        return s

    def _complete_session(self, sid, query, record):
        s = self._session(sid)
        if sid not in self.session_events:
            if s["status"] != "open":
                raise StripeError(400, "Checkout Session %s is %s, not open" % (sid, s["status"]))
            t = int(now())
            pi_id, ch_id = new_id("pi_"), new_id("ch_")
            self.charges[ch_id] = {
                "id": ch_id, "object": "charge", "amount": s["amount_total"],
                "amount_captured": s["amount_total"], "amount_refunded": 0,
                "balance_transaction": new_id("txn_"), "captured": True, "created": t,
                "currency": s["currency"], "disputed": False, "failure_code": None,
                "failure_message": None, "livemode": False, "metadata": {}, "paid": True,
                "payment_intent": pi_id, "payment_method": new_id("pm_"), "refunded": False,
                "status": "succeeded",
            }
            self.payment_intents[pi_id] = {
                "id": pi_id, "object": "payment_intent", "amount": s["amount_total"],
                "amount_capturable": 0, "amount_received": s["amount_total"],
                "capture_method": "automatic",
                "client_secret": pi_id + "_secret_" + new_id("", 25), "created": t,
                "currency": s["currency"], "customer": s["customer"], "description": None,
                "latest_charge": ch_id, "livemode": False,
                "metadata": self.pi_metadata.get(sid, {}),
                "payment_method": self.charges[ch_id]["payment_method"],
                "payment_method_types": list(s["payment_method_types"]), "status": "succeeded",
            }
            s.update(payment_status="paid", status="complete", payment_intent=pi_id, url=None,
                     customer_details={"address": None,
                                       "email": s["customer_email"] or "customer@example.com",
                                       "name": "Test Customer", "phone": None,
                                       "tax_exempt": "none", "tax_ids": []})
            self.session_events[sid] = self._event("checkout.session.completed", s)
        record["event_id"] = self.session_events[sid]["id"]
        return self._signed(self.session_events[sid], query, record)

    def _session_event(self, sid, query, record):
        s = self._session(sid)
        typ = query.get("type", "")
        if typ not in SESSION_EVENTS:
            raise invalid("type", "type must be one of %s" % ", ".join(SESSION_EVENTS))
        ev = self._event(typ, s)
        record["event_id"] = ev["id"]
        return self._signed(ev, query, record)

    # -- refunds -------------------------------------------------------------
    def _charge_for(self, p):
        if p.get("charge") and p.get("payment_intent"):
            raise StripeError(400, "You cannot specify both a charge and a payment_intent.",
                              param="charge")
        if p.get("payment_intent"):
            pi = self.payment_intents.get(p["payment_intent"])
            if pi is None:
                raise StripeError(404, "No such payment_intent: '%s'" % p["payment_intent"],
                                  code="resource_missing", param="payment_intent")
            return self.charges[pi["latest_charge"]]
        if p.get("charge"):
            ch = self.charges.get(p["charge"])
            if ch is None:
                raise StripeError(404, "No such charge: '%s'" % p["charge"],
                                  code="resource_missing", param="charge")
            return ch
        raise StripeError(400, "One of the following params should be provided for this "
                          "request: payment_intent or charge.", code="parameter_missing")

    def _recount(self, ch):
        refunded = sum(r["amount"] for r in self.refunds.values()
                       if r["charge"] == ch["id"] and r["status"] in
                       ("succeeded", "pending", "requires_action"))
        ch["amount_refunded"] = refunded
        ch["refunded"] = refunded >= ch["amount"]

    def _create_refund(self, p, record):
        check_known(p, REFUND_PARAMS)
        ch = self._charge_for(p)
        amount = None
        if "amount" in p:
            amount = parse_int(p["amount"], "amount", 1)
        reason = p.get("reason")
        if reason is not None and reason not in REFUND_REASONS:
            raise invalid("reason", "Invalid reason: must be one of duplicate, fraudulent, or "
                          "requested_by_customer")
        metadata = check_metadata(p.get("metadata"))
        # Past validation: Stripe saves what follows under the Idempotency-Key.
        remaining = ch["amount"] - ch["amount_refunded"]
        if remaining <= 0:
            raise StripeError(400, "Charge %s has already been refunded." % ch["id"],
                              code="charge_already_refunded", cacheable=True)
        if amount is None:
            amount = remaining
        if amount > remaining:
            raise StripeError(400, "Refund amount (%s) is greater than unrefunded amount on "
                              "charge (%s)" % (money(amount, ch["currency"]),
                                               money(remaining, ch["currency"])),
                              code="amount_too_large", param="amount", cacheable=True)
        status = str(self.control.settings().get("refund_status") or "succeeded")
        if status not in ("succeeded", "pending"):
            status = "succeeded"
        rid = new_id("re_")
        r = {
            "id": rid, "object": "refund", "amount": amount,
            "balance_transaction": new_id("txn_") if status == "succeeded" else None,
            "charge": ch["id"], "created": int(now()), "currency": ch["currency"],
            "metadata": metadata, "payment_intent": ch["payment_intent"], "reason": reason,
            "receipt_number": None, "source_transfer_reversal": None, "status": status,
            "transfer_reversal": None,
        }
        self.refunds[rid] = r
        self._recount(ch)
        record["refund_id"] = rid
        return r

    def _refund_event(self, rid, query, record):
        r = self._get(self.refunds, "refund", rid)
        typ = query.get("type", "")
        if typ not in REFUND_EVENTS:
            raise invalid("type", "type must be one of %s" % ", ".join(REFUND_EVENTS))
        previous = None
        new_status = query.get("status")
        if new_status:
            if new_status not in ("succeeded", "pending", "failed", "canceled"):
                raise invalid("status", "status must be succeeded, pending, failed or canceled")
            if new_status != r["status"]:
                previous = {"status": r["status"]}
                r["status"] = new_status
                if new_status == "failed":
                    r["failure_reason"] = "lost_or_stolen_card"
                    r["failure_balance_transaction"] = new_id("txn_")
                if new_status == "succeeded" and not r["balance_transaction"]:
                    r["balance_transaction"] = new_id("txn_")
                self._recount(self.charges[r["charge"]])
        if typ == "charge.refunded":
            ch = self.charges[r["charge"]]
            ev = self._event(typ, ch, {"amount_refunded": ch["amount_refunded"] - r["amount"],
                                       "refunded": False})
        else:
            ev = self._event(typ, r, previous)
        record["event_id"] = ev["id"]
        return self._signed(ev, query, record)

    # -- events and signatures ----------------------------------------------
    def _event(self, typ, obj, previous_attributes=None):
        ev = {"id": new_id("evt_"), "object": "event", "api_version": self.api_version,
              "created": int(now()), "data": {"object": copy.deepcopy(obj)},
              "livemode": False, "pending_webhooks": 1,
              "request": {"id": None, "idempotency_key": None}, "type": typ}
        if previous_attributes:
            ev["data"]["previous_attributes"] = previous_attributes
        self.events[ev["id"]] = ev
        return ev

    def _signed(self, ev, query, record):
        payload = json.dumps(ev, indent=2)
        secrets_list = [s for s in query.get("secrets", "").split(",") if s] or \
            [self.webhook_secret]
        t = int(now())
        if query.get("t"):
            t = parse_int(query["t"], "t")
        v0 = "whsec_v0_test_mode_signature" if query.get("v0") in ("1", "true") else None
        sig = sign_header(payload, secrets_list, t, v0)
        record["signed_with"] = len(secrets_list)
        return {"event": ev, "payload": payload, "stripe_signature": sig, "timestamp": t,
                "headers": {"Content-Type": "application/json; charset=utf-8",
                            "Stripe-Signature": sig}}


def main():
    p = fakelib.base_arg_parser("Fake Stripe API for the pgcloud tests")
    p.add_argument("--secret-key", default="sk_test_pgcloud")
    p.add_argument("--webhook-secret", default="whsec_pgcloud_test")
    p.add_argument("--api-version", default="2024-06-20")
    args = p.parse_args()
    fakelib.check_tls_args(p, args)
    fakelib.prepare_state_dir(args.state_dir)
    return StripeFake(args).serve()


if __name__ == "__main__":
    sys.exit(main())
