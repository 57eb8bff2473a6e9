//! Unity Catalog privileges and bit-mask sets of them.
//!
//! A [`PrivilegeSet`] is one `u32`, so the union of every grant that reaches a principal and the test for a required
//! privilege are single instructions. `ALL_PRIVILEGES` is stored as granted and expanded only when a set is evaluated
//! ([`PrivilegeSet::expand_all_privileges`]), as Unity Catalog does: it then stands for every privilege except
//! `MANAGE`.

use std::fmt;
use std::str::FromStr;

use crate::securable::SecurableKind;

/// One Unity Catalog privilege. The order of the variants is the order of [`Privilege::ALL`] and of the bits in a
/// [`PrivilegeSet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Privilege {
    UseCatalog,
    UseSchema,
    Select,
    Modify,
    Execute,
    UseConnection,
    ReadVolume,
    WriteVolume,
    CreateCatalog,
    CreateSchema,
    CreateTable,
    CreateView,
    CreateFunction,
    CreateVolume,
    CreateModel,
    CreateConnection,
    Browse,
    Manage,
    AllPrivileges,
    ApplyTag,
    Refresh,
}

impl Privilege {
    pub const ALL: [Privilege; 21] = [
        Privilege::UseCatalog,
        Privilege::UseSchema,
        Privilege::Select,
        Privilege::Modify,
        Privilege::Execute,
        Privilege::UseConnection,
        Privilege::ReadVolume,
        Privilege::WriteVolume,
        Privilege::CreateCatalog,
        Privilege::CreateSchema,
        Privilege::CreateTable,
        Privilege::CreateView,
        Privilege::CreateFunction,
        Privilege::CreateVolume,
        Privilege::CreateModel,
        Privilege::CreateConnection,
        Privilege::Browse,
        Privilege::Manage,
        Privilege::AllPrivileges,
        Privilege::ApplyTag,
        Privilege::Refresh,
    ];

    /// The name used by the REST API (`privilege_assignments[].privileges[]`): upper case with underscores.
    pub fn wire_name(self) -> &'static str {
        match self {
            Privilege::UseCatalog => "USE_CATALOG",
            Privilege::UseSchema => "USE_SCHEMA",
            Privilege::Select => "SELECT",
            Privilege::Modify => "MODIFY",
            Privilege::Execute => "EXECUTE",
            Privilege::UseConnection => "USE_CONNECTION",
            Privilege::ReadVolume => "READ_VOLUME",
            Privilege::WriteVolume => "WRITE_VOLUME",
            Privilege::CreateCatalog => "CREATE_CATALOG",
            Privilege::CreateSchema => "CREATE_SCHEMA",
            Privilege::CreateTable => "CREATE_TABLE",
            Privilege::CreateView => "CREATE_VIEW",
            Privilege::CreateFunction => "CREATE_FUNCTION",
            Privilege::CreateVolume => "CREATE_VOLUME",
            Privilege::CreateModel => "CREATE_MODEL",
            Privilege::CreateConnection => "CREATE_CONNECTION",
            Privilege::Browse => "BROWSE",
            Privilege::Manage => "MANAGE",
            Privilege::AllPrivileges => "ALL_PRIVILEGES",
            Privilege::ApplyTag => "APPLY_TAG",
            Privilege::Refresh => "REFRESH",
        }
    }

    /// The SQL spelling used by `GRANT ... ON ...`: the wire name with spaces (`USE CATALOG`, `ALL PRIVILEGES`).
    pub fn sql_name(self) -> String {
        self.wire_name().replace('_', " ")
    }

    /// Parses the exact wire name. The REST API's enum is case-sensitive, so `select` is refused here.
    pub fn from_wire_name(name: &str) -> Result<Privilege, PrivilegeParseError> {
        Privilege::ALL
            .into_iter()
            .find(|privilege| privilege.wire_name() == name)
            .ok_or_else(|| PrivilegeParseError::Unknown(name.to_owned()))
    }

    /// Parses the SQL spelling. SQL keywords are case-insensitive and may be separated by any run of white space, so
    /// `use  catalog` and `USE CATALOG` are the same privilege; the underscore form is accepted too.
    pub fn from_sql(text: &str) -> Result<Privilege, PrivilegeParseError> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let joined = words.join("_").to_ascii_uppercase();
        Privilege::from_wire_name(&joined)
            .map_err(|_| PrivilegeParseError::Unknown(text.to_owned()))
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl fmt::Display for Privilege {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.wire_name())
    }
}

impl FromStr for Privilege {
    type Err = PrivilegeParseError;

    fn from_str(name: &str) -> Result<Privilege, PrivilegeParseError> {
        Privilege::from_wire_name(name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrivilegeParseError {
    #[error("unknown privilege `{0}`")]
    Unknown(String),
}

/// A set of privileges as a bit mask. `Copy` and one word: unions and membership tests cost nothing.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PrivilegeSet(u32);

impl PrivilegeSet {
    pub const EMPTY: PrivilegeSet = PrivilegeSet(0);

    /// Every privilege, `MANAGE` and `ALL_PRIVILEGES` included: what an owner or an admin holds.
    pub fn all() -> PrivilegeSet {
        PrivilegeSet::of(&Privilege::ALL)
    }

    pub fn contains(self, privilege: Privilege) -> bool {
        self.0 & privilege.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn union(self, other: PrivilegeSet) -> PrivilegeSet {
        PrivilegeSet(self.0 | other.0)
    }

    pub fn intersection(self, other: PrivilegeSet) -> PrivilegeSet {
        PrivilegeSet(self.0 & other.0)
    }

    pub fn difference(self, other: PrivilegeSet) -> PrivilegeSet {
        PrivilegeSet(self.0 & !other.0)
    }

    pub fn with(self, privilege: Privilege) -> PrivilegeSet {
        PrivilegeSet(self.0 | privilege.bit())
    }

    /// The set as evaluated: if it holds `ALL_PRIVILEGES`, every privilege except `MANAGE` is added. `MANAGE` is left
    /// out on purpose: it lets its holder re-grant, which Unity Catalog never hands out implicitly.
    pub fn expand_all_privileges(self) -> PrivilegeSet {
        if self.contains(Privilege::AllPrivileges) {
            PrivilegeSet(self.0 | PrivilegeSet::all().0 & !Privilege::Manage.bit())
        } else {
            self
        }
    }

    /// The privileges that mean something on (and may be granted on) a securable of this kind. Grants made higher up
    /// the tree reach a securable only through this filter, so `CREATE_CATALOG` on the metastore does not count as
    /// "some privilege" on a catalog. The sets are constants: this sits on the hot path.
    pub fn applicable_to(kind: SecurableKind) -> PrivilegeSet {
        match kind {
            SecurableKind::Metastore => applicable::METASTORE,
            SecurableKind::Catalog => applicable::CATALOG,
            SecurableKind::Schema => applicable::SCHEMA,
            SecurableKind::Table | SecurableKind::VectorIndex => applicable::TABLE,
            SecurableKind::View => applicable::VIEW,
            SecurableKind::Function | SecurableKind::RegisteredModel => applicable::FUNCTION,
            SecurableKind::Volume => applicable::VOLUME,
            SecurableKind::Connection => applicable::CONNECTION,
        }
    }

    /// A set from a list, usable in constants.
    const fn of(privileges: &[Privilege]) -> PrivilegeSet {
        let mut bits = 0;
        let mut index = 0;
        while index < privileges.len() {
            bits |= 1 << (privileges[index] as u32);
            index += 1;
        }
        PrivilegeSet(bits)
    }

    const fn plus(self, other: PrivilegeSet) -> PrivilegeSet {
        PrivilegeSet(self.0 | other.0)
    }

    pub fn iter(self) -> impl Iterator<Item = Privilege> {
        Privilege::ALL
            .into_iter()
            .filter(move |privilege| self.contains(*privilege))
    }
}

impl From<Privilege> for PrivilegeSet {
    fn from(privilege: Privilege) -> PrivilegeSet {
        PrivilegeSet(privilege.bit())
    }
}

impl FromIterator<Privilege> for PrivilegeSet {
    fn from_iter<I: IntoIterator<Item = Privilege>>(iter: I) -> PrivilegeSet {
        PrivilegeSet(
            iter.into_iter()
                .fold(0, |bits, privilege| bits | privilege.bit()),
        )
    }
}

/// Wire names in registry order, comma-separated.
impl fmt::Display for PrivilegeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Privilege::wire_name).collect();
        f.write_str(&names.join(", "))
    }
}

impl fmt::Debug for PrivilegeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivilegeSet({self})")
    }
}

/// The per-kind sets behind [`PrivilegeSet::applicable_to`].
mod applicable {
    use super::Privilege::*;
    use super::PrivilegeSet;

    /// What every object below a schema accepts besides its own data privileges.
    const OBJECT_COMMON: PrivilegeSet =
        PrivilegeSet::of(&[Browse, Manage, AllPrivileges, ApplyTag]);

    pub(super) const METASTORE: PrivilegeSet = PrivilegeSet::of(&[CreateCatalog, CreateConnection]);
    pub(super) const SCHEMA: PrivilegeSet = PrivilegeSet::of(&[
        UseSchema,
        Select,
        Modify,
        Execute,
        ReadVolume,
        WriteVolume,
        CreateTable,
        CreateView,
        CreateFunction,
        CreateVolume,
        CreateModel,
        Browse,
        Manage,
        AllPrivileges,
        ApplyTag,
        Refresh,
    ]);
    pub(super) const CATALOG: PrivilegeSet =
        SCHEMA.plus(PrivilegeSet::of(&[UseCatalog, CreateSchema]));
    pub(super) const TABLE: PrivilegeSet =
        PrivilegeSet::of(&[Select, Modify, Refresh]).plus(OBJECT_COMMON);
    pub(super) const VIEW: PrivilegeSet = PrivilegeSet::of(&[Select, Refresh]).plus(OBJECT_COMMON);
    pub(super) const FUNCTION: PrivilegeSet = PrivilegeSet::of(&[Execute]).plus(OBJECT_COMMON);
    pub(super) const VOLUME: PrivilegeSet =
        PrivilegeSet::of(&[ReadVolume, WriteVolume]).plus(OBJECT_COMMON);
    pub(super) const CONNECTION: PrivilegeSet =
        PrivilegeSet::of(&[UseConnection, Browse, Manage, AllPrivileges]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_and_sql_names_round_trip() {
        for privilege in Privilege::ALL {
            assert_eq!(
                Privilege::from_wire_name(privilege.wire_name()),
                Ok(privilege)
            );
            assert_eq!(privilege.wire_name().parse::<Privilege>(), Ok(privilege));
            assert_eq!(Privilege::from_sql(&privilege.sql_name()), Ok(privilege));
            assert_eq!(
                Privilege::from_sql(&privilege.sql_name().to_lowercase()),
                Ok(privilege)
            );
        }
    }

    #[test]
    fn names_are_spelled_as_databricks_does() {
        let cases = [
            (Privilege::UseCatalog, "USE_CATALOG", "USE CATALOG"),
            (Privilege::AllPrivileges, "ALL_PRIVILEGES", "ALL PRIVILEGES"),
            (Privilege::CreateModel, "CREATE_MODEL", "CREATE MODEL"),
            (Privilege::Select, "SELECT", "SELECT"),
        ];
        for (privilege, wire, sql) in cases {
            assert_eq!(privilege.to_string(), wire);
            assert_eq!(privilege.sql_name(), sql);
        }
        assert_eq!(
            Privilege::from_sql("  use \t schema "),
            Ok(Privilege::UseSchema)
        );
    }

    #[test]
    fn unknown_and_wrongly_cased_wire_names_are_refused() {
        for bad in ["select", "USE CATALOG", "USAGE", "", "SELECT "] {
            assert_eq!(
                Privilege::from_wire_name(bad),
                Err(PrivilegeParseError::Unknown(bad.to_owned()))
            );
        }
        assert!(Privilege::from_sql("use catalogue").is_err());
    }

    #[test]
    fn all_privileges_expands_to_everything_but_manage() {
        let expanded = PrivilegeSet::from(Privilege::AllPrivileges).expand_all_privileges();
        for privilege in Privilege::ALL {
            assert_eq!(
                expanded.contains(privilege),
                privilege != Privilege::Manage,
                "{privilege}"
            );
        }
        let plain = PrivilegeSet::from(Privilege::Select);
        assert_eq!(plain.expand_all_privileges(), plain);
    }

    #[test]
    fn set_algebra_matches_membership() {
        let a: PrivilegeSet = [Privilege::Select, Privilege::Modify].into_iter().collect();
        let b: PrivilegeSet = [Privilege::Modify, Privilege::Browse].into_iter().collect();
        assert_eq!(a.union(b).iter().count(), 3);
        assert_eq!(
            a.intersection(b).iter().collect::<Vec<_>>(),
            vec![Privilege::Modify]
        );
        assert_eq!(
            a.difference(b).iter().collect::<Vec<_>>(),
            vec![Privilege::Select]
        );
        assert_eq!(a.to_string(), "SELECT, MODIFY");
        assert!(PrivilegeSet::EMPTY.is_empty());
    }

    #[test]
    fn metastore_takes_only_creation_privileges() {
        let metastore = PrivilegeSet::applicable_to(SecurableKind::Metastore);
        assert!(metastore.contains(Privilege::CreateCatalog));
        assert!(!metastore.contains(Privilege::Select));
        assert!(
            !PrivilegeSet::applicable_to(SecurableKind::Catalog).contains(Privilege::CreateCatalog)
        );
        assert!(PrivilegeSet::applicable_to(SecurableKind::Table).contains(Privilege::Manage));
        assert!(!PrivilegeSet::applicable_to(SecurableKind::Table).contains(Privilege::UseSchema));
    }
}
