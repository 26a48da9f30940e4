"""IAM's SimulatePrincipalPolicy over the Query protocol with boto3, signed as the root:
allowed, implicitDeny and explicitDeny decisions with the statement that decided, context
entries feeding conditions, and IAM's refusals. Reads the AWS_* variables (the root's) and
KEY_ARN; prints `simulate complete`."""

import json
import os

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

CONFIG = Config(retries={"max_attempts": 1, "mode": "standard"})
iam = boto3.client("iam", config=CONFIG)
key_arn = os.environ["KEY_ARN"]


def refused(code, call, **kwargs):
    try:
        call(**kwargs)
    except ClientError as error:
        got = error.response["Error"]["Code"]
        assert got == code, f"expected {code}, got {got}: {error}"
        return
    raise AssertionError(f"expected {code}, the call succeeded")


user = iam.create_user(UserName="simulated")["User"]
iam.put_user_policy(UserName="simulated", PolicyName="tenant-seven", PolicyDocument=json.dumps({
    "Version": "2012-10-17",
    "Statement": [{
        "Sid": "EncryptForTenantSeven", "Effect": "Allow", "Action": "kms:Encrypt",
        "Resource": key_arn,
        "Condition": {"StringEquals": {"kms:EncryptionContext:tenant": "7"}}}]}))
iam.put_user_policy(UserName="simulated", PolicyName="no-deletion", PolicyDocument=json.dumps({
    "Version": "2012-10-17",
    "Statement": [{"Sid": "NeverDelete", "Effect": "Deny", "Action": "kms:ScheduleKeyDeletion",
                   "Resource": "*"}]}))


def simulate(actions, tenant):
    answer = iam.simulate_principal_policy(
        PolicySourceArn=user["Arn"], ActionNames=actions, ResourceArns=[key_arn],
        ContextEntries=[{"ContextKeyName": "kms:EncryptionContext:tenant",
                         "ContextKeyValues": [tenant], "ContextKeyType": "string"}])
    assert answer["IsTruncated"] is False, answer
    return {r["EvalActionName"]: r for r in answer["EvaluationResults"]}


results = simulate(["kms:Encrypt", "kms:Decrypt", "kms:ScheduleKeyDeletion"], "7")
assert len(results) == 3, results
encrypt = results["kms:Encrypt"]
assert encrypt["EvalDecision"] == "allowed", encrypt
assert encrypt["EvalResourceName"] == key_arn, encrypt
assert [m["SourcePolicyId"] for m in encrypt["MatchedStatements"]] == ["user/simulated/tenant-seven"], encrypt
assert results["kms:Decrypt"]["EvalDecision"] == "implicitDeny", results
assert results["kms:Decrypt"]["MatchedStatements"] == [], results
deny = results["kms:ScheduleKeyDeletion"]
assert deny["EvalDecision"] == "explicitDeny", deny
assert [m["SourcePolicyId"] for m in deny["MatchedStatements"]] == ["user/simulated/no-deletion"], deny
print("ok: decisions")

# The context entry feeds the condition: another tenant is not allowed.
assert simulate(["kms:Encrypt"], "8")["kms:Encrypt"]["EvalDecision"] == "implicitDeny"
print("ok: context entries")

refused("NoSuchEntity", iam.simulate_principal_policy,
        PolicySourceArn=user["Arn"].replace("simulated", "nobody"),
        ActionNames=["kms:Encrypt"], ResourceArns=[key_arn])
refused("MissingParameter", iam.simulate_principal_policy, PolicySourceArn=user["Arn"],
        ActionNames=[])
# A user without iam:SimulatePrincipalPolicy may not simulate.
access = iam.create_access_key(UserName="simulated")["AccessKey"]
as_user = boto3.client("iam", aws_access_key_id=access["AccessKeyId"],
                       aws_secret_access_key=access["SecretAccessKey"], config=CONFIG)
refused("AccessDenied", as_user.simulate_principal_policy, PolicySourceArn=user["Arn"],
        ActionNames=["kms:Encrypt"], ResourceArns=[key_arn])

# SimulateCustomPolicy: the documents given, as the caller's only identity policies.
custom = iam.simulate_custom_policy(
    PolicyInputList=[json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": key_arn}]}),
        json.dumps({"Version": "2012-10-17", "Statement": [
            {"Sid": "NoEncrypt", "Effect": "Deny", "Action": "kms:Encrypt", "Resource": "*"}]})],
    ActionNames=["kms:Decrypt", "kms:Encrypt", "kms:Sign"], ResourceArns=[key_arn])
by_action = {r["EvalActionName"]: r for r in custom["EvaluationResults"]}
assert by_action["kms:Decrypt"]["EvalDecision"] == "allowed", by_action
assert [m["SourcePolicyId"] for m in by_action["kms:Decrypt"]["MatchedStatements"]] == [
    "PolicyInputList.1"], by_action
assert by_action["kms:Encrypt"]["EvalDecision"] == "explicitDeny", by_action
assert [m["SourcePolicyId"] for m in by_action["kms:Encrypt"]["MatchedStatements"]] == [
    "PolicyInputList.2"], by_action
assert by_action["kms:Sign"]["EvalDecision"] == "implicitDeny", by_action
refused("MalformedPolicyDocument", iam.simulate_custom_policy, PolicyInputList=["{not json"],
        ActionNames=["kms:Encrypt"], ResourceArns=[key_arn])
refused("AccessDenied", as_user.simulate_custom_policy, PolicyInputList=["{}"],
        ActionNames=["kms:Encrypt"], ResourceArns=[key_arn])
print("ok: custom policies")
print("simulate complete")
