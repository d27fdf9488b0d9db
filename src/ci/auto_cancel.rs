//! `workflow:auto_cancel` ‹lib/gitlab/ci/config/entry/auto_cancel.rb›: what a newer
//! pipeline on the same ref (`on_new_commit`) and a failed job (`on_job_failure`) do to a
//! pipeline. Given under `workflow`, and per `workflow:rules` rule, whose keys override
//! the workflow's (`PopulateMetadata#set_auto_cancel`). The pipeline keeps the result;
//! `service::pipelines` acts on it.

use serde_yaml_ng::Value;

use super::config::ConfigError;

/// `Ci::PipelineMetadata`'s `auto_cancel_on_new_commit` values, the default first.
const ON_NEW_COMMIT: &[&str] = &["conservative", "interruptible", "none"];
/// `Ci::PipelineMetadata`'s `auto_cancel_on_job_failure` values, the default first.
const ON_JOB_FAILURE: &[&str] = &["none", "all"];

/// A pipeline's auto-cancel settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoCancel {
    pub on_new_commit: String,
    pub on_job_failure: String,
}

impl Default for AutoCancel {
    fn default() -> Self {
        AutoCancel {
            on_new_commit: ON_NEW_COMMIT[0].into(),
            on_job_failure: ON_JOB_FAILURE[0].into(),
        }
    }
}

/// The keys an `auto_cancel` hash sets (either may be absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Given {
    on_new_commit: Option<String>,
    on_job_failure: Option<String>,
}

impl Given {
    /// `over`'s keys over this one's.
    pub fn merged(self, over: Given) -> Given {
        Given {
            on_new_commit: over.on_new_commit.or(self.on_new_commit),
            on_job_failure: over.on_job_failure.or(self.on_job_failure),
        }
    }

    /// The settings, GitLab's defaults where a key was not given.
    pub fn settle(self) -> AutoCancel {
        let default = AutoCancel::default();
        AutoCancel {
            on_new_commit: self.on_new_commit.unwrap_or(default.on_new_commit),
            on_job_failure: self.on_job_failure.unwrap_or(default.on_job_failure),
        }
    }
}

/// Reads an `auto_cancel` hash found at `at` (`workflow:auto_cancel`,
/// `workflow:rules:rule:auto_cancel`), with `Entry::AutoCancel`'s messages.
pub fn parse(value: &Value, at: &str) -> Result<Given, ConfigError> {
    let Value::Mapping(map) = value else {
        return Err(ConfigError(format!("{at} config should be a hash")));
    };
    let mut given = Given::default();
    for (key, value) in map {
        let key = key.as_str().unwrap_or_default();
        let (allowed, words, slot) = match key {
            "on_new_commit" => (ON_NEW_COMMIT, "on new commit", &mut given.on_new_commit),
            "on_job_failure" => (ON_JOB_FAILURE, "on job failure", &mut given.on_job_failure),
            other => {
                return Err(ConfigError(format!(
                    "{at} config contains unknown keys: {other}"
                )))
            }
        };
        match value {
            Value::Null => {}
            Value::String(v) if allowed.contains(&v.as_str()) => *slot = Some(v.clone()),
            _ => {
                return Err(ConfigError(format!(
                    "{at} {words} must be one of: {}",
                    allowed.join(", ")
                )))
            }
        }
    }
    Ok(given)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Given, ConfigError> {
        parse(
            &serde_yaml_ng::from_str(text).expect("yaml"),
            "workflow:auto_cancel",
        )
    }

    #[test]
    fn settings_default_merge_and_refuse_as_gitlab() {
        assert_eq!(read("{}").expect("empty").settle(), AutoCancel::default());
        let workflow = read("{on_new_commit: interruptible, on_job_failure: all}").expect("both");
        let rule = read("{on_new_commit: none}").expect("one");
        assert_eq!(
            workflow.merged(rule).settle(),
            AutoCancel {
                on_new_commit: "none".into(),
                on_job_failure: "all".into()
            }
        );
        for (text, message) in [
            (
                "{on_new_commit: always}",
                "workflow:auto_cancel on new commit must be one of: conservative, interruptible, none",
            ),
            (
                "{on_job_failure: true}",
                "workflow:auto_cancel on job failure must be one of: none, all",
            ),
            (
                "{later: x}",
                "workflow:auto_cancel config contains unknown keys: later",
            ),
            ("[x]", "workflow:auto_cancel config should be a hash"),
        ] {
            assert_eq!(read(text).expect_err(text).0, message);
        }
    }
}
