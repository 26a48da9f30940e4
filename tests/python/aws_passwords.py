"""IAM's password calls through the AWS door with boto3, signed as the root: the account's
password policy set and read, a login profile refused when its password breaks the policy,
made, read, reset and deleted. Reads the AWS_* variables (the root's) and USER_NAME (an existing
user without a password); prints `passwords complete`."""

import os

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

CONFIG = Config(retries={"max_attempts": 1, "mode": "standard"})
iam = boto3.client("iam", config=CONFIG)
user = os.environ["USER_NAME"]


def refused(code, call, **kwargs):
    try:
        call(**kwargs)
    except ClientError as error:
        got = error.response["Error"]["Code"]
        assert got == code, f"expected {code}, got {got}: {error}"
        return
    raise AssertionError(f"expected {code}, the call succeeded")


refused("NoSuchEntity", iam.get_account_password_policy)
iam.update_account_password_policy(
    MinimumPasswordLength=12, RequireNumbers=True, RequireSymbols=True,
    RequireUppercaseCharacters=True, RequireLowercaseCharacters=True,
    AllowUsersToChangePassword=True, MaxPasswordAge=90, PasswordReusePrevention=3)
policy = iam.get_account_password_policy()["PasswordPolicy"]
assert policy["MinimumPasswordLength"] == 12, policy
assert policy["RequireSymbols"] is True and policy["ExpirePasswords"] is True, policy
assert policy["MaxPasswordAge"] == 90 and policy["PasswordReusePrevention"] == 3, policy

refused("PasswordPolicyViolation", iam.create_login_profile, UserName=user, Password="short")
refused("NoSuchEntity", iam.get_login_profile, UserName=user)
made = iam.create_login_profile(UserName=user, Password="Boto3-strong-pass-1",
                                PasswordResetRequired=True)["LoginProfile"]
assert made["UserName"] == user and made["PasswordResetRequired"] is True, made
got = iam.get_login_profile(UserName=user)["LoginProfile"]
assert got["PasswordResetRequired"] is True, got
iam.update_login_profile(UserName=user, Password="Boto3-strong-pass-2", PasswordResetRequired=False)
assert iam.get_login_profile(UserName=user)["LoginProfile"]["PasswordResetRequired"] is False
refused("PasswordPolicyViolation", iam.update_login_profile, UserName=user,
        Password="Boto3-strong-pass-1")
iam.delete_login_profile(UserName=user)
refused("NoSuchEntity", iam.get_login_profile, UserName=user)
iam.delete_account_password_policy()
refused("NoSuchEntity", iam.get_account_password_policy)
print("passwords complete")
