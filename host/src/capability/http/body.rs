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
    /// Most time between two frames.
    between: Duration,
    idle: Pin<Box<Sleep>>,
    record: Arc<Mutex<OutboundRecord>>,
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
    ) -> Self {
        Self {
            incoming,
            mask,
            read: 0,
            limit: bounds.limit,
            deadline: Box::pin(tokio::time::sleep_until(bounds.deadline)),
            between: bounds.between,
            idle: Box::pin(tokio::time::sleep(bounds.between)),
            record,
            ended: false,
        }
    }

    fn fail(&mut self, error: Error) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.ended = true;
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
                    ready!(this.idle.as_mut().poll(cx));
                    return this.fail(Error::ConnectionReadTimeout);
                }
                Poll::Ready(frame) => frame,
            };
            let next = Instant::now() + this.between;
            this.idle.as_mut().reset(next);
            match frame {
                None => {
                    this.ended = true;
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
