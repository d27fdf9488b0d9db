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
//!
//! A compiler in four steps, as GitLab's `Gitlab::Ci::Config` and pipeline chain go
//! ‹lib/gitlab/ci/config.rb, lib/gitlab/ci/yaml_processor.rb›: load ([`super::load`]:
//! the YAML, `include`, `!reference`, `spec:inputs`), normalise (`super::normalise`: the
//! top-level keys sorted, `default`, `extends`, `inherit`), evaluate (`super::evaluate`:
//! `workflow`, and each job's `rules` or `only`/`except`, for this pipeline), plan
//! (`super::plan`: each job's spec, read by `super::keywords`, `parallel`, `needs`,
//! `dependencies`, the pipeline's size limit). Here, the plan's types and the entry points.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::evaluate;
use super::include::{Commit, FileSource, NoFiles};
use super::keywords::{Result, REPORT_TYPES};
use super::load::expand;
use super::normalise::normalise;

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
    /// `when: delayed`: queued `start_in` after it could run.
    Delayed,
}

impl When {
    pub fn as_str(self) -> &'static str {
        match self {
            When::OnSuccess => "on_success",
            When::OnFailure => "on_failure",
            When::Always => "always",
            When::Manual => "manual",
            When::Delayed => "delayed",
        }
    }

    pub fn parse(text: &str) -> Option<When> {
        match text {
            "on_success" => Some(When::OnSuccess),
            "on_failure" => Some(When::OnFailure),
            "always" => Some(When::Always),
            "manual" => Some(When::Manual),
            "delayed" => Some(When::Delayed),
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
    /// `docker:` and `kubernetes:` options, as the payload's `executor_opts` carries them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor_opts: Option<serde_json::Value>,
}

/// A bridge's `trigger`: the child pipeline it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerSpec {
    /// The child's configuration: `include:` of the trigger's `include`, as YAML (empty
    /// for a multi-project trigger).
    pub config: String,
    /// A multi-project trigger: the downstream project's path, and its branch (the
    /// project's default branch when `None`), variables expanded when it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// `include: [{artifact, job}]`: the child's configuration is that file of the
    /// parent's job's archive (a dynamic child pipeline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<ArtifactInclude>,
    /// `strategy: depend`: the bridge ends as the child pipeline ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// `forward:yaml_variables` (default true) and `pipeline_variables` (default false).
    pub forward_yaml_variables: bool,
    pub forward_pipeline_variables: bool,
}

/// `trigger:include:artifact` and its `job`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactInclude {
    pub path: String,
    pub job: String,
}

/// A job's `release`: the release its release step makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseSpec {
    pub tag_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "ref")]
    pub ref_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub milestones: Vec<String>,
    /// `assets:links`, each as its JSON.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<serde_json::Value>,
}

/// One of a job's `id_tokens`: the variable it is given as, and its audiences.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdTokenSpec {
    pub name: String,
    pub aud: Vec<String>,
}

/// A job's `hooks` entry: a script the runner runs at a point of the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hook {
    pub name: String,
    pub script: Vec<String>,
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
    /// `expose_as`: the name the archive is shown under on the pipeline's page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose_as: Option<String>,
    /// `access` (or `public`): who may download the archive — `all`, `developer`,
    /// `maintainer` or `none`; `None` is `all`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheSpec {
    pub key: String,
    pub paths: Vec<String>,
    pub untracked: bool,
    pub policy: String,
    pub when: String,
    pub fallback_keys: Vec<String>,
    /// `unprotect`: the same cache on protected and unprotected refs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unprotect: bool,
    /// `key:files` and `key:prefix`, read into `key` when the pipeline is created.
    #[serde(skip)]
    pub key_files: Vec<String>,
    #[serde(skip)]
    pub key_prefix: Option<String>,
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
    /// `hooks`: scripts the runner runs around getting the sources.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<Hook>,
    /// `when: delayed`: seconds from when the job could run to when it is queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_in: Option<i64>,
    /// `manual_confirmation`: what a person is asked before playing the manual job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manual_confirmation: Option<String>,
    /// `resource_group`, its variables expanded: at most one of the project's jobs in the
    /// group runs at a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_group: Option<String>,
    /// `id_tokens`: JWTs the job gets as variables, signed when a runner takes it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub id_tokens: Vec<IdTokenSpec>,
    /// `release`: the release the job makes after its script.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseSpec>,
    /// `trigger`: the job is a bridge, run by Runway itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<TriggerSpec>,
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
    /// `workflow:auto_cancel`, as the matching workflow rule left it.
    pub auto_cancel: super::auto_cancel::AutoCancel,
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
    /// The pipeline's `inputs` for the configuration's `spec:inputs` header (`None`:
    /// none given, the defaults apply).
    pub inputs: Option<serde_yaml_ng::Mapping>,
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
    plan_with(yaml, scope, max_jobs, &NoFiles)
}

/// [`plan_within`], reading the files `include` names from `files` (the pipeline's commit).
pub fn plan_with(
    yaml: &str,
    scope: &RuleScope,
    max_jobs: Option<usize>,
    files: &dyn FileSource,
) -> Result<PipelinePlan> {
    // Load: the YAML read; `include`, `!reference` and `spec:inputs` expanded.
    let root = expand(yaml, scope, files)?;
    // Normalise: the top-level keys sorted into keywords, jobs and hidden templates.
    let config = normalise(&root)?;
    // Evaluate `workflow` for this pipeline.
    let commit = Commit::new(files);
    let pipeline = evaluate::pipeline(&config, scope, &commit)?;
    // Plan each job, made whole (normalise) and in the pipeline or not (evaluate).
    super::plan::plan(config, pipeline, scope, max_jobs, &commit)
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
            ..Default::default()
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
                "jobs:a:release description can't be blank",
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
            (
                "a: { script: x, when: delayed }",
                "jobs:a start in should be a duration",
            ),
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
