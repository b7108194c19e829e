//! A per-upstream circuit breaker: after [`THRESHOLD`] consecutive transient failures,
//! requests fail fast (and the proxy serves what it has cached) for a pause that doubles
//! up to [`MAX_PAUSE`]; one success closes it. While paused, one request a
//! [`PROBE_EVERY`] goes through (half-open), so an upstream that is back is used again
//! within a second, not at the end of a long pause (the soak found clients refused for
//! 16 s after the registry had come back).

use super::UpstreamError;
use std::time::{Duration, Instant};

/// Consecutive transient failures after which an upstream is left alone for a while.
const THRESHOLD: u32 = 3;
/// The longest pause.
pub const MAX_PAUSE: Duration = Duration::from_secs(30);

/// While paused, how often one request is let through to see whether the upstream is back.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
    /// When a request last went through while paused.
    last_probe: Option<Instant>,
}

impl Breaker {
    /// `Err(CircuitOpen)` while paused, but for one probe a [`PROBE_EVERY`].
    pub fn check(&mut self) -> Result<(), UpstreamError> {
        let now = Instant::now();
        match self.open_until {
            Some(until) if until > now => {
                if self.last_probe.is_none_or(|p| now.duration_since(p) >= PROBE_EVERY) {
                    self.last_probe = Some(now);
                    return Ok(());
                }
                Err(UpstreamError::CircuitOpen {
                    retry_after: (until - now).as_secs().max(1),
                })
            }
            _ => Ok(()),
        }
    }

    /// How long requests stay paused, when they are.
    pub fn paused_for(&self) -> Option<Duration> {
        self.open_until
            .and_then(|until| until.checked_duration_since(Instant::now()))
            .filter(|d| !d.is_zero())
    }

    /// Records an outcome; returns the pause when this failure opened the breaker.
    pub fn record(&mut self, result: &Result<(), UpstreamError>) -> Option<(u32, Duration)> {
        match result {
            Ok(()) | Err(UpstreamError::NotFound) | Err(UpstreamError::Denied(_)) => {
                self.failures = 0;
                self.open_until = None;
                None
            }
            Err(e) if e.is_transient() && !matches!(e, UpstreamError::CircuitOpen { .. }) => {
                self.failures += 1;
                if self.failures < THRESHOLD {
                    return None;
                }
                let pause = Duration::from_secs(1 << (self.failures - THRESHOLD).min(5)).min(MAX_PAUSE);
                self.open_until = Some(Instant::now() + pause);
                Some((self.failures, pause))
            }
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_transient_failures_and_closes_on_success() {
        let mut b = Breaker::default();
        let down = Err(UpstreamError::Status(503));
        assert_eq!(b.record(&down), None);
        assert_eq!(b.record(&down), None);
        assert_eq!(b.record(&down), Some((3, Duration::from_secs(1))));
        assert!(b.check().is_ok(), "one probe goes through");
        assert!(
            matches!(b.check(), Err(UpstreamError::CircuitOpen { .. })),
            "the next waits"
        );
        assert_eq!(b.record(&Err(UpstreamError::NotFound)), None);
        assert!(b.check().is_ok());
        assert!(b.check().is_ok(), "closed by the answer");
    }
}
