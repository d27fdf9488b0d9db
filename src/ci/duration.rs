//! GitLab's human durations (`timeout: 1h 30m`, `expire_in: 2 days`), in seconds.

/// Parses `"3600"`, `"1h 30m"`, `"90 minutes"`, `"1 day"`, `"2w"`; `None` if it is not one.
pub fn parse_seconds(text: &str) -> Option<i64> {
    let text = text.trim().to_ascii_lowercase();
    if text.is_empty() {
        return None;
    }
    if let Ok(n) = text.parse::<i64>() {
        return (n >= 0).then_some(n);
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
        total += (number * factor) as i64;
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
}
