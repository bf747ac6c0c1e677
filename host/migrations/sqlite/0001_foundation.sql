-- Foundation schema: tenants, users, API tokens, entity definitions, records and their history.
-- Append-only: later changes go into new numbered files.

-- A tenant is a company; it owns every other row.
CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL
);

CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    name        TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'member')),
    created_at  TEXT NOT NULL,
    UNIQUE (tenant_id, name)
);

-- Only the SHA-256 of a token is stored; tokens are 256 random bits, so a fast hash is enough.
CREATE TABLE api_tokens (
    token_hash  TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    user_id     TEXT NOT NULL REFERENCES users (id),
    created_at  TEXT NOT NULL
);

-- The current definition of each entity; `id` is global so that per-entity partial indexes on
-- `records` can name it.
CREATE TABLE entities (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    name        TEXT NOT NULL,
    version     INTEGER NOT NULL,
    definition  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    UNIQUE (tenant_id, name)
);

-- Every version an entity definition ever had, with who changed it.
CREATE TABLE entity_versions (
    entity_id   INTEGER NOT NULL,
    tenant_id   TEXT NOT NULL,
    version     INTEGER NOT NULL,
    definition  TEXT NOT NULL,
    changed_at  TEXT NOT NULL,
    changed_by  TEXT,
    PRIMARY KEY (entity_id, version)
);

-- One table for the records of every entity: a JSON body plus the system columns. Indexed and
-- unique fields get partial expression indexes per entity (created at runtime).
CREATE TABLE records (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    entity_id   INTEGER NOT NULL REFERENCES entities (id),
    version     INTEGER NOT NULL,
    data        TEXT NOT NULL,
    owner_id    TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    updated_by  TEXT NOT NULL,
    deleted_at  TEXT
);
CREATE INDEX records_entity_id ON records (entity_id, id);

-- Append-only history of every record change.
CREATE TABLE record_history (
    id          INTEGER PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    entity_id   INTEGER NOT NULL,
    record_id   TEXT NOT NULL,
    version     INTEGER NOT NULL,
    operation   TEXT NOT NULL,
    changed_at  TEXT NOT NULL,
    changed_by  TEXT NOT NULL,
    changes     TEXT NOT NULL
);
CREATE INDEX record_history_record ON record_history (record_id, id);

-- Counters of auto-number fields.
CREATE TABLE auto_numbers (
    entity_id   INTEGER NOT NULL,
    field       TEXT NOT NULL,
    next_value  INTEGER NOT NULL,
    PRIMARY KEY (entity_id, field)
);

-- Responses remembered for `Idempotency-Key` retries.
CREATE TABLE idempotency_keys (
    tenant_id     TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    key           TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    status        INTEGER NOT NULL,
    response      TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    PRIMARY KEY (tenant_id, user_id, key)
);
