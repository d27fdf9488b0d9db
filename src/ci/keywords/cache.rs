//! Plan step: `cache` ‹entry/cache.rb, entry/key.rb›.

use serde_yaml_ng::Value;

use super::artifacts::ARTIFACT_WHEN;
use super::{boolean, choice, err, key_str, scalar, string_list, Result};
use crate::ci::config::{CacheSpec, ConfigError};

pub(crate) fn cache_spec(value: &Value, at: &str) -> Result<CacheSpec> {
    let Value::Mapping(m) = value else {
        return err(format!("{at} config should be a hash"));
    };
    let mut spec = CacheSpec {
        key: "default".into(),
        policy: "pull-push".into(),
        when: "on_success".into(),
        ..Default::default()
    };
    for (k, v) in m {
        let k = key_str(k)?;
        match k.as_str() {
            "key" => match v {
                // `Entry::Key`: a hash needs `files` (`prefix` is optional).
                Value::Mapping(key) if !key.contains_key("files") => {
                    return err(format!("{at}:key config missing required keys: files"))
                }
                Value::Mapping(key) => {
                    for (kk, _) in key {
                        let kk = key_str(kk)?;
                        if kk != "files" && kk != "prefix" {
                            return err(format!("{at}:key config contains unknown keys: {kk}"));
                        }
                    }
                    // `Entry::Files`: one or two paths, a leading `/` dropped.
                    let files = key.get("files").and_then(string_list).ok_or_else(|| {
                        ConfigError(format!(
                            "{at}:key:files config should be an array of strings"
                        ))
                    })?;
                    if files.is_empty() {
                        return err(format!("{at}:key:files config requires at least 1 item"));
                    }
                    if files.len() > 2 {
                        return err(format!(
                            "{at}:key:files config has too many items (maximum is 2)"
                        ));
                    }
                    spec.key_files = files
                        .iter()
                        .map(|f| f.trim_start_matches('/').to_string())
                        .collect();
                    spec.key_prefix = match key.get("prefix") {
                        None | Some(Value::Null) => None,
                        Some(p) => Some(simple_key(p, &format!("{at}:key:prefix"))?),
                    };
                }
                other => spec.key = simple_key(other, &format!("{at}:key"))?,
            },
            "paths" => {
                spec.paths = string_list(v).ok_or_else(|| {
                    ConfigError(format!("{at}:paths config should be an array of strings"))
                })?
            }
            "untracked" => spec.untracked = boolean(v, at, "untracked")?,
            "policy" => spec.policy = choice(v, at, "policy", &["pull-push", "pull", "push"])?,
            "when" => spec.when = choice(v, at, "when", ARTIFACT_WHEN)?,
            "fallback_keys" => {
                spec.fallback_keys = string_list(v).ok_or_else(|| {
                    ConfigError(format!(
                        "{at}:fallback_keys config should be an array of strings"
                    ))
                })?
            }
            "unprotect" => spec.unprotect = boolean(v, at, "unprotect")?,
            other => return err(format!("{at} config contains unknown keys: {other}")),
        }
    }
    Ok(spec)
}

/// A key as `Entry::Key` takes it: a string that is no path.
fn simple_key(value: &Value, at: &str) -> Result<String> {
    let key =
        scalar(value).ok_or_else(|| ConfigError(format!("{at} config should be a string")))?;
    if key.contains('/') || key.contains("%2F") || key.contains("%2f") {
        return err(format!("{at} config cannot contain the \"/\" character"));
    }
    if key == "." || key == ".." || key == "%2E" || key == "%2e" {
        return err(format!("{at} config cannot be \".\" or \"..\""));
    }
    Ok(key)
}

/// The key `cache:key:files` gives (`Seed::Build::Cache`): the SHA-1 of the last commits
/// that changed the files (sorted, each once, joined by `-`), `default` when none of them
/// is in the commit, after the prefix if there is one.
pub(crate) fn files_key(prefix: Option<&str>, last_commits: &[String]) -> String {
    use sha1::Digest as _;
    let mut commits: Vec<&str> = last_commits.iter().map(String::as_str).collect();
    commits.sort_unstable();
    commits.dedup();
    let digest = if commits.is_empty() {
        "default".to_string()
    } else {
        hex::encode(sha1::Sha1::digest(commits.join("-").as_bytes()))
    };
    match prefix.filter(|p| !p.is_empty()) {
        Some(prefix) => format!("{prefix}-{digest}"),
        None => digest,
    }
}

#[cfg(test)]
mod tests {
    use super::super::yaml;
    use super::*;

    #[test]
    fn defaults_and_refusals() {
        let spec = cache_spec(&yaml("{paths: [v/]}"), "c").unwrap();
        assert_eq!(
            (spec.key.as_str(), spec.policy.as_str(), spec.when.as_str()),
            ("default", "pull-push", "on_success")
        );
        let spec = cache_spec(&yaml("{key: 1, policy: pull, fallback_keys: [a]}"), "c").unwrap();
        assert_eq!((spec.key.as_str(), spec.fallback_keys.len()), ("1", 1));
        let refused = |text: &str| cache_spec(&yaml(text), "c").unwrap_err().0;
        assert_eq!(
            refused("{key: {prefix: x}}"),
            "c:key config missing required keys: files"
        );
        assert_eq!(
            refused("{key: {files: [a, b, c]}}"),
            "c:key:files config has too many items (maximum is 2)"
        );
        assert_eq!(
            refused("{key: a/b}"),
            "c:key config cannot contain the \"/\" character"
        );
        let spec = cache_spec(
            &yaml("{key: {files: [/Gemfile.lock], prefix: gems}, unprotect: true}"),
            "c",
        )
        .unwrap();
        assert_eq!(spec.key_files, ["Gemfile.lock"]);
        assert_eq!(spec.key_prefix.as_deref(), Some("gems"));
        assert!(spec.unprotect);
        // SHA-1 of "a-b", the commits sorted and each once.
        assert_eq!(
            files_key(Some("gems"), &["b".into(), "a".into(), "b".into()]),
            "gems-34fafddda8f42376094beb762e514a67b6f019e7"
        );
        assert_eq!(files_key(None, &[]), "default");
        assert_eq!(refused("[x]"), "c config should be a hash");
    }
}
