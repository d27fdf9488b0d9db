//! schemathesis (PyPI, pinned in `tests/python/requirements.txt`) against a live server on
//! each backend: it generates requests for every operation of the served document, valid
//! and not, and checks that no answer is a 5xx and that every answer conforms to the
//! document (status codes, content types, headers, bodies). Bounded: a fixed seed, at
//! most 40 examples per operation, 10 s per request, 6 minutes in all. The few checks
//! that do not apply to GitLab's API, and why, are in `tests/python/schemathesis.toml`.

use std::time::Duration;

use crate::helpers::{both_backends, TestApp, ADMIN_TOKEN};

both_backends! {
    async fn schemathesis_finds_nothing(backend) {
        let app = TestApp::spawn(backend).await;
        let python = std::env::var("RUNWAY_TEST_PYTHON").unwrap_or_else(|_| {
            panic!("RUNWAY_TEST_PYTHON is not set: scripts/test.sh makes a virtualenv with schemathesis")
        });
        let schemathesis = std::path::Path::new(&python).with_file_name("schemathesis");
        let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/schemathesis.toml");
        // Its example database and reports go to a folder of this run, not the clone.
        let workdir = tempfile::tempdir().expect("tempdir");
        let output = tokio::time::timeout(
            Duration::from_secs(360),
            tokio::process::Command::new(&schemathesis)
                .args(["--no-color", "--config-file", config, "run"])
                .arg(app.url("/api/openapi.json"))
                .args(["--url", &app.base])
                .args(["--header", &format!("PRIVATE-TOKEN: {ADMIN_TOKEN}")])
                .args(["--max-examples", "40", "--seed", "20261128", "--no-shrink"])
                // One worker: CPython 3.11 can fail with "AST constructor recursion depth
                // mismatch" when two threads compile at once (seen once with two workers).
                .args(["--request-timeout", "10", "--workers", "1"])
                .current_dir(workdir.path())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("schemathesis finishes within 6 minutes")
        .expect("schemathesis starts");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "schemathesis found failures:\n{stdout}\n{stderr}");
        assert!(stdout.contains("Tested: "), "{stdout}");
        let summary: Vec<&str> = stdout.lines().filter(|l| l.contains("generated") || l.starts_with("Tested")).collect();
        println!("schemathesis ({backend:?}): {summary:?}");
    }
}
