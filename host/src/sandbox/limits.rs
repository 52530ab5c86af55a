//! What one invocation may use, and the errors raised when it tries to use more.

use std::time::Duration;

/// Default linear-memory limit per instance.
pub const DEFAULT_MEMORY_MB: u32 = 64;
/// Default wall-clock limit per invocation.
pub const DEFAULT_TIMEOUT_MS: u64 = 3_000;
/// Default response size limit: Lambda's own limit for synchronous responses.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 6 * 1024 * 1024;
/// Default bytes of stdout and of stderr kept per invocation for the host log; the rest is counted and dropped.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 64 * 1024;
/// Default number of instances that may run at once on one host (Lambda runs one at a time).
pub const DEFAULT_MAX_INSTANCES: u32 = 8;
/// Largest memory limit that may be configured (Lambda's largest function has 10 GB in all).
pub const MAX_MEMORY_MB: u32 = 4096;
/// Longest time limit that may be configured: Lambda's longest timeout, 15 minutes.
pub const MAX_TIMEOUT_MS: u64 = 900_000;

/// Per-invocation resource limits. Build with [`Limits::default`] and adjust fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Bytes each linear memory of the guest may grow to.
    pub memory_bytes: usize,
    /// Wall-clock time an invocation may take, from instantiation to response.
    pub timeout: Duration,
    /// Bytes the response may have.
    pub max_response_bytes: usize,
    /// Bytes of stdout, and of stderr, kept for the log.
    pub max_output_bytes: usize,
    /// Instances that may be live at once (sizes the pooling allocator).
    pub max_instances: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: mb(DEFAULT_MEMORY_MB),
            timeout: Duration::from_millis(DEFAULT_TIMEOUT_MS),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            max_instances: DEFAULT_MAX_INSTANCES,
        }
    }
}

impl Limits {
    /// Sets the memory limit in MiB.
    pub fn with_memory_mb(mut self, memory_mb: u32) -> Self {
        self.memory_bytes = mb(memory_mb);
        self
    }

    /// Sets the timeout in milliseconds.
    pub fn with_timeout_ms(mut self, timeout_ms: u64) -> Self {
        self.timeout = Duration::from_millis(timeout_ms);
        self
    }

    /// Checks that every limit is usable.
    ///
    /// # Errors
    /// [`InvalidLimits`] naming the limit that is out of range.
    pub fn validate(&self) -> Result<(), InvalidLimits> {
        if self.memory_bytes < mb(1) || self.memory_bytes > mb(MAX_MEMORY_MB) {
            return Err(InvalidLimits::Memory { bytes: self.memory_bytes });
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_millis(MAX_TIMEOUT_MS) {
            return Err(InvalidLimits::Timeout { ms: self.timeout.as_millis() });
        }
        if self.max_instances == 0 {
            return Err(InvalidLimits::NoInstances);
        }
        if self.max_response_bytes == 0 {
            return Err(InvalidLimits::NoResponse);
        }
        Ok(())
    }

    /// These limits with one instance at a time: Lambda runs one invocation per environment (and a test host
    /// needs no more).
    pub fn one_at_a_time(self) -> Self {
        Self { max_instances: 1, ..self }
    }
}

/// A limit out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidLimits {
    /// The memory limit.
    #[error("memory limit must be 1 to {MAX_MEMORY_MB} MiB, not {} MiB", *bytes as f64 / f64::from(1 << 20))]
    Memory {
        /// The limit given.
        bytes: usize,
    },
    /// The time limit.
    #[error("timeout must be 1 to {MAX_TIMEOUT_MS} ms, not {ms} ms")]
    Timeout {
        /// The limit given.
        ms: u128,
    },
    /// No instance allowed.
    #[error("at least one instance must be allowed")]
    NoInstances,
    /// No response could be sent.
    #[error("the response limit must be at least 1 byte: with 0, every response would be refused")]
    NoResponse,
}

fn mb(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX).saturating_mul(1 << 20)
}

/// A limit the guest hit. Raised as a trap from inside the guest, then reported as the invocation's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    /// A linear memory tried to grow past the limit.
    #[error("guest exceeded its memory limit of {limit_mb} MiB (it asked for {requested_mb} MiB in all)")]
    Memory {
        /// The limit.
        limit_mb: usize,
        /// The size it tried to reach.
        requested_mb: usize,
    },
    /// A table tried to grow past the limit.
    #[error("guest exceeded its table limit of {limit} elements")]
    Table {
        /// The limit.
        limit: usize,
    },
    /// The guest ran out of time.
    #[error("guest exceeded its time limit of {limit_ms} ms")]
    Time {
        /// The limit.
        limit_ms: u64,
    },
    /// The guest called `kms.decrypt` too often.
    #[error("guest exceeded its limit of {limit} kms.decrypt calls per invocation")]
    DecryptCalls {
        /// The limit.
        limit: u32,
    },
    /// The guest asked for more operations on key handles than allowed.
    #[error("guest exceeded its limit of {limit} key operations per invocation")]
    KeyOperations {
        /// The limit.
        limit: u32,
    },
    /// The guest asked `wasi:random` for more bytes at once than allowed (the host would make and hold them all).
    #[error("guest asked wasi:random for {requested} bytes at once; the limit is {limit} bytes")]
    RandomBytes {
        /// Bytes asked for.
        requested: u64,
        /// The limit.
        limit: u64,
    },
    /// The guest passed more data to one host call than its memory limit.
    #[error("guest passed more than its memory limit of {limit} bytes to one host call")]
    HostCallData {
        /// The limit.
        limit: usize,
    },
    /// The guest held more resource handles (streams, pollables, ...) at once than allowed.
    #[error("guest held more than {limit} resource handles at once")]
    Handles {
        /// The limit.
        limit: usize,
    },
    /// The response is too large.
    #[error("guest response of {size} bytes exceeds the limit of {limit} bytes")]
    ResponseSize {
        /// The response's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

/// Most elements a guest table may have (a Rust guest uses a few hundred; also sizes the pool's table slots).
pub(crate) const MAX_TABLE_ELEMENTS: usize = 20_000;

/// Enforces the memory limit by trapping with [`LimitExceeded`], so the invocation reports which limit was hit
/// rather than a guest abort. The limit is on all of a guest's linear memories together: a component may have
/// several (one per core instance that defines one), and each would otherwise get the whole limit.
#[derive(Debug)]
pub(crate) struct StoreLimiter {
    memory_bytes: usize,
    /// Bytes of all linear memories so far (wasmtime asks before each is created and before each grows).
    used: usize,
}

impl StoreLimiter {
    pub(crate) fn new(memory_bytes: usize) -> Self {
        Self { memory_bytes, used: 0 }
    }
}

impl wasmtime::ResourceLimiter for StoreLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let total = self.used.saturating_sub(current).saturating_add(desired);
        if total > self.memory_bytes {
            return Err(wasmtime::Error::new(LimitExceeded::Memory {
                limit_mb: self.memory_bytes >> 20,
                requested_mb: total.div_ceil(1 << 20),
            }));
        }
        self.used = total;
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            return Err(wasmtime::Error::new(LimitExceeded::Table { limit: MAX_TABLE_ELEMENTS }));
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use wasmtime::ResourceLimiter as _;

    use super::*;

    #[test]
    fn the_memory_limit_is_on_all_memories_together() {
        let mut limiter = StoreLimiter::new(64 << 20);
        assert!(limiter.memory_growing(0, 40 << 20, None).unwrap(), "a first memory of 40 MiB");
        assert!(limiter.memory_growing(0, 20 << 20, None).unwrap(), "a second of 20 MiB: 60 in all");
        let err = limiter.memory_growing(0, 10 << 20, None).unwrap_err();
        assert_eq!(err.downcast_ref(), Some(&LimitExceeded::Memory { limit_mb: 64, requested_mb: 70 }));
        assert!(limiter.memory_growing(20 << 20, 24 << 20, None).unwrap(), "the second grows to 24: 64 in all");
        assert!(limiter.memory_growing(24 << 20, 25 << 20, None).is_err());
    }
}
