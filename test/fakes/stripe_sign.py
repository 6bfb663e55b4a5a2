#!/usr/bin/env python3
"""Print the Stripe-Signature header value for a webhook payload read from stdin.

    python3 test/fakes/stripe_sign.py --secret S [--secret S2 ...] [--timestamp T] < payload

Stripe's scheme: for each endpoint secret, v1 = hex(HMAC-SHA256(secret, "<t>.<payload>")),
header = "t=<t>,v1=<sig1>[,v1=<sig2>...]". The payload is used byte for byte (no
newline is stripped: sign exactly the bytes that will be delivered).
Also importable: sign_header(payload_bytes, secrets, timestamp) -> str.
"""

import argparse
import hashlib
import hmac
import sys
import time


def v1_signature(payload, secret, timestamp):
    if isinstance(payload, str):
        payload = payload.encode()
    signed = str(int(timestamp)).encode() + b"." + payload
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign_header(payload, secrets, timestamp=None, v0_secret=None):
    t = int(time.time()) if timestamp is None else int(timestamp)
    parts = ["t=%d" % t]
    for s in secrets:
        parts.append("v1=" + v1_signature(payload, s, t))
    if v0_secret:
        parts.append("v0=" + v1_signature(payload, v0_secret, t))
    return ",".join(parts)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--secret", action="append", required=True,
                   help="webhook endpoint secret (repeat for several v1 entries)")
    p.add_argument("--timestamp", type=int, help="unix seconds (default: now)")
    args = p.parse_args(argv)
    payload = sys.stdin.buffer.read()
    print(sign_header(payload, args.secret, args.timestamp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
