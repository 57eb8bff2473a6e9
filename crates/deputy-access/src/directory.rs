//! The in-memory directory of identities: who exists, under which names, whether active, and the groups each
//! principal belongs to (transitively). Authentication reads it on every request, so it must not touch the database.
//!
//! **Invariant:** every write to identities or memberships is followed, before the response, by [`DirectoryState::
//! replace`]. Reloads are serialized and each reads the store after its own write committed, so the published
//! directory always includes every completed write; a request never sees a half-applied change because a directory
//! is replaced whole.

use arc_swap::ArcSwap;
/// The group whose members administer the workspace; the decision engine knows it by the same name.
pub use deputy_authz::ADMINS_GROUP;
use deputy_store::catalog::AuthorizationRows;
use deputy_store::{Identity, IdentityKind, PrincipalId};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Every user and service principal is a member, as in Databricks: the group to grant workspace-wide rights to.
pub const USERS_GROUP: &str = "users";

#[derive(Debug, Default)]
pub struct Directory {
    by_id: HashMap<PrincipalId, Identity>,
    /// `(kind, lowercased name)`: names compare case-insensitively, as in the store.
    by_name: HashMap<(IdentityKind, String), PrincipalId>,
    /// Each principal's groups, direct and inherited, ordered by id.
    groups: HashMap<PrincipalId, Vec<PrincipalId>>,
}

impl Directory {
    pub fn of(rows: &AuthorizationRows) -> Directory {
        Directory::build(rows.identities.clone(), &rows.memberships)
    }

    pub fn build(
        identities: Vec<Identity>,
        memberships: &[(PrincipalId, PrincipalId)],
    ) -> Directory {
        let mut direct: HashMap<PrincipalId, Vec<PrincipalId>> = HashMap::new();
        for (group, member) in memberships {
            direct.entry(*member).or_default().push(*group);
        }
        let mut directory = Directory::default();
        for identity in &identities {
            directory
                .groups
                .insert(identity.id, closure(identity.id, &direct));
            directory
                .by_name
                .insert((identity.kind, identity.name.to_lowercase()), identity.id);
        }
        directory.by_id = identities
            .into_iter()
            .map(|identity| (identity.id, identity))
            .collect();
        directory
    }

    pub fn get(&self, id: PrincipalId) -> Option<&Identity> {
        self.by_id.get(&id)
    }

    pub fn find(&self, kind: IdentityKind, name: &str) -> Option<&Identity> {
        self.by_name
            .get(&(kind, name.to_lowercase()))
            .and_then(|id| self.by_id.get(id))
    }

    /// The groups `principal` belongs to, directly or through nesting.
    pub fn groups_of(&self, principal: PrincipalId) -> Vec<Identity> {
        self.groups
            .get(&principal)
            .into_iter()
            .flatten()
            .filter_map(|group| self.by_id.get(group).cloned())
            .collect()
    }
}

/// Every group reachable upwards from `start`; a visited set stops membership cycles.
fn closure(
    start: PrincipalId,
    direct: &HashMap<PrincipalId, Vec<PrincipalId>>,
) -> Vec<PrincipalId> {
    let mut seen = HashSet::new();
    let mut pending = direct.get(&start).cloned().unwrap_or_default();
    while let Some(group) = pending.pop() {
        if seen.insert(group) {
            pending.extend(direct.get(&group).into_iter().flatten().copied());
        }
    }
    seen.remove(&start);
    let mut groups: Vec<PrincipalId> = seen.into_iter().collect();
    groups.sort();
    groups
}

pub struct DirectoryState {
    current: ArcSwap<Directory>,
}

impl DirectoryState {
    /// The directory of rows read at one moment, the same the authorization snapshot is built from.
    pub fn of(rows: &AuthorizationRows) -> DirectoryState {
        DirectoryState {
            current: ArcSwap::from_pointee(Directory::of(rows)),
        }
    }

    pub fn current(&self) -> Arc<Directory> {
        self.current.load_full()
    }

    /// Publishes the directory of newer identities and memberships (callers serialize: `Access::publish`).
    pub fn replace(&self, identities: Vec<Identity>, memberships: &[(PrincipalId, PrincipalId)]) {
        self.current
            .store(Arc::new(Directory::build(identities, memberships)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(id: i64, kind: IdentityKind, name: &str) -> Identity {
        Identity {
            id: PrincipalId(id),
            kind,
            name: name.into(),
            display_name: name.into(),
            given_name: None,
            family_name: None,
            external_id: None,
            active: true,
            created_at: 0,
        }
    }

    #[test]
    fn groups_are_transitive_cycles_end_and_names_ignore_case() {
        let identities = vec![
            identity(1, IdentityKind::User, "Alice@Example.com"),
            identity(2, IdentityKind::Group, "inner"),
            identity(3, IdentityKind::Group, "outer"),
            identity(4, IdentityKind::Group, "unrelated"),
        ];
        let memberships = [
            (PrincipalId(2), PrincipalId(1)),
            (PrincipalId(3), PrincipalId(2)),
            (PrincipalId(2), PrincipalId(3)),
        ];
        let directory = Directory::build(identities, &memberships);
        let names: Vec<String> = directory
            .groups_of(PrincipalId(1))
            .into_iter()
            .map(|g| g.name)
            .collect();
        assert_eq!(names, vec!["inner", "outer"]);
        assert_eq!(
            directory
                .find(IdentityKind::User, "alice@example.COM")
                .map(|i| i.id),
            Some(PrincipalId(1))
        );
        assert!(
            directory
                .find(IdentityKind::Group, "alice@example.com")
                .is_none()
        );
        // A group in a cycle does not count itself among its groups.
        let outer_groups: Vec<String> = directory
            .groups_of(PrincipalId(3))
            .into_iter()
            .map(|g| g.name)
            .collect();
        assert_eq!(outer_groups, vec!["inner"]);
    }
}
