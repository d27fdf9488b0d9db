//! Swagger UI in a real browser: headless Chromium (Debian's package, which
//! `scripts/test.sh` installs) loads `/api/docs/`, every documented path is rendered as an
//! operation, and a screenshot is saved under the test output folder.

use std::process::Stdio;

use reqwest::Method;

use crate::helpers::{Backend, TestApp};

fn chromium() -> String {
    std::env::var("RUNWAY_TEST_CHROMIUM").unwrap_or_else(|_| "chromium".into())
}

/// Runs headless Chromium on `url` with `args`, giving the page's scripts time to fetch
/// and render the document; returns stdout.
async fn headless(url: &str, profile: &std::path::Path, args: &[&str]) -> Vec<u8> {
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(90),
        tokio::process::Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1280,2400",
                "--virtual-time-budget=15000",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(args)
            .arg(url)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("chromium finishes within 90 s")
    .unwrap_or_else(|e| {
        panic!(
            "{} does not start ({e}); scripts/test.sh installs Debian's chromium",
            chromium()
        )
    });
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swagger_ui_renders_every_operation_in_chromium() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let doc = app
        .send(app.request(Method::GET, "/api/openapi.json"))
        .await
        .json();
    let profile = tempfile::tempdir().expect("tempdir");
    let url = app.url("/api/docs/");

    let dom = String::from_utf8_lossy(&headless(&url, profile.path(), &["--dump-dom"]).await)
        .into_owned();
    assert!(
        dom.contains("swagger-ui"),
        "the page loaded: {}",
        &dom[..dom.len().min(2000)]
    );
    assert!(dom.contains("Runway"), "the document's title is rendered");
    for path in doc["paths"].as_object().expect("paths").keys() {
        assert!(
            dom.contains(&format!("data-path=\"{path}\"")),
            "{path} is not rendered as an operation"
        );
    }
    assert!(
        dom.contains("Authorize"),
        "the Authorize button (security schemes) is rendered"
    );

    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("swagger-ui.png");
    let _ = std::fs::remove_file(&out);
    headless(
        &url,
        profile.path(),
        &[&format!("--screenshot={}", out.display())],
    )
    .await;
    let png = std::fs::read(&out).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 20_000,
        "a real screenshot ({} bytes)",
        png.len()
    );
    println!("screenshot: {}", out.display());
}

/// Swagger UI keeps the tokens typed into "Authorize" in the page, not in the browser's
/// storage on the web pages' origin, and carries the pages' security headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swagger_ui_persists_no_tokens_and_carries_the_pages_headers() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    for path in ["/api/docs/", "/api/docs/swagger-initializer.js"] {
        let reply = app.send(app.request(Method::GET, path)).await;
        assert_eq!(reply.status, 200, "{path}");
        let csp = reply.header("content-security-policy").unwrap_or_default();
        assert!(
            csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{path}: {csp}"
        );
        assert_eq!(
            reply.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(
            reply.header("referrer-policy"),
            Some("same-origin"),
            "{path}"
        );
        if path.ends_with(".js") {
            let config: String = reply.text.chars().filter(|c| !c.is_whitespace()).collect();
            assert!(
                config.contains("\"persistAuthorization\":false"),
                "{}",
                reply.text
            );
        }
    }
}
