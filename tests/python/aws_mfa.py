"""Virtual MFA devices and STS GetSessionToken with boto3, over the Query protocol: the root
makes a user and a device, enables it with two codes, and the user's MFA session schedules a
key's deletion that the user's long-term key may not. Codes are computed here (RFC 6238,
HMAC-SHA-1, 6 digits, 30 s). Reads AWS_ENDPOINT_URL, AWS_REGION, the root's AWS_ACCESS_KEY_ID
and AWS_SECRET_ACCESS_KEY, KEY_ID. Prints `mfa complete`."""

import base64
import hashlib
import hmac
import json
import os
import struct
import time

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

CONFIG = Config(retries={"max_attempts": 1, "mode": "standard"})


def totp(seed, at):
    digest = hmac.new(seed, struct.pack(">Q", int(at) // 30), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 1_000_000:06d}"


def refused(code, call, **kwargs):
    try:
        call(**kwargs)
    except ClientError as error:
        got = error.response["Error"]["Code"]
        assert got == code, f"expected {code}, got {got}: {error}"
        return error.response
    raise AssertionError(f"expected {code}, the call succeeded")


POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": "kms:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "kms:ScheduleKeyDeletion", "Resource": "*",
         "Condition": {"BoolIfExists": {"aws:MultiFactorAuthPresent": "false"}}},
    ],
}

iam = boto3.client("iam", config=CONFIG)
iam.create_user(UserName="dana")
iam.put_user_policy(UserName="dana", PolicyName="mfa-for-deletion",
                    PolicyDocument=json.dumps(POLICY))
key = iam.create_access_key(UserName="dana")["AccessKey"]

created = iam.create_virtual_mfa_device(VirtualMFADeviceName="dana-phone")["VirtualMFADevice"]
serial = created["SerialNumber"]
assert serial.endswith(":mfa/dana-phone"), serial
assert created["QRCodePNG"].startswith(b"\x89PNG\r\n\x1a\n"), created["QRCodePNG"][:8]
seed = base64.b32decode(created["Base32StringSeed"] + b"=" * (-len(created["Base32StringSeed"]) % 8))
assert len(seed) == 20, len(seed)

# Wrong codes: InvalidAuthenticationCode, and the device stays unassigned.
spare = iam.create_virtual_mfa_device(VirtualMFADeviceName="spare")["VirtualMFADevice"]
error = refused("InvalidAuthenticationCode", iam.enable_mfa_device, UserName="dana",
                SerialNumber=spare["SerialNumber"], AuthenticationCode1="000000",
                AuthenticationCode2="000000")
assert error["ResponseMetadata"]["HTTPStatusCode"] == 403, error
now = time.time()
iam.enable_mfa_device(UserName="dana", SerialNumber=serial,
                      AuthenticationCode1=totp(seed, now - 30),
                      AuthenticationCode2=totp(seed, now))
devices = iam.list_mfa_devices(UserName="dana")["MFADevices"]
assert [d["SerialNumber"] for d in devices] == [serial], devices
assigned = iam.list_virtual_mfa_devices(AssignmentStatus="Assigned")["VirtualMFADevices"]
assert [d["SerialNumber"] for d in assigned] == [serial], assigned
assert assigned[0]["User"]["UserName"] == "dana", assigned
unassigned = iam.list_virtual_mfa_devices(AssignmentStatus="Unassigned")["VirtualMFADevices"]
assert [d["SerialNumber"] for d in unassigned] == [spare["SerialNumber"]], unassigned
refused("EntityAlreadyExists", iam.create_virtual_mfa_device, VirtualMFADeviceName="spare")

dana = dict(aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"],
            config=CONFIG)
dana_kms = boto3.client("kms", **dana)
dana_sts = boto3.client("sts", **dana)
refused("AccessDeniedException", dana_kms.schedule_key_deletion, KeyId=os.environ["KEY_ID"],
        PendingWindowInDays=7)

# The next step's code (the window allows one step ahead): an MFA session.
code = totp(seed, time.time() + 30)
session = dana_sts.get_session_token(DurationSeconds=900, SerialNumber=serial,
                                     TokenCode=code)["Credentials"]
# The same code again: AccessDenied, as AWS STS answers a bad code.
refused("AccessDenied", dana_sts.get_session_token, SerialNumber=serial, TokenCode=code)

mfa_kms = boto3.client("kms", aws_access_key_id=session["AccessKeyId"],
                       aws_secret_access_key=session["SecretAccessKey"],
                       aws_session_token=session["SessionToken"], config=CONFIG)
deletion = mfa_kms.schedule_key_deletion(KeyId=os.environ["KEY_ID"], PendingWindowInDays=7)
assert deletion["KeyState"] == "PendingDeletion", deletion
mfa_sts = boto3.client("sts", aws_access_key_id=session["AccessKeyId"],
                       aws_secret_access_key=session["SecretAccessKey"],
                       aws_session_token=session["SessionToken"], config=CONFIG)
assert mfa_sts.get_caller_identity()["Arn"].endswith(":user/dana")

iam.deactivate_mfa_device(UserName="dana", SerialNumber=serial)
iam.delete_virtual_mfa_device(SerialNumber=serial)
refused("NoSuchEntity", iam.delete_virtual_mfa_device, SerialNumber=serial)
print("mfa complete")
