//! The web console: a front door for people, served by the daemon (`console_listen`).
//!
//! A user signs in with the account (its id, or its name in the organisation), a user name,
//! the password and, when the user has an MFA device, its code: the `SignIn` operation every
//! door has. The daemon keeps the session credentials it gave out; the browser gets only a
//! random cookie naming them (`HttpOnly`, `SameSite=Strict`, `Secure` over TLS). Every
//! action of the console's pages is then an ordinary call of the AWS wire protocols (KMS JSON
//! 1.1, IAM Query) or of the audit log, run as that user through the [`Gateway`]:
//! authenticated, authorised by the user's policies, audited (door `console`), exactly as the
//! same call through the AWS door.
//!
//! Against cross-site requests: every `/api/` request carries `X-Keyhaven-Console: 1` (a
//! header no cross-site form can send, and no cross-site script without a CORS permission the
//! console never gives), an `Origin`, when sent, must be the console's own, and every change
//! made with a session carries the session's CSRF token. Sessions end after
//! [`IDLE_TIMEOUT`] without a call, at the latest when their credentials expire (one hour),
//! and at sign-out, on the daemon. The pages are static assets built into the binary, served
//! under a Content-Security-Policy that allows nothing but the console's own files.

use super::accounts::Accounts;
use super::audit::AuditApi;
use super::authorize::CallContext;
use super::aws;
use super::gateway::{CallInFlight, Door, Gateway};
use super::operations::SignInOperations;
use super::status::ApiError;
use crate::clock::{Clock, UnixSeconds};
use crate::proto::v1;
use crate::secret::SecretString;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tonic::Code;

/// A session ends after this long without a call.
pub const IDLE_TIMEOUT: UnixSeconds = 15 * 60;
/// Most sessions a daemon keeps; the oldest give way.
const MAX_SESSIONS: usize = 10_000;
/// Most sessions one user keeps on a daemon; the user's oldest gives way.
const MAX_SESSIONS_PER_USER: usize = 10;
/// The header every `/api/` request carries.
pub const CONSOLE_HEADER: &str = "x-keyhaven-console";
/// The header carrying the session's CSRF token on every change.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The console's Content-Security-Policy: its own scripts, styles and calls, nothing else.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";
/// Largest audit tail the audit page reads.
const MAX_AUDIT_LINES: u32 = 10_000;

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const INDEX_HTML: &str = include_str!("assets/index.html");

/// One of the console's scripts: `assets/<name>`, served at `/assets/<name>`.
macro_rules! script {
    ($name:literal) => {
        (
            concat!("/assets/", $name),
            include_str!(concat!("assets/", $name)),
            JAVASCRIPT,
        )
    };
}

/// The console's files, built into the binary: (path, content, content type). The scripts are
/// those index.html loads (tests/console.rs checks that every script in `assets/` is here).
const ASSETS: &[(&str, &str, &str)] = &[
    ("/", INDEX_HTML, HTML),
    ("/index.html", INDEX_HTML, HTML),
    ("/assets/app.css", include_str!("assets/app.css"), CSS),
    script!("core.js"),
    script!("charts.js"),
    script!("keys.js"),
    script!("key-page.js"),
    script!("identities.js"),
    script!("audit.js"),
];

/// A signed-in user's session: the credentials the daemon holds for it.
struct Session {
    access_key_id: String,
    session_token: SecretString,
    csrf_token: SecretString,
    account_id: String,
    user_name: String,
    arn: String,
    /// When the credentials expire: the session ends then at the latest.
    expires: UnixSeconds,
    last_call: Mutex<UnixSeconds>,
}

/// Why a request has no session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NoSession {
    /// No cookie, or one naming no session.
    NotSignedIn,
    /// The session ended: idle too long, or its credentials expired.
    Expired,
}

impl NoSession {
    fn error(self) -> ApiError {
        match self {
            NoSession::NotSignedIn => ApiError::new(
                Code::Unauthenticated,
                "NotSignedIn",
                "sign in to the console",
            ),
            NoSession::Expired => ApiError::new(
                Code::Unauthenticated,
                "SessionExpired",
                "the console session ended; sign in again",
            ),
        }
    }
}

fn csrf_refused(why: &str) -> ApiError {
    ApiError::new(
        Code::PermissionDenied,
        "InvalidCsrfTokenException",
        format!("refused as a possible cross-site request: {why}"),
    )
}

/// The web console's door.
pub struct ConsoleDoor {
    gateway: Gateway,
    accounts: Arc<Accounts>,
    audit: AuditApi,
    clock: Arc<dyn Clock>,
    max_body: usize,
    /// The names requests may address the console by (`accepted_hosts`); none: any, or, on
    /// a console listening on loopback, `localhost` and IP addresses only.
    accepted_hosts: Vec<String>,
    loopback: bool,
    /// Sessions by the SHA-256 of their cookie.
    sessions: Mutex<HashMap<[u8; 32], Arc<Session>>>,
}

impl std::fmt::Debug for ConsoleDoor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleDoor").finish_non_exhaustive()
    }
}

/// The sign-in form. Its secrets are moved into zeroizing types as soon as it is read.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SignInForm {
    account: String,
    user_name: String,
    password: String,
    #[serde(default)]
    mfa_code: String,
    #[serde(default)]
    new_password: String,
}

impl Drop for SignInForm {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.password);
        zeroize::Zeroize::zeroize(&mut self.new_password);
    }
}

impl ConsoleDoor {
    pub fn new(
        gateway: Gateway,
        accounts: Arc<Accounts>,
        audit: AuditApi,
        clock: Arc<dyn Clock>,
        max_body: usize,
    ) -> Self {
        Self {
            gateway,
            accounts,
            audit,
            clock,
            max_body,
            accepted_hosts: Vec::new(),
            loopback: false,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// Accepts only requests addressed to `accepted` (the daemon's `accepted_hosts`); with
    /// none, a console listening on loopback (`loopback`) accepts only `localhost` and IP
    /// addresses, so that a page of another site whose name was made to point at loopback
    /// (DNS rebinding) cannot call it as if it were the console's own.
    pub fn with_hosts(mut self, accepted: Vec<String>, loopback: bool) -> Self {
        self.accepted_hosts = accepted;
        self.loopback = loopback;
        self
    }

    /// Whether the request's `Host` is one the console answers to.
    fn host_allowed(&self, headers: &http::HeaderMap) -> bool {
        let host = headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !self.accepted_hosts.is_empty() {
            return crate::auth::host_accepted(&self.accepted_hosts, host);
        }
        if !self.loopback {
            return true;
        }
        let name = match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        };
        let name = name.trim_start_matches('[').trim_end_matches(']');
        name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
    }

    /// Serves `listener` until `closing` turns true, then drains (see `http::serve`).
    pub fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        closing: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        super::http::serve(self, listener, tls, closing)
    }

    /// The session the request's cookie names, if it is still alive (its last call is now).
    fn session(&self, headers: &http::HeaderMap, secure: bool) -> Result<Arc<Session>, NoSession> {
        let id = cookie(headers, secure).ok_or(NoSession::NotSignedIn)?;
        let key: [u8; 32] = Sha256::digest(id.as_bytes()).into();
        let now = self.clock.now();
        let mut sessions = self.sessions.lock().map_err(|_| NoSession::NotSignedIn)?;
        let session = sessions.get(&key).cloned().ok_or(NoSession::NotSignedIn)?;
        let mut last = session
            .last_call
            .lock()
            .map_err(|_| NoSession::NotSignedIn)?;
        if now >= session.expires || now - *last > IDLE_TIMEOUT {
            drop(last);
            sessions.remove(&key);
            return Err(NoSession::Expired);
        }
        *last = now;
        drop(last);
        Ok(session)
    }

    /// Keeps a new session; returns its cookie value.
    fn open_session(&self, session: Session) -> String {
        let mut id = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut id);
        let cookie = hex::encode(id);
        let key: [u8; 32] = Sha256::digest(cookie.as_bytes()).into();
        let now = self.clock.now();
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.retain(|_, s| {
                now < s.expires && s.last_call.lock().is_ok_and(|l| now - *l <= IDLE_TIMEOUT)
            });
            let last_call = |s: &Session| s.last_call.lock().map(|l| *l).unwrap_or(0);
            // A user's own sessions give way first: no few users can crowd everyone out.
            let own = sessions.values().filter(|s| s.arn == session.arn).count();
            let oldest = if own >= MAX_SESSIONS_PER_USER {
                sessions
                    .iter()
                    .filter(|(_, s)| s.arn == session.arn)
                    .min_by_key(|(_, s)| last_call(s))
                    .map(|(k, _)| *k)
            } else if sessions.len() >= MAX_SESSIONS {
                sessions
                    .iter()
                    .min_by_key(|(_, s)| last_call(s))
                    .map(|(k, _)| *k)
            } else {
                None
            };
            if let Some(oldest) = oldest {
                sessions.remove(&oldest);
            }
            sessions.insert(key, Arc::new(session));
        }
        cookie
    }

    fn end_session(&self, headers: &http::HeaderMap, secure: bool) -> Option<Arc<Session>> {
        let id = cookie(headers, secure)?;
        let key: [u8; 32] = Sha256::digest(id.as_bytes()).into();
        self.sessions.lock().ok()?.remove(&key)
    }

    /// A sign-in: the `SignIn` operation, admitted unsigned (the password is the credential),
    /// then a session for the credentials it gave.
    async fn sign_in(
        &self,
        call: &mut CallInFlight,
        headers: &http::HeaderMap,
        body: &[u8],
        peer: SocketAddr,
        secure: bool,
    ) -> http::Response<Full<Bytes>> {
        let request_id = call.request_id.clone();
        let mut form: SignInForm = match serde_json::from_slice(body) {
            Ok(form) => form,
            Err(_) => {
                let error = ApiError::new(
                    Code::InvalidArgument,
                    "ValidationException",
                    "the sign-in form is not JSON with Account, UserName and Password",
                );
                return error_response(&request_id, call.refuse(error, headers));
            }
        };
        let slot = match call.admit_unsigned(headers) {
            Ok(slot) => slot,
            Err(refused) => return error_response(&request_id, refused),
        };
        let request = v1::SignInRequest {
            account_id: std::mem::take(&mut form.account),
            user_name: std::mem::take(&mut form.user_name),
            password: std::mem::take(&mut form.password),
            mfa_code: std::mem::take(&mut form.mfa_code),
            new_password: std::mem::take(&mut form.new_password),
        };
        let user_name = request.user_name.clone();
        let result = SignInOperations::new(&self.accounts)
            .sign_in(Some(peer.ip()), &slot, request)
            .await;
        let answer = match result {
            Ok(answer) => answer,
            Err(refused) => {
                let result = aws::finished(call, &slot, Err(refused));
                return match result {
                    Err(error) => error_response(&request_id, error),
                    Ok(_) => error_response(&request_id, ApiError::audit_unavailable()),
                };
            }
        };
        if let Err(error) = aws::finished(call, &slot, Ok(Vec::new())) {
            return error_response(&request_id, error);
        }
        let Some(mut credentials) = answer.credentials else {
            return error_response(
                &request_id,
                ApiError::new(
                    Code::Internal,
                    "KMSInternalException",
                    "no session was made",
                ),
            );
        };
        zeroize::Zeroize::zeroize(&mut credentials.secret_access_key);
        let account_id = answer
            .user_arn
            .split(':')
            .nth(4)
            .unwrap_or_default()
            .to_owned();
        let csrf_token = hex::encode(rand::random::<[u8; 32]>());
        let session = Session {
            access_key_id: credentials.access_key_id,
            session_token: SecretString::new(std::mem::take(&mut credentials.session_token)),
            csrf_token: SecretString::new(csrf_token),
            account_id,
            user_name,
            arn: answer.user_arn,
            expires: credentials.expiration,
            last_call: Mutex::new(self.clock.now()),
        };
        let described = describe(&session);
        let cookie = self.open_session(session);
        let mut response = json_response(&request_id, 200, described.to_string());
        set_cookie(&mut response, &cookie, secure, IDLE_TIMEOUT.max(3_600));
        response
    }

    /// A call run as the session's user: authenticated by the session, then the operation.
    async fn session_call(
        &self,
        route: Route,
        parts: &http::request::Parts,
        body: Bytes,
        peer: SocketAddr,
        secure: bool,
    ) -> http::Response<Full<Bytes>> {
        let headers = &parts.headers;
        let target = headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let (operation, service) = match route {
            Route::Kms => (aws::json_operation(&target), "kms"),
            Route::Iam => aws::query_operation(&body),
            Route::Audit => ("audit:TailAuditLog".to_owned(), "audit"),
            Route::SignOut => ("signin:SignOut".to_owned(), "signin"),
            _ => (super::auth_layer::UNKNOWN_OPERATION.to_owned(), "kms"),
        };
        let mut call = self.gateway.begin(Door::Console, operation, Some(peer));
        let request_id = call.request_id.clone();
        // Refusals before the call runs carry the console's statuses (401, 403); the call's
        // own answer is its protocol's, as the AWS door sends it.
        let answer = |result: Result<Vec<u8>, ApiError>| match (route, result) {
            (Route::Iam, result) => aws::respond_query(service, &request_id, result),
            (_, Ok(body)) => json_response(&request_id, 200, body),
            (_, Err(error)) => error_response(&request_id, error),
        };
        let session = match self.session(headers, secure) {
            Ok(session) => session,
            Err(none) => return answer(Err(call.refuse(none.error(), headers))),
        };
        if parts.method == http::Method::POST {
            let sent = headers.get(CSRF_HEADER).map(|v| v.as_bytes());
            let matches = sent.is_some_and(|sent| {
                subtle::ConstantTimeEq::ct_eq(sent, session.csrf_token.expose().as_bytes()).into()
            });
            if !matches {
                let refused = csrf_refused("the request does not carry the session's CSRF token");
                return answer(Err(call.refuse(refused, headers)));
            }
        }
        let (caller, slot) = match call.authenticate_session(
            &session.access_key_id,
            &session.session_token,
            headers,
        ) {
            Ok(admitted) => admitted,
            Err(refused) => {
                // The credentials behind the session are no longer accepted: it is over.
                self.end_session(headers, secure);
                return answer(Err(refused));
            }
        };
        let context = CallContext {
            caller,
            source_ip: Some(peer.ip()),
            secure_transport: secure,
            audit: slot.clone(),
            approval_id: headers
                .get(crate::api::APPROVAL_ID_HEADER)
                .map(|v| v.to_str().unwrap_or("?").to_owned()),
            asked: call.asked(),
        };
        let result = match route {
            Route::Kms => aws::run_json(&self.accounts, &context, &target, &body).await,
            Route::Iam => aws::run_query(&self.accounts, &context, &body, &request_id).await,
            Route::Audit => self.audit_records(&context, parts.uri.query()).await,
            _ => {
                // Signed out: the session's credentials end too, on every daemon.
                self.end_session(headers, secure);
                let credentials = self
                    .accounts
                    .of(&context)
                    .map(|account| account.identities().credentials().clone());
                match credentials {
                    Err(refused) => Err(refused),
                    Ok(credentials) => credentials
                    .end_session(&session.access_key_id)
                    .await
                    .map(|_| Vec::new())
                    .map_err(|e| {
                        tracing::error!(error = %e, "the signed-out session's credentials were not removed");
                        ApiError::new(
                            Code::Unavailable,
                            "ServiceFailure",
                            "the session ended here, but its credentials could not be removed; try again",
                        )
                    }),
                }
            }
        };
        drop(body);
        let result = aws::finished(&call, &slot, result);
        if route == Route::SignOut && result.is_ok() {
            let mut response = http::Response::new(Full::new(Bytes::new()));
            *response.status_mut() = http::StatusCode::NO_CONTENT;
            set_cookie(&mut response, "", secure, 0);
            return response;
        }
        match route {
            Route::Kms => aws::respond(&request_id, result),
            _ => answer(result),
        }
    }

    /// The audit page's records: `{"Records": [...]}`, the last `lines` (default 1,000) the
    /// caller may read.
    async fn audit_records(
        &self,
        context: &CallContext,
        query: Option<&str>,
    ) -> Result<Vec<u8>, ApiError> {
        let lines = match query_value(query.unwrap_or_default(), "lines") {
            None => 1_000,
            Some(text) => text
                .parse::<u32>()
                .ok()
                .filter(|n| *n <= MAX_AUDIT_LINES)
                .ok_or_else(|| {
                    ApiError::new(
                        Code::InvalidArgument,
                        "ValidationException",
                        format!("lines must be a number from 0 to {MAX_AUDIT_LINES}"),
                    )
                })?,
        };
        let records = self.audit.recent(context, lines).await?;
        // Each line is one JSON object the log wrote.
        let mut body = Vec::with_capacity(records.iter().map(|r| r.len() + 1).sum::<usize>() + 16);
        body.extend_from_slice(b"{\"Records\":[");
        for (i, record) in records.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(record.as_bytes());
        }
        body.extend_from_slice(b"]}");
        Ok(body)
    }
}

/// What a request asks of the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Asset(&'static str, &'static str),
    Session,
    SignIn,
    SignOut,
    Kms,
    Iam,
    Audit,
    NotFound,
    MethodNotAllowed,
}

impl Route {
    fn of(method: &http::Method, path: &str) -> Route {
        use http::Method;
        let get = method == Method::GET || method == Method::HEAD;
        let post = method == Method::POST;
        let only = |wanted: bool, route| {
            if wanted {
                route
            } else {
                Route::MethodNotAllowed
            }
        };
        if let Some(&(_, content, kind)) = ASSETS.iter().find(|(asset, ..)| *asset == path) {
            return only(get, Route::Asset(content, kind));
        }
        match path {
            "/api/session" => only(get, Route::Session),
            "/api/sign-in" => only(post, Route::SignIn),
            "/api/sign-out" => only(post, Route::SignOut),
            "/api/kms" => only(post, Route::Kms),
            "/api/iam" => only(post, Route::Iam),
            "/api/audit" => only(get, Route::Audit),
            _ => Route::NotFound,
        }
    }

    fn is_api(self) -> bool {
        !matches!(self, Route::Asset(..) | Route::NotFound)
    }
}

impl super::http::HttpDoor for ConsoleDoor {
    const NAME: &'static str = "console";

    async fn handle(
        self: Arc<Self>,
        request: http::Request<Incoming>,
        peer: SocketAddr,
        secure: bool,
    ) -> http::Response<Full<Bytes>> {
        let (parts, body) = request.into_parts();
        let route = Route::of(&parts.method, parts.uri.path());
        let mut response = match route {
            Route::Asset(content, kind) => asset_response(content, kind),
            Route::NotFound => plain_error(404, "NotFound", "no such page"),
            Route::MethodNotAllowed => plain_error(405, "MethodNotAllowed", "method not allowed"),
            _ => match same_origin(&parts.headers, secure).and_then(|()| {
                if self.host_allowed(&parts.headers) {
                    Ok(())
                } else {
                    Err("the request's Host is not a name of this console")
                }
            }) {
                Err(why) => {
                    // A request from another site: refused before anything is read.
                    let call =
                        self.gateway
                            .begin(Door::Console, console_operation(route), Some(peer));
                    error_response(
                        &call.request_id,
                        call.refuse(csrf_refused(why), &parts.headers),
                    )
                }
                // The call runs to its end on a task of its own, whether or not its browser
                // waits for the answer (see the gRPC door's `Authenticated`).
                Ok(()) => {
                    let door = self.clone();
                    let running =
                        tokio::spawn(
                            async move { door.answer(route, parts, body, peer, secure).await },
                        );
                    match running.await {
                        Ok(answer) => answer,
                        Err(failed) => {
                            tracing::error!(%failed, "a console call's task failed");
                            plain_error(500, "InternalFailure", "the call failed")
                        }
                    }
                }
            },
        };
        secure_headers(&mut response, route.is_api(), secure);
        response
    }
}

impl ConsoleDoor {
    /// Reads a same-site request's body and answers it by its route.
    async fn answer(
        self: Arc<Self>,
        route: Route,
        parts: http::request::Parts,
        body: Incoming,
        peer: SocketAddr,
        secure: bool,
    ) -> http::Response<Full<Bytes>> {
        match aws::read_body(body, self.max_body).await {
            Err(refused) => {
                let call = self
                    .gateway
                    .begin(Door::Console, console_operation(route), Some(peer));
                error_response(&call.request_id, call.refuse(refused, &parts.headers))
            }
            Ok(body) => match route {
                Route::Session => match self.session(&parts.headers, secure) {
                    Ok(session) => json_response("", 200, describe(&session).to_string()),
                    Err(none) => error_response("", none.error()),
                },
                Route::SignIn => {
                    let mut call =
                        self.gateway
                            .begin(Door::Console, "signin:SignIn".to_owned(), Some(peer));
                    self.sign_in(&mut call, &parts.headers, &body, peer, secure)
                        .await
                }
                _ => self.session_call(route, &parts, body, peer, secure).await,
            },
        }
    }
}

/// The operation a console request is recorded as before it is read.
fn console_operation(route: Route) -> String {
    match route {
        Route::SignIn => "signin:SignIn",
        Route::SignOut => "signin:SignOut",
        Route::Audit => "audit:TailAuditLog",
        _ => super::auth_layer::UNKNOWN_OPERATION,
    }
    .to_owned()
}

/// Whether an `/api/` request comes from the console's own pages: it carries
/// [`CONSOLE_HEADER`], and its `Origin` and `Sec-Fetch-Site`, when sent, say so.
fn same_origin(headers: &http::HeaderMap, secure: bool) -> Result<(), &'static str> {
    if headers.get(CONSOLE_HEADER).map(|v| v.as_bytes()) != Some(b"1") {
        return Err("the request does not carry X-Keyhaven-Console: 1");
    }
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return Err("the browser says the request comes from another site");
    }
    if let Some(origin) = headers.get(http::header::ORIGIN) {
        let host = headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let scheme = if secure { "https" } else { "http" };
        if origin.to_str().ok() != Some(&format!("{scheme}://{host}")) {
            return Err("the request's Origin is not the console's");
        }
    }
    Ok(())
}

/// The session as the pages see it.
fn describe(session: &Session) -> serde_json::Value {
    serde_json::json!({
        "AccountId": session.account_id,
        "UserName": session.user_name,
        "Arn": session.arn,
        "Expires": session.expires,
        "CsrfToken": session.csrf_token.expose(),
    })
}

/// The console's cookie: `__Host-` over TLS (the browser then keeps it for this origin only).
fn cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-keyhaven-console"
    } else {
        "keyhaven-console"
    }
}

/// The session id the request's cookie carries: the cookie of the console's own name (the
/// `__Host-` one over TLS, which nothing but this origin can set), and only one of them (a
/// second, planted by a sibling site with a longer path, makes it none).
fn cookie(headers: &http::HeaderMap, secure: bool) -> Option<String> {
    let mut values = headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == cookie_name(secure))
        .map(|(_, value)| value);
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    Some(value.to_owned()).filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn set_cookie(
    response: &mut http::Response<Full<Bytes>>,
    value: &str,
    secure: bool,
    max_age: UnixSeconds,
) {
    let mut cookie = format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}",
        cookie_name(secure)
    );
    if secure {
        cookie.push_str("; Secure");
    }
    if let Ok(value) = http::HeaderValue::from_str(&cookie) {
        response
            .headers_mut()
            .insert(http::header::SET_COOKIE, value);
    }
}

/// One value of a URL query.
fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

fn json_response(
    request_id: &str,
    status: u16,
    body: impl Into<Bytes>,
) -> http::Response<Full<Bytes>> {
    let mut response = http::Response::new(Full::new(body.into()));
    *response.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    if let Ok(value) = http::HeaderValue::from_str(request_id)
        && !request_id.is_empty()
    {
        headers.insert(aws::REQUEST_ID_HEADER, value);
    }
    response
}

/// An error as the pages read it: `{"__type", "message"}`, with the HTTP status a browser
/// expects (401 signed out, 403 refused, 429 throttled).
fn error_response(request_id: &str, error: ApiError) -> http::Response<Full<Bytes>> {
    let status = match error.code {
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::ResourceExhausted => 429,
        _ => error.http_status(),
    };
    let body = serde_json::json!({"__type": error.aws_type(), "message": error.message});
    json_response(request_id, status, body.to_string())
}

fn plain_error(status: u16, kind: &str, message: &str) -> http::Response<Full<Bytes>> {
    let body = serde_json::json!({"__type": kind, "message": message});
    json_response("", status, body.to_string())
}

fn asset_response(content: &'static str, kind: &'static str) -> http::Response<Full<Bytes>> {
    let mut response = http::Response::new(Full::new(Bytes::from_static(content.as_bytes())));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(kind),
    );
    response
}

/// The headers every answer carries: the Content-Security-Policy and its companions.
fn secure_headers(response: &mut http::Response<Full<Bytes>>, api: bool, secure: bool) {
    use http::HeaderValue;
    let headers = response.headers_mut();
    let pairs: [(&str, &'static str); 6] = [
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cache-control", if api { "no-store" } else { "no-cache" }),
    ];
    for (name, value) in pairs {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if secure {
        headers.insert(
            "strict-transport-security",
            HeaderValue::from_static("max-age=31536000"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, http::HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn only_the_consoles_own_requests_pass() {
        let ok = headers(&[
            (CONSOLE_HEADER, "1"),
            ("host", "127.0.0.1:9"),
            ("origin", "http://127.0.0.1:9"),
        ]);
        assert_eq!(same_origin(&ok, false), Ok(()));
        assert!(
            same_origin(&ok, true).is_err(),
            "an http origin on a TLS console"
        );
        let no_header = headers(&[("host", "127.0.0.1:9")]);
        assert!(same_origin(&no_header, false).is_err());
        let other_origin = headers(&[
            (CONSOLE_HEADER, "1"),
            ("host", "127.0.0.1:9"),
            ("origin", "http://evil.example"),
        ]);
        assert!(same_origin(&other_origin, false).is_err());
        let cross_site = headers(&[(CONSOLE_HEADER, "1"), ("sec-fetch-site", "cross-site")]);
        assert!(same_origin(&cross_site, false).is_err());
    }

    #[test]
    fn the_cookie_is_read_by_name_and_shape() {
        let id = "ab".repeat(32);
        let plain = headers(&[("cookie", &format!("other=1; keyhaven-console={id}"))]);
        assert_eq!(cookie(&plain, false), Some(id.clone()));
        // Over TLS only the __Host- cookie counts: a plain one could be set by anyone on the
        // network or a sibling site.
        assert_eq!(cookie(&plain, true), None);
        let tls = headers(&[("cookie", &format!("__Host-keyhaven-console={id}"))]);
        assert_eq!(cookie(&tls, true), Some(id.clone()));
        assert_eq!(cookie(&tls, false), None);
        let planted = headers(&[(
            "cookie",
            &format!(
                "__Host-keyhaven-console={}; __Host-keyhaven-console={id}",
                "cd".repeat(32)
            ),
        )]);
        assert_eq!(
            cookie(&planted, true),
            None,
            "two of them: neither is trusted"
        );
        let odd = headers(&[("cookie", "keyhaven-console=../../etc")]);
        assert_eq!(cookie(&odd, false), None);
    }

    #[test]
    fn routes_take_only_their_method() {
        use http::Method;
        assert_eq!(Route::of(&Method::GET, "/api/kms"), Route::MethodNotAllowed);
        assert_eq!(Route::of(&Method::POST, "/api/kms"), Route::Kms);
        assert_eq!(Route::of(&Method::POST, "/"), Route::MethodNotAllowed);
        assert_eq!(Route::of(&Method::GET, "/etc/passwd"), Route::NotFound);
        for &(path, content, kind) in ASSETS {
            assert_eq!(Route::of(&Method::GET, path), Route::Asset(content, kind));
            assert_eq!(Route::of(&Method::POST, path), Route::MethodNotAllowed);
        }
    }
}
