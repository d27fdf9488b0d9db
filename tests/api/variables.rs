//! CI/CD variables (issue 23): the admin API's shapes and GitLab's validations, values
//! sealed at rest, and what a job's payload carries — protection, environment scope,
//! file type, masking and GitLab's precedence.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{both_backends, TestApp};

/// The payload's variables by key: `(value, masked, file)`.
fn payload_variables(job: &Value) -> std::collections::HashMap<String, Value> {
    job["variables"]
        .as_array()
        .expect("variables")
        .iter()
        .map(|v| (v["key"].as_str().unwrap_or_default().to_string(), v.clone()))
        .collect()
}

both_backends! {
    async fn project_and_instance_variables_as_gitlabs_api(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "vars" })).await;
        let base = format!("/projects/{project}/variables");
        let created = app.api(Method::POST, &base, Some(json!({
            "key": "DEPLOY_TOKEN", "value": "s3cr3t-t0ken", "protected": true, "masked": true,
            "variable_type": "file", "description": "for deploys"
        }))).await;
        created.assert(201, json!({
            "variable_type": "file", "key": "DEPLOY_TOKEN", "value": "s3cr3t-t0ken", "hidden": false,
            "protected": true, "masked": true, "raw": false, "environment_scope": "*", "description": "for deploys"
        }));
        // Sealed at rest: the row does not hold the value.
        {
            let mut db = app.db.read().await.expect("connection");
            let rows = runway::db::models::CiVariable::list(&mut db.conn(), Some(project)).await.expect("rows");
            assert_eq!(rows.len(), 1);
            assert!(rows[0].value.starts_with("v1:") && !rows[0].value.contains("s3cr3t"), "{}", rows[0].value);
        }
        // GitLab's validations, in its words; nothing is written.
        app.api(Method::POST, &base, Some(json!({ "key": "DEPLOY_TOKEN", "value": "another-one" })))
            .await
            .assert(400, json!({ "message": { "key": ["(DEPLOY_TOKEN) has already been taken"] } }));
        app.api(Method::POST, &base, Some(json!({ "key": "SHORT", "value": "short", "masked": true })))
            .await
            .assert(400, json!({ "message": { "value": ["is invalid"] } }));
        app.api(Method::POST, &base, Some(json!({ "key": "SPACES", "value": "has a space", "masked": true })))
            .await
            .assert(400, json!({ "message": { "value": ["is invalid"] } }));
        app.api(Method::POST, &base, Some(json!({ "key": "BAD-KEY", "value": "x" })))
            .await
            .assert(400, json!({ "message": { "key": ["can contain only letters, digits and '_'."] } }));
        app.api(Method::POST, &base, Some(json!({ "key": "NO_VALUE" })))
            .await
            .assert(400, json!({ "error": "value is missing" }));
        app.api(Method::POST, &base, Some(json!({ "key": "T", "value": "x", "variable_type": "yaml" })))
            .await
            .assert(400, json!({ "error": "variable_type does not have a valid value" }));
        // A raw masked value may hold any non-space.
        let raw = app.api(Method::POST, &base, Some(json!({ "key": "RAW", "value": "p@$$w0rd!", "masked": true, "raw": true }))).await;
        assert_eq!(raw.status, 201, "{}", raw.text);

        // The same key in another environment scope; then it takes a filter.
        let scoped = app.api(Method::POST, &base, Some(json!({ "key": "DEPLOY_TOKEN", "value": "prod-t0ken-123", "environment_scope": "production" }))).await;
        assert_eq!((scoped.status, scoped.json()["environment_scope"].clone()), (201, json!("production")), "{}", scoped.text);
        app.api(Method::GET, &format!("{base}/DEPLOY_TOKEN"), None).await.assert(409, json!({
            "message": "There are multiple variables with provided parameters. Please use 'filter[environment_scope]'"
        }));
        let one = app.api(Method::GET, &format!("{base}/DEPLOY_TOKEN?filter[environment_scope]=production"), None).await;
        assert_eq!((one.status, one.json()["value"].clone()), (200, json!("prod-t0ken-123")), "{}", one.text);
        let listed = app.api(Method::GET, &base, None).await;
        assert_eq!(listed.status, 200);
        let keys: Vec<(String, String)> = listed.json().as_array().expect("list").iter()
            .map(|v| (v["key"].as_str().unwrap_or_default().into(), v["environment_scope"].as_str().unwrap_or_default().into()))
            .collect();
        assert_eq!(keys, [("DEPLOY_TOKEN".into(), "*".into()), ("DEPLOY_TOKEN".into(), "production".into()), ("RAW".into(), "*".into())]);

        // Update, hidden values, delete.
        let updated = app.api(Method::PUT, &format!("{base}/RAW"), Some(json!({ "value": "n3w-v@lue!", "protected": true }))).await;
        assert_eq!((updated.status, updated.json()["value"].clone(), updated.json()["protected"].clone(), updated.json()["masked"].clone()), (200, json!("n3w-v@lue!"), json!(true), json!(true)), "{}", updated.text);
        let hidden = app.api(Method::POST, &base, Some(json!({ "key": "HIDDEN", "value": "never-shown-again", "masked_and_hidden": true }))).await;
        assert_eq!((hidden.status, hidden.json()["value"].clone(), hidden.json()["hidden"].clone(), hidden.json()["masked"].clone()), (201, json!(null), json!(true), json!(true)), "{}", hidden.text);
        assert_eq!(app.api(Method::GET, &format!("{base}/HIDDEN"), None).await.json()["value"], json!(null));
        app.api(Method::PUT, &format!("{base}/HIDDEN"), Some(json!({ "masked": false }))).await
            .assert(400, json!({ "message": { "masked": ["cannot be unset for a hidden variable"] } }));
        let deleted = app.api(Method::DELETE, &format!("{base}/RAW"), None).await;
        assert_eq!(deleted.status, 204);
        app.api(Method::GET, &format!("{base}/RAW"), None).await.assert(404, json!({ "message": "404 Variable Not Found" }));
        app.api(Method::GET, "/projects/999/variables", None).await.assert(404, json!({ "message": "404 Project Not Found" }));

        // The instance's: no environment scope.
        let instance = app.api(Method::POST, "/admin/ci/variables", Some(json!({ "key": "REGISTRY", "value": "mirror.example.com" }))).await;
        instance.assert(201, json!({
            "variable_type": "env_var", "key": "REGISTRY", "value": "mirror.example.com", "hidden": false,
            "protected": false, "masked": false, "raw": false, "description": null
        }));
        app.api(Method::POST, "/admin/ci/variables", Some(json!({ "key": "REGISTRY", "value": "x" }))).await
            .assert(400, json!({ "message": { "key": ["(REGISTRY) has already been taken"] } }));
        assert_eq!(app.api(Method::GET, "/admin/ci/variables", None).await.json().as_array().map(Vec::len), Some(1));
        assert_eq!(app.api(Method::GET, &base, None).await.json().as_array().map(Vec::len), Some(3), "the instance's are not the project's");
        let changed = app.api(Method::PUT, "/admin/ci/variables/REGISTRY", Some(json!({ "value": "other.example.com" }))).await;
        assert_eq!(changed.json()["value"], "other.example.com");
        assert_eq!(app.api(Method::DELETE, "/admin/ci/variables/REGISTRY", None).await.status, 204);
        // Without the admin token: nothing.
        let anonymous = app.send(app.request(Method::GET, &format!("/api/v4{base}"))).await;
        assert_eq!(anonymous.status, 401);
    }
}

both_backends! {
    // What a job gets: protected variables only on protected refs, a project variable's
    // environment scope against the job's environment, file type and masking flags, and
    // GitLab's precedence (pipeline > project > instance > dotenv > job > global >
    // deployment > predefined), one entry per key.
    async fn jobs_get_variables_by_gitlabs_rules_and_precedence(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "payload" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let base = format!("/projects/{project}/variables");
        for (key, value) in [("P", "instance"), ("Q", "instance"), ("R", "instance"), ("INSTANCE_ONLY", "from the instance")] {
            let reply = app.api(Method::POST, "/admin/ci/variables", Some(json!({ "key": key, "value": value }))).await;
            assert_eq!(reply.status, 201, "{}", reply.text);
        }
        for body in [
            json!({ "key": "P", "value": "project" }),
            json!({ "key": "Q", "value": "project" }),
            json!({ "key": "CI_COMMIT_REF_NAME", "value": "overridden" }),
            json!({ "key": "SECRET_FILE", "value": "c3cr3t-file-content", "variable_type": "file", "masked": true, "protected": true }),
            json!({ "key": "DEPLOY_URL", "value": "https://review.example.com", "environment_scope": "review/*" }),
            json!({ "key": "DEPLOY_URL", "value": "https://prod.example.com", "environment_scope": "production" }),
            json!({ "key": "DEPLOY_URL", "value": "https://any.example.com" }),
        ] {
            let reply = app.api(Method::POST, &base, Some(body)).await;
            assert_eq!(reply.status, 201, "{}", reply.text);
        }
        let yaml = "variables: { P: global, Q: global, R: global, S: global, T: global }\n\
            build: { script: [x], variables: { P: job, Q: job, R: job, S: job } }\n\
            review: { script: [x], environment: { name: review/app-1 } }\n\
            deploy: { script: [x], environment: { name: production } }\n\
            other: { script: [x], environment: { name: staging } }\n";
        let created = app.send(app.admin(Method::POST, &format!("/api/v4/projects/{project}/pipeline"))
            .json(&json!({ "ref": "main", "ci_config": yaml, "variables": [{ "key": "P", "value": "pipeline" }] }))).await;
        assert_eq!(created.status, 201, "{}", created.text);
        let mut by_name = std::collections::HashMap::new();
        for _ in 0..4 {
            let job = app.take_job(&runner).await;
            by_name.insert(job["job_info"]["name"].as_str().unwrap_or_default().to_string(), job);
        }
        let build = &by_name["build"];
        let vars = payload_variables(build);
        let value = |key: &str| vars.get(key).map(|v| v["value"].clone()).unwrap_or(Value::Null);
        // The precedence table, one row per layer that wins.
        assert_eq!(
            ["P", "Q", "R", "S", "T", "INSTANCE_ONLY", "CI_COMMIT_REF_NAME"].map(value),
            [json!("pipeline"), json!("project"), json!("instance"), json!("job"), json!("global"), json!("from the instance"), json!("overridden")]
        );
        let keys: Vec<&str> = build["variables"].as_array().expect("list").iter().filter_map(|v| v["key"].as_str()).collect();
        assert_eq!(keys.iter().filter(|k| **k == "P").count(), 1, "one entry per key");
        // Protected, file and masked on main (protected as the default branch).
        assert_eq!(vars["SECRET_FILE"], json!({ "key": "SECRET_FILE", "value": "c3cr3t-file-content", "public": false, "masked": true, "file": true }));
        assert_eq!(vars["INSTANCE_ONLY"], json!({ "key": "INSTANCE_ONLY", "value": "from the instance", "public": false, "masked": false }));
        // Environment scopes: the most specific wins; a job without one gets `*` only.
        let url = |name: &str| payload_variables(&by_name[name])["DEPLOY_URL"]["value"].clone();
        assert_eq!(
            ["build", "review", "deploy", "other"].map(url),
            [json!("https://any.example.com"), json!("https://review.example.com"), json!("https://prod.example.com"), json!("https://any.example.com")]
        );

        // An unprotected branch: no protected variables.
        let feature = app.create_pipeline(project, "feature", "job: { script: [x] }\n").await;
        assert_eq!(feature.status, 201, "{}", feature.text);
        let job = app.take_job(&runner).await;
        let vars = payload_variables(&job);
        assert!(!vars.contains_key("SECRET_FILE"), "{vars:?}");
        assert_eq!(vars["P"]["value"], "project");
    }
}

both_backends! {
    // `rules:if` sees CI/CD variables when the pipeline is created (protected ones only
    // on a protected ref), below the pipeline's own.
    async fn rules_see_ci_cd_variables(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "ruled" })).await;
        let base = format!("/projects/{project}/variables");
        for body in [
            json!({ "key": "DEPLOY_ENABLED", "value": "yes" }),
            json!({ "key": "PROTECTED_FLAG", "value": "on", "protected": true }),
            json!({ "key": "OVERRIDDEN", "value": "project" }),
        ] {
            assert_eq!(app.api(Method::POST, &base, Some(body)).await.status, 201);
        }
        let yaml = "deploy: { script: [x], rules: [ { if: '$DEPLOY_ENABLED == \"yes\"' } ] }\n\
            guarded: { script: [x], rules: [ { if: $PROTECTED_FLAG } ] }\n\
            piped: { script: [x], rules: [ { if: '$OVERRIDDEN == \"pipeline\"' } ] }\n\
            always: { script: [x] }\n";
        let names = |created: crate::helpers::Reply| {
            assert_eq!(created.status, 201, "{}", created.text);
            created.json()
        };
        let on_main = names(app.send(app.admin(Method::POST, &format!("/api/v4/projects/{project}/pipeline"))
            .json(&json!({ "ref": "main", "ci_config": yaml, "variables": [{ "key": "OVERRIDDEN", "value": "pipeline" }] }))).await);
        assert_eq!(app.job_names(project, &on_main).await, ["always", "deploy", "guarded", "piped"]);
        let on_feature = names(app.create_pipeline(project, "feature", yaml).await);
        assert_eq!(app.job_names(project, &on_feature).await, ["always", "deploy"]);
    }
}

both_backends! {
    // The variables polls and pipelines read are kept a moment between reads; a change
    // through the API (create, update, delete; project or instance) reaches the very next
    // pipeline's rules and the very next job's payload.
    async fn a_changed_variable_reaches_the_next_pipeline_and_job_at_once(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "changing" })).await;
        let (_, runner) = app.create_runner(json!({ "runner_type": "instance_type" })).await;
        let base = format!("/projects/{project}/variables");
        let yaml = "job: { script: [x] }\nflagged: { script: [x], rules: [ { if: '$FLAG == \"on\"' } ] }\n";
        let (app, runner) = (&app, runner.as_str());
        // The job names the next pipeline has, and the variables its first job sees.
        let run = || async {
            let created = app.create_pipeline(project, "main", yaml).await;
            assert_eq!(created.status, 201, "{}", created.text);
            let names = app.job_names(project, &created.json()).await;
            let job = app.take_job(runner).await;
            let vars = payload_variables(&job);
            let value = |key: &str| vars.get(key).map(|v| v["value"].clone()).unwrap_or(Value::Null);
            (names, value("TOKEN"), value("FLAG"), value("MIRROR"))
        };
        let drain = |n: usize| async move {
            for _ in 0..n {
                let _ = app.take_job(runner).await;
            }
        };
        assert_eq!(run().await, (vec!["job".to_string()], Value::Null, Value::Null, Value::Null));
        for body in [json!({ "key": "TOKEN", "value": "one" }), json!({ "key": "FLAG", "value": "on" })] {
            assert_eq!(app.api(Method::POST, &base, Some(body)).await.status, 201);
        }
        assert_eq!(app.api(Method::POST, "/admin/ci/variables", Some(json!({ "key": "MIRROR", "value": "a" }))).await.status, 201);
        let both = vec!["flagged".to_string(), "job".to_string()];
        assert_eq!(run().await, (both.clone(), json!("one"), json!("on"), json!("a")));
        drain(1).await;
        assert_eq!(app.api(Method::PUT, &format!("{base}/TOKEN"), Some(json!({ "value": "two" }))).await.status, 200);
        assert_eq!(app.api(Method::PUT, "/admin/ci/variables/MIRROR", Some(json!({ "value": "b" }))).await.status, 200);
        assert_eq!(run().await, (both, json!("two"), json!("on"), json!("b")));
        drain(1).await;
        assert_eq!(app.api(Method::DELETE, &format!("{base}/FLAG"), None).await.status, 204);
        assert_eq!(app.api(Method::DELETE, "/admin/ci/variables/MIRROR", None).await.status, 204);
        assert_eq!(run().await, (vec!["job".to_string()], json!("two"), Value::Null, Value::Null));
    }
}

both_backends! {
    // `GET /pipelines/:id/variables` lists what the pipeline was created with;
    // `GET /pipelines/latest` is the newest of a ref (the default branch by default).
    async fn pipeline_variables_and_the_latest_pipeline(backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.create_project(json!({ "name": "latest" })).await;
        let create = |ref_: &'static str| {
            app.send(app.admin(Method::POST, &format!("/api/v4/projects/{project}/pipeline"))
                .json(&json!({ "ref": ref_, "ci_config": "job: { script: [x] }\n", "variables": [{ "key": "WHERE", "value": ref_ }] })))
        };
        app.api(Method::GET, &format!("/projects/{project}/pipelines/latest"), None).await
            .assert(404, json!({ "message": "404 Pipeline Not Found" }));
        let first = create("main").await.json();
        let second = create("main").await.json();
        let feature = create("feature").await.json();
        let latest = app.api(Method::GET, &format!("/projects/{project}/pipelines/latest"), None).await;
        assert_eq!((latest.status, latest.json()["id"].clone()), (200, second["id"].clone()), "{}", latest.text);
        let on_feature = app.api(Method::GET, &format!("/projects/{project}/pipelines/latest?ref=feature"), None).await;
        assert_eq!(on_feature.json()["id"], feature["id"]);
        app.api(Method::GET, &format!("/projects/{project}/pipelines/{}/variables", first["id"]), None).await
            .assert(200, json!([{ "variable_type": "env_var", "key": "WHERE", "value": "main" }]));
        app.api(Method::GET, &format!("/projects/{project}/pipelines/999/variables"), None).await
            .assert(404, json!({ "message": "404 Pipeline Not Found" }));
    }
}
