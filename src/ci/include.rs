//! `include` ‹lib/gitlab/ci/config/external/›: files of the pipeline's own commit merged
//! into the configuration before anything else reads it.
//!
//! - `include: path`, a list of paths and hashes, or a hash; `local:` paths from the
//!   repository's root (a leading `/` allowed), with wildcards (`*` within a folder, `**`
//!   across folders); nested includes; `rules` (`if`, `exists`, `changes`, `when`).
//! - Merge order as GitLab's: a file's includes first, in order (a later one wins), then
//!   the file itself on top; hashes merge deeply, anything else is replaced.
//! - Limits: GitLab's 150 includes (`Maximum of 150 nested includes are allowed!`), each
//!   file within the loader's size and depth limits, 16 MiB in all.
//! - `project:` (with `ref:`, `file:` one path or a list): files of another project of
//!   this Runway at a branch, tag or sha (its default branch when no `ref`); a file read
//!   there resolves its own `local:` includes in that project, as GitLab's `mutate`d
//!   context does.
//! - `remote:` through the server's fetcher (`service::remote`).
//! - `template`, `component` and `artifact` are refused by name: their sources are not
//!   here.

use std::collections::HashMap;

use serde_yaml_ng::{Mapping, Value};

use super::config::ConfigError;
use super::expr;
use super::load::TOO_BIG;

/// GitLab's `ci_max_includes`.
pub const MAX_INCLUDES: usize = 150;

/// The most YAML all the files of one pipeline may hold together.
pub const MAX_TOTAL_BYTES: usize = 16 * 1024 * 1024;

/// The files of the pipeline's commit.
pub trait FileSource {
    /// The text of the file at `path` (from the repository's root), `None` if there is
    /// none; an error for a file too large to read ([`super::load::MAX_YAML_BYTES`]).
    fn read(&self, path: &str) -> Result<Option<String>, String>;
    /// Every file's path in the commit.
    fn paths(&self) -> Result<Vec<String>, String>;
    /// The paths changed between the merge base of `base` (a ref or sha) and the commit,
    /// `None` when there is no repository to compare in; an error when `base` names
    /// nothing.
    fn changed_since(&self, _base: &str) -> Result<Option<Vec<String>>, String> {
        Ok(None)
    }
    /// The paths the push that started the pipeline changed (GitLab's
    /// `pipeline.modified_paths`), `None` when no push with a before-sha started it:
    /// `changes` then holds.
    fn pushed_changes(&self) -> Result<Option<Vec<String>>, String> {
        Ok(None)
    }
    /// The last commit up to the pipeline's that changed `path` (`None`: no such file, or
    /// no repository), for `cache:key:files`.
    fn last_commit(&self, _path: &str) -> Result<Option<String>, String> {
        Ok(None)
    }
    /// The text at `url` for `include:remote` (see `service::remote`); refused where no
    /// fetcher is given.
    fn remote(&self, _url: &str) -> Result<String, String> {
        Err(not_yet("remote"))
    }
    /// The files of the project at `path` (`namespace/project`) at `ref_` (its default
    /// branch when `None`), for `include:project`; an error in GitLab's words when the
    /// project or the ref is not there. Refused where no projects are known.
    fn project(&self, _path: &str, _ref: Option<&str>) -> Result<Box<dyn FileSource>, String> {
        Err(not_yet("project"))
    }
}

/// Reads a project's repository for `include:project`: `(path, ref)` → its files.
pub type ProjectFiles<'a> = dyn Fn(&str, Option<&str>) -> Result<Box<dyn FileSource>, String> + 'a;

/// The server's readers of what is not in a commit: remote files (`fetch`) and other
/// projects' files (`projects`). It has no files of its own.
pub struct Fetchers<'a> {
    pub fetch: &'a dyn Fn(&str) -> Result<String, String>,
    pub projects: &'a ProjectFiles<'a>,
}

impl FileSource for Fetchers<'_> {
    fn read(&self, _: &str) -> Result<Option<String>, String> {
        Ok(None)
    }
    fn paths(&self) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }
    fn remote(&self, url: &str) -> Result<String, String> {
        (self.fetch)(url)
    }
    fn project(&self, path: &str, ref_: Option<&str>) -> Result<Box<dyn FileSource>, String> {
        (self.projects)(path, ref_)
    }
}

/// One commit's `files` — the pipeline's, or another project's where a file included
/// from it is read (its `local:` includes come from that project) — with remote and
/// project includes read through `outer`.
pub struct Within<'a> {
    pub files: &'a dyn FileSource,
    pub outer: &'a dyn FileSource,
}

impl FileSource for Within<'_> {
    fn read(&self, path: &str) -> Result<Option<String>, String> {
        self.files.read(path)
    }
    fn paths(&self) -> Result<Vec<String>, String> {
        self.files.paths()
    }
    fn changed_since(&self, base: &str) -> Result<Option<Vec<String>>, String> {
        self.files.changed_since(base)
    }
    fn pushed_changes(&self) -> Result<Option<Vec<String>>, String> {
        self.files.pushed_changes()
    }
    fn last_commit(&self, path: &str) -> Result<Option<String>, String> {
        self.files.last_commit(path)
    }
    fn remote(&self, url: &str) -> Result<String, String> {
        self.outer.remote(url)
    }
    fn project(&self, path: &str, ref_: Option<&str>) -> Result<Box<dyn FileSource>, String> {
        self.outer.project(path, ref_)
    }
}

/// Where an included file comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Local(String),
    Remote(String),
    /// `project:`, `ref:` and the `file:` paths.
    Project {
        project: String,
        ref_: Option<String>,
        files: Vec<String>,
    },
}

/// The pipeline's commit as the rules see it: its files, their paths read once.
pub struct Commit<'a> {
    pub files: &'a dyn FileSource,
    paths: std::cell::OnceCell<Result<Vec<String>, String>>,
    pushed: std::cell::OnceCell<Result<Option<Vec<String>>, String>>,
}

impl<'a> Commit<'a> {
    pub fn new(files: &'a dyn FileSource) -> Commit<'a> {
        Commit {
            files,
            paths: std::cell::OnceCell::new(),
            pushed: std::cell::OnceCell::new(),
        }
    }

    /// The paths the push changed, read once (see [`FileSource::pushed_changes`]).
    pub fn pushed_changes(&self) -> Result<Option<&[String]>, ConfigError> {
        match self.pushed.get_or_init(|| self.files.pushed_changes()) {
            Ok(changed) => Ok(changed.as_deref()),
            Err(e) => Err(ConfigError(e.clone())),
        }
    }

    /// Every file's path in the commit.
    pub fn paths(&self) -> Result<&[String], ConfigError> {
        self.paths
            .get_or_init(|| self.files.paths())
            .as_deref()
            .map_err(|e| ConfigError(e.clone()))
    }
}

/// No repository: every local file is missing.
pub struct NoFiles;

impl FileSource for NoFiles {
    fn read(&self, _: &str) -> Result<Option<String>, String> {
        Ok(None)
    }

    fn paths(&self) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }
}

/// What expanding one configuration's includes needs.
pub struct Includes<'a> {
    pub files: &'a dyn FileSource,
    /// Predefined and pipeline variables, for `rules:if`.
    pub variables: &'a HashMap<String, String>,
    count: usize,
    bytes: usize,
    paths: Option<Vec<String>>,
}

fn fail<T>(message: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(message.into()))
}

impl<'a> Includes<'a> {
    pub fn new(files: &'a dyn FileSource, variables: &'a HashMap<String, String>) -> Includes<'a> {
        Includes {
            files,
            variables,
            count: 0,
            bytes: 0,
            paths: None,
        }
    }

    /// `root` with its includes merged in (and the `include` key gone).
    pub fn expand(&mut self, root: Mapping) -> Result<Mapping, ConfigError> {
        let files = self.files;
        self.expand_in(files, root)
    }

    /// `root`, read from `files`, with its includes merged in.
    fn expand_in(
        &mut self,
        files: &dyn FileSource,
        mut root: Mapping,
    ) -> Result<Mapping, ConfigError> {
        let Some(include) = root.remove("include") else {
            return Ok(root);
        };
        let mut merged = Mapping::new();
        for (source, inputs) in self.locations(files, &include)? {
            match &source {
                Source::Local(location) => {
                    for path in self.resolve(files, location)? {
                        let file = self.load_file(files, &path, location, inputs.as_ref())?;
                        let file = self.expand_in(files, file)?;
                        deep_merge(&mut merged, &file);
                    }
                }
                Source::Remote(url) => {
                    let file = self.load_remote(files, url, inputs.as_ref())?;
                    let file = self.expand_in(files, file)?;
                    deep_merge(&mut merged, &file);
                }
                Source::Project {
                    project,
                    ref_,
                    files: paths,
                } => {
                    let theirs = files
                        .project(project, ref_.as_deref())
                        .map_err(ConfigError)?;
                    let other = Within {
                        files: theirs.as_ref(),
                        outer: files,
                    };
                    for path in paths {
                        let file =
                            self.load_project_file(&other, project, path, inputs.as_ref())?;
                        let file = self.expand_in(&other, file)?;
                        deep_merge(&mut merged, &file);
                    }
                }
            }
        }
        deep_merge(&mut merged, &root);
        Ok(merged)
    }

    /// The local paths `include` names whose rules let them in, in order, with the
    /// inputs given to each.
    fn locations(
        &mut self,
        files: &dyn FileSource,
        include: &Value,
    ) -> Result<Vec<(Source, Option<Mapping>)>, ConfigError> {
        let entries: Vec<&Value> = match include {
            Value::Sequence(items) => items.iter().collect(),
            Value::String(_) | Value::Mapping(_) => vec![include],
            Value::Null => Vec::new(),
            _ => return fail("include config should be an array or a string or a hash"),
        };
        let mut out = Vec::new();
        for entry in entries {
            match entry {
                Value::String(location) => {
                    // `normalize_location_string`: a URL is remote, anything else local.
                    if location.starts_with("http://") || location.starts_with("https://") {
                        out.push((Source::Remote(location.clone()), None));
                    } else {
                        out.push((Source::Local(location.clone()), None));
                    }
                }
                Value::Mapping(map) => {
                    for key in map.keys() {
                        let key = key.as_str().unwrap_or_default();
                        match key {
                            "local" | "remote" | "project" | "file" | "ref" | "rules"
                            | "inputs" => {}
                            "template" | "component" | "artifact" | "job" => {
                                return fail(not_yet(key))
                            }
                            other => {
                                return fail(format!(
                                    "include config contains unknown keys: {other}"
                                ))
                            }
                        }
                    }
                    let location = match (map.get("local"), map.get("remote"), map.get("project")) {
                        (Some(Value::String(path)), None, None) if !has_project_keys(map) => {
                            Source::Local(path.clone())
                        }
                        (None, Some(Value::String(url)), None) if !has_project_keys(map) => {
                            Source::Remote(url.clone())
                        }
                        (None, None, Some(Value::String(project))) => project_source(project, map)?,
                        _ => return fail(
                            "include config should be a hash with a local: path, a remote: URL or a project: with its file:",
                        ),
                    };
                    if let Some(rules) = map.get("rules") {
                        if !self.rules_include(files, rules)? {
                            continue;
                        }
                    }
                    let inputs = match map.get("inputs") {
                        None | Some(Value::Null) => None,
                        Some(Value::Mapping(inputs)) => Some(inputs.clone()),
                        Some(_) => return fail("include:inputs config should be a hash"),
                    };
                    out.push((location, inputs));
                }
                _ => return fail("include config should be an array or a string or a hash"),
            }
        }
        Ok(out)
    }

    /// `include:rules`: the first rule that holds decides (`when: never` leaves the file
    /// out); none holding leaves it out.
    fn rules_include(
        &mut self,
        files: &dyn FileSource,
        rules: &Value,
    ) -> Result<bool, ConfigError> {
        let Value::Sequence(rules) = rules else {
            return fail("include:rules config should be an array of hashes");
        };
        for rule in rules {
            let Value::Mapping(rule) = rule else {
                return fail("include:rules config should be an array of hashes");
            };
            let mut holds = true;
            for (key, value) in rule {
                match key.as_str().unwrap_or_default() {
                    "if" => {
                        let Value::String(condition) = value else {
                            return fail("include:rules:if should be a string");
                        };
                        holds &= expr::evaluate(condition, self.variables).map_err(|e| {
                            ConfigError(format!("include:rules:if invalid expression syntax: {e}"))
                        })?;
                    }
                    "exists" => {
                        let globs = string_list(value).ok_or_else(|| {
                            ConfigError("include:rules:exists should be an array of strings".into())
                        })?;
                        let paths = self.all_paths(files)?;
                        holds &= globs.iter().any(|g| {
                            paths
                                .iter()
                                .any(|p| wildcard_matches(g.trim_start_matches('/'), p))
                        });
                    }
                    // As a job's `rules:changes`: the push's changed paths (or those since
                    // `compare_to`); without a diff it holds, as GitLab's does.
                    "changes" => {
                        let (globs, compare_to) = match value {
                            Value::Mapping(map) => (
                                map.get("paths").and_then(string_list),
                                map.get("compare_to").and_then(Value::as_str),
                            ),
                            other => (string_list(other), None),
                        };
                        let globs = globs.ok_or_else(|| {
                            ConfigError(
                                "include:rules:changes should be an array of strings".into(),
                            )
                        })?;
                        let changed = match compare_to {
                            Some(base) => files.changed_since(base),
                            None => files.pushed_changes(),
                        }
                        .map_err(ConfigError)?;
                        if let Some(changed) = changed {
                            holds &= globs.iter().any(|g| {
                                changed.iter().any(|p| {
                                    super::policy::glob_matches(g.trim_start_matches('/'), p)
                                })
                            });
                        }
                    }
                    "when" => match value.as_str() {
                        Some("never" | "always") => {}
                        _ => {
                            return fail(
                                "include:rules:when unknown value: should be never or always",
                            )
                        }
                    },
                    other => {
                        return fail(format!(
                            "include:rules:rule config contains unknown keys: {other}"
                        ))
                    }
                }
            }
            if holds {
                return Ok(rule.get("when").and_then(Value::as_str) != Some("never"));
            }
        }
        Ok(false)
    }

    /// Every path of `files`; the pipeline's own commit's are read once.
    fn all_paths(
        &mut self,
        files: &dyn FileSource,
    ) -> Result<std::borrow::Cow<'_, [String]>, ConfigError> {
        if !std::ptr::addr_eq(files, self.files) {
            return Ok(std::borrow::Cow::Owned(files.paths().map_err(ConfigError)?));
        }
        if self.paths.is_none() {
            self.paths = Some(self.files.paths().map_err(ConfigError)?);
        }
        Ok(std::borrow::Cow::Borrowed(
            self.paths.as_deref().unwrap_or_default(),
        ))
    }

    /// The files a location names: itself, or what its wildcards match (sorted).
    fn resolve(
        &mut self,
        files: &dyn FileSource,
        location: &str,
    ) -> Result<Vec<String>, ConfigError> {
        let path = location.trim_start_matches('/');
        if !path.contains('*') {
            return Ok(vec![path.to_string()]);
        }
        let mut found: Vec<String> = self
            .all_paths(files)?
            .iter()
            .filter(|p| wildcard_matches(path, p))
            .cloned()
            .collect();
        found.sort();
        Ok(found)
    }

    /// A remote file (`Gitlab::Ci::Config::External::File::Remote`): fetched, counted and
    /// parsed as a local one.
    fn load_remote(
        &mut self,
        files: &dyn FileSource,
        url: &str,
        inputs: Option<&Mapping>,
    ) -> Result<Mapping, ConfigError> {
        self.count_one()?;
        let text = files.remote(url).map_err(ConfigError)?;
        self.take(&text)?;
        self.parse(&text, url, inputs)
    }

    /// A file of another project (`Gitlab::Ci::Config::External::File::Project`).
    fn load_project_file(
        &mut self,
        files: &dyn FileSource,
        project: &str,
        location: &str,
        inputs: Option<&Mapping>,
    ) -> Result<Mapping, ConfigError> {
        self.count_one()?;
        let path = location.trim_start_matches('/');
        if !(path.ends_with(".yml") || path.ends_with(".yaml")) {
            return fail(format!(
                "Included file `{location}` does not have YAML extension!"
            ));
        }
        let missing = || {
            ConfigError(format!(
                "Project `{project}` file `{location}` does not exist!"
            ))
        };
        if path.split('/').any(|part| part == "..") {
            return Err(missing());
        }
        let text = files.read(path).map_err(ConfigError)?.ok_or_else(missing)?;
        if text.trim().is_empty() {
            return fail(format!("Project `{project}` file `{location}` is empty!"));
        }
        self.take(&text)?;
        self.parse(&text, location, inputs)
    }

    /// One more file, within GitLab's `ci_max_includes`.
    fn count_one(&mut self) -> Result<(), ConfigError> {
        self.count += 1;
        if self.count > MAX_INCLUDES {
            return fail(format!(
                "Maximum of {MAX_INCLUDES} nested includes are allowed!"
            ));
        }
        Ok(())
    }

    /// A file's text, within what all the files may hold together.
    fn take(&mut self, text: &str) -> Result<(), ConfigError> {
        self.bytes += text.len();
        if self.bytes > MAX_TOTAL_BYTES {
            return fail(TOO_BIG);
        }
        Ok(())
    }

    /// One included file, read, counted and parsed (`Gitlab::Ci::Config::External::File::Local`).
    fn load_file(
        &mut self,
        files: &dyn FileSource,
        path: &str,
        location: &str,
        inputs: Option<&Mapping>,
    ) -> Result<Mapping, ConfigError> {
        self.count_one()?;
        if !(path.ends_with(".yml") || path.ends_with(".yaml")) {
            return fail(format!(
                "Included file `{location}` does not have YAML extension!"
            ));
        }
        if path.split('/').any(|part| part == "..") {
            return fail(format!("Local file `{location}` does not exist!"));
        }
        let text = files
            .read(path)
            .map_err(ConfigError)?
            .ok_or_else(|| ConfigError(format!("Local file `{location}` does not exist!")))?;
        if text.trim().is_empty() {
            return fail(format!("Local file `{location}` is empty!"));
        }
        self.take(&text)?;
        self.parse(&text, location, inputs)
    }

    /// An included file's text as configuration, its inputs given.
    fn parse(
        &self,
        text: &str,
        location: &str,
        inputs: Option<&Mapping>,
    ) -> Result<Mapping, ConfigError> {
        let what = format!("the included file `{location}`");
        let value =
            super::inputs::load_with_inputs(text, inputs, self.variables, &what).map_err(|e| {
                if e.0.starts_with("Invalid configuration format") {
                    ConfigError(format!(
                        "Included file `{location}` does not have valid YAML syntax!"
                    ))
                } else {
                    e
                }
            })?;
        match value {
            Value::Mapping(map) => Ok(map),
            _ => fail(format!(
                "Included file `{location}` does not have valid YAML syntax!"
            )),
        }
    }
}

/// Whether an include hash has `include:project`'s companion keys.
fn has_project_keys(map: &Mapping) -> bool {
    map.contains_key("file") || map.contains_key("ref")
}

/// `include:project` (`Entry::Include`, `File::Project`): the project's full path, an
/// optional `ref`, and `file` — one path or a list of them.
fn project_source(project: &str, map: &Mapping) -> Result<Source, ConfigError> {
    let files = match map.get("file") {
        Some(Value::String(file)) => vec![file.clone()],
        Some(Value::Sequence(items)) if !items.is_empty() => items
            .iter()
            .map(|i| i.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                ConfigError("include:file config should be a string or an array of strings".into())
            })?,
        None => return fail("include config must specify the file where to fetch the config from"),
        Some(_) => return fail("include:file config should be a string or an array of strings"),
    };
    let ref_ = match map.get("ref") {
        None | Some(Value::Null) => None,
        Some(Value::String(r)) => Some(r.clone()),
        Some(_) => return fail("include:ref config should be a string"),
    };
    Ok(Source::Project {
        project: project.trim_matches('/').to_string(),
        ref_,
        files,
    })
}

fn not_yet(kind: &str) -> String {
    format!("Runway does not support these keywords yet: include:{kind}")
}

fn string_list(value: &Value) -> Option<Vec<String>> {
    match value {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Sequence(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string))
            .collect(),
        _ => None,
    }
}

/// Deep-merges `over` into `base` (Ruby's `Hash#deep_merge`: hashes merge, the rest is
/// replaced).
pub fn deep_merge(base: &mut Mapping, over: &Mapping) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(Value::Mapping(b)), Value::Mapping(o)) => deep_merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// An include's wildcard path: `*` within a folder, `**` across folders, as GitLab's
/// `configs/*.yml` (this folder), `configs/**.yml` (any depth), `configs/**/*.yml`
/// (subfolders). Bounded work.
pub fn wildcard_matches(pattern: &str, path: &str) -> bool {
    fn go(p: &[u8], s: &[u8], budget: &mut u32) -> bool {
        if *budget == 0 {
            return false;
        }
        *budget -= 1;
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) if rest.first() == Some(&b'*') => {
                (0..=s.len()).any(|i| go(&rest[1..], &s[i..], budget))
            }
            Some((b'*', rest)) => (0..=s.len())
                .take_while(|i| *i == 0 || s[i - 1] != b'/')
                .any(|i| go(rest, &s[i..], budget)),
            Some((c, rest)) => s.first() == Some(c) && go(rest, &s[1..], budget),
        }
    }
    let mut budget = 100_000;
    go(pattern.as_bytes(), path.as_bytes(), &mut budget)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files(HashMap<&'static str, &'static str>);

    impl FileSource for Files {
        fn read(&self, path: &str) -> Result<Option<String>, String> {
            Ok(self.0.get(path).map(|s| s.to_string()))
        }
        fn paths(&self) -> Result<Vec<String>, String> {
            Ok(self.0.keys().map(|k| k.to_string()).collect())
        }
    }

    fn expand(files: &[(&'static str, &'static str)], root: &str) -> Result<Mapping, ConfigError> {
        let files = Files(files.iter().copied().collect());
        let vars = HashMap::from([("CI_COMMIT_BRANCH".to_string(), "main".to_string())]);
        let root = match super::super::load::load(root)? {
            Value::Mapping(m) => m,
            _ => Mapping::new(),
        };
        Includes::new(&files, &vars).expand(root)
    }

    fn yaml(text: &str) -> Mapping {
        serde_yaml_ng::from_str(text).expect("yaml")
    }

    /// The pipeline's files, and one other project (`group/shared`, any ref but `gone`).
    struct WithProject(Files);

    impl FileSource for WithProject {
        fn read(&self, path: &str) -> Result<Option<String>, String> {
            self.0.read(path)
        }
        fn paths(&self) -> Result<Vec<String>, String> {
            self.0.paths()
        }
        fn project(&self, path: &str, ref_: Option<&str>) -> Result<Box<dyn FileSource>, String> {
            if path != "group/shared" {
                return Err(format!("Project `{path}` not found"));
            }
            if ref_ == Some("gone") {
                return Err("no such ref".into());
            }
            Ok(Box::new(Files(HashMap::from([
                (
                    "t/jobs.yml",
                    "include: t/base.yml
build: { extends: .base }
",
                ),
                (
                    "t/base.yml",
                    ".base: { script: [shared] }
",
                ),
            ]))))
        }
    }

    #[test]
    fn project_files_resolve_their_local_includes_in_their_project() {
        let files = WithProject(Files(HashMap::from([(
            "t/base.yml",
            ".base: { script: [own] }
",
        )])));
        let vars = HashMap::new();
        let expand = |root: &str| {
            let Value::Mapping(root) = super::super::load::load(root).expect("yaml") else {
                panic!("a mapping");
            };
            Includes::new(&files, &vars).expand(root)
        };
        let merged = expand(
            "include: { project: group/shared, file: t/jobs.yml }
",
        )
        .expect("expands");
        assert_eq!(
            merged,
            yaml(
                ".base: { script: [shared] }
build: { extends: .base }
"
            )
        );
        let failed = |root: &str| expand(root).expect_err("refused").0;
        assert_eq!(
            failed("include: { project: group/shared, ref: gone, file: t/jobs.yml }"),
            "no such ref"
        );
        assert_eq!(
            failed("include: { project: group/shared, file: [t/jobs.yml, t/none.yml] }"),
            "Project `group/shared` file `t/none.yml` does not exist!"
        );
        assert_eq!(
            failed("include: { project: group/shared, file: { a: b } }"),
            "include:file config should be a string or an array of strings"
        );
        assert_eq!(
            failed("include: { local: a.yml, file: b.yml }"),
            "include config should be a hash with a local: path, a remote: URL or a project: with its file:"
        );
        assert_eq!(
            failed("include: { template: Auto-DevOps.gitlab-ci.yml }"),
            "Runway does not support these keywords yet: include:template"
        );
    }

    #[test]
    fn files_merge_under_the_file_that_includes_them() {
        let files = [
            ("ci/base.yml", "variables: { A: base, B: base }\n.tmpl: { script: make }\nbuild: { stage: build, script: base }\n"),
            ("ci/more.yml", "include: ci/nested/deep.yml\nvariables: { B: more }\n"),
            ("ci/nested/deep.yml", "variables: { C: deep, B: deep }\n"),
        ];
        let merged = expand(&files, "include: [ci/base.yml, {local: /ci/more.yml}]\nvariables: { A: main }\nbuild: { script: main }\n").expect("expands");
        assert_eq!(
            merged,
            yaml("variables: { A: main, B: more, C: deep }\n.tmpl: { script: make }\nbuild: { stage: build, script: main }\n")
        );
    }

    #[test]
    fn wildcards_rules_and_gitlabs_messages() {
        let files = [
            ("configs/a.yml", "a: { script: x }\n"),
            ("configs/b.yaml", "b: { script: x }\n"),
            ("configs/sub/c.yml", "c: { script: x }\n"),
            ("configs/readme.md", "text"),
            ("empty.yml", "  \n"),
            ("list.yml", "- a\n"),
            ("loop.yml", "include: loop.yml\n"),
        ];
        let keys = |m: Mapping| {
            m.keys()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            keys(expand(&files, "include: 'configs/*.yml'\n").unwrap()),
            ["a"]
        );
        assert_eq!(
            keys(expand(&files, "include: 'configs/**.yml'\n").unwrap()),
            ["a", "c"]
        );
        assert_eq!(
            keys(expand(&files, "include: 'configs/**/*.yml'\n").unwrap()),
            ["c"]
        );
        assert_eq!(
            keys(expand(&files, "include:\n  - local: configs/a.yml\n    rules: [{ if: '$CI_COMMIT_BRANCH == \"dev\"' }]\n  - local: configs/b.yaml\n    rules: [{ exists: ['configs/sub/*.yml'] }]\n").unwrap()),
            ["b"]
        );
        assert_eq!(keys(expand(&files, "include: [{ local: configs/a.yml, rules: [{ if: $CI_COMMIT_BRANCH, when: never }] }]\n").unwrap()), Vec::<String>::new());
        for (root, message) in [
            ("include: nope.yml", "Local file `nope.yml` does not exist!"),
            (
                "include: configs/readme.md",
                "Included file `configs/readme.md` does not have YAML extension!",
            ),
            ("include: empty.yml", "Local file `empty.yml` is empty!"),
            (
                "include: list.yml",
                "Included file `list.yml` does not have valid YAML syntax!",
            ),
            (
                "include: loop.yml",
                "Maximum of 150 nested includes are allowed!",
            ),
            ("include: ../x.yml", "Local file `../x.yml` does not exist!"),
            ("include: https://example.com/ci.yml", "Runway does not support these keywords yet: include:remote"),
            (
                "include: { template: Auto-DevOps.gitlab-ci.yml }",
                "include:template",
            ),
            ("include: { project: a/b, file: x.yml }", "include:project"),
            ("include: { component: x }", "include:component"),
            (
                "include: { local: configs/a.yml, inputs: { a: 1 } }",
                "Given inputs not defined in the `spec` section of the included file `configs/a.yml`",
            ),
        ] {
            let error = expand(&files, root).unwrap_err().0;
            assert!(error.contains(message), "{root}: {error}");
        }
    }

    #[test]
    fn included_files_get_their_inputs() {
        let files = [(
            "templates/build.yml",
            "spec:\n  inputs:\n    target: { options: [linux, windows] }\n    jobs: { type: number, default: 1 }\n---\n\
             \"build-$[[ inputs.target ]]\":\n  script:\n    - make $[[ inputs.target ]]\n  parallel: $[[ inputs.jobs ]]\n",
        )];
        let merged = expand(&files, "include:\n  - local: templates/build.yml\n    inputs: { target: linux, jobs: 2 }\n  \
                                     - local: templates/build.yml\n    inputs: { target: windows }\n").expect("expands");
        assert_eq!(
            merged,
            yaml("build-linux: { script: [make linux], parallel: 2 }\nbuild-windows: { script: [make windows], parallel: 1 }\n")
        );
        let error = expand(
            &files,
            "include: [{ local: templates/build.yml, inputs: { target: mac } }]\n",
        )
        .unwrap_err()
        .0;
        assert_eq!(
            error,
            "`target` input: `mac` cannot be used because it is not in the list of allowed options"
        );
    }

    #[test]
    fn wildcards_stay_in_their_folders() {
        assert!(wildcard_matches("a/*.yml", "a/x.yml"));
        assert!(!wildcard_matches("a/*.yml", "a/b/x.yml"));
        assert!(wildcard_matches("a/**.yml", "a/b/c/x.yml"));
        assert!(!wildcard_matches("a/**/*.yml", "a/x.yml"));
        assert!(
            !wildcard_matches(&"*a".repeat(30), &"a".repeat(100).replace('a', "b")),
            "bounded"
        );
    }
}
