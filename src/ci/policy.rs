//! `only` and `except`, the older way to choose a job's pipelines, read and evaluated as
//! GitLab does ‹lib/gitlab/ci/config/entry/policy.rb, lib/gitlab/ci/build/policy/*.rb,
//! lib/gitlab/ci/pipeline/seed/build.rb›.
//!
//! - A list is `refs`; a hash has `refs`, `variables`, `changes`, `kubernetes`.
//! - `only` defaults to `refs: [branches, tags]`, also under a hash without `refs`
//!   (GitLab deep-merges the default); `except` has no default. Neither is inherited from
//!   `default:`; both are dropped when the job has `rules` or the file `workflow:rules`.
//! - A job is included when every key of `only` holds and no key of `except` holds; each
//!   key holds when any of its items does.

use std::collections::HashMap;

use regex::RegexBuilder;
use serde_yaml_ng::Value;

use super::expr;

/// The keys a policy hash may have (`ComplexPolicy::ALLOWED_KEYS`).
const ALLOWED_KEYS: &[&str] = &["refs", "kubernetes", "variables", "changes"];

/// One `only` or `except`, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Ref patterns: names, `/regexes/`, GitLab's keywords; each maybe `…@group/project`.
    pub refs: Option<Vec<String>>,
    /// `rules:if`-style expressions.
    pub variables: Option<Vec<String>>,
    /// Globs of changed paths.
    pub changes: Option<Vec<String>>,
    /// `kubernetes: active`.
    pub kubernetes: bool,
}

/// What a policy is evaluated against.
pub struct PolicyScope<'a> {
    /// GitLab's pipeline source (`push`, `web`, `api`, `schedule`, `trigger`, …).
    pub source: &'a str,
    /// The short ref name (`main`, `v1.0`).
    pub ref_: &'a str,
    pub tag: bool,
    /// `namespace/project`.
    pub project_path: &'a str,
    /// The job's variables, for `variables` expressions.
    pub variables: &'a HashMap<String, String>,
    /// The paths the pipeline's push changed, when known; `None` (a new branch, a tag, a
    /// pipeline not made by a push) makes every `changes` hold, as in GitLab.
    pub changed_paths: Option<&'a [String]>,
}

/// A ref pattern written as a regular expression: `/pattern/flags`
/// (`Gitlab::UntrustedRegexp::RubySyntax`: flags among `i`, `s`, `m`, `U`).
pub(crate) fn as_regex(pattern: &str) -> Option<(&str, &str)> {
    let rest = pattern.strip_prefix('/')?;
    let end = rest.rfind('/')?;
    let (body, flags) = (&rest[..end], &rest[end + 1..]);
    flags
        .chars()
        .all(|c| matches!(c, 'i' | 's' | 'm' | 'U'))
        .then_some((body, flags))
}

pub(crate) fn compile(body: &str, flags: &str) -> Option<regex::Regex> {
    RegexBuilder::new(body)
        .case_insensitive(flags.contains('i'))
        .dot_matches_new_line(flags.contains('s'))
        .multi_line(flags.contains('m'))
        .swap_greed(flags.contains('U'))
        .size_limit(1 << 20)
        .build()
        .ok()
}

/// A list of strings, each a valid regular expression where it is written as one
/// (`ArrayOfStringsOrRegexpsValidator`).
fn refs_list(value: &Value) -> Option<Vec<String>> {
    let Value::Sequence(items) = value else {
        return None;
    };
    items
        .iter()
        .map(|item| match item {
            Value::String(s) => match as_regex(s) {
                Some((body, flags)) => compile(body, flags).map(|_| s.clone()),
                None => Some(s.clone()),
            },
            _ => None,
        })
        .collect()
}

/// A list of strings, and nothing else (no lone string).
pub(crate) fn strings(value: &Value) -> Option<Vec<String>> {
    let Value::Sequence(items) = value else {
        return None;
    };
    items
        .iter()
        .map(|i| i.as_str().map(str::to_string))
        .collect()
}

/// Reads `only` or `except` at `at` (`jobs:build:only`); `None` for a null value (as
/// if not written). Messages are GitLab's, which it writes in lower case.
pub fn parse(value: &Value, at: &str) -> Result<Option<Policy>, String> {
    let refs_error = "should be an array of strings or regular expressions using re2 syntax";
    match value {
        Value::Null => Ok(None),
        Value::Sequence(_) => {
            let refs = refs_list(value).ok_or_else(|| format!("{at} config {refs_error}"))?;
            Ok(Some(Policy {
                refs: Some(refs),
                ..Policy::default()
            }))
        }
        Value::Mapping(map) => {
            if map.is_empty() {
                return Err(format!("{at} config can't be blank"));
            }
            let unknown: Vec<String> = map
                .keys()
                .map(|k| k.as_str().map_or_else(|| format!("{k:?}"), str::to_string))
                .filter(|k| !ALLOWED_KEYS.contains(&k.as_str()))
                .collect();
            if !unknown.is_empty() {
                return Err(format!(
                    "{at} config contains unknown keys: {}",
                    unknown.join(", ")
                ));
            }
            let mut policy = Policy::default();
            if let Some(refs) = map.get("refs") {
                policy.refs =
                    Some(refs_list(refs).ok_or_else(|| format!("{at} refs {refs_error}"))?);
            }
            if let Some(kubernetes) = map.get("kubernetes") {
                let text = match kubernetes {
                    Value::String(s) => s.clone(),
                    Value::Bool(b) => b.to_string(),
                    Value::Number(n) => n.to_string(),
                    _ => String::new(),
                };
                if text != "active" {
                    return Err(format!("{at} kubernetes unknown value: {text}"));
                }
                policy.kubernetes = true;
            }
            if let Some(variables) = map.get("variables") {
                let list = strings(variables)
                    .ok_or_else(|| format!("{at} variables should be an array of strings"))?;
                let empty = HashMap::new();
                for statement in &list {
                    // A syntax error is one whatever the variables; a value-dependent
                    // regex error shows at evaluation as in GitLab.
                    if expr::evaluate(statement, &empty).is_err() {
                        return Err(format!("{at} variables invalid expression syntax"));
                    }
                }
                policy.variables = Some(list);
            }
            if let Some(changes) = map.get("changes") {
                policy.changes = Some(
                    strings(changes)
                        .ok_or_else(|| format!("{at} changes should be an array of strings"))?,
                );
            }
            Ok(Some(policy))
        }
        _ => Err(format!(
            "{at} has to be either an array of conditions or a hash"
        )),
    }
}

/// ActiveSupport's plural of a pipeline source, for the few words sources are.
fn plural(word: &str) -> String {
    if word.ends_with("sh") || word.ends_with("ch") || word.ends_with('s') || word.ends_with('x') {
        format!("{word}es")
    } else {
        format!("{word}s")
    }
}

/// Whether one ref pattern matches (`Gitlab::Ci::Build::Policy::Refs#matches_pattern?`).
fn ref_matches(pattern: &str, scope: &PolicyScope<'_>) -> bool {
    let (pattern, path) = match pattern.split_once('@') {
        Some((pattern, path)) => (pattern, Some(path)),
        None => (pattern, None),
    };
    if path.is_some_and(|p| p != scope.project_path) {
        return false;
    }
    let source = scope.source.strip_suffix("_event").unwrap_or(scope.source);
    if (pattern == "tags" && scope.tag)
        || (pattern == "branches" && !scope.tag)
        || pattern == source
        || pattern == plural(source)
    {
        return true;
    }
    if scope.ref_.is_empty() {
        return false;
    }
    match as_regex(pattern).and_then(|(body, flags)| compile(body, flags)) {
        // An unanchored search of the short ref name.
        Some(regex) => regex.is_match(scope.ref_),
        None => pattern == scope.ref_,
    }
}

/// Whether a changed path matches a glob (`File.fnmatch?` with `FNM_PATHNAME`,
/// `FNM_DOTMATCH`, `FNM_EXTGLOB`): `*` and `?` stay within a directory, `**/` spans any,
/// `{a,b}` alternates.
pub fn glob_matches(glob: &str, path: &str) -> bool {
    fn go(g: &[u8], p: &[u8], budget: &mut u32) -> bool {
        if *budget == 0 {
            return false;
        }
        *budget -= 1;
        match g.split_first() {
            None => p.is_empty(),
            Some((b'*', rest)) if rest.first() == Some(&b'*') => {
                let rest = &rest[1..];
                let rest = rest.strip_prefix(b"/").unwrap_or(rest);
                // `**/`: zero or more whole directories.
                (0..=p.len())
                    .filter(|i| *i == 0 || p[i - 1] == b'/')
                    .any(|i| go(rest, &p[i..], budget))
            }
            Some((b'*', rest)) => (0..=p.len())
                .take_while(|i| *i == 0 || p[i - 1] != b'/')
                .any(|i| go(rest, &p[i..], budget)),
            Some((b'?', rest)) => {
                p.first().is_some_and(|c| *c != b'/') && go(rest, &p[1..], budget)
            }
            Some((b'{', _)) => {
                let Some(close) = g.iter().position(|c| *c == b'}') else {
                    return p.first() == Some(&b'{') && go(&g[1..], &p[1..], budget);
                };
                let after = &g[close + 1..];
                g[1..close].split(|c| *c == b',').any(|alt| {
                    let mut joined = alt.to_vec();
                    joined.extend_from_slice(after);
                    go(&joined, p, budget)
                })
            }
            Some((c, rest)) => p.first() == Some(c) && go(rest, &p[1..], budget),
        }
    }
    // Bounded work whatever the glob: a pathological pattern simply does not match.
    let mut budget = 100_000;
    go(glob.as_bytes(), path.as_bytes(), &mut budget)
}

/// Which keys of `policy` hold in `scope`: (refs, variables, changes, kubernetes), each
/// `None` when not written.
fn holds(policy: &Policy, scope: &PolicyScope<'_>) -> Result<[Option<bool>; 4], String> {
    let refs = policy
        .refs
        .as_ref()
        .map(|refs| refs.iter().any(|r| ref_matches(r, scope)));
    let variables = match &policy.variables {
        None => None,
        Some(list) => {
            let mut any = false;
            for statement in list {
                any |= expr::evaluate(statement, scope.variables)?;
            }
            Some(any)
        }
    };
    let changes = policy
        .changes
        .as_ref()
        .map(|globs| match scope.changed_paths {
            None => true,
            Some(paths) => globs
                .iter()
                .any(|g| paths.iter().any(|p| glob_matches(g, p))),
        });
    // Runway has no Kubernetes integration: `kubernetes: active` never holds.
    let kubernetes = policy.kubernetes.then_some(false);
    Ok([refs, variables, changes, kubernetes])
}

/// Whether a job with `only` and `except` (as written) is part of the pipeline. `only`
/// gets GitLab's default refs when written, or when not written and the file has no
/// `workflow:rules` (`workflow_rules`), which drops the default.
pub fn included(
    only: Option<&Policy>,
    except: Option<&Policy>,
    workflow_rules: bool,
    scope: &PolicyScope<'_>,
) -> Result<bool, String> {
    let only_holds = if only.is_none() && workflow_rules {
        true
    } else {
        let mut only = only.cloned().unwrap_or_default();
        if only.refs.is_none() {
            only.refs = Some(vec!["branches".into(), "tags".into()]);
        }
        holds(&only, scope)?.iter().all(|h| h.is_none_or(|h| h))
    };
    let excepted = match except {
        Some(except) => holds(except, scope)?.contains(&Some(true)),
        None => false,
    };
    Ok(only_holds && !excepted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Value {
        serde_yaml_ng::from_str(text).expect("yaml")
    }

    fn policy(text: &str) -> Policy {
        parse(&yaml(text), "jobs:a:only")
            .expect("valid")
            .expect("present")
    }

    fn scope<'a>(
        source: &'a str,
        ref_: &'a str,
        tag: bool,
        vars: &'a HashMap<String, String>,
    ) -> PolicyScope<'a> {
        PolicyScope {
            source,
            ref_,
            tag,
            project_path: "group/app",
            variables: vars,
            changed_paths: None,
        }
    }

    #[test]
    fn shapes_and_gitlabs_messages() {
        let bad = |text: &str| parse(&yaml(text), "jobs:a:only").unwrap_err();
        assert_eq!(
            bad("master"),
            "jobs:a:only has to be either an array of conditions or a hash"
        );
        assert_eq!(bad("[1, 1]"), "jobs:a:only config should be an array of strings or regular expressions using re2 syntax");
        assert_eq!(bad("['/(/']"), "jobs:a:only config should be an array of strings or regular expressions using re2 syntax");
        assert_eq!(bad("{}"), "jobs:a:only config can't be blank");
        assert_eq!(
            bad("{refs: [a], foo: 1, bar: 2}"),
            "jobs:a:only config contains unknown keys: foo, bar"
        );
        assert_eq!(
            bad("{kubernetes: something}"),
            "jobs:a:only kubernetes unknown value: something"
        );
        assert_eq!(
            bad("{variables: $A}"),
            "jobs:a:only variables should be an array of strings"
        );
        assert_eq!(
            bad("{variables: ['$A ==']}"),
            "jobs:a:only variables invalid expression syntax"
        );
        assert_eq!(
            bad("{changes: a}"),
            "jobs:a:only changes should be an array of strings"
        );
        assert_eq!(parse(&Value::Null, "jobs:a:only"), Ok(None));
        assert!(policy("{kubernetes: active}").kubernetes);
    }

    #[test]
    fn refs_match_as_gitlab_matches_them() {
        let vars = HashMap::new();
        let branch = scope("push", "feature/login", false, &vars);
        let tag = scope("push", "v1.2.0", true, &vars);
        let web = scope("web", "main", false, &vars);
        let schedule = scope("schedule", "main", false, &vars);
        let ok = |p: &str, s: &PolicyScope<'_>| {
            included(Some(&policy(p)), None, false, s).expect("evaluates")
        };
        assert!(ok("[branches]", &branch) && !ok("[branches]", &tag));
        assert!(ok("[tags]", &tag) && !ok("[tags]", &branch));
        assert!(ok("[pushes]", &branch) && ok("[push]", &branch) && !ok("[pushes]", &web));
        assert!(ok("[web]", &web) && ok("[schedules]", &schedule) && !ok("[schedules]", &web));
        assert!(ok("[api, triggers, feature/login]", &branch));
        assert!(
            ok("['/^feature\\//']", &branch)
                && !ok("['/^FEATURE/']", &branch)
                && ok("['/^FEATURE/i']", &branch)
        );
        assert!(ok("['/login/']", &branch), "unanchored");
        assert!(ok("['/^v\\d+\\.\\d+\\.\\d+$/']", &tag));
        assert!(!ok("[main]", &branch) && ok("[main]", &web));
        assert!(ok("[branches@group/app]", &branch) && !ok("[branches@other/app]", &branch));
        assert!(!ok("['/x/g']", &branch), "not a regex: compared as a name");
        // `only` defaults to branches and tags, also under a hash without refs.
        assert!(
            included(None, None, false, &branch).expect("ok")
                && included(None, None, false, &tag).expect("ok")
        );
        assert!(ok("{variables: ['$X == null']}", &tag));
    }

    #[test]
    fn only_needs_every_key_except_any() {
        let vars = HashMap::from([("DEPLOY".to_string(), "yes".to_string())]);
        let s = scope("push", "main", false, &vars);
        let only = |p: &str| included(Some(&policy(p)), None, false, &s).expect("evaluates");
        let except = |p: &str| included(None, Some(&policy(p)), false, &s).expect("evaluates");
        assert!(only(
            "{refs: [main], variables: ['$DEPLOY == \"no\"', '$DEPLOY']}"
        ));
        assert!(!only("{refs: [tags], variables: ['$DEPLOY']}"), "refs fail");
        assert!(
            !only("{refs: [main], variables: ['$DEPLOY == \"no\"']}"),
            "variables fail"
        );
        assert!(
            !only("{refs: [main], kubernetes: active}"),
            "no Kubernetes here"
        );
        assert!(
            only("{changes: ['src/**/*']}"),
            "changes hold when no push diff is known"
        );
        assert!(!except("[main]") && except("[tags]"));
        assert!(
            !except("{refs: [tags], variables: ['$DEPLOY']}"),
            "any key of except excludes"
        );
        assert!(
            !except("{changes: [docs/*]}"),
            "and changes hold without a diff"
        );
        assert!(except("{kubernetes: active}"));
        // `workflow:rules` drops only's default: a tag pipeline keeps a job with except alone.
        let tag = scope("push", "v1", true, &vars);
        assert!(included(None, Some(&policy("[main]")), true, &tag).expect("ok"));
        assert!(included(None, None, true, &scope("web", "", false, &vars)).expect("ok"));
    }

    #[test]
    fn changes_use_fnmatch_globs() {
        assert!(glob_matches("src/*.rs", "src/main.rs"));
        assert!(!glob_matches("src/*.rs", "src/a/main.rs"));
        assert!(glob_matches("src/**/*.rs", "src/a/b/main.rs"));
        assert!(glob_matches("src/**/*.rs", "src/main.rs"));
        assert!(glob_matches("**/*.md", "README.md"));
        assert!(glob_matches("*.{yml,yaml}", ".gitlab-ci.yml"));
        assert!(
            glob_matches("docs/?.txt", "docs/a.txt") && !glob_matches("docs/?.txt", "docs/ab.txt")
        );
        let backtracking = format!("{}b", "*a".repeat(30));
        assert!(
            !glob_matches(&backtracking, &"a".repeat(100)),
            "bounded work"
        );
        let vars = HashMap::new();
        let paths = vec!["src/main.rs".to_string()];
        let mut s = scope("push", "main", false, &vars);
        s.changed_paths = Some(&paths);
        assert!(included(Some(&policy("{changes: ['src/*']}")), None, false, &s).expect("ok"));
        assert!(!included(Some(&policy("{changes: ['docs/*']}")), None, false, &s).expect("ok"));
    }
}
