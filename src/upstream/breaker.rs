//! A per-upstream circuit breaker: after [`THRESHOLD`] consecutive transient failures,
//! requests fail fast (and the proxy serves what it has cached) for a pause that doubles
//! up to [`MAX_PAUSE`]; one success closes it.

use super::UpstreamError;
use std::time::{Duration, Instant};

/// Consecutive transient failures after which an upstream is left alone for a while.
const THRESHOLD: u32 = 3;
/// The longest pause.
pub const MAX_PAUSE: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

impl Breaker {
    /// `Err(CircuitOpen)` while paused.
    pub fn check(&self) -> Result<(), UpstreamError> {
        match self.open_until {
            Some(until) if until > Instant::now() => Err(UpstreamError::CircuitOpen {
                retry_after: (until - Instant::now()).as_secs().max(1),
            }),
            _ => Ok(()),
        }
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
        assert!(matches!(b.check(), Err(UpstreamError::CircuitOpen { .. })));
        assert_eq!(b.record(&Err(UpstreamError::NotFound)), None);
        assert!(b.check().is_ok());
    }
}
