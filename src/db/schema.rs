// The tables of migrations/{sqlite,postgres}; only types both backends share.

diesel::table! {
    instance_settings (key) {
        key -> Text,
        value -> Text,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    projects (id) {
        id -> BigInt,
        name -> Text,
        path -> Text,
        namespace_path -> Text,
        description -> Nullable<Text>,
        repository_url -> Nullable<Text>,
        default_branch -> Text,
        protected_branches -> Text,
        build_timeout -> Integer,
        shared_runners_enabled -> Bool,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        shared_runners_minutes_limit -> Nullable<Integer>,
        push_hook_secret -> Nullable<Text>,
        mirror_interval -> Nullable<Integer>,
        mirror_pulled_at -> Nullable<Timestamp>,
        ci_delete_pipelines_in_seconds -> Nullable<Integer>,
    }
}

diesel::table! {
    runners (id) {
        id -> BigInt,
        runner_type -> Text,
        name -> Nullable<Text>,
        description -> Text,
        maintenance_note -> Nullable<Text>,
        tag_list -> Text,
        run_untagged -> Bool,
        locked -> Bool,
        paused -> Bool,
        access_level -> Text,
        maximum_timeout -> Nullable<Integer>,
        token_digest -> Binary,
        token_prefix -> Text,
        token_expires_at -> Nullable<Timestamp>,
        contacted_at -> Nullable<Timestamp>,
        creation_state -> Text,
        registration_type -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    runner_projects (runner_id, project_id) {
        runner_id -> BigInt,
        project_id -> BigInt,
        created_at -> Timestamp,
    }
}

diesel::table! {
    runner_managers (id) {
        id -> BigInt,
        runner_id -> BigInt,
        system_xid -> Text,
        version -> Nullable<Text>,
        revision -> Nullable<Text>,
        platform -> Nullable<Text>,
        architecture -> Nullable<Text>,
        executor_type -> Nullable<Text>,
        ip_address -> Nullable<Text>,
        config -> Text,
        labels -> Text,
        runtime_features -> Text,
        contacted_at -> Nullable<Timestamp>,
        creation_state -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    pipelines (id) {
        id -> BigInt,
        project_id -> BigInt,
        #[sql_name = "ref"]
        ref_ -> Text,
        sha -> Text,
        before_sha -> Text,
        tag -> Bool,
        protected -> Bool,
        source -> Text,
        status -> Text,
        ci_config -> Text,
        variables -> Text,
        stages -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        started_at -> Nullable<Timestamp>,
        finished_at -> Nullable<Timestamp>,
        name -> Nullable<Text>,
        auto_cancel_on_new_commit -> Text,
        auto_cancel_on_job_failure -> Text,
        has_sources -> Bool,
        yaml_errors -> Nullable<Text>,
        schedule_id -> Nullable<BigInt>,
        parent_bridge_id -> Nullable<BigInt>,
        stage_scheduled -> Bool,
    }
}

diesel::table! {
    jobs (id) {
        id -> BigInt,
        pipeline_id -> BigInt,
        project_id -> BigInt,
        name -> Text,
        stage -> Text,
        stage_idx -> Integer,
        status -> Text,
        when_ -> Text,
        allow_failure -> Bool,
        tag_list -> Text,
        options -> Text,
        protected -> Bool,
        timeout -> Nullable<Integer>,
        token_digest -> Nullable<Binary>,
        runner_id -> Nullable<BigInt>,
        runner_manager_id -> Nullable<BigInt>,
        failure_reason -> Nullable<Text>,
        exit_code -> Nullable<Integer>,
        retried -> Bool,
        cancel_gracefully -> Bool,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        queued_at -> Nullable<Timestamp>,
        started_at -> Nullable<Timestamp>,
        finished_at -> Nullable<Timestamp>,
        erased_at -> Nullable<Timestamp>,
        ack_deadline -> Nullable<Timestamp>,
        trace_size -> BigInt,
        trace_crc32 -> BigInt,
        trace_checksum_ok -> Nullable<Bool>,
        debug_trace -> Bool,
        dotenv_variables -> Text,
        scheduled_at -> Nullable<Timestamp>,
        resource_group_id -> Nullable<BigInt>,
        claims_alone -> Bool,
        interruptible -> Bool,
    }
}

diesel::table! {
    job_coverages (job_id) {
        job_id -> BigInt,
        coverage -> Double,
    }
}

diesel::table! {
    trace_chunks (id) {
        id -> BigInt,
        job_id -> BigInt,
        offset -> BigInt,
        data -> Binary,
    }
}

diesel::table! {
    job_artifacts (id) {
        id -> BigInt,
        job_id -> BigInt,
        project_id -> BigInt,
        file_type -> Text,
        file_format -> Text,
        filename -> Text,
        size -> BigInt,
        sha256 -> Text,
        store_path -> Text,
        expire_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    audit_events (id) {
        id -> BigInt,
        kind -> Text,
        actor -> Text,
        target_type -> Text,
        target_id -> BigInt,
        details -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    feature_flags (id) {
        id -> BigInt,
        name -> Text,
        scope_type -> Text,
        scope_key -> Text,
        enabled -> Bool,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    ci_minutes_usages (job_id) {
        job_id -> BigInt,
        project_id -> BigInt,
        runner_id -> BigInt,
        runner_type -> Text,
        duration_seconds -> Double,
        cost_factor -> Double,
        minutes -> Double,
        finished_at -> Timestamp,
    }
}

diesel::table! {
    ui_sessions (id_digest) {
        id_digest -> Binary,
        expires_at -> Timestamp,
        created_at -> Timestamp,
    }
}

diesel::joinable!(runner_projects -> runners (runner_id));
diesel::joinable!(runner_projects -> projects (project_id));
diesel::joinable!(runner_managers -> runners (runner_id));
diesel::joinable!(pipelines -> projects (project_id));
diesel::table! {
    mirror_heads (project_id, ref_) {
        project_id -> BigInt,
        #[sql_name = "ref"]
        ref_ -> Text,
        sha -> Text,
    }
}

diesel::table! {
    ci_variables (id) {
        id -> BigInt,
        project_id -> Nullable<BigInt>,
        key -> Text,
        value -> Text,
        variable_type -> Text,
        protected -> Bool,
        masked -> Bool,
        hidden -> Bool,
        raw -> Bool,
        environment_scope -> Text,
        description -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    pipeline_triggers (id) {
        id -> BigInt,
        project_id -> BigInt,
        description -> Text,
        token_digest -> Binary,
        token -> Text,
        last_used -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    pipeline_schedules (id) {
        id -> BigInt,
        project_id -> BigInt,
        description -> Text,
        #[sql_name = "ref"]
        ref_ -> Text,
        cron -> Text,
        cron_timezone -> Text,
        next_run_at -> Timestamp,
        active -> Bool,
        variables -> Text,
        last_pipeline_id -> Nullable<BigInt>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    job_test_reports (job_id) {
        job_id -> BigInt,
        pipeline_id -> BigInt,
        report -> Text,
    }
}

diesel::joinable!(jobs -> pipelines (pipeline_id));
diesel::joinable!(trace_chunks -> jobs (job_id));
diesel::joinable!(job_artifacts -> jobs (job_id));
diesel::joinable!(job_coverages -> jobs (job_id));

diesel::table! {
    resource_groups (id) {
        id -> BigInt,
        project_id -> BigInt,
        key -> Text,
        process_mode -> Text,
        holder_job_id -> Nullable<BigInt>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    id_token_signing_keys (id) {
        id -> BigInt,
        kid -> Text,
        private_key -> Text,
        created_at -> Timestamp,
        retired_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    environments (id) {
        id -> BigInt,
        project_id -> BigInt,
        name -> Text,
        slug -> Text,
        external_url -> Nullable<Text>,
        tier -> Text,
        state -> Text,
        description -> Nullable<Text>,
        auto_stop_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    deployments (id) {
        id -> BigInt,
        iid -> BigInt,
        project_id -> BigInt,
        environment_id -> BigInt,
        job_id -> BigInt,
        #[sql_name = "ref"]
        ref_ -> Text,
        tag -> Bool,
        sha -> Text,
        status -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        finished_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    releases (id) {
        id -> BigInt,
        project_id -> BigInt,
        tag_name -> Text,
        name -> Text,
        description -> Text,
        sha -> Text,
        links -> Text,
        released_at -> Timestamp,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    releases,
    environments,
    deployments,
    id_token_signing_keys,
    resource_groups,
    ci_variables,
    job_test_reports,
    pipeline_schedules,
    pipeline_triggers,
    mirror_heads,
    instance_settings,
    projects,
    runners,
    runner_projects,
    runner_managers,
    pipelines,
    jobs,
    trace_chunks,
    job_artifacts,
    job_coverages,
    audit_events,
    feature_flags,
    ci_minutes_usages,
    ui_sessions,
);
