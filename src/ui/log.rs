//! A job log as HTML: ANSI SGR colours become `<span class>`es, and GitLab's section markers
//! (`section_start:<ts>:<name>[collapsed=true]\r\e[0K` … `section_end:<ts>:<name>\r\e[0K`)
//! become collapsible `<details>`.
//!
//! The log is rendered a piece at a time so that the page can follow a running job: the
//! renderer's [`LogState`] (the open style and sections) goes to the browser as a short
//! string and comes back with the next request, and each request renders only the bytes
//! after its offset. Only complete lines are consumed while the job runs, so a line is never
//! rendered twice.

use std::fmt::Write;

use regex::Regex;
use serde::Serialize;

use super::html::escape;

/// A line longer than this is rendered even before its newline comes.
const MAX_PENDING_LINE: usize = 64 * 1024;
/// The most sections open at once that a state may carry (the string stays short).
const MAX_DEPTH: usize = 32;

/// The colours and attributes in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Style {
    fg: Option<Colour>,
    bg: Option<Colour>,
    bold: bool,
    italic: bool,
    underline: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Colour {
    /// One of the 16 terminal colours (8–15 bright): a CSS class.
    Basic(u8),
    /// The xterm 256-colour palette above 15, or true colour: an inline style.
    Rgb(u8, u8, u8),
}

impl Style {
    /// Applies one SGR sequence's parameters (`1;31`, `38;5;208`, empty = reset).
    fn apply(&mut self, params: &str) {
        let nums: Vec<u16> = params
            .split([';', ':'])
            .map(|p| p.parse().unwrap_or(0))
            .collect();
        let mut i = 0;
        while i < nums.len() {
            match nums[i] {
                0 => *self = Style::default(),
                1 => self.bold = true,
                3 => self.italic = true,
                4 => self.underline = true,
                22 => self.bold = false,
                23 => self.italic = false,
                24 => self.underline = false,
                n @ 30..=37 => self.fg = Some(Colour::Basic((n - 30) as u8)),
                n @ 90..=97 => self.fg = Some(Colour::Basic((n - 90 + 8) as u8)),
                39 => self.fg = None,
                n @ 40..=47 => self.bg = Some(Colour::Basic((n - 40) as u8)),
                n @ 100..=107 => self.bg = Some(Colour::Basic((n - 100 + 8) as u8)),
                49 => self.bg = None,
                n @ (38 | 48) => {
                    let (colour, used) = extended(&nums[i + 1..]);
                    if n == 38 {
                        self.fg = colour.or(self.fg);
                    } else {
                        self.bg = colour.or(self.bg);
                    }
                    i += used;
                }
                _ => {}
            }
            i += 1;
        }
    }

    /// The SGR parameters that rebuild this style from the default one.
    fn to_sgr(&self) -> String {
        let mut p: Vec<String> = Vec::new();
        if self.bold {
            p.push("1".into());
        }
        if self.italic {
            p.push("3".into());
        }
        if self.underline {
            p.push("4".into());
        }
        for (colour, base) in [(self.fg, 38), (self.bg, 48)] {
            match colour {
                Some(Colour::Basic(n)) => p.push(format!("{base};5;{n}")),
                Some(Colour::Rgb(r, g, b)) => p.push(format!("{base};2;{r};{g};{b}")),
                None => {}
            }
        }
        p.join(";")
    }

    /// The opening tag of a span in this style; `None` for the default style.
    fn span(&self) -> Option<String> {
        if *self == Style::default() {
            return None;
        }
        let mut classes: Vec<String> = Vec::new();
        let mut css = String::new();
        for (colour, prefix, property) in [(self.fg, "fg", "color"), (self.bg, "bg", "background")]
        {
            match colour {
                Some(Colour::Basic(n)) => classes.push(format!("{prefix}{n}")),
                Some(Colour::Rgb(r, g, b)) => {
                    let _ = write!(css, "{property}:#{r:02x}{g:02x}{b:02x};");
                }
                None => {}
            }
        }
        for (on, class) in [(self.bold, "b"), (self.italic, "i"), (self.underline, "u")] {
            if on {
                classes.push(class.into());
            }
        }
        let mut tag = String::from("<span");
        if !classes.is_empty() {
            let _ = write!(tag, " class=\"{}\"", classes.join(" "));
        }
        if !css.is_empty() {
            let _ = write!(tag, " style=\"{css}\"");
        }
        tag.push('>');
        Some(tag)
    }
}

/// `5;n` or `2;r;g;b` after a 38/48: the colour and how many parameters it used.
fn extended(rest: &[u16]) -> (Option<Colour>, usize) {
    match rest {
        [5, n, ..] => {
            let n = (*n).min(255) as u8;
            (Some(xterm(n)), 2)
        }
        [2, r, g, b, ..] => (
            Some(Colour::Rgb(
                (*r).min(255) as u8,
                (*g).min(255) as u8,
                (*b).min(255) as u8,
            )),
            4,
        ),
        _ => (None, rest.len()),
    }
}

/// The xterm palette: 0–15 named, 16–231 a 6×6×6 cube, 232–255 greys.
fn xterm(n: u8) -> Colour {
    match n {
        0..=15 => Colour::Basic(n),
        16..=231 => {
            let level = |v: u8| if v == 0 { 0 } else { 55 + v * 40 };
            let i = n - 16;
            Colour::Rgb(level(i / 36), level((i / 6) % 6), level(i % 6))
        }
        _ => {
            let grey = 8 + (n - 232) * 10;
            Colour::Rgb(grey, grey, grey)
        }
    }
}

/// Where rendering stopped: the style in force and the open sections, outermost first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogState {
    style: Style,
    sections: Vec<String>,
}

impl LogState {
    /// The state as `<sgr params>|<section>,<section>`: short, URL-safe once encoded.
    pub fn encode(&self) -> String {
        format!("{}|{}", self.style.to_sgr(), self.sections.join(","))
    }

    /// The state a browser sent back; `None` when it is not one [`LogState::encode`] makes.
    pub fn decode(text: &str) -> Option<LogState> {
        let (sgr, sections) = text.split_once('|')?;
        if sgr.len() > 64 || !sgr.bytes().all(|b| b.is_ascii_digit() || b == b';') {
            return None;
        }
        let mut style = Style::default();
        style.apply(sgr);
        let sections: Vec<String> = if sections.is_empty() {
            Vec::new()
        } else {
            sections.split(',').map(str::to_string).collect()
        };
        let valid = sections.len() <= MAX_DEPTH && sections.iter().all(|s| valid_name(s));
        valid.then_some(LogState { style, sections })
    }

    /// How many sections are open.
    pub fn depth(&self) -> usize {
        self.sections.len()
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// One rendered piece of a log, as the browser builds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "t")]
pub enum Item {
    /// A line of log (escaped HTML).
    #[serde(rename = "l")]
    Line { h: String },
    /// A section opens: `h` is its header line (escaped HTML), `c` whether it starts closed.
    #[serde(rename = "s")]
    Start { n: String, h: String, c: bool },
    /// `p` sections close (the named one and any left open inside it).
    #[serde(rename = "e")]
    End { p: usize },
}

/// The rendered part of a log.
#[derive(Debug)]
pub struct Rendered {
    pub items: Vec<Item>,
    /// Bytes of the input consumed (whole lines unless `finished`).
    pub consumed: usize,
    pub state: LogState,
}

fn marker() -> &'static Regex {
    static RE: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        // The runner writes `\e[0Ksection_start:…\r\e[0K`; the leading erase is optional.
        Regex::new(
            r"(?:\x1b\[0K)?section_(start|end):(\d+):([A-Za-z0-9_.-]+)(\[[^\]\r\n]*\])?\r\x1b\[0K",
        )
        .expect("the section marker pattern is valid")
    })
}

/// Renders `bytes` (the log from where `state` left off). While the job runs
/// (`finished == false`) a trailing partial line is left for the next call, unless it is
/// already longer than [`MAX_PENDING_LINE`].
pub fn render(bytes: &[u8], mut state: LogState, finished: bool) -> Rendered {
    let consumed = if finished || bytes.len() - last_newline(bytes) > MAX_PENDING_LINE {
        bytes.len()
    } else {
        last_newline(bytes)
    };
    let text = String::from_utf8_lossy(&bytes[..consumed]);
    let mut items = Vec::new();
    let mut lines: Vec<&str> = text.split('\n').collect();
    if text.ends_with('\n') || text.is_empty() {
        lines.pop();
    }
    for line in lines {
        render_line(line, &mut state, &mut items);
    }
    Rendered {
        items,
        consumed,
        state,
    }
}

/// The length up to and including the last `\n` (0 when there is none).
fn last_newline(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1)
}

fn render_line(line: &str, state: &mut LogState, items: &mut Vec<Item>) {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let Some(first) = marker().find(line) else {
        items.push(Item::Line {
            h: spans(line, &mut state.style),
        });
        return;
    };
    push_text(&line[..first.start()], state, items);
    let mut rest = &line[first.start()..];
    while let Some(caps) = marker().captures(rest) {
        let end = caps.get(0).map_or(0, |m| m.end());
        let name = caps.get(3).map_or("", |m| m.as_str()).to_string();
        let collapsed = caps
            .get(4)
            .is_some_and(|m| m.as_str().contains("collapsed=true"));
        let start = &caps[1] == "start";
        rest = &rest[end..];
        // The text up to the next marker belongs to this one: a start's header, or an
        // ordinary line after an end.
        let next = marker().find(rest).map_or(rest.len(), |m| m.start());
        let text = &rest[..next];
        rest = &rest[next..];
        if start && state.sections.len() < MAX_DEPTH {
            let h = spans(text, &mut state.style);
            state.sections.push(name.clone());
            items.push(Item::Start {
                n: name,
                h,
                c: collapsed,
            });
            continue;
        }
        if !start {
            if let Some(at) = state.sections.iter().rposition(|s| *s == name) {
                items.push(Item::End {
                    p: state.sections.len() - at,
                });
                state.sections.truncate(at);
            }
        }
        push_text(text, state, items);
    }
}

/// A line's text around markers: a line when it shows anything (its escapes apply anyway).
fn push_text(text: &str, state: &mut LogState, items: &mut Vec<Item>) {
    let h = spans(text, &mut state.style);
    if !h.is_empty() {
        items.push(Item::Line { h });
    }
}

/// One line of text with its escapes applied: styled runs as spans, HTML escaped, a `\r`
/// overwriting what came before it on the line (as a terminal shows a progress line).
fn spans(text: &str, style: &mut Style) -> String {
    // (style, text) runs of the line so far.
    let mut runs: Vec<(Style, String)> = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.peek() {
                Some('[') => {
                    chars.next();
                    let mut params = String::new();
                    let mut last = None;
                    for c in chars.by_ref() {
                        if ('\x40'..='\x7e').contains(&c) {
                            last = Some(c);
                            break;
                        }
                        params.push(c);
                    }
                    if last == Some('m') && params.len() <= 64 {
                        style.apply(&params);
                    }
                }
                Some(_) => {
                    chars.next();
                }
                None => {}
            },
            '\r' => runs.clear(),
            c if c.is_control() && c != '\t' => {}
            c => match runs.last_mut() {
                Some((s, t)) if s == style => t.push(c),
                _ => runs.push((style.clone(), c.to_string())),
            },
        }
    }
    let mut html = String::new();
    for (style, text) in runs {
        match style.span() {
            Some(open) => {
                html.push_str(&open);
                html.push_str(&escape(&text));
                html.push_str("</span>");
            }
            None => html.push_str(&escape(&text)),
        }
    }
    html
}

/// The whole rendered log as nested HTML (for the page, so that it reads without scripts).
pub fn to_html(items: &[Item], open_at_end: usize) -> String {
    let mut html = String::new();
    let mut depth = 0usize;
    for item in items {
        match item {
            Item::Line { h } => {
                let _ = write!(html, "<div class=\"ln\">{h}</div>");
            }
            Item::Start { n, h, c } => {
                depth += 1;
                let open = if *c { "" } else { " open" };
                let _ = write!(
                    html,
                    "<details class=\"sec\" data-section=\"{}\"{open}><summary>{h}</summary><div class=\"body\">",
                    escape(n)
                );
            }
            Item::End { p } => {
                let p = (*p).min(depth);
                depth -= p;
                for _ in 0..p {
                    html.push_str("</div></details>");
                }
            }
        }
    }
    debug_assert_eq!(depth, open_at_end);
    for _ in 0..depth {
        html.push_str("</div></details>");
    }
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    fn html(log: &str) -> String {
        let r = render(log.as_bytes(), LogState::default(), true);
        to_html(&r.items, r.state.depth())
    }

    #[test]
    fn colours_become_classes_and_html_is_escaped() {
        assert_eq!(
            html("\x1b[32;1mok <b>&\x1b[0m plain\n"),
            "<div class=\"ln\"><span class=\"fg2 b\">ok &lt;b&gt;&amp;</span> plain</div>"
        );
        assert_eq!(
            html("\x1b[91mred\x1b[39m \x1b[38;5;208mor\x1b[48;2;1;2;3mx\n"),
            "<div class=\"ln\"><span class=\"fg9\">red</span> <span style=\"color:#ff8700;\">or</span><span style=\"color:#ff8700;background:#010203;\">x</span></div>"
        );
    }

    #[test]
    fn styles_carry_across_lines_and_other_escapes_vanish() {
        assert_eq!(
            html("\x1b[31ma\nb\x1b[0m\x1b[0K\x1b[2Jc\n"),
            "<div class=\"ln\"><span class=\"fg1\">a</span></div><div class=\"ln\"><span class=\"fg1\">b</span>c</div>"
        );
    }

    #[test]
    fn carriage_return_overwrites_the_line() {
        assert_eq!(html("10%\r50%\r100%\r\n"), "<div class=\"ln\">100%</div>");
    }

    #[test]
    fn sections_become_details_collapsed_when_asked() {
        let log = "\x1b[0Ksection_start:1700000000:prepare[collapsed=true]\r\x1b[0K\x1b[36mPreparing\x1b[0m\n\
                   inside\n\
                   \x1b[0Ksection_end:1700000001:prepare\r\x1b[0K\n\
                   section_start:1700000001:step_script\r\x1b[0KScript\n\
                   $ echo hi\n";
        assert_eq!(
            html(log),
            "<details class=\"sec\" data-section=\"prepare\"><summary><span class=\"fg6\">Preparing</span></summary>\
             <div class=\"body\"><div class=\"ln\">inside</div></div></details>\
             <details class=\"sec\" data-section=\"step_script\" open><summary>Script</summary>\
             <div class=\"body\"><div class=\"ln\">$ echo hi</div></div></details>"
        );
    }

    #[test]
    fn an_end_closes_the_named_section_and_those_inside_it() {
        let log = "section_start:1:outer\r\x1b[0Ko\nsection_start:2:inner\r\x1b[0Ki\nsection_end:3:outer\r\x1b[0Kafter\nsection_end:4:unknown\r\x1b[0K\n";
        let r = render(log.as_bytes(), LogState::default(), true);
        assert_eq!(
            r.items[2..],
            [Item::End { p: 2 }, Item::Line { h: "after".into() }]
        );
        assert_eq!(r.state.depth(), 0);
    }

    #[test]
    fn pieces_render_as_the_whole_does() {
        let log = "section_start:1:a\r\x1b[0KA\n\x1b[33myellow\nstill\npartial line";
        let whole = render(log.as_bytes(), LogState::default(), false);
        assert_eq!(whole.consumed, log.len() - "partial line".len());
        let mut items = Vec::new();
        let mut state = LogState::default();
        let mut offset = 0;
        for cut in [3, 25, 40, log.len()] {
            let piece = render(
                &log.as_bytes()[offset..cut.max(offset)],
                LogState::decode(&state.encode()).expect("round trip"),
                false,
            );
            offset += piece.consumed;
            items.extend(piece.items);
            state = piece.state;
        }
        assert_eq!(offset, whole.consumed);
        assert_eq!(items, whole.items);
        assert_eq!(state, whole.state);
        assert_eq!(state.encode(), "38;5;3|a");
    }

    #[test]
    fn states_from_browsers_are_checked() {
        assert_eq!(LogState::decode("|"), Some(LogState::default()));
        assert_eq!(LogState::decode("1;31|a,b.c").map(|s| s.depth()), Some(2));
        for bad in ["", "x|", "1|a b", "1|<script>", "1|a,,b"] {
            assert_eq!(LogState::decode(bad), None, "{bad:?}");
        }
    }
}
