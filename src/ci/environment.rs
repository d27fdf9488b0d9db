//! A job's `environment` ‹lib/gitlab/ci/config/entry/environment.rb›: its name (variables
//! expanded), URL and action, and the `CI_ENVIRONMENT_*` variables GitLab gives the job.
//! `on_stop` names the job that stops the environment and `auto_stop_in` when it stops by
//! itself (deployments and stops: `service::deployments`); `kubernetes` is refused by name.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value;
use sha2::{Digest, Sha256};

/// Keys GitLab allows under `environment` (`Entry::Environment::ALLOWED_KEYS`).
const ALLOWED_KEYS: &[&str] = &[
    "name",
    "url",
    "action",
    "on_stop",
    "auto_stop_in",
    "kubernetes",
    "deployment_tier",
];
/// Of those, the ones whose behaviour Runway does not have yet.
const NOT_YET: &[&str] = &["kubernetes"];
const ACTIONS: &[&str] = &["start", "stop", "prepare", "verify", "access"];
/// `Environment.tiers`.
pub const TIERS: &[&str] = &["production", "staging", "testing", "development", "other"];

/// A job's environment, its name and URL expanded when the pipeline was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub action: String,
    /// As written, or guessed from the name as GitLab guesses it.
    pub tier: String,
    /// `on_stop`: the job of the pipeline that stops the environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_stop: Option<String>,
    /// `auto_stop_in`, seconds after the deployment (`None`: never, or not given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_stop_in: Option<i64>,
}

/// Reads `environment` at `at` (`jobs:deploy:environment`), expanding `$VARS` in the
/// name and URL with `vars`. Errors are GitLab's words, or name what is not supported yet.
pub fn parse(
    value: &Value,
    at: &str,
    vars: &HashMap<String, String>,
) -> Result<Option<EnvironmentSpec>, String> {
    let mut on_stop = None;
    let mut auto_stop_in = None;
    let (name, url, action, tier) = match value {
        Value::Null => return Ok(None),
        Value::String(name) => (name.clone(), None, None, None),
        Value::Mapping(map) => {
            let keys: Vec<String> = map
                .keys()
                .map(|k| k.as_str().map_or_else(|| format!("{k:?}"), str::to_string))
                .collect();
            let unknown: Vec<&str> = keys
                .iter()
                .map(String::as_str)
                .filter(|k| !ALLOWED_KEYS.contains(k))
                .collect();
            if !unknown.is_empty() {
                return Err(format!(
                    "{at} config contains unknown keys: {}",
                    unknown.join(", ")
                ));
            }
            let not_yet: Vec<String> = keys
                .iter()
                .filter(|k| NOT_YET.contains(&k.as_str()))
                .map(|k| format!("environment:{k}"))
                .collect();
            if !not_yet.is_empty() {
                return Err(format!(
                    "{at} uses keywords Runway does not support yet: {}",
                    not_yet.join(", ")
                ));
            }
            let text = |key: &str| -> Result<Option<String>, String> {
                match map.get(key) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(s)) => Ok(Some(s.clone())),
                    Some(_) => Err(format!("{at} {key} should be a string")),
                }
            };
            let Some(name) = text("name")? else {
                return Err(format!("{at} name can't be blank"));
            };
            on_stop = text("on_stop")?;
            // `Entry::Environment`: a duration, or `never` (GitLab's `ChronicDuration`).
            if let Some(given) = text("auto_stop_in")? {
                let expanded = expand(&given, vars);
                if expanded != "never" {
                    auto_stop_in = Some(
                        super::duration::parse_seconds(&expanded)
                            .ok_or_else(|| format!("{at} auto stop in should be a duration"))?,
                    );
                }
            }
            (
                name,
                text("url")?,
                text("action")?,
                text("deployment_tier")?,
            )
        }
        _ => return Err(format!("{at} config should be a hash or a string")),
    };
    let name = expand(&name, vars);
    if name.is_empty() {
        return Err(format!("{at} name can't be blank"));
    }
    if name.chars().count() > 255 {
        return Err(format!("{at} name is too long (maximum is 255 characters)"));
    }
    // Checked after expansion.
    if !valid_name(&name) {
        return Err(format!(
            "{at} name can contain only letters, digits, '-', '_', '/', '$', '{{', '}}', '.', \
             and spaces, but it cannot start or end with '/'"
        ));
    }
    let action = action.unwrap_or_else(|| "start".into());
    if !ACTIONS.contains(&action.as_str()) {
        return Err(format!(
            "{at} action should be start, stop, prepare, verify, or access"
        ));
    }
    let tier = match tier {
        Some(tier) if TIERS.contains(&tier.as_str()) => tier,
        Some(_) => {
            return Err(format!(
                "{at} deployment_tier must be one of {}",
                TIERS.join(", ")
            ))
        }
        None => guess_tier(&name).to_string(),
    };
    let url = url.map(|u| expand(&u, vars)).filter(|u| !u.is_empty());
    if url.as_ref().is_some_and(|u| u.chars().count() > 255) {
        return Err(format!("{at} url is too long (maximum is 255 characters)"));
    }
    Ok(Some(EnvironmentSpec {
        name,
        url,
        action,
        tier,
        on_stop,
        auto_stop_in,
    }))
}

/// `Gitlab::Regex.environment_name_regex`, which resource group keys follow too: letters,
/// digits, `-_/${}.` and spaces, not starting or ending with `/` (the length is the
/// caller's check).
pub fn valid_name(name: &str) -> bool {
    let allowed = |c: char| c.is_ascii_alphanumeric() || " -_/${}.".contains(c);
    !name.is_empty() && name.chars().all(allowed) && !name.starts_with('/') && !name.ends_with('/')
}

/// `$VAR`, `${VAR}` and `%VAR%` replaced by their values, unknown ones by nothing
/// (`ExpandVariables.expand`).
pub fn expand(text: &str, vars: &HashMap<String, String>) -> String {
    expand_by(text, |name| vars.get(name).map(String::as_str))
}

/// The variables with the references in their values expanded, as
/// `Gitlab::Ci::Variables::Collection#sort_and_expand_all` does: each value after the
/// ones it names; a cycle leaves every value as written (GitLab reports it and expands
/// none). A value that would grow past 1 MiB stays as written.
pub fn expand_all(vars: &HashMap<String, String>) -> HashMap<String, String> {
    const MAX_VALUE: usize = 1024 * 1024;
    // Kahn's algorithm over "value of A names B" edges, B first.
    let mut names_of: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut waiting: HashMap<&str, usize> = HashMap::new();
    let mut needed_by: HashMap<&str, Vec<&str>> = HashMap::new();
    for (key, value) in vars {
        let mut names: Vec<&str> = Vec::new();
        let mut names_itself = false;
        expand_by(value, |name| {
            if let Some((known, _)) = vars.get_key_value(name) {
                if known == key {
                    names_itself = true;
                } else if !names.contains(&known.as_str()) {
                    names.push(known.as_str());
                }
            }
            None
        });
        if names_itself {
            // A cycle of one.
            return vars.clone();
        }
        waiting.insert(key, names.len());
        for name in &names {
            needed_by.entry(name).or_default().push(key);
        }
        names_of.insert(key, names);
    }
    let mut ready: Vec<&str> = waiting
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(k, _)| *k)
        .collect();
    let mut done: HashMap<String, String> = HashMap::with_capacity(vars.len());
    while let Some(key) = ready.pop() {
        let value = &vars[key];
        let expanded = expand_by(value, |name| {
            done.get(name)
                .map(String::as_str)
                .or_else(|| vars.get(name).map(String::as_str))
        });
        let expanded = if expanded.len() > MAX_VALUE {
            value.clone()
        } else {
            expanded
        };
        done.insert(key.to_string(), expanded);
        for dependant in needed_by.get(key).into_iter().flatten() {
            let left = waiting.get_mut(dependant).expect("counted");
            *left -= 1;
            if *left == 0 {
                ready.push(dependant);
            }
        }
    }
    if done.len() < vars.len() {
        return vars.clone();
    }
    done
}

/// `$VAR`, `${VAR}` and `%VAR%` replaced by their values, unknown ones kept as written
/// (`ExpandVariables.expand_existing`).
pub fn expand_existing(text: &str, vars: &HashMap<String, String>) -> String {
    expand_with(text, true, |name| vars.get(name).map(String::as_str))
}

/// [`expand_with`], unknown references replaced by nothing.
fn expand_by<'a>(text: &str, value: impl FnMut(&str) -> Option<&'a str>) -> String {
    expand_with(text, false, value)
}

/// References replaced by what `value` gives; one it has no value for is dropped, or
/// kept as written when `keep_unknown`.
fn expand_with<'a>(
    text: &str,
    keep_unknown: bool,
    mut value: impl FnMut(&str) -> Option<&'a str>,
) -> String {
    let mut out = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    let is_name = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    while i < bytes.len() {
        let (start, end, close) = match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => (i + 2, Some(b'}'), 1),
            b'$' => (i + 1, None, 0),
            b'%' => (i + 1, Some(b'%'), 1),
            _ => {
                let next = text[i..].chars().next().map_or(1, char::len_utf8);
                out.push_str(&text[i..i + next]);
                i += next;
                continue;
            }
        };
        let mut j = start;
        while j < bytes.len() && is_name(bytes[j]) {
            j += 1;
        }
        let closed = match end {
            Some(c) => bytes.get(j) == Some(&c),
            None => true,
        };
        if j == start || !closed {
            out.push(bytes[i] as char);
            i += 1;
            continue;
        }
        match value(&text[start..j]) {
            Some(found) => out.push_str(found),
            None if keep_unknown => out.push_str(&text[i..j + close]),
            None => {}
        }
        i = j + close;
    }
    out
}

/// `Environment#guess_tier`: from words in the name.
pub fn guess_tier(name: &str) -> &'static str {
    let name = name.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| name.contains(w));
    if has(&["dev", "review", "trunk"]) {
        "development"
    } else if has(&[
        "test", "tst", "int", "acpt", "accept", "qa", "qc", "control", "quality",
    ]) {
        "testing"
    } else if has(&["stg", "stag", "modl", "model", "pre", "demo", "non"]) {
        "staging"
    } else if has(&["prod", "prd", "live"]) {
        "production"
    } else {
        "other"
    }
}

/// `CI_ENVIRONMENT_SLUG` (`Gitlab::Slug::Environment`): lower case, other characters to
/// `-`, starting with a letter, at most 24 characters; a slug that is not the name itself
/// is cut to 17 and gets `-` and a suffix from the name's SHA-256 (its last 6 digits in
/// base 36).
pub fn slug(name: &str) -> String {
    let mut slug: String = name
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    if !slug.starts_with(|c: char| c.is_ascii_lowercase()) {
        slug.insert_str(0, "env-");
    }
    let mut squeezed = String::with_capacity(slug.len());
    for c in slug.chars() {
        if !(c == '-' && squeezed.ends_with('-')) {
            squeezed.push(c);
        }
    }
    if squeezed.len() > 24 || squeezed != name {
        let mut short: String = squeezed.chars().take(17).collect();
        if !short.ends_with('-') {
            short.push('-');
        }
        short.push_str(&suffix(name));
        short
    } else {
        squeezed.trim_end_matches('-').to_string()
    }
}

/// The last 6 base-36 digits of the name's SHA-256 read as a number.
fn suffix(name: &str) -> String {
    const MODULUS: u64 = 36u64.pow(6);
    let rest = Sha256::digest(name.as_bytes())
        .iter()
        .fold(0u64, |r, b| (r * 256 + u64::from(*b)) % MODULUS);
    let mut digits = Vec::with_capacity(6);
    let mut n = rest;
    for _ in 0..6 {
        let d = (n % 36) as u8;
        digits.push(if d < 10 { b'0' + d } else { b'a' + d - 10 });
        n /= 36;
    }
    digits.reverse();
    // Ruby's `to_s(36).last(6)` has no leading zeros only when the number is shorter,
    // which a 256-bit digest practically never is.
    String::from_utf8(digits).unwrap_or_default()
}

/// The variables GitLab gives a job with an environment.
pub fn variables(env: &EnvironmentSpec) -> Vec<(&'static str, String)> {
    let mut out = vec![
        ("CI_ENVIRONMENT_NAME", env.name.clone()),
        ("CI_ENVIRONMENT_SLUG", slug(&env.name)),
        ("CI_ENVIRONMENT_ACTION", env.action.clone()),
        ("CI_ENVIRONMENT_TIER", env.tier.clone()),
    ];
    if let Some(url) = &env.url {
        out.push(("CI_ENVIRONMENT_URL", url.clone()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Value {
        serde_yaml_ng::from_str(text).expect("yaml")
    }

    #[test]
    fn names_urls_and_actions() {
        let vars = HashMap::from([
            (
                "CI_COMMIT_REF_SLUG".to_string(),
                "feature-login".to_string(),
            ),
            ("DOMAIN".to_string(), "example.com".to_string()),
        ]);
        let env = |text: &str| parse(&yaml(text), "jobs:d:environment", &vars);
        assert_eq!(
            env("production").unwrap(),
            Some(EnvironmentSpec {
                name: "production".into(),
                url: None,
                action: "start".into(),
                tier: "production".into(),
                on_stop: None,
                auto_stop_in: None,
            })
        );
        assert_eq!(
            env("{name: 'review/$CI_COMMIT_REF_SLUG', url: 'https://${CI_COMMIT_REF_SLUG}.$DOMAIN', action: prepare}").unwrap(),
            Some(EnvironmentSpec {
                name: "review/feature-login".into(),
                url: Some("https://feature-login.example.com".into()),
                action: "prepare".into(),
                tier: "development".into(),
                on_stop: None,
                auto_stop_in: None,
            })
        );
        assert_eq!(
            env("{name: staging, deployment_tier: other}")
                .unwrap()
                .map(|e| e.tier),
            Some("other".into())
        );
        assert_eq!(env("~").unwrap(), None);
        let review = env("{name: review, on_stop: stop_review, auto_stop_in: 1 day}")
            .unwrap()
            .unwrap();
        assert_eq!(
            (review.on_stop.as_deref(), review.auto_stop_in),
            (Some("stop_review"), Some(86_400))
        );
        assert_eq!(
            env("{name: review, auto_stop_in: never}")
                .unwrap()
                .unwrap()
                .auto_stop_in,
            None
        );
        for (bad, message) in [
            ("{url: x}", "jobs:d:environment name can't be blank"),
            (
                "{name: a, action: deploy}",
                "jobs:d:environment action should be start, stop, prepare, verify, or access",
            ),
            (
                "{name: a, colour: red}",
                "jobs:d:environment config contains unknown keys: colour",
            ),
            (
                "{name: a, kubernetes: {namespace: x}}",
                "jobs:d:environment uses keywords Runway does not support yet: environment:kubernetes",
            ),
            (
                "{name: a, auto_stop_in: soon}",
                "jobs:d:environment auto stop in should be a duration",
            ),
            (
                "[a]",
                "jobs:d:environment config should be a hash or a string",
            ),
            ("/prod", "but it cannot start or end with '/'"),
            ("'a;b'", "name can contain only letters"),
            (
                "{name: a, deployment_tier: moon}",
                "deployment_tier must be one of",
            ),
        ] {
            let error = env(bad).unwrap_err();
            assert!(error.contains(message), "{bad}: {error}");
        }
    }

    #[test]
    fn expansion_as_gitlab_expands() {
        let vars = HashMap::from([("A".to_string(), "1".to_string())]);
        assert_eq!(
            expand("x-$A-${A}-%A%-$NOPE-$-${}-%%", &vars),
            "x-1-1-1--$-${}-%%"
        );
        assert_eq!(expand("é$A", &vars), "é1");
    }

    #[test]
    fn expand_all_expands_values_after_the_ones_they_name() {
        let vars: HashMap<String, String> = [
            ("NAME", "$KIND of ${BRANCH}"),
            ("KIND", "build"),
            ("BRANCH", "$CI_COMMIT_REF_NAME"),
            ("CI_COMMIT_REF_NAME", "main"),
            ("OTHER", "$UNKNOWN-x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let all = expand_all(&vars);
        assert_eq!(all["NAME"], "build of main");
        assert_eq!(all["BRANCH"], "main");
        assert_eq!(all["OTHER"], "-x");
        // A cycle leaves every value as written.
        let mut cyclic = vars.clone();
        cyclic.insert("CI_COMMIT_REF_NAME".into(), "$NAME".into());
        assert_eq!(expand_all(&cyclic), cyclic);
        let mut own = vars.clone();
        own.insert("KIND".into(), "$KIND!".into());
        assert_eq!(expand_all(&own), own);
    }

    #[test]
    fn slugs_as_gitlab_makes_them() {
        assert_eq!(slug("production"), "production");
        assert_eq!(slug("review"), "review");
        let changed = slug("review/feature-login");
        assert!(
            changed.starts_with("review-feature-lo-") && changed.len() == 24,
            "{changed}"
        );
        let capital = slug("Production");
        assert!(
            capital.starts_with("production-") && capital.len() == 17,
            "a changed name gets the suffix: {capital}"
        );
        assert!(slug("1st").starts_with("env-1st-"));
        assert_eq!(slug("review/feature-login"), changed, "stable");
        assert_ne!(slug("review/feature-logout"), changed);
    }

    #[test]
    fn tiers_are_guessed_from_the_name() {
        for (name, tier) in [
            ("production", "production"),
            ("live", "production"),
            ("staging", "staging"),
            ("pre-prod", "staging"),
            ("review/app", "development"),
            ("qa", "testing"),
            ("sandbox", "other"),
        ] {
            assert_eq!(guess_tier(name), tier, "{name}");
        }
    }
}
