//! Plan step: the jobs of this pipeline as they will be created. Each visible job, made
//! whole by the normalise step, is read (`script`, `stage`, `when`, `allow_failure`,
//! `variables`), evaluated for this pipeline, then its spec built from its keywords
//! (‹lib/gitlab/ci/config/entry/job.rb, entry/processable.rb› and the readers in
//! [`super::keywords`]) and expanded by `parallel` ‹entry/product/parallel.rb,
//! entry/product/matrix.rb›; the pipeline's size limit is kept as they come
//! (`Gitlab::Ci::Pipeline::Quota::Size`); then `needs` are resolved and checked for cycles
//! ‹entry/needs.rb, lib/gitlab/ci/yaml_processor.rb› and `dependencies` checked.

use std::collections::{HashMap, HashSet};

use serde_yaml_ng::{Mapping, Value};

use super::config::{
    too_many_jobs, ConfigError, JobPlan, JobSpec, Need, PipelinePlan, RetrySpec, RuleScope,
    Variable, When,
};
use super::duration::parse_seconds;
use super::evaluate::{self, Pipeline};
use super::keywords::{
    artifacts_spec, cache_spec, err, files_key, hooks_spec, id_tokens_spec, image_spec, int_list,
    key_str, need, pages_folder, release_spec, retry_spec, scalar, script, string_list,
    trigger_spec, upsert_var, variables_of, Result,
};
use super::normalise::Config;
use super::policy;

/// Plans every visible job of `config` in `pipeline`, refusing as soon as more than
/// `max_jobs` would be in it.
pub(crate) fn plan(
    config: Config<'_>,
    pipeline: Pipeline,
    scope: &RuleScope,
    max_jobs: Option<usize>,
    commit: &super::include::Commit<'_>,
) -> Result<PipelinePlan> {
    // `default` is read once `workflow` has let the pipeline be, as it always was.
    let defaults = config.defaults()?;

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
            &config.stages,
            &job.globals,
            scope,
            pipeline.workflow_rules,
            commit,
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
    check_on_stop(&planned, config.visible_jobs()?)?;
    Ok(PipelinePlan {
        stages: config.stages,
        jobs: planned,
        name: pipeline.name,
        auto_cancel: pipeline.auto_cancel,
    })
}

/// `Entry::Bridge::ALLOWED_KEYS` with `Processable`'s.
const BRIDGE_KEYS: &[&str] = &[
    "trigger",
    "parallel",
    "extends",
    "stage",
    "only",
    "except",
    "rules",
    "variables",
    "inherit",
    "allow_failure",
    "when",
    "needs",
    "resource_group",
    "environment",
    "interruptible",
];

/// The job `name` (its `parallel` instances), or `None` when it is not in this pipeline.
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
    // A bridge (`trigger`) runs no script (`Entry::Bridge`, `Processable`'s
    // `mutually_exclusive_keys`), and knows only the keys of GitLab's bridges.
    let trigger = match field("trigger") {
        None => None,
        Some(_) if !script_lines.is_empty() => {
            return err(format!(
                "jobs:{name} these keys cannot be used together: script, trigger"
            ))
        }
        Some(value) => {
            let foreign: Vec<String> = job
                .keys()
                .filter_map(|k| k.as_str())
                .filter(|k| !BRIDGE_KEYS.contains(k))
                .map(str::to_string)
                .collect();
            if !foreign.is_empty() {
                return err(format!(
                    "jobs:{name} config contains unknown keys: {}",
                    foreign.join(", ")
                ));
            }
            if field("resource_group").is_some() {
                return err(format!(
                    "jobs:{name} uses keywords Runway does not support yet: trigger with resource_group"
                ));
            }
            if field("when").and_then(Value::as_str) == Some("delayed") {
                return err(format!(
                    "jobs:{name} when should be one of: on_success, on_failure, always, manual"
                ));
            }
            Some(trigger_spec(value, &at("trigger"), name)?)
        }
    };
    if script_lines.is_empty() && trigger.is_none() {
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
                None => {
                    return err(format!(
                        "{} config should be one of on_success, on_failure, always, manual, delayed, never",
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

    // `Entry::Job`: a delayed job says when, within a week; others say nothing of it.
    let mut start_in = match (when, field("start_in")) {
        (When::Delayed, given) => Some(start_in_seconds(given, &format!("jobs:{name}"))?),
        (_, Some(_)) => return err(format!("jobs:{name} start in must be blank")),
        (_, None) => None,
    };

    let Some(rule) = evaluate::job(name, job, &variables, rule_scope, workflow_rules, commit)?
    else {
        return Ok(None);
    };
    if rule.start_in.is_some() {
        start_in = rule.start_in;
    }
    let interruptible_rule = rule.interruptible;
    // The job's own `allow_failure` (or its own `when: manual`) stays unless the rule sets
    // one: `Rules::Result#build_attributes` leaves it out when the rule has none, and
    // `Entry::Job#ignored?` decides from the job's keys.
    if let Some(w) = rule.when {
        when = w;
    }
    if when != When::Delayed {
        start_in = None;
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
        // `Entry::Caches`: GitLab's default `ci_max_caches_per_job` of 4.
        Some(Value::Sequence(items)) if items.len() > 4 => {
            return err(format!(
                "{} config no more than 4 caches can be created",
                at("cache")
            ))
        }
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|v| cache_spec(v, &at("cache")))
            .collect::<Result<_>>()?,
        Some(v) => vec![cache_spec(v, &at("cache"))?],
    };
    let mut cache = cache;
    for entry in cache.iter_mut().filter(|c| !c.key_files.is_empty()) {
        let mut commits = Vec::new();
        for path in &entry.key_files {
            if let Some(sha) = commit.files.last_commit(path).map_err(ConfigError)? {
                commits.push(sha);
            }
        }
        entry.key = files_key(entry.key_prefix.as_deref(), &commits);
    }
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
    // A matching rule's `interruptible` wins over the job's.
    let interruptible = interruptible_rule.unwrap_or(interruptible);
    let manual_confirmation = match field("manual_confirmation") {
        None => None,
        Some(Value::String(text)) => Some(text.clone()),
        Some(_) => {
            return err(format!(
                "jobs:{name} manual confirmation should be a string"
            ))
        }
    };
    let resource_group = match field("resource_group") {
        None => None,
        Some(Value::String(key)) => Some(key.clone()),
        Some(_) => return err(format!("jobs:{name} resource group should be a string")),
    };
    let hooks = match field("hooks") {
        None => Vec::new(),
        Some(v) => hooks_spec(v, &at("hooks"))?,
    };
    let release = field("release")
        .map(|v| release_spec(v, &at("release")))
        .transpose()?;
    let id_tokens = match field("id_tokens") {
        None => Vec::new(),
        Some(v) => id_tokens_spec(v, &at("id_tokens"))?,
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
        hooks,
        start_in,
        manual_confirmation,
        resource_group,
        id_tokens,
        release,
        trigger,
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
    let group_expands = jobs[0].spec.resource_group.as_ref().is_some_and(expands);
    let aud_expands = jobs[0]
        .spec
        .id_tokens
        .iter()
        .any(|t| t.aud.iter().any(expands));
    if environment.is_some()
        || group_expands
        || aud_expands
        || jobs.iter().any(|job| job.tags.iter().any(expands))
    {
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
            // `Ci::Build#id_tokens_variables` expands `aud` with the job's variables.
            for token in &mut job.spec.id_tokens {
                for aud in &mut token.aud {
                    *aud = super::environment::expand_existing(aud, &vars);
                }
            }
            // `Seed::Processable::ResourceGroup`, with the environment's variables too.
            if let Some(key) = &job.spec.resource_group {
                let mut vars = vars.clone();
                if let Some(env) = &job.spec.environment {
                    for (k, v) in super::environment::variables(env) {
                        vars.insert(k.to_string(), v);
                    }
                }
                job.spec.resource_group = Some(super::environment::expand(key, &vars));
            }
        }
    }
    // A key that is no valid group name leaves the job without one, as GitLab's
    // `safe_find_or_create_by` does.
    for job in &mut jobs {
        if job
            .spec
            .resource_group
            .as_deref()
            .is_some_and(|k| !resource_group_key_ok(k))
        {
            job.spec.resource_group = None;
        }
    }
    Ok(Some(jobs))
}

/// A resource group's key as `Ci::ResourceGroup` validates it: at most 255 characters of
/// `Gitlab::Regex.environment_name_regex`.
fn resource_group_key_ok(key: &str) -> bool {
    key.chars().count() <= 255 && super::environment::valid_name(key)
}

/// `start_in` of a delayed job (or rule) at `at`: a duration of at most a week
/// (`DurationValidator` with `limit: '1 week'`), in seconds.
pub(crate) fn start_in_seconds(value: Option<&Value>, at: &str) -> Result<i64> {
    const WEEK: i64 = 7 * 24 * 3600;
    let seconds = value
        .and_then(Value::as_str)
        .and_then(parse_seconds)
        .ok_or_else(|| ConfigError(format!("{at} start in should be a duration")))?;
    if seconds > WEEK {
        return err(format!("{at} start in should not exceed the limit"));
    }
    Ok(seconds)
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

/// `environment:on_stop` names a job of the file that stops the same environment
/// (`YamlProcessor#validate_on_stop_job!`); a stop job that rules leave out of this
/// pipeline is not checked further.
fn check_on_stop(jobs: &[JobPlan], defined: &[String]) -> Result<()> {
    let by_name: HashMap<&str, &JobPlan> = jobs.iter().map(|j| (j.name.as_str(), j)).collect();
    for job in jobs {
        let Some(env) = &job.spec.environment else {
            continue;
        };
        let Some(on_stop) = &env.on_stop else {
            continue;
        };
        let name = &job.name;
        if !defined.contains(on_stop) {
            return err(format!("{name} job: on_stop job {on_stop} is not defined"));
        }
        let Some(stop) = by_name.get(on_stop.as_str()) else {
            continue;
        };
        let Some(stop_env) = &stop.spec.environment else {
            return err(format!(
                "{name} job: on_stop job {on_stop} does not have environment defined"
            ));
        };
        if stop_env.name != env.name {
            return err(format!(
                "{name} job: on_stop job {on_stop} have different environment name"
            ));
        }
        if stop_env.action != "stop" {
            return err(format!(
                "{name} job: on_stop job {on_stop} needs to have action stop defined"
            ));
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
mod tests {
    use super::super::config::plan;
    use super::super::config::tests::ctx;
    use super::*;

    fn job(name: &str, stage_idx: i32, needs: Option<Vec<&str>>) -> JobPlan {
        JobPlan {
            name: name.into(),
            stage: String::new(),
            stage_idx,
            when: When::OnSuccess,
            allow_failure: false,
            tags: Vec::new(),
            spec: JobSpec {
                needs: needs.map(|needs| {
                    needs
                        .into_iter()
                        .map(|n| Need {
                            job: n.trim_end_matches('?').into(),
                            artifacts: true,
                            optional: n.ends_with('?'),
                        })
                        .collect()
                }),
                ..Default::default()
            },
        }
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
    fn parallel_names_and_variables() {
        let value = |text: &str| serde_yaml_ng::from_str::<Value>(text).expect("YAML");
        let names = |jobs: Vec<JobPlan>| jobs.into_iter().map(|j| j.name).collect::<Vec<_>>();
        let jobs = parallel(job("t", 2, None), &value("3"), "p").unwrap();
        let vars = &jobs[2].spec.variables;
        assert_eq!((vars[0].value.as_str(), vars[1].value.as_str()), ("3", "3"));
        assert_eq!(names(jobs), ["t 1/3", "t 2/3", "t 3/3"]);
        let jobs = parallel(
            job("t", 2, None),
            &value("{matrix: [{OS: [a, b], V: 1}, {OS: c}]}"),
            "p",
        )
        .unwrap();
        assert_eq!(names(jobs), ["t: [a, 1]", "t: [b, 1]", "t: [c]"]);
        let refused = |text: &str| {
            parallel(job("t", 2, None), &value(text), "p")
                .unwrap_err()
                .0
        };
        assert_eq!(
            refused("201"),
            "p config should be an integer between 1 and 200"
        );
        assert_eq!(
            refused("{matrix: x}"),
            "p config should be an integer or a hash with matrix"
        );
        assert_eq!(
            refused("{matrix: [{A: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15], B: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]}]}"),
            "p:matrix config generates 210 jobs (maximum allowed is 200)"
        );
    }

    #[test]
    fn needs_resolve_or_refuse() {
        let mut jobs = vec![
            job("a 1/2", 1, None),
            job("a 2/2", 1, None),
            job("b", 2, Some(vec!["a", "gone?"])),
        ];
        resolve_needs(&mut jobs).unwrap();
        let needs: Vec<&str> = jobs[2]
            .spec
            .needs
            .iter()
            .flatten()
            .map(|n| n.job.as_str())
            .collect();
        assert_eq!(needs, ["a 1/2", "a 2/2"]);
        let mut absent = vec![job("b", 2, Some(vec!["gone"]))];
        assert_eq!(
            resolve_needs(&mut absent).unwrap_err().0,
            "'b' job needs 'gone' job, but 'gone' does not exist in the pipeline. This might be because of the only, except, or rules keywords."
        );
        // A job without needs waits for every earlier stage: a cycle through it counts.
        let mut cycle = vec![job("a", 1, Some(vec!["b"])), job("b", 2, None)];
        assert_eq!(
            resolve_needs(&mut cycle).unwrap_err().0,
            "The pipeline has circular dependencies"
        );
    }

    #[test]
    fn dependencies_are_earlier_or_needed() {
        let with = |mut job: JobPlan, deps: &[&str]| {
            job.spec.dependencies = Some(deps.iter().map(|d| d.to_string()).collect());
            job
        };
        let jobs = [
            job("a", 1, None),
            job("c", 2, None),
            with(job("b", 2, None), &["a"]),
            with(job("n", 3, Some(vec!["c"])), &["c"]),
        ];
        check_dependencies(&jobs).unwrap();
        let late = [job("a", 2, None), with(job("b", 2, None), &["a"])];
        assert_eq!(
            check_dependencies(&late).unwrap_err().0,
            "b job: undefined dependency: a"
        );
        let unneeded = [job("a", 1, None), with(job("n", 2, Some(vec![])), &["a"])];
        assert_eq!(
            check_dependencies(&unneeded).unwrap_err().0,
            "n job: undefined dependency: a"
        );
    }
}
