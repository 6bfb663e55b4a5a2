#!/usr/bin/python3
"""Pre-signed S3 URLs made by botocore (Debian python3-botocore), for
comparison with pgcloud's C signer.

Reads one JSON object per line on stdin:
  {"method": "GET|PUT|HEAD|DELETE", "key": "...", "at": <unix seconds>, "expires": N,
   "endpoint": "http://host:port", "region": "...", "bucket": "...",
   "access_key_id": "...", "secret_access_key": "...", "path_style": true|false}
and writes the URL botocore's generate_presigned_url makes for it, one per
line, with the signing time frozen at "at".
"""
import datetime
import json
import sys

import botocore.auth
import botocore.session
from botocore.config import Config

OPERATION = {"GET": "get_object", "PUT": "put_object", "HEAD": "head_object", "DELETE": "delete_object"}


def frozen(at):
    class Frozen(datetime.datetime):
        @classmethod
        def utcnow(cls):
            return datetime.datetime.utcfromtimestamp(at)

        @classmethod
        def now(cls, tz=None):
            return datetime.datetime.fromtimestamp(at, tz)
    return Frozen


def main():
    session = botocore.session.get_session()
    for line in sys.stdin:
        c = json.loads(line)
        client = session.create_client(
            "s3", region_name=c["region"], endpoint_url=c["endpoint"],
            aws_access_key_id=c["access_key_id"], aws_secret_access_key=c["secret_access_key"],
            config=Config(signature_version="s3v4",
                          s3={"addressing_style": "path" if c["path_style"] else "virtual"}))
        saved = botocore.auth.datetime.datetime
        botocore.auth.datetime.datetime = frozen(c["at"])
        try:
            url = client.generate_presigned_url(OPERATION[c["method"]],
                                                Params={"Bucket": c["bucket"], "Key": c["key"]},
                                                ExpiresIn=c["expires"], HttpMethod=c["method"])
        finally:
            botocore.auth.datetime.datetime = saved
        print(url, flush=True)


if __name__ == "__main__":
    main()
