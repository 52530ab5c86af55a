//! One call of a component's `wasi:http/incoming-handler.handle`: the request in, the response out, its body read
//! while the component writes it (wasmtime-wasi-http holds one chunk at a time, so the two must run together) and
//! never past the response limit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt as _, Full};
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::Proxy;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};

use crate::sandbox::GuestState;

/// A whole response: status, headers, and the body as the component wrote it.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// Why the component gave no whole response.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The call trapped (also after the response was set, or while its body was being written) or was stopped.
    Trap(wasmtime::Error),
    /// The handler returned without setting its `response-outparam`, or without finishing the body it set.
    NoResponse { body_started: bool },
    /// The handler set its `response-outparam` to an error.
    ErrorCode(ErrorCode),
    /// The body failed while being written (the component aborted it).
    Body,
    /// The body grew past the limit; reading stopped there.
    TooLarge { limit: usize },
}

/// Calls the component's handler with `request` and reads its response, the body up to `max_body` bytes.
///
/// # Errors
/// [`Failure`]: the trap, or what is missing from the response.
pub(crate) async fn handle(
    store: &mut Store<GuestState>,
    proxy: &Proxy,
    request: http::Request<Bytes>,
    max_body: usize,
) -> Result<Answer, Failure> {
    let scheme = if request.uri().scheme_str() == Some("http") { Scheme::Http } else { Scheme::Https };
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let (request, out) = {
        let state = store.data_mut();
        let mut view = state.caps.http_view(&mut state.table);
        let body = request.map(|body| Full::new(body).map_err(|never| -> ErrorCode { match never {} }));
        let request = view.new_incoming_request(scheme, body).map_err(Failure::Trap)?;
        (request, view.new_response_outparam(sender).map_err(Failure::Trap)?)
    };
    let body_started = AtomicBool::new(false);
    let read = async {
        let response = receiver.await.map_err(|_| Failure::NoResponse { body_started: false })?;
        let (parts, mut body) = response.map_err(Failure::ErrorCode)?.into_parts();
        body_started.store(true, Ordering::Relaxed);
        let mut bytes = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| Failure::Body)?;
            if let Ok(data) = frame.into_data() {
                if bytes.len() + data.len() > max_body {
                    return Err(Failure::TooLarge { limit: max_body });
                }
                bytes.extend_from_slice(&data);
            }
        }
        Ok(Answer { status: parts.status, headers: parts.headers, body: bytes.freeze() })
    };
    let call = proxy.wasi_http_incoming_handler().call_handle(&mut *store, request, out);
    let mut read = std::pin::pin!(read);
    let mut call = std::pin::pin!(call);
    tokio::select! {
        // The whole response came while the handler still runs: it may work on after answering, in its time.
        answer = &mut read => {
            let answer = answer?;
            call.await.map_err(Failure::Trap)?;
            Ok(answer)
        }
        called = &mut call => {
            called.map_err(Failure::Trap)?;
            // The handler returned: what it wrote is all there will be. A response or body it left unset and
            // undropped would be waited for forever, so it is read as far as it is now, and no further.
            match tokio::time::timeout(Duration::ZERO, read).await {
                Ok(answer) => answer,
                Err(_) => Err(Failure::NoResponse { body_started: body_started.load(Ordering::Relaxed) }),
            }
        }
    }
}
