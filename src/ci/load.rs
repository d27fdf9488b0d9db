//! Step one of the pipeline compiler: `.gitlab-ci.yml` text → YAML values, read as GitLab
//! reads it (`Gitlab::Config::Loader::Yaml`: Psych, a YAML 1.1 reader, with GitLab's
//! limits), then `include`d files merged in and `!reference` tags replaced ([`expand`]).
//!
//! The text is parsed by `saphyr-parser` (a maintained pure-Rust YAML parser whose event
//! stream keeps each scalar's style, custom tags such as `!reference`, and positions for
//! errors); this module builds the values from the events with Psych's rules:
//!
//! - plain scalars are resolved as YAML 1.1 does (`yes`/`no`/`on`/`off` are booleans,
//!   `0755` is octal, `1:30` is sexagesimal), quoted and block scalars stay strings;
//! - a key given twice keeps its first place and its last value (a Ruby `Hash`);
//! - anchors and aliases are expanded within a budget (the "billion laughs" stay small),
//!   and nesting is bounded by GitLab's `max_yaml_depth`;
//! - `<<` merge keys are applied where they stand, as Psych applies them ([`insert`]).

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Tag};
use serde_yaml_ng::value::{Tag as ValueTag, TaggedValue};
use serde_yaml_ng::{Mapping, Number, Value};

use super::config::{ConfigError, RuleScope};

type Result<T> = std::result::Result<T, ConfigError>;

/// The largest `.gitlab-ci.yml` read: GitLab's default `max_yaml_size_bytes` (2 MB).
pub const MAX_YAML_BYTES: usize = 2 * 1024 * 1024;

/// The deepest nesting of a `.gitlab-ci.yml`: GitLab's default `max_yaml_depth`.
pub const MAX_YAML_DEPTH: usize = 100;

/// GitLab's words for a configuration past either limit (`Gitlab::Config::Loader::Yaml`).
pub const TOO_BIG: &str = "The parsed YAML is too big";

/// At most this many values (aliases expanded) in one file. GitLab bounds the loaded
/// object's memory by `max_yaml_size_bytes`; a 2 MB file cannot hold more values than
/// this without aliases, so only alias bombs meet the limit.
const MAX_VALUES: usize = 2_000_000;

/// At most this many bytes of scalars (aliases expanded) in one file.
const MAX_SCALAR_BYTES: usize = 16 * MAX_YAML_BYTES;

/// `Gitlab::Ci::Config::Yaml::Loader::MAX_DOCUMENTS`: a `spec` header, then the
/// configuration.
const MAX_DOCUMENTS: usize = 2;

/// Whether `text` nests flow collections (`[`, `{`) deeper than `max`, found by a scan of
/// the text before it is parsed (parsers may take time quadratic in that depth — libyaml
/// took 18 s to refuse 70,000 levels — while block nesting needs indentation, which the
/// size limit bounds). Brackets in quoted scalars and comments do not count; a quote is
/// taken to end at its line's end at the latest, so that a bracket is never missed — a
/// multi-line quoted string full of brackets may be over-counted, never a flow
/// under-counted.
pub fn flow_too_deep(text: &str, max: usize) -> bool {
    // Depth carries across lines: flows may span them.
    let mut depth: usize = 0;
    for line in text.split('\n') {
        let bytes = line.as_bytes();
        let mut i = 0;
        // The last significant character before `i`, and whether whitespace came since.
        let mut previous: Option<u8> = None;
        let mut spaced = true;
        while i < bytes.len() {
            let c = bytes[i];
            match c {
                b'#' if spaced => break,
                b'\'' | b'"'
                    if spaced
                        && matches!(
                            previous,
                            None | Some(b':' | b'-' | b'?' | b'[' | b'{' | b',')
                        ) =>
                {
                    // A quoted scalar: skip to its end (or the line's).
                    i += 1;
                    while i < bytes.len() {
                        if c == b'"' && bytes[i] == b'\\' {
                            i += 2;
                            continue;
                        }
                        if bytes[i] == c {
                            break;
                        }
                        i += 1;
                    }
                    previous = Some(c);
                    spaced = false;
                }
                b'[' | b'{' => {
                    depth += 1;
                    if depth > max {
                        return true;
                    }
                    previous = Some(c);
                    spaced = true;
                }
                b']' | b'}' => {
                    depth = depth.saturating_sub(1);
                    previous = Some(c);
                    spaced = false;
                }
                b',' => {
                    previous = Some(c);
                    spaced = true;
                }
                b' ' | b'\t' | b'\r' => spaced = true,
                _ => {
                    previous = Some(c);
                    spaced = false;
                }
            }
            i += 1;
        }
    }
    false
}

/// Reads `.gitlab-ci.yml` text (one document) within GitLab's limits.
pub fn load(yaml: &str) -> Result<Value> {
    let mut documents = load_documents(yaml)?;
    match documents.len() {
        0 => Ok(Value::Null),
        1 => Ok(documents.remove(0)),
        _ => Err(ConfigError(
            "Invalid configuration format: the file holds more than one document".into(),
        )),
    }
}

/// The documents of a file (at most GitLab's 2: a `spec` header, then the
/// configuration), each within the loader's limits: [`MAX_YAML_BYTES`] and
/// [`MAX_YAML_DEPTH`], refused before the parse where the text shows it.
pub fn load_documents(yaml: &str) -> Result<Vec<Value>> {
    if yaml.len() > MAX_YAML_BYTES || flow_too_deep(yaml, MAX_YAML_DEPTH) {
        return Err(ConfigError(TOO_BIG.into()));
    }
    Builder::default().documents(yaml)
}

/// The line (1-based) of each top-level key of the file's last document — the
/// configuration, after any `spec` header — for pointing at a job or keyword in an error
/// message. Empty when the text does not parse.
pub fn key_lines(yaml: &str) -> HashMap<String, usize> {
    let mut lines = HashMap::new();
    if yaml.len() > MAX_YAML_BYTES || flow_too_deep(yaml, MAX_YAML_DEPTH) {
        return lines;
    }
    // For each open collection: whether it is a mapping whose next node is a key.
    let mut open: Vec<(bool, bool)> = Vec::new();
    for event in Parser::new_from_str(yaml) {
        let Ok((event, span)) = event else {
            return HashMap::new();
        };
        let starts_node = matches!(
            event,
            Event::Scalar(..)
                | Event::Alias(_)
                | Event::SequenceStart(..)
                | Event::MappingStart(..)
        );
        if starts_node {
            if let Some((true, next_is_key)) = open.last_mut() {
                if *next_is_key && open.len() == 1 {
                    if let Event::Scalar(text, ..) = &event {
                        lines.entry(text.to_string()).or_insert(span.start.line());
                    }
                }
                if let Some((_, next_is_key)) = open.last_mut() {
                    *next_is_key = !*next_is_key;
                }
            }
        }
        match event {
            Event::DocumentStart(_) => lines.clear(),
            Event::SequenceStart(..) => open.push((false, false)),
            Event::MappingStart(..) => open.push((true, true)),
            Event::SequenceEnd | Event::MappingEnd => {
                open.pop();
            }
            _ => {}
        }
    }
    lines
}

/// A collection being built.
enum Open {
    Sequence(Vec<Value>),
    /// The mapping, and the key whose value comes next.
    Mapping(Mapping, Option<Value>),
}

/// One open collection: what it holds so far, its anchor, its tag, and the height of
/// its tallest child.
struct Frame {
    open: Open,
    anchor: usize,
    tag: Option<String>,
    height: usize,
}

/// Builds values from the parser's events, with the budgets above.
#[derive(Default)]
struct Builder {
    /// Anchored values by the parser's anchor id, with their height and size.
    anchors: HashMap<usize, (Value, usize, Size)>,
    /// Values and scalar bytes built so far in the file, aliases expanded.
    spent: Size,
}

/// What a value costs: values in it, bytes of its scalars.
#[derive(Clone, Copy, Default)]
struct Size {
    values: usize,
    bytes: usize,
}

impl Builder {
    fn documents(mut self, yaml: &str) -> Result<Vec<Value>> {
        let mut documents = Vec::new();
        let mut stack: Vec<Frame> = Vec::new();
        // The finished root of the current document.
        let mut root: Option<(Value, usize)> = None;
        for event in Parser::new_from_str(yaml) {
            let (event, _span) = event.map_err(syntax_error)?;
            let done: Option<(Value, usize, usize)> = match event {
                Event::StreamStart | Event::StreamEnd | Event::Nothing => None,
                Event::DocumentStart(_) => {
                    if documents.len() == MAX_DOCUMENTS {
                        return Err(ConfigError(
                            "Invalid configuration format: the file holds more than two documents"
                                .into(),
                        ));
                    }
                    None
                }
                Event::DocumentEnd => {
                    let (value, _) = root.take().unwrap_or((Value::Null, 1));
                    documents.push(value);
                    // Anchors belong to their document.
                    self.anchors.clear();
                    None
                }
                Event::Alias(id) => {
                    let (value, height, size) =
                        self.anchors.get(&id).cloned().ok_or_else(|| {
                            ConfigError(
                                "Invalid configuration format: an alias names no anchor".into(),
                            )
                        })?;
                    self.spend(size)?;
                    Some((value, height, 0))
                }
                Event::Scalar(text, style, anchor, tag) => {
                    self.spend(Size {
                        values: 1,
                        bytes: text.len(),
                    })?;
                    Some((scalar(&text, style, tag.as_deref())?, 1, anchor))
                }
                Event::SequenceStart(anchor, ref tag) | Event::MappingStart(anchor, ref tag) => {
                    if stack.len() >= MAX_YAML_DEPTH {
                        return Err(ConfigError(TOO_BIG.into()));
                    }
                    self.spend(Size {
                        values: 1,
                        bytes: 0,
                    })?;
                    let open = if matches!(&event, Event::SequenceStart(..)) {
                        Open::Sequence(Vec::new())
                    } else {
                        Open::Mapping(Mapping::new(), None)
                    };
                    stack.push(Frame {
                        open,
                        anchor,
                        tag: tag.as_deref().and_then(custom_tag),
                        height: 0,
                    });
                    None
                }
                Event::SequenceEnd | Event::MappingEnd => {
                    let frame = stack.pop().expect("the parser balances collections");
                    let value = match frame.open {
                        Open::Sequence(items) => Value::Sequence(items),
                        Open::Mapping(map, _) => Value::Mapping(map),
                    };
                    let (value, height) = match frame.tag {
                        Some(tag) => (
                            Value::Tagged(Box::new(TaggedValue {
                                tag: ValueTag::new(tag),
                                value,
                            })),
                            frame.height + 2,
                        ),
                        None => (value, frame.height + 1),
                    };
                    Some((value, height, frame.anchor))
                }
            };
            let Some((value, height, anchor)) = done else {
                continue;
            };
            if height > MAX_YAML_DEPTH + 1 {
                return Err(ConfigError(TOO_BIG.into()));
            }
            if anchor != 0 {
                let size = size_of(&value);
                self.anchors.insert(anchor, (value.clone(), height, size));
            }
            match stack.last_mut() {
                None => root = Some((value, height)),
                Some(parent) => {
                    parent.height = parent.height.max(height);
                    match &mut parent.open {
                        Open::Sequence(items) => items.push(value),
                        Open::Mapping(map, key) => match key.take() {
                            None => *key = Some(value),
                            Some(k) => insert(map, k, value),
                        },
                    }
                }
            }
        }
        if let Some((value, _)) = root {
            documents.push(value);
        }
        for document in &documents {
            if height_of(document) > MAX_YAML_DEPTH {
                return Err(ConfigError(TOO_BIG.into()));
            }
        }
        Ok(documents)
    }

    fn spend(&mut self, size: Size) -> Result<()> {
        self.spent.values = self.spent.values.saturating_add(size.values);
        self.spent.bytes = self.spent.bytes.saturating_add(size.bytes);
        if self.spent.values > MAX_VALUES || self.spent.bytes > MAX_SCALAR_BYTES {
            return Err(ConfigError(TOO_BIG.into()));
        }
        Ok(())
    }
}

/// Adds an entry to a mapping being built, as Psych's `ToRuby#revive_hash` does. The
/// mapping is a Ruby `Hash`: a key given twice keeps its first place and takes its last
/// value. A `<<` key whose value is a mapping, or a list of mappings, merges them in
/// where it stands (`Hash#merge!`): over the keys before it, under the keys after it;
/// in a list the earlier mappings win. Anchored values are merged when they are built,
/// so merges nest. Any other `<<` value stays an ordinary `<<` key.
fn insert(map: &mut Mapping, key: Value, value: Value) {
    if key.as_str() == Some("<<") {
        match value {
            Value::Mapping(merged) => {
                for (k, v) in merged {
                    map.insert(k, v);
                }
                return;
            }
            Value::Sequence(items) if items.iter().all(Value::is_mapping) => {
                let mut merged = Mapping::new();
                for item in items.into_iter().rev() {
                    if let Value::Mapping(item) = item {
                        for (k, v) in item {
                            merged.insert(k, v);
                        }
                    }
                }
                for (k, v) in merged {
                    map.insert(k, v);
                }
                return;
            }
            value => {
                map.insert(key, value);
                return;
            }
        }
    }
    map.insert(key, value);
}

/// A syntax error in Psych's words: what, and where (1-based line and column).
fn syntax_error(e: ScanError) -> ConfigError {
    let mark = e.marker();
    ConfigError(format!(
        "Invalid configuration format: {} at line {} column {}",
        e.info(),
        mark.line(),
        mark.col() + 1
    ))
}

/// A tag kept on the value: anything but the core schema's (`!!str`, `!!int`, …), which
/// only choose how a scalar is read.
fn custom_tag(tag: &Tag) -> Option<String> {
    (!tag.is_yaml_core_schema()).then(|| tag.to_string())
}

/// How many values and scalar bytes `value` holds, walked without recursion.
fn size_of(value: &Value) -> Size {
    let mut size = Size::default();
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        size.values += 1;
        match value {
            Value::String(s) => size.bytes += s.len(),
            Value::Sequence(items) => stack.extend(items),
            Value::Mapping(map) => stack.extend(map.iter().flat_map(|(k, v)| [k, v])),
            Value::Tagged(tagged) => stack.push(&tagged.value),
            _ => {}
        }
    }
    size
}

/// How deep `value` nests (a scalar is 1), walked without recursion.
pub fn height_of(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 1usize)];
    while let Some((value, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        match value {
            Value::Sequence(items) => stack.extend(items.iter().map(|v| (v, depth + 1))),
            Value::Mapping(map) => stack.extend(
                map.iter()
                    .flat_map(|(k, v)| [(k, depth + 1), (v, depth + 1)]),
            ),
            Value::Tagged(tagged) => stack.push((&tagged.value, depth + 1)),
            _ => {}
        }
    }
    deepest
}

/// A scalar as Psych reads it: quoted and block scalars are strings; a core-schema tag
/// says the type; a custom tag is kept; a plain scalar is resolved by YAML 1.1's rules.
fn scalar(text: &str, style: ScalarStyle, tag: Option<&Tag>) -> Result<Value> {
    if let Some(tag) = tag {
        if !tag.is_yaml_core_schema() {
            return Ok(Value::Tagged(Box::new(TaggedValue {
                tag: ValueTag::new(tag.to_string()),
                value: Value::String(text.to_string()),
            })));
        }
        let plain = resolve_plain(text);
        return Ok(match tag.suffix.as_str() {
            "str" => Value::String(text.to_string()),
            "null" => Value::Null,
            "bool" => match plain {
                Value::Bool(_) => plain,
                _ => return Err(tag_mismatch(text, "bool")),
            },
            "int" => match plain {
                Value::Number(ref n) if n.is_i64() || n.is_u64() => plain,
                _ => return Err(tag_mismatch(text, "int")),
            },
            "float" => match plain {
                Value::Number(ref n) => Value::Number(Number::from(n.as_f64().unwrap_or(0.0))),
                _ => return Err(tag_mismatch(text, "float")),
            },
            // Other core tags (`!!binary`, `!!timestamp`, …) keep the text.
            _ => Value::String(text.to_string()),
        });
    }
    Ok(match style {
        ScalarStyle::Plain => resolve_plain(text),
        _ => Value::String(text.to_string()),
    })
}

fn tag_mismatch(text: &str, tag: &str) -> ConfigError {
    ConfigError(format!(
        "Invalid configuration format: {text:?} is not a valid !!{tag}"
    ))
}

/// A plain scalar resolved as Psych's `ScalarScanner#tokenize` does (YAML 1.1): null,
/// booleans (`yes`/`no`/`on`/`off`/`true`/`false`, any case), integers (decimal with `_`
/// or `,` separators, `0x` hex, `0b` binary, leading-`0` octal, sexagesimal `1:30`),
/// floats (`1.5`, `.5`, `1.e+3`, `.inf`, `.nan`); anything else is a string. (Psych reads
/// `2024-01-01` as a date, which GitLab's safe loader then refuses; Runway keeps it a
/// string.)
fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" => return Value::Null,
        _ if text.eq_ignore_ascii_case("null") => return Value::Null,
        _ if ["yes", "true", "on"]
            .iter()
            .any(|w| text.eq_ignore_ascii_case(w)) =>
        {
            return Value::Bool(true)
        }
        _ if ["no", "false", "off"]
            .iter()
            .any(|w| text.eq_ignore_ascii_case(w)) =>
        {
            return Value::Bool(false)
        }
        _ => {}
    }
    if let Some(n) = integer(text) {
        return Value::Number(n);
    }
    if let Some(f) = float(text) {
        return Value::Number(Number::from(f));
    }
    Value::String(text.to_string())
}

/// Splits an optional sign off `text`: (negative, rest).
fn signed(text: &str) -> (bool, &str) {
    match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    }
}

/// A YAML 1.1 integer, as Psych's `INTEGER` and sexagesimal patterns read it; `None` for
/// anything else, or one past 64 bits (kept as text).
fn integer(text: &str) -> Option<Number> {
    let (negative, digits) = signed(text);
    if digits.is_empty() {
        return None;
    }
    let magnitude: u64 = if let Some(hex) = digits.strip_prefix("0x") {
        radix(hex, 16, "_,")?
    } else if let Some(bin) = digits.strip_prefix("0b") {
        radix(bin, 2, "_,")?
    } else if digits.contains(':') {
        // Sexagesimal: `190:20:30`; every part after the first is 0–59.
        let mut parts = digits.split(':');
        let mut total = radix(parts.next()?, 10, "_")?;
        for part in parts {
            if part.is_empty() || part.len() > 2 {
                return None;
            }
            let part = radix(part, 10, "")?;
            if part > 59 {
                return None;
            }
            total = total.checked_mul(60)?.checked_add(part)?;
        }
        total
    } else if digits.len() > 1 && digits.starts_with('0') {
        radix(&digits[1..], 8, "_,")?
    } else {
        // Decimal: a digit first, separators only between digits.
        if !digits.as_bytes()[0].is_ascii_digit() || digits.ends_with(['_', ',']) {
            return None;
        }
        radix(digits, 10, "_,")?
    };
    if negative {
        let n = i64::try_from(magnitude).ok()?;
        Some(Number::from(-n))
    } else {
        Some(Number::from(magnitude))
    }
}

/// Digits of `radix` with the separators allowed; at least one digit.
fn radix(text: &str, radix: u32, separators: &str) -> Option<u64> {
    let mut value: u64 = 0;
    let mut any = false;
    for c in text.chars() {
        if separators.contains(c) {
            continue;
        }
        let digit = c.to_digit(radix)?;
        value = value
            .checked_mul(u64::from(radix))?
            .checked_add(u64::from(digit))?;
        any = true;
    }
    any.then_some(value)
}

/// A YAML 1.1 float as Psych's `FLOAT` pattern reads it: a dot is required
/// (`1e5` is a string there), or `.inf`/`.nan`.
fn float(text: &str) -> Option<f64> {
    let (negative, rest) = signed(text);
    let sign = if negative { -1.0 } else { 1.0 };
    if [".inf", ".Inf", ".INF"].contains(&rest) {
        return Some(sign * f64::INFINITY);
    }
    if [".nan", ".NaN", ".NAN"].contains(&text) {
        return Some(f64::NAN);
    }
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(at) => (&rest[..at], Some(&rest[at + 1..])),
        None => (rest, None),
    };
    let (whole, fraction) = mantissa.split_once('.')?;
    let whole_ok = whole.is_empty()
        || (whole.as_bytes()[0].is_ascii_digit()
            && whole
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'_' || b == b','));
    if !whole_ok || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let exponent = match exponent {
        None => 0,
        // Psych wants a sign on the exponent: `1.0e+3`.
        Some(e) => {
            let (negative, digits) = signed(e);
            if !e.starts_with(['+', '-'])
                || digits.is_empty()
                || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            let n: i32 = digits.parse().ok()?;
            if negative {
                -n
            } else {
                n
            }
        }
    };
    let whole: String = whole.chars().filter(|c| c.is_ascii_digit()).collect();
    let literal = format!(
        "{}.{}e{exponent}",
        if whole.is_empty() { "0" } else { &whole },
        if fraction.is_empty() { "0" } else { fraction }
    );
    literal.parse::<f64>().ok().map(|f| sign * f)
}

/// The configuration as the rest of the compiler reads it: the file loaded (GitLab's
/// limits), YAML merge keys applied, `include`d files merged in, `!reference` tags
/// replaced. CI Lint shows it as `merged_yaml`.
pub fn expand(
    yaml: &str,
    scope: &RuleScope,
    files: &dyn super::include::FileSource,
) -> Result<Mapping> {
    // `spec:inputs` in a header document: the pipeline's inputs, else their defaults
    // (`ProjectConfig` includes the file with the pipeline's inputs).
    let pipeline_vars = scope.with(&[]);
    let root: Value = super::inputs::load_with_inputs(
        yaml,
        scope.inputs.as_ref(),
        &pipeline_vars,
        "the included configuration file",
    )?;
    let Value::Mapping(root) = root else {
        return Err(ConfigError(
            "Invalid configuration format: the file must be a mapping of keywords and jobs".into(),
        ));
    };
    // `include` first: what the files bring is there before anything is read.
    let root = super::include::Includes::new(files, &pipeline_vars).expand(root)?;
    // Then `!reference` tags, on the merged configuration.
    super::reference::resolve(&root)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Value {
        load(text).expect("loads")
    }

    #[test]
    fn plain_scalars_are_read_as_yaml_1_1() {
        let cases: &[(&str, Value)] = &[
            ("yes", Value::Bool(true)),
            ("On", Value::Bool(true)),
            ("TRUE", Value::Bool(true)),
            ("no", Value::Bool(false)),
            ("OFF", Value::Bool(false)),
            ("y", Value::from("y")),
            ("~", Value::Null),
            ("NULL", Value::Null),
            ("12", Value::from(12)),
            ("-3", Value::from(-3)),
            ("1_000", Value::from(1000)),
            ("0755", Value::from(493)),
            ("0x1F", Value::from(31)),
            ("0b101", Value::from(5)),
            ("1:30", Value::from(90)),
            ("190:20:30", Value::from(685_230)),
            ("3.10", Value::from(3.1)),
            (".5", Value::from(0.5)),
            ("1.0e+3", Value::from(1000.0)),
            ("1e5", Value::from("1e5")),
            ("08", Value::from("08")),
            ("1:75", Value::from("1:75")),
            ("node:20", Value::from("node:20")),
            ("99999999999999999999", Value::from("99999999999999999999")),
            ("2024-01-01", Value::from("2024-01-01")),
        ];
        for (text, expected) in cases {
            assert_eq!(&one(&format!("k: {text}"))["k"], expected, "{text}");
        }
        assert_eq!(one("k: .inf")["k"].as_f64(), Some(f64::INFINITY));
    }

    #[test]
    fn quoted_and_tagged_scalars_keep_their_type() {
        assert_eq!(one("k: 'yes'")["k"], Value::from("yes"));
        assert_eq!(one("k: \"12\"")["k"], Value::from("12"));
        assert_eq!(one("k: |\n  on\n")["k"], Value::from("on\n"));
        assert_eq!(one("k: !!str 12")["k"], Value::from("12"));
        assert_eq!(one("k: !!int '12'")["k"], Value::from(12));
        assert!(load("k: !!int twelve").is_err());
        let Value::Tagged(tagged) = &one("k: !reference [.a, script]")["k"] else {
            panic!("a tagged value");
        };
        assert_eq!(tagged.tag, "reference");
        assert_eq!(tagged.value, Value::from(vec![".a", "script"]));
    }

    #[test]
    fn a_key_given_twice_keeps_its_place_and_its_last_value() {
        let value = one("a: 1\nb: 2\na: 3\n");
        let keys: Vec<&str> = value
            .as_mapping()
            .expect("mapping")
            .keys()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(value["a"], Value::from(3));
    }

    #[test]
    fn anchors_and_aliases_are_expanded_within_the_budget() {
        let value = one(".base: &base {image: ruby}\njob: {<<: *base, script: [x]}\n");
        assert_eq!(value["job"]["image"], Value::from("ruby"));
        // The billion laughs: nine levels of ten aliases each.
        let mut bomb = String::from("a0: &a0 [\"lol\"]\n");
        for level in 1..10 {
            let previous = format!("*a{}", level - 1);
            let items = [previous.as_str(); 10].join(", ");
            bomb.push_str(&format!("a{level}: &a{level} [{items}]\n"));
        }
        assert_eq!(load(&bomb).unwrap_err().0, TOO_BIG);
    }

    #[test]
    fn merge_keys_merge_where_they_stand_and_nest() {
        let value = one(".a: &a {image: ruby, tags: [a]}\n\
             .b: &b {<<: *a, tags: [b], stage: build}\n\
             before: {script: [x], image: alpine, <<: *b}\n\
             after: {<<: *b, image: alpine}\n\
             list: {<<: [*a, {image: node, when: manual}]}\n\
             odd: {<<: text}\n");
        // Nested: `.b` holds `.a`'s keys, its own over them.
        assert_eq!(value["after"]["tags"], Value::from(vec!["b"]));
        assert_eq!(value["after"]["stage"], Value::from("build"));
        // Psych's `Hash#merge!`: the merge wins over keys before it, not after it.
        assert_eq!(value["before"]["image"], Value::from("ruby"));
        assert_eq!(value["after"]["image"], Value::from("alpine"));
        // In a list the first mapping wins.
        assert_eq!(value["list"]["image"], Value::from("ruby"));
        assert_eq!(value["list"]["when"], Value::from("manual"));
        assert_eq!(value["odd"]["<<"], Value::from("text"));
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = |levels: usize| {
            let mut text = String::new();
            for level in 0..levels {
                text.push_str(&" ".repeat(level));
                text.push_str("k:\n");
            }
            text
        };
        assert!(load(&deep(90)).is_ok());
        assert_eq!(load(&deep(120)).unwrap_err().0, TOO_BIG);
        // Deep through an alias: the anchor's height counts where it lands.
        let mut text = deep(60).replacen("k:", "a: &a", 1);
        text.push_str("b:\n");
        for level in 1..60 {
            text.push_str(&" ".repeat(level));
            text.push_str("k:\n");
        }
        text.push_str(&" ".repeat(60));
        text.push_str("k: *a\n");
        assert_eq!(load(&text).unwrap_err().0, TOO_BIG);
    }

    #[test]
    fn syntax_errors_say_where() {
        let e = load("a: 1\nb: [1, 2\n").unwrap_err().0;
        assert!(e.starts_with("Invalid configuration format: "), "{e}");
        assert!(e.contains("at line "), "{e}");
        assert!(load("a: *nothing\n").is_err());
    }

    #[test]
    fn crlf_files_read_as_lf_files() {
        let crlf = "stages: [build]\r\njob:\r\n  script:\r\n    - make\r\n  allow_failure: yes\r\n";
        assert_eq!(one(crlf), one(&crlf.replace("\r\n", "\n")));
        assert_eq!(one(crlf)["job"]["script"][0], Value::from("make"));
    }

    #[test]
    fn top_level_keys_have_their_lines() {
        let text = "spec:\n  inputs: {}\n---\n# jobs\nstages: [a]\n\nbuild:linux:\n  script:\n    - x\n  variables: { A: b }\n'quoted': { script: y }\n";
        let lines = key_lines(text);
        assert_eq!(lines.get("stages"), Some(&5));
        assert_eq!(lines.get("build:linux"), Some(&7));
        assert_eq!(lines.get("quoted"), Some(&11));
        assert_eq!(lines.get("script"), None, "only top-level keys");
        assert_eq!(lines.get("spec"), None, "the configuration's document");
        assert!(key_lines("a: [").is_empty());
    }

    #[test]
    fn documents_are_counted() {
        assert_eq!(load_documents("a: 1\n---\nb: 2\n").expect("two").len(), 2);
        assert!(load_documents("a: 1\n---\nb: 2\n---\nc: 3\n").is_err());
        assert_eq!(load("").expect("empty"), Value::Null);
    }
}
