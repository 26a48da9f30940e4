"""What one daemon of a cluster made is found at once through another, by boto3 on the AWS
door, which keeps no record of signatures: nothing a call there writes first brings the
daemon's view up to date. Each round, a user made through daemon A's door is the grantee of a
CreateGrant and the principal of a SimulatePrincipalPolicy through daemon B's door in the next
calls. A user never made is still refused, and nothing is granted to it. Reads the AWS_*
variables (the root's), A_ENDPOINT, B_ENDPOINT, KEY_ID and KEY_ARN;
prints `found at once`."""

import os

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

CONFIG = Config(retries={"max_attempts": 1, "mode": "standard"})
ROUNDS = 10


def client(service, daemon):
    return boto3.client(service, endpoint_url=os.environ[daemon + "_ENDPOINT"], config=CONFIG)


iam_a = client("iam", "A")
iam_b = client("iam", "B")
kms_b = client("kms", "B")
key_id, key_arn = os.environ["KEY_ID"], os.environ["KEY_ARN"]

for round in range(ROUNDS):
    arn = iam_a.create_user(UserName=f"grantee-{round}")["User"]["Arn"]
    granted = kms_b.create_grant(KeyId=key_id, GranteePrincipal=arn, Operations=["Encrypt"])
    assert granted["GrantId"], (round, granted)
    simulated = iam_b.simulate_principal_policy(
        PolicySourceArn=arn, ActionNames=["kms:Encrypt"], ResourceArns=[key_arn]
    )
    # Allowed by the grant just made to the user.
    decision = simulated["EvaluationResults"][0]["EvalDecision"]
    assert decision == "allowed", (round, decision)

never_made = arn.rsplit("/", 1)[0] + "/never-made"
try:
    kms_b.create_grant(KeyId=key_id, GranteePrincipal=never_made, Operations=["Encrypt"])
    raise SystemExit("a grant to a user never made was made")
except ClientError as error:
    assert error.response["Error"]["Code"] == "ValidationException", error.response
grants = kms_b.list_grants(KeyId=key_id)["Grants"]
assert len(grants) == ROUNDS, len(grants)
print("found at once")
