//! `spec:inputs` and `$[[ inputs.name ]]` ‹lib/gitlab/ci/config/interpolation/,
//! lib/gitlab/ci/config/header/›: a file's header document declares its inputs (type,
//! default, options, regex); whoever includes it passes values (`include:inputs`); the
//! configuration document gets them interpolated — a value that is exactly one block
//! keeps the input's type, one inside text becomes text.

use std::collections::HashMap;

use regex::Regex;
use serde_yaml_ng::{Mapping, Value};

use super::config::ConfigError;
use super::load::load_documents;

/// The most interpolation blocks one file may hold (work stays bounded).
const MAX_BLOCKS: usize = 10_000;

fn fail<T>(message: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(message.into()))
}

/// Loads a file that may start with a `spec` header: the configuration document with the
/// header's inputs (from `given`, else their defaults) interpolated. `what` names the
/// file in errors. `vars` serve `expand_vars`.
pub fn load_with_inputs(
    yaml: &str,
    given: Option<&Mapping>,
    vars: &HashMap<String, String>,
    what: &str,
) -> Result<Value, ConfigError> {
    let mut documents = load_documents(yaml)?;
    let header = match documents.first() {
        Some(Value::Mapping(first)) if documents.len() == 2 || is_header(first) => {
            Some(documents.remove(0))
        }
        _ => None,
    };
    let content = if documents.is_empty() {
        Value::Null
    } else {
        documents.remove(0)
    };
    let spec = match &header {
        None => {
            if given.is_some_and(|g| !g.is_empty()) {
                return fail(format!(
                    "Given inputs not defined in the `spec` section of {what}"
                ));
            }
            return Ok(content);
        }
        Some(Value::Mapping(h)) => spec_inputs(h)?,
        Some(_) => return fail("header:spec config should be a hash"),
    };
    let inputs = resolve(&spec, given.unwrap_or(&Mapping::new()))?;
    let mut blocks = 0;
    interpolate(content, &inputs, vars, &mut blocks)
}

/// A header document: a hash of `spec` alone.
fn is_header(map: &Mapping) -> bool {
    map.len() == 1 && map.contains_key("spec")
}

/// `spec:inputs` as (name, declaration) in order.
fn spec_inputs(header: &Mapping) -> Result<Vec<(String, Mapping)>, ConfigError> {
    for key in header.keys() {
        if key.as_str() != Some("spec") {
            return fail(format!(
                "header config contains unknown keys: {}",
                key.as_str().unwrap_or("?")
            ));
        }
    }
    let Some(spec) = header.get("spec") else {
        return Ok(Vec::new());
    };
    let Value::Mapping(spec) = spec else {
        return fail("header:spec config should be a hash");
    };
    let inputs = match spec.get("inputs") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Mapping(inputs)) => inputs,
        Some(_) => return fail("header:spec:inputs config should be a hash"),
    };
    let mut out = Vec::new();
    for (name, declaration) in inputs {
        let name = name.as_str().unwrap_or_default().to_string();
        let declaration = match declaration {
            Value::Null => Mapping::new(),
            Value::Mapping(m) => m.clone(),
            _ => return fail(format!("header:spec:inputs:{name} config should be a hash")),
        };
        for key in declaration.keys().filter_map(Value::as_str) {
            if ![
                "default",
                "type",
                "options",
                "regex",
                "description",
                "rules",
            ]
            .contains(&key)
            {
                return fail(format!(
                    "header:spec:inputs:{name} config contains unknown keys: {key}"
                ));
            }
            if key == "rules" {
                return fail(format!(
                    "Runway does not support these keywords yet: spec:inputs:{name}:rules"
                ));
            }
        }
        out.push((name, declaration));
    }
    Ok(out)
}

/// Each input's value: given, else its default; checked as GitLab checks them.
fn resolve(
    spec: &[(String, Mapping)],
    given: &Mapping,
) -> Result<HashMap<String, Value>, ConfigError> {
    let unknown: Vec<&str> = given
        .keys()
        .filter_map(Value::as_str)
        .filter(|k| !spec.iter().any(|(name, _)| name == k))
        .collect();
    if !unknown.is_empty() {
        return fail(format!("unknown input arguments: {}", unknown.join(", ")));
    }
    let mut out = HashMap::new();
    let mut errors = Vec::new();
    for (name, declaration) in spec {
        let kind = declaration
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("string");
        let value = match given
            .get(name.as_str())
            .or_else(|| declaration.get("default"))
        {
            Some(value) => value.clone(),
            None => {
                errors.push(format!(
                    "`{name}` input: required value has not been provided"
                ));
                continue;
            }
        };
        let typed = match (kind, &value) {
            ("string", Value::String(_)) => true,
            ("number", Value::Number(_)) => true,
            ("boolean", Value::Bool(_)) => true,
            ("array", Value::Sequence(_)) => true,
            ("string" | "number" | "boolean" | "array", _) => false,
            (other, _) => {
                errors.push(format!(
                    "header:spec:inputs:{name} input type unknown value: {other}"
                ));
                continue;
            }
        };
        if !typed {
            errors.push(format!("`{name}` input: provided value is not a {kind}"));
            continue;
        }
        if let Some(Value::Sequence(options)) = declaration.get("options") {
            if !options.contains(&value) {
                let shown = scalar_text(&value);
                errors.push(format!(
                    "`{name}` input: `{shown}` cannot be used because it is not in the list of allowed options"
                ));
                continue;
            }
        }
        if let Some(pattern) = declaration.get("regex").and_then(Value::as_str) {
            let body = pattern
                .strip_prefix('/')
                .and_then(|p| p.strip_suffix('/'))
                .unwrap_or(pattern);
            let matches = Regex::new(body)
                .map(|re| re.is_match(&scalar_text(&value)))
                .unwrap_or(false);
            if !matches {
                errors.push(format!(
                    "`{name}` input: provided value does not match required RegEx pattern"
                ));
                continue;
            }
        }
        out.insert(name.clone(), value);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        fail(errors.join(", "))
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => String::new(),
        other => serde_yaml_ng::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

/// The blocks of `text`: `(start, end, inner)` for each `$[[ … ]]`.
fn blocks(text: &str) -> Vec<(usize, usize, &str)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(open) = text[from..].find("$[[") {
        let start = from + open;
        let Some(close) = text[start..].find("]]") else {
            break;
        };
        let end = start + close + 2;
        out.push((start, end, text[start + 3..end - 2].trim()));
        from = end;
    }
    out
}

/// The value of one block: `inputs.name`, then functions (`expand_vars`,
/// `truncate(offset, length)`).
fn evaluate(
    inner: &str,
    inputs: &HashMap<String, Value>,
    vars: &HashMap<String, String>,
) -> Result<Value, ConfigError> {
    let mut parts = inner.split('|').map(str::trim);
    let access = parts.next().unwrap_or_default();
    let Some(key) = access.strip_prefix("inputs.") else {
        return fail(format!("unknown interpolation key: `{access}`."));
    };
    let mut value = inputs
        .get(key)
        .cloned()
        .ok_or_else(|| ConfigError(format!("unknown interpolation key: `{key}`.")))?;
    for function in parts {
        let text = scalar_text(&value);
        value = if function == "expand_vars" {
            Value::String(super::environment::expand(&text, vars))
        } else if let Some(args) = function
            .strip_prefix("truncate(")
            .and_then(|a| a.strip_suffix(')'))
        {
            let numbers: Vec<usize> = args
                .split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect();
            let [offset, length] = numbers[..] else {
                return fail(format!("invalid interpolation function: `{function}`"));
            };
            Value::String(text.chars().skip(offset).take(length).collect())
        } else {
            return fail(format!(
                "no interpolation function found for expression: `{function}`"
            ));
        };
    }
    Ok(value)
}

/// `value` with every block replaced; a string that is exactly one block becomes the
/// input's value, typed.
fn interpolate(
    value: Value,
    inputs: &HashMap<String, Value>,
    vars: &HashMap<String, String>,
    count: &mut usize,
) -> Result<Value, ConfigError> {
    match value {
        Value::String(text) => {
            let found = blocks(&text);
            if found.is_empty() {
                return Ok(Value::String(text));
            }
            *count += found.len();
            if *count > MAX_BLOCKS {
                return fail(format!(
                    "too many interpolation blocks (more than {MAX_BLOCKS})"
                ));
            }
            if let [(0, end, inner)] = found[..] {
                if end == text.len() {
                    return evaluate(inner, inputs, vars);
                }
            }
            let mut out = String::with_capacity(text.len());
            let mut last = 0;
            for (start, end, inner) in found {
                out.push_str(&text[last..start]);
                out.push_str(&scalar_text(&evaluate(inner, inputs, vars)?));
                last = end;
            }
            out.push_str(&text[last..]);
            Ok(Value::String(out))
        }
        Value::Sequence(items) => items
            .into_iter()
            .map(|v| interpolate(v, inputs, vars, count))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Sequence),
        Value::Mapping(map) => {
            let mut out = Mapping::new();
            for (k, v) in map {
                let k = interpolate(k, inputs, vars, count)?;
                out.insert(k, interpolate(v, inputs, vars, count)?);
            }
            Ok(Value::Mapping(out))
        }
        Value::Tagged(mut tagged) => {
            tagged.value = interpolate(tagged.value, inputs, vars, count)?;
            Ok(Value::Tagged(tagged))
        }
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given(text: &str) -> Mapping {
        serde_yaml_ng::from_str(text).expect("yaml")
    }

    fn load(text: &str, args: Option<&str>) -> Result<Value, String> {
        let args = args.map(given);
        let vars = HashMap::from([("CI_COMMIT_REF_NAME".to_string(), "main".to_string())]);
        load_with_inputs(text, args.as_ref(), &vars, "`t.yml`").map_err(|e| e.0)
    }

    const TEMPLATE: &str = "spec:\n  inputs:\n    stage: { default: test }\n    jobs: { type: number, default: 2 }\n    \
        lint: { type: boolean, default: true }\n    envs: { type: array, default: [dev] }\n    \
        tier: { options: [low, high], default: low }\n    version: { regex: '^v\\d+$', default: v1 }\n    \
        name:\n---\n\"$[[ inputs.name ]]-job\":\n  stage: $[[ inputs.stage ]]\n  parallel: $[[ inputs.jobs ]]\n  \
        variables:\n    LINT: $[[ inputs.lint ]]\n    NOTE: \"tier $[[ inputs.tier ]] on $[[ inputs.version | truncate(0,1) ]] of $[[ inputs.name | expand_vars ]]\"\n  \
        tags: $[[ inputs.envs ]]\n";

    #[test]
    fn inputs_are_checked_and_interpolated_with_their_types() {
        let value = load(
            TEMPLATE,
            Some("name: $CI_COMMIT_REF_NAME\njobs: 3\nenvs: [a, b]"),
        )
        .expect("loads");
        let expected: Value = serde_yaml_ng::from_str(
            "$CI_COMMIT_REF_NAME-job:\n  stage: test\n  parallel: 3\n  variables:\n    LINT: true\n    \
             NOTE: tier low on v of main\n  tags: [a, b]\n",
        )
        .expect("yaml");
        assert_eq!(value, expected);
    }

    #[test]
    fn gitlabs_messages() {
        for (args, message) in [
            (None, "`name` input: required value has not been provided"),
            (Some("name: x\njobs: many"), "`jobs` input: provided value is not a number"),
            (Some("name: x\ntier: mid"), "`tier` input: `mid` cannot be used because it is not in the list of allowed options"),
            (Some("name: x\nversion: latest"), "`version` input: provided value does not match required RegEx pattern"),
            (Some("name: x\ncolour: red"), "unknown input arguments: colour"),
        ] {
            assert_eq!(load(TEMPLATE, args).unwrap_err(), message, "{args:?}");
        }
        assert_eq!(
            load(
                "spec:\n  inputs:\n    a: { default: x }\n---\nj: { script: '$[[ inputs.b ]]' }\n",
                None
            )
            .unwrap_err(),
            "unknown interpolation key: `b`."
        );
        assert_eq!(
            load("j: { script: x }\n", Some("a: 1")).unwrap_err(),
            "Given inputs not defined in the `spec` section of `t.yml`"
        );
        // No header: nothing is interpolated.
        assert_eq!(
            load("j: { script: '$[[ inputs.a ]]' }\n", None).expect("loads")["j"]["script"],
            "$[[ inputs.a ]]"
        );
    }
}
