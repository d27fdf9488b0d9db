//! The web pages in a real browser: Playwright (`playwright-core`, pinned in
//! `tests/browser/package.json`, installed by `scripts/test.sh` into a cache folder named by
//! `RUNWAY_TEST_PLAYWRIGHT_DIR`) drives Debian's headless Chromium through
//! `tests/browser/ui.mjs`: sign in, see a runner online, start a pipeline from the form,
//! watch its page follow a job from pending to running to success without a reload, watch
//! a job's log grow while the script PATCHes it as a runner would (an unfinished line shown
//! at once, a section's duration once it ends), cancel a job, download an artifact and
//! start a pipeline from an uploaded `.gitlab-ci.yml` with a variable. Screenshots of each page go to the test output folder.

use serde_json::json;

use crate::helpers::{Backend, TestApp, ADMIN_TOKEN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_work_in_chromium() {
    let playwright = std::env::var("RUNWAY_TEST_PLAYWRIGHT_DIR").unwrap_or_else(|_| {
        panic!("RUNWAY_TEST_PLAYWRIGHT_DIR is not set: it names a folder with node_modules/playwright-core; scripts/test.sh installs it")
    });
    let chromium =
        std::env::var("RUNWAY_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (runner_id, token) = app
        .create_runner(json!({ "runner_type": "instance_type", "description": "browser-runner" }))
        .await;
    // One poll: the runner has been in contact (online), with its version.
    assert_eq!(app.request_job(&token).await.status, 204);
    app.create_project(json!({ "name": "web" })).await;
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).expect("screenshot folder");

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/ui.mjs");
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(180),
        tokio::process::Command::new("node")
            .arg(script)
            .env("PLAYWRIGHT_DIR", &playwright)
            .env("CHROMIUM", &chromium)
            .env("RUNWAY_URL", &app.base)
            .env("ADMIN_TOKEN", ADMIN_TOKEN)
            .env("RUNNER_TOKEN", &token)
            .env("RUNNER_ID", runner_id.to_string())
            .env("SCREENSHOTS", &shots)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the browser script finishes within 180 s")
    .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser script failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all steps passed"), "{stdout}");

    for page in [
        "login",
        "runners",
        "new-pipeline",
        "new-pipeline-upload",
        "pipeline",
        "pipeline-live",
        "job-live",
        "job-canceled",
        "job-artifact",
        "runners-phone",
    ] {
        let png = std::fs::read(shots.join(format!("{page}.png"))).expect("screenshot");
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 5_000,
            "{page}: {} bytes",
            png.len()
        );
    }
    println!("screenshots: {}", shots.display());
}
