//! The console's own words in English and Simplified Chinese. Entity and field labels come from
//! metadata; these are the words around them.

use axum::http::HeaderMap;

/// A language of the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Zh,
}

impl Lang {
    pub const ALL: [Lang; 2] = [Lang::En, Lang::Zh];

    /// The BCP 47 tag (`lang` attribute, cookie value).
    pub fn tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh-CN",
        }
    }

    /// The language's name in itself, for the switch.
    pub fn name(self) -> &'static str {
        match self {
            Lang::En => "English",
            Lang::Zh => "简体中文",
        }
    }

    pub fn parse(tag: &str) -> Option<Lang> {
        let tag = tag.trim().to_ascii_lowercase();
        if tag == "en" || tag.starts_with("en-") {
            Some(Lang::En)
        } else if tag == "zh" || tag.starts_with("zh-cn") || tag.starts_with("zh-hans") {
            Some(Lang::Zh)
        } else {
            None
        }
    }

    /// The user's choice (the `rapport_lang` cookie), else the browser's first language the
    /// console speaks, else English.
    pub fn of(headers: &HeaderMap) -> Lang {
        if let Some(lang) = super::cookie(headers, super::LANG_COOKIE).and_then(|v| Lang::parse(&v))
        {
            return lang;
        }
        headers
            .get(axum::http::header::ACCEPT_LANGUAGE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                value
                    .split(',')
                    .filter_map(|part| Lang::parse(part.split(';').next().unwrap_or_default()))
                    .next()
            })
            .unwrap_or(Lang::En)
    }

    /// The console's word for `key`; the key itself when it has none (a test keeps both
    /// catalogues complete).
    pub fn t(self, key: &'static str) -> &'static str {
        let catalogue = match self {
            Lang::En => EN,
            Lang::Zh => ZH,
        };
        catalogue
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, word)| *word)
            .unwrap_or(key)
    }
}

const EN: &[(&str, &str)] = &[
    ("app", "Rapport"),
    ("sign_in", "Sign in"),
    ("sign_out", "Sign out"),
    ("tenant", "Company"),
    ("user", "User name"),
    ("password", "Password"),
    ("sign_in_failed", "Sign-in failed"),
    (
        "session_expired",
        "Your session has ended. Sign in to go on.",
    ),
    ("home", "Home"),
    ("entities", "Records"),
    ("other", "Other"),
    ("search", "Search"),
    ("filter", "Filter"),
    ("apply", "Apply"),
    ("clear", "Clear"),
    ("new", "New"),
    ("edit", "Edit"),
    ("save", "Save"),
    ("cancel", "Cancel"),
    ("next_page", "Next page"),
    ("first_page", "First page"),
    ("no_records", "No records."),
    ("details", "Details"),
    ("related", "Related"),
    ("timeline", "Timeline"),
    ("history", "History"),
    ("created", "Created"),
    ("updated", "Updated"),
    ("owner", "Owner"),
    ("version", "Version"),
    (
        "fix_errors",
        "The record was not saved. Fix the fields marked below.",
    ),
    (
        "stale",
        "Someone changed this record after you opened it. Your changes are below; reload to see theirs.",
    ),
    ("saved", "Saved."),
    ("read_only", "read-only"),
    ("yes", "Yes"),
    ("no", "No"),
    ("none", "—"),
    ("contains", "contains"),
    ("equals", "equals"),
    ("not_equals", "is not"),
    ("greater", "greater than"),
    ("less", "less than"),
    ("is_empty", "is empty"),
    ("any_field", "Field"),
    ("language", "Language"),
    ("not_found", "Not found"),
    ("forbidden", "Not allowed"),
    ("error", "Something went wrong"),
    ("back", "Back"),
    ("search_reference", "Type to search"),
    ("changed", "changed"),
    ("by", "by"),
    ("more", "More"),
    ("entities_heading", "Your records"),
    ("dashboards", "Dashboards"),
    ("no_dashboards", "No dashboards yet."),
    ("computed_at", "Computed at"),
    ("target", "Target"),
    ("vs_previous", "vs the previous period"),
    ("plugins", "Plugins"),
    ("no_plugins", "No plugins installed."),
    ("plugin", "Plugin"),
    ("enabled", "Enabled"),
    ("capabilities", "Capabilities"),
    ("provides", "Provides"),
    ("limits", "Limits"),
    ("configuration", "Configuration"),
    ("runs", "Runs"),
    ("all_runs", "All runs"),
    ("failures_only", "Failures only"),
    ("no_runs", "No runs yet."),
    ("when", "When"),
    ("stage", "Stage"),
    ("record", "Record"),
    ("outcome", "Outcome"),
    ("fuel", "Fuel"),
    ("schema", "Schema"),
    ("entity", "Entity"),
    ("label", "Label"),
    ("fields", "Fields"),
    ("new_entity", "New entity"),
    ("api_name", "API name"),
    (
        "api_name_hint",
        "Lower-case letters, digits and _; it never changes.",
    ),
    ("plural_label", "Plural label"),
    ("create_entity", "Create entity"),
    ("open_records", "Open its records"),
    ("type", "Type"),
    ("settings", "Settings"),
    ("required", "Required"),
    ("unique", "Unique"),
    ("indexed", "Indexed"),
    ("deactivated", "deactivated"),
    ("reactivate", "Reactivate"),
    ("purge", "Purge"),
    ("add_field", "Add field"),
    ("entity_settings", "Entity settings"),
    ("description", "Description"),
    ("delete_entity", "Delete entity"),
    (
        "force_delete",
        "Also when other entities refer to it (their reference fields are deactivated)",
    ),
    ("edit_field", "Edit field"),
    (
        "type_change_hint",
        "Changing the type converts every record; you see the dry run first.",
    ),
    ("required_hint", "Every record must have a value."),
    ("unique_hint", "No two records may have the same value."),
    ("indexed_hint", "Filters and sorts on this field stay fast."),
    ("options", "Options"),
    (
        "options_hint",
        "One per line: value, or value | label, or value | label | closed.",
    ),
    ("multiple", "Multiple"),
    ("multiple_hint", "Several options at once."),
    ("references", "Refers to"),
    ("max_length", "Maximum length"),
    ("min", "Minimum"),
    ("max", "Maximum"),
    ("region", "Phone region (e.g. CN)"),
    ("prefix", "Prefix"),
    ("digits", "Digits"),
    ("start", "First number"),
    ("deactivate", "Deactivate"),
    (
        "deactivate_hint",
        "The field is hidden and its data kept, until it is reactivated or purged.",
    ),
    (
        "schema_stale",
        "Someone changed this entity after you opened it. Reload it and make your change again.",
    ),
    (
        "would_not_convert",
        "Some records would not convert, so nothing was changed. Fix them, or choose another type.",
    ),
    (
        "dry_run_notice",
        "Dry run: nothing has changed yet. Check what the change does, then confirm.",
    ),
    ("changes", "Changes"),
    ("conversion", "Conversion"),
    ("records_with_value", "records with a value"),
    ("would_not_convert_count", "would not convert"),
    ("dependents", "What depends on this field"),
    ("no_dependents", "Nothing depends on it."),
    ("confirm", "Confirm"),
    ("computed_field", "computed field"),
    ("view", "view"),
    ("report", "report"),
    ("dashboard", "dashboard"),
    ("change_entity_described", "Labels of the entity"),
    ("change_field_added", "New field"),
    ("change_field_described", "Labels of"),
    ("change_field_retyped", "Type of"),
    ("change_index_added", "New index on"),
    ("change_unique_added", "Unique values for"),
    ("change_index_removed", "No more index on"),
    ("change_unique_removed", "No more unique values for"),
    ("change_field_deactivated", "Deactivated:"),
    ("change_field_reactivated", "Reactivated:"),
    ("packs", "Packs"),
    ("pack_installed", "installed"),
    ("pack_removed", "removed (data kept)"),
    ("pack_available", "available"),
    ("depends_on", "Needs"),
    ("done", "Done"),
    ("extends", "Adds fields to"),
    ("workflows", "Workflows"),
    ("views", "Views"),
    ("roles", "Roles"),
    ("preview_upgrade", "Preview the upgrade"),
    (
        "purge_pack",
        "Also delete its entities, their records and the fields it added",
    ),
    ("preview_remove", "Preview the removal"),
    ("with_sample", "With sample records"),
    ("preview_install", "Preview the install"),
    ("references_deactivated", "Reference fields deactivated"),
    ("capabilities_added", "Capabilities added"),
    ("capabilities_removed", "Capabilities removed"),
    ("sample_records", "Sample records"),
    ("migrated_records", "Records migrated"),
    ("install", "Install"),
    ("upgrade", "Upgrade"),
    ("remove", "Remove"),
    ("entity_types", "Entities"),
    ("upload_plugin", "Upload a plugin"),
    (
        "upload_hint",
        "Its manifest (JSON) and its component (.wasm): a new plugin is installed, a new version of an installed one upgrades it.",
    ),
    ("manifest", "Manifest"),
    ("component", "Component"),
    ("upload", "Upload"),
    ("enable", "Enable"),
    ("disable", "Disable"),
    ("default", "Default"),
    ("one_per_line", "One per line."),
    ("new_workflow", "New workflow"),
    ("no_workflows", "No workflows yet."),
    ("workflow", "Workflow"),
    ("trigger", "Trigger"),
    ("if", "if"),
    ("disabled", "Disabled"),
    ("workflow_invalid", "The workflow was not saved."),
    ("steps", "Steps"),
    ("definition", "Definition"),
    (
        "definition_hint",
        "The workflow as JSON (see docs/WORKFLOWS.md): its trigger and steps. Problems are shown at their step above.",
    ),
    ("status", "Status"),
    ("error_column", "Error"),
    ("run", "Run"),
    ("step", "Step"),
    ("input", "Input"),
    ("output", "Output"),
    ("retry", "Retry"),
    ("approvals", "Approvals"),
    ("no_approvals", "Nothing waits for your approval."),
    ("comment", "Comment"),
    ("approve", "Approve"),
    ("reject", "Reject"),
    ("decided", "Decided"),
    ("users", "Users"),
    ("audit", "Audit trail"),
    ("email", "Email"),
    ("user_disabled", "Disabled"),
    ("locked", "Locked"),
    ("active", "Active"),
    ("no_password", "no password"),
    ("new_user", "New user"),
    ("create_user", "Create user"),
    ("set_password", "Set password"),
    ("new_role", "New role"),
    ("administers", "Administers the tenant"),
    ("reassigns", "Reassigns records to others"),
    ("built_in_role", "A built-in role: it cannot change."),
    ("field_access", "Field access"),
    ("grant_create", "Create"),
    ("grant_read", "Read"),
    ("grant_update", "Update"),
    ("grant_delete", "Delete"),
    ("scope_none", "none"),
    ("scope_own", "own records"),
    ("scope_team", "team's records"),
    ("scope_all", "all records"),
    ("audit_action", "Action"),
    ("audit_target", "Target"),
    ("no_audit", "No entries."),
    (
        "session_expired_form",
        "Your session has ended. Sign in, and what you typed will be sent.",
    ),
    ("signed_in", "Signed in"),
    (
        "replay_hint",
        "Sending what you typed before the session ended…",
    ),
    ("continue", "Continue"),
];

const ZH: &[(&str, &str)] = &[
    ("app", "Rapport"),
    ("sign_in", "登录"),
    ("sign_out", "退出"),
    ("tenant", "公司"),
    ("user", "用户名"),
    ("password", "密码"),
    ("sign_in_failed", "登录失败"),
    ("session_expired", "会话已结束，请重新登录。"),
    ("home", "首页"),
    ("entities", "记录"),
    ("other", "其他"),
    ("search", "搜索"),
    ("filter", "筛选"),
    ("apply", "应用"),
    ("clear", "清除"),
    ("new", "新建"),
    ("edit", "编辑"),
    ("save", "保存"),
    ("cancel", "取消"),
    ("next_page", "下一页"),
    ("first_page", "第一页"),
    ("no_records", "没有记录。"),
    ("details", "详细信息"),
    ("related", "相关记录"),
    ("timeline", "时间线"),
    ("history", "修改历史"),
    ("created", "创建于"),
    ("updated", "更新于"),
    ("owner", "负责人"),
    ("version", "版本"),
    ("fix_errors", "记录未保存，请修改下面标出的字段。"),
    (
        "stale",
        "在您打开之后，有人修改了这条记录。您的修改保留在下面；重新加载可查看对方的修改。",
    ),
    ("saved", "已保存。"),
    ("read_only", "只读"),
    ("yes", "是"),
    ("no", "否"),
    ("none", "—"),
    ("contains", "包含"),
    ("equals", "等于"),
    ("not_equals", "不等于"),
    ("greater", "大于"),
    ("less", "小于"),
    ("is_empty", "为空"),
    ("any_field", "字段"),
    ("language", "语言"),
    ("not_found", "未找到"),
    ("forbidden", "无权访问"),
    ("error", "出错了"),
    ("back", "返回"),
    ("search_reference", "输入以搜索"),
    ("changed", "修改了"),
    ("by", "由"),
    ("more", "更多"),
    ("entities_heading", "您的记录"),
    ("dashboards", "仪表板"),
    ("no_dashboards", "还没有仪表板。"),
    ("computed_at", "计算于"),
    ("target", "目标"),
    ("vs_previous", "与上一周期相比"),
    ("plugins", "插件"),
    ("no_plugins", "尚未安装插件。"),
    ("plugin", "插件"),
    ("enabled", "已启用"),
    ("capabilities", "权限"),
    ("provides", "提供"),
    ("limits", "限制"),
    ("configuration", "配置"),
    ("runs", "运行记录"),
    ("all_runs", "全部运行"),
    ("failures_only", "仅失败"),
    ("no_runs", "还没有运行记录。"),
    ("when", "时间"),
    ("stage", "阶段"),
    ("record", "记录"),
    ("outcome", "结果"),
    ("fuel", "燃料"),
    ("schema", "数据结构"),
    ("entity", "实体"),
    ("label", "显示名称"),
    ("fields", "字段"),
    ("new_entity", "新建实体"),
    ("api_name", "API 名称"),
    ("api_name_hint", "小写字母、数字和下划线；创建后不能修改。"),
    ("plural_label", "复数名称"),
    ("create_entity", "创建实体"),
    ("open_records", "查看记录"),
    ("type", "类型"),
    ("settings", "设置"),
    ("required", "必填"),
    ("unique", "唯一"),
    ("indexed", "索引"),
    ("deactivated", "已停用"),
    ("reactivate", "重新启用"),
    ("purge", "彻底删除"),
    ("add_field", "添加字段"),
    ("entity_settings", "实体设置"),
    ("description", "说明"),
    ("delete_entity", "删除实体"),
    ("force_delete", "即使有其他实体引用它（引用字段将被停用）"),
    ("edit_field", "编辑字段"),
    (
        "type_change_hint",
        "修改类型会转换每条记录；您会先看到试运行结果。",
    ),
    ("required_hint", "每条记录都必须有值。"),
    ("unique_hint", "任意两条记录的值都不能相同。"),
    ("indexed_hint", "按此字段筛选和排序保持快速。"),
    ("options", "选项"),
    (
        "options_hint",
        "每行一个：值，或 值 | 显示名称，或 值 | 显示名称 | closed。",
    ),
    ("multiple", "多选"),
    ("multiple_hint", "可同时选择多个选项。"),
    ("references", "引用"),
    ("max_length", "最大长度"),
    ("min", "最小值"),
    ("max", "最大值"),
    ("region", "电话地区（如 CN）"),
    ("prefix", "前缀"),
    ("digits", "位数"),
    ("start", "起始编号"),
    ("deactivate", "停用"),
    (
        "deactivate_hint",
        "字段将被隐藏，数据保留，直到重新启用或彻底删除。",
    ),
    (
        "schema_stale",
        "在您打开之后，有人修改了这个实体。请重新加载后再修改。",
    ),
    (
        "would_not_convert",
        "有些记录无法转换，因此没有做任何修改。请先修正这些记录，或选择其他类型。",
    ),
    (
        "dry_run_notice",
        "试运行：尚未做任何修改。请检查修改的影响，然后确认。",
    ),
    ("changes", "修改"),
    ("conversion", "转换"),
    ("records_with_value", "条记录有值"),
    ("would_not_convert_count", "条无法转换"),
    ("dependents", "依赖此字段的内容"),
    ("no_dependents", "没有内容依赖它。"),
    ("confirm", "确认"),
    ("computed_field", "计算字段"),
    ("view", "视图"),
    ("report", "报表"),
    ("dashboard", "仪表板"),
    ("change_entity_described", "实体的名称"),
    ("change_field_added", "新字段"),
    ("change_field_described", "名称修改："),
    ("change_field_retyped", "类型修改："),
    ("change_index_added", "新索引："),
    ("change_unique_added", "唯一值："),
    ("change_index_removed", "移除索引："),
    ("change_unique_removed", "取消唯一："),
    ("change_field_deactivated", "停用："),
    ("change_field_reactivated", "重新启用："),
    ("packs", "行业包"),
    ("pack_installed", "已安装"),
    ("pack_removed", "已移除（数据保留）"),
    ("pack_available", "可安装"),
    ("depends_on", "依赖"),
    ("done", "已完成"),
    ("extends", "为以下实体添加字段"),
    ("workflows", "工作流"),
    ("views", "视图"),
    ("roles", "角色"),
    ("preview_upgrade", "预览升级"),
    ("purge_pack", "同时删除它的实体、记录以及它添加的字段"),
    ("preview_remove", "预览移除"),
    ("with_sample", "包含示例记录"),
    ("preview_install", "预览安装"),
    ("references_deactivated", "已停用的引用字段"),
    ("capabilities_added", "新增权限"),
    ("capabilities_removed", "移除的权限"),
    ("sample_records", "示例记录"),
    ("migrated_records", "已迁移的记录"),
    ("install", "安装"),
    ("upgrade", "升级"),
    ("remove", "移除"),
    ("entity_types", "实体"),
    ("upload_plugin", "上传插件"),
    (
        "upload_hint",
        "插件的清单（JSON）和组件（.wasm）：新插件会被安装，已安装插件的新版本会升级它。",
    ),
    ("manifest", "清单"),
    ("component", "组件"),
    ("upload", "上传"),
    ("enable", "启用"),
    ("disable", "停用"),
    ("default", "默认"),
    ("one_per_line", "每行一个。"),
    ("new_workflow", "新建工作流"),
    ("no_workflows", "还没有工作流。"),
    ("workflow", "工作流"),
    ("trigger", "触发"),
    ("if", "如果"),
    ("disabled", "已停用"),
    ("workflow_invalid", "工作流未保存。"),
    ("steps", "步骤"),
    ("definition", "定义"),
    (
        "definition_hint",
        "工作流的 JSON（见 docs/WORKFLOWS.md）：触发条件和步骤。问题显示在上面对应的步骤处。",
    ),
    ("status", "状态"),
    ("error_column", "错误"),
    ("run", "运行"),
    ("step", "步骤"),
    ("input", "输入"),
    ("output", "输出"),
    ("retry", "重试"),
    ("approvals", "审批"),
    ("no_approvals", "没有等待您审批的事项。"),
    ("comment", "备注"),
    ("approve", "批准"),
    ("reject", "驳回"),
    ("decided", "已处理"),
    ("users", "用户"),
    ("audit", "审计日志"),
    ("email", "电子邮件"),
    ("user_disabled", "已停用"),
    ("locked", "已锁定"),
    ("active", "正常"),
    ("no_password", "未设置密码"),
    ("new_user", "新建用户"),
    ("create_user", "创建用户"),
    ("set_password", "设置密码"),
    ("new_role", "新建角色"),
    ("administers", "管理本租户"),
    ("reassigns", "可将记录转给他人"),
    ("built_in_role", "内置角色，不能修改。"),
    ("field_access", "字段权限"),
    ("grant_create", "创建"),
    ("grant_read", "读取"),
    ("grant_update", "修改"),
    ("grant_delete", "删除"),
    ("scope_none", "无"),
    ("scope_own", "自己的记录"),
    ("scope_team", "团队的记录"),
    ("scope_all", "全部记录"),
    ("audit_action", "操作"),
    ("audit_target", "对象"),
    ("no_audit", "没有记录。"),
    (
        "session_expired_form",
        "会话已结束。请登录，您输入的内容将随后提交。",
    ),
    ("signed_in", "已登录"),
    ("replay_hint", "正在提交会话结束前您输入的内容……"),
    ("continue", "继续"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_catalogues_have_the_same_words() {
        fn keys(catalogue: &[(&'static str, &'static str)]) -> Vec<&'static str> {
            let mut keys: Vec<&str> = catalogue.iter().map(|(key, _)| *key).collect();
            keys.sort_unstable();
            keys
        }
        assert_eq!(keys(EN), keys(ZH));
        let mut unique = keys(EN);
        unique.dedup();
        assert_eq!(unique.len(), EN.len(), "a key appears twice");
    }

    #[test]
    fn languages_come_from_the_cookie_then_the_browser() {
        let mut headers = HeaderMap::new();
        assert_eq!(Lang::of(&headers), Lang::En);
        headers.insert(
            axum::http::header::ACCEPT_LANGUAGE,
            "fr-FR,zh-CN;q=0.8,en;q=0.5".parse().unwrap(),
        );
        assert_eq!(Lang::of(&headers), Lang::Zh);
        headers.insert(
            axum::http::header::COOKIE,
            "rapport_lang=en".parse().unwrap(),
        );
        assert_eq!(Lang::of(&headers), Lang::En);
        assert_eq!(Lang::Zh.t("save"), "保存");
    }
}
