//! Securables: the kinds of Unity Catalog object, their names, and the check on one name segment.
//!
//! **Invariant:** a [`SecurableRef`] always holds its full name in lower case, because Unity Catalog names are
//! case-insensitive; every comparison and map key in the engine relies on that instead of folding case again.

use std::fmt;
use std::sync::Arc;

/// What a securable is. The tree is metastore → catalog → schema → object, with connections directly under the
/// metastore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SecurableKind {
    Metastore,
    Catalog,
    Schema,
    Table,
    View,
    Function,
    Volume,
    RegisteredModel,
    /// A vector-search index: a table-like securable, read with `SELECT`.
    VectorIndex,
    Connection,
}

/// Names are unique within a namespace. Tables, views and vector indexes share one, as they do in a Unity Catalog
/// schema; a function may carry the same name as a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Namespace {
    Metastore,
    Catalog,
    Schema,
    Relation,
    Function,
    Volume,
    RegisteredModel,
    Connection,
}

impl SecurableKind {
    pub const ALL: [SecurableKind; 10] = [
        SecurableKind::Metastore,
        SecurableKind::Catalog,
        SecurableKind::Schema,
        SecurableKind::Table,
        SecurableKind::View,
        SecurableKind::Function,
        SecurableKind::Volume,
        SecurableKind::RegisteredModel,
        SecurableKind::VectorIndex,
        SecurableKind::Connection,
    ];

    /// The lower-case name used in REST paths (`/permissions/{securable_type}/...`).
    pub fn name(self) -> &'static str {
        match self {
            SecurableKind::Metastore => "metastore",
            SecurableKind::Catalog => "catalog",
            SecurableKind::Schema => "schema",
            SecurableKind::Table => "table",
            SecurableKind::View => "view",
            SecurableKind::Function => "function",
            SecurableKind::Volume => "volume",
            SecurableKind::RegisteredModel => "registered_model",
            SecurableKind::VectorIndex => "vector_index",
            SecurableKind::Connection => "connection",
        }
    }

    /// Parses a securable type case-insensitively: docs spell them in lower case, responses in upper case.
    pub fn from_name(name: &str) -> Option<SecurableKind> {
        SecurableKind::ALL
            .into_iter()
            .find(|kind| kind.name().eq_ignore_ascii_case(name))
    }

    /// How many dot-separated segments a full name of this kind has.
    pub fn name_segments(self) -> usize {
        match self {
            SecurableKind::Metastore | SecurableKind::Catalog | SecurableKind::Connection => 1,
            SecurableKind::Schema => 2,
            _ => 3,
        }
    }

    /// The kind of the parent securable, `None` for the metastore.
    pub fn parent_kind(self) -> Option<SecurableKind> {
        match self {
            SecurableKind::Metastore => None,
            SecurableKind::Catalog | SecurableKind::Connection => Some(SecurableKind::Metastore),
            SecurableKind::Schema => Some(SecurableKind::Catalog),
            _ => Some(SecurableKind::Schema),
        }
    }

    pub(crate) fn namespace(self) -> Namespace {
        match self {
            SecurableKind::Metastore => Namespace::Metastore,
            SecurableKind::Catalog => Namespace::Catalog,
            SecurableKind::Schema => Namespace::Schema,
            SecurableKind::Table | SecurableKind::View | SecurableKind::VectorIndex => {
                Namespace::Relation
            }
            SecurableKind::Function => Namespace::Function,
            SecurableKind::Volume => Namespace::Volume,
            SecurableKind::RegisteredModel => Namespace::RegisteredModel,
            SecurableKind::Connection => Namespace::Connection,
        }
    }

    /// The noun used in messages ("table main.sales.orders not found").
    pub fn noun(self) -> &'static str {
        match self {
            SecurableKind::RegisteredModel => "registered model",
            SecurableKind::VectorIndex => "vector index",
            other => other.name(),
        }
    }
}

impl fmt::Display for SecurableKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A securable named by kind and full name (`main.sales.orders`). Cheap to clone: the name is shared.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecurableRef {
    kind: SecurableKind,
    // INVARIANT: ASCII lower case (see the module docs).
    full_name: Arc<str>,
}

impl SecurableRef {
    /// Names the securable; the name is folded to lower case. The name is not validated here: lookups of malformed
    /// names simply find nothing, and [`crate::Snapshot::add_securable`] validates every segment.
    pub fn new(kind: SecurableKind, full_name: &str) -> SecurableRef {
        SecurableRef {
            kind,
            full_name: Arc::from(full_name.to_ascii_lowercase()),
        }
    }

    pub fn catalog(name: &str) -> SecurableRef {
        SecurableRef::new(SecurableKind::Catalog, name)
    }

    pub fn schema(full_name: &str) -> SecurableRef {
        SecurableRef::new(SecurableKind::Schema, full_name)
    }

    pub fn table(full_name: &str) -> SecurableRef {
        SecurableRef::new(SecurableKind::Table, full_name)
    }

    pub fn kind(&self) -> SecurableKind {
        self.kind
    }

    pub fn full_name(&self) -> &str {
        &self.full_name
    }

    pub(crate) fn namespace(&self) -> Namespace {
        self.kind.namespace()
    }

    pub(crate) fn shared_name(&self) -> &Arc<str> {
        &self.full_name
    }

    /// The parent's full name, derived from the name alone (`main.sales.orders` → `main.sales`). `None` for a
    /// single-segment name, whose parent is the metastore.
    pub(crate) fn parent_name(&self) -> Option<&str> {
        self.full_name.rsplit_once('.').map(|(parent, _)| parent)
    }
}

/// The full name alone, as Databricks prints it in messages ("USE_SCHEMA on main.sales").
impl fmt::Display for SecurableRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full_name)
    }
}

impl fmt::Debug for SecurableRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.full_name)
    }
}

/// The longest name segment accepted.
pub const MAX_NAME_LENGTH: usize = 255;

/// Why a name segment was refused. The message always says what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty; use 1 to 255 ASCII letters, digits, `_` or `-`")]
    Empty,
    #[error("name is {length} characters long; at most 255 are allowed")]
    TooLong { length: usize },
    #[error(
        "name contains `{}` at position {position}; only ASCII letters, digits, `_` and `-` are allowed",
        character.escape_debug()
    )]
    ForbiddenCharacter { character: char, position: usize },
}

/// Checks one segment of a securable name (`orders`, not `main.sales.orders`).
///
/// Only ASCII letters, digits, `_` and `-` pass. That one allow-list refuses path tricks (`.`, `..`, `/`, `\`),
/// quoting tricks (backticks), control characters and every non-ASCII character, including look-alikes such as a
/// Cyrillic `а`, so two names that print the same are always the same name.
pub fn validate_name(segment: &str) -> Result<(), NameError> {
    if segment.is_empty() {
        return Err(NameError::Empty);
    }
    if let Some((position, character)) = segment.chars().enumerate().find(|(_, character)| {
        !(character.is_ascii_alphanumeric() || *character == '_' || *character == '-')
    }) {
        return Err(NameError::ForbiddenCharacter {
            character,
            position,
        });
    }
    // Every character is ASCII here, so the byte length is the character count.
    if segment.len() > MAX_NAME_LENGTH {
        return Err(NameError::TooLong {
            length: segment.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names_up_to_the_limit() {
        for good in [
            "orders",
            "Sales_2024",
            "a",
            "x-y",
            "_",
            "0",
            &"a".repeat(255),
        ] {
            assert_eq!(validate_name(good), Ok(()), "{good}");
        }
    }

    #[test]
    fn refuses_empty_and_overlong_names() {
        assert_eq!(validate_name(""), Err(NameError::Empty));
        assert_eq!(
            validate_name(&"a".repeat(256)),
            Err(NameError::TooLong { length: 256 })
        );
    }

    #[test]
    fn refuses_path_quoting_control_and_confusable_characters() {
        let cases = [
            ("a.b", '.', 1),
            ("..", '.', 0),
            ("../etc", '.', 0),
            ("a/b", '/', 1),
            ("a\\b", '\\', 1),
            ("`x`", '`', 0),
            ("a\nb", '\n', 1),
            ("nul\0", '\0', 3),
            ("tab\t", '\t', 3),
            ("del\u{7f}", '\u{7f}', 3),
            ("sаles", 'а', 1),   // Cyrillic а
            ("ｓales", 'ｓ', 0), // full-width s
            ("zero\u{200b}width", '\u{200b}', 4),
            ("a b", ' ', 1),
        ];
        for (name, character, position) in cases {
            assert_eq!(
                validate_name(name),
                Err(NameError::ForbiddenCharacter {
                    character,
                    position
                }),
                "{name:?}"
            );
        }
    }

    #[test]
    fn errors_say_what_is_allowed() {
        let message = validate_name("a/b").map_err(|error| error.to_string());
        assert_eq!(
            message,
            Err("name contains `/` at position 1; only ASCII letters, digits, `_` and `-` are allowed".to_owned())
        );
        let control = validate_name("a\nb").map_err(|error| error.to_string());
        assert!(matches!(control, Err(text) if text.contains("`\\n`")));
    }

    #[test]
    fn references_fold_case_and_know_their_parent() {
        let table = SecurableRef::table("Main.Sales.ORDERS");
        assert_eq!(table.full_name(), "main.sales.orders");
        assert_eq!(table, SecurableRef::table("main.sales.orders"));
        assert_eq!(table.parent_name(), Some("main.sales"));
        assert_eq!(SecurableRef::catalog("main").parent_name(), None);
        assert_eq!(table.to_string(), "main.sales.orders");
    }

    #[test]
    fn kinds_parse_case_insensitively() {
        for kind in SecurableKind::ALL {
            assert_eq!(SecurableKind::from_name(kind.name()), Some(kind));
            assert_eq!(
                SecurableKind::from_name(&kind.name().to_uppercase()),
                Some(kind)
            );
        }
        assert_eq!(SecurableKind::from_name("share"), None);
    }
}
