"""Two-person approval through boto3 on the AWS door. Reads the AWS_* variables (alice's),
KEY_ID, PHASE and, in the second phase, APPROVAL_ID.

Phase `request`: schedule_key_deletion (7 days) answers ApprovalRequiredException; prints
`REQUEST <id>` (the id the message names) and `approval complete`.
Phase `execute`: the same call with the header x-keyhaven-approval-id (signed, as any header
boto3 sends) but another window is refused (ApprovalMismatchException); exactly the approved
call runs; once cancelled, repeating it is refused (ApprovalStateException); prints
`approval complete`."""

import os
import re

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

CONFIG = Config(retries={"max_attempts": 1, "mode": "standard"})
key = os.environ["KEY_ID"]
kms = boto3.client("kms", config=CONFIG)


def refused(code, call, **kwargs):
    try:
        call(**kwargs)
    except ClientError as error:
        got = error.response["Error"]["Code"]
        assert got == code, f"expected {code}, got {got}: {error}"
        return error
    raise AssertionError(f"expected {code}, the call succeeded")


if os.environ["PHASE"] == "request":
    error = refused(
        "ApprovalRequiredException",
        kms.schedule_key_deletion,
        KeyId=key,
        PendingWindowInDays=7,
    )
    message = error.response["Error"]["Message"]
    match = re.search(r"approval request ([0-9a-f-]{36})", message)
    assert match, message
    assert "x-keyhaven-approval-id" in message, message
    print("REQUEST", match.group(1))
else:
    approval_id = os.environ["APPROVAL_ID"]

    def add_header(request, **_):
        request.headers["x-keyhaven-approval-id"] = approval_id

    kms.meta.events.register("before-sign.kms.ScheduleKeyDeletion", add_header)
    refused(
        "ApprovalMismatchException",
        kms.schedule_key_deletion,
        KeyId=key,
        PendingWindowInDays=30,
    )
    answer = kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=7)
    assert answer["KeyState"] == "PendingDeletion", answer
    # Cancelled, the key could be scheduled again: the approval still cannot be used twice.
    kms.cancel_key_deletion(KeyId=key)
    refused(
        "ApprovalStateException",
        kms.schedule_key_deletion,
        KeyId=key,
        PendingWindowInDays=7,
    )
print("approval complete")
