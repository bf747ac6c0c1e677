-- Webhooks: endpoints an administrator registers (a URL and a secret that signs each delivery),
-- called by `webhook` workflow steps through the outbox. Delivery state lives on the outbox
-- message (attempts, when to try next, the last error); every attempt is logged.
CREATE TABLE webhooks (
    id              TEXT COLLATE "C" PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    name            TEXT NOT NULL,
    url             TEXT NOT NULL,
    secret          TEXT NOT NULL,
    description     TEXT,
    max_attempts    BIGINT NOT NULL,
    backoff_seconds DOUBLE PRECISION NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    deleted_at      TIMESTAMPTZ
);
CREATE UNIQUE INDEX webhooks_by_name ON webhooks (tenant_id, name) WHERE deleted_at IS NULL;

ALTER TABLE outbox ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN next_at TIMESTAMPTZ;      -- pending: not tried again before this
ALTER TABLE outbox ADD COLUMN lease_until TIMESTAMPTZ;  -- a server is delivering it until then
ALTER TABLE outbox ADD COLUMN last_error TEXT;
ALTER TABLE outbox ADD COLUMN delivered_at TIMESTAMPTZ;

UPDATE outbox SET next_at = created_at;

-- What the delivery worker looks for: due messages of the kinds it delivers.
CREATE INDEX outbox_due ON outbox (kind, next_at) WHERE status = 'pending';

-- Emails enqueued before the server could deliver any would all go out the first time an SMTP
-- relay is configured, however old: they are set aside as dead letters, which an administrator
-- can redeliver (POST /api/v1/outbox/{id}/redeliver).
UPDATE outbox SET status = 'failed',
    last_error = 'enqueued before this server delivered emails; redeliver it to send it'
    WHERE kind = 'email' AND status = 'pending';

CREATE TABLE deliveries (
    id          BIGSERIAL PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    message_id  TEXT NOT NULL REFERENCES outbox (id),
    webhook_id  TEXT,
    attempt     BIGINT NOT NULL,
    url         TEXT NOT NULL,
    status_code BIGINT,           -- the HTTP status, when there was an answer
    error       TEXT,               -- why the attempt failed, when it did
    duration_ms BIGINT NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX deliveries_by_webhook ON deliveries (tenant_id, webhook_id, id);
CREATE INDEX deliveries_by_message ON deliveries (message_id, id);
