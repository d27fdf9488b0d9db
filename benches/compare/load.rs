//! The load generator: one HTTP/1.1 keep-alive connection per simulated runner (as
//! gitlab-runner keeps one per server), written on hyper's connection API so that the
//! client, which shares the cores with the server, costs as little as it can.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::Method;
use hyper_util::rt::TokioIo;

/// One keep-alive connection to a server on 127.0.0.1. [`Conn::connect`], [`Conn::send`]
/// and [`Conn::expect`] answer failures (the fleet counts them as errors); [`Conn::open`]
/// and [`Conn::post_json`] panic on them (compare's figures need every call to succeed).
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

/// What a request got back.
pub struct Reply {
    pub status: u16,
    /// `X-GitLab-Last-Update`, when present.
    pub last_update: Option<String>,
    /// The body when asked to keep it.
    pub body: Bytes,
    /// The body's length (read by the fleet bench, which does not keep large bodies).
    #[allow(dead_code)]
    pub len: usize,
}

impl Reply {
    /// The `id` of the job in a 201 body.
    pub fn job_id(&self) -> i64 {
        let job: serde_json::Value = serde_json::from_slice(&self.body).expect("job JSON");
        job["id"].as_i64().expect("job id")
    }
}

impl Conn {
    /// Connects to `base` (`http://127.0.0.1:PORT`); panics if it cannot.
    pub async fn open(base: &str) -> Conn {
        Conn::connect(base.trim_start_matches("http://"))
            .await
            .expect("connect")
    }

    /// `POST path` with a JSON body; reads the whole answer (panics on a failure).
    pub async fn post_json(&mut self, path: &str, body: Bytes) -> Reply {
        self.send_json(Method::POST, path, body).await
    }

    /// `method path` with a JSON body; reads the whole answer (panics on a failure).
    pub async fn send_json(&mut self, method: Method, path: &str, body: Bytes) -> Reply {
        let json = [("content-type", "application/json")];
        self.send(method, path, &json, body, true)
            .await
            .expect("an answer")
    }

    /// Connects to `host` (`127.0.0.1:PORT`).
    pub async fn connect(host: &str) -> Result<Conn, String> {
        let stream = tokio::net::TcpStream::connect(host)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("nodelay: {e}"))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        // Ends when the sender is dropped or the server closes the connection.
        tokio::spawn(connection);
        Ok(Conn {
            sender,
            host: host.to_string(),
        })
    }

    /// Sends a request and reads the whole answer (`keep`: into `body`, else only counted).
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        keep: bool,
    ) -> Result<Reply, String> {
        let what = || format!("{method} {path}");
        self.sender
            .ready()
            .await
            .map_err(|e| format!("{}: connection: {e}", what()))?;
        let mut request = hyper::Request::builder()
            .method(method.clone())
            .uri(path)
            .header("host", &self.host);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| format!("{}: {e}", what()))?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| format!("{}: {e}", what()))?;
        let status = response.status().as_u16();
        // The server closes after this answer: connect again for the next request, as
        // gitlab-runner's HTTP client does.
        let closing = response
            .headers()
            .get("connection")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let last_update = response
            .headers()
            .get("x-gitlab-last-update")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut incoming = response.into_body();
        let (body, len) = if keep {
            let body = incoming
                .collect()
                .await
                .map_err(|e| format!("{}: body: {e}", what()))?
                .to_bytes();
            let len = body.len();
            (body, len)
        } else {
            let mut len = 0;
            while let Some(frame) = incoming.frame().await {
                let frame = frame.map_err(|e| format!("{}: body: {e}", what()))?;
                if let Some(data) = frame.data_ref() {
                    len += data.len();
                }
            }
            (Bytes::new(), len)
        };
        if closing {
            *self = Conn::connect(&self.host).await?;
        }
        Ok(Reply {
            status,
            last_update,
            body,
            len,
        })
    }

    /// `send` with a time limit, and the status checked.
    #[allow(clippy::too_many_arguments)]
    #[allow(dead_code)] // the fleet bench's
    pub async fn expect(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        keep: bool,
        status: u16,
        limit: Duration,
    ) -> Result<Reply, String> {
        let what = format!("{method} {path}");
        let answer = tokio::time::timeout(limit, self.send(method, path, headers, body, keep))
            .await
            .map_err(|_| format!("{what}: no answer within {} s", limit.as_secs()))??;
        if answer.status != status {
            return Err(format!(
                "{what}: {} (expected {status}) {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
                    .chars()
                    .take(300)
                    .collect::<String>()
            ));
        }
        Ok(answer)
    }
}

/// Latencies, sorted on demand.
#[derive(Default)]
pub struct Latencies(pub Vec<Duration>);

impl Latencies {
    /// The `p`-th percentile (0–100), nearest rank.
    pub fn percentile(&mut self, p: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        self.0.sort_unstable();
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1]
    }

    /// `p50 / p99` in milliseconds.
    pub fn p50_p99(&mut self) -> String {
        format!(
            "{:.2} / {:.2}",
            ms(self.percentile(50.0)),
            ms(self.percentile(99.0))
        )
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A closed-loop load of empty polls: each connection sends its body again as soon as the
/// answer (which must be 204) is read.
pub struct PollLoad {
    /// Requests answered inside the measured window.
    pub requests: u64,
    pub window: Duration,
    pub latencies: Latencies,
}

impl PollLoad {
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.window.as_secs_f64()
    }
}

/// One connection per body, `warmup` unmeasured, then `window` measured.
pub async fn poll_load(
    base: &str,
    bodies: Vec<Bytes>,
    warmup: Duration,
    window: Duration,
) -> PollLoad {
    let mut conns = Vec::with_capacity(bodies.len());
    for _ in &bodies {
        conns.push(Conn::open(base).await);
    }
    let start = Instant::now() + warmup;
    let end = start + window;
    let mut tasks = tokio::task::JoinSet::new();
    for (mut conn, body) in conns.into_iter().zip(bodies) {
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let reply = conn.post_json("/api/v4/jobs/request", body.clone()).await;
                let done = Instant::now();
                assert_eq!(reply.status, 204, "an empty poll answers 204");
                if sent >= start && done <= end {
                    latencies.push(done - sent);
                }
            }
            latencies
        });
    }
    let mut latencies = Latencies::default();
    while let Some(result) = tasks.join_next().await {
        latencies.0.extend(result.expect("poll task"));
    }
    PollLoad {
        requests: latencies.0.len() as u64,
        window,
        latencies,
    }
}

/// Jobs drained from a queue by concurrent runners.
pub struct Drained {
    pub ids: Vec<i64>,
    pub time: Duration,
}

impl Drained {
    pub fn distinct(&self) -> usize {
        self.ids
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len()
    }
}

/// Each body is one runner on its own connection, polling until it gets a 204 (nothing
/// left for it) or `limit` passes. With `finish`, each job taken is reported `success`
/// (`PUT /api/v4/jobs/:id` with its token, on the same connection) before the next poll,
/// as a runner does at the end of a job: the job's whole cycle.
pub async fn drain_queue(base: &str, bodies: Vec<Bytes>, limit: Duration, finish: bool) -> Drained {
    let mut conns = Vec::with_capacity(bodies.len());
    for _ in &bodies {
        conns.push(Conn::open(base).await);
    }
    let started = Instant::now();
    let deadline = started + limit;
    let mut tasks = tokio::task::JoinSet::new();
    for (mut conn, body) in conns.into_iter().zip(bodies) {
        tasks.spawn(async move {
            let mut ids = Vec::new();
            while Instant::now() < deadline {
                let reply = conn.post_json("/api/v4/jobs/request", body.clone()).await;
                match reply.status {
                    201 if finish => {
                        let job: serde_json::Value =
                            serde_json::from_slice(&reply.body).expect("job JSON");
                        let id = job["id"].as_i64().expect("job id");
                        let body = serde_json::to_vec(&serde_json::json!({
                            "token": job["token"], "state": "success",
                        }))
                        .expect("json");
                        let path = format!("/api/v4/jobs/{id}");
                        let put = conn.send_json(Method::PUT, &path, body.into()).await;
                        assert_eq!(
                            put.status,
                            200,
                            "PUT success: {}",
                            String::from_utf8_lossy(&put.body)
                        );
                        ids.push(id);
                    }
                    201 => ids.push(reply.job_id()),
                    204 => break,
                    other => panic!(
                        "job request: {other} {}",
                        String::from_utf8_lossy(&reply.body)
                    ),
                }
            }
            ids
        });
    }
    let mut ids = Vec::new();
    while let Some(result) = tasks.join_next().await {
        ids.extend(result.expect("dispatch task"));
    }
    Drained {
        ids,
        time: started.elapsed(),
    }
}

/// Log PATCHes of `patch` bytes, each job's in order, the jobs side by side.
pub struct TraceLoad {
    pub bytes: u64,
    pub time: Duration,
    pub latencies: Latencies,
}

/// Appends `patches` PATCHes of `data` to the log of each `(id, token)` job, at the
/// offset the previous one ended (`Content-Range: start-end`, end inclusive); each must
/// answer 202.
pub async fn trace_append(
    base: &str,
    jobs: Vec<(i64, String)>,
    patches: usize,
    data: Bytes,
) -> TraceLoad {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (id, token) in jobs {
        let (client, data) = (client.clone(), data.clone());
        let url = format!("{base}/api/v4/jobs/{id}/trace");
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(patches);
            for i in 0..patches {
                let start = i * data.len();
                let sent = Instant::now();
                let response = client
                    .patch(&url)
                    .header("JOB-TOKEN", &token)
                    .header("Content-Type", "text/plain")
                    .header(
                        "Content-Range",
                        format!("{start}-{}", start + data.len() - 1),
                    )
                    .body(data.clone())
                    .send()
                    .await
                    .expect("trace PATCH");
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                assert_eq!(status, 202, "trace PATCH: {text}");
                latencies.push(sent.elapsed());
            }
            latencies
        });
    }
    let mut latencies = Latencies::default();
    while let Some(result) = tasks.join_next().await {
        latencies.0.extend(result.expect("trace task"));
    }
    TraceLoad {
        bytes: (latencies.0.len() * data.len()) as u64,
        time: started.elapsed(),
        latencies,
    }
}
