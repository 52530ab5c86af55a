//! A response body as the guest reads it: streamed frame by frame (the host holds one frame, never the body),
//! masked of the secrets injected into its request, bounded in bytes and in time.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use wasmtime_wasi_http::{Error, WasiBody};

use super::OutboundRecord;
use crate::mask::MaskStream;

/// The body of one response.
pub(crate) struct ResponseBody {
    incoming: WasiBody,
    /// `None` when nothing was injected into the request: nothing of the host's can come back.
    mask: Option<MaskStream>,
    read: u64,
    limit: u64,
    /// The invocation's end: a body still coming then fails.
    deadline: Pin<Box<Sleep>>,
    /// Most time the server may take for the next frame, counted from when the guest asks for it (a guest that
    /// reads slowly is not the server's fault).
    between: Duration,
    waiting: Option<Pin<Box<Sleep>>>,
    record: Arc<Mutex<OutboundRecord>>,
    /// The request's place among those in flight, until its body ends.
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ended: bool,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody").field("read", &self.read).finish_non_exhaustive()
    }
}

/// How a response body is bounded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    pub(crate) limit: u64,
    pub(crate) deadline: Instant,
    pub(crate) between: Duration,
}

impl ResponseBody {
    pub(crate) fn new(
        incoming: WasiBody,
        mask: Option<MaskStream>,
        bounds: Bounds,
        record: Arc<Mutex<OutboundRecord>>,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Self {
        Self {
            incoming,
            mask,
            read: 0,
            limit: bounds.limit,
            deadline: Box::pin(tokio::time::sleep_until(bounds.deadline)),
            between: bounds.between,
            waiting: None,
            record,
            permit: Some(permit),
            ended: false,
        }
    }

    fn end(&mut self) {
        self.ended = true;
        self.permit = None;
    }

    fn fail(&mut self, error: Error) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.end();
        self.record.lock().unwrap_or_else(PoisonError::into_inner).outcome = Err(error.to_string());
        Poll::Ready(Some(Err(error)))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        loop {
            if this.deadline.as_mut().poll(cx).is_ready() {
                return this.fail(Error::HttpResponseTimeout);
            }
            let frame = match Pin::new(&mut this.incoming).poll_frame(cx) {
                Poll::Pending => {
                    let between = this.between;
                    let waiting = this.waiting.get_or_insert_with(|| Box::pin(tokio::time::sleep(between)));
                    ready!(waiting.as_mut().poll(cx));
                    return this.fail(Error::ConnectionReadTimeout);
                }
                Poll::Ready(frame) => frame,
            };
            this.waiting = None;
            match frame {
                None => {
                    this.end();
                    let rest = this.mask.as_mut().map(MaskStream::finish).unwrap_or_default();
                    return Poll::Ready((!rest.is_empty()).then(|| Ok(Frame::data(rest.into()))));
                }
                Some(Err(e)) => return this.fail(e),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        this.read += data.len() as u64;
                        this.record.lock().unwrap_or_else(PoisonError::into_inner).bytes = this.read;
                        if this.read > this.limit {
                            return this.fail(Error::HttpResponseBodySize(Some(this.limit)));
                        }
                        let shown = match &mut this.mask {
                            None => data,
                            Some(mask) => Bytes::from(mask.push(&data)),
                        };
                        // A chunk held back whole (it may end in the start of a secret): read on.
                        if !shown.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(shown))));
                        }
                    }
                    // Trailers are dropped where a secret was injected: they could echo it, and no guest needs them.
                    Err(trailers) if this.mask.is_none() => return Poll::Ready(Some(Ok(trailers))),
                    Err(_) => {}
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        // Masking changes the length; without it the server's is right.
        match self.mask {
            None => self.incoming.size_hint(),
            Some(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;

    /// A body of the frames a channel sends.
    struct Channel(tokio::sync::mpsc::Receiver<Bytes>);

    impl Body for Channel {
        type Data = Bytes;
        type Error = Error;

        fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
            self.0.poll_recv(cx).map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
        }
    }

    fn record() -> Arc<Mutex<OutboundRecord>> {
        Arc::new(Mutex::new(OutboundRecord {
            method: "GET".into(),
            origin: "http://127.0.0.1".into(),
            path: "/".into(),
            status: Some(200),
            bytes: 0,
            latency: Duration::ZERO,
            injected: vec![],
            outcome: Ok(()),
            refused_by: None,
        }))
    }

    /// The time between frames is the server's: a guest that takes its time between reads gets the frames that
    /// came meanwhile, and a server that stalls is cut; the request leaves the in-flight count when its body ends.
    #[tokio::test]
    async fn the_server_is_timed_not_the_reader() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let in_flight = Arc::new(tokio::sync::Semaphore::new(1));
        let permit = in_flight.clone().try_acquire_owned().unwrap();
        let bounds = Bounds {
            limit: 1 << 20,
            deadline: Instant::now() + Duration::from_secs(10),
            between: Duration::from_millis(50),
        };
        let record = record();
        let mut body = ResponseBody::new(Channel(rx).boxed_unsync(), None, bounds, record.clone(), permit);
        tx.send(Bytes::from_static(b"first")).await.unwrap();
        assert_eq!(body.frame().await.unwrap().unwrap().into_data().unwrap(), "first");
        tx.send(Bytes::from_static(b"second")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(body.frame().await.unwrap().unwrap().into_data().unwrap(), "second", "a slow reader is fine");
        assert_eq!(in_flight.available_permits(), 0, "in flight while its body streams");
        let stalled = body.frame().await.unwrap().unwrap_err();
        assert!(matches!(stalled, Error::ConnectionReadTimeout), "{stalled}");
        assert_eq!(in_flight.available_permits(), 1);
        let record = record.lock().unwrap().clone();
        assert_eq!((record.bytes, record.outcome), (11, Err("connection read timeout".into())));
        drop(tx);
    }
}
