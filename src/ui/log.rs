//! A job log as HTML: ANSI SGR colours become `<span class>`es, and GitLab's section markers
//! (`section_start:<ts>:<name>[collapsed=true]\r\e[0K` … `section_end:<ts>:<name>\r\e[0K`)
//! become collapsible `<details>`.
//!
//! Lines are numbered from 1 (a section's header line counts as one), and a section's
//! header shows how long it took once its end marker comes (the markers' timestamps, as
//! GitLab shows them).
//!
//! The log is rendered a piece at a time so that the page can follow a running job: the
//! renderer's [`LogState`] (the open style and sections, the line count) goes to the browser
//! as a short string and comes back with the next request, and each request renders only the
//! bytes after its offset. Only complete lines are consumed while the job runs, so a line is
//! never rendered twice; the unfinished last line is rendered on its own
//! ([`Rendered::partial`]) for the page to show until the rest of it comes.
//!
//! A long log's page starts at a line near its end: [`scan`] finds the state the part before
//! it leaves (cheaply: no HTML), and [`reopened`] opens again the sections still open there.

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

/// A section that has started and not ended: its name and its start marker's timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Open {
    name: String,
    started: u64,
}

/// Where rendering stopped: the style in force, the open sections (outermost first) and
/// how many lines were numbered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogState {
    style: Style,
    sections: Vec<Open>,
    lines: u64,
}

impl LogState {
    /// The state as `<sgr params>|<section>@<ts>,…|<lines>`: short, URL-safe once encoded.
    pub fn encode(&self) -> String {
        let sections: Vec<String> = self
            .sections
            .iter()
            .map(|s| format!("{}@{}", s.name, s.started))
            .collect();
        format!(
            "{}|{}|{}",
            self.style.to_sgr(),
            sections.join(","),
            self.lines
        )
    }

    /// The state a browser sent back; `None` when it is not one [`LogState::encode`] makes.
    pub fn decode(text: &str) -> Option<LogState> {
        let mut parts = text.split('|');
        let (sgr, sections, lines) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some()
            || sgr.len() > 64
            || !sgr.bytes().all(|b| b.is_ascii_digit() || b == b';')
        {
            return None;
        }
        let mut style = Style::default();
        style.apply(sgr);
        let sections: Vec<Open> = if sections.is_empty() {
            Vec::new()
        } else {
            sections
                .split(',')
                .map(|s| {
                    let (name, started) = s.split_once('@')?;
                    valid_name(name).then_some(())?;
                    Some(Open {
                        name: name.to_string(),
                        started: started.parse().ok()?,
                    })
                })
                .collect::<Option<_>>()?
        };
        let lines = lines.parse().ok()?;
        (sections.len() <= MAX_DEPTH).then_some(LogState {
            style,
            sections,
            lines,
        })
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
    /// Line `l` of the log (escaped HTML).
    #[serde(rename = "l")]
    Line { l: u64, h: String },
    /// Section `n` opens: `h` is its header line `l` (escaped HTML; `l` is 0 for a section
    /// opened again after a cut), `c` whether it starts closed.
    #[serde(rename = "s")]
    Start {
        n: String,
        l: u64,
        h: String,
        c: bool,
    },
    /// `p` sections close (the named one and any left open inside it); the named one took
    /// `d` seconds, by its markers.
    #[serde(rename = "e")]
    End { p: usize, d: u64 },
}

/// The rendered part of a log.
#[derive(Debug)]
pub struct Rendered {
    pub items: Vec<Item>,
    /// Bytes of the input consumed (whole lines unless `finished`).
    pub consumed: usize,
    pub state: LogState,
    /// The line after the consumed bytes, not finished yet, as HTML (numbered as the next
    /// line): shown until the next call renders it whole. `None` when there is none, or
    /// when it holds a section marker (its items wait for the newline).
    pub partial: Option<Line>,
}

/// A line rendered on its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Line {
    pub l: u64,
    pub h: String,
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
    for line in lines(&text) {
        render_line(line, &mut state, &mut items, true);
    }
    let partial = render_partial(&bytes[consumed..], &state);
    Rendered {
        items,
        consumed,
        state,
        partial,
    }
}

/// The unfinished last line, rendered from a copy of `state` (the next call renders it
/// again, whole, from the real one).
fn render_partial(rest: &[u8], state: &LogState) -> Option<Line> {
    let text = String::from_utf8_lossy(rest);
    if text.is_empty() || marker().is_match(&text) {
        return None;
    }
    let mut style = state.style.clone();
    let h = spans(text.strip_suffix('\r').unwrap_or(&text), &mut style, true);
    Some(Line {
        l: state.lines + 1,
        h,
    })
}

/// The lines of `text`, without their newlines (and no empty last one after a final `\n`).
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let any = !text.is_empty();
    let text = text.strip_suffix('\n').unwrap_or(text);
    text.split('\n').filter(move |_| any)
}

/// The state after `bytes` (whole lines) from `state`, as [`render`] would leave it, without
/// building the HTML of lines that change nothing but the count.
pub fn scan(bytes: &[u8], mut state: LogState) -> LogState {
    let mut scratch = Vec::new();
    for line in bytes.split(|b| *b == b'\n') {
        if !line.contains(&0x1b) && !contains(line, b"section_") {
            state.lines += 1;
            continue;
        }
        render_line(
            &String::from_utf8_lossy(line),
            &mut state,
            &mut scratch,
            false,
        );
        scratch.clear();
    }
    // `split` yields an empty piece after a final newline: it is no line.
    if bytes.is_empty() || bytes.ends_with(b"\n") {
        state.lines -= 1;
    }
    state
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Where a page showing the last `keep` bytes of `bytes` starts: the start of the first
/// whole line in them (0 when all fit). When the last line alone is longer than `keep`,
/// inside it: `keep` bytes before the end, moved back to the start of an escape sequence
/// it would split and forward to a character's first byte (see [`scan`] for the state
/// before such a cut).
pub fn tail_start(bytes: &[u8], keep: usize) -> usize {
    if bytes.len() <= keep {
        return 0;
    }
    let from = bytes.len() - keep;
    let start = bytes[from - 1..]
        .iter()
        .position(|b| *b == b'\n')
        .map_or(bytes.len(), |i| from + i);
    if start < bytes.len() {
        return start;
    }
    let mut cut = from;
    // An escape sequence the cut would split (they are short): cut before its ESC.
    let window = &bytes[cut.saturating_sub(MAX_ESCAPE)..cut];
    if let Some(esc) = window.iter().rposition(|b| *b == 0x1b) {
        let after = &window[esc + 1..];
        let finished = after.len() >= 2
            && after[0] == b'['
            && after[1..].iter().any(|b| (0x40..=0x7e).contains(b));
        let bare = after.len() == 1 && after[0] != b'[';
        if !finished && !bare {
            cut = cut.saturating_sub(MAX_ESCAPE) + esc;
        }
    }
    // Not inside a UTF-8 character.
    while cut < bytes.len() && (bytes[cut] & 0xc0) == 0x80 {
        cut += 1;
    }
    cut
}

/// The longest escape sequence [`tail_start`] keeps whole (the renderer ignores SGR
/// parameters longer than 64 anyway).
const MAX_ESCAPE: usize = 72;

/// Whether a page starting at `cut` (from [`tail_start`]) starts inside a line.
fn cut_inside_line(bytes: &[u8], cut: usize) -> bool {
    cut > 0 && bytes.get(cut - 1) != Some(&b'\n')
}

/// The state a page starting at `cut` (from [`tail_start`]) starts from: what [`scan`]
/// leaves, and when the cut is inside a line, that line's number for the rest of it.
pub fn state_before(bytes: &[u8], cut: usize) -> LogState {
    let mut state = scan(&bytes[..cut], LogState::default());
    if cut_inside_line(bytes, cut) {
        // The piece before the cut was counted as a line; the page goes on with it.
        state.lines = state.lines.saturating_sub(1);
    }
    state
}

/// The sections still open in `state`, opened again (unnumbered, open) for a page that
/// starts after their start markers.
pub fn reopened(state: &LogState) -> Vec<Item> {
    state
        .sections
        .iter()
        .map(|s| Item::Start {
            n: s.name.clone(),
            l: 0,
            h: format!("{} (started earlier)", escape(&s.name)),
            c: false,
        })
        .collect()
}

/// The length up to and including the last `\n` (0 when there is none).
fn last_newline(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1)
}

/// Renders one line into `items`; with `html` false only the state moves (the items carry
/// no HTML), which is what [`scan`] needs of a line however long.
fn render_line(line: &str, state: &mut LogState, items: &mut Vec<Item>, html: bool) {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let Some(first) = marker().find(line) else {
        let h = spans(line, &mut state.style, html);
        push_line(h, state, items);
        return;
    };
    push_text(&line[..first.start()], state, items, html);
    let mut rest = &line[first.start()..];
    while let Some(caps) = marker().captures(rest) {
        let end = caps.get(0).map_or(0, |m| m.end());
        let name = caps.get(3).map_or("", |m| m.as_str()).to_string();
        let at: u64 = caps[2].parse().unwrap_or(0);
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
            let h = spans(text, &mut state.style, html);
            state.lines += 1;
            items.push(Item::Start {
                n: name.clone(),
                l: state.lines,
                h,
                c: collapsed,
            });
            state.sections.push(Open { name, started: at });
            continue;
        }
        if !start {
            if let Some(i) = state.sections.iter().rposition(|s| s.name == name) {
                items.push(Item::End {
                    p: state.sections.len() - i,
                    d: at.saturating_sub(state.sections[i].started),
                });
                state.sections.truncate(i);
            }
        }
        push_text(text, state, items, html);
    }
}

/// A line's text around markers: a line when it shows anything (its escapes apply anyway).
fn push_text(text: &str, state: &mut LogState, items: &mut Vec<Item>, html: bool) {
    let h = spans(text, &mut state.style, html);
    if !h.is_empty() {
        push_line(h, state, items);
    }
}

fn push_line(h: String, state: &mut LogState, items: &mut Vec<Item>) {
    state.lines += 1;
    items.push(Item::Line { l: state.lines, h });
}

/// One line of text with its escapes applied: styled runs as spans, HTML escaped, a `\r`
/// overwriting what came before it on the line (as a terminal shows a progress line).
/// Without `html`, only `style` moves, and the answer is empty or a single space: whether
/// the line shows anything.
fn spans(text: &str, style: &mut Style, html: bool) -> String {
    if !html {
        return if apply_escapes(text, style) {
            " ".into()
        } else {
            String::new()
        };
    }
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

/// What [`spans`] does to `style` for `text`, without building anything; answers whether
/// something visible is left on the line (after its last `\r`).
fn apply_escapes(text: &str, style: &mut Style) -> bool {
    let bytes = text.as_bytes();
    let mut visible = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            0x1b => {
                if bytes.get(i + 1) != Some(&b'[') {
                    // ESC and the character after it vanish.
                    i += 2;
                    continue;
                }
                let start = i + 2;
                let end = bytes[start.min(bytes.len())..]
                    .iter()
                    .position(|b| (0x40..=0x7e).contains(b))
                    .map(|p| start + p);
                match end {
                    Some(end) => {
                        if bytes[end] == b'm' && end - start <= 64 {
                            style.apply(&String::from_utf8_lossy(&bytes[start..end]));
                        }
                        i = end + 1;
                    }
                    None => break,
                }
                continue;
            }
            b'\r' => visible = false,
            b'\t' => visible = true,
            b if b < 0x20 || b == 0x7f => {}
            _ => visible = true,
        }
        i += 1;
    }
    visible
}

/// `mm:ss`, or `h:mm:ss` from an hour, as GitLab shows a section's duration.
pub fn section_duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m:02}:{s:02}")
    }
}

/// For each item, the duration of the section it starts when a later item ends it.
fn durations(items: &[Item]) -> Vec<Option<u64>> {
    let mut found = vec![None; items.len()];
    let mut open: Vec<usize> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item {
            Item::Start { .. } => open.push(i),
            Item::End { p, d } => {
                let keep = open.len().saturating_sub(*p);
                if let Some(named) = open.get(keep) {
                    found[*named] = Some(*d);
                }
                open.truncate(keep);
            }
            Item::Line { .. } => {}
        }
    }
    found
}

/// A line number as the page shows it (`data-n`, drawn by the style sheet so that copied
/// text has none); nothing for 0.
fn number(l: u64) -> String {
    if l == 0 {
        String::new()
    } else {
        format!(" data-n=\"{l}\"")
    }
}

/// A line as an element (the script builds the same).
pub fn line_html(l: u64, h: &str, extra: &str) -> String {
    format!("<div class=\"ln{extra}\"{}>{h}</div>", number(l))
}

/// The unfinished last line as the page shows it until the rest comes (`ui.js` replaces it).
pub fn partial_html(line: &Line) -> String {
    line_html(line.l, &line.h, "\" id=\"log-partial")
}

/// The whole rendered log as nested HTML (for the page, so that it reads without scripts),
/// `last` (HTML) put after its last item, inside the sections still open.
pub fn to_html(items: &[Item], open_at_end: usize, last: &str) -> String {
    let mut html = String::new();
    let mut depth = 0usize;
    for (item, took) in items.iter().zip(durations(items)) {
        match item {
            Item::Line { l, h } => html.push_str(&line_html(*l, h, "")),
            Item::Start { n, l, h, c } => {
                depth += 1;
                let open = if *c { "" } else { " open" };
                let took = took.map_or(String::new(), |d| {
                    format!("<span class=\"dur\">{}</span>", section_duration(d))
                });
                let _ = write!(
                    html,
                    "<details class=\"sec\" data-section=\"{}\"{open}><summary{}>{h}{took}</summary><div class=\"body\">",
                    escape(n),
                    number(*l),
                );
            }
            Item::End { p, .. } => {
                let p = (*p).min(depth);
                depth -= p;
                for _ in 0..p {
                    html.push_str("</div></details>");
                }
            }
        }
    }
    debug_assert_eq!(depth, open_at_end);
    html.push_str(last);
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
        to_html(&r.items, r.state.depth(), "")
    }

    #[test]
    fn colours_become_classes_and_html_is_escaped() {
        assert_eq!(
            html("\x1b[32;1mok <b>&\x1b[0m plain\n"),
            "<div class=\"ln\" data-n=\"1\"><span class=\"fg2 b\">ok &lt;b&gt;&amp;</span> plain</div>"
        );
        assert_eq!(
            html("\x1b[91mred\x1b[39m \x1b[38;5;208mor\x1b[48;2;1;2;3mx\n"),
            "<div class=\"ln\" data-n=\"1\"><span class=\"fg9\">red</span> <span style=\"color:#ff8700;\">or</span><span style=\"color:#ff8700;background:#010203;\">x</span></div>"
        );
    }

    #[test]
    fn styles_carry_across_lines_and_other_escapes_vanish() {
        assert_eq!(
            html("\x1b[31ma\nb\x1b[0m\x1b[0K\x1b[2Jc\n"),
            "<div class=\"ln\" data-n=\"1\"><span class=\"fg1\">a</span></div><div class=\"ln\" data-n=\"2\"><span class=\"fg1\">b</span>c</div>"
        );
    }

    #[test]
    fn carriage_return_overwrites_the_line() {
        assert_eq!(
            html("10%\r50%\r100%\r\n\n"),
            "<div class=\"ln\" data-n=\"1\">100%</div><div class=\"ln\" data-n=\"2\"></div>"
        );
    }

    #[test]
    fn sections_become_details_with_their_durations() {
        let log = "\x1b[0Ksection_start:1700000000:prepare[collapsed=true]\r\x1b[0K\x1b[36mPreparing\x1b[0m\n\
                   inside\n\
                   \x1b[0Ksection_end:1700000075:prepare\r\x1b[0K\n\
                   section_start:1700000075:step_script\r\x1b[0KScript\n\
                   $ echo hi\n";
        assert_eq!(
            html(log),
            "<details class=\"sec\" data-section=\"prepare\"><summary data-n=\"1\"><span class=\"fg6\">Preparing</span>\
             <span class=\"dur\">01:15</span></summary>\
             <div class=\"body\"><div class=\"ln\" data-n=\"2\">inside</div></div></details>\
             <details class=\"sec\" data-section=\"step_script\" open><summary data-n=\"3\">Script</summary>\
             <div class=\"body\"><div class=\"ln\" data-n=\"4\">$ echo hi</div></div></details>"
        );
        assert_eq!(section_duration(0), "00:00");
        assert_eq!(section_duration(3723), "1:02:03");
    }

    #[test]
    fn an_end_closes_the_named_section_and_those_inside_it() {
        let log = "section_start:1:outer\r\x1b[0Ko\nsection_start:2:inner\r\x1b[0Ki\nsection_end:30:outer\r\x1b[0Kafter\nsection_end:4:unknown\r\x1b[0K\n";
        let r = render(log.as_bytes(), LogState::default(), true);
        assert_eq!(
            r.items[2..],
            [
                Item::End { p: 2, d: 29 },
                Item::Line {
                    l: 3,
                    h: "after".into()
                }
            ]
        );
        assert_eq!(r.state.depth(), 0);
        // The duration goes to the named (outer) section, none to the one left open.
        let page = to_html(&r.items, 0, "");
        assert!(
            page.contains("o<span class=\"dur\">00:29</span></summary>"),
            "{page}"
        );
        assert!(page.contains("<summary data-n=\"2\">i</summary>"), "{page}");
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
        assert_eq!(state.encode(), "38;5;3|a@1|3");
    }

    #[test]
    fn the_unfinished_line_is_rendered_apart_in_the_current_style() {
        let r = render(b"\x1b[31mdone\nhalf \x1b[1mway", LogState::default(), false);
        assert_eq!(r.consumed, "\x1b[31mdone\n".len());
        assert_eq!(
            r.partial,
            Some(Line {
                l: 2,
                h: "<span class=\"fg1\">half </span><span class=\"fg1 b\">way</span>".into()
            })
        );
        assert_eq!(
            r.state.encode(),
            "38;5;1||1",
            "the partial line changed nothing"
        );
        // A marker waits for its newline; a finished log has no partial line.
        assert_eq!(
            render(b"a\nsection_start:1:x\r\x1b[0K", LogState::default(), false).partial,
            None
        );
        assert_eq!(render(b"a\nb", LogState::default(), true).partial, None);
        assert_eq!(render(b"a\n", LogState::default(), false).partial, None);
    }

    #[test]
    fn a_scan_leaves_the_state_a_render_leaves() {
        let log = "plain\n\x1b[32mgreen\nsection_start:5:outer\r\x1b[0KO\nsection_start:6:inner\r\x1b[0KI\n\n\
                   x section_end:7:inner\r\x1b[0Ky\nsection_ not a marker\nlast\n";
        let rendered = render(log.as_bytes(), LogState::default(), true).state;
        assert_eq!(scan(log.as_bytes(), LogState::default()), rendered);
        assert_eq!(rendered.encode(), "38;5;2|outer@5|9");
        assert_eq!(scan(b"", LogState::default()), LogState::default());
        // Escapes, carriage returns and invisible lines move the state as a render does.
        let log = "\x1b[31mred\x1b[0m\x1b[1;34m bold blue\r\x1b[33m\nover\r\n\x1b[K\n\x1bXz\x1b[38;5;208mx\n";
        let rendered = render(log.as_bytes(), LogState::default(), true).state;
        assert_eq!(scan(log.as_bytes(), LogState::default()), rendered);
    }

    #[test]
    fn a_tail_starts_at_a_line_and_reopens_its_sections() {
        let log = b"aaaa\nbbbb\ncccc\n";
        assert_eq!(tail_start(log, 100), 0);
        assert_eq!(tail_start(log, 10), 5, "exactly at a line start");
        assert_eq!(tail_start(log, 8), 10, "the first whole line");
        assert_eq!(
            tail_start(b"short\nvery long line\n", 4),
            17,
            "a last line longer than the tail is cut inside"
        );
        // Never inside an escape sequence, nor inside a character.
        let coloured = b"\x1b[31mred \x1b[1;32mgreen";
        assert_eq!(
            tail_start(coloured, 10),
            9,
            "back to the ESC it would split"
        );
        assert_eq!(
            tail_start(coloured, 5),
            coloured.len() - 5,
            "after a whole one"
        );
        let wide = "ab\u{e9}\u{e9}\u{e9}".as_bytes();
        assert_eq!(
            tail_start(wide, 3),
            6,
            "forward to a character's first byte"
        );
        assert!(cut_inside_line(b"ab\ncd", 4));
        assert!(!cut_inside_line(b"ab\ncd", 3));
        assert!(!cut_inside_line(b"ab\ncd", 0));

        let log = "section_start:100:build\r\x1b[0K\x1b[1mBuild\nfirst\nsecond\nsection_end:160:build\r\x1b[0K\ndone\n";
        let cut = tail_start(
            log.as_bytes(),
            "second\nsection_end:160:build\r\x1b[0K\ndone\n".len(),
        );
        assert_eq!(&log[cut..cut + 6], "second");
        let before = scan(&log.as_bytes()[..cut], LogState::default());
        let tail = render(&log.as_bytes()[cut..], before.clone(), true);
        let mut items = reopened(&before);
        items.extend(tail.items);
        assert_eq!(
            to_html(&items, tail.state.depth(), ""),
            "<details class=\"sec\" data-section=\"build\" open><summary>build (started earlier)<span class=\"dur\">01:00</span></summary>\
             <div class=\"body\"><div class=\"ln\" data-n=\"3\"><span class=\"b\">second</span></div></div></details>\
             <div class=\"ln\" data-n=\"4\"><span class=\"b\">done</span></div>"
        );
    }

    #[test]
    fn states_from_browsers_are_checked() {
        assert_eq!(LogState::decode("||0"), Some(LogState::default()));
        assert_eq!(
            LogState::decode("1;31|a@1,b.c@2|7").map(|s| s.depth()),
            Some(2)
        );
        for bad in [
            "",
            "|",
            "x||0",
            "1|a b@1|0",
            "1|<script>@1|0",
            "1|a@1,,b@2|0",
            "1|a|0",
            "1|a@x|0",
            "||-1",
            "||0|",
        ] {
            assert_eq!(LogState::decode(bad), None, "{bad:?}");
        }
    }
}
