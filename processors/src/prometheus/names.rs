//! The OpenTelemetry → Prometheus naming rules (the specification's "Prometheus and
//! OpenMetrics Compatibility", as the Collector's `prometheus` translator applies
//! them): metric names from the OTLP name, its unit and its kind; label names
//! sanitised.

/// The Prometheus name of an OTLP metric: the name's alphanumeric words joined with
/// `_`, then the unit's words (`ms` → `milliseconds`, `By/s` → `bytes_per_second`,
/// annotations in braces dropped) unless the name has them already, then `total` for a
/// monotonic sum or `ratio` for a gauge of unit `1`.
pub fn metric_name(name: &str, unit: &str, monotonic_sum: bool, gauge: bool) -> String {
    let mut tokens: Vec<String> = words(name).map(str::to_owned).collect();
    let mut units = unit.splitn(2, '/');
    let main = units.next().unwrap_or("").trim();
    if !main.is_empty() && !main.contains(['{', '}']) {
        let word = clean(unit_word(main));
        if !word.is_empty() && !tokens.contains(&word) {
            tokens.push(word);
        }
    }
    if let Some(per) = units.next().map(str::trim) {
        if !per.is_empty() && !per.contains(['{', '}']) {
            let word = clean(per_unit_word(per));
            if !word.is_empty() && !tokens.contains(&word) {
                tokens.push("per".into());
                tokens.push(word);
            }
        }
    }
    if monotonic_sum {
        tokens.retain(|t| t != "total");
        tokens.push("total".into());
    }
    if gauge && unit == "1" {
        tokens.retain(|t| t != "ratio");
        tokens.push("ratio".into());
    }
    let joined = tokens.join("_");
    if joined.starts_with(|c: char| c.is_ascii_digit()) {
        format!("_{joined}")
    } else {
        joined
    }
}

/// A valid label name for an attribute key: every character outside `[a-zA-Z0-9_]`
/// becomes `_`, and a name starting with a digit gets the prefix `key_` (one starting
/// with a single `_` gets `key`, since `__` is reserved).
pub fn label_name(key: &str) -> String {
    let mut out: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "key_");
    } else if out.starts_with('_') && !out.starts_with("__") {
        out.insert_str(0, "key");
    }
    out
}

fn words(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
}

fn clean(s: &str) -> String {
    words(s).collect::<Vec<_>>().join("_")
}

fn unit_word(unit: &str) -> &str {
    match unit {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        "1" => "",
        other => other,
    }
}

fn per_unit_word(unit: &str) -> &str {
    match unit {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_specifications_examples() {
        assert_eq!(
            metric_name("http.server.duration", "ms", false, false),
            "http_server_duration_milliseconds"
        );
        assert_eq!(
            metric_name("http.server.request.size", "By", true, false),
            "http_server_request_size_bytes_total"
        );
        assert_eq!(
            metric_name("system.network.io", "By/s", false, true),
            "system_network_io_bytes_per_second"
        );
        assert_eq!(
            metric_name("cpu.utilization", "1", false, true),
            "cpu_utilization_ratio"
        );
        // `1` adds nothing to a counter; braces are annotations.
        assert_eq!(
            metric_name("agent.tasks", "1", true, false),
            "agent_tasks_total"
        );
        assert_eq!(
            metric_name("queue.items", "{item}", false, true),
            "queue_items"
        );
        // The unit is not repeated, nor is `total`.
        assert_eq!(
            metric_name("request_duration_seconds", "s", false, false),
            "request_duration_seconds"
        );
        assert_eq!(
            metric_name("requests.total", "", true, false),
            "requests_total"
        );
        assert_eq!(metric_name("1xx.count", "", false, true), "_1xx_count");
    }

    #[test]
    fn label_names_are_sanitised() {
        assert_eq!(label_name("http.method"), "http_method");
        assert_eq!(label_name("gen_ai.usage-type"), "gen_ai_usage_type");
        assert_eq!(label_name("2fa"), "key_2fa");
        assert_eq!(label_name("_private"), "key_private");
        assert_eq!(label_name("__reserved"), "__reserved");
    }
}
