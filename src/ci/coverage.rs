//! `coverage`: the number a job's regular expression finds in its log when it ends, as
//! GitLab reads it (`Gitlab::Ci::Trace::Stream#extract_coverage`): the last line with a
//! match wins; in that line the last match (its last group, when it has groups), and in
//! that the first number.

use regex::Regex;

/// The longest line looked at whole; a longer one is read in pieces of this size, so that
/// memory stays bounded whatever the log.
const MAX_LINE: usize = 1024 * 1024;

/// Reads a log a piece at a time and keeps the coverage its last matching line gives.
pub struct CoverageScanner {
    regex: Regex,
    number: Regex,
    carry: Vec<u8>,
    found: Option<f64>,
}

impl CoverageScanner {
    /// A scanner for `pattern` as written in `.gitlab-ci.yml` (`/…/flags`); `None` if it
    /// is not one.
    pub fn new(pattern: &str) -> Option<CoverageScanner> {
        let (body, flags) = super::policy::as_regex(pattern)?;
        Some(CoverageScanner {
            regex: super::policy::compile(body, flags)?,
            number: Regex::new(r"\d+(\.\d+)?").ok()?,
            carry: Vec::new(),
            found: None,
        })
    }

    /// Feeds the next bytes of the log.
    pub fn feed(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while let Some(end) = rest.iter().position(|b| *b == b'\n') {
            self.carry.extend_from_slice(&rest[..end]);
            self.line();
            rest = &rest[end + 1..];
        }
        self.carry.extend_from_slice(rest);
        if self.carry.len() >= MAX_LINE {
            self.line();
        }
    }

    /// The coverage of the whole log fed.
    pub fn finish(mut self) -> Option<f64> {
        if !self.carry.is_empty() {
            self.line();
        }
        self.found
    }

    fn line(&mut self) {
        let text = String::from_utf8_lossy(&self.carry);
        let text = text.strip_suffix('\r').unwrap_or(&text);
        if let Some(caps) = self.regex.captures_iter(text).last() {
            // `scan` with groups answers the groups: flattened, the last one — which may
            // not have taken part (nil: GitLab's extraction then fails, and the job has no
            // coverage unless a later line gives one).
            let matched = if caps.len() > 1 {
                caps.get(caps.len() - 1).map(|m| m.as_str())
            } else {
                caps.get(0).map(|m| m.as_str())
            };
            match matched {
                None => self.found = None,
                Some(m) => {
                    // A match without a number leaves what an earlier line gave.
                    if let Some(value) = self
                        .number
                        .find(m)
                        .and_then(|n| n.as_str().parse::<f64>().ok())
                    {
                        self.found = Some(value);
                    }
                }
            }
        }
        self.carry.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::CoverageScanner;

    fn coverage(pattern: &str, log: &str, piece: usize) -> Option<f64> {
        let mut scanner = CoverageScanner::new(pattern).expect("a pattern");
        for chunk in log.as_bytes().chunks(piece) {
            scanner.feed(chunk);
        }
        scanner.finish()
    }

    #[test]
    fn the_last_matching_line_gives_the_number() {
        let log = "Coverage: 12.5%\nrunning\r\nTOTAL   120   10   91.67%\r\nCoverage: 45%\ndone\n";
        for piece in [1, 3, 7, 1000] {
            assert_eq!(
                coverage("/Coverage: \\d+(?:\\.\\d+)?%/", log, piece),
                Some(45.0)
            );
            // GitLab's quirk: the last group did not take part in the last match.
            assert_eq!(coverage("/Coverage: \\d+(\\.\\d+)?%/", log, piece), None);
            assert_eq!(
                coverage("/^TOTAL.+?(\\d+\\.\\d+%)$/", log, piece),
                Some(91.67)
            );
        }
        // The last match of the line, and in it the first number.
        assert_eq!(
            coverage("/\\d+ of \\d+/", "3 of 10 then 7 of 9\n", 4),
            Some(7.0)
        );
        assert_eq!(
            coverage("/lines: \\d+/i", "LINES: 88", 2),
            Some(88.0),
            "no final newline"
        );
        assert_eq!(coverage("/nothing/", "no match here\n", 5), None);
        assert_eq!(
            coverage("/Coverage/", "Coverage without a number\n", 5),
            None
        );
        assert!(
            CoverageScanner::new("Coverage: (\\d+)").is_none(),
            "not /…/"
        );
        assert!(CoverageScanner::new("/(/").is_none());
    }

    #[test]
    fn a_huge_line_is_read_in_pieces() {
        let mut scanner = CoverageScanner::new("/cov (\\d+)/").expect("pattern");
        let line = vec![b'x'; 3 * super::MAX_LINE];
        scanner.feed(&line);
        scanner.feed(b" cov 42\n");
        assert_eq!(scanner.finish(), Some(42.0));
    }
}
