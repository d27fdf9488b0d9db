//! `runway lint [FILE]`: checks a `.gitlab-ci.yml` on this machine, without a server, as
//! a pipeline on `--ref` would read it (`include:local` files come from the file's folder
//! and below). Exit 0 when valid, 1 when not (the errors on standard error), 3 when the
//! file cannot be read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::ci::config::{plan_with, RuleScope};
use crate::ci::include::FileSource;

/// Arguments of `runway lint`.
#[derive(Debug, clap::Args)]
pub struct LintArgs {
    /// The file (default: `.gitlab-ci.yml` in the current folder).
    pub file: Option<PathBuf>,
    /// The branch the pipeline would run on.
    #[arg(long = "ref", default_value = "main")]
    pub ref_: String,
    /// The pipeline's source (`push`, `web`, `schedule`, …), for rules that read it.
    #[arg(long, default_value = "push")]
    pub source: String,
    /// The project's default branch (`CI_DEFAULT_BRANCH`).
    #[arg(long, default_value = "main")]
    pub default_branch: String,
    /// Print the jobs the pipeline would have.
    #[arg(long)]
    pub jobs: bool,
}

/// The files under a folder, as `include:local` reads a commit's.
struct Folder {
    root: PathBuf,
}

/// At most this many files are listed for wildcards and `exists`.
const MAX_FILES: usize = 100_000;

impl FileSource for Folder {
    fn read(&self, path: &str) -> Result<Option<String>, String> {
        let file = self.root.join(path);
        match std::fs::metadata(&file) {
            Ok(meta) if meta.is_file() => {
                if meta.len() > crate::ci::load::MAX_YAML_BYTES as u64 {
                    return Err(crate::ci::load::TOO_BIG.into());
                }
                std::fs::read_to_string(&file)
                    .map(Some)
                    .map_err(|e| format!("{path}: {e}"))
            }
            _ => Ok(None),
        }
    }

    /// `rules:changes:compare_to` in a git checkout: the paths changed between the merge
    /// base of `base` and `HEAD` (as a pipeline on `HEAD`'s commit reads them). Outside a
    /// checkout, changes hold, as for a pipeline without a diff.
    fn changed_since(&self, base: &str) -> Result<Option<Vec<String>>, String> {
        if !self.root.join(".git").exists() {
            return Ok(None);
        }
        let range = format!("{base}...HEAD");
        match crate::service::repos::diff_names(&self.root, &[&range])
            .map_err(|e| format!("git: {e}"))?
        {
            None => Err(crate::service::repos::COMPARE_TO_INVALID.into()),
            changed => Ok(changed),
        }
    }

    /// Other projects live on a Runway server: its CI Lint reads them.
    fn project(&self, path: &str, _ref: Option<&str>) -> Result<Box<dyn FileSource>, String> {
        Err(format!(
            "include:project `{path}` is read from a Runway server: check this file with its CI Lint API (POST /api/v4/projects/:id/ci/lint)"
        ))
    }

    fn paths(&self) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        let mut folders = vec![self.root.clone()];
        while let Some(folder) = folders.pop() {
            let entries = std::fs::read_dir(&folder).map_err(|e| e.to_string())?;
            for entry in entries.flatten() {
                let path = entry.path();
                if entry.file_name() == ".git" {
                    continue;
                }
                if path.is_dir() {
                    folders.push(path);
                } else if let Ok(relative) = path.strip_prefix(&self.root) {
                    out.push(relative.to_string_lossy().replace('\\', "/"));
                    if out.len() >= MAX_FILES {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Runs the check; answers the exit code.
pub fn run(args: &LintArgs) -> i32 {
    let file = args
        .file
        .clone()
        .unwrap_or_else(|| PathBuf::from(".gitlab-ci.yml"));
    let text = match std::fs::metadata(&file) {
        Ok(meta) if meta.len() > crate::ci::load::MAX_YAML_BYTES as u64 => {
            eprintln!("{}: {}", file.display(), crate::ci::load::TOO_BIG);
            return 1;
        }
        _ => match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                return super::exit::ERROR;
            }
        },
    };
    let root = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| Path::new(".").to_path_buf(), Path::to_path_buf);
    let scope = RuleScope {
        predefined: HashMap::from([
            ("CI".to_string(), "true".to_string()),
            ("GITLAB_CI".to_string(), "true".to_string()),
            ("CI_PIPELINE_SOURCE".to_string(), args.source.clone()),
            ("CI_DEFAULT_BRANCH".to_string(), args.default_branch.clone()),
            (
                "CI_COMMIT_REF_PROTECTED".to_string(),
                (args.ref_ == args.default_branch).to_string(),
            ),
            ("CI_COMMIT_REF_NAME".to_string(), args.ref_.clone()),
            ("CI_COMMIT_BRANCH".to_string(), args.ref_.clone()),
            (
                "CI_COMMIT_REF_SLUG".to_string(),
                crate::api::runner::payload::slug(&args.ref_),
            ),
        ]),
        ..Default::default()
    };
    match plan_with(&text, &scope, None, &Folder { root }) {
        Ok(plan) => {
            let used = plan
                .stages
                .iter()
                .filter(|s| plan.jobs.iter().any(|j| &j.stage == *s))
                .count();
            println!(
                "{}: valid ({} jobs in {used} stages)",
                file.display(),
                plan.jobs.len(),
            );
            if args.jobs {
                for job in &plan.jobs {
                    let mut facts = vec![job.stage.clone(), job.when.as_str().to_string()];
                    if job.allow_failure {
                        facts.push("allow_failure".into());
                    }
                    if let Some(needs) = &job.spec.needs {
                        let names: Vec<&str> = needs.iter().map(|n| n.job.as_str()).collect();
                        facts.push(format!("needs: [{}]", names.join(", ")));
                    }
                    println!("  {} ({})", job.name, facts.join(", "));
                }
            }
            super::exit::SUCCESS
        }
        Err(e) => {
            let lines = crate::ci::load::key_lines(&text);
            for message in e.0.split("; ") {
                match line_of(message, &lines) {
                    Some(line) => eprintln!("{}:{line}: invalid: {message}", file.display()),
                    None => eprintln!("{}: invalid: {message}", file.display()),
                }
            }
            super::exit::FAILED
        }
    }
}

/// The line of the job or keyword an error message is about (`jobs:<name> …`,
/// `<keyword> …`, or a syntax error's `at line N`), when the file itself holds it.
fn line_of(message: &str, lines: &HashMap<String, usize>) -> Option<usize> {
    if let Some((_, at)) = message.rsplit_once(" at line ") {
        return at.split_whitespace().next()?.parse().ok();
    }
    let about = message.strip_prefix("jobs:").unwrap_or(message);
    // The longest key the message starts with: job names may hold `:`.
    lines
        .iter()
        .filter(|(key, _)| {
            about.starts_with(key.as_str()) && about[key.len()..].starts_with([' ', ':'])
        })
        .max_by_key(|(key, _)| key.len())
        .map(|(_, line)| *line)
}
