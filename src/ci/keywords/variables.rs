//! Plan step: `variables` ‹entry/variables.rb, entry/variable.rb›, a job's, the file's,
//! a rule's, a service's.

use serde_yaml_ng::Value;

use super::{err, key_str, Result};
use crate::ci::config::{ConfigError, Variable};

pub(crate) fn variables_of(value: Option<&Value>, what: &str) -> Result<Vec<Variable>> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let Value::Mapping(map) = value else {
        return err(format!("{what} config should be a hash of key value pairs"));
    };
    let mut out = Vec::new();
    for (k, v) in map {
        let key = key_str(k)?;
        // `Entry::Variable`: a value is a string or an integer (`AlphanumericValidator`:
        // YAML 1.1's `yes`, `3.10` or an empty value are refused), or a hash whose
        // `value` is one.
        let refused = || {
            ConfigError(format!(
                "{what}:{key} variable definition must be either a string or a hash"
            ))
        };
        let value = match v {
            Value::Mapping(m) => match m.get("value") {
                None => String::new(),
                Some(value) => alphanumeric(value).ok_or_else(refused)?,
            },
            other => alphanumeric(other).ok_or_else(refused)?,
        };
        out.push(Variable { key, value });
    }
    Ok(out)
}

/// A string or an integer, as text: what GitLab's `AlphanumericValidator` accepts.
pub(crate) fn alphanumeric(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

pub(crate) fn upsert_var(vars: &mut Vec<Variable>, v: Variable) {
    match vars.iter_mut().find(|x| x.key == v.key) {
        Some(existing) => existing.value = v.value,
        None => vars.push(v),
    }
}

#[cfg(test)]
mod tests {
    use super::super::yaml;
    use super::*;

    fn var(key: &str, value: &str) -> Variable {
        Variable {
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn values_are_strings_integers_or_hashes_with_one() {
        let read = variables_of(
            Some(&yaml("{A: a, B: 2, C: {value: c}, D: {}}")),
            "variables",
        );
        assert_eq!(
            read.unwrap(),
            [var("A", "a"), var("B", "2"), var("C", "c"), var("D", "")]
        );
        assert_eq!(variables_of(None, "variables").unwrap(), []);
        for refused in ["{A: true}", "{A: 3.10}", "{A: }", "{A: {value: [x]}}"] {
            assert_eq!(
                variables_of(Some(&yaml(refused)), "jobs:j:variables")
                    .unwrap_err()
                    .0,
                "jobs:j:variables:A variable definition must be either a string or a hash",
                "{refused}"
            );
        }
        assert_eq!(
            variables_of(Some(&yaml("[A]")), "variables").unwrap_err().0,
            "variables config should be a hash of key value pairs"
        );
    }

    #[test]
    fn upsert_replaces_in_place_or_appends() {
        let mut vars = vec![var("A", "1"), var("B", "2")];
        upsert_var(&mut vars, var("A", "3"));
        upsert_var(&mut vars, var("C", "4"));
        assert_eq!(vars, [var("A", "3"), var("B", "2"), var("C", "4")]);
    }
}
