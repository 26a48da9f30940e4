"""STS AssumeRoleWithWebIdentity through the AWS door with boto3, unsigned as the SDK sends
it (no credentials in the environment): a good token becomes a role session that encrypts,
a token of another workload is refused by the trust policy, a tampered one as an invalid
identity token. Reads AWS_ENDPOINT_URL, AWS_REGION, ROLE_ARN, KEY_ARN, GOOD_TOKEN,
OTHER_TOKEN and BAD_TOKEN; prints `web identity complete`."""

import os

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

CONFIG = Config(retries={"max_attempts": 1, "mode": "standard"})
sts = boto3.client("sts", config=CONFIG)
role = os.environ["ROLE_ARN"]


def refused(code, **kwargs):
    try:
        sts.assume_role_with_web_identity(**kwargs)
    except ClientError as error:
        got = error.response["Error"]["Code"]
        assert got == code, f"expected {code}, got {got}: {error}"
        return
    raise AssertionError(f"expected {code}, the call succeeded")


answer = sts.assume_role_with_web_identity(
    RoleArn=role, RoleSessionName="boto3", WebIdentityToken=os.environ["GOOD_TOKEN"],
    DurationSeconds=900)
assert answer["AssumedRoleUser"]["Arn"].endswith(":assumed-role/deployer/boto3"), answer
assert answer["SubjectFromWebIdentityToken"] == "repo:acme/app:ref:refs/heads/main", answer
assert answer["Audience"] == "keyhaven", answer
credentials = answer["Credentials"]
kms = boto3.client(
    "kms", config=CONFIG,
    aws_access_key_id=credentials["AccessKeyId"],
    aws_secret_access_key=credentials["SecretAccessKey"],
    aws_session_token=credentials["SessionToken"])
kms.encrypt(KeyId=os.environ["KEY_ARN"], Plaintext=b"from a workload")

# The SDK's own credential provider: AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN.
import tempfile

with tempfile.NamedTemporaryFile("w", suffix=".jwt", delete=False) as token_file:
    token_file.write(os.environ["GOOD_TOKEN"])
os.environ["AWS_WEB_IDENTITY_TOKEN_FILE"] = token_file.name
os.environ["AWS_ROLE_ARN"] = role
os.environ["AWS_ROLE_SESSION_NAME"] = "sdk-provider"
session = boto3.Session()
assert session.get_credentials().method == "assume-role-with-web-identity", session.get_credentials().method
session.client("kms", config=CONFIG).encrypt(KeyId=os.environ["KEY_ARN"], Plaintext=b"sdk")
os.unlink(token_file.name)

refused("AccessDenied", RoleArn=role, RoleSessionName="boto3",
        WebIdentityToken=os.environ["OTHER_TOKEN"])
refused("InvalidIdentityToken", RoleArn=role, RoleSessionName="boto3",
        WebIdentityToken=os.environ["BAD_TOKEN"])
print("web identity complete")
