//! Enumerations stored as text in GitLab's own snake_case spelling, so the database, the
//! wire and GitLab's documentation all read the same. One `ToSql`/`FromSql` pair per enum,
//! generic over both backends.

/// Declares a text-backed enum with its wire spelling, `Serialize`/`Deserialize`,
/// `ToSchema` and diesel conversions.
macro_rules! text_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
                 utoipa::ToSchema, diesel::AsExpression, diesel::FromSqlRow)]
        #[diesel(sql_type = diesel::sql_types::Text)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(text: &str) -> Option<$name> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl<DB> diesel::serialize::ToSql<diesel::sql_types::Text, DB> for $name
        where
            DB: diesel::backend::Backend,
            str: diesel::serialize::ToSql<diesel::sql_types::Text, DB>,
        {
            fn to_sql<'b>(
                &'b self,
                out: &mut diesel::serialize::Output<'b, '_, DB>,
            ) -> diesel::serialize::Result {
                self.as_str().to_sql(out)
            }
        }

        impl<DB> diesel::deserialize::FromSql<diesel::sql_types::Text, DB> for $name
        where
            DB: diesel::backend::Backend,
            String: diesel::deserialize::FromSql<diesel::sql_types::Text, DB>,
        {
            fn from_sql(bytes: DB::RawValue<'_>) -> diesel::deserialize::Result<Self> {
                let text = String::from_sql(bytes)?;
                $name::parse(&text)
                    .ok_or_else(|| format!("unknown {} {text:?}", stringify!($name)).into())
            }
        }
    };
}

text_enum! {
    /// `Ci::Runner#runner_type` ‹app/models/ci/runner.rb›.
    pub enum RunnerType {
        Instance => "instance_type",
        Group => "group_type",
        Project => "project_type",
    }
}

text_enum! {
    /// `Ci::Runner#access_level`: a `ref_protected` runner only takes jobs of protected refs.
    pub enum AccessLevel {
        NotProtected => "not_protected",
        RefProtected => "ref_protected",
    }
}

text_enum! {
    /// `creation_state` of runners and runner managers: `finished` after the first job request.
    pub enum CreationState {
        Started => "started",
        Finished => "finished",
    }
}

text_enum! {
    /// How a runner came to be: legacy registration token, or created by an admin (`glrt-`).
    pub enum RegistrationType {
        RegistrationToken => "registration_token",
        AuthenticatedUser => "authenticated_user",
    }
}

text_enum! {
    /// Scope of a feature-flag gate (GitLab's Flipper actors, reduced to what Runway has).
    pub enum FlagScope {
        Instance => "instance",
        Runner => "runner",
        Namespace => "namespace",
    }
}

text_enum! {
    /// `Ci::HasStatus` statuses of jobs (builds) ‹app/models/concerns/ci/has_status.rb›.
    pub enum JobStatus {
        Created => "created",
        WaitingForResource => "waiting_for_resource",
        Preparing => "preparing",
        Pending => "pending",
        Running => "running",
        Success => "success",
        Failed => "failed",
        Canceling => "canceling",
        Canceled => "canceled",
        Skipped => "skipped",
        Manual => "manual",
        Scheduled => "scheduled",
    }
}

impl JobStatus {
    /// GitLab's `COMPLETED_STATUSES` ‹app/models/concerns/ci/has_status.rb›: the job has
    /// ended and will not change again (unless retried, as a new job).
    pub fn is_complete(self) -> bool {
        matches!(
            self,
            JobStatus::Success | JobStatus::Failed | JobStatus::Canceled | JobStatus::Skipped
        )
    }
}

text_enum! {
    /// Pipeline statuses, GitLab's names.
    pub enum PipelineStatus {
        Created => "created",
        WaitingForResource => "waiting_for_resource",
        Preparing => "preparing",
        Pending => "pending",
        Running => "running",
        Success => "success",
        Failed => "failed",
        Canceling => "canceling",
        Canceled => "canceled",
        Skipped => "skipped",
        Manual => "manual",
        Scheduled => "scheduled",
    }
}

impl PipelineStatus {
    /// GitLab's `COMPLETED_STATUSES`, as for jobs: the pipeline has ended (until a retry
    /// makes it run again).
    pub fn is_complete(self) -> bool {
        matches!(
            self,
            PipelineStatus::Success
                | PipelineStatus::Failed
                | PipelineStatus::Canceled
                | PipelineStatus::Skipped
        )
    }
}
