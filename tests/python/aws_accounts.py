"""A member account through the AWS door with boto3, signed as the member's root: STS names
the member account, keys it makes carry its id, a key the management account shares by key
policy is used by its ARN (Encrypt, then Decrypt finding it from the ciphertext), a key it
does not share is refused, and the organisation's guardrail refuses a deletion window under
30 days while 30 goes through. Reads the AWS_* variables (the member root's), MEMBER_ID,
SHARED_KEY_ARN and PRIVATE_KEY_ARN; prints `accounts complete`."""

import os

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

CONFIG = Config(retries={"max_attempts": 1, "mode": "standard"})
kms = boto3.client("kms", config=CONFIG)
sts = boto3.client("sts", config=CONFIG)
member = os.environ["MEMBER_ID"]
shared = os.environ["SHARED_KEY_ARN"]
private = os.environ["PRIVATE_KEY_ARN"]


def refused(code, call, **kwargs):
    try:
        call(**kwargs)
    except ClientError as error:
        got = error.response["Error"]["Code"]
        assert got == code, f"expected {code}, got {got}: {error}"
        return error
    raise AssertionError(f"expected {code}, the call succeeded")


identity = sts.get_caller_identity()
assert identity["Account"] == member, identity
assert identity["Arn"].endswith(f":iam::{member}:root"), identity

own = kms.create_key(Description="the member's own")["KeyMetadata"]
assert own["AWSAccountId"] == member, own
assert f":{member}:key/" in own["Arn"], own
listed = [k["KeyArn"] for k in kms.list_keys()["Keys"]]
assert listed == [own["Arn"]], listed

blob = kms.encrypt(KeyId=shared, Plaintext=b"across accounts")["CiphertextBlob"]
plain = kms.decrypt(CiphertextBlob=blob)
assert plain["Plaintext"] == b"across accounts", plain
assert plain["KeyId"] == shared, plain
refused("AccessDeniedException", kms.encrypt, KeyId=private, Plaintext=b"x")

error = refused("AccessDeniedException", kms.schedule_key_deletion, KeyId=own["KeyId"],
                PendingWindowInDays=7)
assert "kms:ScheduleKeyDeletion" in str(error), error
assert kms.describe_key(KeyId=own["KeyId"])["KeyMetadata"]["KeyState"] == "Enabled"
kms.schedule_key_deletion(KeyId=own["KeyId"], PendingWindowInDays=30)
assert kms.describe_key(KeyId=own["KeyId"])["KeyMetadata"]["KeyState"] == "PendingDeletion"
print("accounts complete")
