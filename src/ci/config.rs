//! `.gitlab-ci.yml` → a pipeline plan: the jobs to create, in GitLab's semantics, or an
//! error that names the problem. Nothing here touches the database.
//!
//! Supported keywords: `stages`, `variables` (global and job), `default`, `workflow:rules`,
//! `image`, `services`, `before_script`/`script`/`after_script`, `stage`, `tags`, `when`,
//! `allow_failure` (with `exit_codes`), `needs`, `dependencies`, `artifacts`, `cache`,
//! `timeout`, `retry`, `interruptible`, `extends`, hidden `.jobs`, `parallel` (count and
//! matrix), `rules` with `if`/`when`/`allow_failure`/`variables`, `only`/`except`
//! (see [`super::policy`]), YAML anchors and `<<`.
//! Any other keyword is refused with a list of what was not understood — never dropped.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_yaml_ng::{Mapping, Value};

use super::duration::parse_seconds;
use super::evaluate;
use super::keywords::{
    artifacts_spec, cache_spec, err, image_spec, int_list, key_str, need, pages_folder, retry_spec,
    scalar, script, string_list, upsert_var, variables_of, Result, REPORT_TYPES,
};
use super::load::expand;
use super::normalise::normalise;
use super::policy;

/// The fixed format of a report artifact type, if it is one.
pub fn report_format(file_type: &str) -> Option<&'static str> {
    REPORT_TYPES
        .iter()
        .find(|(t, _, _)| *t == file_type)
        .map(|(_, format, _)| *format)
}

/// A job's `when`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    OnSuccess,
    OnFailure,
    Always,
    Manual,
}

impl When {
    pub fn as_str(self) -> &'static str {
        match self {
            When::OnSuccess => "on_success",
            When::OnFailure => "on_failure",
            When::Always => "always",
            When::Manual => "manual",
        }
    }

    pub fn parse(text: &str) -> Option<When> {
        match text {
            "on_success" => Some(When::OnSuccess),
            "on_failure" => Some(When::OnFailure),
            "always" => Some(When::Always),
            "manual" => Some(When::Manual),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variable {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variables: Vec<Variable>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub artifact_type: String,
    pub artifact_format: String,
    pub name: String,
    pub paths: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactsSpec {
    pub name: Option<String>,
    pub paths: Vec<String>,
    pub exclude: Vec<String>,
    pub untracked: bool,
    pub when: String,
    pub expire_in: Option<String>,
    pub reports: Vec<Report>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheSpec {
    pub key: String,
    pub paths: Vec<String>,
    pub untracked: bool,
    pub policy: String,
    pub when: String,
    pub fallback_keys: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Need {
    pub job: String,
    pub artifacts: bool,
    /// `optional: true`: dropped when the job is not in the pipeline (planning only).
    #[serde(skip)]
    pub optional: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetrySpec {
    pub max: i64,
    /// Failure reasons that allow a retry; `always` (or empty) for any.
    pub when: Vec<String>,
    pub exit_codes: Vec<i64>,
}

/// What a job runs: stored with the job (`jobs.options`) and turned into the payload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub before_script: Vec<String>,
    pub script: Vec<String>,
    pub after_script: Vec<String>,
    pub image: Option<ImageSpec>,
    pub services: Vec<ImageSpec>,
    /// Global then job variables (a job's own win), then parallel and rule variables.
    pub variables: Vec<Variable>,
    pub artifacts: Option<ArtifactsSpec>,
    pub cache: Vec<CacheSpec>,
    /// `None`: wait for all earlier stages; `Some`: the DAG edges (possibly none).
    pub needs: Option<Vec<Need>>,
    /// `None`: artifacts of all earlier stages (or of `needs`); `Some`: those named.
    pub dependencies: Option<Vec<String>>,
    pub retry: RetrySpec,
    pub allow_failure_exit_codes: Vec<i64>,
    pub timeout: Option<i64>,
    pub interruptible: bool,
    /// `environment`, its name and URL expanded at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<super::environment::EnvironmentSpec>,
    /// `coverage`: `/regex/` applied to the log when the job ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage: Option<String>,
    /// A pages job: the folder of its artifacts that is the site (`public` unless
    /// `publish` says otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pages: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobPlan {
    pub name: String,
    pub stage: String,
    pub stage_idx: i32,
    pub when: When,
    pub allow_failure: bool,
    pub tags: Vec<String>,
    pub spec: JobSpec,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelinePlan {
    pub stages: Vec<String>,
    pub jobs: Vec<JobPlan>,
    /// `workflow:name`, its variables expanded.
    pub name: Option<String>,
}

/// A configuration error, worded like GitLab's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The variables `rules:if` sees besides the file's own, by precedence: `predefined`
/// (`CI_*`) below the file's variables, `user` (given when creating the pipeline) above.
#[derive(Debug, Clone, Default)]
pub struct RuleScope {
    pub predefined: HashMap<String, String>,
    pub user: HashMap<String, String>,
}

impl RuleScope {
    /// Predefined, then `file` (in order), then user variables: later ones win.
    pub(crate) fn with(&self, file: &[Variable]) -> HashMap<String, String> {
        let mut vars = self.predefined.clone();
        for v in file {
            vars.insert(v.key.clone(), v.value.clone());
        }
        vars.extend(self.user.iter().map(|(k, v)| (k.clone(), v.clone())));
        vars
    }
}

/// GitLab's words for a pipeline over `ci_pipeline_size` (`Gitlab::Ci::Pipeline::Quota::Size`).
pub fn too_many_jobs(limit: usize) -> String {
    format!(
        "The number of jobs has exceeded the limit of {limit}. \
         Try splitting the configuration with parent-child-pipelines"
    )
}

/// Plans a pipeline from `.gitlab-ci.yml` text, evaluating rules in `scope`.
pub fn plan(yaml: &str, scope: &RuleScope) -> Result<PipelinePlan> {
    plan_within(yaml, scope, None)
}

/// [`plan`], refusing as soon as more than `max_jobs` jobs (after rules, with `parallel`
/// expanded) would be in the pipeline — before the plan of a huge pipeline is made whole,
/// as GitLab checks `ci_pipeline_size` on the seeded pipeline before creating anything.
pub fn plan_within(yaml: &str, scope: &RuleScope, max_jobs: Option<usize>) -> Result<PipelinePlan> {
    plan_with(yaml, scope, max_jobs, &super::include::NoFiles)
}

/// [`plan_within`], reading the files `include` names from `files` (the pipeline's commit).
pub fn plan_with(
    yaml: &str,
    scope: &RuleScope,
    max_jobs: Option<usize>,
    files: &dyn super::include::FileSource,
) -> Result<PipelinePlan> {
    let root = expand(yaml, scope, files)?;
    let config = normalise(&root)?;

    let commit = super::include::Commit::new(files);
    let pipeline = evaluate::pipeline(&config, scope, &commit)?;

    let defaults = config.defaults()?;
    let stages = &config.stages;

    // Resolve extends and defaults, then plan each job (rules may drop it).
    let mut planned: Vec<JobPlan> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    for name in config.visible_jobs()? {
        let job = match config.job(name, &defaults, &pipeline.variables)? {
            Ok(job) => job,
            Err(problem) => {
                problems.push(problem);
                continue;
            }
        };
        match plan_job(
            name,
            &job.keys,
            stages,
            &job.globals,
            scope,
            pipeline.workflow_rules,
            &commit,
        ) {
            Ok(Some(jobs)) => planned.extend(jobs),
            Ok(None) => {}
            Err(e) => problems.push(e.0),
        }
        if let Some(limit) = max_jobs.filter(|limit| planned.len() > *limit) {
            return err(too_many_jobs(limit));
        }
    }
    if !problems.is_empty() {
        return err(problems.join("; "));
    }
    if planned.is_empty() {
        return err("Pipeline will not run for the selected trigger. The rules configuration prevented any jobs from being added to the pipeline.");
    }
    resolve_needs(&mut planned)?;
    check_dependencies(&planned)?;
    Ok(PipelinePlan {
        stages: config.stages,
        jobs: planned,
        name: pipeline.name,
    })
}

fn plan_job(
    name: &str,
    job: &Mapping,
    stages: &[String],
    global_vars: &[Variable],
    rule_scope: &RuleScope,
    workflow_rules: bool,
    commit: &super::include::Commit<'_>,
) -> Result<Option<Vec<JobPlan>>> {
    if name.chars().count() > 255 {
        return err(format!(
            "jobs:{name} name is too long (maximum is 255 characters)"
        ));
    }
    let field = |key: &str| job.get(key).filter(|v| !v.is_null());
    let at = |key: &str| format!("jobs:{name}:{key}");

    let script_of = |key: &str| -> Result<Vec<String>> {
        match field(key) {
            None => Ok(Vec::new()),
            Some(v) => script(v, 0).ok_or_else(|| {
                ConfigError(format!("{} config should be a string or a nested array of strings up to 10 levels deep", at(key)))
            }),
        }
    };
    let script_lines = script_of("script")?;
    if script_lines.is_empty() {
        return err(format!(
            "jobs:{name} config should implement the script:, run:, or trigger: keyword"
        ));
    }
    let stage = match field("stage") {
        None => "test".to_string(),
        Some(v) => scalar(v)
            .ok_or_else(|| ConfigError(format!("{} config should be a string", at("stage"))))?,
    };
    let Some(stage_idx) = stages.iter().position(|s| *s == stage) else {
        return err(format!(
            "jobs:{name} chosen stage {stage} does not exist; available stages are {}",
            stages.join(", ")
        ));
    };

    let mut when = match field("when") {
        None => When::OnSuccess,
        Some(v) => {
            let text = scalar(v).unwrap_or_default();
            match When::parse(&text) {
                Some(w) => w,
                None if text == "delayed" => {
                    return err(format!(
                        "jobs:{name} uses keywords Runway does not support yet: when: delayed"
                    ))
                }
                None => {
                    return err(format!(
                        "{} config should be one of on_success, on_failure, always, manual, never",
                        at("when")
                    ))
                }
            }
        }
    };
    let (mut allow_failure, exit_codes) = match field("allow_failure") {
        None => (when == When::Manual, Vec::new()),
        Some(Value::Bool(b)) => (*b, Vec::new()),
        Some(Value::Mapping(m)) => {
            let codes = m.get("exit_codes").and_then(int_list).ok_or_else(|| {
                ConfigError(format!(
                    "{} config should be a boolean or a hash with exit_codes",
                    at("allow_failure")
                ))
            })?;
            (false, codes)
        }
        Some(_) => {
            return err(format!(
                "{} config should be a boolean or a hash with exit_codes",
                at("allow_failure")
            ))
        }
    };

    let mut variables: Vec<Variable> = global_vars.to_vec();
    for v in variables_of(field("variables"), &at("variables"))? {
        upsert_var(&mut variables, v);
    }

    let Some(rule) = evaluate::job(name, job, &variables, rule_scope, workflow_rules, commit)?
    else {
        return Ok(None);
    };
    // The job's own `allow_failure` (or its own `when: manual`) stays unless the rule sets
    // one: `Rules::Result#build_attributes` leaves it out when the rule has none, and
    // `Entry::Job#ignored?` decides from the job's keys.
    if let Some(w) = rule.when {
        when = w;
    }
    if let Some(af) = rule.allow_failure {
        allow_failure = af;
    }
    for v in rule.variables {
        upsert_var(&mut variables, v);
    }

    // `Entry::Coverage`: a regular expression written `/…/` that compiles.
    let coverage = match field("coverage") {
        None => None,
        Some(v) => Some(
            v.as_str()
                .filter(|text| {
                    policy::as_regex(text)
                        .and_then(|(body, flags)| policy::compile(body, flags))
                        .is_some()
                })
                .map(str::to_string)
                .ok_or_else(|| {
                    ConfigError(format!(
                        "{} config must be a regular expression with re2 syntax",
                        at("coverage")
                    ))
                })?,
        ),
    };
    let pages = pages_folder(name, field("pages"), field("publish"), &at)?;
    let tags = match field("tags") {
        None => Vec::new(),
        Some(v) => string_list(v).ok_or_else(|| {
            ConfigError(format!(
                "{} config should be an array of strings",
                at("tags")
            ))
        })?,
    };
    let image = field("image")
        .map(|v| image_spec(v, &at("image")))
        .transpose()?;
    let services = match field("services") {
        None => Vec::new(),
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|v| image_spec(v, &at("services")))
            .collect::<Result<_>>()?,
        Some(_) => {
            return err(format!(
                "{} config should be an array of strings or hashes",
                at("services")
            ))
        }
    };
    let artifacts = field("artifacts")
        .map(|v| artifacts_spec(v, &at("artifacts")))
        .transpose()?;
    let cache = match field("cache") {
        None => Vec::new(),
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|v| cache_spec(v, &at("cache")))
            .collect::<Result<_>>()?,
        Some(v) => vec![cache_spec(v, &at("cache"))?],
    };
    let needs = match field("needs") {
        None => None,
        Some(Value::Sequence(items)) => Some(
            items
                .iter()
                .map(|v| need(v, &at("needs")))
                .collect::<Result<Vec<_>>>()?,
        ),
        Some(_) => return err(format!("{} config should be an array", at("needs"))),
    };
    let dependencies = match field("dependencies") {
        None => None,
        Some(v) => Some(string_list(v).ok_or_else(|| {
            ConfigError(format!(
                "{} config should be an array of strings",
                at("dependencies")
            ))
        })?),
    };
    let timeout = match field("timeout") {
        None => None,
        Some(v) => Some(
            scalar(v)
                .and_then(|t| parse_seconds(&t))
                .filter(|t| *t > 0)
                .ok_or_else(|| {
                    ConfigError(format!("{} config should be a duration", at("timeout")))
                })?,
        ),
    };
    let retry = match field("retry") {
        None => RetrySpec::default(),
        Some(v) => retry_spec(v, &at("retry"))?,
    };
    let interruptible = match field("interruptible") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return err(format!(
                "{} config should be a boolean value",
                at("interruptible")
            ))
        }
    };

    let spec = JobSpec {
        before_script: script_of("before_script")?,
        script: script_lines,
        after_script: script_of("after_script")?,
        image,
        services,
        variables,
        artifacts,
        cache,
        needs,
        dependencies,
        retry,
        allow_failure_exit_codes: exit_codes,
        timeout,
        interruptible,
        environment: None,
        coverage,
        pages,
    };
    let base = JobPlan {
        name: name.to_string(),
        stage,
        stage_idx: stage_idx as i32,
        when,
        allow_failure,
        tags,
        spec,
    };
    let mut jobs = match field("parallel") {
        None => vec![base],
        Some(v) => parallel(base, v, &at("parallel"))?,
    };
    // Expanded per job, with what each sees when the pipeline is created (a matrix
    // job's own variables, its own name), the variables' own references expanded
    // (`sort_and_expand_all`): the environment, and the tags
    // (`Seed::Build#evaluate_runner_tags`, unknown references kept as written).
    let environment = field("environment");
    let expands = |tag: &String| tag.contains(['$', '%']);
    if environment.is_some() || jobs.iter().any(|job| job.tags.iter().any(expands)) {
        for job in &mut jobs {
            let mut vars = rule_scope.with(&job.spec.variables);
            vars.insert("CI_JOB_NAME".into(), job.name.clone());
            vars.insert("CI_JOB_STAGE".into(), job.stage.clone());
            let vars = super::environment::expand_all(&vars);
            if let Some(value) = environment {
                job.spec.environment = super::environment::parse(value, &at("environment"), &vars)
                    .map_err(ConfigError)?;
            }
            for tag in &mut job.tags {
                *tag = super::environment::expand_existing(tag, &vars);
            }
        }
    }
    Ok(Some(jobs))
}

/// `parallel: N` → `name 1/N` … `name N/N`; `parallel: matrix:` → `name: [a, b]` per
/// combination, with the combination's variables.
fn parallel(base: JobPlan, value: &Value, at: &str) -> Result<Vec<JobPlan>> {
    let with = |suffix: String, vars: Vec<Variable>| {
        let mut job = base.clone();
        job.name = format!("{}{suffix}", base.name);
        for v in vars {
            upsert_var(&mut job.spec.variables, v);
        }
        job
    };
    let var = |key: &str, value: String| Variable {
        key: key.to_string(),
        value,
    };
    match value {
        Value::Number(n) => {
            let total = n
                .as_i64()
                .filter(|n| (1..=200).contains(n))
                .ok_or_else(|| {
                    ConfigError(format!(
                        "{at} config should be an integer between 1 and 200"
                    ))
                })?;
            Ok((1..=total)
                .map(|i| {
                    with(
                        format!(" {i}/{total}"),
                        vec![
                            var("CI_NODE_INDEX", i.to_string()),
                            var("CI_NODE_TOTAL", total.to_string()),
                        ],
                    )
                })
                .collect())
        }
        Value::Mapping(m) => {
            let Some(Value::Sequence(entries)) = m.get("matrix") else {
                return err(format!(
                    "{at} config should be an integer or a hash with matrix"
                ));
            };
            let mut combos: Vec<Vec<Variable>> = Vec::new();
            for entry in entries {
                let Value::Mapping(entry) = entry else {
                    return err(format!("{at}:matrix config should be an array of hashes"));
                };
                let mut partial: Vec<Vec<Variable>> = vec![Vec::new()];
                for (k, v) in entry {
                    let key = key_str(k)?;
                    let values = string_list(v).ok_or_else(|| {
                        ConfigError(format!(
                            "{at}:matrix config should be an array of hashes of strings"
                        ))
                    })?;
                    let mut grown = Vec::with_capacity(partial.len() * values.len());
                    for combo in &partial {
                        for value in &values {
                            let mut c = combo.clone();
                            c.push(Variable {
                                key: key.clone(),
                                value: value.clone(),
                            });
                            grown.push(c);
                        }
                    }
                    partial = grown;
                }
                combos.extend(partial);
            }
            if combos.is_empty() || combos.len() > 200 {
                return err(format!(
                    "{at}:matrix config generates {} jobs (maximum allowed is 200)",
                    combos.len()
                ));
            }
            let total = combos.len();
            Ok(combos
                .into_iter()
                .enumerate()
                .map(|(i, combo)| {
                    let label = combo
                        .iter()
                        .map(|v| v.value.as_str())
                        .collect::<Vec<_>>()
                        .join(", ");
                    let mut vars = combo;
                    vars.push(var("CI_NODE_INDEX", (i + 1).to_string()));
                    vars.push(var("CI_NODE_TOTAL", total.to_string()));
                    with(format!(": [{label}]"), vars)
                })
                .collect())
        }
        _ => err(format!("{at} config should be an integer or a hash")),
    }
}

/// Expands needs on parallel jobs to every instance, drops optional needs on absent jobs,
/// refuses needs on absent jobs, and refuses cycles.
fn resolve_needs(jobs: &mut [JobPlan]) -> Result<()> {
    let names: Vec<String> = jobs.iter().map(|j| j.name.clone()).collect();
    let instances = |base: &str| -> Vec<String> {
        if names.iter().any(|n| n == base) {
            return vec![base.to_string()];
        }
        names
            .iter()
            .filter(|n| {
                n.starts_with(&format!("{base} ")) && n.contains('/')
                    || n.starts_with(&format!("{base}: ["))
            })
            .cloned()
            .collect()
    };
    for job in jobs.iter_mut() {
        let Some(needs) = job.spec.needs.take() else {
            continue;
        };
        let mut resolved = Vec::new();
        for need in needs {
            let target = need.job.clone();
            let found = instances(&target);
            if found.is_empty() {
                if need.optional {
                    continue;
                }
                return err(format!(
                    "'{}' job needs '{target}' job, but '{target}' does not exist in the pipeline. This might be because of the only, except, or rules keywords.",
                    job.name
                ));
            }
            for name in found {
                if !resolved.iter().any(|n: &Need| n.job == name) {
                    resolved.push(Need {
                        job: name,
                        artifacts: need.artifacts,
                        optional: false,
                    });
                }
            }
        }
        job.spec.needs = Some(resolved);
    }
    // Cycle check over the whole graph: needs edges, and stage edges for jobs without needs.
    let index: HashMap<&str, usize> = jobs
        .iter()
        .enumerate()
        .map(|(i, j)| (j.name.as_str(), i))
        .collect();
    let edges: Vec<Vec<usize>> = jobs
        .iter()
        .map(|job| match &job.spec.needs {
            Some(needs) => needs
                .iter()
                .filter_map(|n| index.get(n.job.as_str()).copied())
                .collect(),
            None => jobs
                .iter()
                .enumerate()
                .filter(|(_, o)| o.stage_idx < job.stage_idx)
                .map(|(i, _)| i)
                .collect(),
        })
        .collect();
    let mut state = vec![0u8; jobs.len()];
    fn visit(i: usize, edges: &[Vec<usize>], state: &mut [u8]) -> bool {
        match state[i] {
            1 => return false,
            2 => return true,
            _ => {}
        }
        state[i] = 1;
        for &next in &edges[i] {
            if !visit(next, edges, state) {
                return false;
            }
        }
        state[i] = 2;
        true
    }
    for i in 0..jobs.len() {
        if !visit(i, &edges, &mut state) {
            return err("The pipeline has circular dependencies");
        }
    }
    Ok(())
}

fn check_dependencies(jobs: &[JobPlan]) -> Result<()> {
    let by_name: HashMap<&str, &JobPlan> = jobs.iter().map(|j| (j.name.as_str(), j)).collect();
    for job in jobs {
        let Some(deps) = &job.spec.dependencies else {
            continue;
        };
        let needed: HashSet<&str> = job
            .spec
            .needs
            .iter()
            .flatten()
            .map(|n| n.job.as_str())
            .collect();
        for dep in deps {
            let ok = match by_name.get(dep.as_str()) {
                None => false,
                Some(other) if job.spec.needs.is_some() => needed.contains(other.name.as_str()),
                Some(other) => other.stage_idx < job.stage_idx,
            };
            if !ok {
                return err(format!("{} job: undefined dependency: {dep}", job.name));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A pipeline of `main`, made by the API.
    pub(crate) fn ctx() -> RuleScope {
        let predefined = [
            ("CI_COMMIT_BRANCH", "main"),
            ("CI_COMMIT_REF_NAME", "main"),
            ("CI_PIPELINE_SOURCE", "api"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        RuleScope {
            predefined,
            user: HashMap::new(),
        }
    }

    pub(crate) fn names(plan: &PipelinePlan) -> Vec<&str> {
        plan.jobs.iter().map(|j| j.name.as_str()).collect()
    }

    #[test]
    fn a_full_configuration() {
        let yaml = r#"
stages: [build, test, deploy]
variables:
  GLOBAL: "g"
  DESCRIBED: { value: "d", description: "x" }
default:
  image: ruby:3.3
  before_script: [echo default]
.base: &base
  tags: [linux]
  variables: { FROM_BASE: "1" }
build:
  <<: *base
  stage: build
  script: make
  artifacts: { paths: [out/], expire_in: 1 week, reports: { junit: rspec.xml } }
  cache: { key: gems, paths: [vendor/] }
test:
  extends: .base
  stage: test
  needs: [build]
  script: ["make test", ["nested"]]
  parallel: 2
  retry: { max: 2, when: [script_failure] }
  allow_failure: { exit_codes: [3] }
  timeout: 1h 30m
matrix:
  stage: test
  script: echo $OS
  parallel: { matrix: [ { OS: [linux, mac], ARCH: amd64 } ] }
deploy:
  stage: deploy
  script: deploy
  when: manual
  rules:
    - if: $CI_COMMIT_BRANCH == "main"
never:
  script: x
  rules: [ { if: '$CI_COMMIT_BRANCH == "dev"' } ]
"#;
        let plan = plan(yaml, &ctx()).unwrap();
        assert_eq!(
            plan.stages,
            vec![".pre", "build", "test", "deploy", ".post"]
        );
        assert_eq!(
            names(&plan),
            vec![
                "build",
                "test 1/2",
                "test 2/2",
                "matrix: [linux, amd64]",
                "matrix: [mac, amd64]",
                "deploy"
            ]
        );
        let build = &plan.jobs[0];
        assert_eq!(build.tags, vec!["linux"]);
        assert_eq!(
            build.spec.image.as_ref().map(|i| i.name.as_str()),
            Some("ruby:3.3")
        );
        assert_eq!(build.spec.before_script, vec!["echo default"]);
        assert_eq!(
            build
                .spec
                .artifacts
                .as_ref()
                .map(|a| a.reports[0].artifact_format.as_str()),
            Some("gzip")
        );
        assert!(build.spec.variables.contains(&Variable {
            key: "DESCRIBED".into(),
            value: "d".into()
        }));
        let test = &plan.jobs[1];
        assert_eq!(test.spec.script, vec!["make test", "nested"]);
        assert_eq!(
            test.spec.needs,
            Some(vec![Need {
                job: "build".into(),
                artifacts: true,
                optional: false
            }])
        );
        assert_eq!(test.spec.timeout, Some(5400));
        assert_eq!(test.spec.allow_failure_exit_codes, vec![3]);
        assert!(test
            .spec
            .variables
            .iter()
            .any(|v| v.key == "CI_NODE_INDEX" && v.value == "1"));
        assert!(test.spec.variables.iter().any(|v| v.key == "FROM_BASE"));
        let deploy = plan.jobs.iter().find(|j| j.name == "deploy").unwrap();
        assert_eq!((deploy.when, deploy.allow_failure), (When::Manual, true));
    }

    #[test]
    fn needs_on_parallel_jobs_expand() {
        let plan = plan(
            "a: { script: x, parallel: 2 }\nb: { script: y, needs: [a] }\n",
            &ctx(),
        )
        .unwrap();
        let needs: Vec<String> = plan.jobs[2]
            .spec
            .needs
            .clone()
            .unwrap()
            .into_iter()
            .map(|n| n.job)
            .collect();
        assert_eq!(needs, vec!["a 1/2", "a 2/2"]);
    }

    #[test]
    fn references_reach_scripts_rules_and_variables() {
        let yaml = ".setup:\n  script: [echo setup]\n  rules:\n    - if: $CI_COMMIT_REF_NAME == \"nope\"\n      when: never\n  variables: { LEVEL: ref }\n\
                    test:\n  script: [!reference [.setup, script], echo test]\n  rules:\n    - !reference [.setup, rules]\n    - when: always\n  variables: !reference [.setup, variables]\n";
        let plan = plan(yaml, &ctx()).expect("plans");
        let test = &plan.jobs[0];
        assert_eq!(test.spec.script, ["echo setup", "echo test"]);
        assert!(test
            .spec
            .variables
            .iter()
            .any(|v| v.key == "LEVEL" && v.value == "ref"));
    }

    #[test]
    fn inherit_chooses_defaults_and_global_variables() {
        let yaml = "default: { image: alpine, tags: [docker] }\nvariables: { A: a, B: b }\n\
                    none: { script: x, inherit: { default: false, variables: false } }\n\
                    some: { script: x, inherit: { default: [tags], variables: [B] } }\n\
                    all: { script: x }\n";
        let planned = plan(yaml, &ctx()).expect("plans");
        let job = |name: &str| planned.jobs.iter().find(|j| j.name == name).expect("job");
        let keys = |name: &str| {
            job(name)
                .spec
                .variables
                .iter()
                .map(|v| v.key.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            (
                job("none").spec.image.clone(),
                job("none").tags.clone(),
                keys("none")
            ),
            (None, vec![], vec![])
        );
        assert_eq!(
            (
                job("some").spec.image.clone(),
                job("some").tags.clone(),
                keys("some")
            ),
            (None, vec!["docker".to_string()], vec!["B".to_string()])
        );
        assert_eq!(
            job("all").spec.image.as_ref().map(|i| i.name.as_str()),
            Some("alpine")
        );
        assert_eq!(keys("all"), ["A", "B"]);
        let bad = plan("a: { script: x, inherit: { default: [nope] } }", &ctx())
            .unwrap_err()
            .0;
        assert_eq!(
            bad,
            "jobs:a:inherit:default config contains unknown values: nope"
        );
    }

    #[test]
    fn pages_jobs_and_their_folders() {
        let yaml = "pages: { script: x }\nsite: { script: x, pages: true, publish: dist }\n\
                    docs: { script: x, pages: { publish: /build/html/ } }\nnot: { script: x, pages: false }\n\
                    plain: { script: x }\n";
        let planned = plan(yaml, &ctx()).expect("plans");
        let folder = |name: &str| {
            planned
                .jobs
                .iter()
                .find(|j| j.name == name)
                .expect("job")
                .spec
                .pages
                .clone()
        };
        assert_eq!(folder("pages").as_deref(), Some("public"));
        assert_eq!(folder("site").as_deref(), Some("dist"));
        assert_eq!(folder("docs").as_deref(), Some("build/html"));
        assert_eq!((folder("not"), folder("plain")), (None, None));
        let bad = plan("a: { script: x, pages: { path_prefix: v1 } }", &ctx())
            .unwrap_err()
            .0;
        assert_eq!(
            bad,
            "jobs:a uses keywords Runway does not support yet: pages:path_prefix"
        );
    }

    #[test]
    fn a_key_given_twice_keeps_its_last_value() {
        let yaml =
            "variables: { A: first, B: b, A: last }\nbuild:\n  script: [one]\n  script: [two]\n\
                    build:\n  script: [three]\n  tags: [t]\n";
        let planned = plan(yaml, &ctx()).expect("plans");
        assert_eq!(names(&planned), ["build"]);
        let build = &planned.jobs[0];
        assert_eq!(build.spec.script, ["three"], "the whole job given last");
        assert_eq!(build.tags, ["t"]);
        let a = build
            .spec
            .variables
            .iter()
            .find(|v| v.key == "A")
            .map(|v| v.value.as_str());
        assert_eq!(a, Some("last"));
        // Tags survive the reading.
        let refs = plan(
            ".s: { script: [x] }\nj: { script: !reference [.s, script] }\n",
            &ctx(),
        )
        .expect("plans");
        assert_eq!(refs.jobs[0].spec.script, ["x"]);
    }

    #[test]
    fn hidden_keys_of_any_type_are_ignored() {
        let yaml = ".versions: &versions ['3.11', '3.12']\n.note: a string\n.empty:\n\
                    test:\n  script: x\n  parallel:\n    matrix:\n      - PY: *versions\n";
        let plan = plan(yaml, &ctx()).expect("plans");
        assert_eq!(names(&plan), ["test: [3.11]", "test: [3.12]"]);
    }

    #[test]
    fn errors_name_the_problem() {
        let cases = [
            ("a: [", "Invalid configuration format"),
            (
                "a: { script: x, coverage: 'Total: (\\d+)%' }",
                "jobs:a:coverage config must be a regular expression with re2 syntax",
            ),
            (
                "a: { script: x, release: { tag_name: v1 } }",
                "jobs:a uses keywords Runway does not support yet: release",
            ),
            (
                "a: { script: x, only: [main], rules: [ { when: always } ], except: [tags] }",
                "jobs:a config key may not be used with `rules`: only, except",
            ),
            (
                "a: { script: x, only: main }",
                "jobs:a:only has to be either an array of conditions or a hash",
            ),
            (
                "a: { script: x, bogus: 1 }",
                "jobs:a config contains unknown keys: bogus",
            ),
            (
                "a: { stage: test }",
                "jobs:a config should implement the script:, run:, or trigger: keyword",
            ),
            (
                "a: { script: x, stage: nope }",
                "jobs:a chosen stage nope does not exist",
            ),
            (
                "a: { script: x, needs: [b] }\nb: { script: y, needs: [a] }",
                "The pipeline has circular dependencies",
            ),
            (
                "a: { script: x, needs: [zz] }",
                "'a' job needs 'zz' job, but 'zz' does not exist",
            ),
            (
                "include: x.yml\na: { script: x }",
                "Local file `x.yml` does not exist!",
            ),
            (
                "include: { template: Jobs/Build.gitlab-ci.yml }\na: { script: x }",
                "Runway does not support these keywords yet: include:template",
            ),
            (
                "a: { script: x, extends: .nope }",
                "unknown keys in `extends`",
            ),
            (
                ".a: { extends: .b }\n.b: { extends: .a }\nc: { extends: .a, script: x }",
                "circular dependency detected in `extends`",
            ),
            (
                "a: { script: x, rules: [ { if: '$X ==' } ] }",
                "invalid expression syntax",
            ),
            (
                "a: { script: x, rules: [ { changes: x } ] }",
                "jobs:a:rules:changes should be an array of strings",
            ),
            (
                "a: { script: x, rules: [ { needs: [b] } ] }",
                "does not support yet: needs",
            ),
            (
                "a: { script: x, dependencies: [b] }\nb: { script: y }",
                "a job: undefined dependency: b",
            ),
            (
                ".hidden: { script: x }",
                "jobs config should contain at least one visible job",
            ),
            (
                "a: { script: x, rules: [ { when: never } ] }",
                "Pipeline will not run",
            ),
            (
                "workflow: { rules: [ { if: '$NOPE' } ] }\na: { script: x }",
                "Pipeline filtered out by workflow rules.",
            ),
            ("a: { script: x, when: delayed }", "when: delayed"),
            ("- a\n- b", "Invalid configuration format"),
        ];
        for (yaml, expected) in cases {
            match plan(yaml, &ctx()) {
                Ok(p) => panic!("{yaml:?} planned {:?}", names(&p)),
                Err(ConfigError(message)) => {
                    assert!(message.contains(expected), "{yaml:?}: {message}")
                }
            }
        }
    }
}
