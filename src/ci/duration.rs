//! GitLab's human durations (`timeout: 1h 30m`, `expire_in: 2 days`), in seconds.

/// The longest duration read: 1,000 years. Anything longer is no duration (`None`), so
/// that every value read fits a timestamp added to now in chrono and in both databases
/// (ChronicDuration has no such bound, and GitLab then fails when it stores the time).
pub const MAX_SECONDS: i64 = 1_000 * 31_557_600;

/// At most this many characters are read as a duration (`"1 day 2 hours …"` stays short).
const MAX_TEXT: usize = 256;

/// Parses `"3600"`, `"1h 30m"`, `"90 minutes"`, `"1 day"`, `"2w"`; `None` if it is not one,
/// or if it is longer than [`MAX_SECONDS`].
pub fn parse_seconds(text: &str) -> Option<i64> {
    if text.len() > MAX_TEXT {
        return None;
    }
    let text = text.trim().to_ascii_lowercase();
    if text.is_empty() {
        return None;
    }
    if let Ok(n) = text.parse::<i64>() {
        return (0..=MAX_SECONDS).contains(&n).then_some(n);
    }
    let mut total: i64 = 0;
    let mut rest = text.as_str();
    let mut parsed_any = false;
    while !rest.is_empty() {
        rest = rest
            .trim_start_matches([' ', ','])
            .trim_start_matches("and ")
            .trim_start();
        if rest.is_empty() {
            break;
        }
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = rest[digits..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let factor = match unit {
            "" | "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
            "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86_400.0,
            "w" | "wk" | "wks" | "week" | "weeks" => 604_800.0,
            "mo" | "mon" | "mons" | "month" | "months" => 2_592_000.0,
            "y" | "yr" | "yrs" | "year" | "years" => 31_557_600.0,
            _ => return None,
        };
        let seconds = number * factor;
        if !seconds.is_finite() || seconds > MAX_SECONDS as f64 {
            return None;
        }
        // Each part is at most MAX_SECONDS, so the sum is checked against it before it
        // could overflow.
        total = total
            .checked_add(seconds as i64)
            .filter(|t| *t <= MAX_SECONDS)?;
        parsed_any = true;
    }
    parsed_any.then_some(total)
}

#[cfg(test)]
mod tests {
    use super::parse_seconds;

    #[test]
    fn durations() {
        assert_eq!(parse_seconds("3600"), Some(3600));
        assert_eq!(parse_seconds("1h 30m"), Some(5400));
        assert_eq!(parse_seconds("90 minutes"), Some(5400));
        assert_eq!(parse_seconds("1 day"), Some(86_400));
        assert_eq!(parse_seconds("2w"), Some(1_209_600));
        assert_eq!(parse_seconds("1 hour and 20 minutes"), Some(4800));
        assert_eq!(parse_seconds("soon"), None);
        assert_eq!(parse_seconds(""), None);
    }

    #[test]
    fn durations_too_long_to_store_are_none() {
        assert_eq!(parse_seconds("1000 years"), Some(super::MAX_SECONDS));
        assert_eq!(parse_seconds("1001 years"), None);
        assert_eq!(parse_seconds("99999999999999999 years"), None);
        assert_eq!(
            parse_seconds("9223372036854775807 seconds 9223372036854775807 seconds"),
            None
        );
        assert_eq!(parse_seconds("9223372036854775807"), None);
        assert_eq!(parse_seconds(&"9".repeat(400)), None);
        assert_eq!(parse_seconds(&"1s ".repeat(200)), None, "longer than read");
        assert_eq!(parse_seconds("999 years 999 years"), None);
    }
}
