-- Security: roles as data, the roles each user holds, teams, passwords with sign-in throttling,
-- tokens that are named, expire and are revoked (console sessions are tokens of kind `session`),
-- and the audit trail.

-- A role: JSON validated against `schemas/role.schema.json`. Every tenant has `administrator`
-- (built in, unchangeable) and starts with `member` (every record, no administration); packs
-- may ship more (`pack_id`).
CREATE TABLE roles (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    name        TEXT NOT NULL,
    definition  TEXT NOT NULL,
    pack_id     TEXT,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

-- The roles of each user: their permissions are the union. `users.role` (admin | member) of the
-- first migration is no longer read; it is kept, written as `admin` for administrators and
-- `member` otherwise, because SQLite cannot drop its CHECK constraint without rebuilding the
-- table.
CREATE TABLE user_roles (
    tenant_id   TEXT NOT NULL,
    user_id     TEXT NOT NULL REFERENCES users (id),
    role        TEXT NOT NULL,
    PRIMARY KEY (tenant_id, user_id, role),
    FOREIGN KEY (tenant_id, role) REFERENCES roles (tenant_id, name)
);
CREATE INDEX user_roles_by_role ON user_roles (tenant_id, role);

-- Teams: the `team` record scope covers records owned by anyone sharing a team with the user.
CREATE TABLE teams (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    name        TEXT NOT NULL,
    label       TEXT,
    manager_id  TEXT REFERENCES users (id),
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE team_members (
    tenant_id   TEXT NOT NULL,
    team        TEXT NOT NULL,
    user_id     TEXT NOT NULL REFERENCES users (id),
    PRIMARY KEY (tenant_id, team, user_id),
    FOREIGN KEY (tenant_id, team) REFERENCES teams (tenant_id, name) ON DELETE CASCADE
);
CREATE INDEX team_members_by_user ON team_members (user_id);

-- Passwords (argon2id PHC strings) for signing in; consecutive failed sign-ins lock the user
-- until `locked_until`.
ALTER TABLE users ADD COLUMN email TEXT;
ALTER TABLE users ADD COLUMN password_hash TEXT;
ALTER TABLE users ADD COLUMN disabled_at TIMESTAMPTZ;
ALTER TABLE users ADD COLUMN failed_sign_ins BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN locked_until TIMESTAMPTZ;

-- Tokens get a public id (the first 16 hex digits of the hash: tokens are listed and revoked
-- by it), a name, a kind (`api`, or `session` for a console sign-in), an expiry, a revocation
-- and the time of last use.
ALTER TABLE api_tokens ADD COLUMN id TEXT;
ALTER TABLE api_tokens ADD COLUMN name TEXT;
ALTER TABLE api_tokens ADD COLUMN kind TEXT NOT NULL DEFAULT 'api';
ALTER TABLE api_tokens ADD COLUMN expires_at TIMESTAMPTZ;
ALTER TABLE api_tokens ADD COLUMN revoked_at TIMESTAMPTZ;
ALTER TABLE api_tokens ADD COLUMN last_used_at TIMESTAMPTZ;
UPDATE api_tokens SET id = substr(token_hash, 1, 16);
CREATE UNIQUE INDEX api_tokens_id ON api_tokens (id);
CREATE INDEX api_tokens_user ON api_tokens (user_id);

INSERT INTO roles (tenant_id, name, definition, pack_id, created_at, updated_at)
SELECT id, 'administrator', '{"admin":true,"description":"Manages the tenant: metadata, plugins, packs, workflows, users and roles; works with every record.","label":"Administrator","name":"administrator","reassign":true}', NULL, created_at, created_at FROM tenants;
INSERT INTO roles (tenant_id, name, definition, pack_id, created_at, updated_at)
SELECT id, 'member', '{"description":"Works with every record of every entity; manages nothing.","entities":{"*":{"create":true,"delete":"all","read":"all","update":"all"}},"label":"Member","name":"member"}', NULL, created_at, created_at FROM tenants;
INSERT INTO user_roles (tenant_id, user_id, role)
SELECT tenant_id, id, CASE role WHEN 'admin' THEN 'administrator' ELSE 'member' END FROM users;

-- Who did what and when, besides record changes (kept in `record_history`): metadata, plugins,
-- packs, workflows, webhooks, users, teams, roles, tokens, sign-ins. Append-only.
CREATE TABLE audit_log (
    id          BIGSERIAL PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    at          TIMESTAMPTZ NOT NULL,
    actor       TEXT,               -- the user id; NULL for the server or an unknown user
    action      TEXT NOT NULL,      -- `<subject>.<verb>`, e.g. `entity.update`, `user.sign_in_failed`
    target      TEXT,               -- what it was done to: an entity name, a user id, a plugin id
    detail      TEXT NOT NULL
);
CREATE INDEX audit_log_by_tenant ON audit_log (tenant_id, id);
CREATE INDEX audit_log_by_action ON audit_log (tenant_id, action, id);
