//! `wasi:http/outgoing-handler`: requests a guest sends with an ordinary client (the `wasip2` bindings, `wstd`,
//! JavaScript's `fetch`), served by wasmtime-wasi-http's types and sent by keyward: checked against the egress
//! policy before anything leaves ([`policy`]), with the secrets the host injects ([`Injection`]) added on the way
//! out, over connections to checked addresses ([`client`]), the response masked of those secrets on the way back
//! ([`body`]), bounded, and audited, one line per request.
//!
//! Shared state ([`Outbound`]): the policy, the injections bound to their secrets, the pooled client (built at the
//! first request, so that a function that sends none parses no trust roots). Per instance ([`Instance`]): the
//! requests sent, in flight, and recorded, and the injected values fetched this invocation (each secret once).

mod body;
mod client;
pub(crate) mod policy;
mod route;
mod settings;

use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderValue, Request};
use http_body_util::BodyExt as _;
use rustls_pki_types::CertificateDer;
use secrecy::ExposeSecret as _;
use tracing::Instrument as _;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi_http::p2::bindings::http::{outgoing_handler, types};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttp, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks};
use zeroize::Zeroizing;

pub use route::{Routed, RoutedFault, Router, SentRequest};
#[cfg(feature = "cli")]
pub use settings::HttpFlags;
pub(crate) use settings::INJECT;
pub use settings::{Host, HostPattern, HttpSettings, Injection, Origin, Placeholder, Scheme};

use crate::logging::AUDIT_TARGET;
use crate::mask::{self, MaskStream, Masker};
use crate::secrets::{SecretSource, Session, User};
use client::{Client, ConnectError};
use policy::{Code, Policy, Refusal};

/// Most time from sending a request to its response's headers, unless the guest's request options say less (and
/// never past the invocation's deadline).
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30);
/// Most time between two frames of a response body, unless the guest's request options say less.
const BETWEEN_BYTES_TIMEOUT: Duration = Duration::from_secs(30);

/// One outgoing request, as its audit line and the invocation's records tell it: never a header value, a query
/// string or a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRecord {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The origin as the request named it (`https://api.example.com`).
    pub origin: String,
    /// The path, without the query string.
    pub path: String,
    /// The response's status, once it came.
    pub status: Option<u16>,
    /// Bytes of the response body the guest read (before masking).
    pub bytes: u64,
    /// Time to the response's headers (or to the failure).
    pub latency: Duration,
    /// The secrets injected into it, by name.
    pub injected: Vec<String>,
    /// `Ok`, or the `wasi:http` error the guest got.
    pub outcome: Result<(), String>,
    /// For a refused request: the rule that refused it.
    pub refused_by: Option<String>,
}

/// A secret bound to its origin when the settings were checked.
#[derive(Debug, Clone)]
pub(crate) struct Bound {
    /// The guest env var holding its ciphertext.
    pub(crate) name: String,
    pub(crate) injection: Injection,
    pub(crate) source: SecretSource,
}

/// The settings, checked: the injections bound to their secrets, the extra roots read.
#[derive(Debug)]
pub(crate) struct CheckedHttp {
    pub(crate) settings: HttpSettings,
    pub(crate) bound: Vec<Bound>,
    pub(crate) extra_roots: Vec<CertificateDer<'static>>,
    /// The stub host's routes, in place of the network.
    pub(crate) router: Option<Arc<dyn Router>>,
}

/// The shared state of outgoing HTTP.
#[derive(Debug)]
pub(crate) struct Outbound {
    policy: Policy,
    settings: HttpSettings,
    bound: Vec<Bound>,
    extra_roots: Vec<CertificateDer<'static>>,
    client: OnceLock<Result<Client, String>>,
    router: Option<Arc<dyn Router>>,
}

impl Outbound {
    pub(crate) fn new(checked: CheckedHttp) -> Self {
        let CheckedHttp { settings, bound, extra_roots, router } = checked;
        let policy = Policy::new(settings.allow.clone());
        Self { policy, settings, bound, extra_roots, client: OnceLock::new(), router }
    }

    /// The state of one store, fetching injected secrets through the invocation's `session`.
    pub(crate) fn instance(self: &Arc<Self>, session: Session) -> Instance {
        Instance {
            ctx: WasiHttpCtx::new(),
            hooks: Hooks {
                shared: self.clone(),
                session,
                asked: 0,
                in_flight: Arc::new(tokio::sync::Semaphore::new(self.settings.max_concurrent as usize)),
                records: Vec::new(),
                injected: self.bound.iter().map(|_| tokio::sync::OnceCell::new()).collect(),
                ended: tokio::sync::watch::channel(false).0,
            },
        }
    }

    fn client(&self) -> Result<Client, Error> {
        let built = self.client.get_or_init(|| Client::new(&self.extra_roots).map_err(|e| e.to_string()));
        built.clone().map_err(|e| Error::InternalError(Some(format!("keyward: no TLS client: {e}"))))
    }
}

/// The capability's state in one store.
pub(crate) struct Instance {
    ctx: WasiHttpCtx,
    hooks: Hooks,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance").field("asked", &self.hooks.asked).finish_non_exhaustive()
    }
}

impl Instance {
    /// What wasi:http's host functions reach: this state and the store's resource table.
    pub(crate) fn view<'a>(&'a mut self, table: &'a mut ResourceTable) -> WasiHttpCtxView<'a> {
        WasiHttpCtxView { ctx: &mut self.ctx, table, hooks: &mut self.hooks }
    }

    /// The invocation ends: requests still in flight are cancelled (they fetch nothing more, send nothing more),
    /// and its requests, in order, are audited one line each (in the invocation's span, which carries the request
    /// id) and taken out. A request asked for past the quota costs no record: one line counts them.
    pub(crate) fn finish(&mut self) -> Vec<OutboundRecord> {
        let hooks = &mut self.hooks;
        hooks.ended.send_replace(true);
        hooks.in_flight.close();
        let records: Vec<OutboundRecord> = hooks
            .records
            .drain(..)
            .map(|record| record.lock().unwrap_or_else(PoisonError::into_inner).clone())
            .collect();
        records.iter().for_each(audit);
        let over = hooks.asked.saturating_sub(records.len() as u64);
        if over > 0 {
            let limit = hooks.shared.settings.max_requests;
            tracing::warn!(target: AUDIT_TARGET, refused = over, limit, "outbound requests refused past KEYWARD_MAX_OUTBOUND_REQUESTS, unrecorded");
        }
        records
    }
}

/// A secret's header value, made once per invocation: held in the log masker's set while the instance lives, and
/// the masker of every form of it a response could echo.
struct Injected {
    /// The secret, the header value, and for Basic auth the base64 of `user:secret`: what a response may echo.
    forms: [Zeroizing<Vec<u8>>; 3],
    masker: Arc<Masker>,
    _held: [mask::Held; 3],
}

impl Injected {
    /// The header value of `injection` for `secret`.
    ///
    /// # Errors
    /// A secret that cannot be in a header value (a line break, a control character), or that is too short to be
    /// masked, in words that do not quote it.
    fn new(injection: &Injection, secret: &[u8]) -> Result<Self, String> {
        // A response could echo it, and a shorter secret is not masked (it would mask ordinary text).
        if secret.len() < mask::MIN_MASKED_LEN {
            return Err(format!(
                "it is shorter than {} bytes, too short to be masked in responses",
                mask::MIN_MASKED_LEN
            ));
        }
        let basic = match &injection.placeholder {
            Placeholder::Secret => Zeroizing::new(Vec::new()),
            Placeholder::Basic(user) => {
                let mut pair = Zeroizing::new(format!("{user}:").into_bytes());
                pair.extend_from_slice(secret);
                Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&*pair).into_bytes())
            }
        };
        let carried = if basic.is_empty() { secret } else { &basic[..] };
        let mut value = Zeroizing::new(injection.prefix.clone().into_bytes());
        value.extend_from_slice(carried);
        value.extend_from_slice(injection.suffix.as_bytes());
        if HeaderValue::from_bytes(&value).is_err() {
            return Err("its value cannot be in a header (it holds a line break or a control character)".into());
        }
        let forms = [Zeroizing::new(secret.to_vec()), value, basic];
        let masker = Arc::new(Masker::new(forms.iter().map(|form| &form[..])));
        let held = forms.each_ref().map(|form| mask::hold(form));
        Ok(Self { forms, masker, _held: held })
    }

    fn header_value(&self) -> HeaderValue {
        let mut value = HeaderValue::from_bytes(&self.forms[1]).unwrap_or_else(|_| HeaderValue::from_static(""));
        // HTTP/2 sends a sensitive value without adding it to the compression table.
        value.set_sensitive(true);
        value
    }
}

/// What a request's future needs of the instance, which it outlives.
struct Hooks {
    shared: Arc<Outbound>,
    session: Session,
    /// Requests asked for, refused ones too: the quota counts them all.
    asked: u64,
    /// Held by a request from its sending to its body's end.
    in_flight: Arc<tokio::sync::Semaphore>,
    /// One per request, up to the quota and the one that went past it.
    records: Vec<Arc<Mutex<OutboundRecord>>>,
    /// Each bound secret's value (as [`Outbound::bound`] orders them), fetched at its first use this invocation.
    injected: Arc<[tokio::sync::OnceCell<Arc<Injected>>]>,
    /// Set when the invocation ends: its requests still in flight stop.
    ended: tokio::sync::watch::Sender<bool>,
}

/// What a request's future resolves to, in wasmtime-wasi-http's terms.
type Sent = Result<(http::Response<WasiBody>, Box<dyn Future<Output = Result<(), Error>> + Send>), Error>;

impl Hooks {
    fn record(&mut self, record: OutboundRecord) -> Arc<Mutex<OutboundRecord>> {
        let record = Arc::new(Mutex::new(record));
        self.records.push(record.clone());
        record
    }

    /// Refuses a request before anything is sent: recorded (within the quota), and the guest gets `error`.
    fn refuse(
        &mut self,
        mut record: OutboundRecord,
        rule: String,
        error: Error,
    ) -> Box<dyn Future<Output = Sent> + Send> {
        record.outcome = Err(error.to_string());
        record.refused_by = Some(rule);
        if self.records.len() as u64 <= u64::from(self.shared.settings.max_requests) {
            self.record(record);
        }
        Box::new(std::future::ready(Err(error)))
    }
}

impl WasiHttpHooks for Hooks {
    /// Every scheme reaches [`Policy::check`], which refuses all but http and https with an audit line
    /// (wasmtime-wasi-http would refuse the others before keyward sees them, unaudited).
    fn is_supported_scheme(&mut self, _: &http::uri::Scheme) -> bool {
        true
    }

    fn send_request(
        &mut self,
        mut request: Request<WasiBody>,
        options: Option<RequestOptions>,
        _response_errors: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = Sent> + Send> {
        let started = Instant::now();
        self.asked += 1;
        let uri = request.uri();
        // Host and port only: an authority's user part (refused below) must not reach the audit.
        let port = uri.port().map(|p| format!(":{p}")).unwrap_or_default();
        let mut record = OutboundRecord {
            method: request.method().to_string(),
            origin: format!("{}://{}{port}", uri.scheme_str().unwrap_or_default(), uri.host().unwrap_or_default()),
            path: uri.path().to_string(),
            status: None,
            bytes: 0,
            latency: Duration::ZERO,
            injected: Vec::new(),
            outcome: Err(UNFINISHED.into()),
            refused_by: None,
        };
        let settings = &self.shared.settings;
        // Counted before anything else: a guest asking again and again for what is refused is bounded too.
        if self.asked > u64::from(settings.max_requests) {
            let rule = format!(
                "KEYWARD_MAX_OUTBOUND_REQUESTS: this invocation has asked for its {} requests",
                settings.max_requests
            );
            return self.refuse(record, rule.clone(), Error::InternalError(Some(rule)));
        }
        let target = match self.shared.policy.check(&request) {
            Ok(target) => target,
            Err(Refusal { origin, rule, code }) => {
                record.origin = origin;
                let error = match code {
                    Code::Denied => Error::HttpRequestDenied,
                    Code::UriInvalid => Error::HttpRequestUriInvalid,
                };
                return self.refuse(record, rule, error);
            }
        };
        record.origin = target.origin.to_string();
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            let rule = format!("KEYWARD_MAX_CONCURRENT_OUTBOUND: {} requests are in flight", settings.max_concurrent);
            return self.refuse(record, rule, Error::ConnectionLimitReached);
        };
        let Some(deadline) = self.session.deadline() else {
            let rule = "a request before the invocation started (in a start function)".to_string();
            return self.refuse(record, rule.clone(), Error::InternalError(Some(rule)));
        };
        let client = match self.shared.client() {
            Ok(client) => client,
            Err(e) => return self.refuse(record, "no TLS client".into(), e),
        };
        let bound: Vec<usize> =
            (0..self.shared.bound.len()).filter(|&i| self.shared.bound[i].injection.origin == target.origin).collect();
        record.injected = bound.iter().map(|&i| self.shared.bound[i].name.clone()).collect();
        // hyper sets Host from the URI (the policy checked that the guest's agreed), once.
        request.headers_mut().remove(http::header::HOST);
        if !bound.is_empty() {
            // A response is masked as it streams, which only works on the bytes as sent: no compression (a
            // gzipped echo would hide the secret from the masker), no ranges (a slice of it).
            request.headers_mut().insert(http::header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
            request.headers_mut().remove(http::header::RANGE);
            request.headers_mut().remove(http::header::TE);
        }
        let record = self.record(record);
        let (shared, session, injected) = (self.shared.clone(), self.session.clone(), self.injected.clone());
        let mut ended = self.ended.subscribe();
        let options = options.unwrap_or_default();
        let first_byte = options.first_byte_timeout.unwrap_or(FIRST_BYTE_TIMEOUT).min(FIRST_BYTE_TIMEOUT);
        let between = options.between_bytes_timeout.unwrap_or(BETWEEN_BYTES_TIMEOUT).min(BETWEEN_BYTES_TIMEOUT);
        let deadline = tokio::time::Instant::from_std(deadline);
        let limit = shared.settings.max_response_bytes;
        let send = async move {
            let sent = async {
                let mut values = Vec::new();
                for &i in &bound {
                    let value = injection(&shared, &session, &injected, i).await?;
                    // Replaces whatever the guest set under that name: never joined to it.
                    request.headers_mut().insert(shared.bound[i].injection.header.clone(), value.header_value());
                    values.push(value);
                }
                let response = match &shared.router {
                    None => send(&client, request, first_byte).await?,
                    Some(router) => {
                        let injected = bound.iter().map(|&i| &shared.bound[i]).collect::<Vec<_>>();
                        routed(router.as_ref(), &client, request, &injected, first_byte).await?
                    }
                };
                Ok::<_, Error>((response, values))
            };
            let sent = async {
                tokio::select! {
                    sent = sent => sent,
                    _ = ended.wait_for(|ended| *ended) => Err(Error::InternalError(Some(UNFINISHED.into()))),
                }
            };
            let outcome = tokio::time::timeout_at(deadline, sent).await.unwrap_or(Err(Error::HttpResponseTimeout));
            let mut held = record.lock().unwrap_or_else(PoisonError::into_inner);
            held.latency = started.elapsed();
            let (response, values) = match outcome {
                Ok(sent) => sent,
                Err(error) => {
                    held.outcome = Err(error.to_string());
                    if let Error::DestinationIpProhibited = error {
                        held.refused_by = Some("a host name may not resolve to an internal address".into());
                    }
                    return Err(error);
                }
            };
            held.status = Some(response.status().as_u16());
            let (mut parts, incoming) = response.into_parts();
            let masker = match values.as_slice() {
                [] => None,
                [one] => Some(one.masker.clone()),
                many => Some(Arc::new(Masker::new(many.iter().flat_map(|v| v.forms.iter().map(|f| &f[..]))))),
            };
            if let Some(masker) = &masker {
                if let Err(why) = maskable(&parts) {
                    held.outcome = Err(why.to_string());
                    return Err(why);
                }
                mask_headers(&mut parts.headers, masker, &values);
            }
            held.outcome = Ok(());
            drop(held);
            let body = body::ResponseBody::new(
                incoming,
                masker.map(MaskStream::new),
                body::Bounds { limit, deadline, between },
                record,
                permit,
            );
            let io: Box<dyn Future<Output = Result<(), Error>> + Send> = Box::new(std::future::ready(Ok(())));
            Ok((http::Response::from_parts(parts, body.boxed_unsync()), io))
        };
        Box::new(send.instrument(tracing::Span::current()))
    }
}

/// Sends `request` over the network, waiting at most `first_byte` for the response's headers.
async fn send(
    client: &Client,
    request: Request<WasiBody>,
    first_byte: Duration,
) -> Result<http::Response<WasiBody>, Error> {
    let response = tokio::time::timeout(first_byte, client.send(request))
        .await
        .map_err(|_| Error::ConnectionReadTimeout)?
        .map_err(|e| client_error(&e))?;
    Ok(response.map(|body| body.map_err(|e| hyper_error(&e)).boxed_unsync()))
}

/// Hands `request` to the stub host's router (its body read whole, its injected values shown as their names), and
/// does what it says.
async fn routed(
    router: &dyn Router,
    client: &Client,
    request: Request<WasiBody>,
    injected: &[&Bound],
    first_byte: Duration,
) -> Result<http::Response<WasiBody>, Error> {
    let (mut parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| {
            let shown = match injected.iter().find(|bound| bound.injection.header == name) {
                Some(Bound { name, injection, .. }) => {
                    let placeholder = match &injection.placeholder {
                        Placeholder::Secret => format!("{{{name}}}"),
                        Placeholder::Basic(user) => format!("{{basic:{user}:{name}}}"),
                    };
                    format!("{}{placeholder}{}", injection.prefix, injection.suffix)
                }
                None => String::from_utf8_lossy(value.as_bytes()).into_owned(),
            };
            (name.as_str().to_string(), shown)
        })
        .collect();
    let sent =
        SentRequest { method: parts.method.to_string(), url: parts.uri.to_string(), headers, body: body.to_vec() };
    let full = |bytes: Bytes| http_body_util::Full::new(bytes).map_err(|never| match never {}).boxed_unsync();
    match router.route(sent) {
        Routed::Respond(response) => Ok(response.map(full)),
        Routed::Fail(fault) => Err(match fault {
            RoutedFault::Refused => Error::ConnectionRefused,
            RoutedFault::Timeout => Error::ConnectionTimeout,
            RoutedFault::Tls => Error::TlsCertificateError,
            RoutedFault::Reset => Error::ConnectionTerminated,
        }),
        Routed::Forward(origin) => {
            let mut uri = http::uri::Parts::from(origin);
            uri.path_and_query = parts.uri.path_and_query().cloned();
            parts.uri = http::Uri::from_parts(uri).map_err(|_| Error::HttpRequestUriInvalid)?;
            send(client, Request::from_parts(parts, full(body)), first_byte).await
        }
    }
}

/// The value of the bound secret `i` for this invocation: fetched through the session at its first use (the gate,
/// cache, quota and audit of every secret), then reused; two requests at once fetch it once.
async fn injection(
    shared: &Outbound,
    session: &Session,
    injected: &[tokio::sync::OnceCell<Arc<Injected>>],
    i: usize,
) -> Result<Arc<Injected>, Error> {
    let bound = &shared.bound[i];
    let fail = |why: String| {
        Error::InternalError(Some(format!(
            "keyward: cannot inject {} into requests to {}: {why}",
            bound.name, bound.injection.origin
        )))
    };
    let fetch = || async {
        let (plaintext, _) = match session.fetch(&bound.name, &bound.source, User::Host).await {
            Err(trap) => return Err(fail(trap.to_string())),
            Ok(Err(refused)) => return Err(fail(refused.to_string())),
            Ok(Ok(opened)) => opened,
        };
        Ok(Arc::new(Injected::new(&bound.injection, plaintext.expose_secret()).map_err(fail)?))
    };
    injected[i].get_or_try_init(fetch).await.cloned()
}

/// What a request that did not finish is recorded as (and the guest told, when its invocation ends first).
const UNFINISHED: &str =
    "keyward: the request did not finish (the guest dropped it, its body failed, or its invocation ended first)";

/// Whether a response to a request carrying an injected secret can be masked as it streams: its bytes are the
/// bytes the origin sent (not compressed, whatever it was asked), and whole (not a range).
fn maskable(response: &http::response::Parts) -> Result<(), Error> {
    // Every value of each header, every coding in a value: a second header line must not slip a gzip past.
    let codings = |name| {
        response
            .headers
            .get_all(name)
            .into_iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
    };
    let named = |coding: &[u8]| Some(String::from_utf8_lossy(coding).into_owned());
    if let Some(coding) = codings(http::header::CONTENT_ENCODING).find(|c| !c.eq_ignore_ascii_case(b"identity")) {
        return Err(Error::HttpResponseContentCoding(named(coding)));
    }
    // hyper undoes `chunked` only: any other transfer coding would reach the guest as the server encoded it.
    if let Some(coding) = codings(http::header::TRANSFER_ENCODING).find(|c| !c.eq_ignore_ascii_case(b"chunked")) {
        return Err(Error::HttpResponseTransferCoding(named(coding)));
    }
    if response.status == http::StatusCode::PARTIAL_CONTENT {
        return Err(Error::HttpResponseIncomplete);
    }
    Ok(())
}

/// Masks every response header: a value holding a form of an injected secret is masked; a name holding one drops
/// its header (names arrive lower-cased, so they are compared without case). The length no longer holds once the
/// body is masked.
fn mask_headers(headers: &mut http::HeaderMap, masker: &Masker, injected: &[Arc<Injected>]) {
    headers.remove(http::header::CONTENT_LENGTH);
    let forms: Vec<Zeroizing<Vec<u8>>> = injected
        .iter()
        .flat_map(|i| i.forms.iter())
        .filter(|form| form.len() >= mask::MIN_MASKED_LEN)
        .map(|form| Zeroizing::new(form.to_ascii_lowercase()))
        .collect();
    let named: Vec<http::HeaderName> = headers
        .keys()
        .filter(|name| {
            let name = name.as_str().as_bytes();
            masker.finds(name) || forms.iter().any(|form| name.windows(form.len()).any(|w| w == &form[..]))
        })
        .cloned()
        .collect();
    for name in named {
        headers.remove(name);
    }
    for value in headers.values_mut() {
        if let std::borrow::Cow::Owned(masked) = masker.bytes(value.as_bytes()) {
            *value = HeaderValue::from_bytes(&masked).unwrap_or_else(|_| HeaderValue::from_static(mask::MASK));
        }
    }
}

/// The wasi:http error of a failed send.
fn client_error(error: &hyper_util::client::legacy::Error) -> Error {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if let Some(connect) = cause.downcast_ref::<ConnectError>() {
            tracing::debug!(error = %connect, "outbound connection failed");
            return match connect {
                ConnectError::Prohibited { .. } => Error::DestinationIpProhibited,
                ConnectError::Dns { reason, .. } => Error::DnsError { rcode: Some(reason.clone()), info_code: None },
                ConnectError::Timeout { .. } => Error::ConnectionTimeout,
                ConnectError::Refused { .. } => Error::ConnectionRefused,
            };
        }
        if let Some(tls) = cause.downcast_ref::<rustls::Error>() {
            return match tls {
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
                    Error::TlsCertificateError
                }
                rustls::Error::AlertReceived(alert) => Error::TlsAlertReceived {
                    alert_id: Some(u8::from(*alert)),
                    alert_message: Some(format!("{alert:?}")),
                },
                _ => Error::TlsProtocolError,
            };
        }
        if let Some(hyper) = cause.downcast_ref::<hyper::Error>() {
            return hyper_error(hyper);
        }
        // An io::Error's `source` skips the error it wraps (rustls's, from the handshake, wrapped twice over by
        // hyper-rustls): step into it instead.
        source = match cause.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => cause.source(),
        };
    }
    if error.is_connect() { Error::ConnectionRefused } else { Error::HttpProtocolError }
}

/// The wasi:http error of a failed exchange.
fn hyper_error(error: &hyper::Error) -> Error {
    if error.is_timeout() {
        Error::HttpResponseTimeout
    } else if error.is_incomplete_message() {
        Error::HttpResponseIncomplete
    } else if error.is_closed() || error.is_canceled() {
        Error::ConnectionTerminated
    } else {
        let reset = std::error::Error::source(error)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionReset);
        if reset { Error::ConnectionTerminated } else { Error::HttpProtocolError }
    }
}

/// One line per request on the `keyward::audit` target: method, origin, path (no query), status, bytes, latency,
/// the secrets injected (names), and for a refusal its rule.
fn audit(record: &OutboundRecord) {
    let OutboundRecord { method, origin, path, status, bytes, latency, injected, outcome, refused_by } = record;
    let status = status.map_or_else(|| "-".to_string(), |s| s.to_string());
    let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    let injected = injected.join(",");
    match (outcome, refused_by) {
        (Ok(()), _) => tracing::info!(
            target: AUDIT_TARGET, method, origin, path, status, bytes, latency_us, injected, outcome = "ok",
            "outbound request"
        ),
        (Err(error), Some(rule)) => tracing::warn!(
            target: AUDIT_TARGET, method, origin, path, injected, outcome = "refused", error, rule,
            "outbound request refused"
        ),
        (Err(error), None) => tracing::warn!(
            target: AUDIT_TARGET, method, origin, path, status, bytes, latency_us, injected, outcome = "failed",
            error, "outbound request"
        ),
    }
}

/// Links `wasi:http/outgoing-handler`.
pub(crate) fn add_outgoing_handler<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> WasiHttpCtxView<'_>,
) -> wasmtime::Result<()> {
    outgoing_handler::add_to_linker::<T, WasiHttp>(linker, get)
}

/// Links `wasi:http/types`.
pub(crate) fn add_types<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> WasiHttpCtxView<'_>,
) -> wasmtime::Result<()> {
    let options = wasmtime_wasi_http::p2::bindings::LinkOptions::default();
    types::add_to_linker::<T, WasiHttp>(linker, &options.into(), get)
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;

    use super::*;
    use crate::secrets::{LocalKey, SecretGate, SecretsSettings};

    /// The hooks on their own, as wasi:http's `handle` calls them (no component, no store).
    fn hooks(allow: &str, max_concurrent: u32) -> (Instance, Session) {
        let settings = HttpSettings { allow: vec![allow.parse().unwrap()], max_concurrent, ..HttpSettings::default() };
        let checked = CheckedHttp { settings, bound: Vec::new(), extra_roots: Vec::new(), router: None };
        let secrets = SecretsSettings::default().check(&Vec::new().into()).unwrap();
        let gate = Arc::new(SecretGate::new(Arc::new(LocalKey::generate().unwrap()), secrets));
        let session = gate.session();
        (Arc::new(Outbound::new(checked)).instance(session.clone()), session)
    }

    fn get(url: &str) -> Request<WasiBody> {
        let body = http_body_util::Empty::new().map_err(|never| match never {}).boxed_unsync();
        let uri: http::Uri = url.parse().unwrap();
        let host = uri.authority().unwrap().to_string();
        Request::get(uri).header(http::header::HOST, host).body(body).unwrap()
    }

    async fn error_of(sent: Box<dyn Future<Output = Sent> + Send>) -> String {
        match Pin::from(sent).await {
            Ok(_) => "a response".into(),
            Err(e) => e.to_string(),
        }
    }

    /// Before the invocation, nothing is sent; past the requests in flight, the next is refused at once; when the
    /// invocation ends, a request still waiting on its server stops, and its record says it did not finish.
    #[tokio::test]
    async fn requests_wait_for_their_invocation_share_its_bounds_and_end_with_it() {
        // A server that accepts and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let origin = format!("http://127.0.0.1:{port}");
        let url = format!("{origin}/wait");
        let (mut instance, session) = hooks(&origin, 1);

        let early = error_of(instance.hooks.send_request(get(&url), None, Box::new(async { Ok(()) }))).await;
        assert!(early.contains("before the invocation started"), "{early}");

        session.start(Instant::now() + Duration::from_secs(30));
        let waiting = Pin::from(instance.hooks.send_request(get(&url), None, Box::new(async { Ok(()) })));
        let waiting = tokio::spawn(waiting);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let second = error_of(instance.hooks.send_request(get(&url), None, Box::new(async { Ok(()) }))).await;
        assert_eq!(second, Error::ConnectionLimitReached.to_string());

        let records = instance.finish();
        let ended = match waiting.await.unwrap() {
            Ok(_) => "a response".to_string(),
            Err(e) => e.to_string(),
        };
        assert!(ended.contains("did not finish"), "{ended}");
        let outcomes: Vec<_> = records.iter().map(|r| (r.outcome.clone(), r.refused_by.is_some())).collect();
        assert_eq!(outcomes.len(), 3);
        assert!(outcomes[0].1 && outcomes[2].1, "the early and the concurrent one were refused: {outcomes:?}");
        assert_eq!(outcomes[1], (Err(UNFINISHED.to_string()), false), "the waiting one did not finish");
        silent.abort();
    }
}
