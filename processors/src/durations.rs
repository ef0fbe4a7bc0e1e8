//! Durations as configuration writes them, shared by the analytics' rules and the
//! sinks' settings.

/// A duration as Prometheus writes them: `90s`, `2m`, `1h30m`, `500ms`.
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let mut total_ms: u64 = 0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let ms = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return None,
        };
        total_ms = total_ms.checked_add(n.checked_mul(ms)?)?;
        rest = &rest[unit_len..];
    }
    Some(std::time::Duration::from_millis(total_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_prometheus_writes_them() {
        assert_eq!(parse_duration("1h30m").map(|d| d.as_secs()), Some(5400));
        assert_eq!(parse_duration("500ms").map(|d| d.as_millis()), Some(500));
        assert!(parse_duration("2 minutes").is_none());
        assert!(parse_duration("").is_none());
    }
}
