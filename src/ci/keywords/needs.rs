//! Plan step: one of a job's `needs` ‹entry/needs.rb, entry/need.rb›; the plan resolves
//! them once every job is known.

use serde_yaml_ng::Value;

use super::{err, key_str, scalar, Result};
use crate::ci::config::{ConfigError, Need};

pub(crate) fn need(value: &Value, at: &str) -> Result<Need> {
    match value {
        Value::Mapping(m) => {
            for (k, _) in m {
                let k = key_str(k)?;
                match k.as_str() {
                    "job" | "artifacts" | "optional" => {}
                    "pipeline" | "project" | "ref" | "parallel" => {
                        return err(format!(
                            "{at} uses keywords Runway does not support yet: {k}"
                        ))
                    }
                    other => return err(format!("{at} config contains unknown keys: {other}")),
                }
            }
            let job = m
                .get("job")
                .and_then(scalar)
                .ok_or_else(|| ConfigError(format!("{at} config should name a job")))?;
            let artifacts = m.get("artifacts").and_then(Value::as_bool).unwrap_or(true);
            let optional = m.get("optional").and_then(Value::as_bool).unwrap_or(false);
            Ok(Need {
                job,
                artifacts,
                optional,
            })
        }
        other => scalar(other)
            .map(|job| Need {
                job,
                artifacts: true,
                optional: false,
            })
            .ok_or_else(|| ConfigError(format!("{at} config should be a string or a hash"))),
    }
}

#[cfg(test)]
mod tests {
    use super::super::yaml;
    use super::*;

    #[test]
    fn a_name_or_a_hash() {
        assert_eq!(
            need(&yaml("build"), "n").unwrap(),
            Need {
                job: "build".into(),
                artifacts: true,
                optional: false
            }
        );
        assert_eq!(
            need(&yaml("{job: b, artifacts: false, optional: true}"), "n").unwrap(),
            Need {
                job: "b".into(),
                artifacts: false,
                optional: true
            }
        );
        let refused = |text: &str| need(&yaml(text), "n").unwrap_err().0;
        assert_eq!(
            refused("{job: b, project: p}"),
            "n uses keywords Runway does not support yet: project"
        );
        assert_eq!(refused("{artifacts: true}"), "n config should name a job");
        assert_eq!(refused("[b]"), "n config should be a string or a hash");
    }
}
