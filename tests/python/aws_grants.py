"""Grants through boto3 on the AWS door: create_grant (with a constraint and a Name whose
retry answers the same grant), list_grants paged by Limit/Marker, the grantee using the grant
with and without its token, a forged token refused, and retire_grant by the retiring
principal ending the grant on the next call. Reads the AWS_* variables (the root's), KEY_ID,
BOB_* (the grantee's access key and ARN) and CAROL_* (the retiring principal's); prints
`grants complete`."""

import os

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

CONFIG = Config(retries={"max_attempts": 1, "mode": "standard"})


def kms(prefix=None):
    if prefix is None:
        return boto3.client("kms", config=CONFIG)
    return boto3.client(
        "kms",
        aws_access_key_id=os.environ[prefix + "_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ[prefix + "_SECRET_ACCESS_KEY"],
        config=CONFIG,
    )


def refused(code, call, **kwargs):
    try:
        call(**kwargs)
    except ClientError as error:
        got = error.response["Error"]["Code"]
        assert got == code, f"expected {code}, got {got}: {error}"
        return
    raise AssertionError(f"expected {code}, the call succeeded")


key = os.environ["KEY_ID"]
root, bob, carol = kms(), kms("BOB"), kms("CAROL")
context = {"tenant": "a"}
made = root.create_grant(
    KeyId=key,
    GranteePrincipal=os.environ["BOB_ARN"],
    RetiringPrincipal=os.environ["CAROL_ARN"],
    Operations=["Encrypt", "Decrypt"],
    Constraints={"EncryptionContextSubset": context},
    Name="boto3-grant",
)
assert len(made["GrantId"]) == 64, made
retry = root.create_grant(
    KeyId=key,
    GranteePrincipal=os.environ["BOB_ARN"],
    RetiringPrincipal=os.environ["CAROL_ARN"],
    Operations=["Decrypt", "Encrypt"],
    Constraints={"EncryptionContextSubset": context},
    Name="boto3-grant",
)
assert retry["GrantId"] == made["GrantId"], (retry, made)
second = root.create_grant(
    KeyId=key, GranteePrincipal=os.environ["CAROL_ARN"], Operations=["DescribeKey"]
)

# Paged by Limit and Marker, as the SDK's paginator does it.
pages = list(root.get_paginator("list_grants").paginate(KeyId=key, PaginationConfig={"PageSize": 1}))
assert len(pages) == 2, pages
listed = [g for page in pages for g in page["Grants"]]
assert sorted(g["GrantId"] for g in listed) == sorted([made["GrantId"], second["GrantId"]])
mine = next(g for g in listed if g["GrantId"] == made["GrantId"])
assert mine["Constraints"] == {"EncryptionContextSubset": context}, mine
assert mine["Name"] == "boto3-grant" and mine["RetiringPrincipal"] == os.environ["CAROL_ARN"], mine
assert sorted(mine["Operations"]) == ["Decrypt", "Encrypt"], mine

# The grantee: allowed within the constraint, with the token or without; refused outside it.
blob = bob.encrypt(KeyId=key, Plaintext=b"granted", EncryptionContext=context,
                   GrantTokens=[made["GrantToken"]])["CiphertextBlob"]
plain = bob.decrypt(CiphertextBlob=blob, EncryptionContext=context)["Plaintext"]
assert plain == b"granted"
refused("AccessDeniedException", bob.encrypt, KeyId=key, Plaintext=b"x")
refused("InvalidGrantTokenException", bob.encrypt, KeyId=key, Plaintext=b"x",
        EncryptionContext=context, GrantTokens=[made["GrantToken"][:-1] + ("B" if made["GrantToken"].endswith("A") else "A")])
retirable = root.list_retirable_grants(RetiringPrincipal=os.environ["CAROL_ARN"])
assert [g["GrantId"] for g in retirable["Grants"]] == [made["GrantId"]], retirable

# Retired by the retiring principal: over on the next call.
carol.retire_grant(KeyId=key, GrantId=made["GrantId"])
refused("AccessDeniedException", bob.encrypt, KeyId=key, Plaintext=b"x", EncryptionContext=context)
root.revoke_grant(KeyId=key, GrantId=second["GrantId"])
assert root.list_grants(KeyId=key)["Grants"] == []
print("grants complete")
