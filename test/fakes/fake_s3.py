#!/usr/bin/python3
"""Fake Amazon S3 for the pgcloud tests (Python 3 standard library only).

Speaks S3's REST wire format for one bucket and checks AWS Signature Version 4
query authentication (pre-signed URLs) for real, with its own implementation
of the algorithm (hashlib/hmac), independent of pgcloud's C signer:

  * X-Amz-Algorithm must be AWS4-HMAC-SHA256; X-Amz-Credential
    <key id>/<yyyymmdd>/<region>/s3/aws4_request with a known key id, this
    fake's region and the date of X-Amz-Date; X-Amz-SignedHeaders must list
    host; X-Amz-Expires 1..604800;
  * the request is refused once X-Amz-Date + X-Amz-Expires has passed
    (AccessDenied "Request has expired") or when X-Amz-Date is more than 15
    minutes ahead;
  * the signature is recomputed over the canonical request (method, URI
    re-encoded from the decoded path, sorted canonical query without
    X-Amz-Signature, the signed headers, UNSIGNED-PAYLOAD) and compared in
    constant time (SignatureDoesNotMatch otherwise).

Path-style (/bucket/key) and virtual-hosted (Host: bucket.<anything>)
addressing. PUT stores (ETag = quoted MD5, Content-Type kept), GET and HEAD
answer with Content-Length, ETag, Content-Type and Last-Modified, DELETE
answers 204. Errors are S3's XML documents. GET /_control/state shows the
objects (key -> size, etag, content_type) and counts of refusals.

  fake_s3.py --port 0 --state-dir DIR --bucket B --region R \
             --access-key AKID --secret-key SECRET
"""

import datetime
import hashlib
import hmac
import sys
import time
import urllib.parse
from email.utils import formatdate

import fakelib
from fakelib import Response

UNRESERVED = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")


def uri_encode(data, keep_slash):
    out = []
    for b in data:
        if b in UNRESERVED or (keep_slash and b == 0x2F):
            out.append(chr(b))
        else:
            out.append("%%%02X" % b)
    return "".join(out)


def s3_error(status, code, message, resource=""):
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>%s</Code><Message>%s</Message>'
            '<Resource>%s</Resource><RequestId>FAKE</RequestId></Error>' % (code, message, resource))
    return Response(status, body, content_type="application/xml")


class S3Fake(fakelib.HTTPFake):
    name = "fake_s3"

    def __init__(self, args):
        super().__init__(args)
        self.bucket = args.bucket
        self.region = args.region
        self.keys = {args.access_key: args.secret_key}
        self.objects = {}
        self.refused = {}

    def state(self):
        return {"bucket": self.bucket,
                "objects": {k: {"size": len(v["body"]), "etag": v["etag"], "content_type": v["content_type"]}
                            for k, v in self.objects.items()},
                "refused": dict(self.refused)}

    def injected_response(self, rule, req):
        return s3_error(int(rule["status"]), rule.get("code", "InternalError"), "injected failure")

    # -- SigV4 ---------------------------------------------------------------
    def _refuse(self, record, status, code, message):
        record["auth"] = code
        with self.lock:
            self.refused[code] = self.refused.get(code, 0) + 1
        return s3_error(status, code, message)

    def _verify(self, req, record, raw_path):
        params = []
        for part in req.query_raw.split("&") if req.query_raw else []:
            name, _, value = part.partition("=")
            params.append((urllib.parse.unquote(name), urllib.parse.unquote(value)))
        q = dict(params)
        if len(q) != len(params):
            return self._refuse(record, 400, "InvalidArgument", "Repeated query parameter.")
        if "X-Amz-Signature" not in q:
            return self._refuse(record, 403, "AccessDenied", "Anonymous access is forbidden for this operation.")
        if q.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256":
            return self._refuse(record, 400, "AuthorizationQueryParametersError",
                                "X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\".")
        cred = q.get("X-Amz-Credential", "").split("/")
        amz_date = q.get("X-Amz-Date", "")
        if len(cred) != 5 or cred[3] != "s3" or cred[4] != "aws4_request":
            return self._refuse(record, 400, "AuthorizationQueryParametersError", "Error parsing the X-Amz-Credential parameter.")
        if cred[0] not in self.keys:
            return self._refuse(record, 403, "InvalidAccessKeyId",
                                "The AWS Access Key Id you provided does not exist in our records.")
        if cred[2] != self.region:
            return self._refuse(record, 400, "AuthorizationQueryParametersError",
                                "Error parsing the X-Amz-Credential parameter; the region '%s' is wrong; expecting '%s'"
                                % (cred[2], self.region))
        try:
            signed_at = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
            expires = int(q.get("X-Amz-Expires", ""))
        except ValueError:
            return self._refuse(record, 400, "AuthorizationQueryParametersError", "Invalid X-Amz-Date or X-Amz-Expires.")
        if cred[1] != amz_date[:8]:
            return self._refuse(record, 400, "AuthorizationQueryParametersError", "Credential date does not match X-Amz-Date.")
        if not 1 <= expires <= 604800:
            return self._refuse(record, 400, "AuthorizationQueryParametersError",
                                "X-Amz-Expires must be between 1 and 604800 seconds.")
        signed_headers = q.get("X-Amz-SignedHeaders", "").split(";")
        if "host" not in signed_headers or signed_headers != sorted(signed_headers):
            return self._refuse(record, 400, "AuthorizationQueryParametersError", "X-Amz-SignedHeaders must include host.")
        now = time.time()
        if now > signed_at.timestamp() + expires:
            return self._refuse(record, 403, "AccessDenied", "Request has expired")
        if signed_at.timestamp() > now + 900:
            return self._refuse(record, 403, "AccessDenied", "Request is not yet valid")

        canonical_uri = uri_encode(urllib.parse.unquote_to_bytes(raw_path), True)
        canonical_query = "&".join(
            "%s=%s" % (uri_encode(k.encode(), False), uri_encode(v.encode(), False))
            for k, v in sorted(p for p in params if p[0] != "X-Amz-Signature"))
        header_lines = []
        for h in signed_headers:
            v = req.header(h)
            if v is None:
                return self._refuse(record, 403, "SignatureDoesNotMatch", "A signed header is missing.")
            header_lines.append("%s:%s\n" % (h, " ".join(v.strip().split())))
        creq = "\n".join([req.method, canonical_uri, canonical_query, "".join(header_lines),
                          ";".join(signed_headers), "UNSIGNED-PAYLOAD"])
        scope = "/".join(cred[1:])
        sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(creq.encode()).hexdigest()])
        k = ("AWS4" + self.keys[cred[0]]).encode()
        for part in (cred[1], cred[2], "s3", "aws4_request"):
            k = hmac.new(k, part.encode(), hashlib.sha256).digest()
        want = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
        record["canonical_request"] = creq
        if not hmac.compare_digest(want, q["X-Amz-Signature"]):
            return self._refuse(record, 403, "SignatureDoesNotMatch",
                                "The request signature we calculated does not match the signature you provided.")
        record["auth"] = "ok"
        return None

    # -- S3 ----------------------------------------------------------------
    def handle(self, req, record):
        raw_path = urllib.parse.urlsplit(req.raw_path).path
        host = (req.header("host") or "").split(":")[0]
        if host.startswith(self.bucket + "."):
            bucket, key_raw = self.bucket, raw_path[1:]
        else:
            bucket, _, key_raw = raw_path[1:].partition("/")
        record["bucket"] = bucket
        if bucket != self.bucket:
            return s3_error(404, "NoSuchBucket", "The specified bucket does not exist.", bucket)
        refusal = self._verify(req, record, raw_path)
        if refusal is not None:
            return refusal
        key = urllib.parse.unquote_to_bytes(key_raw).decode("utf-8", errors="surrogateescape")
        record["key"] = key
        if key == "":
            return s3_error(400, "InvalidRequest", "Bucket operations are not supported by this fake.")
        with self.lock:
            obj = self.objects.get(key)
            if req.method == "PUT":
                etag = '"%s"' % hashlib.md5(req.body).hexdigest()
                self.objects[key] = {"body": req.body, "etag": etag, "modified": time.time(),
                                     "content_type": req.header("content-type") or "binary/octet-stream"}
                return Response(200, b"", content_type=None, headers={"ETag": etag})
            if req.method in ("GET", "HEAD"):
                if obj is None:
                    if req.method == "HEAD":
                        return Response(404, b"", content_type=None)
                    return s3_error(404, "NoSuchKey", "The specified key does not exist.", key)
                return Response(200, obj["body"], content_type=obj["content_type"],
                                headers={"ETag": obj["etag"], "Last-Modified": formatdate(obj["modified"], usegmt=True),
                                         "Accept-Ranges": "bytes"})
            if req.method == "DELETE":
                self.objects.pop(key, None)
                return Response(204, b"", content_type=None)
        return s3_error(405, "MethodNotAllowed", "The specified method is not allowed against this resource.")


def main():
    p = fakelib.base_arg_parser("Fake Amazon S3 (one bucket, SigV4 pre-signed URLs) for the pgcloud tests")
    p.add_argument("--bucket", default="pgcloud-test")
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--access-key", default="AKIDPGCLOUDTEST")
    p.add_argument("--secret-key", default="pgcloud/test+secret")
    args = p.parse_args()
    fakelib.check_tls_args(p, args)
    fakelib.prepare_state_dir(args.state_dir)
    return S3Fake(args).serve()


if __name__ == "__main__":
    sys.exit(main())
