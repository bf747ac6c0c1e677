//! The host side of the contract: what a plugin may ask of the host during one invocation.
//! Every input is hostile: sizes, counts and capabilities are checked before anything is done,
//! and record access goes to whoever runs the invocation (the write's transaction) through a
//! channel, as the triggering user.

use tokio::sync::{mpsc, oneshot};
use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::WasiCliCtx;

use super::manifest::{Capabilities, Limits};
use super::runtime::bindings::rapport::plugin::{config, log, outbox, records, types};
use super::runtime::{HostError, Record};

/// The longest log line kept, and the most lines per invocation.
const MAX_LOG_LINE: usize = 2_000;
const MAX_LOG_LINES: usize = 100;
/// The largest JSON text a plugin may hand to a host call.
const MAX_ARGUMENT: usize = 1 << 20;
/// The most records one query returns.
pub const MAX_QUERY_ROWS: u32 = 1_000;
/// The most records one `scan` call returns, and the most fields it reads.
pub const MAX_SCAN_ROWS: u32 = 10_000;
pub const MAX_SCAN_FIELDS: usize = 16;

/// A record access a plugin asked for, served by the invocation's owner.
#[derive(Debug)]
pub enum HostCall {
    Get {
        entity: String,
        id: String,
        reply: oneshot::Sender<Result<Option<Record>, HostError>>,
    },
    Query {
        entity: String,
        filter: String,
        sort: String,
        limit: u32,
        reply: oneshot::Sender<Result<Vec<Record>, HostError>>,
    },
    Create {
        entity: String,
        data: String,
        reply: oneshot::Sender<Result<Record, HostError>>,
    },
    Update {
        entity: String,
        id: String,
        patch: String,
        reply: oneshot::Sender<Result<Record, HostError>>,
    },
    Scan {
        entity: String,
        filter: String,
        fields: Vec<String>,
        after: String,
        limit: u32,
        reply: oneshot::Sender<Result<Vec<records::Scanned>, HostError>>,
    },
}

/// A log line of an invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: &'static str,
    pub message: String,
}

/// An outbox message a plugin enqueued; sent only if the write commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    pub id: String,
    pub kind: String,
    pub payload: String,
}

/// The state of one invocation's store.
pub struct HostState {
    /// The WASI a plugin gets: stdio to nowhere, no arguments, no environment (only the CLI
    /// part of a `WasiCtx`: clocks, randomness, sockets and files are never linked).
    pub(super) cli: WasiCliCtx,
    pub(super) table: ResourceTable,
    pub(super) limits: StoreLimits,
    config: String,
    capabilities: Capabilities,
    caps: Limits,
    calls: Option<mpsc::Sender<HostCall>>,
    host_calls: u64,
    rows: u64,
    writes: u64,
    exceeded: Option<String>,
    /// Who may not enqueue messages (validators, computed fields…), if this invocation may not.
    outbox_denied: Option<&'static str>,
    pub logs: Vec<LogLine>,
    pub outbox: Vec<OutboxMessage>,
}

impl HostState {
    /// The state of an invocation with the tenant's configuration (JSON object text), the
    /// manifest's capabilities and limits, and, if record access is possible, the channel to
    /// whoever serves it.
    pub fn new(
        config: String,
        capabilities: Capabilities,
        caps: Limits,
        calls: Option<mpsc::Sender<HostCall>>,
    ) -> Self {
        Self {
            cli: WasiCliCtx::default(),
            table: ResourceTable::new(),
            limits: super::runtime::no_limits(),
            config,
            capabilities,
            caps,
            calls,
            host_calls: 0,
            rows: 0,
            writes: 0,
            exceeded: None,
            outbox_denied: None,
            logs: Vec::new(),
            outbox: Vec::new(),
        }
    }

    /// Refuses every outbox message of this invocation: `who` (e.g. "validators") may only
    /// judge or compute, not cause effects.
    pub fn without_outbox(mut self, who: &'static str) -> Self {
        self.outbox_denied = Some(who);
        self
    }

    /// Counts a host call; refuses it (and every later one) beyond the cap.
    fn count_call(&mut self) -> Result<(), HostError> {
        if let Some(why) = &self.exceeded {
            return Err(HostError::LimitExceeded(why.clone()));
        }
        self.host_calls += 1;
        if self.host_calls > self.caps.host_calls {
            let why = format!(
                "more than {} host calls in one invocation",
                self.caps.host_calls
            );
            self.exceeded = Some(why.clone());
            return Err(HostError::LimitExceeded(why));
        }
        Ok(())
    }

    fn count_rows(&mut self, rows: u64) -> Result<(), HostError> {
        self.rows += rows;
        if self.rows > self.caps.rows {
            let why = format!(
                "more than {} records read in one invocation",
                self.caps.rows
            );
            self.exceeded = Some(why.clone());
            return Err(HostError::LimitExceeded(why));
        }
        Ok(())
    }

    fn count_write(&mut self) -> Result<(), HostError> {
        self.writes += 1;
        if self.writes > self.caps.writes {
            let why = format!(
                "more than {} record writes in one invocation",
                self.caps.writes
            );
            self.exceeded = Some(why.clone());
            return Err(HostError::LimitExceeded(why));
        }
        Ok(())
    }

    fn may_read(&self, entity: &str) -> Result<(), HostError> {
        if self.capabilities.read.iter().any(|e| e == entity)
            || self.capabilities.write.iter().any(|e| e == entity)
        {
            Ok(())
        } else {
            Err(HostError::Denied(format!(
                "the plugin's manifest does not request reading `{entity}`"
            )))
        }
    }

    fn may_write(&self, entity: &str) -> Result<(), HostError> {
        if self.capabilities.write.iter().any(|e| e == entity) {
            Ok(())
        } else {
            Err(HostError::Denied(format!(
                "the plugin's manifest does not request writing `{entity}`"
            )))
        }
    }

    /// Sends a record access to the invocation's owner and waits for the answer.
    async fn call<T>(
        &mut self,
        make: impl FnOnce(oneshot::Sender<Result<T, HostError>>) -> HostCall,
    ) -> Result<T, HostError> {
        let Some(calls) = &self.calls else {
            return Err(HostError::Denied(
                "records are not reachable from this invocation".into(),
            ));
        };
        let (reply, answer) = oneshot::channel();
        calls
            .send(make(reply))
            .await
            .map_err(|_| HostError::Failed("the write this plugin runs in has ended".into()))?;
        answer
            .await
            .map_err(|_| HostError::Failed("the host did not answer".into()))?
    }
}

fn check_size(what: &str, text: &str) -> Result<(), HostError> {
    if text.len() > MAX_ARGUMENT {
        return Err(HostError::Invalid(vec![types::FieldError {
            field: String::new(),
            message: format!("{what} is larger than {MAX_ARGUMENT} bytes"),
        }]));
    }
    Ok(())
}

impl types::Host for HostState {}

impl records::Host for HostState {
    async fn get(&mut self, entity: String, id: String) -> Result<Option<Record>, HostError> {
        self.count_call()?;
        self.may_read(&entity)?;
        check_size("the id", &id)?;
        let found = self
            .call(|reply| HostCall::Get { entity, id, reply })
            .await?;
        self.count_rows(u64::from(found.is_some()))?;
        Ok(found)
    }

    async fn query(
        &mut self,
        entity: String,
        filter: String,
        sort: String,
        limit: u32,
    ) -> Result<Vec<Record>, HostError> {
        self.count_call()?;
        self.may_read(&entity)?;
        check_size("the filter", &filter)?;
        check_size("the sort", &sort)?;
        // One row more than the invocation may still read: a result the row limit would cut
        // is an error (below), never a silently shorter list.
        let remaining = self.caps.rows.saturating_sub(self.rows);
        let limit = limit
            .min(MAX_QUERY_ROWS)
            .min(u32::try_from(remaining.saturating_add(1)).unwrap_or(u32::MAX));
        let found = self
            .call(|reply| HostCall::Query {
                entity,
                filter,
                sort,
                limit,
                reply,
            })
            .await?;
        self.count_rows(found.len() as u64)?;
        Ok(found)
    }

    async fn create(&mut self, entity: String, data: String) -> Result<Record, HostError> {
        self.count_call()?;
        self.may_write(&entity)?;
        check_size("the record", &data)?;
        self.count_write()?;
        self.call(|reply| HostCall::Create {
            entity,
            data,
            reply,
        })
        .await
    }

    async fn scan(
        &mut self,
        entity: String,
        filter: String,
        fields: Vec<String>,
        after: String,
        limit: u32,
    ) -> Result<Vec<records::Scanned>, HostError> {
        self.scan_records(entity, filter, fields, after, limit)
            .await
    }

    async fn update(
        &mut self,
        entity: String,
        id: String,
        patch: String,
    ) -> Result<Record, HostError> {
        self.count_call()?;
        self.may_write(&entity)?;
        check_size("the patch", &patch)?;
        self.count_write()?;
        self.call(|reply| HostCall::Update {
            entity,
            id,
            patch,
            reply,
        })
        .await
    }
}

impl HostState {
    /// `records.scan`, checked here (counts, capabilities, sizes) and served by the owner.
    pub async fn scan_records(
        &mut self,
        entity: String,
        filter: String,
        fields: Vec<String>,
        after: String,
        limit: u32,
    ) -> Result<Vec<records::Scanned>, HostError> {
        self.count_call()?;
        self.may_read(&entity)?;
        check_size("the filter", &filter)?;
        check_size("the cursor", &after)?;
        if fields.is_empty() || fields.len() > MAX_SCAN_FIELDS {
            return Err(HostError::Invalid(vec![types::FieldError {
                field: String::new(),
                message: format!(
                    "a scan reads 1 to {MAX_SCAN_FIELDS} fields, not {}",
                    fields.len()
                ),
            }]));
        }
        for field in &fields {
            check_size("a field name", field)?;
        }
        let remaining = self.caps.rows.saturating_sub(self.rows);
        let limit = limit
            .min(MAX_SCAN_ROWS)
            .min(u32::try_from(remaining.saturating_add(1)).unwrap_or(u32::MAX));
        let found = self
            .call(|reply| HostCall::Scan {
                entity,
                filter,
                fields,
                after,
                limit,
                reply,
            })
            .await?;
        self.count_rows(found.len() as u64)?;
        Ok(found)
    }
}

impl config::Host for HostState {
    async fn get(&mut self) -> String {
        self.config.clone()
    }
}

impl log::Host for HostState {
    async fn write(&mut self, level: log::Level, message: String) {
        if self.logs.len() >= MAX_LOG_LINES {
            return;
        }
        let level = match level {
            log::Level::Debug => "debug",
            log::Level::Info => "info",
            log::Level::Warn => "warn",
            log::Level::Error => "error",
        };
        let mut message = message;
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        self.logs.push(LogLine { level, message });
    }
}

impl outbox::Host for HostState {
    async fn enqueue(&mut self, kind: String, payload: String) -> Result<String, HostError> {
        self.count_call()?;
        if let Some(who) = self.outbox_denied {
            return Err(HostError::Denied(format!(
                "{who} may not enqueue outbox messages"
            )));
        }
        if !self.capabilities.outbox.contains(&kind) {
            return Err(HostError::Denied(format!(
                "the plugin's manifest does not request outbox messages of kind `{kind}`"
            )));
        }
        check_size("the payload", &payload)?;
        if serde_json::from_str::<serde_json::Value>(&payload).is_err() {
            return Err(HostError::Invalid(vec![types::FieldError {
                field: String::new(),
                message: "the payload is not JSON".into(),
            }]));
        }
        self.count_write()?;
        let id = uuid::Uuid::now_v7().to_string();
        self.outbox.push(OutboxMessage {
            id: id.clone(),
            kind,
            payload,
        });
        Ok(id)
    }
}
