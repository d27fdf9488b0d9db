//! Plan step: `hooks` ‹entry/hooks.rb›: scripts the runner runs at a point of the job, as
//! the payload's `hooks` (`Ci::Build#runtime_hooks`). GitLab allows
//! `pre_get_sources_script` alone, a script as `script:` is written.

use serde_yaml_ng::Value;

use super::{err, key_str, script, Result};
use crate::ci::config::Hook;

/// `Entry::Hooks::ALLOWED_HOOKS`.
const ALLOWED_HOOKS: &[&str] = &["pre_get_sources_script"];

pub(crate) fn hooks_spec(value: &Value, at: &str) -> Result<Vec<Hook>> {
    let Value::Mapping(m) = value else {
        return err(format!("{at} config should be a hash"));
    };
    let mut hooks = Vec::new();
    for (k, v) in m {
        let name = key_str(k)?;
        if !ALLOWED_HOOKS.contains(&name.as_str()) {
            return err(format!("{at} config contains unknown keys: {name}"));
        }
        let lines = script(v, 0).ok_or_else(|| {
            crate::ci::config::ConfigError(format!(
                "{at}:{name} config should be a string or a nested array of strings up to 10 levels deep"
            ))
        })?;
        hooks.push(Hook {
            name,
            script: lines,
        });
    }
    Ok(hooks)
}

#[cfg(test)]
mod tests {
    use super::super::yaml;
    use super::*;

    #[test]
    fn the_one_hook_and_refusals() {
        let hooks = hooks_spec(
            &yaml("{pre_get_sources_script: [echo a, [echo b]]}"),
            "jobs:j:hooks",
        )
        .unwrap();
        assert_eq!(hooks[0].name, "pre_get_sources_script");
        assert_eq!(hooks[0].script, ["echo a", "echo b"]);
        let refused = |text: &str| hooks_spec(&yaml(text), "jobs:j:hooks").unwrap_err().0;
        assert_eq!(
            refused("{post_get_sources_script: x}"),
            "jobs:j:hooks config contains unknown keys: post_get_sources_script"
        );
        assert_eq!(refused("[x]"), "jobs:j:hooks config should be a hash");
        assert_eq!(
            refused("{pre_get_sources_script: {a: b}}"),
            "jobs:j:hooks:pre_get_sources_script config should be a string or a nested array of strings up to 10 levels deep"
        );
    }
}
