//! `keyhaven bench --door aws`: the load through the AWS door, sent as an AWS SDK sends it —
//! `POST /` with `X-Amz-Target: TrentService.<Operation>`, a JSON 1.1 body and standard SigV4,
//! signed anew for every request, over one HTTP/1.1 keep-alive connection per task in flight.
//! `cargo bench --bench daemon` drives the same workload for its AWS door rows.

use super::{DESCRIPTION, Failure, LoadReport, LoadSpec, Operation, Workload, drive};
use crate::auth::signature::{HttpRequestToSign, format_amz_date, sha256_hex, signing_key_for};
use crate::client::ClientCredentials;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;

const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// Where the AWS door listens, and who signs.
pub struct AwsDoor {
    address: SocketAddr,
    /// The `Host` header: the endpoint's authority as given.
    host: String,
    credentials: ClientCredentials,
}

impl AwsDoor {
    /// `endpoint` is `http://HOST:PORT` (what `serve --dev` prints as `AWS_ENDPOINT_URL`).
    pub async fn new(endpoint: &str, credentials: ClientCredentials) -> Result<Self, String> {
        let host = match endpoint.split_once("://") {
            Some(("http", rest)) => rest.trim_end_matches('/'),
            Some(("https", _)) => {
                return Err(format!(
                    "--door aws sends plain HTTP; '{endpoint}' is https (load the AWS door \
                     over loopback without TLS, or use an AWS SDK's own benchmark)"
                ));
            }
            _ => {
                return Err(format!(
                    "the AWS endpoint must be http://HOST:PORT; got '{endpoint}'"
                ));
            }
        };
        if host.is_empty() || host.contains('/') {
            return Err(format!(
                "the AWS endpoint must be http://HOST:PORT; got '{endpoint}'"
            ));
        }
        let address = tokio::net::lookup_host(host)
            .await
            .map_err(|e| format!("cannot resolve the AWS endpoint '{endpoint}': {e}"))?
            .next()
            .ok_or_else(|| format!("the AWS endpoint '{endpoint}' resolves to no address"))?;
        Ok(Self {
            address,
            host: host.to_owned(),
            credentials,
        })
    }

    /// One signed `TrentService.<operation>` request carrying `body`.
    fn request(
        &self,
        operation: &str,
        body: String,
    ) -> Result<hyper::Request<Full<Bytes>>, Failure> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        let amz_date = format_amz_date(now);
        let date = &amz_date[..8];
        let target = format!("TrentService.{operation}");
        let body_sha256 = sha256_hex(body.as_bytes());
        let region = self.credentials.region.as_str();
        let token = self.credentials.session_token.as_ref().map(|t| t.expose());
        // Sorted by name, as SigV4's canonical headers are.
        let mut headers = vec![
            ("content-type", CONTENT_TYPE),
            ("host", self.host.as_str()),
            ("x-amz-date", amz_date.as_str()),
        ];
        if let Some(token) = token {
            headers.push(("x-amz-security-token", token));
        }
        headers.push(("x-amz-target", target.as_str()));
        let signed_headers = headers
            .iter()
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(";");
        let to_sign = HttpRequestToSign {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body_sha256_hex: &body_sha256,
            amz_date: &amz_date,
            date,
            region,
            service: "kms",
        };
        let key = signing_key_for(
            self.credentials.secret_access_key.expose(),
            date,
            region,
            "kms",
        );
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential={}/{date}/{region}/kms/aws4_request, \
             SignedHeaders={signed_headers}, Signature={}",
            self.credentials.access_key_id,
            hex::encode(to_sign.sign(&key))
        );
        let mut builder = hyper::Request::post("/");
        for (name, value) in &headers {
            builder = builder.header(*name, *value);
        }
        builder
            .header("authorization", authorization)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Failure::unexpected(format!("cannot build the request: {e}")))
    }

    /// A new keep-alive HTTP/1.1 connection to the door.
    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, Failure> {
        let io = |e: std::io::Error| Failure {
            kind: "Io".into(),
            message: e.to_string(),
        };
        let stream = tokio::net::TcpStream::connect(self.address)
            .await
            .map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http_failure)?;
        tokio::spawn(connection);
        Ok(sender)
    }

    /// Sends `operation` with `body` on `connection` (opened first if there is none, and
    /// dropped when it fails); returns the answer's JSON. An answer other than 200 is a
    /// failure counted under its HTTP status and AWS exception name.
    pub async fn call(
        &self,
        connection: &mut Option<SendRequest<Full<Bytes>>>,
        operation: &str,
        body: Value,
    ) -> Result<Value, Failure> {
        let request = self.request(operation, body.to_string())?;
        let sender = match connection {
            Some(sender) if !sender.is_closed() => sender,
            _ => connection.insert(self.connect().await?),
        };
        let answer = async {
            sender.ready().await?;
            let answer = sender.send_request(request).await?;
            let status = answer.status().as_u16();
            let body = answer.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        }
        .await;
        let (status, body) = match answer {
            Ok(answer) => answer,
            Err(error) => {
                *connection = None;
                return Err(http_failure(error));
            }
        };
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status == 200 {
            return Ok(value);
        }
        let exception = value["__type"].as_str().unwrap_or("(no __type)");
        Err(Failure {
            kind: format!("HTTP {status} {exception}"),
            message: value["message"]
                .as_str()
                .unwrap_or("(no message)")
                .to_owned(),
        })
    }

    /// Creates a key for a load to use (through the door); returns its id.
    pub async fn create_key(&self) -> Result<String, Failure> {
        let answer = self
            .call(
                &mut None,
                "CreateKey",
                json!({ "Description": DESCRIPTION }),
            )
            .await?;
        answer["KeyMetadata"]["KeyId"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Failure::unexpected("CreateKey answered no KeyMetadata.KeyId"))
    }
}

fn http_failure(error: hyper::Error) -> Failure {
    Failure {
        kind: "Http".into(),
        message: error.to_string(),
    }
}

/// `spec.operation` through the AWS door; the JSON members are AWS's.
pub struct AwsWorkload {
    door: AwsDoor,
    operation: Operation,
    key_id: String,
    /// Base64 of the plaintext Encrypt sends and Decrypt expects back.
    plaintext: String,
    /// The plaintext's length in bytes: an Encrypt's blob is 49 bytes longer.
    plaintext_len: usize,
    /// Base64 of the ciphertext Decrypt sends.
    blob: String,
}

impl AwsWorkload {
    /// Decrypt and mixed loads first encrypt one plaintext of `payload_size` bytes to decrypt.
    pub async fn new(door: AwsDoor, spec: &LoadSpec) -> Result<Self, String> {
        let plaintext: Vec<u8> = (0..spec.payload_size).map(|i| (i % 251) as u8).collect();
        let mut workload = Self {
            door,
            operation: spec.operation,
            key_id: spec.key_id.clone(),
            plaintext: B64.encode(&plaintext),
            plaintext_len: plaintext.len(),
            blob: String::new(),
        };
        if matches!(spec.operation, Operation::Decrypt | Operation::Mixed) {
            let answer = workload
                .door
                .call(&mut None, "Encrypt", workload.encrypt_body())
                .await
                .map_err(|f| format!("cannot make the ciphertext to decrypt: {}", f.message))?;
            workload.blob = answer["CiphertextBlob"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
        }
        Ok(workload)
    }

    fn encrypt_body(&self) -> Value {
        json!({ "KeyId": self.key_id, "Plaintext": self.plaintext })
    }
}

impl Workload for AwsWorkload {
    type Worker = Option<SendRequest<Full<Bytes>>>;

    fn worker(&self, _: usize) -> Self::Worker {
        None
    }

    async fn call(&self, connection: &mut Self::Worker, sequence: u64) -> Result<(), Failure> {
        let operation = match self.operation {
            Operation::Mixed => Operation::mixed(sequence),
            other => other,
        };
        let door = &self.door;
        match operation {
            Operation::Encrypt => {
                let answer = door
                    .call(connection, "Encrypt", self.encrypt_body())
                    .await?;
                let blob = answer["CiphertextBlob"].as_str().unwrap_or_default();
                // Version, key id, key version and nonce (33 bytes), then ciphertext and tag.
                match B64.decode(blob) {
                    Ok(blob) if blob.len() == 33 + self.plaintext_len + 16 => Ok(()),
                    _ => Err(Failure::unexpected(
                        "Encrypt answered no ciphertext of the expected length",
                    )),
                }
            }
            Operation::Decrypt => {
                let body = json!({ "CiphertextBlob": self.blob });
                let answer = door.call(connection, "Decrypt", body).await?;
                if answer["Plaintext"].as_str() != Some(self.plaintext.as_str()) {
                    return Err(Failure::unexpected(
                        "Decrypt returned a different plaintext",
                    ));
                }
                Ok(())
            }
            Operation::GenerateDataKey => {
                let body = json!({ "KeyId": self.key_id, "KeySpec": "AES_256" });
                let answer = door.call(connection, "GenerateDataKey", body).await?;
                match answer["Plaintext"].as_str().map(|p| B64.decode(p)) {
                    Some(Ok(key)) if key.len() == 32 => Ok(()),
                    _ => Err(Failure::unexpected(
                        "GenerateDataKey returned no 32-byte data key for AES_256",
                    )),
                }
            }
            Operation::CreateKey => {
                let body = json!({ "Description": DESCRIPTION });
                door.call(connection, "CreateKey", body).await.map(drop)
            }
            Operation::DescribeKey | Operation::Mixed => {
                let body = json!({ "KeyId": self.key_id });
                door.call(connection, "DescribeKey", body).await.map(drop)
            }
        }
    }
}

/// Runs `spec` through the AWS door.
pub async fn run_load(door: AwsDoor, spec: LoadSpec) -> Result<LoadReport, String> {
    let workload = Arc::new(AwsWorkload::new(door, &spec).await?);
    Ok(drive(workload, &spec.shape).await)
}
