"""A second, independent S3 client for the tests (boto3), run with the fixture's venv python.

The tests check what the coordinator stored through this client rather than through the
Rust AWS SDK the coordinator itself uses, so a bug in how we drive that SDK cannot hide
itself by reading back its own mistakes.

Usage: s3_client.py ENDPOINT COMMAND ARGS...  (credentials from the standard AWS variables)
Answers are JSON on stdout, except `get`, which writes the object's bytes as they are.
"""

import hashlib
import json
import os
import sys
import tempfile
import urllib.request

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config


def client(endpoint, service="s3"):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(
            # A fixture read that hangs should fail the test soon, not after boto3's
            # default of retrying minute-long timeouts.
            connect_timeout=10,
            read_timeout=60,
            retries={"max_attempts": 2, "mode": "standard"},
            s3={"addressing_style": "path"},
        ),
    )


def list_keys(s3, bucket):
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    return keys


def objects(s3, bucket):
    found = []
    for key in sorted(list_keys(s3, bucket)):
        # The listing does not carry the content type; only HEAD does.
        head = s3.head_object(Bucket=bucket, Key=key)
        found.append(
            {
                "key": key,
                "size": head["ContentLength"],
                "content_type": head.get("ContentType", ""),
            }
        )
    return found


def version_counts(s3, bucket):
    counts = {}
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        # Delete markers are not uploads, so they are not counted.
        for v in page.get("Versions", []):
            counts[v["Key"]] = counts.get(v["Key"], 0) + 1
    return counts


def version_digests(s3, bucket):
    """Each key's versions as SHA-256 digests of their bytes, oldest first."""
    versions = {}
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for v in page.get("Versions", []):
            versions.setdefault(v["Key"], []).append((v["LastModified"], v["VersionId"]))
    digests = {}
    for key, found in versions.items():
        digests[key] = []
        for _, version_id in sorted(found):
            body = s3.get_object(Bucket=bucket, Key=key, VersionId=version_id)["Body"]
            digests[key].append(hashlib.sha256(body.read()).hexdigest())
    return digests


def multipart_parts(s3, bucket, key):
    etag = s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
    parts = int(etag.rsplit("-", 1)[1]) if "-" in etag else None
    # S3 also states the count on a HEAD of part 1 of a multipart object; insist the two
    # agree, so the answer does not rest on an ETag convention alone.
    stated = s3.head_object(Bucket=bucket, Key=key, PartNumber=1).get("PartsCount")
    # For an object put in one request AWS and moto state no count; Garage states 1.
    if parts is None and stated == 1:
        stated = None
    if stated != parts:
        raise SystemExit(f"ETag {etag!r} says {parts} parts, PartsCount says {stated}")
    return parts


def put_multipart(s3, bucket, key, part_size):
    # upload_file is what splits into parts, and it reads from a file.
    with tempfile.NamedTemporaryFile() as f:
        f.write(sys.stdin.buffer.read())
        f.flush()
        config = TransferConfig(
            multipart_threshold=part_size, multipart_chunksize=part_size, use_threads=False
        )
        s3.upload_file(f.name, bucket, key, Config=config)


def setup_auth(endpoint):
    """Creates an IAM user allowed s3:*, then makes moto check every later request.

    Runs while moto still accepts anything (its default), which is why this needs no
    credentials of its own; the answer is the new user's key pair.
    """
    iam = client(endpoint, "iam")
    iam.create_user(UserName="crater-test")
    iam.put_user_policy(
        UserName="crater-test",
        PolicyName="s3-all",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
            }
        ),
    )
    key = iam.create_access_key(UserName="crater-test")["AccessKey"]
    # The runtime form of INITIAL_NO_AUTH_ACTION_COUNT: 0 more unchecked requests from now
    # on. Setting the variable at start instead would need the exact number of requests
    # made above, and any spare would let a wrong key through. The content type matters:
    # with a form type Flask swallows the body and moto reads an empty string.
    request = urllib.request.Request(
        endpoint + "/moto-api/reset-auth",
        data=b"0",
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        answer.read()
    return {"access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"]}


def main():
    endpoint, command, *args = sys.argv[1:]
    if command == "setup-auth":
        print(json.dumps(setup_auth(endpoint)))
        return
    s3 = client(endpoint)
    if command == "create-bucket":
        (bucket,) = args
        s3.create_bucket(Bucket=bucket)
    elif command == "enable-versioning":
        (bucket,) = args
        s3.put_bucket_versioning(
            Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
        )
    elif command == "allow-public-reads":
        # What a bucket behind a static website or a CDN has: anyone may GET an object.
        (bucket,) = args
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": "s3:GetObject",
                    "Resource": f"arn:aws:s3:::{bucket}/*",
                }
            ],
        }
        s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    elif command == "objects":
        (bucket,) = args
        print(json.dumps(objects(s3, bucket)))
    elif command == "get":
        bucket, key = args
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        sys.stdout.buffer.write(body)
    elif command == "put":
        bucket, key = args
        s3.put_object(Bucket=bucket, Key=key, Body=sys.stdin.buffer.read())
    elif command == "put-multipart":
        bucket, key, part_size = args
        put_multipart(s3, bucket, key, int(part_size))
    elif command == "version-counts":
        (bucket,) = args
        print(json.dumps(version_counts(s3, bucket)))
    elif command == "put-many":
        # stdin: a JSON object {key: text}; one PUT each (application/json, like results).
        (bucket,) = args
        for key, text in json.load(sys.stdin).items():
            s3.put_object(
                Bucket=bucket, Key=key, Body=text.encode(), ContentType="application/json"
            )
    elif command == "version-digests":
        (bucket,) = args
        print(json.dumps(version_digests(s3, bucket)))
    elif command == "multipart-parts":
        bucket, key = args
        print(json.dumps(multipart_parts(s3, bucket, key)))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main()
