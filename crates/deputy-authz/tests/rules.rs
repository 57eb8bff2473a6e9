//! Table-driven tests of the Unity Catalog and workspace-ACL rules through the public API.
//!
//! One fixture world is built below; each table row is (who, what) → the exact decision text, so both the effect and
//! the explanation are checked.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use deputy_authz::*;
use deputy_core::{ApiScope, ScopeSet};

const ADMIN: PrincipalId = PrincipalId(1);
const ALICE: PrincipalId = PrincipalId(2);
const BOB: PrincipalId = PrincipalId(3);
const CAROL: PrincipalId = PrincipalId(4);
const DAVE: PrincipalId = PrincipalId(5);
const ERIN: PrincipalId = PrincipalId(6);
const FRANK: PrincipalId = PrincipalId(7);
const ROBOT: PrincipalId = PrincipalId(8);
const GRACE: PrincipalId = PrincipalId(9);
const METASTORE_OWNER: PrincipalId = PrincipalId(10);
const ADMINS: PrincipalId = PrincipalId(100);
const ANALYSTS: PrincipalId = PrincipalId(101);
const ENGINEERS: PrincipalId = PrincipalId(102);
const READERS: PrincipalId = PrincipalId(103);
const CYCLE_A: PrincipalId = PrincipalId(104);
const CYCLE_B: PrincipalId = PrincipalId(105);
const MAIN_OWNERS: PrincipalId = PrincipalId(106);

fn privileges(list: &[Privilege]) -> PrivilegeSet {
    list.iter().copied().collect()
}

fn table(name: &str) -> SecurableRef {
    SecurableRef::table(name)
}

/// The fixture: who is in which group, who owns what, who holds which grant.
fn world() -> Snapshot {
    let mut snapshot = Snapshot::new("metastore1", METASTORE_OWNER).expect("metastore");
    use PrincipalType::*;
    let principals = [
        (ADMIN, User, "admin@x.com"),
        (ALICE, User, "alice@x.com"),
        (BOB, User, "bob@x.com"),
        (CAROL, User, "carol@x.com"),
        (DAVE, User, "dave@x.com"),
        (ERIN, User, "erin@x.com"),
        (FRANK, User, "frank@x.com"),
        (ROBOT, ServicePrincipal, "robot"),
        (GRACE, User, "grace@x.com"),
        (METASTORE_OWNER, User, "owner@x.com"),
        (ADMINS, Group, "admins"),
        (ANALYSTS, Group, "analysts"),
        (ENGINEERS, Group, "engineers"),
        (READERS, Group, "readers"),
        (CYCLE_A, Group, "cycle-a"),
        (CYCLE_B, Group, "cycle-b"),
        (MAIN_OWNERS, Group, "main-owners"),
    ];
    for (id, kind, name) in principals {
        snapshot.add_principal(id, kind, name).expect("principal");
    }
    let memberships = [
        (ADMINS, ADMIN),
        (ANALYSTS, ALICE),
        (ENGINEERS, BOB),
        (ANALYSTS, ENGINEERS),
        (READERS, ROBOT),
        (CYCLE_A, READERS),
        (CYCLE_B, CYCLE_A),
        (CYCLE_A, CYCLE_B),
        (MAIN_OWNERS, GRACE),
    ];
    for (group, member) in memberships {
        snapshot.add_member(group, member).expect("membership");
    }
    let securables = [
        (SecurableRef::catalog("main"), MAIN_OWNERS),
        (SecurableRef::schema("main.sales"), DAVE),
        (table("main.sales.orders"), ERIN),
        (
            SecurableRef::new(SecurableKind::View, "main.sales.recent"),
            DAVE,
        ),
        (
            SecurableRef::new(SecurableKind::Function, "main.sales.mask"),
            DAVE,
        ),
        (
            SecurableRef::new(SecurableKind::Volume, "main.sales.files"),
            DAVE,
        ),
        (SecurableRef::schema("main.hr"), MAIN_OWNERS),
        (table("main.hr.salaries"), MAIN_OWNERS),
        (SecurableRef::catalog("other"), ADMIN),
        (SecurableRef::schema("other.x"), ADMIN),
        (table("other.x.y"), ADMIN),
        (SecurableRef::new(SecurableKind::Connection, "crm"), ADMIN),
    ];
    for (securable, owner) in securables {
        snapshot
            .add_securable(&securable, owner)
            .expect("securable");
    }
    use Privilege::*;
    let grants = [
        (
            SecurableRef::catalog("main"),
            ANALYSTS,
            privileges(&[UseCatalog]),
        ),
        (
            SecurableRef::schema("main.sales"),
            ANALYSTS,
            privileges(&[UseSchema, Select]),
        ),
        (table("main.sales.orders"), ENGINEERS, privileges(&[Modify])),
        (table("main.sales.orders"), CAROL, privileges(&[Select])),
        (
            SecurableRef::catalog("main"),
            DAVE,
            privileges(&[UseCatalog]),
        ),
        (SecurableRef::catalog("main"), FRANK, privileges(&[Manage])),
        (
            SecurableRef::catalog("other"),
            CYCLE_B,
            privileges(&[AllPrivileges]),
        ),
        (
            SecurableRef::new(SecurableKind::Connection, "crm"),
            ALICE,
            privileges(&[UseConnection]),
        ),
    ];
    for (securable, grantee, set) in grants {
        snapshot.grant(&securable, grantee, set).expect("grant");
    }
    snapshot
}

fn request(principal: PrincipalId, action: Action) -> AccessRequest {
    AccessRequest {
        principal,
        token_scopes: ScopeSet::all(),
        required_scope: ApiScope::SqlStatementExecution,
        action,
    }
}

fn read(name: &str) -> Action {
    Action::ReadTable(table(name))
}

#[test]
fn unity_catalog_decisions_and_their_explanations() {
    let snapshot = world();
    let cases: Vec<(PrincipalId, Action, &str)> = vec![
        (
            ALICE,
            read("main.sales.orders"),
            "allow: USE_CATALOG on main: USE_CATALOG on main granted to group analysts; \
             USE_SCHEMA on main.sales: USE_SCHEMA on main.sales granted to group analysts; \
             SELECT on main.sales.orders: SELECT on main.sales granted to group analysts",
        ),
        // Names are case-insensitive.
        (
            ALICE,
            read("MAIN.Sales.ORDERS"),
            "allow: USE_CATALOG on main: USE_CATALOG on main granted to group analysts; USE_SCHEMA on main.sales: USE_SCHEMA on main.sales granted to group analysts; SELECT on main.sales.orders: SELECT on main.sales granted to group analysts",
        ),
        // A view is read like a table.
        (
            ALICE,
            read("main.sales.recent"),
            "allow: USE_CATALOG on main: USE_CATALOG on main granted to group analysts; USE_SCHEMA on main.sales: USE_SCHEMA on main.sales granted to group analysts; SELECT on main.sales.recent: SELECT on main.sales granted to group analysts",
        ),
        // Bob reaches analysts through engineers (nested groups).
        (
            BOB,
            Action::WriteTable(table("main.sales.orders")),
            "allow: USE_CATALOG on main: USE_CATALOG on main granted to group analysts; \
             USE_SCHEMA on main.sales: USE_SCHEMA on main.sales granted to group analysts; \
             MODIFY on main.sales.orders: MODIFY on main.sales.orders granted to group engineers",
        ),
        (
            ALICE,
            Action::WriteTable(table("main.sales.orders")),
            "deny: MODIFY on main.sales.orders",
        ),
        // SELECT granted on the table still needs the usage chain.
        (
            CAROL,
            read("main.sales.orders"),
            "deny: USE_CATALOG on main; USE_SCHEMA on main.sales",
        ),
        // Owning the table does not waive the usage chain.
        (
            ERIN,
            read("main.sales.orders"),
            "deny: USE_CATALOG on main; USE_SCHEMA on main.sales",
        ),
        // Owning the schema does waive USE_SCHEMA on it, not USE_CATALOG on its catalog (granted to dave).
        (
            DAVE,
            read("main.sales.orders"),
            "allow: USE_CATALOG on main: USE_CATALOG on main granted to user dave@x.com; \
             USE_SCHEMA on main.sales: user dave@x.com owns main.sales; \
             SELECT on main.sales.orders: user dave@x.com owns main.sales",
        ),
        // Owning the catalog (through a group) covers everything below it.
        (
            GRACE,
            read("main.sales.orders"),
            "allow: USE_CATALOG on main: group main-owners owns main; \
             USE_SCHEMA on main.sales: group main-owners owns main; \
             SELECT on main.sales.orders: group main-owners owns main",
        ),
        // ALL_PRIVILEGES on the catalog, reached through readers → cycle-a ⇄ cycle-b.
        (
            ROBOT,
            read("other.x.y"),
            "allow: USE_CATALOG on other: ALL_PRIVILEGES on other granted to group cycle-b; \
             USE_SCHEMA on other.x: ALL_PRIVILEGES on other granted to group cycle-b; \
             SELECT on other.x.y: ALL_PRIVILEGES on other granted to group cycle-b",
        ),
        // MANAGE lets frank grant but not read.
        (
            FRANK,
            read("main.sales.orders"),
            "deny: USE_CATALOG on main; USE_SCHEMA on main.sales; SELECT on main.sales.orders",
        ),
        (
            ADMIN,
            read("main.hr.salaries"),
            "allow: user admin@x.com is a metastore admin (member of admins)",
        ),
        (
            METASTORE_OWNER,
            read("main.hr.salaries"),
            "allow: user owner@x.com is a metastore admin (metastore owner)",
        ),
        (
            ALICE,
            read("main.hr.salaries"),
            "deny: USE_SCHEMA on main.hr; SELECT on main.hr.salaries",
        ),
        // Unknown or wrongly-kinded securables are not found, and nothing about their parents is said.
        (
            ALICE,
            read("main.sales.nope"),
            "deny: table main.sales.nope not found",
        ),
        (
            ALICE,
            read("main.nope.orders"),
            "deny: table main.nope.orders not found",
        ),
        (
            ALICE,
            Action::ExecuteFunction(SecurableRef::new(
                SecurableKind::Function,
                "main.sales.orders",
            )),
            "deny: function main.sales.orders not found",
        ),
        (
            ALICE,
            Action::ReadTable(SecurableRef::new(SecurableKind::Table, "main.sales")),
            "deny: table main.sales not found",
        ),
        (
            ALICE,
            Action::ExecuteFunction(SecurableRef::new(
                SecurableKind::Function,
                "main.sales.mask",
            )),
            "deny: EXECUTE on main.sales.mask",
        ),
        (
            DAVE,
            Action::ExecuteFunction(SecurableRef::new(
                SecurableKind::Function,
                "main.sales.mask",
            )),
            "allow: USE_CATALOG on main: USE_CATALOG on main granted to user dave@x.com; USE_SCHEMA on main.sales: user dave@x.com owns main.sales; EXECUTE on main.sales.mask: user dave@x.com owns main.sales.mask",
        ),
        (
            ALICE,
            Action::ReadVolume(SecurableRef::new(SecurableKind::Volume, "main.sales.files")),
            "deny: READ_VOLUME on main.sales.files",
        ),
        (
            ALICE,
            Action::UseConnection(SecurableRef::new(SecurableKind::Connection, "crm")),
            "allow: USE_CONNECTION on crm: USE_CONNECTION on crm granted to user alice@x.com",
        ),
        (
            BOB,
            Action::UseConnection(SecurableRef::new(SecurableKind::Connection, "crm")),
            "deny: USE_CONNECTION on crm",
        ),
        // Creation needs CREATE_* on the parent and the usage chain down to it.
        (
            ALICE,
            Action::CreateIn {
                parent: SecurableRef::schema("main.sales"),
                kind: SecurableKind::Table,
            },
            "deny: CREATE_TABLE on main.sales",
        ),
        (
            CAROL,
            Action::CreateIn {
                parent: SecurableRef::schema("main.sales"),
                kind: SecurableKind::Table,
            },
            "deny: USE_CATALOG on main; USE_SCHEMA on main.sales; CREATE_TABLE on main.sales",
        ),
        (
            DAVE,
            Action::CreateIn {
                parent: SecurableRef::schema("main.sales"),
                kind: SecurableKind::Volume,
            },
            "allow: USE_CATALOG on main: USE_CATALOG on main granted to user dave@x.com; USE_SCHEMA on main.sales: user dave@x.com owns main.sales; CREATE_VOLUME on main.sales: user dave@x.com owns main.sales",
        ),
        (
            ALICE,
            Action::CreateIn {
                parent: SecurableRef::catalog("main"),
                kind: SecurableKind::Table,
            },
            "deny: a table cannot be created in catalog main",
        ),
        (
            ALICE,
            Action::CreateIn {
                parent: SecurableRef::new(SecurableKind::Metastore, "metastore1"),
                kind: SecurableKind::Catalog,
            },
            "deny: CREATE_CATALOG on metastore1",
        ),
        // Metadata: any privilege plus the usage chain above, or BROWSE.
        (
            ALICE,
            Action::ReadMetadata(table("main.sales.orders")),
            "allow: USE_CATALOG on main: USE_CATALOG on main granted to group analysts; USE_SCHEMA on main.sales: USE_SCHEMA on main.sales granted to group analysts; SELECT on main.sales.orders: SELECT on main.sales granted to group analysts",
        ),
        (
            CAROL,
            Action::ReadMetadata(table("main.sales.orders")),
            "deny: USE_CATALOG on main; USE_SCHEMA on main.sales",
        ),
        (
            CAROL,
            Action::ReadMetadata(table("main.hr.salaries")),
            "deny: USE_CATALOG on main; USE_SCHEMA on main.hr; BROWSE or any privilege on main.hr.salaries",
        ),
        (
            ALICE,
            Action::ReadMetadata(SecurableRef::catalog("main")),
            "allow: USE_CATALOG on main: USE_CATALOG on main granted to group analysts",
        ),
        // Who may grant.
        (
            ADMIN,
            Action::Manage(table("main.sales.orders")),
            "allow: user admin@x.com is a metastore admin (member of admins)",
        ),
        (
            ERIN,
            Action::Manage(table("main.sales.orders")),
            "allow: MANAGE on main.sales.orders: user erin@x.com owns main.sales.orders",
        ),
        (
            DAVE,
            Action::Manage(table("main.sales.orders")),
            "allow: MANAGE on main.sales.orders: user dave@x.com owns main.sales",
        ),
        (
            GRACE,
            Action::Manage(table("main.sales.orders")),
            "allow: MANAGE on main.sales.orders: group main-owners owns main",
        ),
        (
            FRANK,
            Action::Manage(table("main.sales.orders")),
            "allow: MANAGE on main.sales.orders: MANAGE on main granted to user frank@x.com",
        ),
        (
            ALICE,
            Action::Manage(table("main.sales.orders")),
            "deny: MANAGE or ownership on main.sales.orders",
        ),
        (
            ERIN,
            Action::Manage(SecurableRef::schema("main.sales")),
            "deny: MANAGE or ownership on main.sales",
        ),
        // ALL_PRIVILEGES never includes MANAGE.
        (
            ROBOT,
            Action::Manage(table("other.x.y")),
            "deny: MANAGE or ownership on other.x.y",
        ),
        (
            PrincipalId(999),
            read("main.sales.orders"),
            "deny: principal 999 not found",
        ),
    ];
    let mut failures = Vec::new();
    for (principal, action, expected) in cases {
        let decision = decide(&request(principal, action.clone()), &snapshot);
        let expected = expected.split_whitespace().collect::<Vec<_>>().join(" ");
        if decision.to_string() != expected {
            failures.push(format!(
                "{principal} {action:?}\n  expected {expected}\n  got      {decision}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_missing_scope_denies_with_the_scope_named() {
    let snapshot = world();
    let mut asking = request(ADMIN, read("main.sales.orders"));
    asking.token_scopes =
        ScopeSet::parse("catalog.tables serving.serving-endpoints").expect("scopes");
    let decision = decide(&asking, &snapshot);
    assert_eq!(decision.effect, Effect::Deny);
    assert_eq!(
        decision.reasons,
        vec![Reason::ScopeNotInToken(ApiScope::SqlStatementExecution)]
    );
    assert_eq!(
        decision.reasons[0].to_string(),
        "scope sql.statement-execution not in token"
    );
    asking.token_scopes = ScopeSet::parse("sql").expect("scopes");
    assert!(decide(&asking, &snapshot).is_allowed());
}

#[test]
fn may_grant_matches_the_manage_action() {
    let snapshot = world();
    let orders = table("main.sales.orders");
    for principal in [
        ADMIN,
        ALICE,
        BOB,
        CAROL,
        DAVE,
        ERIN,
        FRANK,
        ROBOT,
        GRACE,
        METASTORE_OWNER,
    ] {
        let via_action = decide(
            &request(principal, Action::Manage(orders.clone())),
            &snapshot,
        );
        assert_eq!(
            may_grant(principal, &orders, &snapshot),
            via_action,
            "{principal}"
        );
    }
    let allowed: Vec<PrincipalId> = [
        ADMIN,
        ALICE,
        BOB,
        CAROL,
        DAVE,
        ERIN,
        FRANK,
        ROBOT,
        GRACE,
        METASTORE_OWNER,
    ]
    .into_iter()
    .filter(|principal| may_grant(*principal, &orders, &snapshot).is_allowed())
    .collect();
    assert_eq!(
        allowed,
        vec![ADMIN, DAVE, ERIN, FRANK, GRACE, METASTORE_OWNER]
    );
}

#[test]
fn revocation_takes_effect_on_the_next_check() {
    let state = AuthzState::new(world());
    let alice_reads = request(ALICE, read("main.sales.orders"));
    assert!(state.decide(&alice_reads).is_allowed());
    let before = state.snapshot();
    state
        .update(|snapshot| {
            snapshot.revoke(
                &SecurableRef::schema("main.sales"),
                ANALYSTS,
                Privilege::Select.into(),
            )
        })
        .expect("revoke");
    assert_eq!(
        state.decide(&alice_reads).to_string(),
        "deny: SELECT on main.sales.orders"
    );
    // A snapshot taken before the change is unaffected: decisions on it stay consistent.
    assert!(decide(&alice_reads, &before).is_allowed());
}

#[test]
fn revoking_select_leaves_all_privileges_in_place() {
    let mut snapshot = world();
    let other = SecurableRef::catalog("other");
    snapshot
        .revoke(&other, CYCLE_B, Privilege::Select.into())
        .expect("revoke");
    assert!(decide(&request(ROBOT, read("other.x.y")), &snapshot).is_allowed());
    snapshot
        .revoke(&other, CYCLE_B, Privilege::AllPrivileges.into())
        .expect("revoke");
    assert_eq!(
        decide(&request(ROBOT, read("other.x.y")), &snapshot).to_string(),
        "deny: USE_CATALOG on other; USE_SCHEMA on other.x; SELECT on other.x.y"
    );
    assert_eq!(snapshot.direct_grants(&other), Some(vec![]));
}

#[test]
fn ownership_transfer_moves_the_owner_rights() {
    let mut snapshot = world();
    let orders = table("main.sales.orders");
    assert!(may_grant(ERIN, &orders, &snapshot).is_allowed());
    assert!(!may_grant(ALICE, &orders, &snapshot).is_allowed());
    snapshot.set_owner(&orders, ALICE).expect("transfer");
    assert_eq!(snapshot.owner(&orders), Some(ALICE));
    assert!(!may_grant(ERIN, &orders, &snapshot).is_allowed());
    assert!(may_grant(ALICE, &orders, &snapshot).is_allowed());
    // Alice now holds MODIFY as owner; she already had the usage chain.
    assert!(
        decide(
            &request(ALICE, Action::WriteTable(orders.clone())),
            &snapshot
        )
        .is_allowed()
    );
    assert_eq!(
        snapshot.set_owner(&orders, PrincipalId(999)),
        Err(AuthzError::PrincipalNotFound(PrincipalId(999)))
    );
}

#[test]
fn a_deleted_principal_no_longer_counts() {
    let mut snapshot = world();
    let orders_read = request(ALICE, read("main.sales.orders"));
    assert!(decide(&orders_read, &snapshot).is_allowed());
    snapshot.remove_principal(ANALYSTS).expect("remove group");
    assert_eq!(
        decide(&orders_read, &snapshot).to_string(),
        "deny: USE_CATALOG on main; USE_SCHEMA on main.sales; SELECT on main.sales.orders"
    );
    assert!(!snapshot.is_member_of(BOB, ANALYSTS));
    assert!(snapshot.is_member_of(BOB, ENGINEERS));
    assert_eq!(
        snapshot.direct_grants(&SecurableRef::schema("main.sales")),
        Some(vec![]),
        "the group's grants are gone, not just unreachable"
    );
    snapshot.remove_principal(CAROL).expect("remove user");
    assert_eq!(
        decide(&request(CAROL, read("main.sales.orders")), &snapshot).to_string(),
        "deny: principal 4 not found"
    );
    assert_eq!(
        snapshot.direct_grants(&table("main.sales.orders")),
        Some(vec![(ENGINEERS, Privilege::Modify.into())])
    );
    // Removing the admins group removes admin status.
    snapshot.remove_principal(ADMINS).expect("remove admins");
    assert!(!snapshot.is_admin(ADMIN));
    assert!(!decide(&request(ADMIN, read("main.hr.salaries")), &snapshot).is_allowed());
}

#[test]
fn nested_groups_and_cycles_terminate_and_propagate() {
    let mut snapshot = world();
    for group in [READERS, CYCLE_A, CYCLE_B] {
        assert!(snapshot.is_member_of(ROBOT, group), "{group}");
    }
    assert!(snapshot.is_member_of(CYCLE_A, CYCLE_B) && snapshot.is_member_of(CYCLE_B, CYCLE_A));
    // A self-loop is a cycle too.
    snapshot.add_member(CYCLE_A, CYCLE_A).expect("self loop");
    assert!(decide(&request(ROBOT, read("other.x.y")), &snapshot).is_allowed());
    // Cutting the link from readers into the cycle cuts the robot off.
    snapshot.remove_member(CYCLE_A, READERS).expect("unlink");
    assert!(!snapshot.is_member_of(ROBOT, CYCLE_B));
    assert!(!decide(&request(ROBOT, read("other.x.y")), &snapshot).is_allowed());
    // A membership added high up reaches members deep below at once.
    snapshot.add_member(ANALYSTS, READERS).expect("link");
    assert!(snapshot.is_member_of(ROBOT, ANALYSTS));
    assert!(decide(&request(ROBOT, read("main.sales.orders")), &snapshot).is_allowed());
    assert_eq!(
        snapshot.add_member(ALICE, BOB),
        Err(AuthzError::NotAGroup(ALICE))
    );
}

#[test]
fn effective_privileges_report_where_they_come_from() {
    let snapshot = world();
    let listed = effective_privileges(BOB, &table("main.sales.orders"), &snapshot).expect("listed");
    let rendered: Vec<String> = listed
        .iter()
        .map(|entry| match &entry.inherited_from {
            None => entry.privilege.to_string(),
            Some(from) => format!("{} from {:?}", entry.privilege, from),
        })
        .collect();
    // USE_SCHEMA and USE_CATALOG do not apply to a table, so they are not listed on it.
    assert_eq!(rendered, vec!["MODIFY", "SELECT from schema main.sales"]);
    let on_catalog = effective_privileges(ROBOT, &table("other.x.y"), &snapshot).expect("listed");
    assert_eq!(
        on_catalog,
        vec![EffectivePrivilege {
            privilege: Privilege::AllPrivileges,
            inherited_from: Some(SecurableRef::catalog("other")),
        }]
    );
    assert_eq!(
        effective_privileges(BOB, &table("main.sales.none"), &snapshot),
        Err(AuthzError::SecurableNotFound(table("main.sales.none")))
    );
}

#[test]
fn browse_allows_metadata_only() {
    let mut snapshot = world();
    snapshot
        .grant(
            &SecurableRef::catalog("main"),
            CAROL,
            Privilege::Browse.into(),
        )
        .expect("browse");
    let salaries = table("main.hr.salaries");
    assert_eq!(
        decide(
            &request(CAROL, Action::ReadMetadata(salaries.clone())),
            &snapshot
        )
        .to_string(),
        "allow: BROWSE on main.hr.salaries: BROWSE on main granted to user carol@x.com"
    );
    assert_eq!(
        decide(&request(CAROL, Action::ReadTable(salaries)), &snapshot).to_string(),
        "deny: USE_CATALOG on main; USE_SCHEMA on main.hr; SELECT on main.hr.salaries",
        "BROWSE grants no data access"
    );
}

#[test]
fn creation_rights_follow_the_create_privileges() {
    let mut snapshot = world();
    let sales = SecurableRef::schema("main.sales");
    snapshot
        .grant(&sales, ANALYSTS, Privilege::CreateTable.into())
        .expect("grant");
    let create = |kind| {
        request(
            ALICE,
            Action::CreateIn {
                parent: sales.clone(),
                kind,
            },
        )
    };
    assert!(decide(&create(SecurableKind::Table), &snapshot).is_allowed());
    assert!(decide(&create(SecurableKind::VectorIndex), &snapshot).is_allowed());
    assert_eq!(
        decide(&create(SecurableKind::View), &snapshot).to_string(),
        "deny: CREATE_VIEW on main.sales"
    );
    let metastore = snapshot.metastore().cloned().expect("metastore");
    snapshot
        .grant(&metastore, ALICE, Privilege::CreateCatalog.into())
        .expect("grant");
    let new_catalog = request(
        ALICE,
        Action::CreateIn {
            parent: metastore.clone(),
            kind: SecurableKind::Catalog,
        },
    );
    assert!(decide(&new_catalog, &snapshot).is_allowed());
    assert_eq!(
        snapshot.grant(&metastore, ALICE, Privilege::Select.into()),
        Err(AuthzError::PrivilegeNotApplicable {
            privilege: Privilege::Select,
            kind: SecurableKind::Metastore
        })
    );
}

#[test]
fn removing_a_securable_removes_its_subtree_for_good() {
    let mut snapshot = world();
    let sales = SecurableRef::schema("main.sales");
    snapshot.remove_securable(&sales).expect("remove");
    assert_eq!(
        decide(&request(ALICE, read("main.sales.orders")), &snapshot).to_string(),
        "deny: table main.sales.orders not found"
    );
    assert_eq!(snapshot.resolve(&table("main.sales.orders")), None);
    // Re-creating the same names starts clean: old grants do not come back.
    snapshot.add_securable(&sales, DAVE).expect("re-add schema");
    snapshot
        .add_securable(&table("main.sales.orders"), DAVE)
        .expect("re-add table");
    assert_eq!(
        decide(&request(ALICE, read("main.sales.orders")), &snapshot).to_string(),
        "deny: USE_SCHEMA on main.sales; SELECT on main.sales.orders"
    );
    let metastore = snapshot.metastore().cloned().expect("metastore");
    assert_eq!(
        snapshot.remove_securable(&metastore),
        Err(AuthzError::MetastoreIsFixed)
    );
}

#[test]
fn mutations_refuse_bad_input() {
    let mut snapshot = world();
    let cases: Vec<(Result<(), AuthzError>, &str)> = vec![
        (
            snapshot
                .clone()
                .add_securable(&table("main.sales.orders"), DAVE),
            "table `main.sales.orders` already exists",
        ),
        (
            snapshot.clone().add_securable(
                &SecurableRef::new(SecurableKind::View, "main.sales.orders"),
                DAVE,
            ),
            "view `main.sales.orders` already exists",
        ),
        (
            snapshot.clone().add_securable(&table("main.nope.t"), DAVE),
            "schema `main.nope` not found",
        ),
        (
            snapshot.clone().add_securable(&table("main.sales"), DAVE),
            "a table name has 3 dot-separated parts, `main.sales` has 2",
        ),
        (
            snapshot
                .clone()
                .add_securable(&table("main.sales.a/b"), DAVE),
            "invalid table name `main.sales.a/b`: name contains `/` at position 1; only ASCII letters, digits, `_` and `-` are allowed",
        ),
        (
            snapshot.clone().add_securable(&table("main..orders"), DAVE),
            "invalid table name `main..orders`: name is empty; use 1 to 255 ASCII letters, digits, `_` or `-`",
        ),
        (
            snapshot
                .clone()
                .add_principal(ALICE, PrincipalType::User, "again"),
            "principal `2` already exists",
        ),
        (
            snapshot
                .clone()
                .add_principal(PrincipalId(500), PrincipalType::Group, "Admins"),
            "a group named `admins` already exists",
        ),
        (
            snapshot.clone().grant(
                &table("main.sales.orders"),
                ALICE,
                Privilege::UseSchema.into(),
            ),
            "privilege `USE_SCHEMA` does not apply to a table",
        ),
        (
            snapshot
                .clone()
                .grant(&table("main.sales.none"), ALICE, Privilege::Select.into()),
            "table `main.sales.none` not found",
        ),
        (
            snapshot.clone().set_object_acl(
                &WorkspaceObjectRef::new(WorkspaceObjectKind::VectorSearchEndpoint, "vs1"),
                &[(ALICE, PermissionLevel::CanCreate)],
            ),
            "`CAN_CREATE` is not a permission level of a vector-search-endpoint",
        ),
        (
            snapshot.remove_workspace_object(&WorkspaceObjectRef::new(
                WorkspaceObjectKind::Warehouse,
                "none",
            )),
            "warehouse none not found",
        ),
    ];
    for (result, expected) in cases {
        assert_eq!(
            result.map_err(|error| error.to_string()),
            Err(expected.to_owned())
        );
    }
}

#[test]
fn workspace_object_levels_are_ordered_and_admins_inherit_can_manage() {
    let mut snapshot = world();
    let endpoint = WorkspaceObjectRef::new(WorkspaceObjectKind::ServingEndpoint, "ep-1");
    let warehouse = WorkspaceObjectRef::new(WorkspaceObjectKind::Warehouse, "wh-1");
    let genie = WorkspaceObjectRef::new(WorkspaceObjectKind::GenieSpace, "space-1");
    use PermissionLevel::*;
    snapshot
        .set_object_acl(&endpoint, &[(ANALYSTS, CanQuery), (CAROL, CanView)])
        .expect("acl");
    snapshot
        .set_object_acl(&warehouse, &[(DAVE, IsOwner), (ENGINEERS, CanUse)])
        .expect("acl");
    snapshot
        .set_object_acl(&genie, &[(ALICE, CanRun)])
        .expect("acl");
    let check = |principal, object: &WorkspaceObjectRef, level| {
        decide(
            &request(
                principal,
                Action::UseWorkspaceObject {
                    object: object.clone(),
                    level,
                },
            ),
            &snapshot,
        )
        .to_string()
    };
    let cases = [
        (
            BOB,
            &endpoint,
            CanQuery,
            "allow: CAN_QUERY on serving-endpoint ep-1: CAN_QUERY granted to group analysts",
        ),
        (
            BOB,
            &endpoint,
            CanView,
            "allow: CAN_VIEW on serving-endpoint ep-1: CAN_QUERY granted to group analysts",
        ),
        (
            BOB,
            &endpoint,
            CanManage,
            "deny: CAN_MANAGE on serving-endpoint ep-1",
        ),
        (
            CAROL,
            &endpoint,
            CanQuery,
            "deny: CAN_QUERY on serving-endpoint ep-1",
        ),
        (
            ADMIN,
            &endpoint,
            CanManage,
            "allow: CAN_MANAGE on serving-endpoint ep-1: CAN_MANAGE inherited from the workspace root (admin)",
        ),
        (
            ADMIN,
            &warehouse,
            IsOwner,
            "deny: IS_OWNER on warehouse wh-1",
        ),
        (
            DAVE,
            &warehouse,
            CanManage,
            "allow: CAN_MANAGE on warehouse wh-1: IS_OWNER granted to user dave@x.com",
        ),
        (
            BOB,
            &warehouse,
            CanMonitor,
            "allow: CAN_MONITOR on warehouse wh-1: CAN_USE granted to group engineers",
        ),
        (
            BOB,
            &warehouse,
            CanManage,
            "deny: CAN_MANAGE on warehouse wh-1",
        ),
        (
            ALICE,
            &genie,
            CanView,
            "allow: CAN_VIEW on genie-space space-1: CAN_RUN granted to user alice@x.com",
        ),
        (
            ALICE,
            &genie,
            CanEdit,
            "deny: CAN_EDIT on genie-space space-1",
        ),
        (
            ALICE,
            &endpoint,
            CanRun,
            "deny: CAN_RUN is not a permission level of serving-endpoint ep-1",
        ),
        (
            ALICE,
            &WorkspaceObjectRef::new(WorkspaceObjectKind::ServingEndpoint, "ghost"),
            CanView,
            "deny: serving-endpoint ghost not found",
        ),
    ];
    for (principal, object, level, expected) in cases {
        assert_eq!(
            check(principal, object, level),
            expected,
            "{principal} {object} {level}"
        );
    }
    let levels = effective_permission_levels(ADMIN, &endpoint, &snapshot).expect("levels");
    assert_eq!(
        levels,
        vec![EffectivePermission {
            level: CanManage,
            source: PermissionSource::WorkspaceRoot
        }]
    );
    let bob_levels = effective_permission_levels(BOB, &endpoint, &snapshot).expect("levels");
    assert_eq!(bob_levels.len(), 1);
    assert_eq!(bob_levels[0].level, CanQuery);
}

#[test]
fn vector_search_creation_is_a_separate_right() {
    let mut snapshot = world();
    let create = |principal| {
        decide(
            &request(principal, Action::CreateVectorSearchEndpoint),
            &snapshot,
        )
        .to_string()
    };
    assert_eq!(create(ALICE), "deny: CAN_CREATE on vector-search endpoints");
    assert_eq!(
        create(ADMIN),
        "allow: user admin@x.com is a metastore admin (member of admins)"
    );
    snapshot
        .set_vector_search_endpoint_creators(&[ANALYSTS])
        .expect("creators");
    let create = |principal| {
        decide(
            &request(principal, Action::CreateVectorSearchEndpoint),
            &snapshot,
        )
        .to_string()
    };
    assert_eq!(
        create(BOB),
        "allow: CAN_CREATE on vector-search endpoints granted to group analysts"
    );
    assert_eq!(create(CAROL), "deny: CAN_CREATE on vector-search endpoints");
}

#[test]
fn readers_never_see_half_a_change() {
    // A writer repeatedly grants and then revokes USE_SCHEMA and SELECT together; a reader must never see one
    // without the other (which would show up as a deny naming exactly one of them).
    let state = Arc::new(AuthzState::new(world()));
    let sales = SecurableRef::schema("main.sales");
    state
        .update(|snapshot| {
            snapshot.revoke(
                &sales,
                ANALYSTS,
                [Privilege::UseSchema, Privilege::Select]
                    .into_iter()
                    .collect(),
            )
        })
        .expect("start without the grant");
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let state = Arc::clone(&state);
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let asking = request(ALICE, read("main.sales.orders"));
            let mut seen = (0_u32, 0_u32);
            while !done.load(Ordering::Relaxed) {
                let decision = state.decide(&asking);
                match decision.effect {
                    Effect::Allow => seen.0 += 1,
                    Effect::Deny => {
                        assert_eq!(
                            decision.reasons.len(),
                            2,
                            "half-applied change seen: {decision}"
                        );
                        seen.1 += 1;
                    }
                }
            }
            seen
        })
    };
    for round in 0..2000 {
        let both: PrivilegeSet = [Privilege::UseSchema, Privilege::Select]
            .into_iter()
            .collect();
        let result = state.update(|snapshot| {
            if round % 2 == 0 {
                snapshot.grant(&sales, ANALYSTS, Privilege::UseSchema.into())?;
                snapshot.grant(&sales, ANALYSTS, Privilege::Select.into())
            } else {
                snapshot.revoke(&sales, ANALYSTS, Privilege::UseSchema.into())?;
                snapshot.revoke(&sales, ANALYSTS, both)
            }
        });
        result.expect("update");
    }
    done.store(true, Ordering::Relaxed);
    let (allows, denies) = reader.join().expect("reader");
    assert!(allows + denies > 0);
}

#[test]
fn a_failed_update_publishes_nothing() {
    let state = AuthzState::new(world());
    let result = state.update(|snapshot| {
        snapshot.grant(&table("main.sales.orders"), CAROL, Privilege::Modify.into())?;
        snapshot.grant(
            &table("main.sales.orders"),
            PrincipalId(999),
            Privilege::Modify.into(),
        )
    });
    assert_eq!(
        result.map(|_| ()),
        Err(AuthzError::PrincipalNotFound(PrincipalId(999)))
    );
    assert_eq!(
        state
            .snapshot()
            .direct_grants(&table("main.sales.orders"))
            .map(|grants| grants.len()),
        Some(2),
        "carol's MODIFY must not have been published"
    );
}

/// Ids are never reused, so a securable whose owner was deleted loads with that owner's id (a rebuilt snapshot must
/// load what the store holds); the id names no one, so it allows nothing.
#[test]
fn a_securable_owned_by_a_deleted_principal_loads_and_its_owner_id_allows_nothing() {
    let mut snapshot = world();
    let gone = PrincipalId(999);
    snapshot
        .add_securable(&SecurableRef::catalog("orphaned"), gone)
        .unwrap();
    assert_eq!(
        snapshot.owner(&SecurableRef::catalog("orphaned")),
        Some(gone)
    );
    let browse = decide(
        &request(
            gone,
            Action::ReadMetadata(SecurableRef::catalog("orphaned")),
        ),
        &snapshot,
    );
    assert!(!browse.is_allowed(), "{browse}");
}
