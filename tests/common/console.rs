//! The web console over real HTTP: one request per connection, as a browser on the console's
//! own page sends it, and a signed-in session (its cookie and CSRF token).

use keyhaven::api::console::{CONSOLE_HEADER, CSRF_HEADER};
use serde_json::Value;
use std::net::SocketAddr;

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {self:?}"))
    }

    /// The `__type` of an error answer.
    pub fn error_type(&self) -> String {
        self.json()["__type"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The session id a `Set-Cookie` gives.
    pub fn cookie(&self) -> String {
        let set = self.header("set-cookie").expect("a cookie");
        set.split(';')
            .next()
            .and_then(|pair| pair.split_once('='))
            .map(|(_, v)| v.to_owned())
            .expect("name=value")
    }
}

/// One request over a fresh connection (`Connection: close`), as a browser on the console's
/// own page would send it unless `headers` say otherwise.
pub async fn request(
    console: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let stream = tokio::net::TcpStream::connect(console)
        .await
        .expect("connect");
    exchange(stream, &head(console, method, path, headers, body), body).await
}

/// As [`request`], over TLS to a console whose certificate `ca_pem` signed for `localhost`.
pub async fn request_tls(
    console: SocketAddr,
    ca_pem: &[u8],
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(ca_pem) {
        roots.add(cert.expect("a CA certificate")).expect("CA");
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(console)
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let host = format!("localhost:{}", console.port());
    let mut all = vec![("Host", host.as_str())];
    all.extend_from_slice(headers);
    exchange(stream, &head(console, method, path, &all, body), body).await
}

/// A request's head: the console's own address as its `Host` unless `headers` name another.
fn head(
    console: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> String {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        head.push_str(&format!("Host: {console}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// Sends `head` and `body` on `stream` and reads the answer until the console closes it.
async fn exchange<S>(mut stream: S, head: &str, body: &str) -> Answer
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.write_all(body.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    // A TLS peer may close without close_notify once it has answered: what was read counts.
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        stream.read_to_end(&mut raw),
    )
    .await
    .expect("answered in time");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// A signed-in browser: its cookie and CSRF token.
pub struct Session {
    pub console: SocketAddr,
    pub cookie: String,
    pub csrf: String,
}

impl Session {
    pub async fn sign_in(console: SocketAddr, account: &str, user: &str, password: &str) -> Self {
        let answer = sign_in(console, account, user, password).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        Self {
            console,
            cookie: answer.cookie(),
            csrf: answer.json()["CsrfToken"]
                .as_str()
                .expect("token")
                .to_owned(),
        }
    }

    pub fn cookie_header(&self) -> String {
        format!("keyhaven-console={}", self.cookie)
    }

    /// A KMS call (`X-Amz-Target: TrentService.<operation>`) with the session's token.
    pub async fn kms(&self, operation: &str, body: Value) -> Answer {
        let target = format!("TrentService.{operation}");
        let cookie = self.cookie_header();
        let headers = [
            (CONSOLE_HEADER, "1"),
            ("Cookie", cookie.as_str()),
            (CSRF_HEADER, self.csrf.as_str()),
            ("X-Amz-Target", target.as_str()),
            ("Content-Type", "application/x-amz-json-1.1"),
        ];
        request(
            self.console,
            "POST",
            "/api/kms",
            &headers,
            &body.to_string(),
        )
        .await
    }

    /// A KMS call with `headers` in place of the console's own.
    pub async fn kms_with(&self, operation: &str, headers: &[(&str, &str)]) -> Answer {
        let target = format!("TrentService.{operation}");
        let cookie = self.cookie_header();
        let mut all = vec![
            ("Cookie", cookie.as_str()),
            ("X-Amz-Target", target.as_str()),
        ];
        all.extend_from_slice(headers);
        request(self.console, "POST", "/api/kms", &all, "{}").await
    }

    pub async fn session(&self) -> Answer {
        let cookie = self.cookie_header();
        let headers = [(CONSOLE_HEADER, "1"), ("Cookie", cookie.as_str())];
        request(self.console, "GET", "/api/session", &headers, "").await
    }
}

pub async fn sign_in(console: SocketAddr, account: &str, user: &str, password: &str) -> Answer {
    let form = serde_json::json!({"Account": account, "UserName": user, "Password": password});
    let headers = [(CONSOLE_HEADER, "1"), ("Content-Type", "application/json")];
    request(console, "POST", "/api/sign-in", &headers, &form.to_string()).await
}
