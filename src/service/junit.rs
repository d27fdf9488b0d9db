//! JUnit XML reports (`artifacts:reports:junit`), read when the runner uploads them, as
//! GitLab's `Gitlab::Ci::Parsers::Test::Junit` reads them: every `<testcase>` anywhere in
//! the document, its status from a `<failure>` (failed), `<error>` (error) or `<skipped>`
//! (skipped) child, else success; `time` as its execution time; the failure's text as
//! its output. Streamed (no tree, no recursion) and bounded: at most
//! [`MAX_XML_BYTES`] of XML, [`MAX_CASES`] cases, [`MAX_TEXT`] bytes of text per case; a
//! document past those, or not XML, is a `suite_error` (the upload itself is kept).

use quick_xml::events::{BytesStart, Event};
use serde::{Deserialize, Serialize};

/// The most XML (after gunzip) one report may hold.
pub const MAX_XML_BYTES: u64 = 32 * 1024 * 1024;
/// The most test cases one report may hold.
pub const MAX_CASES: usize = 50_000;
/// The most bytes of output or trace kept per case.
pub const MAX_TEXT: usize = 16 * 1024;

/// One test case, as GitLab's `test_report` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TestCase {
    pub status: String,
    pub name: String,
    pub classname: String,
    pub file: Option<String>,
    pub execution_time: f64,
    pub system_output: Option<String>,
    pub stack_trace: Option<String>,
}

/// A job's parsed report: its cases, or why it could not be read.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Report {
    pub cases: Vec<TestCase>,
    pub suite_error: Option<String>,
}

fn attribute(start: &BytesStart<'_>, name: &[u8]) -> Option<String> {
    start
        .attributes()
        .flatten()
        .find(|a| a.key.as_ref() == name)
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
}

fn truncated(mut text: String) -> String {
    if text.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Reads `xml`; never panics, whatever it holds.
pub fn parse(xml: &[u8]) -> Report {
    match cases(xml) {
        Ok(cases) => Report {
            cases,
            suite_error: None,
        },
        Err(message) => Report {
            cases: Vec::new(),
            suite_error: Some(message),
        },
    }
}

fn cases(xml: &[u8]) -> Result<Vec<TestCase>, String> {
    if xml.len() as u64 > MAX_XML_BYTES {
        return Err("JUnit XML parsing failed: the report is too large".into());
    }
    let mut reader = quick_xml::Reader::from_reader(xml);
    reader.config_mut().check_end_names = true;
    let mut out = Vec::new();
    let mut current: Option<TestCase> = None;
    // The child of the open test case whose text is being read (`failure`, `error`,
    // `skipped`, `system-out`), if any.
    let mut reading: Option<String> = None;
    let mut text = String::new();
    let mut buffer = Vec::new();
    loop {
        let event = reader
            .read_event_into(&mut buffer)
            .map_err(|e| format!("JUnit XML parsing failed: {e}"))?;
        let empty = matches!(event, Event::Empty(_));
        match event {
            Event::Start(start) | Event::Empty(start)
                if start.local_name().as_ref() == b"testcase" =>
            {
                if out.len() >= MAX_CASES {
                    return Err(format!(
                        "JUnit XML parsing failed: more than {MAX_CASES} test cases"
                    ));
                }
                let case = TestCase {
                    status: "success".into(),
                    name: attribute(&start, b"name").unwrap_or_default(),
                    classname: attribute(&start, b"classname").unwrap_or_default(),
                    file: attribute(&start, b"file"),
                    execution_time: attribute(&start, b"time")
                        .and_then(|t| t.trim().parse::<f64>().ok())
                        .filter(|t| t.is_finite() && *t >= 0.0)
                        .unwrap_or(0.0),
                    system_output: None,
                    stack_trace: None,
                };
                if empty {
                    out.push(case);
                } else {
                    current = Some(case);
                }
            }
            Event::Start(start) | Event::Empty(start) if current.is_some() => {
                let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                if let Some(case) = current.as_mut() {
                    match name.as_str() {
                        "failure" => case.status = "failed".into(),
                        "error" => case.status = "error".into(),
                        "skipped" => case.status = "skipped".into(),
                        _ => {}
                    }
                    if matches!(name.as_str(), "failure" | "error") {
                        case.system_output = attribute(&start, b"message").map(truncated);
                    }
                }
                text.clear();
                // An empty element has no text to read and no end.
                reading = (!empty).then_some(name);
            }
            Event::Text(t) if reading.is_some() && text.len() < MAX_TEXT => {
                text.push_str(
                    &t.unescape()
                        .map_err(|e| format!("JUnit XML parsing failed: {e}"))?,
                );
            }
            Event::CData(t) if reading.is_some() && text.len() < MAX_TEXT => {
                text.push_str(&String::from_utf8_lossy(&t));
            }
            Event::End(end) => {
                let name = end.local_name();
                if name.as_ref() == b"testcase" {
                    if let Some(case) = current.take() {
                        out.push(case);
                    }
                    reading = None;
                } else if reading.as_deref().map(str::as_bytes) == Some(name.as_ref()) {
                    if let Some(case) = current.as_mut() {
                        let body = truncated(std::mem::take(&mut text));
                        match reading.as_deref() {
                            Some("failure" | "error") if !body.trim().is_empty() => {
                                case.stack_trace = Some(body.clone());
                                case.system_output = case.system_output.take().or(Some(body));
                            }
                            Some("system-out")
                                if case.system_output.is_none() && !body.trim().is_empty() =>
                            {
                                case.system_output = Some(body);
                            }
                            _ => {}
                        }
                    }
                    reading = None;
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buffer.clear();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitlabs_statuses_and_fields() {
        let xml = br#"<?xml version="1.0"?>
<testsuites><testsuite name="unit">
  <testcase classname="math" name="adds" time="0.5"/>
  <testcase classname="math" name="divides" time="1.25" file="math_test.rb"><failure message="expected 2">got 3
at line 7</failure></testcase>
  <testcase classname="io" name="reads"><error message="boom"/></testcase>
  <testcase classname="io" name="later"><skipped/></testcase>
  <testsuite name="nested"><testcase classname="deep" name="inside" time="x"><system-out>hello</system-out></testcase></testsuite>
</testsuite></testsuites>"#;
        let report = parse(xml);
        assert_eq!(report.suite_error, None);
        let seen: Vec<(&str, &str, f64)> = report
            .cases
            .iter()
            .map(|c| (c.name.as_str(), c.status.as_str(), c.execution_time))
            .collect();
        assert_eq!(
            seen,
            [
                ("adds", "success", 0.5),
                ("divides", "failed", 1.25),
                ("reads", "error", 0.0),
                ("later", "skipped", 0.0),
                ("inside", "success", 0.0)
            ]
        );
        assert_eq!(report.cases[1].file.as_deref(), Some("math_test.rb"));
        assert_eq!(report.cases[1].system_output.as_deref(), Some("expected 2"));
        assert_eq!(
            report.cases[1].stack_trace.as_deref(),
            Some("got 3\nat line 7")
        );
        assert_eq!(report.cases[2].system_output.as_deref(), Some("boom"));
        assert_eq!(report.cases[4].system_output.as_deref(), Some("hello"));
    }

    #[test]
    fn bad_documents_are_suite_errors() {
        for bad in [
            &b"<testsuite><testcase name='a'></testsuite>"[..],
            b"not xml <<<",
            b"<a><b></a>",
        ] {
            let report = parse(bad);
            assert!(
                report
                    .suite_error
                    .is_some_and(|e| e.starts_with("JUnit XML parsing failed")),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let many: String = "<testcase name='t'/>".repeat(MAX_CASES + 1);
        let report = parse(format!("<testsuite>{many}</testsuite>").as_bytes());
        assert!(report.suite_error.is_some());
        // Deep nesting needs no stack of ours.
        let deep = format!("{}{}", "<a>".repeat(100_000), "</a>".repeat(100_000));
        assert_eq!(parse(deep.as_bytes()).cases, Vec::new());
        let long = format!(
            "<testcase name='x'><failure>{}</failure></testcase>",
            "y".repeat(MAX_TEXT * 4)
        );
        let report = parse(long.as_bytes());
        assert!(report.cases[0]
            .stack_trace
            .as_ref()
            .is_some_and(|t| t.len() <= MAX_TEXT));
    }
}
