//! Bounded fuzzing (proptest) of what clients send that Runway parses: `.gitlab-ci.yml`,
//! `rules:if` expressions, durations, `Content-Range`, query strings and form bodies, the
//! JSON params of every route, JUnit reports, and a job log's page. None may panic; each answers a value
//! or a clear error. Each parser also gets a property that nests its input up to 100,000
//! levels deep, which must be refused past its limit without recursing.
//! Cases per property: `RUNWAY_FUZZ_CASES` (default 2,000; well under a second each; the
//! nesting properties a 32nd of it).

use std::collections::HashMap;

use proptest::prelude::*;
use runway::api::params::{FromParams, Params};
use runway::ci::config::{plan, RuleScope};
use serde_json::{Map, Value};

fn config() -> ProptestConfig {
    let cases = std::env::var("RUNWAY_FUZZ_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(2_000);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Words `.gitlab-ci.yml` gives meaning to, so generated documents reach deep into the
/// loader instead of stopping at the first unknown key.
const KEYWORDS: &[&str] = &[
    "stages",
    "variables",
    "default",
    "workflow",
    "rules",
    "image",
    "services",
    "before_script",
    "script",
    "after_script",
    "stage",
    "tags",
    "when",
    "allow_failure",
    "exit_codes",
    "needs",
    "dependencies",
    "artifacts",
    "paths",
    "expire_in",
    "reports",
    "cache",
    "key",
    "timeout",
    "retry",
    "max",
    "interruptible",
    "extends",
    "parallel",
    "matrix",
    "if",
    "changes",
    "job",
    ".hidden",
    "build",
    "test",
    "manual",
    "always",
    "on_failure",
    "on_success",
    "name",
    "untracked",
    "exclude",
    "fallback_keys",
    "policy",
    "dotenv",
    "variables",
    "value",
    "only",
    "except",
    "include",
    "local",
    "inputs",
    "spec",
    "$[[ inputs.a ]]",
    "exists",
    "refs",
    "kubernetes",
    "active",
    "branches",
    "tags",
    "/^ma.*/i",
];

/// A YAML-ish value: scalars of every kind, and nested mappings and lists keyed mostly by
/// keywords.
fn yaml_value() -> impl Strategy<Value = serde_yaml_ng::Value> {
    let scalar = prop_oneof![
        Just(serde_yaml_ng::Value::Null),
        any::<bool>().prop_map(serde_yaml_ng::Value::Bool),
        any::<i64>().prop_map(|n| serde_yaml_ng::Value::Number(n.into())),
        any::<f64>().prop_map(|n| serde_yaml_ng::Value::Number(n.into())),
        prop::sample::select(KEYWORDS).prop_map(|k| serde_yaml_ng::Value::String(k.to_string())),
        "[ -~]{0,24}".prop_map(serde_yaml_ng::Value::String),
        "\\$[A-Z_]{1,8} (==|!=|=~) (\"[a-z]*\"|/[a-z.*]*/|null)"
            .prop_map(serde_yaml_ng::Value::String),
        "[0-9]{1,4} ?(s|sec|seconds|m|min|minutes|h|hours|d|days|weeks|mo|months|y|years)?"
            .prop_map(serde_yaml_ng::Value::String),
    ];
    scalar.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(serde_yaml_ng::Value::Sequence),
            prop::collection::vec((prop::sample::select(KEYWORDS), inner), 0..6).prop_map(
                |entries| {
                    serde_yaml_ng::Value::Mapping(
                        entries
                            .into_iter()
                            .map(|(k, v)| (serde_yaml_ng::Value::String(k.to_string()), v))
                            .collect(),
                    )
                }
            ),
        ]
    })
}

/// A JSON value of any shape, with the extremes parsers trip on.
fn json_value() -> impl Strategy<Value = Value> {
    let scalar = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
        "[0-9a-z_-]{0,12}".prop_map(Value::String),
    ];
    scalar.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::hash_map("[a-z_]{1,10}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Keys the routes read, so values land where parsing happens.
const PARAM_KEYS: &[&str] = &[
    "token",
    "description",
    "info",
    "name",
    "version",
    "revision",
    "platform",
    "architecture",
    "executor",
    "features",
    "config",
    "gpus",
    "active",
    "paused",
    "locked",
    "run_untagged",
    "tag_list",
    "access_level",
    "maximum_timeout",
    "maintenance_note",
    "system_id",
    "last_update",
    "state",
    "failure_reason",
    "exit_code",
    "checksum",
    "output",
    "bytesize",
    "trace",
    "artifact_type",
    "artifact_format",
    "expire_in",
    "direct_download",
    "runner_type",
    "project_id",
    "group_id",
    "ref",
    "sha",
    "variables",
    "ci_config",
    "path",
    "namespace",
    "repository_url",
    "default_branch",
    "protected_branches",
    "build_timeout",
    "shared_runners_enabled",
    "shared_runners_minutes_limit",
    "value",
    "feature_group",
    "user",
    "runner",
    "namespace",
    "project",
    "key",
    "jobs_running",
];

fn params() -> impl Strategy<Value = Params> {
    prop::collection::vec((prop::sample::select(PARAM_KEYS), json_value()), 0..12).prop_map(
        |entries| {
            let mut map = Map::new();
            for (k, v) in entries {
                map.insert(k.to_string(), v);
            }
            Params(map)
        },
    )
}

/// Parses `params` as every route's params type: an answer each, never a panic.
fn parse_everywhere(params: &Params) {
    use runway::api::admin::{features, projects, runners as admin_runners};
    use runway::api::runner::{artifacts, jobs, runners};
    let _ = features::SetFeatureParams::from_params(params);
    let _ = admin_runners::CreateRunnerParams::from_params(params);
    let _ = admin_runners::UpdateRunnerParams::from_params(params);
    let _ = projects::CreateProjectParams::from_params(params);
    let _ = projects::UpdateProjectParams::from_params(params);
    let _ = projects::CreatePipelineParams::from_params(params);
    let _ = jobs::JobRequestParams::from_params(params);
    let _ = jobs::UpdateJobParams::from_params(params);
    let _ = runners::RegisterParams::from_params(params);
    let _ = runners::TokenParams::from_params(params);
    let _ = runners::VerifyParams::from_params(params);
    let _ = runners::ManagerParams::from_params(params);
    let _ = artifacts::DownloadParams::from_params(params);
}

fn scope() -> RuleScope {
    RuleScope {
        predefined: HashMap::from([
            ("CI_COMMIT_REF_NAME".to_string(), "main".to_string()),
            ("CI_PIPELINE_SOURCE".to_string(), "api".to_string()),
        ]),
        ..Default::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn ci_config_from_arbitrary_text(text in ".{0,400}") {
        let _ = plan(&text, &scope());
    }

    #[test]
    fn ci_config_from_keyword_documents(doc in prop::collection::vec((prop::sample::select(KEYWORDS), yaml_value()), 0..8)) {
        let mapping: serde_yaml_ng::Mapping = doc
            .into_iter()
            .map(|(k, v)| (serde_yaml_ng::Value::String(k.to_string()), v))
            .collect();
        let text = serde_yaml_ng::to_string(&mapping).expect("yaml");
        let _ = plan(&text, &scope());
    }

    #[test]
    fn rules_expressions(expression in "[ -~]{0,60}", value in "[ -~]{0,12}") {
        let vars = HashMap::from([("CI_COMMIT_BRANCH".to_string(), value)]);
        let _ = runway::ci::expr::evaluate(&expression, &vars);
    }

    #[test]
    fn durations(text in ".{0,40}") {
        if let Some(seconds) = runway::ci::duration::parse_seconds(&text) {
            prop_assert!(seconds >= 0, "{text:?} gave {seconds}");
        }
    }

    #[test]
    fn durations_in_words(n in 0i64..100_000, unit in prop::sample::select(&[("seconds", 1i64), ("minutes", 60), ("hours", 3_600), ("days", 86_400)][..])) {
        let text = format!("{n} {}", unit.0);
        prop_assert_eq!(runway::ci::duration::parse_seconds(&text), Some(n * unit.1));
    }

    #[test]
    fn content_range_headers(header in ".{0,40}") {
        if let Some(start) = runway::api::runner::jobs::content_range_start(&header) {
            prop_assert!(start >= 0);
        }
    }

    #[test]
    fn content_range_starts(start in 0i64..i64::MAX, len in 0i64..1_000_000, prefix in prop::bool::ANY) {
        let header = format!("{}{start}-{}", if prefix { "bytes " } else { "" }, start.saturating_add(len));
        prop_assert_eq!(runway::api::runner::jobs::content_range_start(&header), Some(start));
    }

    #[test]
    fn query_strings_and_form_bodies(text in "([a-z_\\[\\]]{0,12}=[ -~]{0,12}&?){0,8}", raw in ".{0,80}") {
        let _ = Params::from_query(&text);
        let _ = Params::from_query(&raw);
    }

    #[test]
    fn json_params_of_every_route(params in params()) {
        parse_everywhere(&params);
    }

    #[test]
    fn junit_reports(text in ".{0,300}", cases in prop::collection::vec(("[ -~]{0,12}", prop::sample::select(&["", "<failure>x</failure>", "<error/>", "<skipped/>", "<system-out><![CDATA[o]]></system-out>"][..]), "[0-9.e-]{0,6}"), 0..12)) {
        let _ = runway::service::junit::parse(text.as_bytes());
        let body: String = cases
            .iter()
            .map(|(name, child, time)| format!("<testcase name=\"{}\" time=\"{time}\">{child}</testcase>", name.replace(['"', '<', '&'], "")))
            .collect();
        let report = runway::service::junit::parse(format!("<testsuite>{body}</testsuite>").as_bytes());
        prop_assert_eq!(report.suite_error, None);
        prop_assert_eq!(report.cases.len(), cases.len());
        prop_assert!(report.cases.iter().all(|c| c.execution_time.is_finite() && c.execution_time >= 0.0));
    }
}

/// Cases per nesting property: each builds input up to 100,000 levels deep, so fewer than
/// the other properties (`RUNWAY_FUZZ_CASES` / 32, at least 16).
fn deep_config() -> ProptestConfig {
    ProptestConfig {
        cases: (config().cases / 32).max(16),
        ..config()
    }
}

/// The deepest nesting the properties below generate.
const DEEPEST: usize = 100_000;

/// `rules:if` text nested `depth` levels in one of the ways an expression nests.
fn nested_expression(depth: usize, kind: usize) -> String {
    match kind {
        0 => format!("{}$A{}", "(".repeat(depth), ")".repeat(depth)),
        1 => format!("{}$A == \"x\"", "(".repeat(depth)),
        2 => format!("$A{}", " && ($A".repeat(depth)),
        _ => format!("{}\"x\"", "$A == ".repeat(depth)),
    }
}

/// `.gitlab-ci.yml` text whose job nests `depth` levels in one of YAML's ways.
fn nested_yaml(depth: usize, kind: usize) -> String {
    match kind {
        0 => format!(
            "a:\n  script: {}x{}\n",
            "[".repeat(depth),
            "]".repeat(depth)
        ),
        1 => format!(
            "a:\n  script: x\n  variables: {}1{}\n",
            "{b: ".repeat(depth),
            "}".repeat(depth)
        ),
        2 => format!("a:\n  script:\n    {}x\n", "- ".repeat(depth)),
        3 => format!("a:\n  script: x\n  cache: {}\n", "[{k: ".repeat(depth / 2)),
        // Quotes and comments that do not hide a flow's nesting.
        _ => format!(
            "a:\n  script: \"[[[\" # [[[\n  tags: {}x{}\n",
            "['y', ".repeat(depth),
            "]".repeat(depth)
        ),
    }
}

proptest! {
    #![proptest_config(deep_config())]

    // Rack's `a[b][c]…`: past 100 levels refused, whatever the depth, never a stack overflow.
    #[test]
    fn query_strings_nested_up_to_100_000_deep(depth in 0..=DEEPEST, kind in 0usize..3) {
        let segment = ["[b]", "[]", "[b][]"][kind];
        let text = format!("a{}=1", segment.repeat(depth));
        let brackets = text.matches('[').count();
        match Params::from_query(&text) {
            Ok(_) => prop_assert!(brackets <= runway::api::params::MAX_PARAM_DEPTH),
            Err(e) => {
                prop_assert!(brackets > runway::api::params::MAX_PARAM_DEPTH);
                prop_assert!(e.to_string().contains("nested deeper than 100 levels"), "{e}");
            }
        }
    }

    // JSON params: serde_json stops at 128 levels, so the params built from a body are
    // never deeper (the NUL check and every walk of them rely on it).
    #[test]
    fn json_bodies_nested_up_to_100_000_deep(depth in 0..=DEEPEST, object in prop::bool::ANY) {
        let (open, close) = if object { ("{\"a\":", "}") } else { ("[", "]") };
        let text = format!("{}1{}", open.repeat(depth), close.repeat(depth));
        prop_assert_eq!(serde_json::from_str::<Value>(&text).is_ok(), depth <= 127);
    }

    // `rules:if`: GitLab's 100-token limit refuses deep nesting of any kind before parsing.
    #[test]
    fn rules_expressions_nested_up_to_100_000_deep(depth in 0..=DEEPEST, kind in 0usize..4) {
        let text = nested_expression(depth, kind);
        let vars = HashMap::from([("A".to_string(), "x".to_string())]);
        let result = runway::ci::expr::evaluate(&text, &vars);
        if depth > runway::ci::expr::MAX_TOKENS {
            prop_assert_eq!(result, Err("Too many tokens!".to_string()));
        }
    }

    // `.gitlab-ci.yml`: past 100 levels (GitLab's `max_yaml_depth`) refused, fast, however
    // the nesting is written.
    #[test]
    fn ci_configs_nested_up_to_100_000_deep(depth in 0..=DEEPEST, kind in 0usize..5) {
        let text = nested_yaml(depth, kind);
        let result = plan(&text, &scope());
        if depth > 130 && kind != 3 {
            prop_assert_eq!(result.map(|_| ()), Err(runway::ci::config::ConfigError("The parsed YAML is too big".into())));
        }
    }

    // Block mappings nest by indentation, so their text grows with the square of the depth:
    // 3,000 levels are 4.5 MB, past the 2 MiB limit, refused before parsing.
    #[test]
    fn ci_configs_nested_by_indentation(depth in 0usize..3_000) {
        let mut text = String::from("a:\n  script: x\n  variables:\n");
        for level in 0..depth {
            text.push_str(&" ".repeat(4 + level));
            text.push_str("k:\n");
        }
        text.push_str(&" ".repeat(4 + depth));
        text.push_str("v\n");
        let result = plan(&text, &scope());
        if depth > 100 {
            prop_assert_eq!(result.map(|_| ()), Err(runway::ci::config::ConfigError("The parsed YAML is too big".into())));
        }
    }

    // `extends` chains: GitLab's 10 levels; a chain of tens of thousands of hidden jobs is
    // refused without recursing down it.
    #[test]
    fn extends_chains_up_to_100_000_long(length in 1usize..=DEEPEST) {
        let mut text = String::from("a:\n  script: x\n  extends: .j0\n");
        for i in 0..length {
            text.push_str(&format!(".j{i}:\n  extends: .j{}\n", i + 1));
        }
        text.push_str(&format!(".j{length}:\n  tags: [t]\n"));
        let result = plan(&text, &scope());
        if length > 10 {
            prop_assert!(result.is_err(), "{length} levels of extends");
        }
    }

    // Durations: any number of parts with any numbers, never past the bound, never a panic.
    #[test]
    fn durations_of_huge_parts(parts in prop::collection::vec((any::<u64>(), prop::sample::select(&["s", "minutes", "h", "days", "weeks", "months", "years", ""][..])), 1..40)) {
        let text: Vec<String> = parts.iter().map(|(n, unit)| format!("{n} {unit}")).collect();
        if let Some(seconds) = runway::ci::duration::parse_seconds(&text.join(" ")) {
            prop_assert!((0..=runway::ci::duration::MAX_SECONDS).contains(&seconds));
        }
    }

    // A job log's page: any bytes, any tail size — the cut is inside the log, never inside
    // a character, and the state before it is found without a panic.
    #[test]
    fn job_log_tails(log in prop::collection::vec(prop::sample::select(&[b'a', b'\n', b'\r', 0x1b, b'[', b'3', b'1', b'm', 0xc3, 0xa9, b's'][..]), 0..4_000), keep in 1usize..4_000) {
        let cut = runway::ui::log::tail_start(&log, keep);
        prop_assert!(cut <= log.len());
        prop_assert!(cut == log.len() || (log[cut] & 0xc0) != 0x80 || std::str::from_utf8(&log).is_err());
        let state = runway::ui::log::state_before(&log, cut);
        let _ = runway::ui::log::render(&log[cut..], state, true);
    }
}
