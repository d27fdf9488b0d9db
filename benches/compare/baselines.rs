//! The baselines, each run in its own process (this bench binary re-executed with a mode
//! argument) so that its RSS is its own: a bare actix-web server answering 204 on
//! `POST /api/v4/jobs/request` (holding one that carries `last_update`), the same on bare
//! hyper (the other HTTP/1 stack a held poll could live on), the same on a hand-written
//! HTTP/1.1 loop that keeps nothing of a held request but its socket (the floor of any
//! server), and the `gitlab-runner-mock` crate's in-memory server.

use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};

use crate::common::{free_port, wait_ready, Server};

pub const BARE_MODE: &str = "--serve-bare";
pub const BARE_HYPER_MODE: &str = "--serve-bare-hyper";
pub const BARE_RAW_MODE: &str = "--serve-bare-raw";
pub const MOCK_MODE: &str = "--serve-mock";

/// The bare servers, in their columns' order: the column, its name in
/// `RUNWAY_BENCH_COLUMNS`, the child mode serving it. The first is actix-web, the stack
/// Runway runs on.
pub const BARE_SERVERS: [(&str, &str, &str); 3] = [
    ("bare", "bare", BARE_MODE),
    ("bare hyper", "hyper", BARE_HYPER_MODE),
    ("bare raw", "raw", BARE_RAW_MODE),
];

/// Child mode `mode`, one of [`BARE_SERVERS`]', on 127.0.0.1:`port`.
pub fn serve_bare_mode(mode: &str, port: u16) -> std::io::Result<()> {
    match mode {
        BARE_HYPER_MODE => serve_bare_hyper(port),
        BARE_RAW_MODE => serve_bare_raw(port),
        _ => serve_bare(port),
    }
}

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
    hold_if_versioned(&body).await;
    HttpResponse::NoContent()
        .insert_header(("X-GitLab-Last-Update", "bare"))
        .finish()
}

/// Holds a poll whose body carries `last_update`, as Runway holds one whose version is
/// current (`HOLD_SECONDS`, long enough for the bench to read the RSS).
async fn hold_if_versioned(body: &[u8]) {
    if versioned(body) {
        hold().await;
    }
}

fn versioned(body: &[u8]) -> bool {
    body.windows(b"last_update".len())
        .any(|w| w == b"last_update")
}

async fn hold() {
    let _holding = Holding::start();
    tokio::time::sleep(Duration::from_secs(crate::runway::HOLD_SECONDS)).await;
}

/// The held count in Runway's metric format, so that the same client counts both.
fn metrics_text() -> String {
    let held = HELD.load(Ordering::Relaxed);
    format!("runway_held_long_polls {held}\n")
}

async fn metrics() -> HttpResponse {
    HttpResponse::Ok().body(metrics_text())
}

/// Child mode: the bare actix-web server on 127.0.0.1:`port`, with as many workers as
/// Runway has (one per core).
fn serve_bare(port: u16) -> std::io::Result<()> {
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

/// Child mode: the same three routes on bare hyper (HTTP/1.1 with keep-alive, one task per
/// connection) on a tokio runtime with a worker per core, as actix has: what a held poll
/// would cost on the other HTTP/1 stack of Rust's ecosystem.
fn serve_bare_hyper(port: u16) -> std::io::Result<()> {
    use http_body_util::{BodyExt, Full};
    use hyper::{Method, Request, Response, StatusCode};

    async fn route(
        request: Request<hyper::body::Incoming>,
    ) -> Result<Response<Full<bytes::Bytes>>, hyper::Error> {
        let (head, body) = request.into_parts();
        let body = body.collect().await?.to_bytes();
        let response = match (&head.method, head.uri.path()) {
            (&Method::POST, "/api/v4/jobs/request") => {
                hold_if_versioned(&body).await;
                Response::builder()
                    .status(StatusCode::NO_CONTENT)
                    .header("X-GitLab-Last-Update", "bare")
                    .body(Full::default())
            }
            (&Method::GET, "/-/readiness") => Response::builder().body(Full::default()),
            (&Method::GET, "/-/metrics") => Response::builder().body(Full::from(metrics_text())),
            _ => Response::builder()
                .status(StatusCode::NOT_FOUND)
                .body(Full::default()),
        };
        Ok(response.expect("a response"))
    }

    serve_connections(port, |stream| async move {
        // A connection's error (a client that went away) ends that connection only.
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(
                hyper_util::rt::TokioIo::new(stream),
                hyper::service::service_fn(route),
            )
            .await;
    })
}

/// Accepts on 127.0.0.1:`port` on a tokio runtime with a worker per core, as actix has,
/// and serves each connection in a task of its own.
fn serve_connections<F, Fut>(port: u16, serve: F) -> std::io::Result<()>
where
    F: Fn(tokio::net::TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(1, |n| n.get()))
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            tokio::spawn(serve(stream));
        }
    })
}

/// Child mode: the same three routes on a hand-written HTTP/1.1 loop (httparse for the
/// head, `Content-Length` bodies, keep-alive): a request's bytes are dropped and the
/// buffer released before a poll is held, so a held poll keeps only its task and socket.
/// The floor for a held poll on any server; not a server to run (no chunked bodies, no
/// pipelining, no timeouts).
fn serve_bare_raw(port: u16) -> std::io::Result<()> {
    serve_connections(port, |stream| async move {
        // A connection's error (a client that went away) ends that connection only.
        let _ = raw_connection(stream).await;
    })
}

/// The longest request head and body the hand-written loop reads.
const RAW_REQUEST_LIMIT: usize = 64 * 1024;

async fn raw_connection(mut stream: tokio::net::TcpStream) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;

    let mut buf: Vec<u8> = Vec::new();
    loop {
        let (head, length, route) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut request = httparse::Request::new(&mut headers);
            let parsed = request
                .parse(&buf)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            if let httparse::Status::Complete(head) = parsed {
                let length = request
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                    .unwrap_or(0usize);
                let route = match (request.method, request.path) {
                    (Some("POST"), Some("/api/v4/jobs/request")) => RawRoute::Poll,
                    (Some("GET"), Some("/-/readiness")) => RawRoute::Ready,
                    (Some("GET"), Some("/-/metrics")) => RawRoute::Metrics,
                    _ => RawRoute::NotFound,
                };
                break (head, length, route);
            }
            if buf.len() >= RAW_REQUEST_LIMIT || !read_more(&mut stream, &mut buf).await? {
                return Ok(());
            }
        };
        if head + length > RAW_REQUEST_LIMIT {
            return Ok(());
        }
        while buf.len() < head + length {
            if !read_more(&mut stream, &mut buf).await? {
                return Ok(());
            }
        }
        let held = versioned(&buf[head..head + length]);
        buf.drain(..head + length);
        buf.shrink_to_fit();
        let response = match route {
            RawRoute::Poll => {
                if held {
                    hold().await;
                }
                "HTTP/1.1 204 No Content\r\nX-GitLab-Last-Update: bare\r\n\r\n".to_string()
            }
            RawRoute::Ready => "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_string(),
            RawRoute::Metrics => {
                let text = metrics_text();
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{text}",
                    text.len()
                )
            }
            RawRoute::NotFound => "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_string(),
        };
        stream.write_all(response.as_bytes()).await?;
    }
}

enum RawRoute {
    Poll,
    Ready,
    Metrics,
    NotFound,
}

/// Reads what the socket has into `buf`, growing it by 512 bytes at most; false at the
/// end of the stream.
async fn read_more(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    use tokio::io::AsyncReadExt;

    buf.reserve(512);
    Ok(stream.read_buf(buf).await? > 0)
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

/// Starts a bare server in its own process: `mode` is `BARE_MODE` or `BARE_HYPER_MODE`.
pub async fn start_bare(mode: &str) -> Server {
    let port = free_port();
    let child = this_bench(mode)
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
