//! Plan step: `release` ‹entry/release.rb, entry/release/assets.rb, assets/link.rb›, and
//! the step that makes the release when the job's script succeeded: the `release-cli
//! create` command GitLab's `Gitlab::Ci::Build::Releaser` writes (the runner's shell
//! expands the variables in it).

use serde_json::json;
use serde_yaml_ng::{Mapping, Value};

use super::{err, key_str, scalar, string_list, Result};
use crate::ci::config::{ConfigError, ReleaseSpec};

const KEYS: &[&str] = &[
    "tag_name",
    "tag_message",
    "name",
    "description",
    "ref",
    "released_at",
    "milestones",
    "assets",
];

pub(crate) fn release_spec(value: &Value, at: &str) -> Result<ReleaseSpec> {
    let Value::Mapping(m) = value else {
        return err(format!("{at} config should be a hash"));
    };
    for (k, _) in m {
        let k = key_str(k)?;
        if !KEYS.contains(&k.as_str()) {
            return err(format!("{at} config contains unknown keys: {k}"));
        }
    }
    let text = |key: &str| -> Result<Option<String>> {
        match m.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => scalar(v).map(Some).ok_or_else(|| {
                ConfigError(format!("{at} {} should be a string", key.replace('_', " ")))
            }),
        }
    };
    let Some(tag_name) = text("tag_name")?.filter(|t| !t.is_empty()) else {
        return err(format!("{at} tag name can't be blank"));
    };
    let Some(description) = text("description")?.filter(|d| !d.is_empty()) else {
        return err(format!("{at} description can't be blank"));
    };
    let milestones = match m.get("milestones") {
        None => Vec::new(),
        Some(v) => string_list(v).ok_or_else(|| {
            ConfigError(format!(
                "{at} milestones should be an array of strings or a string"
            ))
        })?,
    };
    Ok(ReleaseSpec {
        tag_name,
        tag_message: text("tag_message")?,
        name: text("name")?,
        description,
        ref_: text("ref")?,
        released_at: text("released_at")?,
        milestones,
        links: match m.get("assets") {
            None => Vec::new(),
            Some(assets) => links(assets, &format!("{at}:assets"))?,
        },
    })
}

/// `assets:links`: each a hash with `name` and `url` (and `link_type`, `filepath` or
/// `direct_asset_path`), kept as JSON for the command.
fn links(value: &Value, at: &str) -> Result<Vec<serde_json::Value>> {
    let Value::Mapping(assets) = value else {
        return err(format!("{at} config should be a hash"));
    };
    let Some(Value::Sequence(items)) = assets.get("links") else {
        return err(format!("{at} config missing required keys: links"));
    };
    // The API takes at most as many (`links_of` in `api::admin::releases`).
    if items.len() > 100 {
        return err(format!("{at}:links config is too long (maximum is 100)"));
    }
    let mut out = Vec::new();
    for item in items {
        let Value::Mapping(link) = item else {
            return err(format!("{at}:links:link config should be a hash"));
        };
        let get = |k: &str| link.get(k).and_then(scalar);
        let (Some(name), Some(url)) = (get("name"), get("url")) else {
            return err(format!(
                "{at}:links:link config missing required keys: name, url"
            ));
        };
        let mut entry = json!({ "name": name, "url": url });
        for key in ["link_type", "filepath", "direct_asset_path"] {
            if let Some(v) = get(key) {
                entry[key] = json!(v);
            }
        }
        check_link_keys(link, at)?;
        out.push(entry);
    }
    Ok(out)
}

fn check_link_keys(link: &Mapping, at: &str) -> Result<()> {
    for (k, _) in link {
        let k = key_str(k)?;
        if !["name", "url", "link_type", "filepath", "direct_asset_path"].contains(&k.as_str()) {
            return err(format!("{at}:links:link config contains unknown keys: {k}"));
        }
    }
    Ok(())
}

/// The release step's command (`Releaser#script`): each flag quoted for the shell, each
/// link as its JSON in a quoted string.
pub fn release_command(spec: &ReleaseSpec) -> String {
    let quote = |v: &str| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""));
    let mut command = String::from("release-cli create");
    let single = [
        ("name", spec.name.as_deref()),
        ("description", Some(spec.description.as_str())),
        ("tag-name", Some(spec.tag_name.as_str())),
        ("tag-message", spec.tag_message.as_deref()),
        ("ref", spec.ref_.as_deref()),
        ("released-at", spec.released_at.as_deref()),
    ];
    for (flag, value) in single {
        if let Some(v) = value {
            command += &format!(" --{flag} {}", quote(v));
        }
    }
    for milestone in &spec.milestones {
        command += &format!(" --milestone {}", quote(milestone));
    }
    for link in &spec.links {
        command += &format!(" --assets-link {}", json!(link.to_string()));
    }
    command
}

#[cfg(test)]
mod tests {
    use super::super::yaml;
    use super::*;

    #[test]
    fn the_command_and_refusals() {
        let spec = release_spec(
            &yaml("{tag_name: v$VERSION, description: 'Notes \"quoted\"', assets: {links: [{name: linux, url: 'https://x/a'}]}}"),
            "jobs:r:release",
        )
        .unwrap();
        assert_eq!(
            release_command(&spec),
            r#"release-cli create --description "Notes \"quoted\"" --tag-name "v$VERSION" --assets-link "{\"name\":\"linux\",\"url\":\"https://x/a\"}""#
        );
        let refused = |text: &str| release_spec(&yaml(text), "jobs:r:release").unwrap_err().0;
        assert_eq!(
            refused("{description: d}"),
            "jobs:r:release tag name can't be blank"
        );
        assert_eq!(
            refused("{tag_name: v1}"),
            "jobs:r:release description can't be blank"
        );
        assert_eq!(
            refused("{tag_name: v1, description: d, colour: red}"),
            "jobs:r:release config contains unknown keys: colour"
        );
        assert_eq!(
            refused("{tag_name: v1, description: d, assets: {links: [{name: a}]}}"),
            "jobs:r:release:assets:links:link config missing required keys: name, url"
        );
    }
}
