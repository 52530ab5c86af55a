//! A stub host for testing guests natively: the production sandbox, limits and WIT, with an ephemeral local key
//! instead of KMS, fault injection for the guest's error paths, and a log of every decrypt.
//!
//! ```no_run
//! use keyward::testing::StubHost;
//!
//! let host = StubHost::load("target/wasm32-wasip2/release/hello.wasm")?
//!     .secret("PASSWORD", "hunter2") // encrypted with an ephemeral local key; the env gets the ciphertext
//!     .context("function", "hello"); // stamped context, as in production
//! let resp = host.invoke(serde_json::json!({"rawPath": "/"}))?;
//! assert_eq!(resp["statusCode"], 200);
//! assert_eq!(host.decrypt_calls().len(), 1);
//! # Ok::<(), keyward::testing::StubError>(())
//! ```
//!
//! Outgoing HTTP runs under the same egress policy and injection as in production; requests the policy lets through
//! go to the network, unless a [`Route`] matches them: a canned response, a local server, or a fault. Every
//! request is recorded as it was sent ([`StubHost::sent_requests`]), an injected value shown as its secret's name:
//!
//! ```no_run
//! use keyward::testing::{Route, StubHost};
//!
//! let host = StubHost::load("target/wasm32-wasip2/release/api_client.wasm")?
//!     .secret("API_KEY", "sk_test_123")
//!     .allow_outbound("https://api.example.com")
//!     .inject("API_KEY", "https://api.example.com Authorization: Bearer {secret}")
//!     .route("https://api.example.com/v1/", Route::respond(200, r#"{"ok":true}"#));
//! host.invoke(serde_json::json!({}))?;
//! assert_eq!(host.sent_requests()[0].header_values("authorization"), ["Bearer {API_KEY}"]);
//! # Ok::<(), keyward::testing::StubError>(())
//! ```
//!
//! An HTTP component (one exporting `wasi:http/incoming-handler`, docs/http.md) is sent requests rather than events:
//!
//! ```no_run
//! use keyward::testing::StubHost;
//!
//! let host = StubHost::load("target/wasm32-wasip2/release/http_hello.wasm")?.secret("PASSWORD", "hunter2");
//! let response = host.request(http::Request::get("/hello").body(Vec::new()).unwrap())?;
//! assert_eq!(response.status(), 200);
//! # Ok::<(), keyward::testing::StubError>(())
//! ```
//!
//! `invoke` and `request` run on a runtime of their own; from async code, use [`StubHost::invoke_async`] and
//! [`StubHost::request_raw`].

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use zeroize::Zeroizing;

use crate::capability::http::{HttpSettings, Routed, Router};
pub use crate::capability::http::{RoutedFault as OutboundFault, SentRequest};
use crate::capability::keys::KeyOperationRecord;
use crate::capability::kms::{GuestPlaintext, KmsSettings};
use crate::secrets::{
    Backends, DecryptRecord, DecryptRequest, Decrypted, KmsBackend, KmsError, LocalKey, SecretsSettings,
};
use crate::{EncryptionContext, Host, HostError, HostSettings, Invocation, InvocationContext, InvokeError, Limits};

/// Runs `call` to its end on a runtime of its own: the blocking calls' way in.
fn block_on<T>(call: impl Future<Output = Result<T, StubError>>) -> Result<T, StubError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StubError::Stub(format!("cannot start a runtime: {e}")))?;
    runtime.block_on(call)
}

/// The function ARN stub invocations are told.
const STUB_ARN: &str = "arn:aws:lambda:local:000000000000:function:stub";

/// Why a stub-host call failed.
#[derive(Debug, thiserror::Error)]
pub enum StubError {
    /// The component (or the configuration) cannot be loaded.
    #[error(transparent)]
    Host(#[from] HostError),
    /// The invocation failed: the guest's error, a trap, a limit.
    #[error(transparent)]
    Invoke(#[from] InvokeError),
    /// The stub's own machinery failed (randomness, the async runtime, a bad context pair).
    #[error("stub host: {0}")]
    Stub(String),
}

/// A fault to inject into the next decrypt.
#[derive(Debug, Clone)]
enum Fault {
    Fail(KmsError),
    Delay(Duration),
}

/// The local key, with a queue of faults.
#[derive(Debug)]
struct StubKms {
    key: LocalKey,
    faults: Mutex<VecDeque<Fault>>,
}

#[async_trait]
impl KmsBackend for StubKms {
    async fn decrypt(&self, request: DecryptRequest<'_>) -> Result<Decrypted, KmsError> {
        let fault = self.faults.lock().unwrap_or_else(PoisonError::into_inner).pop_front();
        match fault {
            Some(Fault::Fail(error)) => return Err(error),
            Some(Fault::Delay(delay)) => tokio::time::sleep(delay).await,
            None => {}
        }
        KmsBackend::decrypt(&self.key, request).await
    }

    fn is_local_key(&self) -> bool {
        true
    }
}

/// What the stub host does with a request whose URL starts with a route's prefix.
#[derive(Debug, Clone)]
pub struct Route(Routed);

impl Route {
    /// Answers with `status` and `body` (add headers with [`Route::header`]).
    pub fn respond(status: u16, body: impl Into<Vec<u8>>) -> Self {
        let mut response = http::Response::new(bytes::Bytes::from(body.into()));
        *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
        Self(Routed::Respond(response))
    }

    /// A response header of a canned response (ignored by other routes).
    #[must_use]
    pub fn header(mut self, name: &str, value: &str) -> Self {
        if let Routed::Respond(response) = &mut self.0
            && let (Ok(name), Ok(value)) = (http::HeaderName::try_from(name), http::HeaderValue::try_from(value))
        {
            response.headers_mut().append(name, value);
        }
        self
    }

    /// Sends the request to `origin` (`http://127.0.0.1:8080`) instead: a local server of the test's. An origin
    /// that is not an absolute URL fails the requests it routes, as refused.
    pub fn forward(origin: &str) -> Self {
        match origin.parse::<http::Uri>() {
            Ok(uri) if uri.authority().is_some() => Self(Routed::Forward(uri)),
            _ => Self(Routed::Fail(OutboundFault::Refused)),
        }
    }

    /// Fails the request as the network would.
    pub fn fail(fault: OutboundFault) -> Self {
        Self(Routed::Fail(fault))
    }
}

/// The stub's routes, and the requests they saw.
#[derive(Debug, Default)]
struct Routes {
    routes: Mutex<Vec<(String, Route)>>,
    sent: Mutex<Vec<SentRequest>>,
}

impl Router for Routes {
    fn route(&self, request: SentRequest) -> Routed {
        let routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        // The longest prefix that matches, as a router picks the most specific path.
        let matched =
            routes.iter().filter(|(prefix, _)| request.url.starts_with(prefix.as_str())).max_by_key(|(p, _)| p.len());
        let routed = match matched {
            Some((_, Route(routed))) => routed.clone(),
            None => match request.url.parse::<http::Uri>() {
                // Unrouted: to the network, as in production.
                Ok(uri) => Routed::Forward(uri),
                Err(_) => Routed::Fail(OutboundFault::Refused),
            },
        };
        self.sent.lock().unwrap_or_else(PoisonError::into_inner).push(request);
        routed
    }
}

/// A guest under test. Configure it with the builder methods, then [`invoke`](StubHost::invoke) it.
#[derive(Debug)]
pub struct StubHost {
    /// The component, compiled once at load.
    compiled: Arc<Vec<u8>>,
    kms: Arc<StubKms>,
    secrets: Vec<(String, Zeroizing<Vec<u8>>)>,
    env: Vec<(String, String)>,
    context: Vec<(String, String)>,
    limits: Limits,
    /// Built at the first invocation, from the configuration then.
    host: OnceLock<Host>,
    plaintext: GuestPlaintext,
    calls: Mutex<Vec<DecryptRecord>>,
    key_operations: Mutex<Vec<KeyOperationRecord>>,
    /// Allowed origins and injections, as written (checked when the host is built).
    allow_outbound: Vec<String>,
    inject: Vec<(String, String)>,
    routes: Arc<Routes>,
}

impl StubHost {
    /// Loads and checks a built component (`.wasm`), as a production host would.
    ///
    /// # Errors
    /// [`StubError::Host`] naming what is wrong with the component.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, StubError> {
        let bytes = crate::sandbox::read_component(path.as_ref()).map_err(HostError::Load)?;
        let compiled = crate::precompile(&bytes, &crate::CompileTarget::default()).map_err(HostError::Load)?;
        let key = LocalKey::generate().map_err(|e| StubError::Stub(e.to_string()))?;
        Ok(Self {
            compiled: Arc::new(compiled),
            kms: Arc::new(StubKms { key, faults: Mutex::default() }),
            secrets: Vec::new(),
            env: Vec::new(),
            context: Vec::new(),
            limits: Limits::default().one_at_a_time(),
            host: OnceLock::new(),
            plaintext: GuestPlaintext::Allow,
            calls: Mutex::default(),
            key_operations: Mutex::default(),
            allow_outbound: Vec::new(),
            inject: Vec::new(),
            routes: Arc::default(),
        })
    }

    /// Gives the guest env var `name` the ciphertext of `plaintext`, encrypted with the stub's key under the
    /// stamped context (in place of what `name` held: the component is not compiled again).
    #[must_use]
    pub fn secret(mut self, name: impl Into<String>, plaintext: impl AsRef<[u8]>) -> Self {
        let name = name.into();
        self.forget(&name);
        self.secrets.push((name, Zeroizing::new(plaintext.as_ref().to_vec())));
        self.reset()
    }

    /// Gives the guest a plain env var (in place of what `name` held).
    #[must_use]
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let name = name.into();
        self.forget(&name);
        self.env.push((name, value.into()));
        self.reset()
    }

    /// Stamps `key=value` onto every decrypt, as `KEYWARD_KMS_CONTEXT` does in production.
    #[must_use]
    pub fn context(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.context.push((key.into(), value.into()));
        self.reset()
    }

    /// Runs the guest under these limits (default: production's).
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self.reset()
    }

    /// Denies the guest plaintext, as `KEYWARD_GUEST_PLAINTEXT=deny` does: a guest that imports `kms` fails at
    /// its first invocation ([`StubError::Host`]), one that uses key handles only runs.
    #[must_use]
    pub fn deny_plaintext(mut self) -> Self {
        self.plaintext = GuestPlaintext::Deny;
        self.reset()
    }

    /// Lets the guest send requests to `origin`, as `KEYWARD_ALLOW_OUTBOUND` does (`https://api.example.com`,
    /// `https://*.example.com`, `http://127.0.0.1:8080`). By default it reaches nothing.
    #[must_use]
    pub fn allow_outbound(mut self, origin: impl Into<String>) -> Self {
        self.allow_outbound.push(origin.into());
        self.reset()
    }

    /// Injects the secret `name` into requests, as `KEYWARD_INJECT_<NAME>` does: `spec` is
    /// `<origin> <Header-Name>: <template>`. The guest is denied that secret.
    #[must_use]
    pub fn inject(mut self, name: impl Into<String>, spec: impl Into<String>) -> Self {
        self.inject.push((name.into(), spec.into()));
        self.reset()
    }

    /// Routes the requests whose URL starts with `prefix` (`https://api.example.com/v1/`); the longest matching
    /// prefix wins (a route for a prefix already routed replaces it), and an unrouted request goes to the
    /// network. Routes apply after the egress policy and injection, as the network would see the request.
    #[must_use]
    pub fn route(self, prefix: impl Into<String>, route: Route) -> Self {
        let prefix = prefix.into();
        let mut routes = self.routes.routes.lock().unwrap_or_else(PoisonError::into_inner);
        routes.retain(|(p, _)| *p != prefix);
        routes.push((prefix, route));
        drop(routes);
        self
    }

    /// Every request the guest sent so far (the policy let it through), as sent: an injected header's value is its
    /// template with the secret's name in place of the secret (`Bearer {API_KEY}`).
    pub fn sent_requests(&self) -> Vec<SentRequest> {
        self.routes.sent.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Whatever the guest env var `name` held, secret or plain.
    fn forget(&mut self, name: &str) {
        self.secrets.retain(|(n, _)| n != name);
        self.env.retain(|(n, _)| n != name);
    }

    fn reset(mut self) -> Self {
        self.host = OnceLock::new();
        self
    }

    /// Encrypts `plaintext` with the stub's key under the stamped context plus `context`: a ciphertext the
    /// guest can decrypt by passing `context`.
    ///
    /// # Errors
    /// A bad context.
    pub fn encrypt(&self, plaintext: &[u8], context: &[(&str, &str)]) -> Result<Vec<u8>, StubError> {
        let stamped = self.stamped()?;
        let context = EncryptionContext::from_pairs(context.iter().copied())
            .and_then(|c| c.stamped_with(&stamped))
            .map_err(|e| StubError::Stub(e.to_string()))?;
        self.kms.key.encrypt(plaintext, &context).map_err(|e| StubError::Stub(e.to_string()))
    }

    /// Makes the next decrypt fail with `error` (`denied`, `invalid-ciphertext` or `unavailable`): a
    /// `kms.decrypt`, or the opening of a key handle (which the guest gets as the `keys` error of the same kind).
    pub fn fail_next_decrypt(&self, error: KmsError) {
        self.push_fault(Fault::Fail(error));
    }

    /// Makes the next decrypt take `delay` longer.
    pub fn delay_next_decrypt(&self, delay: Duration) {
        self.push_fault(Fault::Delay(delay));
    }

    fn push_fault(&self, fault: Fault) {
        self.kms.faults.lock().unwrap_or_else(PoisonError::into_inner).push_back(fault);
    }

    /// Every decrypt the guest asked for so far, in order (opening a key handle is one): ciphertext id, context,
    /// outcome; never plaintext.
    pub fn decrypt_calls(&self) -> Vec<DecryptRecord> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Every operation the guest asked of a key handle so far, in order: handle, key, operation, input length,
    /// outcome; never the input or the key.
    pub fn key_operations(&self) -> Vec<KeyOperationRecord> {
        self.key_operations.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Invokes the guest with `event`; returns its response, parsed.
    ///
    /// # Errors
    /// [`StubError::Invoke`] for a guest error, trap or limit; [`StubError::Host`] if the host cannot be built.
    pub fn invoke(&self, event: serde_json::Value) -> Result<serde_json::Value, StubError> {
        block_on(self.invoke_async(event))
    }

    /// [`invoke`](StubHost::invoke), for async tests.
    ///
    /// # Errors
    /// As [`invoke`](StubHost::invoke).
    pub async fn invoke_async(&self, event: serde_json::Value) -> Result<serde_json::Value, StubError> {
        let invocation = self.invoke_raw(&event.to_string()).await?;
        let response = invocation.result?;
        serde_json::from_str(&response).map_err(|e| StubError::Stub(format!("response is not JSON: {e}")))
    }

    /// Invokes the guest with a raw event and returns everything the host saw.
    ///
    /// # Errors
    /// [`StubError::Host`] if the host cannot be built.
    pub async fn invoke_raw(&self, event: &str) -> Result<Invocation, StubError> {
        let invocation = self.host()?.invoke(event, InvocationContext::local(STUB_ARN)).await;
        self.record(&invocation.decrypts, &invocation.key_operations);
        Ok(invocation)
    }

    /// Sends `request` to an HTTP component (one exporting `wasi:http/incoming-handler`), as `keyward serve` and
    /// Lambda mode hand it one; returns its response. A URI without scheme and authority (`/path?query`) is given
    /// `https://` and the `Host` header's authority (or `localhost`).
    ///
    /// # Errors
    /// [`StubError::Invoke`] for a guest error, trap or limit (the `500` a client would get is in
    /// [`StubHost::request_raw`]'s [`Invocation::failure_answer`]); [`StubError::Host`] if the host cannot be built;
    /// [`StubError::Stub`] for a URI that cannot be made absolute.
    pub fn request(&self, request: http::Request<impl Into<Bytes>>) -> Result<http::Response<Bytes>, StubError> {
        block_on(async { Ok(self.request_raw(request).await?.result?) })
    }

    /// [`request`](StubHost::request), returning everything the host saw.
    ///
    /// # Errors
    /// [`StubError::Host`] if the host cannot be built; [`StubError::Stub`] for a URI that cannot be made absolute.
    pub async fn request_raw(
        &self,
        request: http::Request<impl Into<Bytes>>,
    ) -> Result<Invocation<http::Response<Bytes>>, StubError> {
        let (mut parts, body) = request.into_parts();
        if parts.uri.scheme().is_none() {
            let authority = parts.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
            let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            parts.uri = format!("https://{authority}{path}")
                .parse()
                .map_err(|e| StubError::Stub(format!("request URI {path:?} on {authority:?}: {e}")))?;
        }
        let request = http::Request::from_parts(parts, body.into());
        let invocation = self.host()?.handle_request(request, InvocationContext::local(STUB_ARN)).await;
        self.record(&invocation.decrypts, &invocation.key_operations);
        Ok(invocation)
    }

    /// The host, built at the first invocation.
    fn host(&self) -> Result<&Host, StubError> {
        match self.host.get() {
            Some(host) => Ok(host),
            None => {
                let host = self.build()?;
                Ok(self.host.get_or_init(|| host))
            }
        }
    }

    /// Keeps an invocation's decrypts and key operations for [`StubHost::decrypt_calls`] and
    /// [`StubHost::key_operations`].
    fn record(&self, decrypts: &[DecryptRecord], operations: &[KeyOperationRecord]) {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner).extend(decrypts.iter().cloned());
        self.key_operations.lock().unwrap_or_else(PoisonError::into_inner).extend(operations.iter().cloned());
    }

    fn stamped(&self) -> Result<EncryptionContext, StubError> {
        EncryptionContext::from_pairs(self.context.iter().cloned()).map_err(|e| StubError::Stub(e.to_string()))
    }

    fn build(&self) -> Result<Host, StubError> {
        let stamped = self.stamped()?;
        let mut guest_env = self.env.clone();
        for (name, plaintext) in &self.secrets {
            let ciphertext = self.kms.key.encrypt(plaintext, &stamped).map_err(|e| StubError::Stub(e.to_string()))?;
            guest_env.push((name.clone(), base64::engine::general_purpose::STANDARD.encode(ciphertext)));
        }
        let settings = HostSettings {
            limits: self.limits.clone(),
            guest_env,
            secrets: SecretsSettings { stamped_context: stamped, ..SecretsSettings::default() },
            kms: KmsSettings { guest_plaintext: self.plaintext },
            http: self.http_settings()?,
            ..HostSettings::default()
        };
        Ok(Host::routed(&self.compiled, Backends::from(self.kms.clone()), settings, self.routes.clone())?)
    }

    fn http_settings(&self) -> Result<HttpSettings, StubError> {
        let fail = |what: &str, why: String| StubError::Stub(format!("{what}: {why}"));
        let allow = self.allow_outbound.iter().map(|o| o.parse().map_err(|why| fail("allow_outbound", why)));
        let inject = self.inject.iter().map(|(name, spec)| {
            spec.parse().map(|injection| (name.clone(), injection)).map_err(|why| fail(&format!("inject {name}"), why))
        });
        Ok(HttpSettings {
            allow: allow.collect::<Result<_, _>>()?,
            inject: inject.collect::<Result<_, _>>()?,
            ..HttpSettings::default()
        })
    }
}
