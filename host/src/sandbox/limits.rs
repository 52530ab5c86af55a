//! What one invocation may use, and the errors raised when it tries to use more.

use std::time::Duration;

use crate::settings::{Env, SettingError};

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

/// Lambda's limit on a synchronous invocation's response, and keyward's on its event: 6 MiB. The response limit
/// may be set lower, never higher.
pub const LAMBDA_PAYLOAD_LIMIT: usize = 6 * 1024 * 1024;
/// Most bytes of stdout, and of stderr, that may be kept for the log per invocation.
pub const MAX_OUTPUT_BYTES: usize = 1 << 20;

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

const MEMORY_MB: &str = "KEYWARD_MEMORY_MB";
const TIMEOUT_MS: &str = "KEYWARD_TIMEOUT_MS";
const MAX_RESPONSE_BYTES: &str = "KEYWARD_MAX_RESPONSE_BYTES";
const MAX_OUTPUT: &str = "KEYWARD_MAX_OUTPUT_BYTES";

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

    /// Reads the limits from Lambda mode's variables (the instances are Lambda's concurrency, set apart).
    ///
    /// # Errors
    /// A value that is not a whole number of the setting's range, naming its variable.
    pub(crate) fn from_env(env: &Env<'_>) -> Result<Self, SettingError> {
        let d = Self::default();
        Ok(Self {
            memory_bytes: mb(env.number(MEMORY_MB, DEFAULT_MEMORY_MB)?),
            timeout: Duration::from_millis(env.number(TIMEOUT_MS, DEFAULT_TIMEOUT_MS)?),
            max_response_bytes: env.number(MAX_RESPONSE_BYTES, d.max_response_bytes)?,
            max_output_bytes: env.number(MAX_OUTPUT, d.max_output_bytes)?,
            ..d
        })
    }

    /// Checks that every limit is usable.
    ///
    /// # Errors
    /// A [`SettingError`] naming the limit that is out of range.
    pub fn check(&self) -> Result<(), SettingError> {
        if self.memory_bytes < mb(1) || self.memory_bytes > mb(MAX_MEMORY_MB) {
            let given = self.memory_bytes as f64 / f64::from(1 << 20);
            return Err(SettingError::new(MEMORY_MB, format!("must be 1 to {MAX_MEMORY_MB} MiB, not {given} MiB")));
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_millis(MAX_TIMEOUT_MS) {
            let given = self.timeout.as_millis();
            return Err(SettingError::new(TIMEOUT_MS, format!("must be 1 to {MAX_TIMEOUT_MS} ms, not {given} ms")));
        }
        if self.max_response_bytes == 0 || self.max_response_bytes > LAMBDA_PAYLOAD_LIMIT {
            let reason = format!(
                "must be 1 to {LAMBDA_PAYLOAD_LIMIT} bytes (Lambda's response limit), not {}",
                self.max_response_bytes
            );
            return Err(SettingError::new(MAX_RESPONSE_BYTES, reason));
        }
        if self.max_output_bytes > MAX_OUTPUT_BYTES {
            let reason = format!("must be 0 to {MAX_OUTPUT_BYTES} bytes, not {}", self.max_output_bytes);
            return Err(SettingError::new(MAX_OUTPUT, reason));
        }
        if self.max_instances == 0 {
            return Err(SettingError::new("Limits::max_instances", "at least one instance must be allowed"));
        }
        Ok(())
    }

    /// These limits with one instance at a time: Lambda runs one invocation per environment (and a test host
    /// needs no more).
    pub fn one_at_a_time(self) -> Self {
        Self { max_instances: 1, ..self }
    }
}

/// `keyward invoke`'s flags for the limits.
#[cfg(feature = "cli")]
#[derive(Debug, clap::Args)]
pub struct LimitFlags {
    /// Wall-clock limit of the invocation.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_MS))]
    timeout_ms: u64,
    /// Memory limit of the guest.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MEMORY_MB,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_MEMORY_MB)))]
    memory_mb: u32,
    /// Bytes of the guest's stdout, and of its stderr, kept for the log (-v); the rest is counted and dropped.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_OUTPUT_BYTES as u64,
          value_parser = clap::value_parser!(u64).range(0..=MAX_OUTPUT_BYTES as u64))]
    max_output_bytes: u64,
}

#[cfg(feature = "cli")]
impl From<LimitFlags> for Limits {
    fn from(flags: LimitFlags) -> Self {
        // The parser's range is within usize.
        let max_output_bytes = usize::try_from(flags.max_output_bytes).unwrap_or(MAX_OUTPUT_BYTES);
        Self { max_output_bytes, ..Limits::default() }.with_memory_mb(flags.memory_mb).with_timeout_ms(flags.timeout_ms)
    }
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
    /// An HTTP component's response body grew past the response limit (it was read no further).
    #[error(
        "the HTTP response body grew past the limit of {limit} bytes (the response limit, at most Lambda's 6 MB): \
         send a smaller body"
    )]
    HttpBodySize {
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
