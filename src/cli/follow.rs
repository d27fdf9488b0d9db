//! Following a pipeline from a terminal: each job's log as it grows, every line prefixed
//! with the job's name (`[build] …`), and a `==>` line when a job starts or ends.
//!
//! The admin API serves a job's whole log; the follower keeps how much of it it printed
//! and prints only what came since. Logs are fetched only for jobs that run or have just
//! ended, so waiting jobs cost one list call per look.

use std::collections::BTreeMap;
use std::io::Write;

use serde_json::Value;

use crate::client::AdminClient;

/// What the follower knows of one job.
struct Seen {
    name: String,
    status: String,
    /// Bytes of its log printed so far.
    printed: usize,
    /// The end of the log after its last newline, printed once the line is complete.
    partial: Vec<u8>,
    /// Whether its `==> … running` line is out.
    announced: bool,
    /// Ended and printed to the end.
    done: bool,
}

/// Follows one pipeline, printing to `out`.
pub struct Follower<W> {
    client: AdminClient,
    project: i64,
    pipeline: i64,
    out: W,
    jobs: BTreeMap<i64, Seen>,
}

fn is_finished(status: &str) -> bool {
    matches!(status, "success" | "failed" | "canceled" | "skipped")
}

impl<W: Write> Follower<W> {
    pub fn new(client: AdminClient, project: i64, pipeline: i64, out: W) -> Self {
        Follower {
            client,
            project,
            pipeline,
            out,
            jobs: BTreeMap::new(),
        }
    }

    /// One look at the pipeline: prints what changed; its final status once it has ended
    /// and every job's log is printed to the end.
    pub async fn step(&mut self) -> anyhow::Result<Option<String>> {
        // The pipeline first: once it has ended, the jobs read after it have too, so their
        // logs are complete.
        let pipeline = self.client.pipeline(self.project, self.pipeline).await?;
        let status = pipeline["status"].as_str().unwrap_or("").to_string();
        let mut jobs = self
            .client
            .pipeline_jobs(self.project, self.pipeline)
            .await?;
        jobs.sort_by_key(|j| j["id"].as_i64());
        for job in &jobs {
            self.job(job).await?;
        }
        self.out.flush()?;
        Ok(is_finished(&status).then_some(status))
    }

    async fn job(&mut self, job: &Value) -> anyhow::Result<()> {
        let Some(id) = job["id"].as_i64() else {
            return Ok(());
        };
        let status = job["status"].as_str().unwrap_or("").to_string();
        let seen = self.jobs.entry(id).or_insert_with(|| Seen {
            name: job["name"].as_str().unwrap_or("?").to_string(),
            status: String::new(),
            printed: 0,
            partial: Vec::new(),
            announced: false,
            done: false,
        });
        if seen.done {
            return Ok(());
        }
        let out = &mut self.out;
        let ran = matches!(status.as_str(), "running" | "canceling")
            || (is_finished(&status) && status != "skipped");
        // Every job that ran gets its `running` line before its log, even when it ran
        // between two looks.
        if ran && !seen.announced {
            writeln!(out, "==> {} (job {id}): running", seen.name)?;
            seen.announced = true;
        }
        if seen.status != status && matches!(status.as_str(), "canceling" | "manual") {
            writeln!(out, "==> {} (job {id}): {status}", seen.name)?;
        }
        seen.status.clone_from(&status);
        if ran {
            let log = self.client.job_trace(self.project, id).await?;
            if log.len() > seen.printed {
                print_lines(out, seen, &log[seen.printed..])?;
                seen.printed = log.len();
            }
        }
        if is_finished(&status) {
            if !seen.partial.is_empty() {
                let rest = std::mem::take(&mut seen.partial);
                write_line(out, &seen.name, &rest)?;
            }
            let mut end = format!("==> {} (job {id}): {status}", seen.name);
            if let Some(reason) = job["failure_reason"].as_str() {
                end.push_str(&format!(" ({reason})"));
            }
            if status == "failed" && job["allow_failure"] == true {
                end.push_str(", allowed to fail");
            }
            writeln!(out, "{end}")?;
            seen.done = true;
        }
        Ok(())
    }
}

/// Prints the complete lines of `seen.partial` + `new`; keeps the incomplete rest.
fn print_lines(out: &mut impl Write, seen: &mut Seen, new: &[u8]) -> std::io::Result<()> {
    seen.partial.extend_from_slice(new);
    let Some(last) = seen.partial.iter().rposition(|b| *b == b'\n') else {
        return Ok(());
    };
    let rest = seen.partial.split_off(last + 1);
    let complete = std::mem::replace(&mut seen.partial, rest);
    for line in complete[..complete.len() - 1].split(|b| *b == b'\n') {
        write_line(out, &seen.name, line)?;
    }
    Ok(())
}

fn write_line(out: &mut impl Write, name: &str, line: &[u8]) -> std::io::Result<()> {
    write!(out, "[{name}] ")?;
    out.write_all(line)?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_printed_when_complete_with_the_jobs_name() {
        let mut seen = Seen {
            name: "build".into(),
            status: "running".into(),
            printed: 0,
            partial: Vec::new(),
            announced: true,
            done: false,
        };
        let mut out = Vec::new();
        print_lines(&mut out, &mut seen, b"one\ntw").unwrap();
        assert_eq!(out, b"[build] one\n");
        print_lines(&mut out, &mut seen, b"o\n\nthree").unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[build] one\n[build] two\n[build] \n"
        );
        assert_eq!(seen.partial, b"three");
    }
}
