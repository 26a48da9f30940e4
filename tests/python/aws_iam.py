"""IAM over the Query protocol with boto3, signed as the root: a user made, given a policy and
an access key, which then works on KMS within the policy; AWS's refusals (EntityAlreadyExists,
MalformedPolicyDocument, NoSuchEntity, LimitExceeded, AccessDenied). Reads the AWS_* variables
(the root's) and KEY_ARN; prints `iam complete`."""

import json
import os

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

CONFIG = Config(retries={"max_attempts": 1, "mode": "standard"})


def refused(code, call, **kwargs):
    try:
        call(**kwargs)
    except ClientError as error:
        got = error.response["Error"]["Code"]
        assert got == code, f"expected {code}, got {got}: {error}"
        return
    raise AssertionError(f"expected {code}, the call succeeded")


def as_key(service, key):
    return boto3.client(service, aws_access_key_id=key["AccessKeyId"],
                        aws_secret_access_key=key["SecretAccessKey"], config=CONFIG)


iam = boto3.client("iam", config=CONFIG)
key_arn = os.environ["KEY_ARN"]
user = iam.create_user(UserName="carol")["User"]
assert user["UserName"] == "carol" and user["Arn"].endswith(":user/carol"), user
refused("EntityAlreadyExists", iam.create_user, UserName="carol")
assert "carol" in [u["UserName"] for u in iam.list_users()["Users"]]
policy = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["kms:Encrypt", "kms:Decrypt"], "Resource": key_arn}]}
iam.put_user_policy(UserName="carol", PolicyName="encrypt", PolicyDocument=json.dumps(policy))
refused("MalformedPolicyDocument", iam.put_user_policy, UserName="carol",
        PolicyName="bad", PolicyDocument="{not json")
stored = iam.get_user_policy(UserName="carol", PolicyName="encrypt")
assert stored["PolicyDocument"]["Statement"][0]["Resource"] == key_arn, stored
assert iam.list_user_policies(UserName="carol")["PolicyNames"] == ["encrypt"]
iam.put_user_policy(UserName="carol", PolicyName="spare", PolicyDocument=json.dumps(policy))
iam.delete_user_policy(UserName="carol", PolicyName="spare")
assert iam.list_user_policies(UserName="carol")["PolicyNames"] == ["encrypt"]
access = iam.create_access_key(UserName="carol")["AccessKey"]
assert access["Status"] == "Active" and access["SecretAccessKey"], access
carol = as_key("kms", access)
blob = carol.encrypt(KeyId=key_arn, Plaintext=b"carol's")["CiphertextBlob"]
assert carol.decrypt(CiphertextBlob=blob)["Plaintext"] == b"carol's"
refused("AccessDeniedException", carol.create_key)
refused("AccessDenied", as_key("iam", access).create_user, UserName="mallory")
assert as_key("sts", access).get_caller_identity()["Arn"] == user["Arn"]

iam.create_access_key(UserName="carol")
refused("LimitExceeded", iam.create_access_key, UserName="carol")
listed = iam.list_access_keys(UserName="carol")["AccessKeyMetadata"]
assert access["AccessKeyId"] in [k["AccessKeyId"] for k in listed] and len(listed) == 2, listed
iam.update_access_key(UserName="carol", AccessKeyId=access["AccessKeyId"], Status="Inactive")
refused("UnrecognizedClientException", carol.encrypt, KeyId=key_arn, Plaintext=b"x")
iam.delete_access_key(UserName="carol", AccessKeyId=access["AccessKeyId"])

group = iam.create_group(GroupName="ops")["Group"]
assert group["Arn"].endswith(":group/ops"), group
iam.add_user_to_group(GroupName="ops", UserName="carol")
iam.put_group_policy(GroupName="ops", PolicyName="read",
                     PolicyDocument=json.dumps({"Statement": [
                         {"Effect": "Allow", "Action": "kms:DescribeKey", "Resource": "*"}]}))
assert [g["GroupName"] for g in iam.list_groups()["Groups"]] == ["ops"]
role = iam.create_role(RoleName="batch", AssumeRolePolicyDocument=json.dumps({"Statement": [
    {"Effect": "Allow", "Principal": {"AWS": user["Arn"]}, "Action": "sts:AssumeRole"}]}))["Role"]
assert role["Arn"].endswith(":role/batch"), role
assert "batch" in [r["RoleName"] for r in iam.list_roles()["Roles"]]
iam.create_group(GroupName="spare")
iam.delete_group(GroupName="spare")
assert [g["GroupName"] for g in iam.list_groups()["Groups"]] == ["ops"]
iam.put_role_policy(RoleName="batch", PolicyName="p", PolicyDocument=json.dumps(policy))
refused("NoSuchEntity", iam.delete_user, UserName="nobody")
print("iam complete", flush=True)
