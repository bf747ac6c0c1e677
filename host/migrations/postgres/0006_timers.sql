-- Time: each tenant's time zone (schedules and date triggers read the wall clock in it), and a
-- timer per enabled workflow that fires on time. A timer is claimed by moving `next_at` on in
-- the transaction that starts its runs, so a firing happens once however many hosts look.
ALTER TABLE tenants ADD COLUMN time_zone TEXT NOT NULL DEFAULT 'UTC';

CREATE TABLE workflow_timers (
    workflow_id TEXT COLLATE "C" PRIMARY KEY REFERENCES workflows (id),
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    next_at     TIMESTAMPTZ NOT NULL,
    watermark   TIMESTAMPTZ NOT NULL
);
CREATE INDEX workflow_timers_due ON workflow_timers (next_at);
