//! Percentiles and number formatting.

use std::time::Duration;

/// The `p`-th percentile (0..=100) of `values` by the nearest-rank method; `None` when empty.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    Some(v[rank.min(v.len()) - 1])
}

/// p50, p90, p99 and max of `values` (all 0 when empty).
pub fn summary(values: &[f64]) -> [f64; 4] {
    let q = |p| percentile(values, p).unwrap_or(0.0);
    [q(50.0), q(90.0), q(99.0), q(100.0)]
}

/// A count with thin thousands separators: `1 234 567`.
pub fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// A rate, rounded to 3 significant figures, with separators.
pub fn rate(x: f64) -> String {
    if x >= 1000.0 {
        let digits = x.log10().floor() as i32 + 1;
        let scale = 10f64.powi((digits - 3).max(0));
        count(((x / scale).round() * scale) as u64)
    } else {
        sig(x)
    }
}

/// `x` with 3 significant figures (no exponent).
pub fn sig(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let digits = x.abs().log10().floor() as i32 + 1;
    let decimals = (3 - digits).clamp(0, 6) as usize;
    format!("{x:.decimals$}")
}

/// Bytes as MiB with one decimal.
pub fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
}

/// Bytes as KiB with one decimal.
pub fn kib(bytes: f64) -> String {
    format!("{:.1} KiB", bytes / 1024.0)
}

/// A duration in seconds with 2 decimals.
pub fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// A duration in milliseconds, 3 significant figures.
pub fn millis(d: Duration) -> String {
    format!("{} ms", sig(d.as_secs_f64() * 1000.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_formats() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&[3.0], 99.0), Some(3.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(count(1_234_567), "1 234 567");
        assert_eq!(count(999), "999");
        assert_eq!(rate(1_234_567.0), "1 230 000");
        assert_eq!(sig(0.012345), "0.0123");
        assert_eq!(sig(123.4), "123");
        assert_eq!(sig(1.5), "1.50");
    }
}
