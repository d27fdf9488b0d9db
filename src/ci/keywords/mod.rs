//! Plan step: the per-keyword readers. Each turns one keyword's value into its part of a
//! job's spec, or an error worded like the validator of GitLab's entry for it
//! ‹lib/gitlab/ci/config/entry/*.rb›. Here, the small readers they all share.

mod artifacts;
mod cache;
mod hooks;
mod id_tokens;
mod image;
mod needs;
mod pages;
mod release;
mod retry;
mod trigger;
mod variables;

pub(crate) use artifacts::{artifacts_spec, REPORT_TYPES};
pub(crate) use cache::{cache_spec, files_key};
pub(crate) use hooks::hooks_spec;
pub(crate) use id_tokens::id_tokens_spec;
pub(crate) use image::image_spec;
pub(crate) use needs::need;
pub(crate) use pages::pages_folder;
pub use release::release_command;
pub(crate) use release::release_spec;
pub(crate) use retry::retry_spec;
pub(crate) use trigger::trigger_spec;
pub(crate) use variables::{upsert_var, variables_of};

use serde_yaml_ng::Value;

use super::config::ConfigError;

pub(crate) type Result<T> = std::result::Result<T, ConfigError>;

pub(crate) fn err<T>(message: impl Into<String>) -> Result<T> {
    Err(ConfigError(message.into()))
}

pub(crate) fn key_str(key: &Value) -> Result<String> {
    match key {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => err("Invalid configuration format: keys must be strings"),
    }
}

pub(crate) fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A string or an array of strings.
pub(crate) fn string_list(value: &Value) -> Option<Vec<String>> {
    match value {
        Value::Sequence(items) => items.iter().map(scalar).collect(),
        other => scalar(other).map(|s| vec![s]),
    }
}

/// A script: a string, or an array of strings nested up to 10 levels (flattened).
pub(crate) fn script(value: &Value, depth: usize) -> Option<Vec<String>> {
    match value {
        Value::Sequence(items) if depth < 10 => {
            let mut out = Vec::new();
            for item in items {
                out.extend(script(item, depth + 1)?);
            }
            Some(out)
        }
        Value::Sequence(_) => None,
        other => scalar(other).map(|s| vec![s]),
    }
}

pub(crate) fn int_list(value: &Value) -> Option<Vec<i64>> {
    match value {
        Value::Number(n) => n.as_i64().map(|n| vec![n]),
        Value::Sequence(items) => items.iter().map(|v| v.as_i64()).collect(),
        _ => None,
    }
}

/// A scalar that must be one of `allowed`.
pub(crate) fn choice(value: &Value, at: &str, key: &str, allowed: &[&str]) -> Result<String> {
    let text = scalar(value).unwrap_or_default();
    if allowed.contains(&text.as_str()) {
        Ok(text)
    } else {
        err(format!(
            "{at}:{key} config should be {}",
            allowed.join(", ")
        ))
    }
}

pub(crate) fn boolean(value: &Value, at: &str, key: &str) -> Result<bool> {
    value
        .as_bool()
        .ok_or_else(|| ConfigError(format!("{at}:{key} config should be a boolean value")))
}

/// YAML text as a value, for the readers' tests.
#[cfg(test)]
pub(crate) fn yaml(text: &str) -> Value {
    serde_yaml_ng::from_str(text).expect("YAML")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_lists_and_scripts() {
        assert_eq!(key_str(&yaml("3")).unwrap(), "3");
        assert_eq!(
            key_str(&yaml("[a]")).unwrap_err().0,
            "Invalid configuration format: keys must be strings"
        );
        assert_eq!(scalar(&yaml("true")).as_deref(), Some("true"));
        assert_eq!(scalar(&yaml("{a: 1}")), None);
        assert_eq!(string_list(&yaml("a")), Some(vec!["a".to_string()]));
        assert_eq!(
            string_list(&yaml("[a, 1]")),
            Some(vec!["a".into(), "1".into()])
        );
        assert_eq!(string_list(&yaml("[a, [b]]")), None);
        assert_eq!(
            script(&yaml("[a, [b, [c]]]"), 0),
            Some(vec!["a".into(), "b".into(), "c".into()])
        );
        let deep = format!("{}x{}", "[".repeat(11), "]".repeat(11));
        assert_eq!(script(&yaml(&deep), 0), None, "past 10 levels");
        assert_eq!(int_list(&yaml("[1, 2]")), Some(vec![1, 2]));
        assert_eq!(int_list(&yaml("1")), Some(vec![1]));
        assert_eq!(int_list(&yaml("[a]")), None);
    }

    #[test]
    fn choices_and_booleans_name_the_key() {
        assert_eq!(
            choice(&yaml("pull"), "c", "policy", &["pull", "push"]).unwrap(),
            "pull"
        );
        assert_eq!(
            choice(&yaml("nope"), "c", "policy", &["pull", "push"])
                .unwrap_err()
                .0,
            "c:policy config should be pull, push"
        );
        assert!(boolean(&yaml("true"), "a", "untracked").unwrap());
        assert_eq!(
            boolean(&yaml("'yes'"), "a", "untracked").unwrap_err().0,
            "a:untracked config should be a boolean value"
        );
    }
}
