"""STS over the Query protocol with boto3: GetCallerIdentity, AssumeRole and the session's
credentials used on KMS; refusals in the Query protocol's <ErrorResponse>. Reads
AWS_ENDPOINT_URL and AWS_REGION, ALICE_* and BOB_* credentials, ROLE_ARN (trusting alice only),
ALICE_ARN, KEY_ID (the role may encrypt with it). Prints `sts complete`."""

import os
import urllib.request

import boto3
import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

CONFIG = Config(retries={"max_attempts": 1, "mode": "standard"})


def client(service, prefix=None, access_key_id=None, secret=None, token=None):
    return boto3.client(
        service,
        aws_access_key_id=access_key_id or os.environ[f"{prefix}_ACCESS_KEY_ID"],
        aws_secret_access_key=secret or os.environ[f"{prefix}_SECRET_ACCESS_KEY"],
        aws_session_token=token,
        config=CONFIG,
    )


def refused(code, call, **kwargs):
    try:
        call(**kwargs)
    except ClientError as error:
        got = error.response["Error"]["Code"]
        assert got == code, f"expected {code}, got {got}: {error}"
        return error.response["Error"]["Message"]
    raise AssertionError(f"expected {code}, the call succeeded")


def raw(body, service="sts"):
    """A form body signed by botocore's SigV4 signer for `service`; (status, XML text)."""
    request = AWSRequest(
        method="POST", url=os.environ["AWS_ENDPOINT_URL"] + "/", data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    credentials = Credentials(os.environ["ALICE_ACCESS_KEY_ID"],
                              os.environ["ALICE_SECRET_ACCESS_KEY"])
    botocore.auth.SigV4Auth(credentials, service, os.environ["AWS_REGION"]).add_auth(request)
    prepared = urllib.request.Request(request.url, data=body, method="POST",
                                      headers=dict(request.headers.items()))
    try:
        with urllib.request.urlopen(prepared) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


alice = client("sts", "ALICE")
who = alice.get_caller_identity()
assert who["Arn"] == os.environ["ALICE_ARN"], who
assert who["Account"] and who["UserId"], who

session = alice.assume_role(RoleArn=os.environ["ROLE_ARN"], RoleSessionName="from-boto3",
                            DurationSeconds=900)
credentials = session["Credentials"]
assert session["AssumedRoleUser"]["Arn"].endswith(":assumed-role/app/from-boto3"), session
assert credentials["Expiration"].year >= 2020, credentials
role = dict(access_key_id=credentials["AccessKeyId"], secret=credentials["SecretAccessKey"],
            token=credentials["SessionToken"])
assert client("sts", **role).get_caller_identity()["Arn"] == session["AssumedRoleUser"]["Arn"]
kms = client("kms", **role)
blob = kms.encrypt(KeyId=os.environ["KEY_ID"], Plaintext=b"via sts")["CiphertextBlob"]
assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"via sts"

refused("AccessDenied", client("sts", "BOB").assume_role,
        RoleArn=os.environ["ROLE_ARN"], RoleSessionName="bob")
refused("InvalidClientTokenId",
        client("sts", access_key_id="KHAKUNKNOWNUNKNOWN23", secret="x" * 40).get_caller_identity)
refused("SignatureDoesNotMatch",
        client("sts", access_key_id=os.environ["ALICE_ACCESS_KEY_ID"], secret="W" * 40)
        .get_caller_identity)

status, text = raw(b"Action=AssumeRole&Action=GetCallerIdentity&Version=2011-06-15")
assert status == 400 and "<Code>InvalidParameterCombination</Code>" in text, (status, text)
status, text = raw(b"Version=2011-06-15")
assert status == 400 and "<Code>MissingAction</Code>" in text, (status, text)
status, text = raw(b"Action=AssumeRole&Version=2011-06-15&RoleSessionName=x")
assert status == 400 and "<Code>MissingParameter</Code>" in text, (status, text)
status, text = raw(b"Action=DeleteEverything&Version=2011-06-15")
assert status == 400 and "<Code>InvalidAction</Code>" in text, (status, text)
status, text = raw(b"Action=GetCallerIdentity&Version=2011-06-15", service="kms")
assert status == 403 and "<Code>IncompleteSignature</Code>" in text, (status, text)
assert "<ErrorResponse" in text and "<RequestId>" in text, text
print("sts complete", flush=True)
