-- Packs installed in each tenant: the manifest and the contents of the version installed (its
-- entity definitions, fields added to other packs' entities, workflows, plugins, roles and
-- views), which an upgrade compares with the next version and a removal undoes. A pack removed
-- without purge stays as `removed`: its entities and records are kept, and installing it again
-- takes them back.
CREATE TABLE installed_packs (
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    pack_id      TEXT NOT NULL,
    version      TEXT NOT NULL,
    status       TEXT NOT NULL,            -- installed | removed
    manifest     TEXT NOT NULL,
    contents     TEXT NOT NULL,
    installed_at TIMESTAMPTZ NOT NULL,
    installed_by TEXT,
    updated_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, pack_id)
);

-- Saved views: a named list query over one entity (filter with parameters, sort, fields), run
-- through the records API's rules. Packs ship them (the exhibition pack's booth map).
CREATE TABLE saved_views (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    name        TEXT NOT NULL,
    definition  TEXT NOT NULL,
    pack_id     TEXT,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
