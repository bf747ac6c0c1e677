-- Row-level security: the backstop behind the store's tenant filter. Tenant-scoped work (every
-- function of `Scoped` in the store) runs as the role `rapport_app` with `rapport.tenant` set to
-- its tenant, for the transaction (or, on a pooled connection, until the pool takes it back).
-- `rapport_app` owns nothing and every tenant table forces row-level security, so a query that
-- forgot its `tenant_id = $1` still sees, changes and inserts only that tenant's rows. Work that
-- spans tenants by design (the workflow engine's and the webhook worker's queues, token lookup,
-- migrations) runs as the connecting role with no tenant set and sees every tenant.
-- `plugin_components` holds content-addressed component bytes shared by every tenant that
-- installs the same component; which tenant may use one is in `plugins`, which is covered.
-- `workflow_steps`, `workflow_versions` and `auto_numbers` have no tenant column: they are
-- reached only by the id of their run, workflow or entity, which their own policies guard. (A
-- policy through the parent, `EXISTS (SELECT … FROM workflow_runs …)`, made PostgreSQL scan
-- every step of every run for each run's steps: measured, the engine ran 4 times slower.)
--
-- `records` is the one tenant table without a policy. Under row-level security PostgreSQL
-- evaluates the policy before any condition that is not LEAKPROOF, and so never uses such a
-- condition to search an index: the JSON operators (`data->>'email'`) and casts of every
-- field's expression index are not leakproof, so each lookup by a unique or indexed field would
-- read every record of the entity (measured: creates 2.3 times slower at 20,000 records, and
-- it grows with the table). Marking functions LEAKPROOF needs a superuser. Records keep the
-- store's tenant filter alone, as on SQLite; their history, and everything else, has both.

DO $$
BEGIN
    CREATE ROLE rapport_app NOLOGIN;
EXCEPTION WHEN OTHERS THEN
    -- It exists (roles belong to the whole server: another database of it created it).
    NULL;
END $$;

DO $$
BEGIN
    -- A connecting role that is not a superuser needs the membership to switch to it.
    EXECUTE format('GRANT rapport_app TO %I', current_user);
EXCEPTION WHEN OTHERS THEN
    NULL;
END $$;

-- A role of that name made by someone else must not carry powers that skip the policies.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rapport_app' AND (rolsuper OR rolbypassrls)) THEN
        RAISE EXCEPTION 'the role rapport_app is a superuser or bypasses row-level security: it must not (ALTER ROLE rapport_app NOSUPERUSER NOBYPASSRLS)';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rapport_app') THEN
        RAISE EXCEPTION 'the role rapport_app could not be created: create it (CREATE ROLE rapport_app NOLOGIN) and grant it to the connecting role';
    END IF;
END $$;

GRANT USAGE ON SCHEMA public TO rapport_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO rapport_app;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO rapport_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO rapport_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO rapport_app;

-- The tenant a connection is scoped to; '' when none is.
CREATE FUNCTION rapport_tenant() RETURNS TEXT LANGUAGE sql STABLE AS
    $$ SELECT coalesce(current_setting('rapport.tenant', true), '') $$;

-- Whether a row of `tenant` is visible: always to a scoped connection for its own tenant;
-- to unscoped work of the connecting role; never to `rapport_app` without a tenant.
CREATE FUNCTION rapport_visible(tenant TEXT) RETURNS BOOLEAN LANGUAGE sql STABLE AS
    $$ SELECT tenant = rapport_tenant() OR (rapport_tenant() = '' AND current_user <> 'rapport_app') $$;
GRANT EXECUTE ON FUNCTION rapport_tenant() TO rapport_app;
GRANT EXECUTE ON FUNCTION rapport_visible(TEXT) TO rapport_app;

ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants USING (rapport_visible(id)) WITH CHECK (rapport_visible(id));


ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE users FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON users USING (rapport_visible(tenant_id)) WITH CHECK (rapport_visible(tenant_id));

ALTER TABLE api_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON api_tokens USING (rapport_visible(tenant_id)) WITH CHECK (rapport_visible(tenant_id));

ALTER TABLE entities ENABLE ROW LEVEL SECURITY;
ALTER TABLE entities FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON entities USING (rapport_visible(tenant_id)) WITH CHECK (rapport_visible(tenant_id));

ALTER TABLE entity_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE entity_versions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON entity_versions USING (rapport_visible(tenant_id)) WITH CHECK (rapport_visible(tenant_id));


ALTER TABLE record_history ENABLE ROW LEVEL SECURITY;
ALTER TABLE record_history FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON record_history USING (rapport_visible(tenant_id)) WITH CHECK (rapport_visible(tenant_id));

ALTER TABLE idempotency_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE idempotency_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON idempotency_keys USING (rapport_visible(tenant_id)) WITH CHECK (rapport_visible(tenant_id));

ALTER TABLE plugins ENABLE ROW LEVEL SECURITY;
ALTER TABLE plugins FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON plugins USING (rapport_visible(tenant_id)) WITH CHECK (rapport_visible(tenant_id));

ALTER TABLE plugin_runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE plugin_runs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON plugin_runs USING (rapport_visible(tenant_id)) WITH CHECK (rapport_visible(tenant_id));

ALTER TABLE outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE outbox FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON outbox USING (rapport_visible(tenant_id)) WITH CHECK (rapport_visible(tenant_id));

ALTER TABLE workflows ENABLE ROW LEVEL SECURITY;
ALTER TABLE workflows FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON workflows USING (rapport_visible(tenant_id)) WITH CHECK (rapport_visible(tenant_id));

ALTER TABLE workflow_runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE workflow_runs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON workflow_runs USING (rapport_visible(tenant_id)) WITH CHECK (rapport_visible(tenant_id));

ALTER TABLE notifications ENABLE ROW LEVEL SECURITY;
ALTER TABLE notifications FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON notifications USING (rapport_visible(tenant_id)) WITH CHECK (rapport_visible(tenant_id));

ALTER TABLE approvals ENABLE ROW LEVEL SECURITY;
ALTER TABLE approvals FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON approvals USING (rapport_visible(tenant_id)) WITH CHECK (rapport_visible(tenant_id));

ALTER TABLE workflow_counters ENABLE ROW LEVEL SECURITY;
ALTER TABLE workflow_counters FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON workflow_counters USING (rapport_visible(tenant_id)) WITH CHECK (rapport_visible(tenant_id));

ALTER TABLE workflow_timers ENABLE ROW LEVEL SECURITY;
ALTER TABLE workflow_timers FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON workflow_timers USING (rapport_visible(tenant_id)) WITH CHECK (rapport_visible(tenant_id));

ALTER TABLE webhooks ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhooks FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON webhooks USING (rapport_visible(tenant_id)) WITH CHECK (rapport_visible(tenant_id));

ALTER TABLE deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE deliveries FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON deliveries USING (rapport_visible(tenant_id)) WITH CHECK (rapport_visible(tenant_id));

ALTER TABLE installed_packs ENABLE ROW LEVEL SECURITY;
ALTER TABLE installed_packs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON installed_packs USING (rapport_visible(tenant_id)) WITH CHECK (rapport_visible(tenant_id));

ALTER TABLE saved_views ENABLE ROW LEVEL SECURITY;
ALTER TABLE saved_views FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON saved_views USING (rapport_visible(tenant_id)) WITH CHECK (rapport_visible(tenant_id));

ALTER TABLE roles ENABLE ROW LEVEL SECURITY;
ALTER TABLE roles FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON roles USING (rapport_visible(tenant_id)) WITH CHECK (rapport_visible(tenant_id));

ALTER TABLE user_roles ENABLE ROW LEVEL SECURITY;
ALTER TABLE user_roles FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON user_roles USING (rapport_visible(tenant_id)) WITH CHECK (rapport_visible(tenant_id));

ALTER TABLE teams ENABLE ROW LEVEL SECURITY;
ALTER TABLE teams FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON teams USING (rapport_visible(tenant_id)) WITH CHECK (rapport_visible(tenant_id));

ALTER TABLE team_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE team_members FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON team_members USING (rapport_visible(tenant_id)) WITH CHECK (rapport_visible(tenant_id));

ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_log FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_log USING (rapport_visible(tenant_id)) WITH CHECK (rapport_visible(tenant_id));
