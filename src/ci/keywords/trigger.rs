//! Plan step: `trigger` ‹entry/trigger.rb, entry/bridge.rb, trigger/forward.rb›: a bridge
//! job, which starts a pipeline instead of running on a runner — a child pipeline from the
//! files it includes, or (`trigger: <project>`, `trigger:project`) a pipeline of another
//! Runway project. `include:artifact`, `inputs` and `strategy: mirror` are refused by name
//! until they work.

use serde_yaml_ng::Value;

use super::{err, key_str, Result};
use crate::ci::config::TriggerSpec;

/// `Entry::Trigger::ComplexTrigger::SameProjectTrigger::INCLUDE_MAX_SIZE`.
const INCLUDE_MAX_SIZE: usize = 3;

pub(crate) fn trigger_spec(value: &Value, at: &str, name: &str) -> Result<TriggerSpec> {
    let not_yet = |what: &str| {
        err(format!(
            "jobs:{name} uses keywords Runway does not support yet: {what}"
        ))
    };
    let mut spec = TriggerSpec {
        config: String::new(),
        project: None,
        branch: None,
        artifact: None,
        strategy: None,
        forward_yaml_variables: true,
        forward_pipeline_variables: false,
    };
    let m = match value {
        Value::String(project) if !project.is_empty() => {
            spec.project = Some(project.clone());
            return Ok(spec);
        }
        Value::Mapping(m) => m,
        _ => return err(format!("{at} has to be either a string or a hash")),
    };
    let child = m.contains_key("include");
    for (k, v) in m {
        match key_str(k)?.as_str() {
            "include" => {
                let entries: Vec<&Value> = match v {
                    Value::Sequence(items) => items.iter().collect(),
                    other => vec![other],
                };
                if entries.len() > INCLUDE_MAX_SIZE {
                    return err(format!(
                        "{at}:include config is too long (maximum is {INCLUDE_MAX_SIZE})"
                    ));
                }
                for entry in &entries {
                    let Value::Mapping(e) = entry else { continue };
                    let Some(path) = e.get("artifact") else {
                        continue;
                    };
                    // `Entry::Include`: an artifact names the job it comes from.
                    let Some(job) = e.get("job").and_then(Value::as_str) else {
                        return err(format!(
                            "{at}:include config must specify the job where to fetch the artifact from"
                        ));
                    };
                    // Runway reads a generated file alone, the common dynamic child pipeline.
                    if entries.len() > 1 {
                        return not_yet("trigger:include:artifact with other includes");
                    }
                    let Some(path) = path.as_str() else {
                        return err(format!("{at}:include artifact should be a string"));
                    };
                    spec.artifact = Some(crate::ci::config::ArtifactInclude {
                        path: path.to_string(),
                        job: job.to_string(),
                    });
                }
                let mut config = serde_yaml_ng::Mapping::new();
                config.insert(Value::from("include"), v.clone());
                spec.config = serde_yaml_ng::to_string(&config)
                    .map_err(|e| crate::ci::config::ConfigError(format!("{at}:include {e}")))?;
            }
            "strategy" => match v.as_str() {
                Some("depend") => spec.strategy = Some("depend".into()),
                Some("mirror") => return not_yet("trigger:strategy:mirror"),
                _ => return err(format!("{at} strategy should be depend or mirror")),
            },
            "forward" => {
                let Value::Mapping(f) = v else {
                    return err(format!("{at}:forward config should be a hash"));
                };
                for (fk, fv) in f {
                    let fk = key_str(fk)?;
                    let Some(b) = fv.as_bool() else {
                        return err(format!("{at}:forward {fk} should be a boolean value"));
                    };
                    match fk.as_str() {
                        "yaml_variables" => spec.forward_yaml_variables = b,
                        "pipeline_variables" => spec.forward_pipeline_variables = b,
                        other => {
                            return err(format!(
                                "{at}:forward config contains unknown keys: {other}"
                            ))
                        }
                    }
                }
            }
            "project" | "branch" if child => {
                return err(format!(
                    "{at} config contains unknown keys: {}",
                    key_str(k)?
                ))
            }
            "project" | "branch" => {
                let Some(text) = v.as_str() else {
                    return err(format!("{at} {} should be a string", key_str(k)?));
                };
                if key_str(k)? == "project" {
                    spec.project = Some(text.to_string());
                } else {
                    spec.branch = Some(text.to_string());
                }
            }
            "inputs" => return not_yet("trigger:inputs"),
            other => return err(format!("{at} config contains unknown keys: {other}")),
        }
    }
    if !child && spec.project.as_deref().is_none_or(str::is_empty) {
        return err(format!("{at} project can't be blank"));
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::super::yaml;
    use super::*;

    #[test]
    fn child_triggers_and_refusals() {
        let spec = trigger_spec(
            &yaml("{include: child.yml, strategy: depend, forward: {pipeline_variables: true}}"),
            "jobs:b:trigger",
            "b",
        )
        .unwrap();
        assert_eq!(spec.strategy.as_deref(), Some("depend"));
        assert!(spec.forward_yaml_variables && spec.forward_pipeline_variables);
        let refused = |text: &str| {
            trigger_spec(&yaml(text), "jobs:b:trigger", "b")
                .unwrap_err()
                .0
        };
        let other = trigger_spec(&yaml("group/other"), "jobs:b:trigger", "b").unwrap();
        assert_eq!(other.project.as_deref(), Some("group/other"));
        let branch = trigger_spec(
            &yaml("{project: g/o, branch: stable, strategy: depend}"),
            "jobs:b:trigger",
            "b",
        )
        .unwrap();
        assert_eq!(
            (branch.project.as_deref(), branch.branch.as_deref()),
            (Some("g/o"), Some("stable"))
        );
        assert_eq!(
            refused("{strategy: depend}"),
            "jobs:b:trigger project can't be blank"
        );
        assert_eq!(
            refused("{include: [a.yml, b.yml, c.yml, d.yml]}"),
            "jobs:b:trigger:include config is too long (maximum is 3)"
        );
        let generated = trigger_spec(
            &yaml("{include: [{artifact: gen.yml, job: gen}]}"),
            "jobs:b:trigger",
            "b",
        )
        .unwrap();
        assert_eq!(
            generated.artifact.map(|a| (a.path, a.job)),
            Some(("gen.yml".into(), "gen".into()))
        );
        assert_eq!(
            refused("{include: [{artifact: gen.yml}]}"),
            "jobs:b:trigger:include config must specify the job where to fetch the artifact from"
        );
        assert_eq!(
            refused("{include: a.yml, strategy: wait}"),
            "jobs:b:trigger strategy should be depend or mirror"
        );
        assert_eq!(
            refused("[x]"),
            "jobs:b:trigger has to be either a string or a hash"
        );
    }
}
