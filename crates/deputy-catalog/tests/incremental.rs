//! A snapshot brought up to date from the change log decides like one rebuilt from every row: random writes to a
//! real store (SQLite, or PostgreSQL under the suite's switch), and after each one the incremental snapshot is
//! compared with a rebuilt one on everything decisions read.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code.

use deputy_authz::{
    PrivilegeSet, SecurableKind, Snapshot, WorkspaceObjectKind, WorkspaceObjectRef,
};
use deputy_catalog::{
    CatalogError, SnapshotPosition, apply_delta, new_securable, object_type_of, securable_ref,
    snapshot_of,
};
use deputy_store::catalog::{
    AuthorizationRows, CatalogStore, GrantChange, SecurableChanges, WorkspaceObjectRecord,
};
use deputy_store::{
    IdentityKind, IdentityUpdate, MetadataStore, NewIdentity, PrincipalId, SqlStore,
};

/// A small deterministic generator (xorshift64): the same seed replays the same writes.
struct Dice(u64);

impl Dice {
    fn below(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % bound as u64) as usize
    }

    fn pick<T: Clone>(&mut self, from: &[T]) -> Option<T> {
        (!from.is_empty()).then(|| from[self.below(from.len())].clone())
    }
}

/// One random write; what it did, for the failure message.
async fn random_write(store: &SqlStore, dice: &mut Dice, step: usize) -> String {
    let rows = store.authorization_rows().await.unwrap();
    let principals: Vec<PrincipalId> = rows.identities.iter().map(|identity| identity.id).collect();
    let groups: Vec<PrincipalId> = rows
        .identities
        .iter()
        .filter(|identity| identity.kind == IdentityKind::Group && identity.name != "admins")
        .map(|identity| identity.id)
        .collect();
    let parents: Vec<_> = rows
        .securables
        .iter()
        .filter(|record| record.kind != "table")
        .cloned()
        .collect();
    match dice.below(14) {
        0 => {
            let kind = [IdentityKind::User, IdentityKind::Group][dice.below(2)];
            store
                .create_identity(NewIdentity::named(kind, &format!("p{step}")), 1)
                .await
                .unwrap();
            format!("created {kind:?} p{step}")
        }
        1 => {
            let Some(victim) = dice
                .pick(&principals)
                .filter(|id| Some(*id) != admins(&rows))
            else {
                return "nothing".into();
            };
            store.delete_identity(victim).await.unwrap();
            format!("deleted principal {victim:?}")
        }
        2 | 3 => {
            let (Some(group), Some(member)) = (dice.pick(&groups), dice.pick(&principals)) else {
                return "nothing".into();
            };
            if dice.below(2) == 0 {
                let _ = store.add_group_member(group, member).await;
                format!("added {member:?} to {group:?}")
            } else {
                let _ = store.remove_group_member(group, member).await;
                format!("removed {member:?} from {group:?}")
            }
        }
        4 | 5 => {
            let owner = dice.pick(&principals).unwrap();
            let parent = match dice.below(4) {
                0 => None,
                _ => dice.pick(&parents),
            };
            let (kind, full_name, parent_id) = match parent {
                Some(parent) if parent.kind == "catalog" => (
                    SecurableKind::Schema,
                    format!("{}.s{step}", parent.full_name),
                    Some(parent.id),
                ),
                Some(parent) => (
                    SecurableKind::Table,
                    format!("{}.t{step}", parent.full_name),
                    Some(parent.id),
                ),
                None => (SecurableKind::Catalog, format!("c{step}"), None),
            };
            let created = store
                .create_securable(new_securable(kind, &full_name, parent_id, owner), 1)
                .await;
            format!("created {full_name}: {}", created.is_ok())
        }
        6 => {
            let Some(victim) = dice
                .pick(&rows.securables)
                .filter(|record| record.kind != "metastore")
            else {
                return "nothing".into();
            };
            store.delete_securable(victim.id).await.unwrap();
            format!("deleted {}", victim.full_name)
        }
        7 | 8 | 12 | 13 => {
            let (Some(securable), Some(principal)) =
                (dice.pick(&rows.securables), dice.pick(&principals))
            else {
                return "nothing".into();
            };
            let kind = securable_ref(&securable).unwrap().kind();
            let applicable: Vec<_> = PrivilegeSet::applicable_to(kind).iter().collect();
            let privilege = dice.pick(&applicable).unwrap().wire_name().to_owned();
            let (add, remove) = match dice.below(3) {
                0 => (vec![], vec![privilege.clone()]),
                _ => (vec![privilege.clone()], vec![]),
            };
            store
                .change_grants(
                    securable.id,
                    &[GrantChange {
                        principal_id: principal,
                        add,
                        remove,
                    }],
                )
                .await
                .unwrap();
            format!(
                "changed {privilege} of {principal:?} on {}",
                securable.full_name
            )
        }
        9 => {
            let (Some(securable), Some(owner)) =
                (dice.pick(&rows.securables), dice.pick(&principals))
            else {
                return "nothing".into();
            };
            let changes = SecurableChanges {
                full_name: None,
                owner_id: Some(owner),
                comment: Some(Some(format!("step {step}"))),
                properties: None,
                spec: None,
            };
            store
                .update_securable(securable.id, changes, owner, 2)
                .await
                .unwrap();
            format!("{} now owned by {owner:?}", securable.full_name)
        }
        10 => {
            let object_id = format!("o{}", dice.below(4));
            let object_type = object_type_of(WorkspaceObjectKind::Warehouse);
            let exists = rows
                .workspace_objects
                .iter()
                .any(|object| object.object_id == object_id);
            if exists && dice.below(3) == 0 {
                store
                    .delete_workspace_object(object_type, &object_id)
                    .await
                    .unwrap();
                return format!("deleted object {object_id}");
            }
            let owner = dice.pick(&principals).unwrap();
            if !exists {
                store
                    .create_workspace_object(WorkspaceObjectRecord {
                        object_type: object_type.into(),
                        object_id: object_id.clone(),
                        name: object_id.clone(),
                        owner_id: owner,
                        spec: "{}".into(),
                        created_at: 1,
                    })
                    .await
                    .unwrap();
            }
            let level = ["CAN_USE", "CAN_MANAGE"][dice.below(2)];
            store
                .set_object_acl(
                    object_type,
                    &object_id,
                    &[(owner, level.into())],
                    dice.below(2) == 0,
                )
                .await
                .unwrap();
            format!("set {level} for {owner:?} on object {object_id}")
        }
        _ => {
            let Some(user) = dice
                .pick(&rows.identities)
                .filter(|identity| identity.name != "admins")
            else {
                return "nothing".into();
            };
            let update = IdentityUpdate {
                name: user.name.clone(),
                display_name: format!("{} at {step}", user.name),
                given_name: None,
                family_name: None,
                external_id: None,
                active: dice.below(2) == 0,
            };
            store.update_identity(user.id, update).await.unwrap();
            format!("updated {}", user.name)
        }
    }
}

fn admins(rows: &AuthorizationRows) -> Option<PrincipalId> {
    rows.identities
        .iter()
        .find(|identity| identity.name == "admins")
        .map(|identity| identity.id)
}

/// Everything a decision reads, compared between the two snapshots.
fn assert_same(incremental: &Snapshot, rebuilt: &Snapshot, rows: &AuthorizationRows, after: &str) {
    let mut principals: Vec<_> = incremental.principals().cloned().collect();
    let mut expected: Vec<_> = rebuilt.principals().cloned().collect();
    principals.sort_by_key(|principal| principal.id);
    expected.sort_by_key(|principal| principal.id);
    assert_eq!(principals, expected, "principals after {after}");
    for principal in &expected {
        let groups = |snapshot: &Snapshot| {
            let mut groups: Vec<_> = snapshot.direct_groups(principal.id).collect();
            groups.sort();
            groups
        };
        assert_eq!(
            groups(incremental),
            groups(rebuilt),
            "groups of {principal:?} after {after}"
        );
        for group in &expected {
            assert_eq!(
                incremental.is_member_of(principal.id, group.id),
                rebuilt.is_member_of(principal.id, group.id),
                "{principal:?} in {group:?} after {after}"
            );
        }
        assert_eq!(
            incremental.is_admin(principal.id),
            rebuilt.is_admin(principal.id)
        );
    }
    assert_eq!(
        incremental.securable_count(),
        rebuilt.securable_count(),
        "securables after {after}"
    );
    for record in &rows.securables {
        let reference = securable_ref(record).unwrap();
        assert_eq!(
            incremental.resolve(&reference),
            rebuilt.resolve(&reference),
            "{reference:?} after {after}"
        );
        assert_eq!(
            incremental.owner(&reference),
            rebuilt.owner(&reference),
            "owner of {reference:?} after {after}"
        );
        assert_eq!(
            incremental.direct_grants(&reference),
            rebuilt.direct_grants(&reference),
            "grants on {reference:?} after {after}"
        );
    }
    for object in 0..4 {
        let reference =
            WorkspaceObjectRef::new(WorkspaceObjectKind::Warehouse, &format!("o{object}"));
        assert_eq!(
            incremental.object_acl(&reference),
            rebuilt.object_acl(&reference),
            "o{object} after {after}"
        );
    }
}

#[tokio::test]
async fn a_snapshot_taking_in_changes_decides_like_one_rebuilt_from_every_row() {
    let temporary = deputy_store::testing::TemporaryStore::new();
    let store = temporary.open().await.unwrap();
    let admins = store
        .create_identity(NewIdentity::named(IdentityKind::Group, "admins"), 1)
        .await
        .unwrap();
    let alice = store
        .create_identity(NewIdentity::named(IdentityKind::User, "alice"), 1)
        .await
        .unwrap();
    store.add_group_member(admins.id, alice.id).await.unwrap();
    let (mut snapshot, mut position): (Snapshot, SnapshotPosition) =
        snapshot_of(&store.authorization_rows().await.unwrap()).unwrap();
    let mut dice = Dice(0x5eed_1234_abcd_ef01);
    let mut most_securables = 0;
    for step in 0..400 {
        let write = random_write(&store, &mut dice, step).await;
        let delta = store
            .authorization_changes(position.through(), 5_000)
            .await
            .unwrap()
            .expect("the log reaches back to the last position");
        apply_delta(&mut snapshot, &mut position, &delta)
            .unwrap_or_else(|error| panic!("{write}: {error}"));
        let rows = store.authorization_rows().await.unwrap();
        assert_eq!(position.through(), rows.through, "position after {write}");
        let (rebuilt, _) = snapshot_of(&rows).unwrap();
        assert_same(&snapshot, &rebuilt, &rows, &write);
        most_securables = most_securables.max(snapshot.securable_count());
    }
    assert!(
        most_securables > 10,
        "the writes built something: {most_securables} securables at most"
    );
}

#[tokio::test]
async fn renames_and_a_pruned_log_ask_for_a_rebuild() {
    let temporary = deputy_store::testing::TemporaryStore::new();
    let store = temporary.open().await.unwrap();
    let admins = store
        .create_identity(NewIdentity::named(IdentityKind::Group, "admins"), 1)
        .await
        .unwrap();
    let catalog = store
        .create_securable(
            new_securable(SecurableKind::Catalog, "main", None, admins.id),
            1,
        )
        .await
        .unwrap();
    let (mut snapshot, mut position) =
        snapshot_of(&store.authorization_rows().await.unwrap()).unwrap();
    let renamed = SecurableChanges {
        full_name: Some("renamed".into()),
        owner_id: None,
        comment: None,
        properties: None,
        spec: None,
    };
    store
        .update_securable(catalog.id, renamed, admins.id, 2)
        .await
        .unwrap();
    let delta = store
        .authorization_changes(position.through(), 100)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        apply_delta(&mut snapshot, &mut position, &delta),
        Err(CatalogError::RebuildNeeded(_))
    ));

    let rows = store.authorization_rows().await.unwrap();
    assert!(store.prune_authorization_changes(i64::MAX).await.unwrap() > 0);
    assert_eq!(
        store
            .authorization_changes(rows.through - 1, 100)
            .await
            .unwrap(),
        None,
        "a reader behind a pruned position cannot catch up from the log"
    );
    assert!(
        store
            .authorization_changes(rows.through, 100)
            .await
            .unwrap()
            .unwrap()
            .is_empty(),
        "a reader at the newest position has nothing to take in"
    );
    store
        .create_identity(NewIdentity::named(IdentityKind::User, "bob"), 1)
        .await
        .unwrap();
    assert_eq!(
        store.authorization_changes(rows.through, 0).await.unwrap(),
        None,
        "more changes than the reader takes in"
    );
}
