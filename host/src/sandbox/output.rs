//! Guest stdout and stderr: kept in memory up to a limit, then written to the host log line by line, tagged with
//! the invocation's request id. Output past the limit is counted and dropped, and the guest never sees an error
//! for it (a Rust guest would panic on a failed `println!`).

use std::cell::LazyCell;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use crate::mask::Masker;

/// How many bytes a guest may write in one `write` call (the WASI write budget).
const WRITE_BUDGET: usize = 64 * 1024;
/// Bytes kept past the limit, unshown, so that a secret straddling the limit is still seen whole by the masker (a
/// KMS plaintext is at most 4 KiB; its longest masked form, JSON-escaped twice, 12 bytes a byte at most).
const LOOKAHEAD: usize = 64 * 1024;

#[derive(Debug, Default)]
struct Captured {
    bytes: Vec<u8>,
    dropped: usize,
}

/// One captured stream. Clones share the buffer.
#[derive(Debug, Clone)]
pub(crate) struct GuestOutput {
    name: &'static str,
    limit: usize,
    captured: Arc<Mutex<Captured>>,
}

impl GuestOutput {
    pub(crate) fn new(name: &'static str, limit: usize) -> Self {
        Self { name, limit, captured: Arc::default() }
    }

    fn append(&self, bytes: &[u8]) {
        let mut captured = self.captured.lock().unwrap_or_else(PoisonError::into_inner);
        let room = (self.limit + LOOKAHEAD).saturating_sub(captured.bytes.len());
        let kept = bytes.len().min(room);
        captured.bytes.extend_from_slice(&bytes[..kept]);
        captured.dropped += bytes.len() - kept;
    }

    /// Writes what was captured to the log (in the caller's span, which carries the request id), with the
    /// invocation's secrets masked, and empties it.
    pub(crate) fn flush_to_log(&self, masker: &LazyCell<Masker, impl FnOnce() -> Masker>) {
        let captured = std::mem::take(&mut *self.captured.lock().unwrap_or_else(PoisonError::into_inner));
        if captured.bytes.is_empty() && captured.dropped == 0 {
            return;
        }
        // Shown: the first `limit` bytes, or fewer if a masked form could run past what was kept.
        let mut window = self.limit.min(captured.bytes.len());
        if captured.dropped > 0 {
            window = window.min(captured.bytes.len().saturating_sub(masker.longest_form()));
        }
        for line in String::from_utf8_lossy(&masker.bytes_within(&captured.bytes, window)).lines() {
            let line = crate::error::one_line(line);
            tracing::info!(target: "keyward::guest", stream = self.name, "{line}");
        }
        let dropped = captured.dropped + (captured.bytes.len() - window);
        if dropped > 0 {
            tracing::warn!(
                target: "keyward::guest", stream = self.name, dropped_bytes = dropped, limit = self.limit,
                "guest output over the limit was dropped"
            );
        }
    }

    #[cfg(test)]
    fn contents(&self) -> (Vec<u8>, usize) {
        let captured = self.captured.lock().unwrap_or_else(PoisonError::into_inner);
        (captured.bytes.clone(), captured.dropped)
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_BUDGET)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_limit_and_a_lookahead_and_counts_the_rest() {
        let mut out = GuestOutput::new("stdout", 10);
        out.write(bytes::Bytes::from(vec![b'a'; 10 + LOOKAHEAD])).unwrap();
        out.write(bytes::Bytes::from_static(b"789abcdef")).unwrap();
        let (kept, dropped) = out.contents();
        assert_eq!((kept.len(), dropped), (10 + LOOKAHEAD, 9));
        out.flush_to_log(&LazyCell::new(Masker::default));
        assert_eq!(out.contents(), (Vec::new(), 0));
    }

    #[test]
    fn a_secret_straddling_the_limit_is_masked_whole_and_nothing_past_it_shown() {
        let masker = Masker::new([b"Zq9-SECRET-value-0123456789".as_slice()]);
        let mut printed = vec![b'A'; 100 - 20];
        printed.extend_from_slice(b"Zq9-SECRET-value-0123456789 and more after it");
        let shown = masker.bytes_within(&printed, 100);
        assert!(shown.ends_with(b"AAAA[REDACTED]"), "{}", String::from_utf8_lossy(&shown));
    }
}
