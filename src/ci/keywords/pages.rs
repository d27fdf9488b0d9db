//! Plan step: `pages` and `publish` ‹entry/job.rb, entry/pages.rb›.

use serde_yaml_ng::Value;

use super::{err, Result};

/// Whether a job is a pages job, and its site's folder ‹entry/job.rb, entry/pages.rb›: a
/// job named `pages` (unless `pages: false`), or one with `pages: true` or a `pages:`
/// hash; the folder from `pages:publish`, else `publish`, else `public`.
pub(crate) fn pages_folder(
    name: &str,
    pages: Option<&Value>,
    publish: Option<&Value>,
    at: &dyn Fn(&str) -> String,
) -> Result<Option<String>> {
    let folder_of = |value: Option<&Value>, key: &str| -> Result<Option<String>> {
        match value {
            None => Ok(None),
            Some(Value::String(s)) if !s.trim().is_empty() => {
                Ok(Some(s.trim().trim_matches('/').to_string()))
            }
            Some(_) => err(format!("{} config should be a string", at(key))),
        }
    };
    let publish = folder_of(publish, "publish")?;
    let (is_pages, from_pages) = match pages {
        None => (name == "pages", None),
        Some(Value::Bool(b)) => (*b, None),
        Some(Value::Mapping(map)) => {
            for key in map.keys().filter_map(Value::as_str) {
                match key {
                    "publish" => {}
                    "path_prefix" | "expire_in" => {
                        return err(format!(
                            "jobs:{name} uses keywords Runway does not support yet: pages:{key}"
                        ))
                    }
                    other => {
                        return err(format!(
                            "{} config contains unknown keys: {other}",
                            at("pages")
                        ))
                    }
                }
            }
            (true, folder_of(map.get("publish"), "pages:publish")?)
        }
        Some(_) => {
            return err(format!(
                "{} config should be a boolean or a hash",
                at("pages")
            ))
        }
    };
    Ok(is_pages.then(|| from_pages.or(publish).unwrap_or_else(|| "public".into())))
}

#[cfg(test)]
mod tests {
    use super::super::yaml;
    use super::*;

    fn folder(name: &str, pages: Option<&str>, publish: Option<&str>) -> Result<Option<String>> {
        let at = |key: &str| format!("jobs:{name}:{key}");
        pages_folder(
            name,
            pages.map(yaml).as_ref(),
            publish.map(yaml).as_ref(),
            &at,
        )
    }

    #[test]
    fn by_name_by_keyword_and_the_folder() {
        assert_eq!(
            folder("pages", None, None).unwrap().as_deref(),
            Some("public")
        );
        assert_eq!(folder("pages", Some("false"), None).unwrap(), None);
        assert_eq!(folder("site", None, Some("dist")).unwrap(), None);
        assert_eq!(
            folder("site", Some("true"), Some("dist"))
                .unwrap()
                .as_deref(),
            Some("dist")
        );
        assert_eq!(
            folder("site", Some("{publish: /build/}"), Some("dist"))
                .unwrap()
                .as_deref(),
            Some("build")
        );
        assert_eq!(
            folder("site", Some("{expire_in: 1d}"), None).unwrap_err().0,
            "jobs:site uses keywords Runway does not support yet: pages:expire_in"
        );
        assert_eq!(
            folder("site", Some("1"), None).unwrap_err().0,
            "jobs:site:pages config should be a boolean or a hash"
        );
        assert_eq!(
            folder("pages", None, Some("' '")).unwrap_err().0,
            "jobs:pages:publish config should be a string"
        );
    }
}
