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
