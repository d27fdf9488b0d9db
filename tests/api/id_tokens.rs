//! `id_tokens` (issue 24, part 5): a job gets each of its ID tokens as a masked variable,
//! a JWT signed RS256 by Runway's key with GitLab's claims; the JWKS and the OpenID
//! configuration let anyone verify it; a rotation (API or `runway id-tokens rotate-key`)
//! signs later tokens with a new key while the old one still verifies.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{both_backends, TestApp, ADMIN_TOKEN};

const YAML: &str = r#"
deploy:
  variables: { AUDIENCE: https://sts.example.com }
  environment: { name: production }
  id_tokens:
    VAULT_ID_TOKEN: { aud: https://vault.example.com }
    CLOUD_ID_TOKEN: { aud: [ $AUDIENCE, second ] }
  script: [ deploy ]
"#;

/// The job's variable `key`.
fn variable(job: &Value, key: &str) -> Value {
    job["variables"]
        .as_array()
        .expect("variables")
        .iter()
        .find(|v| v["key"] == key)
        .cloned()
        .unwrap_or_else(|| panic!("no {key} in the payload"))
}

/// The token's header and claims, after checking its signature against the JWKS.
async fn verified(app: &TestApp, jwt: &str) -> (Value, Value) {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "{jwt}");
    let decode = |part: &str| -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
    };
    let (header, claims) = (decode(parts[0]), decode(parts[1]));
    let jwks = app
        .send(app.request(Method::GET, "/oauth/discovery/keys"))
        .await;
    assert_eq!(jwks.status, 200);
    let jwks = jwks.json();
    let key = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .unwrap_or_else(|| panic!("the token's key {} is not in {jwks}", header["kid"]))
        .clone();
    assert_eq!(
        (key["kty"].clone(), key["alg"].clone(), key["use"].clone()),
        (json!("RSA"), json!("RS256"), json!("sig"))
    );
    let n = URL_SAFE_NO_PAD
        .decode(key["n"].as_str().expect("n"))
        .expect("n");
    let e = URL_SAFE_NO_PAD
        .decode(key["e"].as_str().expect("e"))
        .expect("e");
    let signature = URL_SAFE_NO_PAD.decode(parts[2]).expect("signature");
    aws_lc_rs::signature::RsaPublicKeyComponents { n: &n, e: &e }
        .verify(
            &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
            format!("{}.{}", parts[0], parts[1]).as_bytes(),
            &signature,
        )
        .expect("the signature verifies with the JWKS key");
    (header, claims)
}

both_backends! {
    async fn a_jobs_id_tokens_verify_against_the_jwks_and_survive_a_rotation(backend) {
        let app = TestApp::spawn(backend).await;
        let discovery = app.send(app.request(Method::GET, "/.well-known/openid-configuration")).await;
        assert_eq!(discovery.status, 200);
        let discovery = discovery.json();
        assert_eq!(discovery["issuer"], app.base.as_str());
        assert_eq!(discovery["jwks_uri"], format!("{}/oauth/discovery/keys", app.base));
        assert_eq!(discovery["id_token_signing_alg_values_supported"], json!(["RS256"]));

        let project = app.create_project(json!({ "name": "oidc" })).await;
        let pipeline = app.pipeline(project, YAML).await;
        let (runner_id, token) = app.register_runner().await;
        let job = app.take_job(&token).await;
        let vault = variable(&job, "VAULT_ID_TOKEN");
        assert_eq!((vault["masked"].clone(), vault["public"].clone()), (json!(true), json!(false)));
        let jwt = vault["value"].as_str().expect("a JWT").to_string();
        let (header, claims) = verified(&app, &jwt).await;
        assert_eq!((header["alg"].clone(), header["typ"].clone()), (json!("RS256"), json!("JWT")));
        let sha = job["git_info"]["sha"].clone();
        for (claim, expected) in [
            ("iss", json!(app.base)),
            ("aud", json!("https://vault.example.com")),
            ("sub", json!("project_path:root/oidc:ref_type:branch:ref:main")),
            ("project_id", json!(project.to_string())),
            ("project_path", json!("root/oidc")),
            ("namespace_path", json!("root")),
            ("pipeline_id", json!(pipeline.to_string())),
            ("pipeline_source", json!("api")),
            ("job_id", json!(job["id"].as_i64().expect("id").to_string())),
            ("ref", json!("main")),
            ("ref_type", json!("branch")),
            ("ref_path", json!("refs/heads/main")),
            ("ref_protected", json!("true")),
            ("sha", sha.clone()),
            ("ci_config_sha", sha),
            ("runner_id", json!(runner_id)),
            ("runner_environment", json!("self-hosted")),
            ("environment", json!("production")),
            ("deployment_tier", json!("production")),
            ("environment_action", json!("start")),
            ("user_login", json!("root")),
        ] {
            assert_eq!(claims[claim], expected, "claim {claim} of {claims}");
        }
        let iat = claims["iat"].as_i64().expect("iat");
        assert_eq!(claims["nbf"].as_i64(), Some(iat - 5));
        assert_eq!(claims["exp"].as_i64(), Some(iat + 3600 + 300), "the job's timeout and five minutes");
        assert!(claims["jti"].as_str().is_some_and(|j| j.len() == 36), "{claims}");
        // Several audiences, `$VARS` expanded with the job's variables.
        let cloud = variable(&job, "CLOUD_ID_TOKEN");
        let (_, cloud) = verified(&app, cloud["value"].as_str().expect("JWT")).await;
        assert_eq!(cloud["aud"], json!(["https://sts.example.com", "second"]));
        app.update_job(&job, json!({ "state": "success" })).await;

        // A rotation through the API: later tokens use the new key, the old one verifies.
        let rotated = app.api(Method::POST, "/admin/ci/id_tokens/rotate_key", None).await;
        assert_eq!(rotated.status, 201, "{}", rotated.text);
        let kid = rotated.json()["kid"].as_str().expect("kid").to_string();
        assert_ne!(json!(kid), header["kid"]);
        let keys = app.send(app.request(Method::GET, "/oauth/discovery/keys")).await.json();
        assert_eq!(keys["keys"].as_array().map(Vec::len), Some(2), "{keys}");
        assert_eq!(keys["keys"][0]["kid"], kid.as_str(), "the key in use comes first");
        verified(&app, &jwt).await;
        app.pipeline(project, YAML).await;
        let next = app.take_job(&token).await;
        let (next_header, _) = verified(&app, variable(&next, "VAULT_ID_TOKEN")["value"].as_str().expect("JWT")).await;
        assert_eq!(next_header["kid"], kid.as_str());
        app.update_job(&next, json!({ "state": "success" })).await;

        // And with the command line; the admin token is needed for it.
        let cli = tokio::process::Command::new(env!("CARGO_BIN_EXE_runway"))
            .args(["id-tokens", "rotate-key", "--url", &app.base, "--token", ADMIN_TOKEN])
            .output()
            .await
            .expect("runway runs");
        assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
        let printed = String::from_utf8_lossy(&cli.stdout).trim().to_string();
        let keys = app.send(app.request(Method::GET, "/oauth/discovery/keys")).await.json();
        assert_eq!(keys["keys"][0]["kid"], printed.as_str());
        assert_eq!(keys["keys"].as_array().map(Vec::len), Some(3));
        let refused = app.send(app.request(Method::POST, "/api/v4/admin/ci/id_tokens/rotate_key")).await;
        assert_eq!(refused.status, 401);
    }
}
