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
    let text = numerize(&text)?;
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
        // ChronicDuration: a text that starts with a unit means one of it (`day`).
        let number: f64 = match &rest[..digits] {
            "" if !parsed_any => 1.0,
            digits => digits.parse().ok()?,
        };
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
            "d" | "dy" | "day" | "days" => 86_400.0,
            "w" | "wk" | "wks" | "week" | "weeks" => 604_800.0,
            "mo" | "mos" | "mon" | "mons" | "month" | "months" => 2_592_000.0,
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

/// Numbers written in words become digits, as ChronicDuration's Numerizer reads them
/// (`one week`, `twenty-one days`, `two hundred hours`); the joining words `and`, `with`,
/// `plus` go. `None` when a number in words is out of all proportion.
fn numerize(text: &str) -> Option<String> {
    fn small(word: &str) -> Option<u64> {
        const WORDS: [&str; 20] = [
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
            "thirteen",
            "fourteen",
            "fifteen",
            "sixteen",
            "seventeen",
            "eighteen",
            "nineteen",
        ];
        const TENS: [&str; 8] = [
            "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
        ];
        match word {
            "ninteen" => Some(19),
            "fourty" => Some(40),
            _ => WORDS
                .iter()
                .position(|w| *w == word)
                .map(|n| n as u64)
                .or_else(|| {
                    TENS.iter()
                        .position(|w| *w == word)
                        .map(|n| 20 + 10 * n as u64)
                }),
        }
    }
    fn scale(word: &str) -> Option<u64> {
        match word {
            "hundred" => Some(100),
            "thousand" => Some(1_000),
            "million" => Some(1_000_000),
            _ => None,
        }
    }
    let spaced = text.replace('-', " ");
    let mut out: Vec<String> = Vec::new();
    // The number being read: what is complete (thousands…) and the part under a hundred.
    let mut reading: Option<(u64, u64)> = None;
    let flush = |reading: &mut Option<(u64, u64)>, out: &mut Vec<String>| {
        if let Some((done, part)) = reading.take() {
            out.push((done + part).to_string());
        }
    };
    for word in spaced.split_whitespace() {
        if let Some(n) = small(word) {
            let (done, part) = reading.unwrap_or((0, 0));
            reading = Some((done, part.checked_add(n)?));
        } else if let Some(factor) = scale(word) {
            let (done, part) = reading.unwrap_or((0, 0));
            let part = part.max(1).checked_mul(factor)?;
            reading = Some(if factor >= 1_000 {
                (done.checked_add(part)?, 0)
            } else {
                (done, part)
            });
        } else if matches!(word, "and" | "with" | "plus") {
            // `one hundred and five`: still the same number; between parts: a joiner.
            continue;
        } else {
            flush(&mut reading, &mut out);
            out.push(word.to_string());
        }
    }
    flush(&mut reading, &mut out);
    Some(out.join(" "))
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
        // Numbers in words and a unit alone, as ChronicDuration reads them.
        assert_eq!(parse_seconds("one week"), Some(604_800));
        assert_eq!(parse_seconds("two hours and thirty minutes"), Some(9_000));
        assert_eq!(parse_seconds("twenty-one days"), Some(21 * 86_400));
        assert_eq!(parse_seconds("twenty one days"), Some(21 * 86_400));
        assert_eq!(parse_seconds("one hundred and five seconds"), Some(105));
        assert_eq!(parse_seconds("day"), Some(86_400));
        assert_eq!(parse_seconds("3 mos"), Some(3 * 2_592_000));
        assert_eq!(parse_seconds("a day"), None, "Numerizer does not read `a`");
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
