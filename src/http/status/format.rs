//! Figures as people read them: bytes in binary units, rates, durations, times.

/// `1.5 GiB`, `320 KiB`, `12 B`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else if value >= 100.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `12.3 MiB/s`.
pub fn rate(bytes_per_second: u64) -> String {
    format!("{}/s", bytes(bytes_per_second))
}

/// `3d 4h`, `2h 5m`, `4m 10s`, `9s`.
pub fn duration(seconds: u64) -> String {
    let (d, h, m, s) = (seconds / 86_400, seconds / 3600 % 24, seconds / 60 % 60, seconds % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

/// A time as UTC, `2026-12-02 15:04:05Z`.
pub fn time(at_ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(at_ms);
    humantime::format_rfc3339_seconds(t).to_string().replace('T', " ")
}

/// `time` and how long ago, relative to `now_ms`.
pub fn ago(at_ms: u64, now_ms: u64) -> String {
    format!("{} ago", duration(now_ms.saturating_sub(at_ms) / 1000))
}

/// A share as a percentage, `97.5 %`.
pub fn percent(share: f64) -> String {
    format!("{:.1} %", share * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_as_people_write_them() {
        assert_eq!(bytes(12), "12 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(300 << 20), "300 MiB");
        assert_eq!(rate(2 << 20), "2.0 MiB/s");
        assert_eq!(duration(9), "9s");
        assert_eq!(duration(250), "4m 10s");
        assert_eq!(duration(3 * 86_400 + 4 * 3600 + 5), "3d 4h");
        assert_eq!(time(0), "1970-01-01 00:00:00Z");
        assert_eq!(ago(1_000, 61_000), "1m 0s ago");
        assert_eq!(percent(0.975), "97.5 %");
    }
}
