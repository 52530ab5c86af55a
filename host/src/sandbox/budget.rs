//! The time one invocation has, worked out once: from the configured limit and the caller's deadline, everything
//! that needs a deadline asks it (the guest's `deadline-ms`, the epoch deadline, the outer timeout, the key
//! service's deadline, and the time-limit error).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::engine::EPOCH_TICK;
use super::limits::LimitExceeded;
use crate::error::InvokeError;

/// Of the invocation's time, what is kept back from the key service, so the guest can still handle an
/// `unavailable`: a tenth, at most this much.
const KMS_MARGIN_MAX: Duration = Duration::from_millis(100);

/// Less time left than this is no time to start in.
const SHORTEST: Duration = Duration::from_millis(1);

/// One invocation's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Budget {
    /// When the invocation started (monotonic).
    started: Instant,
    /// The time it has from then: the limit, or less if the caller's deadline is sooner.
    time: Duration,
    /// `started`, on the wall clock.
    started_wall: SystemTime,
}

impl Budget {
    /// The budget of an invocation starting now, under `limit`, for a caller who gives up at `deadline`.
    ///
    /// # Errors
    /// [`InvokeError::DeadlineExceeded`] when the deadline has passed (or leaves less than a millisecond).
    pub(crate) fn new(limit: Duration, deadline: Option<SystemTime>) -> Result<Self, InvokeError> {
        Self::at(limit, deadline, Instant::now(), SystemTime::now())
    }

    fn at(
        limit: Duration,
        deadline: Option<SystemTime>,
        started: Instant,
        started_wall: SystemTime,
    ) -> Result<Self, InvokeError> {
        let time = match deadline.map(|d| d.duration_since(started_wall)) {
            None => limit,
            Some(Ok(left)) if left >= SHORTEST => limit.min(left),
            Some(_) => return Err(InvokeError::DeadlineExceeded),
        };
        Ok(Self { started, time, started_wall })
    }

    /// The guest's `deadline-ms`: milliseconds since the Unix epoch.
    pub(crate) fn deadline_ms(&self) -> u64 {
        let at = (self.started_wall + self.time).duration_since(UNIX_EPOCH).unwrap_or_default();
        u64::try_from(at.as_millis()).unwrap_or(u64::MAX)
    }

    /// When a guest that computes is stopped: the end of the time (the epoch, every [`EPOCH_TICK`], checks it).
    pub(crate) fn guest_deadline(&self) -> Instant {
        self.started + self.time
    }

    /// When the whole run (the wait for an instance included) is abandoned (a guest waiting in a host call is not
    /// interrupted by the epoch): the end of the time, and two ticks for the epoch to act first.
    pub(crate) fn outer_deadline(&self) -> Instant {
        self.started + self.time + 2 * EPOCH_TICK
    }

    /// When the key service must have answered: the time less a tenth, at most 100 ms, left for the guest.
    pub(crate) fn kms_deadline(&self) -> Instant {
        self.started + self.time - (self.time / 10).min(KMS_MARGIN_MAX)
    }

    /// The error of a guest that ran out of it.
    pub(crate) fn exceeded(&self) -> LimitExceeded {
        LimitExceeded::Time { limit_ms: u64::try_from(self.time.as_millis()).unwrap_or(u64::MAX) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(limit_ms: u64, deadline_in_ms: Option<i64>) -> Result<Budget, InvokeError> {
        let started_wall = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let deadline = deadline_in_ms.map(|ms| {
            let offset = Duration::from_millis(ms.unsigned_abs());
            if ms >= 0 { started_wall + offset } else { started_wall - offset }
        });
        Budget::at(Duration::from_millis(limit_ms), deadline, Instant::now(), started_wall)
    }

    #[test]
    fn the_limit_or_the_callers_deadline_whichever_is_sooner() {
        let by_limit = budget(3000, None).unwrap();
        assert_eq!(by_limit.deadline_ms(), 1_800_000_003_000);
        assert_eq!(by_limit.exceeded(), LimitExceeded::Time { limit_ms: 3000 });
        let by_caller = budget(3000, Some(1500)).unwrap();
        assert_eq!(by_caller.deadline_ms(), 1_800_000_001_500);
        assert_eq!(by_caller.exceeded(), LimitExceeded::Time { limit_ms: 1500 });
        assert_eq!(budget(3000, Some(60_000)).unwrap().exceeded(), by_limit.exceeded());
    }

    #[test]
    fn a_passed_deadline_is_no_budget() {
        assert_eq!(budget(3000, Some(0)), Err(InvokeError::DeadlineExceeded));
        assert_eq!(budget(3000, Some(-1000)), Err(InvokeError::DeadlineExceeded));
        assert!(budget(3000, Some(1)).is_ok());
    }

    #[test]
    fn everything_that_needs_a_deadline_derives_it() {
        let b = budget(3000, None).unwrap();
        assert_eq!(b.guest_deadline() - b.started, Duration::from_millis(3000));
        assert_eq!(b.outer_deadline() - b.started, Duration::from_millis(3020));
        assert_eq!(b.kms_deadline() - b.started, Duration::from_millis(2900), "100 ms left for the guest");
        let short = budget(500, None).unwrap();
        assert_eq!(short.kms_deadline() - short.started, Duration::from_millis(450), "a tenth of 500 ms");
    }
}
