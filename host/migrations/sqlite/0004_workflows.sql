-- Workflows: definitions (every version kept), their runs and each run's steps, and the in-app
-- notifications that steps create. A run is inserted in the transaction of the write that
-- triggered it, and each step's effects commit together with the step's state.
CREATE TABLE workflows (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    name        TEXT NOT NULL,
    version     INTEGER NOT NULL,
    enabled     BOOLEAN NOT NULL,
    definition  TEXT NOT NULL,      -- JSON, the current version
    created_at  TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    updated_by  TEXT NOT NULL,
    deleted_at  TEXT
);
CREATE UNIQUE INDEX workflows_by_name ON workflows (tenant_id, name) WHERE deleted_at IS NULL;

CREATE TABLE workflow_versions (
    workflow_id TEXT NOT NULL REFERENCES workflows (id),
    version     INTEGER NOT NULL,
    definition  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    PRIMARY KEY (workflow_id, version)
);

CREATE TABLE workflow_runs (
    id          TEXT PRIMARY KEY,   -- UUID v7: ordered by creation
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    workflow_id TEXT NOT NULL REFERENCES workflows (id),
    version     INTEGER NOT NULL,   -- the definition the run follows to its end
    status      TEXT NOT NULL,      -- pending, running, waiting, succeeded, failed, cancelled
    depth       INTEGER NOT NULL,   -- 0, or 1 + the depth of the run whose write started it
    event       TEXT NOT NULL,      -- created, updated, deleted, manual
    entity      TEXT,
    record_id   TEXT,
    run_as      TEXT NOT NULL,      -- the user the run acts as
    trigger_data TEXT NOT NULL,     -- JSON: {"old": …, "input": …}
    context     TEXT NOT NULL,      -- JSON: the output of every finished step, by step id
    next_step   TEXT,               -- the id of the next step; NULL when finished
    attempt     INTEGER NOT NULL,   -- failed attempts of the next step so far
    next_at     TEXT NOT NULL,      -- when the run may go on
    lease_owner TEXT,               -- the host working on it, until lease_until
    lease_until TEXT,
    error       TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    finished_at TEXT
);
CREATE INDEX workflow_runs_due ON workflow_runs (next_at) WHERE status IN ('pending', 'running', 'waiting');
CREATE INDEX workflow_runs_by_workflow ON workflow_runs (tenant_id, workflow_id, id);

CREATE TABLE workflow_steps (
    run_id      TEXT NOT NULL REFERENCES workflow_runs (id),
    seq         INTEGER NOT NULL,   -- order of execution in the run
    step_id     TEXT NOT NULL,
    type        TEXT NOT NULL,
    status      TEXT NOT NULL,      -- succeeded, failed, waiting, retrying
    attempts    INTEGER NOT NULL,
    input       TEXT,               -- JSON: what the step was given, templates rendered
    output      TEXT,               -- JSON
    error       TEXT,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE notifications (
    id          TEXT PRIMARY KEY,   -- UUID v7
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    user_id     TEXT NOT NULL,
    message     TEXT NOT NULL,
    entity      TEXT,
    record_id   TEXT,
    workflow    TEXT,
    run_id      TEXT,
    created_at  TEXT NOT NULL,
    read_at     TEXT
);
CREATE INDEX notifications_by_user ON notifications (tenant_id, user_id, id);

ALTER TABLE outbox ADD COLUMN run_id TEXT;
