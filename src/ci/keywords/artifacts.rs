//! Plan step: `artifacts` ‹entry/artifacts.rb, entry/reports.rb›.

use serde_yaml_ng::Value;

use super::{boolean, choice, err, key_str, scalar, string_list, Result};
use crate::ci::config::{ArtifactsSpec, ConfigError, Report};
use crate::ci::duration::parse_seconds;

/// `artifacts:reports` types and the format and file name GitLab sends for each
/// ‹app/models/concerns/enums/ci/job_artifact.rb›.
pub(crate) const REPORT_TYPES: &[(&str, &str, &str)] = &[
    ("junit", "gzip", "junit.xml"),
    ("dotenv", "gzip", ".env"),
    ("cobertura", "gzip", "cobertura-coverage.xml"),
    ("jacoco", "gzip", "jacoco.xml"),
    ("coverage_report", "gzip", "coverage_report.xml"),
    ("codequality", "raw", "gl-code-quality-report.json"),
    ("sast", "raw", "gl-sast-report.json"),
    ("secret_detection", "raw", "gl-secret-detection-report.json"),
    (
        "dependency_scanning",
        "raw",
        "gl-dependency-scanning-report.json",
    ),
    (
        "container_scanning",
        "raw",
        "gl-container-scanning-report.json",
    ),
    ("dast", "raw", "gl-dast-report.json"),
    ("license_scanning", "raw", "gl-license-scanning-report.json"),
    ("performance", "raw", "performance.json"),
    ("browser_performance", "raw", "browser-performance.json"),
    ("load_performance", "raw", "load-performance.json"),
    ("metrics", "gzip", "metrics.txt"),
    ("terraform", "raw", "tfplan.json"),
    ("accessibility", "raw", "gl-accessibility.json"),
    ("requirements", "raw", "requirements.json"),
    ("api_fuzzing", "raw", "gl-api-fuzzing-report.json"),
    ("coverage_fuzzing", "raw", "gl-coverage-fuzzing.json"),
    ("cyclonedx", "gzip", "gl-sbom.cdx.json"),
    ("annotations", "gzip", "gl-annotations.json"),
    ("repository_xray", "gzip", "gl-repository-xray.json"),
];

pub(crate) const ARTIFACT_WHEN: &[&str] = &["on_success", "on_failure", "always"];

pub(crate) fn artifacts_spec(value: &Value, at: &str) -> Result<ArtifactsSpec> {
    let Value::Mapping(m) = value else {
        return err(format!("{at} config should be a hash"));
    };
    let mut spec = ArtifactsSpec {
        when: "on_success".into(),
        ..Default::default()
    };
    for (k, v) in m {
        let k = key_str(k)?;
        let list = || {
            string_list(v).ok_or_else(|| {
                ConfigError(format!("{at}:{k} config should be an array of strings"))
            })
        };
        match k.as_str() {
            "paths" => spec.paths = list()?,
            "exclude" => spec.exclude = list()?,
            "name" => spec.name = scalar(v),
            "untracked" => spec.untracked = boolean(v, at, "untracked")?,
            "when" => spec.when = choice(v, at, "when", ARTIFACT_WHEN)?,
            "expire_in" => {
                let text = scalar(v).unwrap_or_default();
                if text != "never" && parse_seconds(&text).is_none() {
                    return err(format!("{at}:expire_in config should be a duration"));
                }
                spec.expire_in = Some(text);
            }
            "reports" => {
                let Value::Mapping(reports) = v else {
                    return err(format!("{at}:reports config should be a hash"));
                };
                for (rk, rv) in reports {
                    let mut rk = key_str(rk)?;
                    // `coverage_report: { coverage_format, path }`: GitLab's runner payload
                    // names the artifact by its format (`Ci::BuildRunnerPresenter`).
                    let mut rv = rv.clone();
                    if rk == "coverage_report" {
                        let Value::Mapping(report) = &rv else {
                            return err(format!(
                                "{at}:reports:coverage_report config should be a hash"
                            ));
                        };
                        let format = report
                            .get("coverage_format")
                            .and_then(Value::as_str)
                            .map(str::to_string);
                        let path = report
                            .get("path")
                            .and_then(Value::as_str)
                            .map(str::to_string);
                        let (Some(format), Some(path)) =
                            (format.filter(|f| f == "cobertura" || f == "jacoco"), path)
                        else {
                            return err(format!(
                                "{at}:reports:coverage_report config should be a hash with coverage_format (cobertura or jacoco) and path"
                            ));
                        };
                        rv = Value::from(vec![Value::from(path)]);
                        rk = format;
                    }
                    let Some((_, format, file)) = REPORT_TYPES.iter().find(|(t, _, _)| *t == rk)
                    else {
                        return err(format!("{at}:reports config contains unknown keys: {rk}"));
                    };
                    let paths = string_list(&rv).ok_or_else(|| {
                        ConfigError(format!(
                            "{at}:reports:{rk} config should be an array of strings"
                        ))
                    })?;
                    spec.reports.push(Report {
                        artifact_type: rk.clone(),
                        artifact_format: format.to_string(),
                        name: file.to_string(),
                        paths,
                    });
                }
            }
            "expose_as" => {
                let Some(name) = v.as_str() else {
                    return err(format!("{at} expose as should be a string"));
                };
                // `EXPOSE_AS_REGEX` and `Ci::JobArtifact::MAX_EXPOSED_AS_LENGTH`.
                let mut chars = name.chars();
                let shaped = chars
                    .next()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_')
                    && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | ' '));
                if !shaped {
                    return err(format!(
                        "{at} expose as can contain only letters, digits, '-', '_' and spaces"
                    ));
                }
                if name.chars().count() > 100 {
                    return err(format!(
                        "{at} expose as is too long (maximum is 100 characters)"
                    ));
                }
                spec.expose_as = Some(name.to_string());
            }
            "public" => {
                let public = boolean(v, at, "public")?;
                // `Ci::Build#artifact_access_setting_in_config`: public is `all`, private
                // is `developer`.
                spec.access = Some(if public { "all" } else { "developer" }.to_string());
            }
            "access" => spec.access = Some(choice(v, at, "access", ARTIFACT_ACCESS)?),
            other => return err(format!("{at} config contains unknown keys: {other}")),
        }
    }
    // `validates :config, mutually_exclusive_keys: %i[access public]`, in the file's order.
    let both: Vec<&str> = m
        .keys()
        .filter_map(Value::as_str)
        .filter(|k| matches!(*k, "access" | "public"))
        .collect();
    if both.len() == 2 {
        return err(format!(
            "{at} these keys cannot be used together: {}",
            both.join(", ")
        ));
    }
    if spec.expose_as.is_some() {
        // `validates :paths, presence: true, if: :expose_as_present?`, and no glob in them.
        if spec.paths.is_empty() {
            return err(format!("{at} paths can't be blank"));
        }
        if spec.paths.iter().any(|p| p.contains('*')) {
            return err(format!(
                "{at} paths can't contain '*' when used with 'expose_as'"
            ));
        }
    }
    Ok(spec)
}

/// `Entry::Artifacts::ALLOWED_ACCESS`: who may download the job's artifacts.
pub(crate) const ARTIFACT_ACCESS: &[&str] = &["none", "developer", "maintainer", "all"];

#[cfg(test)]
mod tests {
    use super::super::yaml;
    use super::*;

    #[test]
    fn paths_when_and_reports() {
        let spec = artifacts_spec(
            &yaml("{paths: [out/], when: always, expire_in: never, reports: {junit: a.xml, coverage_report: {coverage_format: jacoco, path: j.xml}}}"),
            "a",
        )
        .unwrap();
        assert_eq!(spec.paths, ["out/"]);
        assert_eq!(spec.when, "always");
        assert_eq!(spec.expire_in.as_deref(), Some("never"));
        let reports: Vec<(&str, &str, &str)> = spec
            .reports
            .iter()
            .map(|r| {
                (
                    r.artifact_type.as_str(),
                    r.artifact_format.as_str(),
                    r.name.as_str(),
                )
            })
            .collect();
        assert_eq!(
            reports,
            [
                ("junit", "gzip", "junit.xml"),
                ("jacoco", "gzip", "jacoco.xml")
            ]
        );
        assert_eq!(spec.reports[1].paths, ["j.xml"]);
        assert_eq!(artifacts_spec(&yaml("{}"), "a").unwrap().when, "on_success");
    }

    #[test]
    fn refusals() {
        let refused = |text: &str| {
            artifacts_spec(&yaml(text), "jobs:j:artifacts")
                .unwrap_err()
                .0
        };
        assert_eq!(
            refused("{expire_in: soon}"),
            "jobs:j:artifacts:expire_in config should be a duration"
        );
        assert_eq!(
            refused("{reports: {nope: x}}"),
            "jobs:j:artifacts:reports config contains unknown keys: nope"
        );
        assert_eq!(
            refused("{expose_as: x}"),
            "jobs:j:artifacts paths can't be blank"
        );
        assert_eq!(
            refused("{expose_as: 'a/b', paths: [x]}"),
            "jobs:j:artifacts expose as can contain only letters, digits, '-', '_' and spaces"
        );
        assert_eq!(
            refused("{expose_as: x, paths: ['*.txt']}"),
            "jobs:j:artifacts paths can't contain '*' when used with 'expose_as'"
        );
        assert_eq!(
            refused("{public: false, access: none}"),
            "jobs:j:artifacts these keys cannot be used together: public, access"
        );
        assert_eq!(
            refused("{access: some}"),
            "jobs:j:artifacts:access config should be none, developer, maintainer, all"
        );
        let spec = artifacts_spec(
            &yaml("{expose_as: Coverage report, paths: [c/], public: false}"),
            "a",
        )
        .unwrap();
        assert_eq!(spec.expose_as.as_deref(), Some("Coverage report"));
        assert_eq!(spec.access.as_deref(), Some("developer"));
        assert_eq!(
            refused("{when: never}"),
            "jobs:j:artifacts:when config should be on_success, on_failure, always"
        );
    }
}
