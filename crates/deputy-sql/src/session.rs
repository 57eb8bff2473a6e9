//! Who runs a statement, and the authorization state it is decided against.

use std::sync::Arc;

use deputy_authz::{AccessRequest, Action, PrincipalId, Snapshot, decide};
use deputy_core::{ApiScope, ScopeSet};

/// The catalog and schema one- and two-part names resolve in when the session names none.
pub const DEFAULT_CATALOG: &str = "main";
pub const DEFAULT_SCHEMA: &str = "default";

/// The caller of one statement. Built by the server per request from the authenticated token.
///
/// `principal` is whose Unity Catalog privileges apply; `user_name` and `groups` are what `current_user()` and
/// `is_account_group_member()` see. For an on-behalf-of token both describe the **end user** (the token's `sub`),
/// never the agent in its `act` chain.
#[derive(Clone)]
pub struct Session {
    pub principal: PrincipalId,
    /// The end user's name (`userName`), returned by `current_user()`.
    pub user_name: String,
    /// Names of every group the end user is in, directly or through nested groups.
    pub groups: Vec<String>,
    /// The token's scopes; statements need `sql.statement-execution`.
    pub scopes: ScopeSet,
    /// The authorization state every decision of the statement is made against, so they agree with each other.
    pub snapshot: Arc<Snapshot>,
    /// Used for one- and two-part names; `main` and `default` when absent.
    pub default_catalog: Option<String>,
    pub default_schema: Option<String>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("principal", &self.principal)
            .field("user_name", &self.user_name)
            .field("default_catalog", &self.default_catalog)
            .field("default_schema", &self.default_schema)
            .finish_non_exhaustive()
    }
}

/// A principal's rights in one statement: the session's own, or a view owner's when the view's query is planned.
#[derive(Debug, Clone)]
pub(crate) struct Rights {
    pub(crate) principal: PrincipalId,
    pub(crate) scopes: ScopeSet,
    pub(crate) snapshot: Arc<Snapshot>,
}

impl Rights {
    pub(crate) fn of(session: &Session) -> Rights {
        Rights {
            principal: session.principal,
            scopes: session.scopes,
            snapshot: Arc::clone(&session.snapshot),
        }
    }

    /// A securable owner's rights. Definer's rights are not narrowed by the caller's token: the caller's token was
    /// checked for SQL once, and what the definer may read is a Unity Catalog question.
    pub(crate) fn owner(principal: PrincipalId, snapshot: &Arc<Snapshot>) -> Rights {
        Rights {
            principal,
            scopes: ScopeSet::all(),
            snapshot: Arc::clone(snapshot),
        }
    }

    pub(crate) fn allows(&self, action: Action) -> bool {
        self.decide(action).is_allowed()
    }

    pub(crate) fn decide(&self, action: Action) -> deputy_authz::Decision {
        decide(
            &AccessRequest {
                principal: self.principal,
                token_scopes: self.scopes,
                required_scope: ApiScope::SqlStatementExecution,
                action,
            },
            &self.snapshot,
        )
    }
}
