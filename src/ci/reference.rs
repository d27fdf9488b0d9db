//! `!reference [.job, key, …]` ‹lib/gitlab/ci/config/yaml/tags/reference.rb›: replaced by
//! the value at that path of the configuration (after `include`), itself resolved, as
//! GitLab's tag resolver does before anything else reads the file. A list that lands in
//! a list (`script`, `rules`) is flattened where the keyword flattens.

use serde_yaml_ng::{Mapping, Value};

use super::config::ConfigError;

/// How many `!reference`s may lead through one another; past it the chain is refused
/// (GitLab finds cycles; this also bounds the work of a long non-circular chain).
const MAX_CHAIN: usize = 10;

/// The most values the resolved configuration may hold: references copying lists of
/// references could otherwise multiply a small file into billions of values (as YAML
/// aliases could, which the parser bounds the same way).
const MAX_VALUES: usize = 1_000_000;

/// `root` with every `!reference` replaced.
pub fn resolve(root: &Mapping) -> Result<Mapping, ConfigError> {
    let mut out = Mapping::new();
    let mut budget = MAX_VALUES;
    for (key, value) in root {
        out.insert(
            key.clone(),
            resolve_value(value, root, &mut Vec::new(), &mut budget)?,
        );
    }
    Ok(out)
}

/// Ruby's `Array#inspect` of the path, as GitLab's messages print it.
fn inspect(path: &[String]) -> String {
    let quoted: Vec<String> = path.iter().map(|p| format!("{p:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

fn resolve_value(
    value: &Value,
    root: &Mapping,
    chain: &mut Vec<Vec<String>>,
    budget: &mut usize,
) -> Result<Value, ConfigError> {
    *budget = budget
        .checked_sub(1)
        .ok_or_else(|| ConfigError(super::load::TOO_BIG.into()))?;
    match value {
        Value::Tagged(tagged) if tagged.tag == "reference" => {
            let path: Option<Vec<String>> = match &tagged.value {
                Value::Sequence(items) if !items.is_empty() => items
                    .iter()
                    .map(|i| i.as_str().map(str::to_string))
                    .collect(),
                _ => None,
            };
            let Some(path) = path else {
                return Err(ConfigError(format!(
                    "!reference {} is not valid",
                    serde_yaml_ng::to_string(&tagged.value)
                        .unwrap_or_default()
                        .trim()
                )));
            };
            if chain.contains(&path) {
                return Err(ConfigError(format!(
                    "!reference {} is part of a circular chain",
                    inspect(&path)
                )));
            }
            if chain.len() >= MAX_CHAIN {
                return Err(ConfigError(format!(
                    "!reference {} is nested too deeply",
                    inspect(&path)
                )));
            }
            let mut found: Option<&Value> = None;
            let mut at = root;
            for (i, part) in path.iter().enumerate() {
                let next = at.get(part.as_str());
                if i + 1 == path.len() {
                    found = next;
                } else {
                    match next {
                        Some(Value::Mapping(m)) => at = m,
                        _ => break,
                    }
                }
            }
            let Some(found) = found.filter(|v| !v.is_null()) else {
                return Err(ConfigError(format!(
                    "!reference {} could not be found",
                    inspect(&path)
                )));
            };
            chain.push(path);
            let resolved = resolve_value(found, root, chain, budget);
            chain.pop();
            resolved
        }
        Value::Sequence(items) => items
            .iter()
            .map(|v| resolve_value(v, root, chain, budget))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Sequence),
        Value::Mapping(map) => {
            let mut out = Mapping::new();
            for (k, v) in map {
                out.insert(k.clone(), resolve_value(v, root, chain, budget)?);
            }
            Ok(Value::Mapping(out))
        }
        other => Ok(other.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(text: &str) -> Result<Mapping, String> {
        let root: Mapping = serde_yaml_ng::from_str(text).expect("yaml");
        resolve(&root).map_err(|e| e.0)
    }

    #[test]
    fn references_are_replaced_by_what_they_name() {
        let out = resolved(
            ".setup:\n  script: [echo one, echo two]\n  vars: { A: a }\n\
             .more:\n  script: [!reference [.setup, script], echo three]\n\
             job:\n  script: [!reference [.more, script], echo four]\n  variables: !reference [.setup, vars]\n",
        )
        .expect("resolves");
        let expected: Mapping = serde_yaml_ng::from_str(
            ".setup:\n  script: [echo one, echo two]\n  vars: { A: a }\n\
             .more:\n  script: [[echo one, echo two], echo three]\n\
             job:\n  script: [[[echo one, echo two], echo three], echo four]\n  variables: { A: a }\n",
        )
        .expect("yaml");
        assert_eq!(out, expected);
    }

    #[test]
    fn gitlabs_messages() {
        assert_eq!(
            resolved("a:\n  script: [!reference [.nope, script]]\n").unwrap_err(),
            "!reference [\".nope\", \"script\"] could not be found"
        );
        assert_eq!(
            resolved("job-1:\n  script: [!reference [job-2, script]]\njob-2:\n  script: [!reference [job-1, script]]\n").unwrap_err(),
            "!reference [\"job-2\", \"script\"] is part of a circular chain"
        );
        assert!(resolved("a:\n  script: !reference [1]\n")
            .unwrap_err()
            .ends_with("is not valid"));
        let mut chain = String::from(".r0: { script: [x] }\n");
        for i in 1..=12 {
            chain.push_str(&format!(
                ".r{i}: {{ script: [!reference [.r{}, script]] }}\n",
                i - 1
            ));
        }
        assert!(resolved(&chain)
            .unwrap_err()
            .ends_with("is nested too deeply"));
        // References that multiply: 10 levels of 10 copies would be 10^10 values.
        let mut laughs = String::from(".l0: [x]\n");
        for i in 1..=10 {
            let copies = vec![format!("!reference [.l{}]", i - 1); 10].join(", ");
            laughs.push_str(&format!(".l{i}: [{copies}]\n"));
        }
        assert_eq!(resolved(&laughs).unwrap_err(), "The parsed YAML is too big");
    }
}
