//! Parsing event timestamps: RFC 3339, `YYYY-MM-DD HH:MM:SS` (UTC) or epoch milliseconds.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};

/// Parses one timestamp to epoch milliseconds, or says why not.
pub fn parse_timestamp(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis());
    }
    for format in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(Utc.from_utc_datetime(&t).timestamp_millis());
        }
    }
    Err(format!(
        "cannot read timestamp {text:?}: expected RFC 3339, \"YYYY-MM-DD HH:MM:SS\" (UTC) or epoch milliseconds"
    ))
}

/// Formats epoch milliseconds as RFC 3339 UTC with second precision.
pub fn format_timestamp(ms: i64) -> String {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        None => ms.to_string(),
    }
}

/// Formats epoch milliseconds as RFC 3339 UTC with millisecond precision.
pub fn format_timestamp_ms(ms: i64) -> String {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        None => ms.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_formats() {
        let expected = 1_396_310_400_000; // 2014-04-01T00:00:00Z
        assert_eq!(parse_timestamp("2014-04-01 00:00:00").unwrap(), expected);
        assert_eq!(parse_timestamp("2014-04-01T00:00:00Z").unwrap(), expected);
        assert_eq!(
            parse_timestamp("2014-04-01T02:00:00+02:00").unwrap(),
            expected
        );
        assert_eq!(parse_timestamp("1396310400000").unwrap(), expected);
        assert_eq!(format_timestamp(expected), "2014-04-01T00:00:00Z");
    }

    #[test]
    fn refuses_garbage_with_the_value_in_the_message() {
        let message = parse_timestamp("yesterday").unwrap_err();
        assert!(message.contains("yesterday"));
    }
}
