//! The two baselines, each run in its own process (this bench binary re-executed with a
//! mode argument) so that its RSS is its own: a bare actix-web server answering 204 on
//! `POST /api/v4/jobs/request` (holding one that carries `last_update`), and the
//! `gitlab-runner-mock` crate's in-memory server.

use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};

use crate::common::{free_port, wait_ready, Server};

pub const BARE_MODE: &str = "--serve-bare";
pub const MOCK_MODE: &str = "--serve-mock";

/// The mock's runner token and a `system_id` in gitlab-runner's format (the mock checks it).
pub const MOCK_RUNNER_TOKEN: &str = "fakerunnertoken";
pub const MOCK_SYSTEM_ID: &str = "s_0123456789ab";

/// Polls the bare server holds now.
static HELD: AtomicI64 = AtomicI64::new(0);

/// Counts a held poll while it lives (its future may be dropped with its connection).
struct Holding;

impl Holding {
    fn start() -> Holding {
        HELD.fetch_add(1, Ordering::Relaxed);
        Holding
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        HELD.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Reads the body, so that the connection stays alive, and answers 204. A body that
/// carries a `last_update` is held first, as Runway holds a poll whose version is
/// current: the framework's own cost of a held request, with nothing of Runway's in it.
async fn empty_poll(body: web::Bytes) -> HttpResponse {
    if body
        .windows(b"last_update".len())
        .any(|w| w == b"last_update")
    {
        let _holding = Holding::start();
        tokio::time::sleep(Duration::from_secs(crate::runway::HOLD_SECONDS)).await;
    }
    HttpResponse::NoContent()
        .insert_header(("X-GitLab-Last-Update", "bare"))
        .finish()
}

/// The held count in Runway's metric format, so that the same client counts both.
async fn metrics() -> HttpResponse {
    let held = HELD.load(Ordering::Relaxed);
    HttpResponse::Ok().body(format!("runway_held_long_polls {held}\n"))
}

/// Child mode: the bare actix-web server on 127.0.0.1:`port`, with as many workers as
/// Runway has (one per core).
pub fn serve_bare(port: u16) -> std::io::Result<()> {
    actix_web::rt::System::new().block_on(
        HttpServer::new(|| {
            App::new()
                .route("/api/v4/jobs/request", web::post().to(empty_poll))
                .route("/-/readiness", web::get().to(HttpResponse::Ok))
                .route("/-/metrics", web::get().to(metrics))
        })
        .bind(("127.0.0.1", port))?
        .run(),
    )
}

/// Child mode: the mock server; prints its URL, then reads commands from stdin until it
/// closes: `jobs N` queues N dummy jobs and answers `ok`.
pub fn serve_mock() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    // The mock serves from a thread of its own (wiremock's), so this one only reads stdin.
    let mock = runtime.block_on(gitlab_runner_mock::GitlabRunnerMock::start());
    let mut out = std::io::stdout();
    writeln!(out, "{}", mock.uri().as_str().trim_end_matches('/')).expect("stdout");
    out.flush().expect("stdout");
    for line in std::io::stdin().lock().lines() {
        let line = line.expect("stdin");
        if let Some(n) = line.strip_prefix("jobs ") {
            let n: usize = n.trim().parse().expect("a count");
            for i in 0..n {
                mock.add_dummy_job(format!("job-{i}"));
            }
            writeln!(out, "ok").expect("stdout");
            out.flush().expect("stdout");
        }
    }
}

fn this_bench(mode: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("own path"));
    command.arg(mode).stderr(Stdio::inherit());
    command
}

pub async fn start_bare() -> Server {
    let port = free_port();
    let child = this_bench(BARE_MODE)
        .arg(port.to_string())
        .stdout(Stdio::null())
        .spawn()
        .expect("bare server starts");
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    wait_ready(&format!("{}/-/readiness", server.base)).await;
    server
}

/// The mock in its process, with the pipes that drive it.
pub struct Mock {
    pub server: Server,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Mock {
    pub fn start() -> Mock {
        let mut child = this_bench(MOCK_MODE)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("mock starts");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut base = String::new();
        stdout.read_line(&mut base).expect("mock URL");
        Mock {
            server: Server {
                child,
                base: base.trim().to_string(),
            },
            stdin,
            stdout,
        }
    }

    /// Queues `n` pending jobs.
    pub fn add_jobs(&mut self, n: usize) {
        writeln!(self.stdin, "jobs {n}").expect("mock stdin");
        self.stdin.flush().expect("mock stdin");
        let mut answer = String::new();
        self.stdout.read_line(&mut answer).expect("mock answer");
        assert_eq!(answer.trim(), "ok", "mock queued the jobs");
    }

    /// A job request body; the mock hands out jobs only to runners with `refspecs`.
    pub fn poll_body() -> bytes::Bytes {
        serde_json::to_vec(&serde_json::json!({
            "token": MOCK_RUNNER_TOKEN,
            "system_id": MOCK_SYSTEM_ID,
            "info": { "features": { "refspecs": true } },
        }))
        .expect("json")
        .into()
    }
}
