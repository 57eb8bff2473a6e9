//! Bringing a snapshot up to date from the store's authorization change log instead of rebuilding it: the store
//! names the rows changed after a log position ([`deputy_store::catalog::AuthorizationDelta`]), and
//! [`apply_delta`] changes only those in a private copy of the snapshot (O(log n) per change, see
//! `deputy_authz::Snapshot`), so a grant costs the same at 100 securables as at 100,000.
//!
//! **Invariant:** a snapshot brought up to date to position N decides exactly as one rebuilt from the rows at N
//! (`tests/incremental.rs` checks it against random writes). What the delta cannot express in place is refused with
//! [`CatalogError::RebuildNeeded`], and the caller rebuilds: a renamed principal or securable (names are the
//! snapshot's keys), a change of who the admins are.

use crate::{
    CatalogError, acl_entry_of, inconsistent, object_kind_from_type, principal_id,
    principal_type_of, privilege_of, securable_ref,
};
use deputy_authz::{PrincipalId, PrivilegeSet, SecurableRef, Snapshot, WorkspaceObjectRef};
use deputy_store::catalog::{
    AuthorizationDelta, SecurableDelta, SecurableId, WorkspaceObjectDelta,
};
use deputy_store::{Identity, IdentityKind};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Where a snapshot stands against the store: the change-log position it includes, and the store id of each of its
/// securables (the snapshot itself knows them by name).
#[derive(Debug, Clone, Default)]
pub struct SnapshotPosition {
    through: i64,
    securables: HashMap<SecurableId, SecurableRef>,
}

impl SnapshotPosition {
    pub(crate) fn new(
        through: i64,
        securables: HashMap<SecurableId, SecurableRef>,
    ) -> SnapshotPosition {
        SnapshotPosition {
            through,
            securables,
        }
    }

    /// The last change-log position the snapshot includes.
    pub fn through(&self) -> i64 {
        self.through
    }
}

/// Applies `delta` (read after `position.through()`) to `snapshot`, a private copy, and moves `position` to it. On
/// error both may be half changed: the caller discards the copy and rebuilds both.
pub fn apply_delta(
    snapshot: &mut Snapshot,
    position: &mut SnapshotPosition,
    delta: &AuthorizationDelta,
) -> Result<(), CatalogError> {
    if let Some((identities, memberships)) = &delta.directory {
        // Principals are added before anything refers to them, and removed once nothing still names them.
        add_principals(snapshot, identities)?;
        replace_memberships(snapshot, memberships)?;
        remove_principals(snapshot, identities)?;
    }
    // Children are deleted before their parents and created after them; ids grow with creation.
    for deleted in delta
        .securables
        .iter()
        .rev()
        .filter(|change| change.record.is_none())
    {
        if let Some(reference) = position.securables.remove(&deleted.id)
            && snapshot.resolve(&reference).is_some()
        {
            snapshot
                .remove_securable(&reference)
                .map_err(inconsistent)?;
        }
    }
    for change in &delta.securables {
        apply_securable(snapshot, position, change)?;
    }
    for object in &delta.workspace_objects {
        apply_workspace_object(snapshot, object)?;
    }
    position.through = delta.through;
    Ok(())
}

fn add_principals(snapshot: &mut Snapshot, identities: &[Identity]) -> Result<(), CatalogError> {
    for identity in identities {
        let id = principal_id(identity.id);
        let principal_type = principal_type_of(identity.kind);
        match snapshot.principal(id) {
            None if identity.kind == IdentityKind::Group
                && identity
                    .name
                    .eq_ignore_ascii_case(deputy_authz::ADMINS_GROUP) =>
            {
                return Err(CatalogError::RebuildNeeded("the `admins` group changed"));
            }
            None => snapshot
                .add_principal(id, principal_type, &identity.name)
                .map_err(inconsistent)?,
            Some(known)
                if known.principal_type == principal_type && *known.name == *identity.name => {}
            Some(_) => return Err(CatalogError::RebuildNeeded("a principal was renamed")),
        }
    }
    Ok(())
}

fn remove_principals(snapshot: &mut Snapshot, identities: &[Identity]) -> Result<(), CatalogError> {
    let kept: BTreeSet<PrincipalId> = identities
        .iter()
        .map(|identity| principal_id(identity.id))
        .collect();
    let removed: Vec<PrincipalId> = snapshot
        .principals()
        .map(|principal| principal.id)
        .filter(|id| !kept.contains(id))
        .collect();
    for id in removed {
        if snapshot.admins_group() == Some(id) {
            return Err(CatalogError::RebuildNeeded("the `admins` group changed"));
        }
        snapshot.remove_principal(id).map_err(inconsistent)?;
    }
    Ok(())
}

fn replace_memberships(
    snapshot: &mut Snapshot,
    memberships: &[(deputy_store::PrincipalId, deputy_store::PrincipalId)],
) -> Result<(), CatalogError> {
    let wanted: BTreeSet<(PrincipalId, PrincipalId)> = memberships
        .iter()
        .map(|&(group, member)| (principal_id(group), principal_id(member)))
        .collect();
    let current: BTreeSet<(PrincipalId, PrincipalId)> = snapshot
        .principals()
        .flat_map(|member| {
            snapshot
                .direct_groups(member.id)
                .map(move |group| (group, member.id))
        })
        .collect();
    for &(group, member) in current.difference(&wanted) {
        // A member being deleted loses its memberships with it.
        if snapshot.principal(group).is_some() && snapshot.principal(member).is_some() {
            snapshot
                .remove_member(group, member)
                .map_err(inconsistent)?;
        }
    }
    for &(group, member) in wanted.difference(&current) {
        snapshot.add_member(group, member).map_err(inconsistent)?;
    }
    Ok(())
}

fn apply_securable(
    snapshot: &mut Snapshot,
    position: &mut SnapshotPosition,
    change: &SecurableDelta,
) -> Result<(), CatalogError> {
    let Some(record) = &change.record else {
        return Ok(());
    };
    let reference = securable_ref(record)?;
    let owner = principal_id(record.owner_id);
    match position.securables.get(&record.id) {
        None => {
            snapshot
                .add_securable(&reference, owner)
                .map_err(inconsistent)?;
            position.securables.insert(record.id, reference.clone());
        }
        Some(known) if *known == reference => {
            if snapshot.owner(&reference) != Some(owner) {
                snapshot
                    .set_owner(&reference, owner)
                    .map_err(inconsistent)?;
            }
        }
        Some(_) => return Err(CatalogError::RebuildNeeded("a securable was renamed")),
    }
    let mut grants: BTreeMap<PrincipalId, PrivilegeSet> = BTreeMap::new();
    for grant in &change.grants {
        let held = grants.entry(principal_id(grant.principal_id)).or_default();
        *held = held.with(privilege_of(grant)?);
    }
    let grants: Vec<(PrincipalId, PrivilegeSet)> = grants.into_iter().collect();
    snapshot
        .replace_grants(&reference, &grants)
        .map_err(inconsistent)
}

fn apply_workspace_object(
    snapshot: &mut Snapshot,
    object: &WorkspaceObjectDelta,
) -> Result<(), CatalogError> {
    // Objects of types the engine does not know are not in the snapshot, as when it is rebuilt.
    let Some(kind) = object_kind_from_type(&object.object_type) else {
        return Ok(());
    };
    let reference = WorkspaceObjectRef::new(kind, &object.object_id);
    if !object.exists {
        if snapshot.object_acl(&reference).is_some() {
            snapshot
                .remove_workspace_object(&reference)
                .map_err(inconsistent)?;
        }
        return Ok(());
    }
    let entries = object
        .acl
        .iter()
        .map(acl_entry_of)
        .collect::<Result<Vec<_>, _>>()?;
    snapshot
        .set_object_acl(&reference, &entries)
        .map_err(inconsistent)
}
