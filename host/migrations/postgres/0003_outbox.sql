-- The outbox: messages that plugins (and, with workflows, steps) enqueue during a write. A
-- message is inserted in the write's own transaction, so it exists if and only if the write
-- committed; delivery reads pending messages from here.
CREATE TABLE outbox (
    id             TEXT COLLATE "C" PRIMARY KEY,  -- UUID v7: ordered by creation
    tenant_id      TEXT NOT NULL REFERENCES tenants (id),
    kind           TEXT NOT NULL,
    payload        TEXT NOT NULL,     -- JSON
    plugin_id      TEXT,
    plugin_version TEXT,
    entity         TEXT,
    record_id      TEXT,
    created_by     TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    status         TEXT NOT NULL      -- pending, delivered, failed
);
CREATE INDEX outbox_by_tenant ON outbox (tenant_id, id);
CREATE INDEX outbox_pending ON outbox (id) WHERE status = 'pending';
