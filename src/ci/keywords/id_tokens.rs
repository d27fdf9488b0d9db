//! Plan step: `id_tokens` ‹entry/id_token.rb›: the ID tokens a job gets, each a variable
//! named by its key holding a JWT for the audiences of its `aud`.

use serde_yaml_ng::Value;

use super::{err, key_str, scalar, Result};
use crate::ci::config::IdTokenSpec;

/// Runway's bounds (GitLab sets none): each token is an RSA signature when a runner takes
/// the job, so a file cannot make one job cost thousands of them.
const MAX_TOKENS: usize = 20;
const MAX_AUDIENCES: usize = 20;

pub(crate) fn id_tokens_spec(value: &Value, at: &str) -> Result<Vec<IdTokenSpec>> {
    let Value::Mapping(m) = value else {
        return err(format!("{at} config should be a hash"));
    };
    if m.len() > MAX_TOKENS {
        return err(format!(
            "{at} config has too many entries (maximum is {MAX_TOKENS})"
        ));
    }
    let mut tokens = Vec::new();
    for (k, v) in m {
        let name = key_str(k)?;
        let here = format!("{at}:{name}");
        let Value::Mapping(token) = v else {
            return err(format!("{here} config should be a hash"));
        };
        for (tk, _) in token {
            let tk = key_str(tk)?;
            if tk != "aud" {
                return err(format!("{here} config contains unknown keys: {tk}"));
            }
        }
        // `Entry::IdToken`: `aud` is required, a string or an array of strings.
        let aud = match token.get("aud") {
            None => return err(format!("{here} config missing required keys: aud")),
            Some(Value::Sequence(items)) if !items.is_empty() => items
                .iter()
                .map(|i| i.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>(),
            Some(Value::Sequence(_)) => None,
            Some(other @ Value::String(_)) => scalar(other).map(|a| vec![a]),
            Some(_) => None,
        };
        let Some(aud) = aud else {
            return err(format!(
                "{here} aud should be an array of strings or a string"
            ));
        };
        if aud.len() > MAX_AUDIENCES {
            return err(format!(
                "{here} aud is too long (maximum is {MAX_AUDIENCES})"
            ));
        }
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || name.is_empty() {
            return err(format!("{here} config is not a valid variable name"));
        }
        tokens.push(IdTokenSpec { name, aud });
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::super::yaml;
    use super::*;

    #[test]
    fn audiences_and_refusals() {
        let tokens = id_tokens_spec(
            &yaml("{VAULT_ID_TOKEN: {aud: https://vault.example.com}, AWS: {aud: [sts.amazonaws.com, b]}}"),
            "jobs:j:id_tokens",
        )
        .unwrap();
        assert_eq!(tokens[0].name, "VAULT_ID_TOKEN");
        assert_eq!(tokens[0].aud, ["https://vault.example.com"]);
        assert_eq!(tokens[1].aud, ["sts.amazonaws.com", "b"]);
        let refused = |text: &str| {
            id_tokens_spec(&yaml(text), "jobs:j:id_tokens")
                .unwrap_err()
                .0
        };
        assert_eq!(
            refused("{T: {}}"),
            "jobs:j:id_tokens:T config missing required keys: aud"
        );
        assert_eq!(
            refused("{T: {aud: {a: b}}}"),
            "jobs:j:id_tokens:T aud should be an array of strings or a string"
        );
        assert_eq!(
            refused("{T: {aud: x, iss: y}}"),
            "jobs:j:id_tokens:T config contains unknown keys: iss"
        );
        assert_eq!(refused("[x]"), "jobs:j:id_tokens config should be a hash");
        let many: Vec<String> = (0..21).map(|i| format!("T{i}: {{aud: a}}")).collect();
        assert_eq!(
            refused(&format!("{{{}}}", many.join(", "))),
            "jobs:j:id_tokens config has too many entries (maximum is 20)"
        );
        let audiences: Vec<String> = (0..21).map(|i| format!("a{i}")).collect();
        assert_eq!(
            refused(&format!("{{T: {{aud: [{}]}}}}", audiences.join(", "))),
            "jobs:j:id_tokens:T aud is too long (maximum is 20)"
        );
    }
}
