//! The client's `Range` header: a single byte range (`bytes=N-`, `bytes=N-M`,
//! `bytes=-S`), resolved against the blob size. Several ranges are answered with the
//! whole body (RFC 9110 lets a server ignore `Range`; containers/image accepts a 200).

/// A parsed `Range` header value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    /// `bytes=first-` or `bytes=first-last`.
    FromTo { first: u64, last: Option<u64> },
    /// `bytes=-n`: the last `n` bytes.
    Suffix(u64),
    /// More than one range: answered with the full body.
    Multiple,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("malformed Range header")]
    Malformed,
    #[error("range not satisfiable")]
    Unsatisfiable,
}

/// An inclusive byte span within a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSpan {
    pub first: u64,
    pub last: u64,
}

impl ByteSpan {
    pub fn len(&self) -> u64 {
        self.last - self.first + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn content_range(&self, size: u64) -> String {
        format!("bytes {}-{}/{}", self.first, self.last, size)
    }
}

fn number(s: &str) -> Result<u64, RangeError> {
    let s = s.trim();
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RangeError::Malformed);
    }
    s.parse().map_err(|_| RangeError::Malformed)
}

impl RangeSpec {
    /// Parses a header value. Inverted ranges (`bytes=5-2`) are malformed.
    pub fn parse(value: &str) -> Result<RangeSpec, RangeError> {
        let value = value.trim();
        let set = value.strip_prefix("bytes=").ok_or(RangeError::Malformed)?.trim();
        if set.contains(',') {
            // Validate each part so garbage is still refused, then serve the whole body.
            for part in set.split(',') {
                Self::parse_one(part)?;
            }
            return Ok(RangeSpec::Multiple);
        }
        Self::parse_one(set)
    }

    fn parse_one(part: &str) -> Result<RangeSpec, RangeError> {
        let (a, b) = part.trim().split_once('-').ok_or(RangeError::Malformed)?;
        if a.trim().is_empty() {
            let n = number(b)?;
            return if n == 0 {
                Err(RangeError::Unsatisfiable)
            } else {
                Ok(RangeSpec::Suffix(n))
            };
        }
        let first = number(a)?;
        let last = if b.trim().is_empty() { None } else { Some(number(b)?) };
        if last.is_some_and(|l| l < first) {
            return Err(RangeError::Malformed);
        }
        Ok(RangeSpec::FromTo { first, last })
    }

    /// The span to send for a blob of `size` bytes; `None` means the whole body (200).
    pub fn resolve(&self, size: u64) -> Result<Option<ByteSpan>, RangeError> {
        match *self {
            RangeSpec::Multiple => Ok(None),
            RangeSpec::Suffix(n) => {
                if size == 0 {
                    return Err(RangeError::Unsatisfiable);
                }
                Ok(Some(ByteSpan {
                    first: size.saturating_sub(n),
                    last: size - 1,
                }))
            }
            RangeSpec::FromTo { first, last } => {
                if first >= size {
                    return Err(RangeError::Unsatisfiable);
                }
                let last = last.map_or(size - 1, |l| l.min(size - 1));
                Ok(Some(ByteSpan { first, last }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_resolves() {
        let r = |s: &str, size| RangeSpec::parse(s).and_then(|r| r.resolve(size));
        assert_eq!(r("bytes=0-", 10), Ok(Some(ByteSpan { first: 0, last: 9 })));
        assert_eq!(r("bytes=5-", 10), Ok(Some(ByteSpan { first: 5, last: 9 })));
        assert_eq!(r("bytes=2-4", 10), Ok(Some(ByteSpan { first: 2, last: 4 })));
        assert_eq!(r("bytes=2-400", 10), Ok(Some(ByteSpan { first: 2, last: 9 })));
        assert_eq!(r("bytes=-3", 10), Ok(Some(ByteSpan { first: 7, last: 9 })));
        assert_eq!(r("bytes=-30", 10), Ok(Some(ByteSpan { first: 0, last: 9 })));
        assert_eq!(r("bytes=10-", 10), Err(RangeError::Unsatisfiable));
        assert_eq!(r("bytes=0-", 0), Err(RangeError::Unsatisfiable));
        assert_eq!(r("bytes=5-2", 10), Err(RangeError::Malformed));
        assert_eq!(r("bytes=a-b", 10), Err(RangeError::Malformed));
        assert_eq!(r("items=0-1", 10), Err(RangeError::Malformed));
        assert_eq!(r("bytes=99999999999999999999-", 10), Err(RangeError::Malformed));
        assert_eq!(r("bytes=0-1,4-5", 10), Ok(None));
        assert_eq!(r("bytes=0-1,x", 10), Err(RangeError::Malformed));
        assert_eq!(ByteSpan { first: 2, last: 4 }.content_range(10), "bytes 2-4/10");
    }

    proptest! {
        #[test]
        fn never_panics_and_stays_in_bounds(s in "bytes=[0-9,-]{0,30}", size in 0u64..1000) {
            if let Ok(spec) = RangeSpec::parse(&s)
                && let Ok(Some(span)) = spec.resolve(size) {
                prop_assert!(span.first <= span.last && span.last < size);
            }
        }

        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,60}") {
            let _ = RangeSpec::parse(&s).map(|r| r.resolve(100));
        }
    }
}
