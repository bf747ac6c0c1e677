-- Approvals asked by `approval` steps: the run waits until one of the approvers (or an
-- administrator) decides, or until the step's timeout.
CREATE TABLE approvals (
    id          TEXT PRIMARY KEY,   -- UUID v7
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    run_id      TEXT NOT NULL REFERENCES workflow_runs (id),
    step_id     TEXT NOT NULL,
    workflow    TEXT NOT NULL,
    entity      TEXT,
    record_id   TEXT,
    approvers   TEXT NOT NULL,      -- JSON array of user ids
    message     TEXT NOT NULL,
    status      TEXT NOT NULL,      -- pending, approved, rejected, expired, cancelled
    decided_by  TEXT,
    comment     TEXT,
    created_at  TEXT NOT NULL,
    decided_at  TEXT
);
CREATE INDEX approvals_by_tenant ON approvals (tenant_id, status, id);

-- Round-robin positions of `assign_owner` steps.
CREATE TABLE workflow_counters (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    workflow_id TEXT NOT NULL REFERENCES workflows (id),
    step_id     TEXT NOT NULL,
    value       BIGINT NOT NULL,
    PRIMARY KEY (workflow_id, step_id)
);
