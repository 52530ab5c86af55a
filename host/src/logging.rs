//! The host's log: `tracing` records, each masked with every plaintext the process holds ([`held_masker`]) before
//! it is written, whatever wrote it, to stderr. In Lambda mode an invocation's records are held back while it runs
//! without waiting, and written as soon as it waits or once its outcome is delivered ([`hold_back`]): the caller does
//! not wait for the log, and no record waits longer than the invocation's next wait.

use std::cell::RefCell;
use std::future::Future;
use std::io::Write as _;

use crate::mask::held_masker;

/// The target of audit lines: one per decrypt, key opened and key operation.
pub const AUDIT_TARGET: &str = "keyward::audit";

/// Most bytes of records one [`hold_back`] holds; past it, those held are written and the rest as they come. The
/// guest's output is bounded ([`Limits::max_output_bytes`](crate::Limits), 64 KiB per stream by default), but each
/// of its lines becomes a record several times its size: a megabyte holds the records of that much output in short
/// lines, and bounds what waits in memory whatever logs.
const HOLD_BACK_LIMIT: usize = 1 << 20;

tokio::task_local! {
    /// The records held back by the [`hold_back`] this task runs in.
    static HELD_BACK: RefCell<Held>;
}

/// Records held back, masked, in order.
#[derive(Default)]
struct Held {
    records: Vec<u8>,
    /// Past [`HOLD_BACK_LIMIT`]: the rest are written as they come.
    passed: bool,
}

/// What became of a record offered to [`Held`].
enum Hold {
    Held,
    /// It was the one too many: these (all held, and it) are to be written now.
    Overflowed(Vec<u8>),
    /// Write it now.
    Passed,
}

impl Held {
    /// Writes what is held.
    fn write_out(&mut self) {
        write_to_stderr(&std::mem::take(&mut self.records));
    }

    fn hold(&mut self, record: &[u8]) -> Hold {
        if self.passed {
            return Hold::Passed;
        }
        self.records.extend_from_slice(record);
        if self.records.len() <= HOLD_BACK_LIMIT {
            return Hold::Held;
        }
        self.passed = true;
        Hold::Overflowed(std::mem::take(&mut self.records))
    }
}

/// An invocation abandoned before its end (its task cancelled as the process stops) still leaves its records.
impl Drop for Held {
    fn drop(&mut self) {
        self.write_out();
    }
}

/// Writes to stderr, where the log goes (a failed write is dropped, as `tracing`'s writer drops it).
fn write_to_stderr(records: &[u8]) {
    if !records.is_empty() {
        let _ = std::io::stderr().lock().write_all(records);
    }
}

/// Runs `future` with the records it logs through the log [`init_logging`] or [`init_lambda_logging`] installs
/// held back (already masked) while it runs without waiting: Lambda mode writes an invocation's records after its
/// outcome is delivered, when it waits for nothing (its guest computes, its decrypts are cache hits). Whenever
/// `future` waits (a host call that blocks, a guest's yield at an epoch tick), what is held is written then: a
/// process killed mid-invocation (at the function's timeout, say) loses no record older than the invocation's last
/// wait, at most one epoch tick (10 ms) of computing. The rest are written to stderr when the returned
/// [`HeldRecords`] is written or dropped (or, if `future` is dropped before its end, then); past 1 MiB, those held
/// are written, and the rest as they come.
pub async fn hold_back<F: Future>(future: F) -> (F::Output, HeldRecords) {
    HELD_BACK
        .scope(RefCell::new(Held::default()), async move {
            let mut future = std::pin::pin!(future);
            let output = std::future::poll_fn(|cx| {
                let polled = future.as_mut().poll(cx);
                if polled.is_pending() {
                    HELD_BACK.with(|held| held.borrow_mut().write_out());
                }
                polled
            })
            .await;
            (output, HeldRecords(HELD_BACK.with(|held| std::mem::take(&mut held.borrow_mut().records))))
        })
        .await
}

/// Log records [`hold_back`] held, masked; written to stderr by [`HeldRecords::write`] or when dropped.
#[derive(Debug)]
#[must_use = "the records are written when this is written or dropped: do so where they belong in the log"]
pub struct HeldRecords(Vec<u8>);

impl HeldRecords {
    /// Writes the records to stderr.
    pub fn write(self) {}
}

impl Drop for HeldRecords {
    fn drop(&mut self) {
        write_to_stderr(&std::mem::take(&mut self.0));
    }
}

/// A log writer (a `tracing_subscriber` [`MakeWriter`](tracing_subscriber::fmt::MakeWriter)) that masks every
/// line with every plaintext the process holds, then writes it to `inner`. keyward's binary logs through it; a
/// program using the library can too.
#[derive(Debug, Clone)]
pub struct MaskingWriter<M> {
    inner: M,
    /// Whether records may be held back ([`hold_back`]): only where the log goes to stderr, where held records are
    /// written.
    holds_back: bool,
}

impl<M> MaskingWriter<M> {
    /// Masks what is written, then writes it through `inner`, at once.
    pub fn new(inner: M) -> Self {
        Self { inner, holds_back: false }
    }
}

/// One log record being written: tracing's formatter writes a whole record in one `write_all`.
#[derive(Debug)]
pub struct MaskedRecord<W: std::io::Write> {
    inner: W,
    /// Whether it may be held back ([`hold_back`]): in the log that goes to stderr.
    may_wait: bool,
}

impl<W: std::io::Write> std::io::Write for MaskedRecord<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let masked = held_masker().bytes(buf);
        let held = if self.may_wait { HELD_BACK.try_with(|held| held.borrow_mut().hold(&masked)).ok() } else { None };
        match held {
            Some(Hold::Held) => {}
            Some(Hold::Overflowed(records)) => self.inner.write_all(&records)?,
            Some(Hold::Passed) | None => self.inner.write_all(&masked)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<'a, M: tracing_subscriber::fmt::MakeWriter<'a>> tracing_subscriber::fmt::MakeWriter<'a> for MaskingWriter<M> {
    type Writer = MaskedRecord<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        MaskedRecord { inner: self.inner.make_writer(), may_wait: self.holds_back }
    }
}

/// Sends `tracing` events to stderr through a [`MaskingWriter`], at `default_level` (`error`, `info`, `debug`, ...)
/// unless `RUST_LOG` gives levels (`debug`, `keyward=debug,aws_smithy_runtime=trace`; tracing-subscriber's
/// [`Targets`](tracing_subscriber::filter::Targets) syntax); colored only on a terminal. The command line logs
/// through it; Lambda mode through [`init_lambda_logging`].
pub fn init_logging(default_level: &str) {
    init(default_level, true);
}

/// [`init_logging`] for Lambda mode: without timestamps, since CloudWatch Logs stamps every line it receives (as
/// `lambda_runtime`'s own subscriber leaves them out).
pub fn init_lambda_logging(default_level: &str) {
    init(default_level, false);
}

fn init(default_level: &str, timestamps: bool) {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let levels = std::env::var("RUST_LOG").ok().and_then(|levels| levels.parse::<Targets>().ok());
    let levels = levels.or_else(|| default_level.parse().ok()).unwrap_or_default();
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let writer = MaskingWriter { inner: std::io::stderr, holds_back: true };
    // The fmt builder caps levels at INFO by default: it lets everything through, and `levels` decides.
    let format = tracing_subscriber::fmt().with_max_level(tracing_subscriber::filter::LevelFilter::TRACE);
    let format = format.with_writer(writer).with_ansi(ansi);
    if timestamps {
        format.finish().with(levels).init();
    } else {
        format.without_time().finish().with(levels).init();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::mask::hold;

    #[test]
    fn the_writer_masks_what_it_writes() {
        let _held = hold(b"writer-s3cret-value");
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let writer = MaskingWriter::new(move || SharedBuf(sink.clone()));
        let mut record = tracing_subscriber::fmt::MakeWriter::make_writer(&writer);
        std::io::Write::write_all(&mut record, b"audit context=k=writer-s3cret-value\n").unwrap();
        assert_eq!(String::from_utf8(out.lock().unwrap().clone()).unwrap(), "audit context=k=[REDACTED]\n");
    }

    struct SharedBuf(std::sync::Arc<Mutex<Vec<u8>>>);

    /// A writer into `out` that holds records back as the one `init_logging` installs does.
    fn holding(out: Arc<Mutex<Vec<u8>>>) -> MaskingWriter<impl Fn() -> SharedBuf> {
        MaskingWriter { inner: move || SharedBuf(out.clone()), holds_back: true }
    }

    impl std::io::Write for SharedBuf {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Whenever the future waits, what is held is written (to stderr); what it logs after waits for its end.
    #[tokio::test]
    async fn held_records_are_written_when_the_invocation_waits() {
        let out = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::fmt().with_writer(holding(out.clone())).with_ansi(false).finish();
        let _default = tracing::subscriber::set_default(subscriber);
        let holding_now = || HELD_BACK.with(|held| String::from_utf8_lossy(&held.borrow().records).into_owned());
        let ((), mut held) = hold_back(async {
            tracing::info!(target: AUDIT_TARGET, "kms decrypt");
            assert!(holding_now().contains("kms decrypt"), "held while it runs without waiting");
            tokio::task::yield_now().await;
            assert_eq!(holding_now(), "", "written when it waited");
            tracing::info!("guest output");
        })
        .await;
        assert!(out.lock().unwrap().is_empty(), "held records go to stderr, not through the writer");
        assert!(String::from_utf8_lossy(&held.0).contains("guest output"));
        held.0.clear();
    }

    #[tokio::test]
    async fn records_are_held_back_masked_and_in_order() {
        let _held = hold(b"held-back-s3cret");
        let out = Arc::new(Mutex::new(Vec::new()));
        let writer = holding(out.clone());
        let log = |line: &[u8]| {
            let mut record = tracing_subscriber::fmt::MakeWriter::make_writer(&writer);
            std::io::Write::write_all(&mut record, line).unwrap();
        };
        let ((), mut held) = hold_back(async {
            log(b"one held-back-s3cret\n");
            log(b"two\n");
        })
        .await;
        assert!(out.lock().unwrap().is_empty(), "nothing written while held");
        assert_eq!(held.0, b"one [REDACTED]\ntwo\n");
        held.0.clear();
        let ((), nothing) = hold_back(async {}).await;
        assert!(nothing.0.is_empty());

        // Past the limit, everything held is written with the record, in order, and the rest as it comes.
        let line = vec![b'x'; 1000];
        let ((), held) = hold_back(async {
            for _ in 0..=HOLD_BACK_LIMIT / line.len() {
                log(&line);
            }
            assert_eq!(out.lock().unwrap().len(), (HOLD_BACK_LIMIT / line.len() + 1) * line.len());
            log(b"last");
            assert!(out.lock().unwrap().ends_with(b"last"), "written as it came");
        })
        .await;
        assert!(held.0.is_empty());
        log(b"outside\n");
        assert!(out.lock().unwrap().ends_with(b"outside\n"), "written at once outside hold_back");
    }

    /// A writer of the library's users (`MaskingWriter::new`) writes at once, even within `hold_back`: held records
    /// go to stderr, which is not where theirs go.
    #[tokio::test]
    async fn a_writer_made_with_new_never_holds_back() {
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let writer = MaskingWriter::new(move || SharedBuf(sink.clone()));
        let ((), held) = hold_back(async {
            let mut record = tracing_subscriber::fmt::MakeWriter::make_writer(&writer);
            std::io::Write::write_all(&mut record, b"at once\n").unwrap();
        })
        .await;
        assert_eq!(*out.lock().unwrap(), b"at once\n");
        assert!(held.0.is_empty());
    }
}
