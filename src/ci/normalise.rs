//! Normalise step: the loaded file's top-level keys sorted into keywords, jobs and hidden
//! templates (`Entry::Root`, `Entry::Jobs` ‹lib/gitlab/ci/config/entry/root.rb, jobs.rb›),
//! the top-level `stages` and `variables` read, and each job made whole: what it
//! `extends` merged in ‹lib/gitlab/ci/config/extendable/entry.rb›, then what it
//! `inherit`s of `default` and of the global variables ‹entry/default.rb,
//! entry/inherit/default.rb, entry/inherit/variables.rb›, its keys checked against the
//! job's keywords ‹entry/job.rb›.
//!
//! The top-level keys are read in [`normalise`]; `default` and the jobs are read by the
//! plan step, through [`Config::defaults`] and [`Config::job`], once `workflow` has let
//! the pipeline be — so a file's first error is the one it always was.

use std::collections::BTreeMap;

use serde_yaml_ng::{Mapping, Value};

use super::config::{ConfigError, Variable};
use super::include::deep_merge;
use super::keywords::{err, key_str, string_list, variables_of, Result};

/// Keywords GitLab knows that Runway does not implement yet (refused, listed by name).
const UNSUPPORTED_JOB_KEYS: &[&str] =
    &["secrets", "dast_configuration", "identity", "run", "inputs"];

const JOB_KEYS: &[&str] = &[
    "stage",
    "script",
    "before_script",
    "after_script",
    "image",
    "services",
    "variables",
    "tags",
    "when",
    "allow_failure",
    "needs",
    "dependencies",
    "artifacts",
    "cache",
    "timeout",
    "retry",
    "extends",
    "parallel",
    "rules",
    "interruptible",
    "only",
    "except",
    "environment",
    "coverage",
    "inherit",
    "pages",
    "publish",
    "hooks",
    "start_in",
    "manual_confirmation",
    "resource_group",
    "id_tokens",
    "release",
    "trigger",
];

const DEFAULT_KEYS: &[&str] = &[
    "image",
    "services",
    "before_script",
    "after_script",
    "tags",
    "cache",
    "artifacts",
    "timeout",
    "retry",
    "interruptible",
    "hooks",
    "id_tokens",
];

/// `Entry::Root`'s keywords (GitLab 15.0 removed `types`: it is now a job's name, and a
/// list is no job).
const RESERVED_TOP_KEYS: &[&str] = &[
    "stages",
    "variables",
    "default",
    "workflow",
    "image",
    "services",
    "before_script",
    "after_script",
    "cache",
];

const UNSUPPORTED_TOP_KEYS: &[&str] = &["spec"];

const DEFAULT_STAGES: &[&str] = &["build", "test", "deploy"];

/// A file whose top-level keys are sorted.
pub(crate) struct Config<'a> {
    /// The whole file, its keywords read from here.
    pub(crate) root: &'a Mapping,
    /// Jobs and hidden templates, by name: what `extends` can name.
    templates: BTreeMap<String, Mapping>,
    /// The visible jobs, in the file's order.
    jobs: Vec<String>,
    /// `stages`, with `.pre` first and `.post` last.
    pub(crate) stages: Vec<String>,
    /// The file's global `variables`.
    pub(crate) variables: Vec<Variable>,
}

/// A job made whole.
pub(crate) struct Job {
    /// Its keys, after `extends` and `default`.
    pub(crate) keys: Mapping,
    /// The global variables it inherits.
    pub(crate) globals: Vec<Variable>,
}

/// Sorts the top-level keys and reads `stages` and `variables`.
pub(crate) fn normalise(root: &Mapping) -> Result<Config<'_>> {
    let mut unsupported: Vec<String> = Vec::new();
    let mut templates: BTreeMap<String, Mapping> = BTreeMap::new();
    let mut jobs: Vec<String> = Vec::new();
    for (key, value) in root {
        let key = key_str(key)?;
        if RESERVED_TOP_KEYS.contains(&key.as_str()) {
            continue;
        }
        if UNSUPPORTED_TOP_KEYS.contains(&key.as_str()) {
            unsupported.push(key);
            continue;
        }
        let Value::Mapping(map) = value else {
            // GitLab ignores hidden keys that are not jobs: anchors' targets of any type
            // (`.versions: &versions [1, 2]`, `.note: text`).
            if key.starts_with('.') {
                continue;
            }
            // `Entry::Jobs`: a key that is no keyword is a job, and a job is a hash.
            return err(format!(
                "jobs:{key} config should implement the script:, run:, or trigger: keyword"
            ));
        };
        if !key.starts_with('.') {
            jobs.push(key.clone());
        }
        templates.insert(key, map.clone());
    }
    if !unsupported.is_empty() {
        return err(format!(
            "Runway does not support these keywords yet: {}",
            unsupported.join(", ")
        ));
    }
    Ok(Config {
        root,
        templates,
        jobs,
        stages: stages(root)?,
        variables: variables_of(root.get("variables"), "variables")?,
    })
}

impl Config<'_> {
    /// What `default:` (and the old top-level keywords that mean the same) gives every job.
    pub(crate) fn defaults(&self) -> Result<Mapping> {
        let mut defaults = Mapping::new();
        for key in DEFAULT_KEYS {
            if let Some(v) = self.root.get(*key) {
                defaults.insert(Value::from(*key), v.clone());
            }
        }
        if let Some(default) = self.root.get("default") {
            let Value::Mapping(default) = default else {
                return err("default config should be a hash");
            };
            for (k, v) in default {
                let k = key_str(k)?;
                if !DEFAULT_KEYS.contains(&k.as_str()) {
                    return err(format!("default config contains unknown keys: {k}"));
                }
                defaults.insert(Value::from(k), v.clone());
            }
        }
        Ok(defaults)
    }

    /// The visible jobs' names, in the file's order: at least one.
    pub(crate) fn visible_jobs(&self) -> Result<&[String]> {
        if self.jobs.is_empty() {
            return err("jobs config should contain at least one visible job");
        }
        Ok(&self.jobs)
    }

    /// The job `name` made whole, with the `defaults` and `globals` it inherits. `Err`
    /// stops the whole file; `Ok(Err(problem))` refuses this job (the others are still read).
    pub(crate) fn job(
        &self,
        name: &str,
        defaults: &Mapping,
        globals: &[Variable],
    ) -> Result<std::result::Result<Job, String>> {
        let mut job = resolve_extends(name, &self.templates, &mut Vec::new())?;
        let (inherit_default, inherit_variables) = inherit(name, job.get("inherit"))?;
        // A bridge (`trigger`) takes of `default` only what `Entry::Bridge` knows.
        let bridge = job.contains_key("trigger");
        for (k, v) in defaults {
            let wanted = inherit_default
                .as_ref()
                .is_none_or(|keys| k.as_str().is_some_and(|k| keys.iter().any(|w| w == k)))
                && (!bridge || k.as_str() == Some("interruptible"));
            if wanted && !job.contains_key(k) {
                job.insert(k.clone(), v.clone());
            }
        }
        let job_globals: Vec<Variable> = match &inherit_variables {
            None => globals.to_vec(),
            Some(names) => globals
                .iter()
                .filter(|v| names.contains(&v.key))
                .cloned()
                .collect(),
        };
        let keys: Vec<String> = job.keys().map(key_str).collect::<Result<_>>()?;
        let unknown: Vec<&String> = keys
            .iter()
            .filter(|k| {
                !JOB_KEYS.contains(&k.as_str()) && !UNSUPPORTED_JOB_KEYS.contains(&k.as_str())
            })
            .collect();
        if !unknown.is_empty() {
            return Ok(Err(format!(
                "jobs:{name} config contains unknown keys: {}",
                unknown
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        // `secrets` reads Vault, GCP, Azure or AWS (GitLab Premium): not a Runway feature
        // to come, so it is refused with what to use instead.
        if keys.iter().any(|k| k == "secrets") {
            return Ok(Err(format!(
                "jobs:{name} secrets is not supported: Runway reads no external secret provider; give the job CI/CD variables (masked, protected) instead"
            )));
        }
        let not_yet: Vec<&String> = keys
            .iter()
            .filter(|k| UNSUPPORTED_JOB_KEYS.contains(&k.as_str()))
            .collect();
        if !not_yet.is_empty() {
            return Ok(Err(format!(
                "jobs:{name} uses keywords Runway does not support yet: {}",
                not_yet
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(Ok(Job {
            keys: job,
            globals: job_globals,
        }))
    }
}

/// `stages` ‹entry/stages.rb›: `build`, `test`, `deploy` unless written; `.pre` always
/// first and `.post` always last.
fn stages(root: &Mapping) -> Result<Vec<String>> {
    let declared = root.get("stages");
    let mut stages: Vec<String> = match declared {
        None => DEFAULT_STAGES.iter().map(|s| s.to_string()).collect(),
        Some(value) => string_list(value)
            .ok_or_else(|| ConfigError("stages config should be an array of strings".into()))?,
    };
    stages.retain(|s| s != ".pre" && s != ".post");
    stages.insert(0, ".pre".into());
    stages.push(".post".into());
    Ok(stages)
}

/// Deep-merges the job with what it `extends` (parents first; hashes merge, the rest is
/// replaced), as GitLab does, up to 10 levels.
fn resolve_extends(
    name: &str,
    all: &BTreeMap<String, Mapping>,
    chain: &mut Vec<String>,
) -> Result<Mapping> {
    if chain.iter().any(|c| c == name) {
        return err(format!("{name}: circular dependency detected in `extends`"));
    }
    if chain.len() >= 10 {
        return err(format!("{name}: nesting too deep in `extends`"));
    }
    let job = all.get(name).ok_or_else(|| {
        ConfigError(format!(
            "{}: unknown keys in `extends` ({name})",
            chain.last().map_or(name, |s| s)
        ))
    })?;
    let Some(extends) = job.get("extends") else {
        return Ok(job.clone());
    };
    let parents = string_list(extends).ok_or_else(|| {
        ConfigError(format!(
            "jobs:{name}:extends should be a string or an array of strings"
        ))
    })?;
    chain.push(name.to_string());
    let mut merged = Mapping::new();
    for parent in parents {
        let resolved = resolve_extends(&parent, all, chain)?;
        deep_merge(&mut merged, &resolved);
    }
    chain.pop();
    let mut own = job.clone();
    own.remove("extends");
    deep_merge(&mut merged, &own);
    Ok(merged)
}

/// `inherit` ‹entry/inherit/default.rb, variables.rb›: which `default:` keys and which
/// global variables the job takes — `None` for all (`true`, or not written), else the
/// names listed (`false`: none).
type Inherited = (Option<Vec<String>>, Option<Vec<String>>);

fn inherit(name: &str, value: Option<&Value>) -> Result<Inherited> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok((None, None));
    };
    let Value::Mapping(map) = value else {
        return err(format!("jobs:{name}:inherit config should be a hash"));
    };
    let mut out: Inherited = (None, None);
    for (key, value) in map {
        let key = key_str(key)?;
        let slot = match key.as_str() {
            "default" => &mut out.0,
            "variables" => &mut out.1,
            other => {
                return err(format!(
                    "jobs:{name}:inherit config contains unknown keys: {other}"
                ))
            }
        };
        *slot = match value {
            Value::Bool(true) | Value::Null => None,
            Value::Bool(false) => Some(Vec::new()),
            other => Some(string_list(other).ok_or_else(|| {
                ConfigError(format!(
                    "jobs:{name}:inherit:{key} config should be a boolean value or an array of strings"
                ))
            })?),
        };
    }
    if let Some(keys) = &out.0 {
        if let Some(unknown) = keys.iter().find(|k| !DEFAULT_KEYS.contains(&k.as_str())) {
            return err(format!(
                "jobs:{name}:inherit:default config contains unknown values: {unknown}"
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(text: &str) -> Mapping {
        serde_yaml_ng::from_str(text).expect("YAML")
    }

    #[test]
    fn top_level_keys_are_sorted() {
        let file = root(
            "stages: [a]\nvariables: {V: v}\n.hidden: {script: h}\n.list: [1]\nb: {script: b}\n\
             a: {extends: .hidden}\n",
        );
        let config = normalise(&file).unwrap();
        assert_eq!(config.visible_jobs().unwrap(), ["b", "a"]);
        assert_eq!(config.stages, [".pre", "a", ".post"]);
        assert_eq!(config.variables[0].key, "V");
        assert_eq!(
            config.templates.keys().collect::<Vec<_>>(),
            [".hidden", "a", "b"],
            "jobs and hidden hashes"
        );
        assert_eq!(
            normalise(&root("stages: [build, .post, .pre]\nj: {script: x}"))
                .unwrap()
                .stages,
            [".pre", "build", ".post"]
        );
        let refused = |text: &str| normalise(&root(text)).err().unwrap().0;
        assert_eq!(
            refused("spec: {}\nj: {script: x}"),
            "Runway does not support these keywords yet: spec"
        );
        assert_eq!(
            refused("j: [script]"),
            "jobs:j config should implement the script:, run:, or trigger: keyword"
        );
        assert_eq!(
            normalise(&root(".h: {script: x}"))
                .unwrap()
                .visible_jobs()
                .unwrap_err()
                .0,
            "jobs config should contain at least one visible job"
        );
    }

    #[test]
    fn extends_merges_hashes_parents_first() {
        let file = root(
            ".a: {variables: {A: a, B: a}, tags: [a]}\n.b: {extends: .a, variables: {B: b}}\n\
             j: {extends: [.b], script: x, tags: [j]}\n",
        );
        let config = normalise(&file).unwrap();
        let job = resolve_extends("j", &config.templates, &mut Vec::new()).unwrap();
        assert_eq!(job, root("variables: {A: a, B: b}\ntags: [j]\nscript: x"));
        let cycle = root(".a: {extends: .b}\n.b: {extends: .a}\nj: {extends: .a}");
        let config = normalise(&cycle).unwrap();
        assert_eq!(
            resolve_extends("j", &config.templates, &mut Vec::new())
                .unwrap_err()
                .0,
            ".a: circular dependency detected in `extends`"
        );
        let unknown = root("j: {extends: .nope}");
        let config = normalise(&unknown).unwrap();
        assert_eq!(
            resolve_extends("j", &config.templates, &mut Vec::new())
                .unwrap_err()
                .0,
            "j: unknown keys in `extends` (.nope)"
        );
    }

    #[test]
    fn jobs_take_what_they_inherit() {
        let file = root(
            "image: old\ndefault: {tags: [t], image: new}\n\
             all: {script: x}\nsome: {script: x, inherit: {default: [tags], variables: [B]}}\n\
             odd: {script: x, bogus: 1, identity: x}\nlater: {script: x, identity: x}\n",
        );
        let config = normalise(&file).unwrap();
        let defaults = config.defaults().unwrap();
        assert_eq!(defaults, root("image: new\ntags: [t]"));
        let globals = [
            Variable {
                key: "A".into(),
                value: "a".into(),
            },
            Variable {
                key: "B".into(),
                value: "b".into(),
            },
        ];
        let job = |name: &str| config.job(name, &defaults, &globals).unwrap();
        let all = job("all").unwrap();
        assert_eq!(all.keys, root("script: x\nimage: new\ntags: [t]"));
        assert_eq!(all.globals, globals);
        let some = job("some").unwrap();
        assert_eq!(
            some.keys,
            root("script: x\ninherit: {default: [tags], variables: [B]}\ntags: [t]")
        );
        assert_eq!(some.globals, globals[1..]);
        assert_eq!(
            job("odd").err(),
            Some("jobs:odd config contains unknown keys: bogus".to_string())
        );
        assert_eq!(
            job("later").err(),
            Some("jobs:later uses keywords Runway does not support yet: identity".to_string())
        );
        assert_eq!(
            inherit(
                "j",
                Some(&serde_yaml_ng::from_str("{default: false, variables: true}").unwrap())
            )
            .unwrap(),
            (Some(vec![]), None)
        );
        assert_eq!(
            normalise(&root("default: {nope: 1}\nj: {script: x}"))
                .unwrap()
                .defaults()
                .unwrap_err()
                .0,
            "default config contains unknown keys: nope"
        );
    }
}
