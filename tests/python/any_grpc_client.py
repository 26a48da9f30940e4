# Keyhaven from any gRPC client, with a client certificate and no request signing.
#
#   KEYHAVEN_ENDPOINT=keyhaven.example:7878 KEYHAVEN_CA_CERT=ca.pem \
#   KEYHAVEN_CLIENT_CERT=app.pem KEYHAVEN_CLIENT_KEY=app.key KEYHAVEN_KEY_ID=alias/app \
#   python any_grpc_client.py path/to/keyhaven/proto
#
# Needs `pip install grpcio grpcio-tools`; the certificate's subject or URI must be bound to
# a user or role (`keyhaven user bind-certificate NAME --uri spiffe://...`).
import os
import sys
import tempfile

import grpc
from grpc_tools import protoc

# Stubs generated from Keyhaven's proto files, nothing written by hand.
proto = sys.argv[1] if len(sys.argv) > 1 else "proto"
stubs = tempfile.mkdtemp()
protoc.main(["grpc_tools.protoc", f"-I{proto}", f"--python_out={stubs}",
             f"--grpc_python_out={stubs}",
             f"{proto}/keyhaven/v1/kms.proto", f"{proto}/keyhaven/v1/iam.proto"])
sys.path.insert(0, stubs)
from keyhaven.v1 import iam_pb2, iam_pb2_grpc, kms_pb2, kms_pb2_grpc  # noqa: E402


def read(variable):
    with open(os.environ[variable], "rb") as f:
        return f.read()


credentials = grpc.ssl_channel_credentials(
    root_certificates=read("KEYHAVEN_CA_CERT"),
    private_key=read("KEYHAVEN_CLIENT_KEY"),
    certificate_chain=read("KEYHAVEN_CLIENT_CERT"),
)
channel = grpc.secure_channel(os.environ["KEYHAVEN_ENDPOINT"], credentials)
kms = kms_pb2_grpc.KeyManagementServiceStub(channel)
iam = iam_pb2_grpc.IdentityServiceStub(channel)

me = iam.GetCallerIdentity(iam_pb2.GetCallerIdentityRequest())
print("caller:", me.arn)

key_id = os.environ["KEYHAVEN_KEY_ID"]
context = {"purpose": "example"}
blob = kms.Encrypt(kms_pb2.EncryptRequest(
    key_id=key_id, plaintext=b"hello from python", encryption_context=context)).ciphertext_blob
plaintext = kms.Decrypt(kms_pb2.DecryptRequest(
    ciphertext_blob=blob, encryption_context=context)).plaintext
print("decrypted:", plaintext.decode())

# What the caller's policies do not allow is refused as for any caller: the status code,
# and the reason name leading the message (it is also in a google.rpc.ErrorInfo detail).
try:
    kms.DescribeKey(kms_pb2.DescribeKeyRequest(key_id=key_id))
    print("described:", key_id)
except grpc.RpcError as error:
    print("refused:", error.code().name, error.details())
