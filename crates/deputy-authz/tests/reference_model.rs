//! Differential test: the engine against a slow, obviously-correct reference model of the same rules.
//!
//! The reference keeps plain lists (memberships as pairs, grants as a map keyed by (securable, principal)), recomputes
//! group membership by breadth-first search on every question and walks the tree for every privilege. Random worlds
//! (a few catalogs, schemas and objects; random owners, grants including `ALL_PRIVILEGES` and `MANAGE`, grants to
//! groups, nested groups with cycles, workspace ACLs) are built through the engine's mutation API and in the model,
//! then changed by random mutations, and every (principal, action, securable) decision must agree.
//!
//! `PROPTEST_CASES` raises or lowers the number of worlds (default below).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use deputy_authz::*;
use deputy_core::{ApiScope, ScopeSet};
use proptest::prelude::*;

const USERS: [u64; 4] = [1, 2, 3, 4];
const GROUPS: [u64; 4] = [10, 11, 12, 13];
/// Group 13 is named `admins`.
const ADMINS_ID: u64 = 13;
/// Never registered: a dangling metastore owner and an unknown requester.
const STRANGER: u64 = 999;

fn all_principals() -> Vec<u64> {
    USERS.iter().chain(GROUPS.iter()).copied().collect()
}

/// The privileges that apply to each kind, written out independently of the engine's table.
fn applies(kind: SecurableKind, privilege: Privilege) -> bool {
    use Privilege::*;
    use SecurableKind::*;
    let object_common = [Browse, Manage, AllPrivileges, ApplyTag];
    let list: Vec<Privilege> = match kind {
        Metastore => vec![CreateCatalog, CreateConnection],
        Catalog => vec![
            UseCatalog,
            UseSchema,
            Select,
            Modify,
            Execute,
            ReadVolume,
            WriteVolume,
            CreateSchema,
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
        ],
        Schema => vec![
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
        ],
        Table | VectorIndex => [Select, Modify, Refresh]
            .into_iter()
            .chain(object_common)
            .collect(),
        View => [Select, Refresh].into_iter().chain(object_common).collect(),
        Function | RegisteredModel => [Execute].into_iter().chain(object_common).collect(),
        Volume => [ReadVolume, WriteVolume]
            .into_iter()
            .chain(object_common)
            .collect(),
        Connection => vec![UseConnection, Browse, Manage, AllPrivileges],
    };
    list.contains(&privilege)
}

fn applicable_list(kind: SecurableKind) -> Vec<Privilege> {
    Privilege::ALL
        .into_iter()
        .filter(|privilege| applies(kind, *privilege))
        .collect()
}

#[derive(Debug, Clone)]
struct ModelSecurable {
    reference: SecurableRef,
    parent: Option<usize>,
    owner: u64,
    alive: bool,
}

#[derive(Debug, Clone)]
struct Model {
    principals: BTreeMap<u64, PrincipalType>,
    /// (member, group)
    memberships: BTreeSet<(u64, u64)>,
    securables: Vec<ModelSecurable>,
    grants: BTreeMap<(usize, u64), BTreeSet<Privilege>>,
    acls: BTreeMap<WorkspaceObjectRef, BTreeMap<u64, PermissionLevel>>,
    creators: BTreeSet<u64>,
}

impl Model {
    fn groups_of(&self, principal: u64) -> BTreeSet<u64> {
        let mut seen = BTreeSet::from([principal]);
        let mut queue = VecDeque::from([principal]);
        while let Some(current) = queue.pop_front() {
            for (member, group) in &self.memberships {
                if *member == current && seen.insert(*group) {
                    queue.push_back(*group);
                }
            }
        }
        seen
    }

    fn is_admin(&self, principal: u64) -> bool {
        let groups = self.groups_of(principal);
        let admins_exists = self.principals.contains_key(&ADMINS_ID);
        (admins_exists && groups.contains(&ADMINS_ID)) || groups.contains(&self.securables[0].owner)
    }

    fn ancestors(&self, index: usize) -> Vec<usize> {
        let mut chain = vec![index];
        let mut current = index;
        while let Some(parent) = self.securables[current].parent {
            chain.push(parent);
            current = parent;
        }
        chain
    }

    fn find(&self, reference: &SecurableRef) -> Option<usize> {
        let namespace = |kind: SecurableKind| match kind {
            SecurableKind::Table | SecurableKind::View | SecurableKind::VectorIndex => {
                SecurableKind::Table
            }
            other => other,
        };
        self.securables.iter().position(|securable| {
            securable.alive
                && namespace(securable.reference.kind()) == namespace(reference.kind())
                && securable.reference.full_name() == reference.full_name()
        })
    }

    fn owns_ancestor(&self, principal: u64, index: usize) -> bool {
        let groups = self.groups_of(principal);
        self.ancestors(index)
            .into_iter()
            .any(|ancestor| groups.contains(&self.securables[ancestor].owner))
    }

    fn holds(&self, principal: u64, index: usize, privilege: Privilege) -> bool {
        if self.is_admin(principal) || self.owns_ancestor(principal, index) {
            return true;
        }
        if !applies(self.securables[index].reference.kind(), privilege) {
            return false;
        }
        let groups = self.groups_of(principal);
        self.ancestors(index).into_iter().any(|ancestor| {
            groups.iter().any(|group| {
                self.grants.get(&(ancestor, *group)).is_some_and(|held| {
                    held.contains(&privilege)
                        || (held.contains(&Privilege::AllPrivileges)
                            && privilege != Privilege::Manage)
                })
            })
        })
    }

    /// USE_CATALOG / USE_SCHEMA on every catalog and schema from `index` (inclusive when `inclusive`) upwards.
    fn usage_chain(&self, principal: u64, index: usize, inclusive: bool) -> bool {
        self.ancestors(index)
            .into_iter()
            .skip(usize::from(!inclusive))
            .all(
                |ancestor| match self.securables[ancestor].reference.kind() {
                    SecurableKind::Catalog => {
                        self.holds(principal, ancestor, Privilege::UseCatalog)
                    }
                    SecurableKind::Schema => self.holds(principal, ancestor, Privilege::UseSchema),
                    _ => true,
                },
            )
    }

    fn may_manage(&self, principal: u64, index: usize) -> bool {
        let groups = self.groups_of(principal);
        self.is_admin(principal)
            || self.owns_ancestor(principal, index)
            || self.ancestors(index).into_iter().any(|ancestor| {
                groups.iter().any(|group| {
                    self.grants
                        .get(&(ancestor, *group))
                        .is_some_and(|held| held.contains(&Privilege::Manage))
                })
            })
    }

    fn allows(&self, request: &AccessRequest) -> bool {
        let principal = request.principal.0;
        if !request.token_scopes.contains(request.required_scope)
            || !self.principals.contains_key(&principal)
        {
            return false;
        }
        use SecurableKind::*;
        let use_object = |reference: &SecurableRef, kinds: &[SecurableKind], privilege| {
            self.find(reference).is_some_and(|index| {
                kinds.contains(&self.securables[index].reference.kind())
                    && self.holds(principal, index, privilege)
                    && self.usage_chain(principal, index, false)
            })
        };
        match &request.action {
            Action::ReadTable(reference) => {
                use_object(reference, &[Table, View, VectorIndex], Privilege::Select)
            }
            Action::WriteTable(reference) => {
                use_object(reference, &[Table, VectorIndex], Privilege::Modify)
            }
            Action::ExecuteFunction(reference) => {
                use_object(reference, &[Function], Privilege::Execute)
            }
            Action::ExecuteModel(reference) => {
                use_object(reference, &[RegisteredModel], Privilege::Execute)
            }
            Action::ReadVolume(reference) => {
                use_object(reference, &[Volume], Privilege::ReadVolume)
            }
            Action::WriteVolume(reference) => {
                use_object(reference, &[Volume], Privilege::WriteVolume)
            }
            Action::UseConnection(reference) => {
                use_object(reference, &[Connection], Privilege::UseConnection)
            }
            Action::CreateIn { parent, kind } => {
                let privilege = match kind {
                    Metastore => return false,
                    Catalog => Privilege::CreateCatalog,
                    Connection => Privilege::CreateConnection,
                    Schema => Privilege::CreateSchema,
                    Table | VectorIndex => Privilege::CreateTable,
                    View => Privilege::CreateView,
                    Function => Privilege::CreateFunction,
                    Volume => Privilege::CreateVolume,
                    RegisteredModel => Privilege::CreateModel,
                };
                let expected_parent = match kind {
                    Catalog | Connection => Metastore,
                    Schema => Catalog,
                    _ => Schema,
                };
                parent.kind() == expected_parent
                    && self.find(parent).is_some_and(|index| {
                        self.securables[index].reference.kind() == expected_parent
                            && self.holds(principal, index, privilege)
                            && self.usage_chain(principal, index, true)
                    })
            }
            Action::ReadMetadata(reference) => self.find(reference).is_some_and(|index| {
                self.holds(principal, index, Privilege::Browse)
                    || (self.usage_chain(principal, index, false)
                        && Privilege::ALL
                            .into_iter()
                            .any(|privilege| self.holds(principal, index, privilege)))
            }),
            Action::Manage(reference) => self
                .find(reference)
                .is_some_and(|index| self.may_manage(principal, index)),
            Action::UseWorkspaceObject { object, level } => {
                let Some(acl) = self.acls.get(object) else {
                    return false;
                };
                let levels = object.kind().levels();
                let rank = |level: PermissionLevel| {
                    levels.iter().position(|candidate| *candidate == level)
                };
                let Some(required) = rank(*level) else {
                    return false;
                };
                let groups = self.groups_of(principal);
                let admin_rank = self
                    .is_admin(principal)
                    .then(|| rank(PermissionLevel::CanManage))
                    .flatten();
                let acl_ranks = acl
                    .iter()
                    .filter(|(grantee, _)| groups.contains(grantee))
                    .filter_map(|(_, held)| rank(*held));
                admin_rank
                    .into_iter()
                    .chain(acl_ranks)
                    .any(|held| held >= required)
            }
            Action::CreateVectorSearchEndpoint => {
                self.is_admin(principal)
                    || self
                        .groups_of(principal)
                        .iter()
                        .any(|group| self.creators.contains(group))
            }
        }
    }

    fn effective(&self, principal: u64, index: usize) -> BTreeSet<(Privilege, Option<String>)> {
        let groups = self.groups_of(principal);
        let kind = self.securables[index].reference.kind();
        let mut out = BTreeSet::new();
        for ancestor in self.ancestors(index) {
            for group in &groups {
                for privilege in self.grants.get(&(ancestor, *group)).into_iter().flatten() {
                    if applies(kind, *privilege) {
                        let from = (ancestor != index)
                            .then(|| self.securables[ancestor].reference.full_name().to_owned());
                        out.insert((*privilege, from));
                    }
                }
            }
        }
        out
    }

    fn remove_principal(&mut self, id: u64) {
        self.principals.remove(&id);
        self.memberships
            .retain(|(member, group)| *member != id && *group != id);
        self.grants.retain(|(_, grantee), _| *grantee != id);
        for acl in self.acls.values_mut() {
            acl.remove(&id);
        }
        self.creators.remove(&id);
    }

    fn remove_subtree(&mut self, root: usize) {
        let doomed: Vec<usize> = (0..self.securables.len())
            .filter(|index| self.ancestors(*index).contains(&root))
            .collect();
        for index in doomed {
            self.securables[index].alive = false;
            self.grants.retain(|(securable, _), _| *securable != index);
        }
    }
}

/// One randomly generated world: shapes are indices reduced modulo the sizes they index.
#[derive(Debug, Clone)]
struct World {
    metastore_owner: usize,
    /// catalogs → schemas → object kinds
    tree: Vec<Vec<Vec<usize>>>,
    connections: usize,
    owners: Vec<usize>,
    memberships: Vec<(usize, usize)>,
    grants: Vec<(usize, usize, usize)>,
    acls: Vec<(usize, usize, usize)>,
    creators: Vec<usize>,
    mutations: Vec<Mutation>,
    drop_scope: bool,
}

#[derive(Debug, Clone)]
enum Mutation {
    Grant(usize, usize, usize),
    Revoke(usize, usize, usize),
    AddMember(usize, usize),
    RemoveMember(usize, usize),
    RemovePrincipal(usize),
    SetOwner(usize, usize),
    RemoveSecurable(usize),
}

const OBJECT_KINDS: [SecurableKind; 6] = [
    SecurableKind::Table,
    SecurableKind::View,
    SecurableKind::Function,
    SecurableKind::Volume,
    SecurableKind::RegisteredModel,
    SecurableKind::VectorIndex,
];

const WORKSPACE_OBJECTS: [(WorkspaceObjectKind, &str); 3] = [
    (WorkspaceObjectKind::ServingEndpoint, "ep"),
    (WorkspaceObjectKind::Warehouse, "wh"),
    (WorkspaceObjectKind::GenieSpace, "genie"),
];

fn mutation() -> impl Strategy<Value = Mutation> {
    let index = || 0..64usize;
    prop_oneof![
        3 => (index(), index(), index()).prop_map(|(a, b, c)| Mutation::Grant(a, b, c)),
        3 => (index(), index(), index()).prop_map(|(a, b, c)| Mutation::Revoke(a, b, c)),
        2 => (index(), index()).prop_map(|(a, b)| Mutation::AddMember(a, b)),
        2 => (index(), index()).prop_map(|(a, b)| Mutation::RemoveMember(a, b)),
        1 => index().prop_map(Mutation::RemovePrincipal),
        2 => (index(), index()).prop_map(|(a, b)| Mutation::SetOwner(a, b)),
        1 => index().prop_map(Mutation::RemoveSecurable),
    ]
}

fn world() -> impl Strategy<Value = World> {
    let objects = prop::collection::vec(0..OBJECT_KINDS.len(), 0..=3);
    let schemas = prop::collection::vec(objects, 1..=2);
    let tree = prop::collection::vec(schemas, 1..=2);
    (
        0..10usize,
        tree,
        0..=1usize,
        prop::collection::vec(0..8usize, 24),
        prop::collection::vec((0..4usize, 0..8usize), 0..10),
        prop::collection::vec((0..64usize, 0..8usize, 0..64usize), 0..30),
        prop::collection::vec((0..3usize, 0..8usize, 0..8usize), 0..6),
        prop::collection::vec(0..8usize, 0..2),
        prop::collection::vec(mutation(), 0..8),
        prop::bool::weighted(0.05),
    )
        .prop_map(
            |(
                metastore_owner,
                tree,
                connections,
                owners,
                memberships,
                grants,
                acls,
                creators,
                mutations,
                drop_scope,
            )| {
                World {
                    metastore_owner,
                    tree,
                    connections,
                    owners,
                    memberships,
                    grants,
                    acls,
                    creators,
                    mutations,
                    drop_scope,
                }
            },
        )
}

/// Builds the same world in the engine and in the model. Engine errors on generated mutations (e.g. granting to a
/// principal removed earlier) are legitimate; the model applies exactly the mutations the engine accepted.
fn build(world: &World) -> (Snapshot, Model) {
    let principals = all_principals();
    let pick = |index: usize| principals[index % principals.len()];
    // Index 8 and 9 pick a metastore owner that is not a registered principal (nobody is admin by ownership).
    let metastore_owner = principals
        .get(world.metastore_owner)
        .copied()
        .unwrap_or(STRANGER);
    let mut snapshot = Snapshot::new("ms", PrincipalId(metastore_owner)).unwrap();
    let mut model = Model {
        principals: BTreeMap::new(),
        memberships: BTreeSet::new(),
        securables: vec![ModelSecurable {
            reference: SecurableRef::new(SecurableKind::Metastore, "ms"),
            parent: None,
            owner: metastore_owner,
            alive: true,
        }],
        grants: BTreeMap::new(),
        acls: BTreeMap::new(),
        creators: BTreeSet::new(),
    };
    for id in USERS {
        let kind = if id == 4 {
            PrincipalType::ServicePrincipal
        } else {
            PrincipalType::User
        };
        snapshot
            .add_principal(PrincipalId(id), kind, &format!("u{id}"))
            .unwrap();
        model.principals.insert(id, kind);
    }
    for id in GROUPS {
        let name = if id == ADMINS_ID {
            "admins".to_owned()
        } else {
            format!("g{id}")
        };
        snapshot
            .add_principal(PrincipalId(id), PrincipalType::Group, &name)
            .unwrap();
        model.principals.insert(id, PrincipalType::Group);
    }
    for (group, member) in &world.memberships {
        let (group, member) = (GROUPS[*group], pick(*member));
        snapshot
            .add_member(PrincipalId(group), PrincipalId(member))
            .unwrap();
        model.memberships.insert((member, group));
    }
    let mut owners = world.owners.iter().cycle().map(|index| pick(*index));
    let mut add = |model: &mut Model, reference: SecurableRef, parent: usize| {
        let owner = owners.next().unwrap();
        snapshot
            .add_securable(&reference, PrincipalId(owner))
            .unwrap();
        model.securables.push(ModelSecurable {
            reference,
            parent: Some(parent),
            owner,
            alive: true,
        });
        model.securables.len() - 1
    };
    for (c, schemas) in world.tree.iter().enumerate() {
        let catalog = add(&mut model, SecurableRef::catalog(&format!("c{c}")), 0);
        for (s, objects) in schemas.iter().enumerate() {
            let schema = add(
                &mut model,
                SecurableRef::schema(&format!("c{c}.s{s}")),
                catalog,
            );
            for (o, kind) in objects.iter().enumerate() {
                add(
                    &mut model,
                    SecurableRef::new(OBJECT_KINDS[*kind], &format!("c{c}.s{s}.o{o}")),
                    schema,
                );
            }
        }
    }
    for n in 0..world.connections {
        add(
            &mut model,
            SecurableRef::new(SecurableKind::Connection, &format!("conn{n}")),
            0,
        );
    }
    for (securable, grantee, privilege) in &world.grants {
        apply(
            &mut snapshot,
            &mut model,
            &Mutation::Grant(*securable, *grantee, *privilege),
        );
    }
    for (object, grantee, level) in &world.acls {
        let (kind, id) = WORKSPACE_OBJECTS[*object];
        let reference = WorkspaceObjectRef::new(kind, id);
        let levels = kind.levels();
        let level = levels[*level % levels.len()];
        let grantee = pick(*grantee);
        let mut entries = model.acls.get(&reference).cloned().unwrap_or_default();
        entries.insert(grantee, level);
        let list: Vec<(PrincipalId, PermissionLevel)> = entries
            .iter()
            .map(|(principal, level)| (PrincipalId(*principal), *level))
            .collect();
        snapshot.set_object_acl(&reference, &list).unwrap();
        model.acls.insert(reference, entries);
    }
    let creators: Vec<u64> = world.creators.iter().map(|index| pick(*index)).collect();
    let creator_ids: Vec<PrincipalId> = creators.iter().copied().map(PrincipalId).collect();
    snapshot
        .set_vector_search_endpoint_creators(&creator_ids)
        .unwrap();
    model.creators = creators.into_iter().collect();
    for mutation in &world.mutations {
        apply(&mut snapshot, &mut model, mutation);
    }
    (snapshot, model)
}

fn apply(snapshot: &mut Snapshot, model: &mut Model, mutation: &Mutation) {
    let principals = all_principals();
    let pick = |index: usize| principals[index % principals.len()];
    let securable_at =
        |model: &Model, index: usize| model.securables[index % model.securables.len()].clone();
    match mutation {
        Mutation::Grant(securable, grantee, privilege)
        | Mutation::Revoke(securable, grantee, privilege) => {
            let target = securable_at(model, *securable);
            let options = applicable_list(target.reference.kind());
            let privilege = options[*privilege % options.len()];
            let grantee = pick(*grantee);
            let index = *securable % model.securables.len();
            if let Mutation::Grant(..) = mutation {
                if snapshot
                    .grant(&target.reference, PrincipalId(grantee), privilege.into())
                    .is_ok()
                {
                    model
                        .grants
                        .entry((index, grantee))
                        .or_default()
                        .insert(privilege);
                }
            } else if snapshot
                .revoke(&target.reference, PrincipalId(grantee), privilege.into())
                .is_ok()
                && let Some(held) = model.grants.get_mut(&(index, grantee))
            {
                held.remove(&privilege);
                if held.is_empty() {
                    model.grants.remove(&(index, grantee));
                }
            }
        }
        Mutation::AddMember(group, member) => {
            let (group, member) = (pick(*group), pick(*member));
            if snapshot
                .add_member(PrincipalId(group), PrincipalId(member))
                .is_ok()
            {
                model.memberships.insert((member, group));
            }
        }
        Mutation::RemoveMember(group, member) => {
            let (group, member) = (pick(*group), pick(*member));
            if snapshot
                .remove_member(PrincipalId(group), PrincipalId(member))
                .is_ok()
            {
                model.memberships.remove(&(member, group));
            }
        }
        Mutation::RemovePrincipal(principal) => {
            let principal = pick(*principal);
            if snapshot.remove_principal(PrincipalId(principal)).is_ok() {
                model.remove_principal(principal);
            }
        }
        Mutation::SetOwner(securable, owner) => {
            let index = *securable % model.securables.len();
            let owner = pick(*owner);
            if snapshot
                .set_owner(&model.securables[index].reference, PrincipalId(owner))
                .is_ok()
            {
                model.securables[index].owner = owner;
            }
        }
        Mutation::RemoveSecurable(securable) => {
            let index = *securable % model.securables.len();
            if snapshot
                .remove_securable(&model.securables[index].reference)
                .is_ok()
            {
                model.remove_subtree(index);
            }
        }
    }
}

fn actions(model: &Model) -> Vec<Action> {
    let mut actions = Vec::new();
    for securable in &model.securables {
        let reference = securable.reference.clone();
        actions.extend([
            Action::ReadTable(reference.clone()),
            Action::WriteTable(reference.clone()),
            Action::ExecuteFunction(reference.clone()),
            Action::ExecuteModel(reference.clone()),
            Action::ReadVolume(reference.clone()),
            Action::WriteVolume(reference.clone()),
            Action::UseConnection(reference.clone()),
            Action::ReadMetadata(reference.clone()),
            Action::Manage(reference.clone()),
        ]);
        // Creation of the kinds that can live directly under this securable, and one that cannot.
        let kinds: Vec<SecurableKind> = match reference.kind() {
            SecurableKind::Metastore => vec![
                SecurableKind::Catalog,
                SecurableKind::Connection,
                SecurableKind::Schema,
            ],
            SecurableKind::Catalog => vec![SecurableKind::Schema, SecurableKind::Table],
            SecurableKind::Schema => OBJECT_KINDS.to_vec(),
            _ => vec![SecurableKind::Table],
        };
        for kind in kinds {
            actions.push(Action::CreateIn {
                parent: reference.clone(),
                kind,
            });
        }
    }
    for (kind, id) in WORKSPACE_OBJECTS {
        for level in PermissionLevel::ALL {
            actions.push(Action::UseWorkspaceObject {
                object: WorkspaceObjectRef::new(kind, id),
                level,
            });
        }
    }
    actions.push(Action::CreateVectorSearchEndpoint);
    actions
}

fn proptest_cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(2000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: proptest_cases(), ..ProptestConfig::default() })]

    #[test]
    fn engine_agrees_with_the_reference_model(world in world()) {
        let (snapshot, model) = build(&world);
        let scopes = if world.drop_scope { ScopeSet::parse("catalog.tables").unwrap() } else { ScopeSet::all() };
        let requesters: Vec<u64> = all_principals().into_iter().chain([STRANGER]).collect();
        for action in actions(&model) {
            for principal in &requesters {
                let request = AccessRequest {
                    principal: PrincipalId(*principal),
                    token_scopes: scopes,
                    required_scope: ApiScope::SqlStatementExecution,
                    action: action.clone(),
                };
                let decision = decide(&request, &snapshot);
                prop_assert_eq!(
                    decision.is_allowed(),
                    model.allows(&request),
                    "principal {} action {:?}: engine says {}", principal, action, decision
                );
                prop_assert!(!decision.reasons.is_empty(), "a decision without reasons: {:?}", decision);
            }
        }
        for principal in all_principals() {
            if !model.principals.contains_key(&principal) {
                continue;
            }
            for (index, securable) in model.securables.iter().enumerate().filter(|(_, securable)| securable.alive) {
                let listed: BTreeSet<(Privilege, Option<String>)> =
                    effective_privileges(PrincipalId(principal), &securable.reference, &snapshot)
                        .unwrap()
                        .into_iter()
                        .map(|entry| (entry.privilege, entry.inherited_from.map(|from| from.full_name().to_owned())))
                        .collect();
                prop_assert_eq!(listed, model.effective(principal, index), "effective privileges of {} on {:?}", principal, securable.reference);
                let manage = decide(
                    &AccessRequest {
                        principal: PrincipalId(principal),
                        token_scopes: ScopeSet::all(),
                        required_scope: ApiScope::CatalogGrants,
                        action: Action::Manage(securable.reference.clone()),
                    },
                    &snapshot,
                );
                prop_assert_eq!(may_grant(PrincipalId(principal), &securable.reference, &snapshot), manage);
            }
        }
    }
}
