//! API scopes: what a token may call, independent of what its principal may see.
//!
//! Every route of the server needs exactly one [`ApiScope`]; a token carries a [`ScopeSet`]. Scopes use the dotted
//! Databricks names on the wire (`sql.statement-execution`); the short aliases (`sql`, `vector-search`, ...) and
//! `all-apis` are accepted as synonyms for the set of dotted scopes they stand for. A set is a bit mask, so the
//! intersection that token exchange relies on is one `&`.

use std::fmt;

/// One API scope. The order of the variants is the order of [`ApiScope::ALL`] and of the bits in a [`ScopeSet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ApiScope {
    IamScim,
    IamAccessControl,
    SettingsTokens,
    SettingsTokenManagement,
    SettingsWorkspaceConf,
    CatalogCatalogs,
    CatalogSchemas,
    CatalogTables,
    CatalogFunctions,
    CatalogConnections,
    CatalogVolumes,
    CatalogGrants,
    ServingEndpoints,
    VectorSearchEndpoints,
    VectorSearchIndexes,
    SqlWarehouses,
    SqlStatementExecution,
    DashboardsGenie,
    AppsApps,
    McpGenie,
    McpFunctions,
    McpVectorSearch,
    McpExternal,
    McpSql,
    DeputyAudit,
}

impl ApiScope {
    pub const ALL: [ApiScope; 25] = [
        ApiScope::IamScim,
        ApiScope::IamAccessControl,
        ApiScope::SettingsTokens,
        ApiScope::SettingsTokenManagement,
        ApiScope::SettingsWorkspaceConf,
        ApiScope::CatalogCatalogs,
        ApiScope::CatalogSchemas,
        ApiScope::CatalogTables,
        ApiScope::CatalogFunctions,
        ApiScope::CatalogConnections,
        ApiScope::CatalogVolumes,
        ApiScope::CatalogGrants,
        ApiScope::ServingEndpoints,
        ApiScope::VectorSearchEndpoints,
        ApiScope::VectorSearchIndexes,
        ApiScope::SqlWarehouses,
        ApiScope::SqlStatementExecution,
        ApiScope::DashboardsGenie,
        ApiScope::AppsApps,
        ApiScope::McpGenie,
        ApiScope::McpFunctions,
        ApiScope::McpVectorSearch,
        ApiScope::McpExternal,
        ApiScope::McpSql,
        ApiScope::DeputyAudit,
    ];

    /// The dotted name used on the wire and in MLmodel `api_scopes`.
    pub fn name(self) -> &'static str {
        match self {
            ApiScope::IamScim => "iam.scim",
            ApiScope::IamAccessControl => "iam.access-control",
            ApiScope::SettingsTokens => "settings.tokens",
            ApiScope::SettingsTokenManagement => "settings.token-management",
            ApiScope::SettingsWorkspaceConf => "settings.workspace-conf",
            ApiScope::CatalogCatalogs => "catalog.catalogs",
            ApiScope::CatalogSchemas => "catalog.schemas",
            ApiScope::CatalogTables => "catalog.tables",
            ApiScope::CatalogFunctions => "catalog.functions",
            ApiScope::CatalogConnections => "catalog.connections",
            ApiScope::CatalogVolumes => "catalog.volumes",
            ApiScope::CatalogGrants => "catalog.grants",
            ApiScope::ServingEndpoints => "serving.serving-endpoints",
            ApiScope::VectorSearchEndpoints => "vectorsearch.vector-search-endpoints",
            ApiScope::VectorSearchIndexes => "vectorsearch.vector-search-indexes",
            ApiScope::SqlWarehouses => "sql.warehouses",
            ApiScope::SqlStatementExecution => "sql.statement-execution",
            ApiScope::DashboardsGenie => "dashboards.genie",
            ApiScope::AppsApps => "apps.apps",
            ApiScope::McpGenie => "mcp.genie",
            ApiScope::McpFunctions => "mcp.functions",
            ApiScope::McpVectorSearch => "mcp.vectorsearch",
            ApiScope::McpExternal => "mcp.external",
            ApiScope::McpSql => "mcp.sql",
            ApiScope::DeputyAudit => "deputy.audit",
        }
    }

    /// What the scope lets an app do, in plain words for the person asked to approve it.
    pub fn plain_words(self) -> &'static str {
        match self {
            ApiScope::IamScim => "see and manage users, groups and service principals",
            ApiScope::IamAccessControl => "see and change who may use workspace objects",
            ApiScope::SettingsTokens => "create and revoke your personal access tokens",
            ApiScope::SettingsTokenManagement => "manage everyone's tokens and sign-in settings",
            ApiScope::SettingsWorkspaceConf => "read and change workspace settings",
            ApiScope::CatalogCatalogs => "see and manage catalogs",
            ApiScope::CatalogSchemas => "see and manage schemas",
            ApiScope::CatalogTables => "see tables and read their metadata",
            ApiScope::CatalogFunctions => "see and run functions",
            ApiScope::CatalogConnections => "use connections to outside services",
            ApiScope::CatalogVolumes => "see and manage volumes",
            ApiScope::CatalogGrants => "see and change grants on data",
            ApiScope::ServingEndpoints => "query agents and models",
            ApiScope::VectorSearchEndpoints => "see and manage vector-search endpoints",
            ApiScope::VectorSearchIndexes => "search your vector indexes",
            ApiScope::SqlWarehouses => "see and use SQL warehouses",
            ApiScope::SqlStatementExecution => "run SQL and read the data you can read",
            ApiScope::DashboardsGenie => "ask Genie spaces questions about your data",
            ApiScope::AppsApps => "see and manage apps",
            ApiScope::McpGenie => "use Genie through MCP tools",
            ApiScope::McpFunctions => "run functions through MCP tools",
            ApiScope::McpVectorSearch => "search vector indexes through MCP tools",
            ApiScope::McpExternal => "use external MCP servers through connections",
            ApiScope::McpSql => "run SQL through MCP tools",
            ApiScope::DeputyAudit => "read the audit log of what was done",
        }
    }

    /// Looks up a dotted name. Aliases are not scopes: use [`ScopeSet::parse`] for those.
    pub fn from_name(name: &str) -> Option<ApiScope> {
        ApiScope::ALL.into_iter().find(|scope| scope.name() == name)
    }

    fn bit(self) -> u64 {
        1 << (self as u32)
    }
}

impl fmt::Display for ApiScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The scope that stands for every API.
pub const ALL_APIS: &str = "all-apis";

/// Short aliases, each a synonym for the dotted scopes listed with it.
const ALIASES: &[(&str, &[ApiScope])] = &[
    (
        "access-management",
        &[ApiScope::IamScim, ApiScope::IamAccessControl],
    ),
    (
        "authentication",
        &[ApiScope::SettingsTokens, ApiScope::SettingsTokenManagement],
    ),
    ("settings", &[ApiScope::SettingsWorkspaceConf]),
    (
        "unity-catalog",
        &[
            ApiScope::CatalogCatalogs,
            ApiScope::CatalogSchemas,
            ApiScope::CatalogTables,
            ApiScope::CatalogFunctions,
            ApiScope::CatalogConnections,
            ApiScope::CatalogVolumes,
            ApiScope::CatalogGrants,
        ],
    ),
    ("model-serving", &[ApiScope::ServingEndpoints]),
    ("serving", &[ApiScope::ServingEndpoints]),
    ("ai-gateway", &[ApiScope::ServingEndpoints]),
    (
        "vector-search",
        &[
            ApiScope::VectorSearchEndpoints,
            ApiScope::VectorSearchIndexes,
        ],
    ),
    (
        "sql",
        &[ApiScope::SqlWarehouses, ApiScope::SqlStatementExecution],
    ),
    ("genie", &[ApiScope::DashboardsGenie]),
    ("dashboards", &[ApiScope::DashboardsGenie]),
    ("apps", &[ApiScope::AppsApps]),
    (
        "mcp",
        &[
            ApiScope::McpGenie,
            ApiScope::McpFunctions,
            ApiScope::McpVectorSearch,
            ApiScope::McpExternal,
            ApiScope::McpSql,
        ],
    ),
    ("audit", &[ApiScope::DeputyAudit]),
];

/// OpenID Connect scopes that clients add to token requests; they name no API and are ignored.
const OIDC_SCOPES: &[&str] = &["openid", "profile", "email", "offline_access"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("unknown scope `{0}`")]
    Unknown(String),
}

/// A set of API scopes. `Copy` and one machine word, so checks and intersections cost nothing.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ScopeSet(u64);

impl ScopeSet {
    pub const EMPTY: ScopeSet = ScopeSet(0);

    pub fn all() -> ScopeSet {
        ApiScope::ALL.into_iter().collect()
    }

    /// Parses a space-separated scope string as sent in OAuth requests and stored in tokens. Dotted names, aliases
    /// and `all-apis` are accepted; OIDC scopes are ignored; anything else is an error, so a typo never widens or
    /// silently narrows a token.
    pub fn parse(text: &str) -> Result<ScopeSet, ScopeError> {
        let mut set = ScopeSet::EMPTY;
        for word in text.split_whitespace() {
            set = set.union(ScopeSet::parse_word(word)?);
        }
        Ok(set)
    }

    fn parse_word(word: &str) -> Result<ScopeSet, ScopeError> {
        if word == ALL_APIS {
            return Ok(ScopeSet::all());
        }
        if OIDC_SCOPES.contains(&word) {
            return Ok(ScopeSet::EMPTY);
        }
        if let Some(scope) = ApiScope::from_name(word) {
            return Ok(ScopeSet::from(scope));
        }
        ALIASES
            .iter()
            .find(|(alias, _)| *alias == word)
            .map(|(_, scopes)| scopes.iter().copied().collect())
            .ok_or_else(|| ScopeError::Unknown(word.to_owned()))
    }

    pub fn contains(self, scope: ApiScope) -> bool {
        self.0 & scope.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn is_subset_of(self, other: ScopeSet) -> bool {
        self.0 & !other.0 == 0
    }

    pub fn intersection(self, other: ScopeSet) -> ScopeSet {
        ScopeSet(self.0 & other.0)
    }

    pub fn union(self, other: ScopeSet) -> ScopeSet {
        ScopeSet(self.0 | other.0)
    }

    pub fn iter(self) -> impl Iterator<Item = ApiScope> {
        ApiScope::ALL
            .into_iter()
            .filter(move |scope| self.contains(*scope))
    }
}

impl From<ApiScope> for ScopeSet {
    fn from(scope: ApiScope) -> ScopeSet {
        ScopeSet(scope.bit())
    }
}

impl FromIterator<ApiScope> for ScopeSet {
    fn from_iter<I: IntoIterator<Item = ApiScope>>(iter: I) -> ScopeSet {
        ScopeSet(iter.into_iter().fold(0, |bits, scope| bits | scope.bit()))
    }
}

/// The canonical wire form: `all-apis` for the full set, otherwise the dotted names in registry order.
impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == ScopeSet::all() {
            return f.write_str(ALL_APIS);
        }
        let names: Vec<&str> = self.iter().map(ApiScope::name).collect();
        f.write_str(&names.join(" "))
    }
}

impl fmt::Debug for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ScopeSet({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        for scope in ApiScope::ALL {
            assert_eq!(ApiScope::from_name(scope.name()), Some(scope));
        }
        let mut names: Vec<_> = ApiScope::ALL.iter().map(|s| s.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ApiScope::ALL.len());
    }

    #[test]
    fn variant_order_matches_all() {
        for (index, scope) in ApiScope::ALL.into_iter().enumerate() {
            assert_eq!(scope as usize, index);
        }
    }

    #[test]
    fn aliases_expand_to_their_dotted_scopes() {
        let sql = ScopeSet::parse("sql").unwrap();
        assert!(sql.contains(ApiScope::SqlStatementExecution));
        assert!(sql.contains(ApiScope::SqlWarehouses));
        assert!(!sql.contains(ApiScope::ServingEndpoints));
        let mixed = ScopeSet::parse("vector-search model-serving ai-gateway").unwrap();
        assert_eq!(
            mixed.to_string(),
            "serving.serving-endpoints vectorsearch.vector-search-endpoints vectorsearch.vector-search-indexes"
        );
    }

    #[test]
    fn all_apis_is_everything_and_prints_back() {
        let all = ScopeSet::parse("all-apis").unwrap();
        assert_eq!(all, ScopeSet::all());
        assert_eq!(all.to_string(), "all-apis");
        assert_eq!(ScopeSet::parse(&all.to_string()).unwrap(), all);
    }

    #[test]
    fn unknown_words_are_refused_and_oidc_words_ignored() {
        assert_eq!(
            ScopeSet::parse("sql bogus"),
            Err(ScopeError::Unknown("bogus".into()))
        );
        assert_eq!(ScopeSet::parse("openid profile").unwrap(), ScopeSet::EMPTY);
        assert_eq!(ScopeSet::parse("  ").unwrap(), ScopeSet::EMPTY);
    }

    fn any_set() -> impl Strategy<Value = ScopeSet> {
        proptest::collection::vec(proptest::sample::select(ApiScope::ALL.to_vec()), 0..8)
            .prop_map(|scopes| scopes.into_iter().collect())
    }

    proptest! {
        #[test]
        fn display_then_parse_is_identity(set in any_set()) {
            prop_assert_eq!(ScopeSet::parse(&set.to_string()).unwrap(), set);
        }

        #[test]
        fn intersection_never_widens(a in any_set(), b in any_set()) {
            let both = a.intersection(b);
            prop_assert!(both.is_subset_of(a));
            prop_assert!(both.is_subset_of(b));
            for scope in ApiScope::ALL {
                prop_assert_eq!(both.contains(scope), a.contains(scope) && b.contains(scope));
            }
        }
    }
}
