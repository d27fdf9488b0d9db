//! Issue 24's keywords as the real gitlab-runner runs them: a child pipeline its bridge
//! depends on (`trigger:include`, `strategy: depend`), a deploy into an environment with an
//! `on_stop` job, two deploys kept apart by `resource_group` on a runner that runs
//! four jobs at once, a delayed job, and a job that verifies its `id_tokens` JWT against
//! Runway's JWKS with a small script (signature, audience, claims).

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::e2e::{
    commit_branch, create_pipeline, finished_pipeline, git, job, pipeline_jobs, trace,
};
use crate::helpers::{both_backends, TestApp, REGISTRATION_TOKEN};
use crate::real_runner::RealRunner;

const YAML: &str = r#"
stages: [build, deploy, verify, cleanup]
build:
  stage: build
  script: [ echo built ]
deploy_a:
  stage: deploy
  resource_group: production
  environment: { name: production, url: "https://prod.example.com", on_stop: stop_production }
  script: [ sleep 2, echo deployed a ]
deploy_b:
  stage: deploy
  resource_group: production
  environment: { name: production, url: "https://prod.example.com", on_stop: stop_production }
  script: [ sleep 2, echo deployed b ]
later:
  stage: verify
  when: delayed
  start_in: 1 second
  script: [ echo the delayed job ran ]
child:
  stage: verify
  variables: { PARENT: $CI_PIPELINE_ID }
  trigger: { include: child.yml, strategy: depend }
verify_token:
  stage: verify
  id_tokens:
    ID_TOKEN: { aud: "https://runway.test" }
  script: [ python3 verify_id_token.py ]
stop_production:
  stage: cleanup
  environment: { name: production, action: stop }
  when: manual
  script: [ echo stopping production ]
"#;

/// Verifies `$ID_TOKEN` as a cloud would: the RS256 signature with the JWKS key of its
/// `kid` (PKCS#1 v1.5 by hand, so nothing but Python's standard library), the audience,
/// and the claims against the job's own variables.
const VERIFY: &str = r#"
import base64, hashlib, json, os, urllib.request

def b64(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

token = os.environ["ID_TOKEN"]
head, body, signature = token.split(".")
header, claims = json.loads(b64(head)), json.loads(b64(body))
jwks = json.load(urllib.request.urlopen(os.environ["CI_SERVER_URL"] + "/oauth/discovery/keys"))
key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
n, e = int.from_bytes(b64(key["n"]), "big"), int.from_bytes(b64(key["e"]), "big")
size = (n.bit_length() + 7) // 8
decrypted = pow(int.from_bytes(b64(signature), "big"), e, n).to_bytes(size, "big")
digest = bytes.fromhex("3031300d060960864801650304020105000420") + hashlib.sha256((head + "." + body).encode()).digest()
assert decrypted == b"\x00\x01" + b"\xff" * (size - len(digest) - 3) + b"\x00" + digest, "bad signature"
assert header["alg"] == "RS256", header
assert claims["aud"] == "https://runway.test", claims["aud"]
assert claims["iss"] == os.environ["CI_SERVER_URL"], claims["iss"]
assert claims["project_path"] == os.environ["CI_PROJECT_PATH"], claims
assert claims["job_id"] == os.environ["CI_JOB_ID"], claims
assert claims["sha"] == os.environ["CI_COMMIT_SHA"], claims
assert claims["ref"] == os.environ["CI_COMMIT_REF_NAME"], claims
print("id token verified for", claims["sub"])
"#;

fn time_of(job: &Value, field: &str) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(
        job[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} of {job}")),
    )
    .expect("a time")
}

both_backends! {
    async fn the_real_runner_deploys_serialises_delays_and_verifies_its_id_token(backend) {
        let app = TestApp::spawn(backend).await;
        let repo = tempfile::tempdir().expect("tempdir");
        commit_branch(repo.path(), "main", YAML);
        std::fs::write(repo.path().join("verify_id_token.py"), VERIFY).expect("write");
        std::fs::write(repo.path().join("child.yml"), "child_job:\n  script: [ echo the child ran for $PARENT ]\n").expect("write");
        git(repo.path(), &["add", "."]);
        git(repo.path(), &["commit", "-q", "-m", "verify script"]);
        let project = app.create_project(json!({ "name": "deploys", "repository_url": repo.path().display().to_string() })).await;
        let runner = RealRunner::new();
        runner.register(&app.base, &["--registration-token", REGISTRATION_TOKEN]).await;
        runner.set_concurrent(4);
        let mut child = runner.run();
        let pipeline = create_pipeline(&app, project, "main").await;
        let status = finished_pipeline(&app, project, pipeline, || runner.log()).await;
        assert_eq!(status, "success", "runner log:\n{}", runner.log());
        let jobs = pipeline_jobs(&app, project, pipeline).await;

        // The runner could run both deploys at once; the group let one hold it at a time.
        let (a, b) = (job(&jobs, "deploy_a"), job(&jobs, "deploy_b"));
        let (first, second) = if time_of(a, "started_at") < time_of(b, "started_at") { (a, b) } else { (b, a) };
        assert!(time_of(second, "started_at") >= time_of(first, "finished_at"), "the deploys overlapped: {first} {second}");
        assert!(trace(&app, project, job(&jobs, "later")).await.contains("the delayed job ran"));
        let verified = trace(&app, project, job(&jobs, "verify_token")).await;
        assert!(verified.contains("id token verified for project_path:root/deploys:ref_type:branch:ref:main"), "{verified}");
        assert_eq!(job(&jobs, "stop_production")["status"], "manual");
        // The child pipeline ran on the same runner; its bridge followed it.
        let bridges = app.api(Method::GET, &format!("/projects/{project}/pipelines/{pipeline}/bridges"), None).await.json();
        assert_eq!(bridges[0]["status"], "success", "{bridges}");
        let child_pipeline = bridges[0]["downstream_pipeline"]["id"].as_i64().expect("a child pipeline");
        assert_eq!(bridges[0]["downstream_pipeline"]["status"], "success");
        let child_jobs = pipeline_jobs(&app, project, child_pipeline).await;
        let child_log = trace(&app, project, job(&child_jobs, "child_job")).await;
        assert!(child_log.contains(&format!("the child ran for {pipeline}")), "{child_log}");

        // Two successful deployments; stopping the environment runs stop_production.
        let deployments = app.api(Method::GET, &format!("/projects/{project}/deployments?status=success"), None).await.json();
        assert_eq!(deployments.as_array().map(Vec::len), Some(2), "{deployments}");
        let environments = app.api(Method::GET, &format!("/projects/{project}/environments"), None).await.json();
        let env = &environments[0];
        assert_eq!((env["name"].clone(), env["external_url"].clone()), (json!("production"), json!("https://prod.example.com")));
        let env_id = env["id"].as_i64().expect("id");
        let stopping = app.api(Method::POST, &format!("/projects/{project}/environments/{env_id}/stop"), None).await.json();
        assert_eq!(stopping["state"], "stopping");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let state = app.api(Method::GET, &format!("/projects/{project}/environments/{env_id}"), None).await.json()["state"].clone();
            if state == "stopped" {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the stop job never finished:\n{}", runner.log());
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
        let jobs = pipeline_jobs(&app, project, pipeline).await;
        assert!(trace(&app, project, job(&jobs, "stop_production")).await.contains("stopping production"));
        child.kill().await.ok();
    }
}
