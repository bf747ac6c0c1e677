//! `/api/v1/openapi.json`: the fixed API plus every entity of the caller's tenant, generated
//! from metadata.

use axum::Json;
use axum::extract::State;
use serde_json::{Map, Value, json};

use super::AppState;
use super::error::ApiError;
use crate::auth::Principal;
use crate::metadata::record_schema::{Purpose, record_schema};
use crate::metadata::validation::ENTITY_SCHEMA;
use crate::workflows::definition::WORKFLOW_SCHEMA;

pub async fn document(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Value>, ApiError> {
    let mut conn = state.store.reader().await?;
    let entities = state
        .metadata
        .all_compiled(&mut conn.scoped(&principal.tenant))
        .await?;
    let mut schemas = fixed_schemas();
    let mut paths = fixed_paths();
    mark_admin_routes(&mut paths);
    for entity in &entities {
        // Each caller is shown what they may use: not entities they have no permission on,
        // nor the fields hidden from them.
        let sight = crate::records::Sight::of(&principal, entity);
        if sight.grant.is_empty() {
            continue;
        }
        let mut definition = sight.definition.into_owned();
        definition.fields.retain(|field| field.active);
        let name = entity.name();
        let title = entity
            .definition
            .label
            .clone()
            .unwrap_or_else(|| name.to_owned());
        let mut input = record_schema(&definition, Purpose::Input);
        let mut output = record_schema(&definition, Purpose::Output);
        for schema in [&mut input, &mut output] {
            schema.as_object_mut().expect("object").remove("$schema");
        }
        let mut patch = input.clone();
        patch.as_object_mut().expect("object").remove("required");
        schemas.insert(format!("{name}_data"), input);
        schemas.insert(format!("{name}_patch"), patch);
        schemas.insert(
            format!("{name}_record"),
            json!({
                "allOf": [{"$ref": "#/components/schemas/record_system"}],
                "properties": {"data": output},
            }),
        );
        let record = json!({"$ref": format!("#/components/schemas/{name}_record")});
        let page = json!({"type": "object", "properties": {"data": {"type": "array", "items": record}, "next_cursor": {"type": ["string", "null"]}}});
        paths.insert(format!("/api/v1/records/{name}"), json!({
            "get": {
                "tags": [title], "summary": format!("List {title} records"),
                "parameters": [{"$ref": "#/components/parameters/filter"}, {"$ref": "#/components/parameters/sort"},
                               {"$ref": "#/components/parameters/limit"}, {"$ref": "#/components/parameters/cursor"},
                               {"$ref": "#/components/parameters/q"}, {"$ref": "#/components/parameters/fields"},
                               {"$ref": "#/components/parameters/expand"}, {"$ref": "#/components/parameters/deleted"}],
                "responses": {"200": {"description": "A page", "content": {"application/json": {"schema": page}}}, "400": {"$ref": "#/components/responses/error"}}
            },
            "post": {
                "tags": [title], "summary": format!("Create a {title}"),
                "parameters": [{"$ref": "#/components/parameters/idempotency_key"}],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["data"], "additionalProperties": false,
                    "properties": {"data": {"$ref": format!("#/components/schemas/{name}_data")}}}}}},
                "responses": {"201": {"description": "Created", "content": {"application/json": {"schema": record}}},
                              "409": {"$ref": "#/components/responses/error"}, "422": {"$ref": "#/components/responses/error"}}
            }
        }));
        paths.insert(format!("/api/v1/records/{name}/{{id}}"), json!({
            "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}}],
            "get": {"tags": [title], "summary": format!("Get a {title}"),
                    "parameters": [{"$ref": "#/components/parameters/fields"}, {"$ref": "#/components/parameters/expand"}],
                    "responses": {"200": {"description": "The record; `ETag` carries its version", "content": {"application/json": {"schema": record}}},
                                  "404": {"$ref": "#/components/responses/error"}}},
            "patch": {"tags": [title], "summary": format!("Update a {title} (null clears a field)"),
                      "parameters": [{"name": "If-Match", "in": "header", "schema": {"type": "string"}}],
                      "requestBody": {"required": true, "content": {"application/json": {"schema": {
                          "type": "object", "required": ["data"], "properties": {"data": {"$ref": format!("#/components/schemas/{name}_patch")}}}}}},
                      "responses": {"200": {"description": "Updated", "content": {"application/json": {"schema": record}}},
                                    "412": {"$ref": "#/components/responses/error"}, "422": {"$ref": "#/components/responses/error"}}},
            "delete": {"tags": [title], "summary": format!("Delete a {title} (soft; `purge=true` for good)"),
                       "parameters": [{"name": "purge", "in": "query", "schema": {"type": "boolean"}}],
                       "responses": {"200": {"description": "Soft-deleted"}, "204": {"description": "Purged"}, "404": {"$ref": "#/components/responses/error"}}}
        }));
    }
    Ok(Json(json!({
        "openapi": "3.1.0",
        "info": {"title": "Rapport API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Metadata-defined entities and their records. Errors have one shape: `{\"error\": {\"code\", \"message\", \"fields\"}}`."},
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
            "parameters": parameters(),
            "responses": {"error": {"description": "An error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/error"}}}}}
        }
    })))
}

fn fixed_schemas() -> Map<String, Value> {
    let mut schemas = Map::new();
    embed(&mut schemas, "entity", ENTITY_SCHEMA);
    embed(&mut schemas, "workflow", WORKFLOW_SCHEMA);
    embed(&mut schemas, "pack", crate::packs::manifest::PACK_SCHEMA);
    embed(&mut schemas, "view", crate::views::VIEW_SCHEMA);
    embed(&mut schemas, "report", crate::analytics::REPORT_SCHEMA);
    embed(
        &mut schemas,
        "dashboard",
        crate::analytics::DASHBOARD_SCHEMA,
    );
    embed(&mut schemas, "role", crate::auth::role::ROLE_SCHEMA);
    schemas.insert("record_system".into(), json!({
        "type": "object",
        "required": ["id", "version", "owner", "created_at", "created_by", "updated_at", "updated_by", "data"],
        "properties": {
            "id": {"type": "string", "format": "uuid"}, "version": {"type": "integer"},
            "owner": {"type": "string"}, "created_at": {"type": "string", "format": "date-time"},
            "created_by": {"type": "string"}, "updated_at": {"type": "string", "format": "date-time"},
            "updated_by": {"type": "string"}, "deleted_at": {"type": "string", "format": "date-time"},
            "expanded": {"type": "object", "description": "Referenced records by field, with `expand`"}
        }
    }));
    schemas.insert("error".into(), json!({
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
            "code": {"type": "string"}, "message": {"type": "string"},
            "fields": {"type": "object", "description": "Problems by field (or JSON path of a definition)"}}}}
    }));
    schemas
}

fn fixed_paths() -> Map<String, Value> {
    let error = json!({"$ref": "#/components/responses/error"});
    let entity = json!({"$ref": "#/components/schemas/entity"});
    let mut paths = Map::new();
    paths.insert("/healthz".into(), json!({"get": {"summary": "Liveness", "security": [], "responses": {"200": {"description": "ok"}}}}));
    paths.insert("/api/v1/entities".into(), json!({
        "get": {"tags": ["metadata"], "summary": "List entity definitions", "responses": {"200": {"description": "Definitions"}}},
        "post": {"tags": ["metadata"], "summary": "Create an entity (admin)",
                 "requestBody": {"required": true, "content": {"application/json": {"schema": entity}}},
                 "responses": {"201": {"description": "Created"}, "409": error, "422": error}}
    }));
    paths.insert("/api/v1/entities/{name}".into(), json!({
        "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
        "get": {"tags": ["metadata"], "summary": "Get an entity definition", "responses": {"200": {"description": "Definition"}, "404": error}},
        "put": {"tags": ["metadata"], "summary": "Replace a definition (admin); `dry_run=true` reports changes and conversions only",
                "parameters": [{"name": "dry_run", "in": "query", "schema": {"type": "boolean"}}],
                "requestBody": {"required": true, "content": {"application/json": {"schema": entity}}},
                "responses": {"200": {"description": "Applied, or the plan of a dry run"}, "409": error, "412": error, "422": error}},
        "delete": {"tags": ["metadata"], "summary": "Delete an entity and its records (admin); refused while referenced unless `force=true`",
                   "parameters": [{"name": "force", "in": "query", "schema": {"type": "boolean"}}],
                   "responses": {"200": {"description": "Deleted"}, "409": error}}
    }));
    paths.insert("/api/v1/entities/{name}/fields/{field}".into(), json!({
        "delete": {"tags": ["metadata"], "summary": "Purge a deactivated field and its values (admin)",
                   "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}},
                                  {"name": "field", "in": "path", "required": true, "schema": {"type": "string"}}],
                   "responses": {"200": {"description": "The new definition"}, "409": error}}
    }));
    let entity_param =
        json!({"name": "entity", "in": "path", "required": true, "schema": {"type": "string"}});
    let id_param = json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}});
    paths.insert("/api/v1/records/{entity}/batch".into(), json!({
        "parameters": [entity_param],
        "post": {"tags": ["records"], "summary": "Create up to 1,000 records atomically",
                 "parameters": [{"$ref": "#/components/parameters/idempotency_key"}],
                 "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["records"],
                     "properties": {"records": {"type": "array", "maxItems": 1000, "items": {"type": "object"}}}}}}},
                 "responses": {"201": {"description": "Created"}, "409": error, "413": error, "422": error}},
        "patch": {"tags": ["records"], "summary": "Update up to 1,000 records atomically",
                  "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["records"],
                      "properties": {"records": {"type": "array", "maxItems": 1000, "items": {"type": "object", "required": ["id", "data"],
                          "properties": {"id": {"type": "string"}, "version": {"type": "integer"}, "data": {"type": "object"}}}}}}}}},
                  "responses": {"200": {"description": "Updated"}, "409": error, "422": error}}
    }));
    paths.insert("/api/v1/records/{entity}/recompute".into(), json!({
        "parameters": [entity_param],
        "post": {"tags": ["records"], "summary": "Compute the entity's computed fields of every record again (admin); the body `{\"fields\": [...]}` is optional",
                 "requestBody": {"required": false, "content": {"application/json": {"schema": {"type": "object", "properties": {"fields": {"type": "array", "items": {"type": "string"}}}}}}},
                 "responses": {"200": {"description": "`{\"records\": n, \"changed\": m}`"}, "400": error, "403": error, "404": error, "424": error}}
    }));
    paths.insert("/api/v1/records/{entity}/aggregate".into(), json!({
        "parameters": [entity_param],
        "get": {"tags": ["records"], "summary": "Group the records a list with the same `filter` and `q` would return, and measure each group",
                "description": "Record scope and field security apply as in lists: hidden fields are unknown, records out of scope are not counted, a referenced record the caller may not read groups as null. Datetimes are bucketed in the tenant's time zone (its current offset from UTC).",
                "parameters": [
                    {"name": "group_by", "in": "query", "schema": {"type": "string"},
                     "description": "Up to 3, comma-separated: a field (`stage`), a date or datetime with a bucket (`expected_close:month`; day, week (its Monday), month, quarter, year), a field of the referenced record (`account.size`), a currency field's code (`amount.currency`), system fields (`_owner`, `_created_at:week`)"},
                    {"name": "measures", "in": "query", "schema": {"type": "string", "default": "count"},
                     "description": "Up to 12, comma-separated: `count`, `sum:<field>`, `avg:<field>`, `min:<field>`, `max:<field>`, `count_distinct:<field>`; sum and avg take number and currency fields, min and max also dates"},
                    {"$ref": "#/components/parameters/filter"},
                    {"$ref": "#/components/parameters/q"},
                    {"name": "sort", "in": "query", "schema": {"type": "string"},
                     "description": "Groups and measures by the names used above, `-` for descending (`-sum:amount`); then every group ascending"},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 1000}}],
                "responses": {"200": {"description": "`{\"data\": [{\"group\": {\"stage\": \"won\"}, \"count\": 3, \"sum\": {\"amount\": {\"amount\": 1200, \"currency\": \"EUR\"}}}], \"truncated\": false}`"},
                              "400": error, "403": error, "404": error}}
    }));
    paths.insert("/api/v1/records/{entity}/{id}/restore".into(), json!({
        "parameters": [entity_param, id_param],
        "post": {"tags": ["records"], "summary": "Restore a soft-deleted record", "responses": {"200": {"description": "Restored"}, "409": error}}
    }));
    paths.insert("/api/v1/records/{entity}/{id}/history".into(), json!({
        "parameters": [entity_param, id_param],
        "get": {"tags": ["records"], "summary": "Who changed what, when", "responses": {"200": {"description": "History"}, "404": error}}
    }));
    paths.insert("/api/v1/records/{entity}/{id}/timeline".into(), json!({
        "parameters": [entity_param, id_param,
                       {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}},
                       {"$ref": "#/components/parameters/cursor"}],
        "get": {"tags": ["records"], "summary": "The customer 360 timeline: every record of every entity that references this one (by any reference field the caller may read), and this record's history, newest first",
                "responses": {"200": {"description": "`{\"data\": [{\"kind\": \"record\", \"at\", \"entity\", \"via\": [fields], \"record\"} | {\"kind\": \"history\", \"at\", \"entity\", \"history\"}], \"next_cursor\"}`"}, "400": error, "403": error, "404": error}}
    }));
    paths.insert("/api/v1/lookup".into(), json!({
        "get": {"tags": ["records"], "summary": "Screen pop: the records whose phone field (any common format, compared in E.164) or email field holds the value, each with the open and latest records of every entity that references it",
                "parameters": [{"name": "phone", "in": "query", "schema": {"type": "string"}},
                               {"name": "email", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "`{\"query\", \"matches\": [{\"entity\", \"record\", \"related\": {\"case\": {\"open\": [...], \"latest\": [...]}}}]}`"}, "400": error}}
    }));
    paths.insert("/api/v1/records/{entity}/{id}/related/{source}".into(), json!({
        "parameters": [entity_param, id_param, {"name": "source", "in": "path", "required": true, "schema": {"type": "string"}},
                       {"name": "field", "in": "query", "schema": {"type": "string"}, "description": "The reference field of `source`, when it has several"}],
        "get": {"tags": ["records"], "summary": "Records of `source` that reference this record (both sides of a link entity)",
                "responses": {"200": {"description": "A page"}, "400": error, "404": error}}
    }));
    paths.insert("/api/v1/tenant".into(), json!({
        "get": {"tags": ["tenant"], "summary": "The caller's tenant: its name and IANA time zone (schedules and date triggers read the wall clock in it)",
                "responses": {"200": {"description": "`{\"name\": …, \"time_zone\": …}`"}}},
        "patch": {"tags": ["tenant"], "summary": "Change the tenant's settings (admin): `{\"time_zone\": \"Europe/Istanbul\"}`; schedules that follow the tenant's zone move to their next time on the new clock",
                  "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "additionalProperties": false,
                      "properties": {"time_zone": {"type": "string", "description": "An IANA time zone name"}}}}}},
                  "responses": {"200": {"description": "The tenant"}, "400": error, "403": error}}
    }));
    let plugin_param =
        json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}});
    paths.insert("/api/v1/plugins".into(), json!({
        "get": {"tags": ["plugins"], "summary": "Plugins installed in the tenant", "responses": {"200": {"description": "Plugins"}}},
        "post": {"tags": ["plugins"], "summary": "Install or upgrade a plugin (admin): its manifest and its component, base64; 201 on install, 200 on upgrade with the capabilities added and removed",
                 "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["manifest", "component"],
                     "properties": {"manifest": {"type": "object", "description": "Valid against schemas/plugin-manifest.schema.json"},
                                    "component": {"type": "string", "contentEncoding": "base64"}}}}}},
                 "responses": {"200": {"description": "Upgraded"}, "201": {"description": "Installed"}, "403": error, "413": error, "422": error}}
    }));
    paths.insert("/api/v1/plugins/{id}".into(), json!({
        "parameters": [plugin_param],
        "get": {"tags": ["plugins"], "summary": "A plugin: version, what it provides, capabilities, limits, configuration", "responses": {"200": {"description": "The plugin"}, "404": error}},
        "delete": {"tags": ["plugins"], "summary": "Remove a plugin (admin)", "responses": {"204": {"description": "Removed"}, "404": error}}
    }));
    paths.insert("/api/v1/plugins/{id}/enable".into(), json!({
        "parameters": [plugin_param],
        "post": {"tags": ["plugins"], "summary": "Enable a plugin in the tenant (admin)", "responses": {"200": {"description": "The plugin"}, "404": error}}
    }));
    paths.insert("/api/v1/plugins/{id}/disable".into(), json!({
        "parameters": [plugin_param],
        "post": {"tags": ["plugins"], "summary": "Disable a plugin in the tenant (admin)", "responses": {"200": {"description": "The plugin"}, "404": error}}
    }));
    paths.insert("/api/v1/plugins/{id}/config".into(), json!({
        "parameters": [plugin_param],
        "put": {"tags": ["plugins"], "summary": "Set the tenant's configuration (admin), validated against the manifest's configuration schema",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": {"200": {"description": "The plugin"}, "404": error, "422": error}}
    }));
    paths.insert("/api/v1/plugins/{id}/runs".into(), json!({
        "parameters": [plugin_param,
                       {"name": "failures", "in": "query", "schema": {"type": "boolean"}, "description": "Only failed runs"},
                       {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}}],
        "get": {"tags": ["plugins"], "summary": "The latest invocations, newest first: stage, entity, record, duration, fuel, outcome, error",
                "responses": {"200": {"description": "Runs"}, "400": error, "404": error}}
    }));
    paths.insert("/api/v1/outbox".into(), json!({
        "get": {"tags": ["outbox"], "summary": "Messages enqueued by plugins and workflow steps in committed writes (emails, webhook calls), newest first, with their delivery state (admin); `status=failed` lists the dead letters",
                "parameters": [{"name": "kind", "in": "query", "schema": {"type": "string"}},
                               {"name": "status", "in": "query", "schema": {"enum": ["pending", "delivered", "failed"]}},
                               {"name": "cursor", "in": "query", "schema": {"type": "string"}, "description": "`next_cursor` of the previous page"},
                               {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}}],
                "responses": {"200": {"description": "A page of messages: id, kind, payload, plugin, plugin_version, entity, record_id, run_id, created_by, created_at, status, attempts, last_error, next_attempt_at, delivered_at"},
                              "400": error, "403": error}}
    }));
    paths.insert("/api/v1/outbox/{id}/redeliver".into(), json!({
        "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
        "post": {"tags": ["outbox"], "summary": "Put a dead-lettered (`failed`) message back in the queue with fresh attempts (admin)",
                 "responses": {"200": {"description": "Pending again"}, "403": error, "409": error}}
    }));
    webhook_paths(&mut paths, &error);
    workflow_paths(&mut paths, &error);
    pack_paths(&mut paths, &error);
    paths
}

fn pack_paths(paths: &mut Map<String, Value>, error: &Value) {
    let id = json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}});
    let dry_run = json!({"name": "dry_run", "in": "query", "schema": {"type": "boolean", "default": false},
                         "description": "Answer what would change, change nothing"});
    let report = json!({"description": "What changed (or would): for each pack, its entities (added, extended, changed, adopted, dropped, kept, deleted; fields added and deactivated; evolution changes and conversions), workflows, plugins (with the capabilities added and removed), views, roles, sample records and migrated records"});
    let refused = json!({"description": "Refused before anything changed: `error.fields` lists every problem by `<pack>/<file>#<JSON path>`",
                         "content": {"application/json": {"schema": {"$ref": "#/components/schemas/error"}}}});
    paths.insert("/api/v1/packs".into(), json!({
        "get": {"tags": ["packs"], "summary": "The packs this server bundles and those the tenant has: id, label, description, available and installed version, status (available, installed, removed with its data kept), dependencies",
                "responses": {"200": {"description": "Packs"}}}
    }));
    paths.insert("/api/v1/packs/{id}".into(), json!({
        "parameters": [id],
        "get": {"tags": ["packs"], "summary": "A pack: its entities, the fields it adds to others, workflows, plugins with the capabilities they request, roles, views; what the tenant installed of it",
                "responses": {"200": {"description": "The pack"}, "404": error}},
        "delete": {"tags": ["packs"], "summary": "Remove an installed pack (admin): its workflows, views and plugins go; its entities and records stay unless `purge=true`; refused while another installed pack depends on it",
                   "parameters": [{"name": "purge", "in": "query", "schema": {"type": "boolean", "default": false},
                                   "description": "Also delete its entities, their records and the fields it added to other entities"}, dry_run],
                   "responses": {"200": report, "403": error, "404": error, "422": refused}}
    }));
    paths.insert("/api/v1/packs/{id}/install".into(), json!({
        "parameters": [id],
        "post": {"tags": ["packs"], "summary": "Install a bundled pack and the packs it depends on (admin), dependencies first, in one transaction",
                 "parameters": [{"name": "sample", "in": "query", "schema": {"type": "boolean", "default": false},
                                 "description": "Also install the packs' sample records"}, dry_run],
                 "responses": {"200": report, "201": report, "403": error, "404": error, "422": refused}}
    }));
    paths.insert("/api/v1/packs/{id}/upgrade".into(), json!({
        "parameters": [id],
        "post": {"tags": ["packs"], "summary": "Upgrade an installed pack to the bundled version (admin), in one transaction: a field the pack did not change keeps the tenant's edits, fields it drops are deactivated with their data kept, values convert, the pack's data migrations run; `dry_run=true` shows the diff",
                 "parameters": [dry_run],
                 "responses": {"200": report, "403": error, "404": error, "422": refused}}
    }));
    let name =
        json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string"}});
    for (kind, plural, what) in [
        (
            "report",
            "reports",
            "an aggregation or a list over one entity",
        ),
        (
            "dashboard",
            "dashboards",
            "widgets: reports drawn as charts or tables, and KPIs with a target, a period and the previous period",
        ),
    ] {
        let schema = json!({"$ref": format!("#/components/schemas/{kind}")});
        paths.insert(format!("/api/v1/{plural}"), json!({
            "get": {"tags": ["analytics"], "summary": format!("Saved {plural} ({what}) and the pack that installed each"),
                    "responses": {"200": {"description": format!("`{{\"data\": [{kind}s]}}`")}}},
            "post": {"tags": ["analytics"], "summary": format!("Save a {kind} (admin); checked against the tenant's entities"),
                     "requestBody": {"required": true, "content": {"application/json": {"schema": schema}}},
                     "responses": {"201": {"description": format!("The {kind}")}, "400": error, "403": error, "409": error, "422": error}}
        }));
        paths.insert(format!("/api/v1/{plural}/{{name}}"), json!({
            "parameters": [name],
            "get": {"tags": ["analytics"], "summary": format!("A {kind}"), "responses": {"200": {"description": format!("The {kind}")}, "404": error}},
            "put": {"tags": ["analytics"], "summary": format!("Replace a {kind} (admin); one a pack installed stays the pack's"),
                    "requestBody": {"required": true, "content": {"application/json": {"schema": schema}}},
                    "responses": {"200": {"description": format!("The {kind}")}, "400": error, "403": error, "404": error, "422": error}},
            "delete": {"tags": ["analytics"], "summary": format!("Delete a {kind} (admin)"),
                       "responses": {"204": {"description": "Deleted"}, "403": error, "404": error}}
        }));
    }
    paths.insert("/api/v1/reports/{name}/data".into(), json!({
        "parameters": [name],
        "get": {"tags": ["analytics"], "summary": "Run a report as the caller (their record scope and field security): an aggregation's groups or a list's first page",
                "responses": {"200": {"description": "`{\"data\": [...], \"truncated\": false}` or a page"}, "400": error, "403": error, "404": error}}
    }));
    paths.insert("/api/v1/dashboards/{name}/data".into(), json!({
        "parameters": [name],
        "get": {"tags": ["analytics"], "summary": "Every widget of a dashboard computed as the caller: charts' groups, KPIs' value, target, progress, previous period and change; a widget the caller may not see carries its `error`",
                "responses": {"200": {"description": "`{\"name\", \"time_zone\", \"computed_at\", \"widgets\": [{\"id\", \"type\", \"value\", \"target\", \"progress\", \"previous\", \"change\", \"period\"} | {\"id\", \"type\", \"chart\", \"data\"} | {\"id\", \"error\"}]}`"}, "404": error}}
    }));
    paths.insert("/api/v1/views".into(), json!({
        "get": {"tags": ["views"], "summary": "Saved views (lists over one entity, with parameters) and the pack that installed each",
                "responses": {"200": {"description": "Views", "content": {"application/json": {"schema": {"type": "object",
                    "properties": {"data": {"type": "array", "items": {"$ref": "#/components/schemas/view"}}}}}}}}}
    }));
    paths.insert("/api/v1/views/{name}".into(), json!({
        "parameters": [name],
        "get": {"tags": ["views"], "summary": "A saved view", "responses": {"200": {"description": "The view"}, "404": error}}
    }));
    paths.insert("/api/v1/views/{name}/records".into(), json!({
        "parameters": [name,
                       {"name": "params", "in": "query", "style": "form", "explode": true,
                        "schema": {"type": "object", "additionalProperties": {"type": "string"}},
                        "description": "The view's parameters, each as a query parameter (`?exhibition=<id>`); each is a quoted literal in the filter"},
                       {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                       {"name": "cursor", "in": "query", "schema": {"type": "string"}}],
        "get": {"tags": ["views"], "summary": "Run a saved view: a page of records as the records API lists them",
                "responses": {"200": {"description": "A page of records"}, "400": error, "404": error}}
    }));
}

fn webhook_paths(paths: &mut Map<String, Value>, error: &Value) {
    let webhook = json!({"type": "object", "additionalProperties": false, "required": ["name", "url"],
        "properties": {
            "name": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,62}$"},
            "url": {"type": "string", "format": "uri", "description": "http or https; refused when it is (or, at delivery, resolves to) a loopback, private, link-local or other special address, unless the operator allow-lists the host"},
            "description": {"type": "string", "maxLength": 2000},
            "retry": {"type": "object", "additionalProperties": false, "properties": {
                "max_attempts": {"type": "integer", "minimum": 1, "maximum": 20, "default": 10},
                "backoff_seconds": {"type": "number", "minimum": 0.1, "maximum": 3600, "default": 30, "description": "The wait before the first retry; it doubles after each, up to an hour"}}}}});
    let name =
        json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string"}});
    paths.insert("/api/v1/webhooks".into(), json!({
        "get": {"tags": ["webhooks"], "summary": "The tenant's webhooks, without their secrets (admin)", "responses": {"200": {"description": "Webhooks"}, "403": error}},
        "post": {"tags": ["webhooks"], "summary": "Register a webhook (admin); the answer holds its signing secret, shown again only when rotated",
                 "requestBody": {"required": true, "content": {"application/json": {"schema": webhook}}},
                 "responses": {"201": {"description": "The webhook, with `secret`"}, "403": error, "409": error, "422": error}}
    }));
    paths.insert("/api/v1/webhooks/{name}".into(), json!({
        "parameters": [name],
        "get": {"tags": ["webhooks"], "summary": "A webhook (admin)", "responses": {"200": {"description": "The webhook"}, "404": error}},
        "put": {"tags": ["webhooks"], "summary": "Change the URL, description or retry policy (admin)",
                "requestBody": {"required": true, "content": {"application/json": {"schema": webhook}}},
                "responses": {"200": {"description": "The webhook"}, "404": error, "422": error}},
        "delete": {"tags": ["webhooks"], "summary": "Delete a webhook (admin); its pending calls dead-letter", "responses": {"200": {"description": "Deleted"}, "404": error}}
    }));
    paths.insert("/api/v1/webhooks/{name}/rotate-secret".into(), json!({
        "parameters": [name],
        "post": {"tags": ["webhooks"], "summary": "Give the webhook a new signing secret, returned once (admin)", "responses": {"200": {"description": "The webhook, with `secret`"}, "404": error}}
    }));
    paths.insert("/api/v1/webhooks/{name}/deliveries".into(), json!({
        "parameters": [name,
                       {"name": "cursor", "in": "query", "schema": {"type": "integer"}, "description": "`next_cursor` of the previous page"},
                       {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}}],
        "get": {"tags": ["webhooks"], "summary": "Every delivery attempt, newest first: message, attempt, URL, HTTP status, error, duration (admin)",
                "responses": {"200": {"description": "A page of attempts"}, "404": error}}
    }));
}

fn workflow_paths(paths: &mut Map<String, Value>, error: &Value) {
    let workflow = json!({"$ref": "#/components/schemas/workflow"});
    let name =
        json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string"}});
    let run = json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}});
    let cursor = json!({"name": "cursor", "in": "query", "schema": {"type": "string"}, "description": "`next_cursor` of the previous page"});
    let limit = json!({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}});
    paths.insert("/api/v1/workflows".into(), json!({
        "get": {"tags": ["workflows"], "summary": "The tenant's workflows (admin)", "responses": {"200": {"description": "Workflows"}, "403": error}},
        "post": {"tags": ["workflows"], "summary": "Create a workflow (admin); problems are reported by JSON path",
                 "requestBody": {"required": true, "content": {"application/json": {"schema": workflow}}},
                 "responses": {"201": {"description": "Created, version 1"}, "403": error, "409": error, "422": error}}
    }));
    paths.insert("/api/v1/workflows/{name}".into(), json!({
        "parameters": [name],
        "get": {"tags": ["workflows"], "summary": "A workflow: definition, version, enabled", "responses": {"200": {"description": "The workflow"}, "404": error}},
        "put": {"tags": ["workflows"], "summary": "Replace the definition with a new version (admin); runs in flight finish on theirs; `version` in the body must be the current one",
                "requestBody": {"required": true, "content": {"application/json": {"schema": workflow}}},
                "responses": {"200": {"description": "The new version"}, "404": error, "412": error, "422": error}},
        "delete": {"tags": ["workflows"], "summary": "Delete a workflow (admin); its unfinished runs are cancelled", "responses": {"200": {"description": "Deleted"}, "404": error}}
    }));
    for (action, summary) in [
        ("enable", "Enable a workflow (admin)"),
        (
            "disable",
            "Disable a workflow (admin): it starts no runs; runs in flight finish",
        ),
    ] {
        paths.insert(format!("/api/v1/workflows/{{name}}/{action}"), json!({
            "parameters": [name],
            "post": {"tags": ["workflows"], "summary": summary, "responses": {"200": {"description": "The workflow"}, "404": error}}
        }));
    }
    paths.insert("/api/v1/workflows/{name}/runs".into(), json!({
        "parameters": [name],
        "get": {"tags": ["workflows"], "summary": "Runs, newest first (admin)",
                "parameters": [{"name": "status", "in": "query", "schema": {"enum": ["pending", "running", "waiting", "succeeded", "failed", "cancelled"]}}, cursor, limit],
                "responses": {"200": {"description": "A page of runs"}, "400": error, "404": error}},
        "post": {"tags": ["workflows"], "summary": "Start a run of a manual workflow (admin): `{\"record\": id, \"input\": {…}}`, the input checked against the trigger's schema",
                 "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "additionalProperties": false,
                     "properties": {"record": {"type": "string"}, "input": {"type": "object"}}}}}},
                 "responses": {"202": {"description": "The queued run"}, "400": error, "404": error, "409": error, "422": error}}
    }));
    paths.insert("/api/v1/workflows/{name}/runs/{id}".into(), json!({
        "parameters": [name, run],
        "get": {"tags": ["workflows"], "summary": "A run with each step's status, attempts, input, output, error and timing",
                "responses": {"200": {"description": "The run"}, "404": error}}
    }));
    paths.insert("/api/v1/workflows/{name}/runs/{id}/retry".into(), json!({
        "parameters": [name, run],
        "post": {"tags": ["workflows"], "summary": "Retry a failed run from its failed step (admin)",
                 "responses": {"202": {"description": "The queued run"}, "404": error, "409": error}}
    }));
    paths.insert("/api/v1/approvals".into(), json!({
        "get": {"tags": ["workflows"], "summary": "Approvals the caller may decide (an administrator: all), newest first",
                "parameters": [{"name": "status", "in": "query", "schema": {"enum": ["pending", "approved", "rejected", "expired", "cancelled"]}}, cursor, limit],
                "responses": {"200": {"description": "A page of approvals"}, "400": error}}
    }));
    for (action, summary) in [
        (
            "approve",
            "Approve (an approver or an administrator): the run goes on with the approval's `then` steps",
        ),
        (
            "reject",
            "Reject (an approver or an administrator): the run goes on with the approval's `else` steps",
        ),
    ] {
        paths.insert(format!("/api/v1/approvals/{{id}}/{action}"), json!({
            "parameters": [run],
            "post": {"tags": ["workflows"], "summary": summary,
                     "requestBody": {"required": false, "content": {"application/json": {"schema": {"type": "object", "additionalProperties": false,
                         "properties": {"comment": {"type": "string", "maxLength": 2000}}}}}},
                     "responses": {"200": {"description": "The decided approval"}, "400": error, "403": error, "404": error, "409": error}}
        }));
    }
    security_paths(paths);
    paths.insert("/api/v1/notifications".into(), json!({
        "get": {"tags": ["workflows"], "summary": "The caller's in-app notifications, newest first",
                "parameters": [{"name": "unread", "in": "query", "schema": {"type": "boolean"}}, cursor, limit],
                "responses": {"200": {"description": "A page of notifications"}, "400": error}}
    }));
    paths.insert("/api/v1/notifications/{id}/read".into(), json!({
        "parameters": [run],
        "post": {"tags": ["workflows"], "summary": "Mark one of the caller's notifications read", "responses": {"200": {"description": "Read"}, "404": error}}
    }));
}

/// Marks the operations only administrators may use (`x-rapport-admin: true`), from the table
/// the guard enforces.
fn mark_admin_routes(paths: &mut Map<String, Value>) {
    for (method, template) in super::guard::ADMIN_ROUTES {
        let operation = paths
            .get_mut(&format!("/api/v1{template}"))
            .and_then(|path| path.get_mut(method.to_lowercase()));
        if let Some(Value::Object(operation)) = operation {
            operation.insert("x-rapport-admin".into(), Value::Bool(true));
        }
    }
}

/// Users, roles, teams, tokens, sessions, `me` and the audit trail.
fn security_paths(paths: &mut Map<String, Value>) {
    let error = json!({"$ref": "#/components/responses/error"});
    let role = json!({"$ref": "#/components/schemas/role"});
    let text = |name: &str| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}});
    paths.insert("/api/v1/me".into(), json!({
        "get": {"tags": ["security"], "summary": "The caller: their user, roles and teams, whether they administer the tenant, and their permissions on each entity",
                "responses": {"200": {"description": "`{\"user\": …, \"admin\": …, \"reassign\": …, \"permissions\": {entity: grant}}`"}}}
    }));
    paths.insert("/api/v1/users".into(), json!({
        "get": {"tags": ["security"], "summary": "The tenant's users with their roles and teams (admin)", "responses": {"200": {"description": "Users"}, "403": error}},
        "post": {"tags": ["security"], "summary": "Create a user (admin): `{\"name\", \"email\"?, \"roles\"? (default [\"member\"]), \"password\"?}`",
                 "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["name"], "additionalProperties": false,
                     "properties": {"name": {"type": "string", "maxLength": 100}, "email": {"type": "string"}, "roles": {"type": "array", "items": {"type": "string"}},
                                    "password": {"type": "string", "minLength": 10, "maxLength": 256}}}}}},
                 "responses": {"201": {"description": "The user"}, "403": error, "409": error, "422": error}}
    }));
    paths.insert("/api/v1/users/{id}".into(), json!({
        "parameters": [text("id")],
        "get": {"tags": ["security"], "summary": "A user (admin, or `me`)", "responses": {"200": {"description": "The user"}, "403": error, "404": error}},
        "patch": {"tags": ["security"], "summary": "Change a user's email, roles or disabled state (admin); disabling revokes their tokens; the tenant keeps an enabled administrator",
                  "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "additionalProperties": false,
                      "properties": {"email": {"type": ["string", "null"]}, "roles": {"type": "array", "items": {"type": "string"}}, "disabled": {"type": "boolean"}}}}}},
                  "responses": {"200": {"description": "The user"}, "403": error, "404": error, "409": error, "422": error}}
    }));
    paths.insert("/api/v1/users/{id}/password".into(), json!({
        "parameters": [text("id")],
        "put": {"tags": ["security"], "summary": "Set a password (argon2id at rest): an administrator for anyone, a user for themselves with `current_password`; clears a sign-in lock",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["password"], "additionalProperties": false,
                    "properties": {"password": {"type": "string", "minLength": 10, "maxLength": 256}, "current_password": {"type": "string"}}}}}},
                "responses": {"204": {"description": "Set"}, "403": error, "404": error, "422": error}}
    }));
    paths.insert("/api/v1/roles".into(), json!({
        "get": {"tags": ["security"], "summary": "Roles (admin)", "responses": {"200": {"description": "Roles"}, "403": error}},
        "post": {"tags": ["security"], "summary": "Create a role (admin)", "requestBody": {"required": true, "content": {"application/json": {"schema": role}}},
                 "responses": {"201": {"description": "The role"}, "403": error, "409": error, "422": error}}
    }));
    paths.insert("/api/v1/roles/{name}".into(), json!({
        "parameters": [text("name")],
        "get": {"tags": ["security"], "summary": "A role (admin)", "responses": {"200": {"description": "The role"}, "403": error, "404": error}},
        "put": {"tags": ["security"], "summary": "Create or replace a role (admin); takes effect at once. `administrator` is built in and cannot change",
                "requestBody": {"required": true, "content": {"application/json": {"schema": role}}},
                "responses": {"200": {"description": "Replaced"}, "201": {"description": "Created"}, "403": error, "409": error, "422": error}},
        "delete": {"tags": ["security"], "summary": "Delete a role no user holds (admin)", "responses": {"200": {"description": "Deleted"}, "403": error, "404": error, "409": error}}
    }));
    let team = json!({"type": "object", "required": ["name"], "additionalProperties": false,
        "properties": {"name": {"type": "string"}, "label": {"type": "string"}, "manager": {"type": "string", "description": "A user id"},
                       "members": {"type": "array", "items": {"type": "string", "description": "A user id"}}}});
    paths.insert("/api/v1/teams".into(), json!({
        "get": {"tags": ["security"], "summary": "Teams and their members", "responses": {"200": {"description": "Teams"}}},
        "post": {"tags": ["security"], "summary": "Create a team (admin)", "requestBody": {"required": true, "content": {"application/json": {"schema": team}}},
                 "responses": {"201": {"description": "The team"}, "403": error, "409": error, "422": error}}
    }));
    paths.insert("/api/v1/teams/{name}".into(), json!({
        "parameters": [text("name")],
        "get": {"tags": ["security"], "summary": "A team", "responses": {"200": {"description": "The team"}, "404": error}},
        "put": {"tags": ["security"], "summary": "Create or replace a team and its members (admin)", "requestBody": {"required": true, "content": {"application/json": {"schema": team}}},
                "responses": {"200": {"description": "Replaced"}, "201": {"description": "Created"}, "403": error, "422": error}},
        "delete": {"tags": ["security"], "summary": "Delete a team (admin)", "responses": {"200": {"description": "Deleted"}, "403": error, "404": error}}
    }));
    paths.insert("/api/v1/tokens".into(), json!({
        "get": {"tags": ["security"], "summary": "The caller's API tokens (never the secret); `user=<id>` or `user=*` for administrators",
                "parameters": [{"name": "user", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "Tokens"}, "403": error}},
        "post": {"tags": ["security"], "summary": "Create an API token; the answer is the only time `token` is shown",
                 "requestBody": {"required": false, "content": {"application/json": {"schema": {"type": "object", "additionalProperties": false,
                     "properties": {"name": {"type": "string", "maxLength": 200}, "expires_in_days": {"type": "integer", "minimum": 1, "maximum": 366},
                                    "user": {"type": "string", "description": "Another user (admin)"}}}}}},
                 "responses": {"201": {"description": "The token"}, "403": error, "422": error}}
    }));
    paths.insert("/api/v1/tokens/{id}".into(), json!({
        "parameters": [text("id")],
        "delete": {"tags": ["security"], "summary": "Revoke a token (one's own, or any as admin)", "responses": {"200": {"description": "Revoked"}, "404": error}}
    }));
    paths.insert("/api/v1/sessions".into(), json!({
        "post": {"tags": ["security"], "summary": "Sign in with a password; answers a session token valid 12 hours. Failures are slowed down; five in a row lock the user for 15 minutes (429)",
                 "security": [],
                 "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["tenant", "user", "password"], "additionalProperties": false,
                     "properties": {"tenant": {"type": "string"}, "user": {"type": "string"}, "password": {"type": "string"}}}}}},
                 "responses": {"201": {"description": "`{\"token\", \"expires_at\", \"id\", \"user\", \"roles\"}`"}, "401": error, "429": error}}
    }));
    paths.insert("/api/v1/sessions/current".into(), json!({
        "delete": {"tags": ["security"], "summary": "Sign out: revoke the token of this request", "responses": {"204": {"description": "Signed out"}}}
    }));
    paths.insert("/api/v1/records/{entity}/{id}/assign".into(), json!({
        "parameters": [text("entity"), {"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}}],
        "post": {"tags": ["records"], "summary": "Give a record another owner: `{\"owner\": \"<user id>\"}`; needs a role that may reassign and update the record",
                 "responses": {"200": {"description": "The record"}, "403": error, "404": error, "422": error}}
    }));
    paths.insert("/api/v1/audit".into(), json!({
        "get": {"tags": ["security"], "summary": "The audit trail, newest first (admin): changes to metadata, plugins, packs, workflows, webhooks, users, roles, teams, tokens; sign-ins and failures; token use; refused attempts (`access.denied`)",
                "parameters": [{"name": "actor", "in": "query", "schema": {"type": "string"}, "description": "A user id"},
                               {"name": "action", "in": "query", "schema": {"type": "string"}, "description": "An action (`entity.update`) or a subject (`entity`)"},
                               {"name": "target", "in": "query", "schema": {"type": "string"}},
                               {"name": "since", "in": "query", "schema": {"type": "string", "format": "date-time"}},
                               {"name": "until", "in": "query", "schema": {"type": "string", "format": "date-time"}},
                               {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}},
                               {"name": "cursor", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "`{\"data\": [{id, at, actor, action, target, detail}], \"next_cursor\"}`"}, "400": error, "403": error}}
    }));
}

/// Adds a JSON Schema of `schemas/` as the component `name`, its `$defs` as `name_<def>`.
fn embed(schemas: &mut Map<String, Value>, name: &str, text: &str) {
    let mut schema: Value = serde_json::from_str(text).expect("shipped schemas are JSON");
    let object = schema.as_object_mut().expect("object");
    object.remove("$schema");
    object.remove("$id");
    // OpenAPI resolves `#/$defs/…` against the document root: point them into components.
    let text = serde_json::to_string(&schema)
        .expect("serializes")
        .replace("#/$defs/", &format!("#/components/schemas/{name}_"));
    let mut schema: Value = serde_json::from_str(&text).expect("still JSON");
    let defs = schema
        .as_object_mut()
        .expect("object")
        .remove("$defs")
        .unwrap_or_default();
    for (def, part) in defs.as_object().into_iter().flatten() {
        schemas.insert(format!("{name}_{def}"), part.clone());
    }
    schemas.insert(name.into(), schema);
}

fn parameters() -> Value {
    json!({
        "filter": {"name": "filter", "in": "query", "schema": {"type": "string"},
                   "description": "e.g. `stage eq 'customer' and (annual_value ge 1000 or email is null)`; operators eq ne gt ge lt le in contains startswith `is [not] null`, and/or/not"},
        "sort": {"name": "sort", "in": "query", "schema": {"type": "string"}, "description": "Comma-separated fields, `-` for descending; system fields `_created_at`, …"},
        "limit": {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}},
        "cursor": {"name": "cursor", "in": "query", "schema": {"type": "string"}, "description": "`next_cursor` of the previous page"},
        "q": {"name": "q", "in": "query", "schema": {"type": "string"}, "description": "Text search across text fields"},
        "fields": {"name": "fields", "in": "query", "schema": {"type": "string"}, "description": "Fields to return"},
        "expand": {"name": "expand", "in": "query", "schema": {"type": "string"}, "description": "Reference fields whose records to include"},
        "deleted": {"name": "deleted", "in": "query", "schema": {"enum": ["exclude", "include", "only"]}},
        "idempotency_key": {"name": "Idempotency-Key", "in": "header", "schema": {"type": "string", "maxLength": 255}}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_administrator_route_is_described_and_marked() {
        let mut paths = fixed_paths();
        mark_admin_routes(&mut paths);
        for (method, template) in super::super::guard::ADMIN_ROUTES {
            let operation = &paths[&format!("/api/v1{template}")][method.to_lowercase()];
            assert_eq!(
                operation["x-rapport-admin"],
                Value::Bool(true),
                "{method} {template}"
            );
        }
        assert!(paths["/api/v1/me"]["get"].get("x-rapport-admin").is_none());
    }
}
