//! Rapport: a CRM host whose entities are metadata defined at runtime and whose records are
//! served over a REST API, on SQLite (embedded default) or PostgreSQL.
//!
//! The modules follow the request path: [`api`] (HTTP, extractors, errors) → [`auth`] (who is
//! calling) → [`metadata`] (entity definitions and their JSON Schemas) → [`records`] (validated
//! writes, queries) → [`store`] (all SQL, tenant-scoped).

pub mod analytics;
pub mod api;
pub mod auth;
pub mod cli;
pub mod console;
pub mod demo;
pub mod dependents;
pub mod domain;
pub mod metadata;
pub mod packs;
pub mod plugins;
pub mod records;
pub mod store;
pub mod users;
pub mod views;
pub mod webhooks;
pub mod workflows;
