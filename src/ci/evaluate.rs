//! Evaluate step: what this pipeline (its ref, source, variables, commit) makes of the
//! file. `workflow` ‹lib/gitlab/ci/config/entry/workflow.rb› lets the pipeline be or not,
//! and gives it variables and a name; for each job, `rules` ‹lib/gitlab/ci/build/rules.rb,
//! lib/gitlab/ci/build/rules/rule.rb, rules/rule/clause/*.rb› or `only`/`except`
//! ‹entry/policy.rb, via [`super::policy`]› decide whether it is in the pipeline, and with
//! which `when`, `allow_failure` and variables.

use std::collections::HashMap;

use serde_yaml_ng::{Mapping, Value};

use super::config::{ConfigError, RuleScope, Variable, When};
use super::expr;
use super::keywords::{err, key_str, scalar, upsert_var, variables_of, Result};
use super::normalise::Config;
use super::policy;

/// What `workflow` makes of this pipeline.
pub(crate) struct Pipeline {
    /// The file's global variables, the matching `workflow:rules`' over them.
    pub(crate) variables: Vec<Variable>,
    /// `workflow:name`, its variables expanded; `None` when empty.
    pub(crate) name: Option<String>,
    /// Whether `workflow:rules` is written: it drops `only`'s default from every job
    /// (`Processable#compose!`).
    pub(crate) workflow_rules: bool,
    /// `workflow:auto_cancel`, the matching rule's keys over it.
    pub(crate) auto_cancel: super::auto_cancel::AutoCancel,
}

/// Evaluates `workflow` for this pipeline: an error when its rules stop it.
pub(crate) fn pipeline(
    config: &Config<'_>,
    scope: &RuleScope,
    commit: &super::include::Commit<'_>,
) -> Result<Pipeline> {
    let mut variables = config.variables.clone();
    let flow = workflow(config.root, &scope.with(&variables), commit)?;
    // `workflow:rules:variables` are the pipeline's: over the file's global ones.
    for v in flow.variables {
        upsert_var(&mut variables, v);
    }
    let name = flow
        .name
        // `PopulateMetadata`: expanded with the variables' own references expanded.
        .map(|name| {
            let vars = super::environment::expand_all(&scope.with(&variables));
            super::environment::expand(&name, &vars)
        })
        .filter(|name| !name.is_empty());
    let workflow_rules = matches!(
        config.root.get("workflow"),
        Some(Value::Mapping(w)) if w.contains_key("rules")
    );
    Ok(Pipeline {
        variables,
        name,
        workflow_rules,
        auto_cancel: flow.auto_cancel,
    })
}

/// What a job's matching rule changes, for a job in the pipeline (all `None` and empty
/// under `only`/`except`).
#[derive(Default)]
pub(crate) struct JobRule {
    pub(crate) when: Option<When>,
    pub(crate) allow_failure: Option<bool>,
    pub(crate) variables: Vec<Variable>,
    /// The rule's `start_in` (seconds), given with `when: delayed`.
    pub(crate) start_in: Option<i64>,
    pub(crate) interruptible: Option<bool>,
}

/// Whether the job `name` is in this pipeline (`None`: not), by its `rules` or its
/// `only`/`except`, seen with its `variables` (the global ones it inherits, then its own).
pub(crate) fn job(
    name: &str,
    job: &Mapping,
    variables: &[Variable],
    rule_scope: &RuleScope,
    workflow_rules: bool,
    commit: &super::include::Commit<'_>,
) -> Result<Option<JobRule>> {
    let field = |key: &str| job.get(key).filter(|v| !v.is_null());
    let at = |key: &str| format!("jobs:{name}:{key}");

    // `only`/`except` ‹entry/policy.rb›: read (and checked) whether or not they apply.
    let only = field("only")
        .map(|v| policy::parse(v, &at("only")))
        .transpose()
        .map_err(ConfigError)?
        .flatten();
    let except = field("except")
        .map(|v| policy::parse(v, &at("except")))
        .transpose()
        .map_err(ConfigError)?
        .flatten();
    if field("rules").is_some() {
        // `disallowed_keys … 'key may not be used with `rules`'`, in the file's order.
        let with_rules: Vec<String> = job
            .iter()
            .filter(|(_, v)| !v.is_null())
            .filter_map(|(k, _)| k.as_str())
            .filter(|k| matches!(*k, "only" | "except" | "start_in"))
            .map(str::to_string)
            .collect();
        if !with_rules.is_empty() {
            return err(format!(
                "jobs:{name} config key may not be used with `rules`: {}",
                with_rules.join(", ")
            ));
        }
    } else {
        let vars = rule_scope.with(variables);
        let predefined = |key: &str| rule_scope.predefined.get(key).map_or("", String::as_str);
        let scope = policy::PolicyScope {
            source: predefined("CI_PIPELINE_SOURCE"),
            ref_: predefined("CI_COMMIT_REF_NAME"),
            tag: rule_scope.predefined.contains_key("CI_COMMIT_TAG"),
            project_path: predefined("CI_PROJECT_PATH"),
            variables: &vars,
            // The push's changed paths; without a push diff every `changes` holds, as
            // GitLab's does.
            changed_paths: commit.pushed_changes()?,
        };
        let included = policy::included(only.as_ref(), except.as_ref(), workflow_rules, &scope)
            .map_err(|e| ConfigError(format!("jobs:{name} {e}")))?;
        if !included {
            return Ok(None);
        }
    }

    let Some(rules) = field("rules") else {
        return Ok(Some(JobRule::default()));
    };
    let scope = rule_scope.with(variables);
    let Some(rule) = evaluate_rules(rules, &scope, &format!("jobs:{name}"), commit)? else {
        return Ok(None);
    };
    let when = match rule.when.as_deref() {
        Some("never") => return Ok(None),
        Some(w) => Some(When::parse(w).unwrap_or(When::OnSuccess)),
        None => None,
    };
    Ok(Some(JobRule {
        when,
        allow_failure: rule.allow_failure,
        variables: rule.variables,
        start_in: rule.start_in,
        interruptible: rule.interruptible,
    }))
}

/// What `workflow` gives the pipeline.
#[derive(Default)]
struct Workflow {
    /// `workflow:name`, as written.
    name: Option<String>,
    /// The matching rule's `variables`.
    variables: Vec<Variable>,
    /// `workflow:auto_cancel`, the matching rule's keys over it.
    auto_cancel: super::auto_cancel::AutoCancel,
}

/// `workflow` ‹entry/workflow.rb›: `rules` (the first matching rule decides; `when: never`
/// or no match stops the whole pipeline; its `variables` become the pipeline's) and
/// `name` (at most 255 characters).
fn workflow(
    root: &Mapping,
    vars: &HashMap<String, String>,
    commit: &super::include::Commit<'_>,
) -> Result<Workflow> {
    let Some(workflow) = root.get("workflow") else {
        return Ok(Workflow::default());
    };
    let Value::Mapping(workflow) = workflow else {
        return err("workflow config should be a hash");
    };
    for (k, _) in workflow {
        let k = key_str(k)?;
        match k.as_str() {
            "rules" | "name" | "auto_cancel" => {}
            _ => return err(format!("workflow config contains unknown keys: {k}")),
        }
    }
    let name = match workflow.get("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) if name.chars().count() <= 255 => Some(name.clone()),
        Some(Value::String(_)) => {
            return err("workflow:name is too long (maximum is 255 characters)")
        }
        Some(_) => return err("workflow:name config should be a string"),
    };
    let auto_cancel = match workflow.get("auto_cancel") {
        None => super::auto_cancel::Given::default(),
        Some(value) => super::auto_cancel::parse(value, "workflow:auto_cancel")?,
    };
    let Some(rules) = workflow.get("rules") else {
        return Ok(Workflow {
            name,
            variables: Vec::new(),
            auto_cancel: auto_cancel.settle(),
        });
    };
    match evaluate_rules(rules, vars, "workflow", commit)? {
        // `PopulateMetadata#set_auto_cancel`: the rule's keys over the workflow's.
        Some(rule) if rule.when.as_deref() != Some("never") => Ok(Workflow {
            name,
            variables: rule.variables,
            auto_cancel: auto_cancel.merged(rule.auto_cancel).settle(),
        }),
        _ => err("Pipeline filtered out by workflow rules."),
    }
}

struct RuleOutcome {
    when: Option<String>,
    allow_failure: Option<bool>,
    variables: Vec<Variable>,
    /// A workflow rule's `auto_cancel` (`Entry::Rules::Rule`; jobs' rules have none).
    auto_cancel: super::auto_cancel::Given,
    /// A job rule's `start_in` (with `when: delayed`) and `interruptible`.
    start_in: Option<i64>,
    interruptible: Option<bool>,
}

/// The first rule whose `if` holds (a rule without `if` always holds), or `None`.
fn evaluate_rules(
    rules: &Value,
    vars: &HashMap<String, String>,
    owner: &str,
    commit: &super::include::Commit<'_>,
) -> Result<Option<RuleOutcome>> {
    let Value::Sequence(rules) = rules else {
        return err(format!("{owner}:rules config should be an array of hashes"));
    };
    // Rules from `!reference` arrive as lists inside the list: GitLab flattens them.
    let mut flat: Vec<&Value> = Vec::new();
    let mut pending: Vec<(&Value, usize)> = rules.iter().rev().map(|r| (r, 0)).collect();
    while let Some((rule, depth)) = pending.pop() {
        match rule {
            Value::Sequence(inner) if depth < 10 => {
                pending.extend(inner.iter().rev().map(|r| (r, depth + 1)))
            }
            other => flat.push(other),
        }
    }
    for rule in flat {
        let Value::Mapping(rule) = rule else {
            return err(format!("{owner}:rules config should be an array of hashes"));
        };
        let mut auto_cancel = super::auto_cancel::Given::default();
        for (k, v) in rule {
            let k = key_str(k)?;
            match k.as_str() {
                "if" | "when" | "allow_failure" | "variables" | "changes" | "exists" => {}
                "auto_cancel" if owner == "workflow" => {
                    auto_cancel = super::auto_cancel::parse(v, "workflow:rules:rule:auto_cancel")?;
                }
                "start_in" | "interruptible" if owner != "workflow" => {}
                "needs" => {
                    return err(format!(
                        "{owner}:rules uses keywords Runway does not support yet: {k}"
                    ))
                }
                other => {
                    return err(format!(
                        "{owner}:rules:rule config contains unknown keys: {other}"
                    ))
                }
            }
        }
        // `Entry::Rules::Rule`: `start_in` exactly when the rule delays the job.
        let delayed = rule.get("when").and_then(Value::as_str) == Some("delayed");
        let start_in = match (delayed, rule.get("start_in")) {
            (true, None | Some(Value::Null)) => {
                return err(format!("{owner}:rules:rule start in can't be blank"))
            }
            (true, given) => Some(super::plan::start_in_seconds(
                given,
                &format!("{owner}:rules:rule"),
            )?),
            (false, Some(_)) => {
                return err(format!(
                    "{owner}:rules:rule config contains disallowed keys: start_in"
                ))
            }
            (false, None) => None,
        };
        let interruptible = match rule.get("interruptible") {
            None => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                return err(format!(
                    "{owner}:rules:rule interruptible should be a boolean value"
                ))
            }
        };
        let mut holds = match rule.get("if") {
            None => true,
            Some(Value::String(condition)) => expr::evaluate(condition, vars).map_err(|e| {
                ConfigError(format!("{owner}:rules:if invalid expression syntax: {e}"))
            })?,
            Some(_) => return err(format!("{owner}:rules:if should be a string")),
        };
        // Clauses hold together (`Gitlab::Ci::Build::Rules::Rule#matches?`).
        if holds {
            if let Some(exists) = rule.get("exists") {
                holds = rule_exists(exists, owner, commit)?;
            }
        }
        if holds {
            if let Some(changes) = rule.get("changes") {
                holds = rule_changes(changes, owner, commit)?;
            }
        }
        if holds {
            let when = match rule.get("when") {
                None => None,
                Some(v) => {
                    let w = scalar(v).unwrap_or_default();
                    if w != "never" && When::parse(&w).is_none() {
                        return err(format!("{owner}:rules:when unknown value: {w}"));
                    }
                    Some(w)
                }
            };
            let allow_failure = match rule.get("allow_failure") {
                None => None,
                Some(Value::Bool(b)) => Some(*b),
                Some(_) => {
                    return err(format!(
                        "{owner}:rules:allow_failure should be a boolean value"
                    ))
                }
            };
            let variables =
                variables_of(rule.get("variables"), &format!("{owner}:rules:variables"))?;
            return Ok(Some(RuleOutcome {
                when,
                allow_failure,
                variables,
                auto_cancel,
                start_in,
                interruptible,
            }));
        }
    }
    Ok(None)
}

/// `rules:exists` ‹rules/rule/clause/exists.rb›: a glob (or `paths:` globs) matching a
/// file of the pipeline's commit; past 10,000 comparisons GitLab answers yes.
fn rule_exists(value: &Value, owner: &str, commit: &super::include::Commit<'_>) -> Result<bool> {
    const MAX_COMPARISONS: usize = 10_000;
    let globs = match value {
        Value::Mapping(map) => map.get("paths").and_then(policy::strings),
        other => policy::strings(other),
    }
    .ok_or_else(|| {
        ConfigError(format!(
            "{owner}:rules:exists should be an array of strings"
        ))
    })?;
    let paths = commit.paths()?;
    if globs.len().saturating_mul(paths.len()) > MAX_COMPARISONS {
        return Ok(true);
    }
    Ok(globs.iter().any(|g| {
        let g = g.trim_start_matches('/');
        paths.iter().any(|p| super::policy::glob_matches(g, p))
    }))
}

/// `rules:changes` ‹rules/rule/clause/changes.rb›: globs (or `paths:` with `compare_to:`)
/// matching a changed path. Runway knows no push diff yet, so without `compare_to` a
/// change holds, as GitLab's does for pipelines without one; with it, the paths changed
/// since the merge base with that ref.
fn rule_changes(value: &Value, owner: &str, commit: &super::include::Commit<'_>) -> Result<bool> {
    let message = || {
        ConfigError(format!(
            "{owner}:rules:changes should be an array of strings"
        ))
    };
    let (globs, compare_to) = match value {
        Value::Mapping(map) => (
            map.get("paths")
                .and_then(policy::strings)
                .ok_or_else(message)?,
            map.get("compare_to").and_then(Value::as_str),
        ),
        other => (policy::strings(other).ok_or_else(message)?, None),
    };
    // `Clause::Changes`: without `compare_to`, the push's changed paths; none known (no
    // push, a new branch) and `changes` holds.
    let Some(base) = compare_to else {
        return Ok(match commit.pushed_changes()? {
            None => true,
            Some(changed) => globs.iter().any(|g| {
                changed
                    .iter()
                    .any(|p| super::policy::glob_matches(g.trim_start_matches('/'), p))
            }),
        });
    };
    match commit.files.changed_since(base).map_err(ConfigError)? {
        None => Ok(true),
        Some(changed) => Ok(globs.iter().any(|g| {
            changed
                .iter()
                .any(|p| super::policy::glob_matches(g.trim_start_matches('/'), p))
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::tests::{ctx, names};
    use super::super::config::{plan, plan_with};
    use super::super::include::{Commit, FileSource, NoFiles};
    use super::super::keywords::yaml;
    use super::*;

    /// A commit of three files, `src/` changed since `main`.
    struct Commit3;

    impl FileSource for Commit3 {
        fn read(&self, _: &str) -> std::result::Result<Option<String>, String> {
            Ok(None)
        }
        fn paths(&self) -> std::result::Result<Vec<String>, String> {
            Ok(vec![
                "Cargo.toml".into(),
                "src/main.rs".into(),
                "docs/index.md".into(),
            ])
        }
        fn changed_since(&self, base: &str) -> std::result::Result<Option<Vec<String>>, String> {
            match base {
                "main" => Ok(Some(vec!["src/main.rs".into()])),
                _ => Err("rules:changes:compare_to is not a valid ref".into()),
            }
        }
    }

    #[test]
    fn rules_exists_and_changes_read_the_commit() {
        let yaml = "rust: { script: x, rules: [ { exists: [Cargo.toml] } ] }\n\
                    node: { script: x, rules: [ { exists: { paths: ['**/package.json'] } } ] }\n\
                    code: { script: x, rules: [ { changes: { paths: ['src/**/*'], compare_to: main } } ] }\n\
                    docs: { script: x, rules: [ { changes: { paths: ['docs/*'], compare_to: main } } ] }\n\
                    any: { script: x, rules: [ { if: $CI_COMMIT_REF_NAME, changes: ['docs/*'] } ] }\n";
        let planned = plan_with(yaml, &ctx(), None, &Commit3).expect("plans");
        assert_eq!(names(&planned), ["rust", "code", "any"]);
        // Without a repository nothing exists, and changes hold.
        let planned = plan(yaml, &ctx()).expect("plans");
        assert_eq!(names(&planned), ["code", "docs", "any"]);
        let bad = plan_with(
            "a: { script: x, rules: [ { changes: { paths: [x], compare_to: nope } } ] }",
            &ctx(),
            None,
            &Commit3,
        );
        assert_eq!(
            bad.unwrap_err().0,
            "rules:changes:compare_to is not a valid ref"
        );
    }

    #[test]
    fn workflow_names_the_pipeline_and_its_rules_set_variables() {
        let yaml = "variables: { DEPLOY: 'no', KIND: nightly }\n\
                    workflow:\n  name: '$KIND build of $CI_COMMIT_REF_NAME, deploy $DEPLOY'\n\
                    \x20 rules:\n    - if: $CI_COMMIT_REF_NAME\n      variables: { DEPLOY: 'yes' }\n\
                    job: { script: x }\n";
        let planned = plan(yaml, &ctx()).expect("plans");
        assert_eq!(
            planned.name.as_deref(),
            Some("nightly build of main, deploy yes")
        );
        let deploy = planned.jobs[0]
            .spec
            .variables
            .iter()
            .find(|v| v.key == "DEPLOY")
            .map(|v| v.value.as_str());
        assert_eq!(
            deploy,
            Some("yes"),
            "the rule's variables win over the file's"
        );
        let long = format!(
            "workflow: {{ name: '{}' }}\njob: {{ script: x }}\n",
            "n".repeat(256)
        );
        assert_eq!(
            plan(&long, &ctx()).unwrap_err().0,
            "workflow:name is too long (maximum is 255 characters)"
        );
    }

    #[test]
    fn the_first_rule_that_holds_decides() {
        let vars: HashMap<String, String> = [("A".to_string(), "1".to_string())].into();
        let commit = Commit::new(&NoFiles);
        let first = |text: &str| evaluate_rules(&yaml(text), &vars, "jobs:j", &commit);
        // `!reference`d rules arrive as lists inside the list.
        let rule = first("[[{if: $B, when: never}], [[{if: $A == '1', when: manual, allow_failure: true, variables: {V: v}}]], {when: always}]")
            .unwrap()
            .unwrap();
        assert_eq!(rule.when.as_deref(), Some("manual"));
        assert_eq!(rule.allow_failure, Some(true));
        assert_eq!(rule.variables[0].key, "V");
        assert!(first("[{if: $B}]").unwrap().is_none());
        assert!(
            first("[{exists: [Cargo.toml]}]").unwrap().is_none(),
            "no files"
        );
        assert_eq!(first("[{}]").unwrap().unwrap().when, None);
        let refused = |text: &str| first(text).err().unwrap().0;
        assert_eq!(
            refused("{if: $A}"),
            "jobs:j:rules config should be an array of hashes"
        );
        assert_eq!(
            refused("[{when: later}]"),
            "jobs:j:rules:when unknown value: later"
        );
        assert_eq!(
            refused("[{nope: 1}]"),
            "jobs:j:rules:rule config contains unknown keys: nope"
        );
        assert_eq!(
            refused("[{when: always, allow_failure: 'yes'}]"),
            "jobs:j:rules:allow_failure should be a boolean value"
        );
        assert_eq!(refused("[{if: [x]}]"), "jobs:j:rules:if should be a string");
        // Rules after the one that holds are not read.
        assert!(first("[{when: always}, {nope: 1}]").is_ok());
    }

    #[test]
    fn workflow_lets_the_pipeline_be_or_not() {
        let commit = Commit::new(&NoFiles);
        let flow = |text: &str| {
            let root: Mapping = serde_yaml_ng::from_str(text).expect("YAML");
            workflow(&root, &ctx().with(&[]), &commit)
        };
        assert!(flow("{}").unwrap().name.is_none());
        assert!(flow("workflow: {rules: [{if: $CI_COMMIT_BRANCH}]}").is_ok());
        let refused = |text: &str| flow(text).err().unwrap().0;
        assert_eq!(
            refused("workflow: {rules: [{if: $CI_COMMIT_BRANCH, when: never}]}"),
            "Pipeline filtered out by workflow rules."
        );
        assert_eq!(
            refused("workflow: {rules: [{if: $CI_COMMIT_TAG}]}"),
            "Pipeline filtered out by workflow rules."
        );
        assert_eq!(
            flow("workflow: {auto_cancel: {on_job_failure: all}}")
                .unwrap()
                .auto_cancel
                .on_job_failure,
            "all"
        );
        assert_eq!(
            refused("workflow: {later: {}}"),
            "workflow config contains unknown keys: later"
        );
        assert_eq!(refused("workflow: [x]"), "workflow config should be a hash");
        assert_eq!(
            refused("workflow: {name: [x]}"),
            "workflow:name config should be a string"
        );
    }

    #[test]
    fn a_job_is_in_by_its_rules_or_only_and_except() {
        let commit = Commit::new(&NoFiles);
        let vars = [Variable {
            key: "DEPLOY".into(),
            value: "yes".into(),
        }];
        let decide = |text: &str, workflow_rules: bool| {
            let keys: Mapping = serde_yaml_ng::from_str(text).expect("YAML");
            job("j", &keys, &vars, &ctx(), workflow_rules, &commit)
        };
        let rule = decide(
            "{rules: [{if: $DEPLOY == 'yes', when: manual, variables: {R: r}}]}",
            false,
        )
        .unwrap()
        .expect("in");
        assert_eq!(rule.when, Some(When::Manual));
        assert_eq!(rule.variables[0].key, "R");
        assert!(decide("{rules: [{when: never}]}", false).unwrap().is_none());
        assert!(decide("{rules: [{if: $NOPE}]}", false).unwrap().is_none());
        let plain = decide("{script: x}", false).unwrap().expect("in");
        assert_eq!((plain.when, plain.allow_failure), (None, None));
        assert!(decide("{only: [main]}", false).unwrap().is_some());
        assert!(decide("{only: [tags]}", false).unwrap().is_none());
        assert!(decide("{except: [main]}", false).unwrap().is_none());
        assert!(decide("{only: {variables: [$DEPLOY == 'yes']}}", false)
            .unwrap()
            .is_some());
        assert_eq!(
            decide("{only: main}", true).err().unwrap().0,
            "jobs:j:only has to be either an array of conditions or a hash"
        );
        assert_eq!(
            decide("{except: [x], rules: [{when: always}], only: [y]}", false)
                .err()
                .unwrap()
                .0,
            "jobs:j config key may not be used with `rules`: except, only"
        );
    }
}
