//! Fuzzes `pullgate::oci::range::RangeSpec::parse` then `.resolve(size)`, with `size`
//! taken from the first 8 input bytes (little endian) and the header from the rest:
//! a resolved span must satisfy `first <= last < size`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pullgate::oci::range::RangeSpec;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (size, header) = data.split_at(8);
    let size = u64::from_le_bytes(size.try_into().unwrap());
    let Ok(header) = std::str::from_utf8(header) else {
        return;
    };
    if let Ok(spec) = RangeSpec::parse(header)
        && let Ok(Some(span)) = spec.resolve(size)
    {
        assert!(
            span.first <= span.last && span.last < size,
            "{header:?} on size {size} resolved to {span:?}"
        );
    }
});
