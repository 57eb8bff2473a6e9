//! The immutable state every decision reads: securables, owners, grants, principals, group memberships and
//! workspace-object ACLs.
//!
//! A [`Snapshot`] is a value. Mutations take `&mut self` on a private copy; [`crate::AuthzState`] then publishes the
//! copy as a whole, so a reader sees either none or all of a change.
//!
//! **Storage choice and cost.** Every collection is a persistent structure from `imbl` (hash array mapped tries,
//! B-trees and RRB vectors whose nodes are shared through `Arc`). Cloning a snapshot is O(1) and a small change
//! copies only the O(log n) path to what it touches. The one exception is a securable's own grant list: it is an
//! immutable sorted array (with a hash index when long, see `grants.rs`), the fastest shape to search on the hot
//! path, so a grant or revoke costs O(grants on that one securable) to rebuild. A group-membership change recomputes the closure of every principal that
//! is (transitively) a member of the changed member: O(affected × closure size).
//!
//! **Invariants** kept by every mutation, and relied on by the decision code:
//! - a principal's `closure` is sorted and holds the principal itself and every group reachable through memberships;
//!   it names only existing principals, so grants to deleted groups stop counting at once;
//! - a securable's `grants` are sorted by principal, one entry per principal, no empty entry, and name only existing
//!   principals (`remove_principal` drops them through the reverse index `granted_on`);
//! - a securable's parent chain ends at the metastore within four levels (object → schema → catalog → metastore).

use std::fmt;
use std::sync::Arc;

use imbl::shared_ptr::DefaultSharedPtr;
use imbl::{GenericHashMap, HashMap, OrdSet, Vector};
use rustc_hash::{FxBuildHasher, FxHashSet};

use crate::grants::GrantList;
use crate::principal::{PrincipalId, PrincipalRef, PrincipalType};
use crate::privilege::{Privilege, PrivilegeSet};
use crate::securable::{NameError, Namespace, SecurableKind, SecurableRef, validate_name};
use crate::workspace::{PermissionLevel, WorkspaceObjectKind, WorkspaceObjectRef};

/// The name of the group whose members are metastore and workspace admins.
pub const ADMINS_GROUP: &str = "admins";

/// Maps keyed by integer ids use a fast non-keyed hash: the ids come from the identity layer, not from requests.
type IdMap<K, V> = GenericHashMap<K, V, FxBuildHasher, DefaultSharedPtr>;

/// The index of a securable in [`Snapshot::securables`]. Never reused, so a stale id finds nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SecurableId(usize);

#[derive(Debug, Clone)]
pub(crate) struct SecurableNode {
    pub(crate) reference: SecurableRef,
    pub(crate) parent: Option<SecurableId>,
    pub(crate) owner: PrincipalId,
    pub(crate) grants: GrantList,
}

#[derive(Debug, Clone)]
pub(crate) struct PrincipalNode {
    pub(crate) reference: PrincipalRef,
    // INVARIANT: sorted, contains the principal and all its transitive groups (see the module docs).
    pub(crate) closure: Arc<[PrincipalId]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AclEntry {
    pub(crate) principal: PrincipalId,
    pub(crate) level: PermissionLevel,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct NameKey {
    namespace: Namespace,
    name: Arc<str>,
}

impl NameKey {
    fn of(securable: &SecurableRef) -> NameKey {
        NameKey {
            namespace: securable.namespace(),
            name: Arc::clone(securable.shared_name()),
        }
    }
}

/// Why a mutation or a lookup failed. Exhaustive on purpose: a new variant must be mapped by every caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthzError {
    #[error("invalid {kind} name `{name}`: {source}")]
    InvalidName {
        kind: SecurableKind,
        name: String,
        source: NameError,
    },
    #[error("a {kind} name has {expected} dot-separated parts, `{name}` has {found}")]
    WrongNameShape {
        kind: SecurableKind,
        name: String,
        expected: usize,
        found: usize,
    },
    #[error("{} `{}` already exists", .0.kind().noun(), .0.full_name())]
    SecurableExists(SecurableRef),
    #[error("{} `{}` not found", .0.kind().noun(), .0.full_name())]
    SecurableNotFound(SecurableRef),
    #[error("a snapshot has exactly one metastore: it cannot be added or removed")]
    MetastoreIsFixed,
    #[error("principal `{0}` already exists")]
    PrincipalExists(PrincipalId),
    #[error("principal `{0}` not found")]
    PrincipalNotFound(PrincipalId),
    #[error("principal `{0}` is not a group")]
    NotAGroup(PrincipalId),
    #[error("a group named `admins` already exists")]
    DuplicateAdminsGroup,
    #[error("privilege `{privilege}` does not apply to a {}", kind.noun())]
    PrivilegeNotApplicable {
        privilege: Privilege,
        kind: SecurableKind,
    },
    #[error("`{level}` is not a permission level of a {kind}")]
    LevelNotApplicable {
        level: PermissionLevel,
        kind: WorkspaceObjectKind,
    },
    #[error("{0} not found")]
    WorkspaceObjectNotFound(WorkspaceObjectRef),
}

/// The authorization state at one instant. See the module docs for the storage and its invariants.
#[derive(Clone)]
pub struct Snapshot {
    metastore: SecurableId,
    securables: Vector<Option<SecurableNode>>,
    names: HashMap<NameKey, SecurableId>,
    children: IdMap<SecurableId, OrdSet<SecurableId>>,
    principals: IdMap<PrincipalId, PrincipalNode>,
    /// Direct memberships, both ways: `groups_of[p]` are the groups `p` is in, `members_of[g]` the members of `g`.
    groups_of: IdMap<PrincipalId, OrdSet<PrincipalId>>,
    members_of: IdMap<PrincipalId, OrdSet<PrincipalId>>,
    /// Reverse index of grants, so deleting a principal touches only the securables it holds grants on.
    granted_on: IdMap<PrincipalId, OrdSet<SecurableId>>,
    admins_group: Option<PrincipalId>,
    workspace_acls: HashMap<WorkspaceObjectRef, Arc<[AclEntry]>>,
    vector_search_creators: OrdSet<PrincipalId>,
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("securables", &self.names.len())
            .field("principals", &self.principals.len())
            .field("workspace_objects", &self.workspace_acls.len())
            .finish()
    }
}

impl Snapshot {
    /// An empty snapshot holding only the metastore. Its owner is a metastore admin; it need not be a known principal
    /// yet, because the identity layer usually loads principals after the metastore exists.
    pub fn new(metastore_name: &str, metastore_owner: PrincipalId) -> Result<Snapshot, AuthzError> {
        let reference = SecurableRef::new(SecurableKind::Metastore, metastore_name);
        check_name_shape(&reference)?;
        let mut snapshot = Snapshot {
            metastore: SecurableId(0),
            securables: Vector::new(),
            names: HashMap::new(),
            children: IdMap::default(),
            principals: IdMap::default(),
            groups_of: IdMap::default(),
            members_of: IdMap::default(),
            granted_on: IdMap::default(),
            admins_group: None,
            workspace_acls: HashMap::new(),
            vector_search_creators: OrdSet::new(),
        };
        snapshot.metastore = snapshot.insert_node(reference, None, metastore_owner);
        Ok(snapshot)
    }

    // ---- principals and groups ----------------------------------------------------------------------------------

    /// Adds a principal. A group named `admins` (case-insensitively) makes its members admins; there can be one.
    pub fn add_principal(
        &mut self,
        id: PrincipalId,
        principal_type: PrincipalType,
        name: &str,
    ) -> Result<(), AuthzError> {
        if self.principals.contains_key(&id) {
            return Err(AuthzError::PrincipalExists(id));
        }
        let is_admins =
            principal_type == PrincipalType::Group && name.eq_ignore_ascii_case(ADMINS_GROUP);
        if is_admins && self.admins_group.is_some() {
            return Err(AuthzError::DuplicateAdminsGroup);
        }
        let node = PrincipalNode {
            reference: PrincipalRef {
                id,
                principal_type,
                name: Arc::from(name),
            },
            closure: Arc::from([id]),
        };
        self.principals.insert(id, node);
        if is_admins {
            self.admins_group = Some(id);
        }
        Ok(())
    }

    /// Deletes a principal with its memberships, grants, ACL entries and vector-search creation right. Securables it
    /// owns keep its id as owner (see [`PrincipalId`] on why ids are never reused).
    pub fn remove_principal(&mut self, id: PrincipalId) -> Result<(), AuthzError> {
        if !self.principals.contains_key(&id) {
            return Err(AuthzError::PrincipalNotFound(id));
        }
        let affected = self.transitive_members(id);
        if let Some(groups) = self.groups_of.remove(&id) {
            for group in groups {
                remove_edge(&mut self.members_of, group, id);
            }
        }
        if let Some(members) = self.members_of.remove(&id) {
            for member in members {
                remove_edge(&mut self.groups_of, member, id);
            }
        }
        self.principals.remove(&id);
        if self.admins_group == Some(id) {
            self.admins_group = None;
        }
        for member in affected.into_iter().filter(|member| *member != id) {
            self.recompute_closure(member);
        }
        if let Some(securables) = self.granted_on.remove(&id) {
            for securable in securables {
                if let Some(Some(node)) = self.securables.get_mut(securable.0) {
                    node.grants = node.grants.without(id);
                }
            }
        }
        let touched: Vec<WorkspaceObjectRef> = self
            .workspace_acls
            .iter()
            .filter(|(_, acl)| acl.iter().any(|entry| entry.principal == id))
            .map(|(object, _)| object.clone())
            .collect();
        for object in touched {
            if let Some(acl) = self.workspace_acls.get_mut(&object) {
                *acl = acl
                    .iter()
                    .copied()
                    .filter(|entry| entry.principal != id)
                    .collect();
            }
        }
        self.vector_search_creators.remove(&id);
        Ok(())
    }

    /// Makes `member` a direct member of `group`. Cycles are allowed and harmless: closures are computed by a
    /// breadth-first walk that visits each group once.
    pub fn add_member(
        &mut self,
        group: PrincipalId,
        member: PrincipalId,
    ) -> Result<(), AuthzError> {
        self.require_group(group)?;
        self.require_principal(member)?;
        insert_edge(&mut self.groups_of, member, group);
        insert_edge(&mut self.members_of, group, member);
        for affected in self.transitive_members(member) {
            self.recompute_closure(affected);
        }
        Ok(())
    }

    pub fn remove_member(
        &mut self,
        group: PrincipalId,
        member: PrincipalId,
    ) -> Result<(), AuthzError> {
        self.require_group(group)?;
        self.require_principal(member)?;
        remove_edge(&mut self.groups_of, member, group);
        remove_edge(&mut self.members_of, group, member);
        for affected in self.transitive_members(member) {
            self.recompute_closure(affected);
        }
        Ok(())
    }

    // ---- securables ---------------------------------------------------------------------------------------------

    /// Adds a securable under the parent its name implies (`main.sales.orders` goes under schema `main.sales`;
    /// catalogs and connections go under the metastore). Every name segment must pass [`validate_name`]. The owner
    /// need not be a known principal: a deleted owner's securables keep its id (see [`PrincipalId`]) and load so.
    pub fn add_securable(
        &mut self,
        securable: &SecurableRef,
        owner: PrincipalId,
    ) -> Result<(), AuthzError> {
        if securable.kind() == SecurableKind::Metastore {
            return Err(AuthzError::MetastoreIsFixed);
        }
        check_name_shape(securable)?;
        if self.lookup(securable).is_some() {
            return Err(AuthzError::SecurableExists(securable.clone()));
        }
        let parent = match (securable.kind().parent_kind(), securable.parent_name()) {
            (Some(parent_kind), Some(parent_name)) => {
                let parent = SecurableRef::new(parent_kind, parent_name);
                self.lookup_id(&parent)
                    .ok_or(AuthzError::SecurableNotFound(parent))?
            }
            _ => self.metastore,
        };
        self.insert_node(securable.clone(), Some(parent), owner);
        Ok(())
    }

    /// Removes a securable and everything under it. Whether a non-empty catalog may be dropped (`force`) is the
    /// catalog layer's decision, made before calling this.
    pub fn remove_securable(&mut self, securable: &SecurableRef) -> Result<(), AuthzError> {
        let root = self.existing_id(securable)?;
        if root == self.metastore {
            return Err(AuthzError::MetastoreIsFixed);
        }
        let mut doomed = vec![root];
        let mut index = 0;
        while let Some(current) = doomed.get(index).copied() {
            if let Some(children) = self.children.remove(&current) {
                doomed.extend(children);
            }
            index += 1;
        }
        if let Some(parent) = self.node(root).and_then(|node| node.parent) {
            remove_edge(&mut self.children, parent, root);
        }
        for id in doomed {
            let Some(node) = self.securables.get_mut(id.0).and_then(Option::take) else {
                continue;
            };
            self.names.remove(&NameKey::of(&node.reference));
            for grant in node.grants.entries() {
                remove_edge(&mut self.granted_on, grant.principal, id);
            }
        }
        Ok(())
    }

    /// Transfers ownership. The new owner must exist; it may be a group.
    pub fn set_owner(
        &mut self,
        securable: &SecurableRef,
        owner: PrincipalId,
    ) -> Result<(), AuthzError> {
        self.require_principal(owner)?;
        let id = self.existing_id(securable)?;
        if let Some(node) = self.node_mut(id) {
            node.owner = owner;
        }
        Ok(())
    }

    /// Adds privileges to a principal's grant on a securable. Every privilege must apply to the securable's kind.
    pub fn grant(
        &mut self,
        securable: &SecurableRef,
        principal: PrincipalId,
        privileges: PrivilegeSet,
    ) -> Result<(), AuthzError> {
        self.require_principal(principal)?;
        let id = self.existing_id(securable)?;
        let Some(node) = self.node_mut(id) else {
            return Err(AuthzError::SecurableNotFound(securable.clone()));
        };
        let kind = node.reference.kind();
        if let Some(privilege) = privileges
            .difference(PrivilegeSet::applicable_to(kind))
            .iter()
            .next()
        {
            return Err(AuthzError::PrivilegeNotApplicable { privilege, kind });
        }
        if privileges.is_empty() {
            return Ok(());
        }
        node.grants = node
            .grants
            .with_changed(principal, |held| held.union(privileges));
        insert_edge(&mut self.granted_on, principal, id);
        Ok(())
    }

    /// Removes privileges from a principal's direct grant on a securable. Revoking what was never granted is a
    /// no-op, as in Unity Catalog; revoking `SELECT` leaves an `ALL_PRIVILEGES` grant (and so `SELECT`) in place.
    pub fn revoke(
        &mut self,
        securable: &SecurableRef,
        principal: PrincipalId,
        privileges: PrivilegeSet,
    ) -> Result<(), AuthzError> {
        let id = self.existing_id(securable)?;
        let Some(node) = self.node_mut(id) else {
            return Err(AuthzError::SecurableNotFound(securable.clone()));
        };
        node.grants = node
            .grants
            .with_changed(principal, |held| held.difference(privileges));
        let still_granted = node
            .grants
            .entries()
            .iter()
            .any(|grant| grant.principal == principal);
        if !still_granted {
            remove_edge(&mut self.granted_on, principal, id);
        }
        Ok(())
    }

    /// Makes the direct grants on a securable exactly `grants` (one entry per principal), touching only the
    /// principals whose privileges differ: how a change made elsewhere (another replica, the store) is taken in.
    pub fn replace_grants(
        &mut self,
        securable: &SecurableRef,
        grants: &[(PrincipalId, PrivilegeSet)],
    ) -> Result<(), AuthzError> {
        let current = self
            .direct_grants(securable)
            .ok_or_else(|| AuthzError::SecurableNotFound(securable.clone()))?;
        let held_by = |principal: PrincipalId| {
            current
                .iter()
                .find(|(holder, _)| *holder == principal)
                .map_or_else(PrivilegeSet::default, |(_, held)| *held)
        };
        for &(principal, held) in &current {
            if !grants.iter().any(|(wanted_by, _)| *wanted_by == principal) {
                self.revoke(securable, principal, held)?;
            }
        }
        for &(principal, wanted) in grants {
            let held = held_by(principal);
            if held != wanted {
                self.revoke(securable, principal, held.difference(wanted))?;
                self.grant(securable, principal, wanted.difference(held))?;
            }
        }
        Ok(())
    }

    // ---- workspace objects --------------------------------------------------------------------------------------

    /// Replaces the direct ACL of a workspace object (the permissions API's PUT), registering the object if it is
    /// new. A principal listed twice keeps its highest level.
    pub fn set_object_acl(
        &mut self,
        object: &WorkspaceObjectRef,
        entries: &[(PrincipalId, PermissionLevel)],
    ) -> Result<(), AuthzError> {
        let kind = object.kind();
        let mut acl: Vec<AclEntry> = Vec::with_capacity(entries.len());
        for &(principal, level) in entries {
            self.require_principal(principal)?;
            let Some(rank) = kind.rank(level) else {
                return Err(AuthzError::LevelNotApplicable { level, kind });
            };
            match acl.iter_mut().find(|entry| entry.principal == principal) {
                Some(existing) if kind.rank(existing.level) < Some(rank) => existing.level = level,
                Some(_) => {}
                None => acl.push(AclEntry { principal, level }),
            }
        }
        acl.sort_by_key(|entry| entry.principal);
        self.workspace_acls.insert(object.clone(), Arc::from(acl));
        Ok(())
    }

    pub fn remove_workspace_object(
        &mut self,
        object: &WorkspaceObjectRef,
    ) -> Result<(), AuthzError> {
        self.workspace_acls
            .remove(object)
            .map(|_| ())
            .ok_or_else(|| AuthzError::WorkspaceObjectNotFound(object.clone()))
    }

    /// Replaces the set of principals (users, service principals or groups) holding vector search's `CAN_CREATE`.
    pub fn set_vector_search_endpoint_creators(
        &mut self,
        creators: &[PrincipalId],
    ) -> Result<(), AuthzError> {
        for creator in creators {
            self.require_principal(*creator)?;
        }
        self.vector_search_creators = creators.iter().copied().collect();
        Ok(())
    }

    // ---- queries ------------------------------------------------------------------------------------------------

    pub fn metastore(&self) -> Option<&SecurableRef> {
        self.node(self.metastore).map(|node| &node.reference)
    }

    pub fn principal(&self, id: PrincipalId) -> Option<&PrincipalRef> {
        self.principals.get(&id).map(|node| &node.reference)
    }

    /// The group named `admins`, if one exists.
    pub fn admins_group(&self) -> Option<PrincipalId> {
        self.admins_group
    }

    pub fn principals(&self) -> impl Iterator<Item = &PrincipalRef> {
        self.principals.values().map(|node| &node.reference)
    }

    /// The groups `member` is a direct member of.
    pub fn direct_groups(&self, member: PrincipalId) -> impl Iterator<Item = PrincipalId> + '_ {
        self.groups_of.get(&member).into_iter().flatten().copied()
    }

    /// Whether `principal` is `group` or a transitive member of it (what `is_account_group_member` needs).
    pub fn is_member_of(&self, principal: PrincipalId, group: PrincipalId) -> bool {
        self.principal_node(principal)
            .is_some_and(|node| node.closure.binary_search(&group).is_ok())
    }

    /// Whether `principal` is a metastore admin: a member of `admins` or (through a group) the metastore owner.
    pub fn is_admin(&self, principal: PrincipalId) -> bool {
        self.principal_node(principal)
            .is_some_and(|node| self.admin_basis(&node.closure).is_some())
    }

    /// The stored form of a securable (with its actual kind, e.g. `view` when asked for a `table`), if it exists.
    pub fn resolve(&self, securable: &SecurableRef) -> Option<&SecurableRef> {
        self.lookup(securable).map(|node| &node.reference)
    }

    pub fn owner(&self, securable: &SecurableRef) -> Option<PrincipalId> {
        self.lookup(securable).map(|node| node.owner)
    }

    /// The direct grants on a securable, as the REST `GET /permissions` returns them (no inheritance, no groups
    /// expanded), sorted by principal id.
    pub fn direct_grants(
        &self,
        securable: &SecurableRef,
    ) -> Option<Vec<(PrincipalId, PrivilegeSet)>> {
        self.lookup(securable).map(|node| {
            node.grants
                .entries()
                .iter()
                .map(|grant| (grant.principal, grant.privileges))
                .collect()
        })
    }

    /// The direct ACL of a workspace object, sorted by principal id.
    pub fn object_acl(
        &self,
        object: &WorkspaceObjectRef,
    ) -> Option<Vec<(PrincipalId, PermissionLevel)>> {
        self.workspace_acls.get(object).map(|acl| {
            acl.iter()
                .map(|entry| (entry.principal, entry.level))
                .collect()
        })
    }

    pub fn securable_count(&self) -> usize {
        self.names.len()
    }

    pub fn principal_count(&self) -> usize {
        self.principals.len()
    }

    // ---- crate-internal access for the decision code ------------------------------------------------------------

    pub(crate) fn principal_node(&self, id: PrincipalId) -> Option<&PrincipalNode> {
        self.principals.get(&id)
    }

    pub(crate) fn lookup(&self, securable: &SecurableRef) -> Option<&SecurableNode> {
        self.lookup_id(securable).and_then(|id| self.node(id))
    }

    pub(crate) fn node(&self, id: SecurableId) -> Option<&SecurableNode> {
        self.securables.get(id.0).and_then(Option::as_ref)
    }

    /// Why a principal with this closure is an admin, if it is.
    pub(crate) fn admin_basis(&self, closure: &[PrincipalId]) -> Option<AdminBasis> {
        if self
            .admins_group
            .is_some_and(|admins| closure.binary_search(&admins).is_ok())
        {
            return Some(AdminBasis::AdminsGroup);
        }
        let metastore_owner = self.node(self.metastore).map(|node| node.owner);
        metastore_owner
            .filter(|owner| closure.binary_search(owner).is_ok())
            .map(|_| AdminBasis::MetastoreOwner)
    }

    pub(crate) fn workspace_acl(&self, object: &WorkspaceObjectRef) -> Option<&[AclEntry]> {
        self.workspace_acls.get(object).map(|acl| &**acl)
    }

    pub(crate) fn vector_search_creators(&self) -> &OrdSet<PrincipalId> {
        &self.vector_search_creators
    }

    // ---- helpers ------------------------------------------------------------------------------------------------

    fn lookup_id(&self, securable: &SecurableRef) -> Option<SecurableId> {
        self.names.get(&NameKey::of(securable)).copied()
    }

    fn existing_id(&self, securable: &SecurableRef) -> Result<SecurableId, AuthzError> {
        self.lookup_id(securable)
            .ok_or_else(|| AuthzError::SecurableNotFound(securable.clone()))
    }

    fn node_mut(&mut self, id: SecurableId) -> Option<&mut SecurableNode> {
        self.securables.get_mut(id.0).and_then(Option::as_mut)
    }

    fn insert_node(
        &mut self,
        reference: SecurableRef,
        parent: Option<SecurableId>,
        owner: PrincipalId,
    ) -> SecurableId {
        let id = SecurableId(self.securables.len());
        self.names.insert(NameKey::of(&reference), id);
        if let Some(parent) = parent {
            insert_edge(&mut self.children, parent, id);
        }
        self.securables.push_back(Some(SecurableNode {
            reference,
            parent,
            owner,
            grants: GrantList::empty(),
        }));
        id
    }

    fn require_principal(&self, id: PrincipalId) -> Result<&PrincipalNode, AuthzError> {
        self.principals
            .get(&id)
            .ok_or(AuthzError::PrincipalNotFound(id))
    }

    fn require_group(&self, id: PrincipalId) -> Result<(), AuthzError> {
        match self.require_principal(id)?.reference.principal_type {
            PrincipalType::Group => Ok(()),
            _ => Err(AuthzError::NotAGroup(id)),
        }
    }

    /// `id` and every principal that is a member of it through any chain of groups.
    fn transitive_members(&self, id: PrincipalId) -> Vec<PrincipalId> {
        walk(id, |current| self.members_of.get(&current))
    }

    fn recompute_closure(&mut self, id: PrincipalId) {
        let mut closure = walk(id, |current| self.groups_of.get(&current));
        closure.sort_unstable();
        if let Some(node) = self.principals.get_mut(&id) {
            node.closure = Arc::from(closure);
        }
    }
}

/// What makes a principal a metastore admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminBasis {
    /// A (transitive) member of the `admins` group.
    AdminsGroup,
    /// The metastore owner, or a member of the group that owns it.
    MetastoreOwner,
}

/// Breadth-first walk from `start` along `next`, visiting each principal once, so cycles terminate.
fn walk<'a>(
    start: PrincipalId,
    next: impl Fn(PrincipalId) -> Option<&'a OrdSet<PrincipalId>>,
) -> Vec<PrincipalId> {
    let mut seen = FxHashSet::default();
    seen.insert(start);
    let mut order = vec![start];
    let mut index = 0;
    while let Some(current) = order.get(index).copied() {
        if let Some(neighbours) = next(current) {
            for neighbour in neighbours.iter() {
                if seen.insert(*neighbour) {
                    order.push(*neighbour);
                }
            }
        }
        index += 1;
    }
    order
}

fn insert_edge<K, V>(map: &mut IdMap<K, OrdSet<V>>, key: K, value: V)
where
    K: std::hash::Hash + Eq + Clone,
    V: Ord + Clone,
{
    map.entry(key).or_default().insert(value);
}

fn remove_edge<K, V>(map: &mut IdMap<K, OrdSet<V>>, key: K, value: V)
where
    K: std::hash::Hash + Eq + Clone,
    V: Ord + Clone,
{
    let now_empty = match map.get_mut(&key) {
        Some(set) => {
            set.remove(&value);
            set.is_empty()
        }
        None => false,
    };
    if now_empty {
        map.remove(&key);
    }
}

/// Checks the segment count and every segment of a full name.
fn check_name_shape(securable: &SecurableRef) -> Result<(), AuthzError> {
    let kind = securable.kind();
    let name = securable.full_name();
    let segments: Vec<&str> = name.split('.').collect();
    // A metastore name is one segment like any other; dots in it would be read as a path.
    if segments.len() != kind.name_segments() {
        return Err(AuthzError::WrongNameShape {
            kind,
            name: name.to_owned(),
            expected: kind.name_segments(),
            found: segments.len(),
        });
    }
    for segment in segments {
        validate_name(segment).map_err(|source| AuthzError::InvalidName {
            kind,
            name: name.to_owned(),
            source,
        })?;
    }
    Ok(())
}
