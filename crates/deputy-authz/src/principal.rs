//! Principals as the engine sees them: an opaque id, a type and a display name.

use std::fmt;
use std::sync::Arc;

/// An opaque principal id. It is a number because Databricks SCIM ids are numeric strings; the identity layer parses
/// them once at the edge.
///
/// **Invariant:** ids are never reused. [`crate::Snapshot::remove_principal`] drops the principal's grants and ACL
/// entries, but securables it owned keep pointing at its id (an owner must always be named), so a reused id would
/// inherit that ownership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PrincipalId(pub u64);

impl fmt::Display for PrincipalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What a principal is. Groups do not authenticate, but they hold grants, own securables and contain principals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrincipalType {
    User,
    ServicePrincipal,
    Group,
}

impl PrincipalType {
    pub fn noun(self) -> &'static str {
        match self {
            PrincipalType::User => "user",
            PrincipalType::ServicePrincipal => "service principal",
            PrincipalType::Group => "group",
        }
    }
}

impl From<deputy_core::PrincipalKind> for PrincipalType {
    fn from(kind: deputy_core::PrincipalKind) -> PrincipalType {
        match kind {
            deputy_core::PrincipalKind::User => PrincipalType::User,
            deputy_core::PrincipalKind::ServicePrincipal => PrincipalType::ServicePrincipal,
        }
    }
}

/// A principal with the name that explanations print. Cheap to clone: the name is shared.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PrincipalRef {
    pub id: PrincipalId,
    pub principal_type: PrincipalType,
    pub name: Arc<str>,
}

/// "user alice@example.com", "group analysts".
impl fmt::Display for PrincipalRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.principal_type.noun(), self.name)
    }
}
