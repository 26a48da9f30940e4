"""Drives Keyhaven's AWS door with boto3 and botocore, stock clients nobody here wrote.

Run by tests/aws_door.rs against a daemon it started. Reads AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION (the root), USER_ACCESS_KEY_ID and
USER_SECRET_ACCESS_KEY (an IAM user allowed kms:Encrypt, kms:Decrypt and kms:DescribeKey on
USER_KEY_ID only). Prints `ok: <step>` per step and `lifecycle complete` at the end; any
failed expectation raises.
"""

import datetime
import http.client
import json
import os
import sys
import urllib.parse
from unittest import mock

import boto3
import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

ENDPOINT = os.environ["AWS_ENDPOINT_URL"]
REGION = os.environ["AWS_REGION"]
# No retries: a refusal must be seen as the first answer, not hidden behind a retry.
CONFIG = Config(retries={"max_attempts": 1, "mode": "standard"})


def kms(access_key_id=None, secret=None):
    return boto3.client(
        "kms",
        endpoint_url=ENDPOINT,
        region_name=REGION,
        aws_access_key_id=access_key_id or os.environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=secret or os.environ["AWS_SECRET_ACCESS_KEY"],
        config=CONFIG,
    )


def ok(step):
    print(f"ok: {step}", flush=True)


def refused(code, call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except ClientError as error:
        got = error.response["Error"]["Code"]
        status = error.response["ResponseMetadata"]["HTTPStatusCode"]
        assert got == code, f"expected {code}, got {got}: {error}"
        assert status == 400, f"{code}: HTTP {status}"
        return error.response["Error"]["Message"]
    raise AssertionError(f"expected {code}, the call succeeded")


def raw(target, body, sign=True, authorization=None, when=None):
    """A KMS JSON 1.1 request signed by botocore's own SigV4 signer, sent over http.client."""
    url = urllib.parse.urlsplit(ENDPOINT)
    request = AWSRequest(
        method="POST",
        url=ENDPOINT + "/",
        data=body,
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": target,
        },
    )
    if sign:
        credentials = Credentials(
            os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
        )
        signer = botocore.auth.SigV4Auth(credentials, "kms", REGION)
        if when is None:
            signer.add_auth(request)
        else:
            with mock.patch.object(botocore.auth, "get_current_datetime", lambda: when):
                signer.add_auth(request)
    headers = dict(request.headers.items())
    if authorization is not None:
        headers["Authorization"] = authorization
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    connection.request("POST", "/", body=body, headers=headers)
    response = connection.getresponse()
    answer = json.loads(response.read() or b"{}")
    connection.close()
    return response.status, answer


def raw_refused(expected, *args, **kwargs):
    status, answer = raw(*args, **kwargs)
    assert status == 400, f"{expected}: HTTP {status} {answer}"
    assert answer.get("__type") == expected, f"expected {expected}: {answer}"
    assert answer.get("message"), answer
    return answer


def key_count(client):
    return len(client.list_keys(Limit=1000)["Keys"])


def main():
    root = kms()
    created = root.create_key(
        Description="aws door", Tags=[{"TagKey": "team", "TagValue": "payments"}]
    )["KeyMetadata"]
    key = created["KeyId"]
    assert created["KeyState"] == "Enabled", created
    assert created["Enabled"] is True
    assert created["Arn"].endswith(":key/" + key), created
    assert isinstance(created["CreationDate"], datetime.datetime), created
    assert created["KeySpec"] == "SYMMETRIC_DEFAULT", created
    assert root.describe_key(KeyId=key)["KeyMetadata"]["Arn"] == created["Arn"]
    ok("create and describe")

    root.create_alias(AliasName="alias/aws-door", TargetKeyId=key)
    aliases = root.list_aliases(KeyId=key)["Aliases"]
    assert [a["AliasName"] for a in aliases] == ["alias/aws-door"], aliases
    ok("alias")

    context = {"purpose": "test", "tenant": "7"}
    encrypted = root.encrypt(
        KeyId="alias/aws-door", Plaintext=b"secret payload", EncryptionContext=context
    )
    assert encrypted["KeyId"] == created["Arn"], encrypted
    assert encrypted["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    blob = encrypted["CiphertextBlob"]
    decrypted = root.decrypt(CiphertextBlob=blob, EncryptionContext=context)
    assert decrypted["Plaintext"] == b"secret payload"
    assert decrypted["KeyId"] == created["Arn"]
    refused("InvalidCiphertextException", root.decrypt, CiphertextBlob=blob,
            EncryptionContext={"purpose": "other", "tenant": "7"})
    refused("InvalidCiphertextException", root.decrypt, CiphertextBlob=b"not a ciphertext")
    ok("encrypt and decrypt with context")

    data_key = root.generate_data_key(KeyId=key, KeySpec="AES_256", EncryptionContext=context)
    assert len(data_key["Plaintext"]) == 32
    again = root.decrypt(CiphertextBlob=data_key["CiphertextBlob"], EncryptionContext=context)
    assert again["Plaintext"] == data_key["Plaintext"]
    without = root.generate_data_key_without_plaintext(KeyId=key, NumberOfBytes=16)
    assert "Plaintext" not in without
    assert len(root.decrypt(CiphertextBlob=without["CiphertextBlob"])["Plaintext"]) == 16
    assert len(root.generate_random(NumberOfBytes=48)["Plaintext"]) == 48
    ok("data keys and random")

    second = root.create_key(Description="aws door second")["KeyMetadata"]
    moved = root.re_encrypt(
        CiphertextBlob=blob,
        SourceEncryptionContext=context,
        DestinationKeyId=second["KeyId"],
        DestinationEncryptionContext={"moved": "yes"},
    )
    assert moved["SourceKeyId"] == created["Arn"] and moved["KeyId"] == second["Arn"], moved
    back = root.decrypt(CiphertextBlob=moved["CiphertextBlob"], EncryptionContext={"moved": "yes"})
    assert back["Plaintext"] == b"secret payload" and back["KeyId"] == second["Arn"]
    refused("IncorrectKeyException", root.decrypt, CiphertextBlob=moved["CiphertextBlob"],
            EncryptionContext={"moved": "yes"}, KeyId=key)
    ok("re-encrypt")

    root.enable_key_rotation(KeyId=key)
    status = root.get_key_rotation_status(KeyId=key)
    assert status["KeyRotationEnabled"] is True, status
    rotated = root.rotate_key_on_demand(KeyId=key)
    assert rotated["KeyId"] == created["Arn"], rotated
    rotations = root.list_key_rotations(KeyId=key)["Rotations"]
    assert len(rotations) >= 1, rotations
    assert root.decrypt(CiphertextBlob=blob, EncryptionContext=context)["Plaintext"] == b"secret payload"
    root.disable_key_rotation(KeyId=key)
    assert root.get_key_rotation_status(KeyId=key)["KeyRotationEnabled"] is False
    ok("rotation")

    root.tag_resource(KeyId=key, Tags=[{"TagKey": "env", "TagValue": "test"}])
    tags = {t["TagKey"]: t["TagValue"] for t in root.list_resource_tags(KeyId=key)["Tags"]}
    assert tags == {"team": "payments", "env": "test"}, tags
    root.untag_resource(KeyId=key, TagKeys=["team"])
    tags = {t["TagKey"]: t["TagValue"] for t in root.list_resource_tags(KeyId=key)["Tags"]}
    assert tags == {"env": "test"}, tags
    ok("tags")

    policy = root.get_key_policy(KeyId=key, PolicyName="default")["Policy"]
    document = json.loads(policy)
    document["Statement"].append({
        "Sid": "Nobody", "Effect": "Deny",
        "Principal": {"AWS": "arn:aws:iam::000000000000:root"},
        "Action": "kms:Encrypt", "Resource": "*",
    })
    root.put_key_policy(KeyId=key, PolicyName="default", Policy=json.dumps(document))
    stored = json.loads(root.get_key_policy(KeyId=key, PolicyName="default")["Policy"])
    assert any(s.get("Sid") == "Nobody" for s in stored["Statement"]), stored
    refused("MalformedPolicyDocumentException", root.put_key_policy, KeyId=key,
            PolicyName="default", Policy="{not json")
    ok("key policy")

    seen, marker, pages = [], None, 0
    while True:
        page = root.list_keys(Limit=1, **({"Marker": marker} if marker else {}))
        pages += 1
        assert len(page["Keys"]) <= 1, page
        seen += [k["KeyId"] for k in page["Keys"]]
        if not page["Truncated"]:
            break
        marker = page["NextMarker"]
    assert pages >= 2 and {key, second["KeyId"]} <= set(seen), (pages, seen)
    assert len(seen) == len(set(seen)), seen
    paginated = [k["KeyId"] for p in root.get_paginator("list_keys").paginate(
        PaginationConfig={"PageSize": 1}) for k in p["Keys"]]
    assert paginated == seen, (paginated, seen)
    ok("ListKeys pagination")

    root.disable_key(KeyId=key)
    assert root.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Disabled"
    refused("DisabledException", root.encrypt, KeyId=key, Plaintext=b"x")
    root.enable_key(KeyId=key)
    ok("disabled key")

    for days in (6, 31):
        refused("ValidationException", root.schedule_key_deletion, KeyId=second["KeyId"],
                PendingWindowInDays=days)
    scheduled = root.schedule_key_deletion(KeyId=second["KeyId"], PendingWindowInDays=7)
    assert scheduled["KeyState"] == "PendingDeletion" and scheduled["PendingWindowInDays"] == 7
    assert isinstance(scheduled["DeletionDate"], datetime.datetime), scheduled
    refused("KMSInvalidStateException", root.encrypt, KeyId=second["KeyId"], Plaintext=b"x")
    root.cancel_key_deletion(KeyId=second["KeyId"])
    assert root.describe_key(KeyId=second["KeyId"])["KeyMetadata"]["KeyState"] == "Disabled"
    ok("deletion window and cancel")

    refused("NotFoundException", root.describe_key, KeyId="alias/no-such-alias")
    refused("NotFoundException", root.describe_key, KeyId="00000000-0000-4000-8000-000000000000")
    ok("not found")

    before = key_count(root)
    wrong = kms(secret="W" * 40)
    message = refused("InvalidSignatureException", wrong.create_key)
    assert "signature does not match" in message, message
    refused("UnrecognizedClientException", kms(access_key_id="KHAKUNKNOWNUNKNOWN23").create_key)
    ok("wrong secret and unknown access key")

    user = kms(os.environ["USER_ACCESS_KEY_ID"], os.environ["USER_SECRET_ACCESS_KEY"])
    user_key = os.environ["USER_KEY_ID"]
    mine = user.encrypt(KeyId=user_key, Plaintext=b"user data")
    assert user.decrypt(CiphertextBlob=mine["CiphertextBlob"])["Plaintext"] == b"user data"
    assert user.describe_key(KeyId=user_key)["KeyMetadata"]["KeyId"] == user_key
    refused("AccessDeniedException", user.describe_key, KeyId=key)
    refused("AccessDeniedException", user.encrypt, KeyId=key, Plaintext=b"x")
    refused("AccessDeniedException", user.create_key)
    ok("IAM user allowed and denied by policy")

    # SigV4 has no nonce: the same signed request twice is answered twice, as AWS does.
    body = json.dumps({"KeyId": key}).encode()
    first = raw("TrentService.DescribeKey", body)
    assert first[0] == 200, first
    url = urllib.parse.urlsplit(ENDPOINT)
    request = AWSRequest(method="POST", url=ENDPOINT + "/", data=body, headers={
        "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "TrentService.DescribeKey"})
    botocore.auth.SigV4Auth(Credentials(os.environ["AWS_ACCESS_KEY_ID"],
                                        os.environ["AWS_SECRET_ACCESS_KEY"]),
                            "kms", REGION).add_auth(request)
    for _ in range(2):
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        connection.request("POST", "/", body=body, headers=dict(request.headers.items()))
        response = connection.getresponse()
        assert response.status == 200, response.read()
        assert json.loads(response.read())["KeyMetadata"]["KeyId"] == key
        connection.close()
    ok("identical signed requests both answered")

    raw_refused("SerializationException", "TrentService.CreateKey", b"this is not json")
    raw_refused("SerializationException", "TrentService.CreateKey", b'{"Description": 7}')
    raw_refused("UnknownOperationException", "TrentService.NoSuchThing", b"{}")
    raw_refused("LimitExceededException", "TrentService.CreateKey", b"{" + b" " * (10 << 20) + b"}")
    raw_refused("MissingAuthenticationTokenException", "TrentService.CreateKey", b"{}", sign=False)
    raw_refused("IncompleteSignatureException", "TrentService.CreateKey", b"{}",
                authorization="AWS4-HMAC-SHA256 garbage")
    skewed = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) \
        - datetime.timedelta(minutes=6)
    answer = raw_refused("InvalidSignatureException", "TrentService.CreateKey", b"{}", when=skewed)
    assert "more than 5 minutes" in answer["message"], answer
    assert key_count(root) == before, "a refused request created a key"
    ok("bad input refused with AWS's error shape, nothing changed")
    print("lifecycle complete", flush=True)


if __name__ == "__main__":
    try:
        main()
    except Exception:
        import traceback
        traceback.print_exc()
        sys.exit(1)
