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
                Value::Mapping(_) => {
                    return err(format!(
                        "{at}:key uses keywords Runway does not support yet: files"
                    ))
                }
                other => {
                    spec.key = scalar(other)
                        .ok_or_else(|| ConfigError(format!("{at}:key config should be a string")))?
                }
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
            "unprotect" => {
                return err(format!(
                    "{at} uses keywords Runway does not support yet: unprotect"
                ))
            }
            other => return err(format!("{at} config contains unknown keys: {other}")),
        }
    }
    Ok(spec)
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
            refused("{key: {files: [a]}}"),
            "c:key uses keywords Runway does not support yet: files"
        );
        assert_eq!(refused("[x]"), "c config should be a hash");
    }
}
