//! Plugin manifests: validated against `schemas/plugin-manifest.schema.json`, then by rules the
//! schema cannot say (the contract version, limits within the server's ceilings, a valid
//! configuration schema and default configuration).

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::runtime::MAX_MEMORY;

static MANIFEST_SCHEMA: LazyLock<jsonschema::Validator> = LazyLock::new(|| {
    let schema: Value =
        serde_json::from_str(include_str!("../../../schemas/plugin-manifest.schema.json"))
            .expect("the manifest schema is JSON");
    jsonschema::validator_for(&schema).expect("the manifest schema is a valid JSON Schema")
});

/// The contract versions this host runs: `0.1.x`.
pub const CONTRACT_MAJOR_MINOR: &str = "0.1";

/// A problem with a manifest, at a JSON path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManifestProblem {
    pub path: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub id: String,
    pub version: String,
    pub contract: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub provides: Provides,
    #[serde(default)]
    pub capabilities: Capabilities,
    #[serde(default)]
    pub limits: RequestedLimits,
    /// Limits of workflow steps (jobs such as segmentation, outside any record write), within
    /// the job ceilings; steps of a manifest without them run under `limits`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_limits: Option<RequestedLimits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_schema: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_config: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provides {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validators: Vec<Binding>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<HookBinding>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub computed: Vec<ComputedFunction>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workflow_steps: Vec<WorkflowStep>,
}

/// A validator for an entity and some operations (all when none are named).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Binding {
    pub entity: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operations: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookBinding {
    pub entity: String,
    pub stage: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operations: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComputedFunction {
    pub function: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowStep {
    pub step: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<Value>,
}

/// What a plugin may ask of the host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    #[serde(default)]
    pub read: Vec<String>,
    #[serde(default)]
    pub write: Vec<String>,
    #[serde(default)]
    pub outbox: Vec<String>,
}

impl Capabilities {
    /// Each capability of `self` that `other` lacks, as `read contact`, `outbox email`…
    pub fn missing_from(&self, other: &Capabilities) -> Vec<String> {
        let mut missing = Vec::new();
        for (kind, mine, theirs) in [
            ("read", &self.read, &other.read),
            ("write", &self.write, &other.write),
            ("outbox", &self.outbox, &other.outbox),
        ] {
            for item in mine {
                if !theirs.contains(item) {
                    missing.push(format!("{kind} {item}"));
                }
            }
        }
        missing
    }
}

/// Limits as a manifest asks for them (each optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestedLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_calls: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writes: Option<u64>,
}

/// The limits an invocation runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    pub fuel: u64,
    pub memory_mb: u64,
    pub timeout_ms: u64,
    pub host_calls: u64,
    pub rows: u64,
    pub writes: u64,
}

impl Limits {
    /// The server's defaults and, at the same time, its ceilings.
    pub const MAX: Limits = Limits {
        fuel: 100_000_000,
        memory_mb: (MAX_MEMORY >> 20) as u64,
        timeout_ms: 1_000,
        host_calls: 1_000,
        rows: 10_000,
        writes: 100,
    };

    /// The ceilings of workflow steps that ask for job limits: a job reads a whole entity
    /// (`records.scan`) and computes over it, off the request path, in its step's transaction.
    pub const JOB_MAX: Limits = Limits {
        fuel: 200_000_000_000,
        memory_mb: (MAX_MEMORY >> 20) as u64,
        timeout_ms: 120_000,
        host_calls: 100_000,
        rows: 10_000_000,
        writes: 100_000,
    };

    /// A manifest's limits within the ceilings.
    pub fn from_requested(requested: &RequestedLimits) -> Self {
        Self::within(requested, Self::MAX)
    }

    /// Job limits within the job ceilings.
    pub fn job_from_requested(requested: &RequestedLimits) -> Self {
        Self::within(requested, Self::JOB_MAX)
    }

    fn within(requested: &RequestedLimits, max: Limits) -> Self {
        let pick = |asked: Option<u64>, ceiling: u64| asked.unwrap_or(ceiling).min(ceiling);
        Self {
            fuel: pick(requested.fuel, max.fuel),
            memory_mb: pick(requested.memory_mb, max.memory_mb),
            timeout_ms: pick(requested.timeout_ms, max.timeout_ms),
            host_calls: pick(requested.host_calls, max.host_calls),
            rows: pick(requested.rows, max.rows),
            writes: pick(requested.writes, max.writes),
        }
    }

    pub fn memory_bytes(&self) -> usize {
        usize::try_from(self.memory_mb << 20).unwrap_or(MAX_MEMORY)
    }
}

impl Manifest {
    /// Parses and checks a manifest; every problem is reported with its JSON path.
    pub fn parse(value: &Value) -> Result<Self, Vec<ManifestProblem>> {
        let problems: Vec<ManifestProblem> = MANIFEST_SCHEMA
            .iter_errors(value)
            .map(|error| ManifestProblem {
                path: error.instance_path().to_string(),
                message: error.to_string(),
            })
            .collect();
        if !problems.is_empty() {
            return Err(problems);
        }
        let manifest: Manifest = serde_json::from_value(value.clone()).map_err(|error| {
            vec![ManifestProblem {
                path: String::new(),
                message: error.to_string(),
            }]
        })?;
        let mut problems = Vec::new();
        let major_minor = manifest.contract.rsplit_once('.').map(|(mm, _)| mm);
        if major_minor != Some(CONTRACT_MAJOR_MINOR) {
            problems.push(ManifestProblem {
                path: "/contract".into(),
                message: format!(
                    "contract `{}` is not supported: this server runs rapport:plugin@{CONTRACT_MAJOR_MINOR}.x",
                    manifest.contract
                ),
            });
        }
        let config_schema = match &manifest.config_schema {
            Some(schema) => match jsonschema::validator_for(schema) {
                Ok(validator) => Some(validator),
                Err(error) => {
                    problems.push(ManifestProblem {
                        path: "/config_schema".into(),
                        message: format!("not a valid JSON Schema: {error}"),
                    });
                    None
                }
            },
            None => None,
        };
        if let (Some(validator), Some(default)) = (&config_schema, &manifest.default_config) {
            for error in validator.iter_errors(default) {
                problems.push(ManifestProblem {
                    path: format!("/default_config{}", error.instance_path()),
                    message: error.to_string(),
                });
            }
        }
        if problems.is_empty() {
            Ok(manifest)
        } else {
            Err(problems)
        }
    }

    pub fn limits(&self) -> Limits {
        Limits::from_requested(&self.limits)
    }

    /// The limits of its workflow steps: `job_limits` within the job ceilings, or `limits`.
    pub fn job_limits(&self) -> Limits {
        match &self.job_limits {
            Some(requested) => Limits::job_from_requested(requested),
            None => self.limits(),
        }
    }

    /// Checks a tenant's configuration against the manifest's configuration schema.
    pub fn check_config(&self, config: &Value) -> Result<(), Vec<ManifestProblem>> {
        if !config.is_object() {
            return Err(vec![ManifestProblem {
                path: String::new(),
                message: "the configuration must be a JSON object".into(),
            }]);
        }
        let Some(schema) = &self.config_schema else {
            return Ok(());
        };
        let validator = jsonschema::validator_for(schema).map_err(|error| {
            vec![ManifestProblem {
                path: String::new(),
                message: format!("the manifest's configuration schema is invalid: {error}"),
            }]
        })?;
        let problems: Vec<ManifestProblem> = validator
            .iter_errors(config)
            .map(|error| ManifestProblem {
                path: error.instance_path().to_string(),
                message: error.to_string(),
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn minimal() -> Value {
        json!({"id": "credit-terms", "version": "1.0.0", "contract": "0.1.0", "provides": {}})
    }

    #[test]
    fn a_minimal_manifest_gets_the_server_limits() {
        let manifest = Manifest::parse(&minimal()).unwrap();
        assert_eq!(manifest.limits(), Limits::MAX);
    }

    #[test]
    fn job_limits_have_their_own_ceilings_and_default_to_the_limits() {
        let mut value = minimal();
        assert_eq!(Manifest::parse(&value).unwrap().job_limits(), Limits::MAX);
        value["job_limits"] =
            json!({"fuel": u64::MAX / 2, "timeout_ms": 30_000, "rows": 2_000_000});
        let limits = Manifest::parse(&value).unwrap().job_limits();
        assert_eq!(limits.fuel, Limits::JOB_MAX.fuel);
        assert_eq!(limits.timeout_ms, 30_000);
        assert_eq!(limits.rows, 2_000_000);
        assert_eq!(limits.writes, Limits::JOB_MAX.writes);
    }

    #[test]
    fn limits_above_the_ceiling_are_lowered() {
        let mut value = minimal();
        value["limits"] = json!({"fuel": u64::MAX / 2, "timeout_ms": 5});
        let limits = Manifest::parse(&value).unwrap().limits();
        assert_eq!(limits.fuel, Limits::MAX.fuel);
        assert_eq!(limits.timeout_ms, 5);
    }

    #[test]
    fn problems_come_with_their_paths() {
        let mut value = minimal();
        value["id"] = json!("Not An Id");
        value["provides"] = json!({"hooks": [{"entity": "contact", "stage": "later"}]});
        value["surprise"] = json!(true);
        let problems = Manifest::parse(&value).unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert!(paths.contains(&"/id"), "{problems:?}");
        assert!(paths.contains(&"/provides/hooks/0/stage"), "{problems:?}");
        assert!(paths.contains(&""), "{problems:?}");
    }

    #[test]
    fn another_contract_major_is_refused() {
        let mut value = minimal();
        value["contract"] = json!("1.0.0");
        let problems = Manifest::parse(&value).unwrap_err();
        assert_eq!(problems[0].path, "/contract");
    }

    #[test]
    fn configuration_is_checked_against_the_manifest_schema() {
        let mut value = minimal();
        value["config_schema"] =
            json!({"type": "object", "properties": {"days": {"type": "integer"}}});
        value["default_config"] = json!({"days": "two"});
        let problems = Manifest::parse(&value).unwrap_err();
        assert_eq!(problems[0].path, "/default_config/days");
        value["default_config"] = json!({"days": 2});
        let manifest = Manifest::parse(&value).unwrap();
        assert!(manifest.check_config(&json!({"days": 5})).is_ok());
        assert!(manifest.check_config(&json!({"days": 1.5})).is_err());
        assert!(manifest.check_config(&json!([])).is_err());
    }

    #[test]
    fn capabilities_diff_names_what_an_upgrade_adds() {
        let old = Capabilities {
            read: vec!["account".into()],
            ..Capabilities::default()
        };
        let new = Capabilities {
            read: vec!["account".into(), "order".into()],
            write: vec![],
            outbox: vec!["email".into()],
        };
        assert_eq!(new.missing_from(&old), ["read order", "outbox email"]);
        assert!(old.missing_from(&new).is_empty());
    }
}
