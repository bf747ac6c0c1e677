//! The one error type of the HTTP API: every error becomes a status and a body of one shape,
//! `{"error": {"code": "...", "message": "...", "fields": {...}}}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::metadata::MetadataError;
use crate::plugins::PluginError;
use crate::plugins::manifest::ManifestProblem;
use crate::records::RecordError;
use crate::store::StoreError;
use crate::workflows::WorkflowError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub fields: Option<Value>,
    /// Seconds for `Retry-After` (429).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            fields: None,
            retry_after: None,
        }
    }

    pub fn with_fields(mut self, fields: Value) -> Self {
        self.fields = Some(fields);
        self
    }

    /// 403 unless `principal` is an administrator; `needs` says for what ("reading the outbox").
    pub fn unless_admin(principal: &crate::auth::Principal, needs: &str) -> Result<(), Self> {
        if principal.is_admin() {
            Ok(())
        } else {
            Err(Self::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("{needs} needs an administrator's role"),
            ))
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    fn internal(error: &dyn std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the server log has the details",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(fields) = self.fields {
            error["fields"] = fields;
        }
        let mut response = (self.status, axum::Json(json!({ "error": error }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_str(&seconds.to_string()).expect("digits are a valid header"),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        if let StoreError::Database(sqlx::Error::PoolTimedOut) = error {
            return Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "the database is busy; retry shortly",
            );
        }
        if let StoreError::Refused(message) = error {
            return Self::new(StatusCode::UNPROCESSABLE_ENTITY, "refused", message);
        }
        Self::internal(&error)
    }
}

impl From<crate::users::UserError> for ApiError {
    fn from(error: crate::users::UserError) -> Self {
        use crate::users::UserError;
        let message = error.to_string();
        match error {
            UserError::Forbidden(_) => Self::new(StatusCode::FORBIDDEN, "forbidden", message),
            UserError::NotFound(_) => Self::not_found(message),
            UserError::Invalid(_, problems) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
                    .with_fields(by_path(problems.into_iter().map(|p| (p.path, p.message))))
            }
            UserError::Conflict(_) => Self::new(StatusCode::CONFLICT, "conflict", message),
            UserError::SignInFailed => Self::unauthorized(message),
            UserError::Locked(_) => Self::new(StatusCode::TOO_MANY_REQUESTS, "locked", message),
            UserError::TooManyAttempts(seconds) => {
                let mut error = Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message);
                error.retry_after = Some(seconds.max(1));
                error
            }
            UserError::Store(error) => error.into(),
        }
    }
}

impl From<MetadataError> for ApiError {
    fn from(error: MetadataError) -> Self {
        let message = error.to_string();
        match error {
            MetadataError::Forbidden => Self::new(StatusCode::FORBIDDEN, "forbidden", message),
            MetadataError::Invalid(problems) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_definition",
                message,
            )
            .with_fields(by_path(problems.into_iter().map(|p| (p.path, p.message)))),
            MetadataError::UnknownEntity(_) => {
                Self::new(StatusCode::NOT_FOUND, "unknown_entity", message)
            }
            MetadataError::AlreadyExists(_) => {
                Self::new(StatusCode::CONFLICT, "already_exists", message)
            }
            MetadataError::VersionMismatch { .. } => {
                Self::new(StatusCode::PRECONDITION_FAILED, "version_mismatch", message)
            }
            MetadataError::Referenced { referrers, .. } => {
                Self::new(StatusCode::CONFLICT, "entity_referenced", message)
                    .with_fields(json!({ "referenced_by": referrers }))
            }
            MetadataError::Duplicates { field, duplicates } => {
                Self::new(StatusCode::CONFLICT, "duplicate_values", message)
                    .with_fields(json!({ field: duplicates }))
            }
            MetadataError::Unconvertible(checks) => {
                let fields: serde_json::Map<String, Value> = checks
                    .into_iter()
                    .filter(|check| check.failures > 0)
                    .map(|check| (check.field.clone(), json!(check)))
                    .collect();
                Self::new(StatusCode::CONFLICT, "conversion_failed", message)
                    .with_fields(Value::Object(fields))
            }
            MetadataError::Refused(_) => Self::new(StatusCode::CONFLICT, "refused", message),
            MetadataError::Store(error) => error.into(),
        }
    }
}

impl From<RecordError> for ApiError {
    fn from(error: RecordError) -> Self {
        let message = error.to_string();
        match error {
            RecordError::NotFound { .. } => Self::not_found(message),
            RecordError::Invalid(fields) => {
                let summary = summarize(&fields);
                Self::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "validation_failed",
                    summary,
                )
                .with_fields(json!(fields))
            }
            RecordError::Conflict(fields) => {
                let summary = summarize(&fields);
                Self::new(StatusCode::CONFLICT, "unique_violation", summary)
                    .with_fields(json!(fields))
            }
            RecordError::VersionMismatch { .. } => {
                Self::new(StatusCode::PRECONDITION_FAILED, "version_mismatch", message)
            }
            RecordError::BadRequest(_) => Self::bad_request(message),
            RecordError::IdempotencyMismatch(_) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                message,
            ),
            RecordError::Plugin(failure) => {
                Self::new(StatusCode::FAILED_DEPENDENCY, "plugin_fault", message).with_fields(
                    json!({
                        "plugin": failure.plugin,
                        "version": failure.version,
                        "stage": failure.stage,
                        "entity": failure.entity,
                        "reason": failure.fault.kind(),
                    }),
                )
            }
            RecordError::ComputedUnavailable {
                entity,
                field,
                plugin,
                function,
            } => Self::new(StatusCode::FAILED_DEPENDENCY, "plugin_unavailable", message)
                .with_fields(json!({
                    "entity": entity,
                    "field": field,
                    "plugin": plugin,
                    "function": function,
                })),
            RecordError::Forbidden(_) => Self::new(StatusCode::FORBIDDEN, "forbidden", message),
            RecordError::DepthExceeded(_) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "depth_exceeded", message)
            }
            RecordError::Plugins(error) => error.into(),
            RecordError::Metadata(error) => error.into(),
            RecordError::Store(error) => error.into(),
        }
    }
}

impl From<PluginError> for ApiError {
    fn from(error: PluginError) -> Self {
        let message = error.to_string();
        let by_path = |problems: Vec<ManifestProblem>| {
            by_path(problems.into_iter().map(|p| (p.path, p.message)))
        };
        match error {
            PluginError::Forbidden => Self::new(StatusCode::FORBIDDEN, "forbidden", message),
            PluginError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "unknown_plugin", message),
            PluginError::InvalidManifest(problems) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_manifest",
                message,
            )
            .with_fields(by_path(problems)),
            PluginError::InvalidConfig(problems) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_config", message)
                    .with_fields(by_path(problems))
            }
            PluginError::InvalidComponent(_) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_component",
                message,
            ),
            PluginError::BadRequest(_) => Self::bad_request(message),
            PluginError::Store(error) => error.into(),
        }
    }
}

impl From<WorkflowError> for ApiError {
    fn from(error: WorkflowError) -> Self {
        let message = error.to_string();
        match error {
            WorkflowError::Forbidden => Self::new(StatusCode::FORBIDDEN, "forbidden", message),
            WorkflowError::Invalid(problems) => {
                let listed: Vec<String> = problems
                    .iter()
                    .map(|p| format!("{}: {}", p.path, p.message))
                    .collect();
                Self::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_definition",
                    format!("{message}: {}", listed.join("; ")),
                )
                .with_fields(by_path(problems.into_iter().map(|p| (p.path, p.message))))
            }
            WorkflowError::Unknown(_) => {
                Self::new(StatusCode::NOT_FOUND, "unknown_workflow", message)
            }
            WorkflowError::UnknownRun { .. } => {
                Self::new(StatusCode::NOT_FOUND, "unknown_run", message)
            }
            WorkflowError::AlreadyExists(_) => {
                Self::new(StatusCode::CONFLICT, "already_exists", message)
            }
            WorkflowError::VersionMismatch { .. } => {
                Self::new(StatusCode::PRECONDITION_FAILED, "version_mismatch", message)
            }
            WorkflowError::Refused(_) => Self::new(StatusCode::CONFLICT, "refused", message),
            WorkflowError::Store(error) => error.into(),
        }
    }
}

impl From<crate::webhooks::WebhookError> for ApiError {
    fn from(error: crate::webhooks::WebhookError) -> Self {
        use crate::webhooks::WebhookError;
        let message = error.to_string();
        match error {
            WebhookError::Forbidden => Self::new(StatusCode::FORBIDDEN, "forbidden", message),
            WebhookError::Invalid(problems) => {
                let listed: Vec<String> = problems
                    .iter()
                    .map(|p| format!("{}: {}", p.path, p.message))
                    .collect();
                Self::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_webhook",
                    format!("{message}: {}", listed.join("; ")),
                )
                .with_fields(by_path(problems.into_iter().map(|p| (p.path, p.message))))
            }
            WebhookError::Unknown(_) => {
                Self::new(StatusCode::NOT_FOUND, "unknown_webhook", message)
            }
            WebhookError::AlreadyExists(_) => {
                Self::new(StatusCode::CONFLICT, "already_exists", message)
            }
            WebhookError::Refused(_) => Self::new(StatusCode::CONFLICT, "refused", message),
            WebhookError::Store(error) => error.into(),
        }
    }
}

/// Problems grouped by their JSON path: `{"/fields/0/type": ["…", "…"]}`.
fn by_path(problems: impl Iterator<Item = (String, String)>) -> Value {
    let mut fields = serde_json::Map::new();
    for (path, message) in problems {
        let entry = fields.entry(path).or_insert_with(|| json!([]));
        entry.as_array_mut().expect("arrays").push(json!(message));
    }
    Value::Object(fields)
}

/// One line naming every offending field.
fn summarize(fields: &crate::metadata::record_schema::FieldErrors) -> String {
    let parts: Vec<String> = fields
        .iter()
        .map(|(field, messages)| {
            if field.is_empty() {
                messages.join("; ")
            } else {
                format!("`{field}`: {}", messages.join("; "))
            }
        })
        .collect();
    parts.join(", ")
}

impl From<crate::packs::PackError> for ApiError {
    fn from(error: crate::packs::PackError) -> Self {
        use crate::packs::PackError;
        let message = error.to_string();
        match error {
            PackError::Forbidden => Self::new(StatusCode::FORBIDDEN, "forbidden", message),
            PackError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "unknown_pack", message),
            PackError::NotInstalled(_) => {
                Self::new(StatusCode::NOT_FOUND, "pack_not_installed", message)
            }
            PackError::Refused(problems) => {
                let first = problems
                    .first()
                    .map(|p| {
                        format!(
                            " ({} problem{}; first: {}: {})",
                            problems.len(),
                            if problems.len() == 1 { "" } else { "s" },
                            p.path,
                            p.message
                        )
                    })
                    .unwrap_or_default();
                Self::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "pack_refused",
                    format!("{message}{first}"),
                )
                .with_fields(by_path(problems.into_iter().map(|p| (p.path, p.message))))
            }
            PackError::Store(error) => error.into(),
        }
    }
}

impl From<crate::views::ViewError> for ApiError {
    fn from(error: crate::views::ViewError) -> Self {
        use crate::views::ViewError;
        let message = error.to_string();
        match error {
            ViewError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "unknown_view", message),
            ViewError::BadRequest(_) => Self::bad_request(message),
            ViewError::Records(error) => error.into(),
            ViewError::Store(error) => error.into(),
        }
    }
}

impl From<crate::analytics::AnalyticsError> for ApiError {
    fn from(error: crate::analytics::AnalyticsError) -> Self {
        use crate::analytics::AnalyticsError;
        let message = error.to_string();
        match error {
            AnalyticsError::NotFound(kind, _) => Self::new(
                StatusCode::NOT_FOUND,
                match kind {
                    "dashboard" => "unknown_dashboard",
                    _ => "unknown_report",
                },
                message,
            ),
            AnalyticsError::Exists { .. } => {
                Self::new(StatusCode::CONFLICT, "already_exists", message)
            }
            AnalyticsError::Invalid(_, problems) => {
                let first = problems
                    .first()
                    .map(|p| format!(": {}: {}", p.path, p.message))
                    .unwrap_or_default();
                Self::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_definition",
                    format!("{message}{first}"),
                )
                .with_fields(by_path(problems.into_iter().map(|p| (p.path, p.message))))
            }
            AnalyticsError::BadRequest(_) => Self::bad_request(message),
            AnalyticsError::Records(error) => error.into(),
            AnalyticsError::Store(error) => error.into(),
        }
    }
}
