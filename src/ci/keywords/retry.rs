//! Plan step: `retry` ‹entry/retry.rb›.

use serde_yaml_ng::Value;

use super::{err, int_list, key_str, string_list, Result};
use crate::ci::config::{ConfigError, RetrySpec};

pub(crate) fn retry_spec(value: &Value, at: &str) -> Result<RetrySpec> {
    let max = |v: &Value| -> Result<i64> {
        v.as_i64()
            .filter(|n| (0..=2).contains(n))
            .ok_or_else(|| ConfigError(format!("{at} config should be an integer between 0 and 2")))
    };
    match value {
        Value::Number(_) => Ok(RetrySpec {
            max: max(value)?,
            ..Default::default()
        }),
        Value::Mapping(m) => {
            let mut spec = RetrySpec::default();
            for (k, v) in m {
                let k = key_str(k)?;
                match k.as_str() {
                    "max" => spec.max = max(v)?,
                    "when" => {
                        spec.when = string_list(v).ok_or_else(|| {
                            ConfigError(format!("{at}:when config should be an array of strings"))
                        })?
                    }
                    "exit_codes" => {
                        spec.exit_codes = int_list(v).ok_or_else(|| {
                            ConfigError(format!(
                                "{at}:exit_codes config should be an array of integers"
                            ))
                        })?
                    }
                    other => return err(format!("{at} config contains unknown keys: {other}")),
                }
            }
            Ok(spec)
        }
        _ => err(format!("{at} config should be an integer or a hash")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::yaml;
    use super::*;

    #[test]
    fn a_count_or_a_hash() {
        assert_eq!(retry_spec(&yaml("2"), "r").unwrap().max, 2);
        let spec = retry_spec(
            &yaml("{max: 1, when: script_failure, exit_codes: 137}"),
            "r",
        )
        .unwrap();
        assert_eq!(
            spec,
            RetrySpec {
                max: 1,
                when: vec!["script_failure".into()],
                exit_codes: vec![137]
            }
        );
        let refused = |text: &str| retry_spec(&yaml(text), "r").unwrap_err().0;
        assert_eq!(
            refused("3"),
            "r config should be an integer between 0 and 2"
        );
        assert_eq!(
            refused("{max: 1, nope: 1}"),
            "r config contains unknown keys: nope"
        );
        assert_eq!(refused("always"), "r config should be an integer or a hash");
    }
}
