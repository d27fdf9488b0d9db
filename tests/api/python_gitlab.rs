//! python-gitlab (PyPI), unchanged, against the server: `tests/python/python_gitlab_check.py`
//! run with the interpreter in `RUNWAY_TEST_PYTHON` (a virtualenv `scripts/test.sh` makes).

use crate::helpers::{both_backends, TestApp, ADMIN_TOKEN, REGISTRATION_TOKEN};

both_backends! {
    async fn python_gitlab_works_unchanged(backend) {
        let app = TestApp::spawn(backend).await;
        let python = std::env::var("RUNWAY_TEST_PYTHON").unwrap_or_else(|_| {
            panic!("RUNWAY_TEST_PYTHON is not set: it names a Python with python-gitlab installed; scripts/test.sh sets it")
        });
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/python_gitlab_check.py");
        let output = tokio::process::Command::new(python)
            .arg(script)
            .arg(&app.base)
            .arg(ADMIN_TOKEN)
            .arg(REGISTRATION_TOKEN)
            .output()
            .await
            .expect("python runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "python-gitlab check failed:\n{stdout}\n{stderr}");
        assert!(stdout.contains("all checks passed"), "{stdout}");
    }
}
