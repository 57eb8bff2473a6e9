//! The kinds of identity that can authenticate to Deputy.

use std::fmt;
use std::str::FromStr;

/// Who a token speaks for. Groups are not principals that authenticate; they only carry grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrincipalKind {
    User,
    ServicePrincipal,
}

impl PrincipalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::User => "user",
            PrincipalKind::ServicePrincipal => "service_principal",
        }
    }
}

impl fmt::Display for PrincipalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PrincipalKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "user" => Ok(PrincipalKind::User),
            "service_principal" => Ok(PrincipalKind::ServicePrincipal),
            other => Err(format!("unknown principal kind `{other}`")),
        }
    }
}
