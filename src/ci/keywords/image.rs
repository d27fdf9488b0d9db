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
                // `Entry::Image`/`Entry::Service` options whose behaviour comes later.
                if ["ports", "docker", "kubernetes"].contains(&k.as_str()) {
                    return err(format!(
                        "{at} uses keywords Runway does not support yet: {k}"
                    ));
                }
                if ![
                    "name",
                    "entrypoint",
                    "command",
                    "alias",
                    "pull_policy",
                    "variables",
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
            })
        }
        _ => err(format!("{at} config should be a string or a hash")),
    }
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
            "jobs:j:image uses keywords Runway does not support yet: ports"
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
