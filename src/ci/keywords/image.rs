//! Plan step: `image` and `services` ‹entry/image.rb, entry/service.rb›.

use serde_yaml_ng::Value;

use super::{err, key_str, scalar, string_list, variables_of, Result};
use crate::ci::config::{ConfigError, ImageSpec};

pub(crate) fn image_spec(value: &Value, at: &str) -> Result<ImageSpec> {
    match value {
        Value::String(name) => Ok(ImageSpec {
            name: name.clone(),
            ..Default::default()
        }),
        Value::Mapping(m) => {
            for (k, _) in m {
                let k = key_str(k)?;
                // `ports` is allowed only where GitLab sets `with_image_ports` (the Web
                // IDE's terminal), never in `.gitlab-ci.yml`: GitLab's own refusal.
                if k == "ports" {
                    return err(format!("{at} config contains disallowed keys: ports"));
                }
                if ![
                    "name",
                    "entrypoint",
                    "command",
                    "alias",
                    "pull_policy",
                    "variables",
                    "docker",
                    "kubernetes",
                ]
                .contains(&k.as_str())
                {
                    return err(format!("{at} config contains unknown keys: {k}"));
                }
            }
            let name = m
                .get("name")
                .and_then(scalar)
                .ok_or_else(|| ConfigError(format!("{at} config should have a name")))?;
            let list = |key: &str| -> Result<Option<Vec<String>>> {
                m.get(key)
                    .map(|v| {
                        string_list(v).ok_or_else(|| {
                            ConfigError(format!("{at}:{key} config should be an array of strings"))
                        })
                    })
                    .transpose()
            };
            Ok(ImageSpec {
                name,
                entrypoint: list("entrypoint")?,
                command: list("command")?,
                alias: m.get("alias").and_then(scalar),
                pull_policy: list("pull_policy")?,
                variables: variables_of(m.get("variables"), &format!("{at}:variables"))?,
                executor_opts: executor_opts(m, at)?,
            })
        }
        _ => err(format!("{at} config should be a string or a hash")),
    }
}

/// `docker:` and `kubernetes:` as `Entry::Imageable` checks them against its schema
/// (‹schemas/imageable/executor_opts.json›: no other keys at any level; `docker.platform`
/// a string of 1–64 characters, `docker.user` of 1–255, `kubernetes.user` a string or an
/// integer of 1–255), kept as the payload's `executor_opts` (`None` when neither is given).
fn executor_opts(m: &serde_yaml_ng::Mapping, at: &str) -> Result<Option<serde_json::Value>> {
    let mut opts = serde_json::Map::new();
    for executor in ["docker", "kubernetes"] {
        let Some(given) = m.get(executor) else {
            continue;
        };
        let bad = |what: &str| ConfigError(format!("{at} executor opts {what}"));
        let Value::Mapping(given) = given else {
            return Err(bad(&format!("value at `/{executor}` is not an object")));
        };
        let mut out = serde_json::Map::new();
        for (k, v) in given {
            let k = key_str(k)?;
            let max = match (executor, k.as_str()) {
                ("docker", "platform") => 64,
                ("docker", "user") | ("kubernetes", "user") => 255,
                _ => {
                    return Err(bad(&format!(
                        "object property at `/{executor}/{k}` is a disallowed additional property"
                    )))
                }
            };
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) if executor == "kubernetes" && n.is_i64() => n.to_string(),
                _ if executor == "kubernetes" => {
                    return Err(bad(&format!(
                    "value at `/{executor}/{k}` is not one of the types: [\"string\", \"integer\"]"
                )))
                }
                _ => return Err(bad(&format!("value at `/{executor}/{k}` is not a string"))),
            };
            let length = text.chars().count();
            if length == 0 || length > max {
                return Err(bad(&format!(
                    "value at `/{executor}/{k}` should be 1 to {max} characters long"
                )));
            }
            let value = match v {
                Value::Number(n) => serde_json::json!(n.as_i64()),
                _ => serde_json::json!(text),
            };
            out.insert(k, value);
        }
        opts.insert(executor.to_string(), serde_json::Value::Object(out));
    }
    Ok((!opts.is_empty()).then_some(serde_json::Value::Object(opts)))
}

#[cfg(test)]
mod tests {
    use super::super::yaml;
    use super::*;

    #[test]
    fn a_name_or_a_hash() {
        assert_eq!(image_spec(&yaml("ruby:3.3"), "i").unwrap().name, "ruby:3.3");
        let spec = image_spec(
            &yaml(
                "{name: pg, entrypoint: [''], alias: db, pull_policy: always, variables: {A: a}}",
            ),
            "i",
        )
        .unwrap();
        assert_eq!(spec.entrypoint, Some(vec![String::new()]));
        assert_eq!(spec.alias.as_deref(), Some("db"));
        assert_eq!(spec.pull_policy, Some(vec!["always".to_string()]));
        assert_eq!(spec.variables.len(), 1);
        let refused = |text: &str| image_spec(&yaml(text), "jobs:j:image").unwrap_err().0;
        assert_eq!(
            refused("{name: x, ports: [80]}"),
            "jobs:j:image config contains disallowed keys: ports"
        );
        let spec = image_spec(
            &yaml(
                "{name: x, docker: {platform: linux/arm64, user: dave}, kubernetes: {user: 1000}}",
            ),
            "i",
        )
        .unwrap();
        assert_eq!(
            spec.executor_opts,
            Some(
                serde_json::json!({"docker": {"platform": "linux/arm64", "user": "dave"}, "kubernetes": {"user": 1000}})
            )
        );
        assert_eq!(
            refused("{name: x, docker: {platform: [a]}}"),
            "jobs:j:image executor opts value at `/docker/platform` is not a string"
        );
        assert_eq!(
            refused("{name: x, docker: {nope: a}}"),
            "jobs:j:image executor opts object property at `/docker/nope` is a disallowed additional property"
        );
        assert_eq!(
            refused("{name: x, nope: 1}"),
            "jobs:j:image config contains unknown keys: nope"
        );
        assert_eq!(
            refused("{alias: x}"),
            "jobs:j:image config should have a name"
        );
        assert_eq!(
            refused("[x]"),
            "jobs:j:image config should be a string or a hash"
        );
    }
}
