-- Plugins: components by content, the plugin versions installed in each tenant, and a record of
-- every invocation.

-- A component's bytes, stored once whatever the number of tenants and versions that use them.
CREATE TABLE plugin_components (
    sha256      TEXT PRIMARY KEY,
    bytes       BLOB NOT NULL,
    size        INTEGER NOT NULL,
    created_at  TEXT NOT NULL
);

-- The version of a plugin a tenant has installed, its manifest and the tenant's configuration.
CREATE TABLE plugins (
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    plugin_id    TEXT NOT NULL,
    version      TEXT NOT NULL,
    manifest     TEXT NOT NULL,
    component    TEXT NOT NULL REFERENCES plugin_components (sha256),
    enabled      INTEGER NOT NULL,
    config       TEXT,
    installed_at TEXT NOT NULL,
    installed_by TEXT,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (tenant_id, plugin_id)
);

-- One row per invocation; written outside the request's transaction, so that failures stay
-- visible after the write they failed rolls back.
CREATE TABLE plugin_runs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id    TEXT NOT NULL,
    plugin_id    TEXT NOT NULL,
    version      TEXT NOT NULL,
    stage        TEXT NOT NULL,
    entity       TEXT,
    record_id    TEXT,
    started_at   TEXT NOT NULL,
    duration_us  INTEGER NOT NULL,
    fuel_used    INTEGER NOT NULL,
    outcome      TEXT NOT NULL,
    error        TEXT
);
CREATE INDEX plugin_runs_by_plugin ON plugin_runs (tenant_id, plugin_id, id);
