"""Temporary credentials (an assumed role's session, made through the gRPC API) used by boto3
on the AWS door: the session token travels as X-Amz-Security-Token, signed. Reads the AWS_*
variables (the session's), AWS_SESSION_TOKEN and KEY_ID (the key the role may encrypt with);
prints `session complete`."""

import os

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

CONFIG = Config(retries={"max_attempts": 1, "mode": "standard"})


def kms(token):
    return boto3.client(
        "kms",
        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=token,
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
session = kms(os.environ["AWS_SESSION_TOKEN"])
blob = session.encrypt(KeyId=key, Plaintext=b"from a role session")["CiphertextBlob"]
assert session.decrypt(CiphertextBlob=blob)["Plaintext"] == b"from a role session"
refused("AccessDeniedException", session.describe_key, KeyId=key)
refused("IncompleteSignatureException", kms(None).encrypt, KeyId=key, Plaintext=b"x")
refused("InvalidSignatureException", kms("another-token").encrypt, KeyId=key, Plaintext=b"x")
print("session complete", flush=True)
