//! The decision function and the explanations it returns.
//!
//! [`decide`] is pure and synchronous: a request and a snapshot in, a [`Decision`] out. It allows only when it can
//! name what allowed it (an admin status, an ownership, a grant or an ACL entry); everything else, including any
//! inconsistency it could stumble on, denies. A deny lists every missing piece, each a short sentence such as
//! `USE_SCHEMA on main.sales`.
//!
//! The rules, as Unity Catalog documents them:
//! - Privileges flow down the tree: the effective set on a securable is the union of the grants on it and on every
//!   ancestor, to the principal and to every group it is transitively in, with `ALL_PRIVILEGES` expanded to every
//!   privilege except `MANAGE`, then filtered to the privileges that apply to the securable's kind.
//! - An owner (or a member of an owning group) holds every privilege on what it owns and on everything below it.
//! - Reaching an object needs `USE_CATALOG` on its catalog and `USE_SCHEMA` on its schema as well; owning the
//!   object does not waive that, owning the catalog or schema does (for that catalog or schema and below).
//! - Admins (members of `admins`, or the metastore owner) may do everything.

use std::fmt;

use deputy_core::{ApiScope, ScopeSet};

use crate::principal::{PrincipalId, PrincipalRef};
use crate::privilege::{Privilege, PrivilegeSet};
use crate::securable::{SecurableKind, SecurableRef};
use crate::snapshot::{AdminBasis, AuthzError, PrincipalNode, SecurableNode, Snapshot};
use crate::workspace::{PermissionLevel, WorkspaceObjectRef};

/// One question to the engine: may this principal, holding a token with these scopes, do this?
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRequest {
    pub principal: PrincipalId,
    pub token_scopes: ScopeSet,
    /// The scope of the API route serving the request; the token must hold it.
    pub required_scope: ApiScope,
    pub action: Action,
}

/// What the principal wants to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `SELECT` on a table, view or vector index, plus the usage chain.
    ReadTable(SecurableRef),
    /// `MODIFY` on a table or vector index, plus the usage chain.
    WriteTable(SecurableRef),
    /// `EXECUTE` on a function, plus the usage chain.
    ExecuteFunction(SecurableRef),
    /// `EXECUTE` on a registered model, plus the usage chain.
    ExecuteModel(SecurableRef),
    /// `READ_VOLUME` on a volume, plus the usage chain.
    ReadVolume(SecurableRef),
    /// `WRITE_VOLUME` on a volume, plus the usage chain.
    WriteVolume(SecurableRef),
    /// `USE_CONNECTION` on a connection (connections hang off the metastore: no usage chain).
    UseConnection(SecurableRef),
    /// The matching `CREATE_*` on `parent`, plus the usage chain down to and including `parent`.
    CreateIn {
        parent: SecurableRef,
        kind: SecurableKind,
    },
    /// Seeing a securable's metadata: `BROWSE`, or the usage chain above it and any privilege on it.
    ReadMetadata(SecurableRef),
    /// Granting, revoking and changing the owner: see [`may_grant`].
    Manage(SecurableRef),
    /// At least `level` on a workspace object. Admins hold `CAN_MANAGE` on every object (inherited from the
    /// workspace root) but not a warehouse's `IS_OWNER`, which only an ACL entry gives.
    UseWorkspaceObject {
        object: WorkspaceObjectRef,
        level: PermissionLevel,
    },
    /// Vector search's `CAN_CREATE`.
    CreateVectorSearchEndpoint,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// The answer with its reasons. INVARIANT: never empty reasons; an allow's reasons name what allowed it, a deny's
/// what is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub effect: Effect,
    pub reasons: Vec<Reason>,
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        self.effect == Effect::Allow
    }

    fn allow(reasons: Vec<Reason>) -> Decision {
        Decision {
            effect: Effect::Allow,
            reasons,
        }
    }

    fn deny(reasons: Vec<Reason>) -> Decision {
        Decision {
            effect: Effect::Deny,
            reasons,
        }
    }

    fn deny_because(reason: Reason) -> Decision {
        Decision::deny(vec![reason])
    }
}

/// "allow: ..." or "deny: ..." followed by the reasons separated by "; ".
impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.effect {
            Effect::Allow => "allow: ",
            Effect::Deny => "deny: ",
        })?;
        for (index, reason) in self.reasons.iter().enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{reason}")?;
        }
        Ok(())
    }
}

/// Where a workspace-object permission level comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PermissionSource {
    /// An ACL entry for this principal or for one of its groups.
    Acl(PrincipalRef),
    /// Admins hold `CAN_MANAGE` on every object, inherited from the workspace root.
    WorkspaceRoot,
}

impl fmt::Display for PermissionSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PermissionSource::Acl(grantee) => write!(f, "granted to {grantee}"),
            PermissionSource::WorkspaceRoot => {
                f.write_str("inherited from the workspace root (admin)")
            }
        }
    }
}

/// One reason of a decision. The first five variants explain an allow, the rest a deny. Exhaustive on purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    Admin {
        principal: PrincipalRef,
        basis: AdminBasis,
    },
    /// `privilege` on `on` is held because `owner` owns `owned` (`on` itself or an ancestor).
    Owner {
        privilege: Privilege,
        on: SecurableRef,
        owned: SecurableRef,
        owner: PrincipalRef,
    },
    /// `privilege` on `on` is held through `granted` (the same privilege or `ALL_PRIVILEGES`) on `granted_on`.
    Granted {
        privilege: Privilege,
        on: SecurableRef,
        granted: Privilege,
        granted_on: SecurableRef,
        grantee: PrincipalRef,
    },
    LevelHeld {
        object: WorkspaceObjectRef,
        required: PermissionLevel,
        held: PermissionLevel,
        source: PermissionSource,
    },
    VectorSearchCreator {
        grantee: PrincipalRef,
    },
    ScopeNotInToken(ApiScope),
    PrincipalNotFound(PrincipalId),
    /// The securable does not exist, or is not of a kind the action applies to. Which one is not said.
    SecurableNotFound(SecurableRef),
    WorkspaceObjectNotFound(WorkspaceObjectRef),
    MissingPrivilege {
        privilege: Privilege,
        on: SecurableRef,
    },
    MissingAnyPrivilege {
        on: SecurableRef,
    },
    MissingManage {
        on: SecurableRef,
    },
    MissingLevel {
        object: WorkspaceObjectRef,
        level: PermissionLevel,
    },
    LevelNotApplicable {
        object: WorkspaceObjectRef,
        level: PermissionLevel,
    },
    CannotCreateIn {
        parent: SecurableRef,
        kind: SecurableKind,
    },
    MissingVectorSearchCreate,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Admin { principal, basis } => match basis {
                AdminBasis::AdminsGroup => {
                    write!(f, "{principal} is a metastore admin (member of admins)")
                }
                AdminBasis::MetastoreOwner => {
                    write!(f, "{principal} is a metastore admin (metastore owner)")
                }
            },
            Reason::Owner {
                privilege,
                on,
                owned,
                owner,
            } => write!(f, "{privilege} on {on}: {owner} owns {owned}"),
            Reason::Granted {
                privilege,
                on,
                granted,
                granted_on,
                grantee,
            } => write!(
                f,
                "{privilege} on {on}: {granted} on {granted_on} granted to {grantee}"
            ),
            Reason::LevelHeld {
                object,
                required,
                held,
                source,
            } => write!(f, "{required} on {object}: {held} {source}"),
            Reason::VectorSearchCreator { grantee } => {
                write!(
                    f,
                    "CAN_CREATE on vector-search endpoints granted to {grantee}"
                )
            }
            Reason::ScopeNotInToken(scope) => write!(f, "scope {scope} not in token"),
            Reason::PrincipalNotFound(id) => write!(f, "principal {id} not found"),
            Reason::SecurableNotFound(securable) => {
                write!(f, "{} {securable} not found", securable.kind().noun())
            }
            Reason::WorkspaceObjectNotFound(object) => write!(f, "{object} not found"),
            Reason::MissingPrivilege { privilege, on } => write!(f, "{privilege} on {on}"),
            Reason::MissingAnyPrivilege { on } => write!(f, "BROWSE or any privilege on {on}"),
            Reason::MissingManage { on } => write!(f, "MANAGE or ownership on {on}"),
            Reason::MissingLevel { object, level } => write!(f, "{level} on {object}"),
            Reason::LevelNotApplicable { object, level } => {
                write!(f, "{level} is not a permission level of {object}")
            }
            Reason::CannotCreateIn { parent, kind } => write!(
                f,
                "a {} cannot be created in {} {parent}",
                kind.noun(),
                parent.kind().noun()
            ),
            Reason::MissingVectorSearchCreate => {
                f.write_str("CAN_CREATE on vector-search endpoints")
            }
        }
    }
}

/// A privilege reaching a principal on a securable, for the `effective-permissions` API: `inherited_from` is `None`
/// for a grant on the securable itself, else the ancestor that carries the grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectivePrivilege {
    pub privilege: Privilege,
    pub inherited_from: Option<SecurableRef>,
}

/// A permission level reaching a principal on a workspace object (`all_permissions[]` of the permissions API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectivePermission {
    pub level: PermissionLevel,
    pub source: PermissionSource,
}

/// Decides a request. Default deny: only a named admin status, ownership, grant or ACL entry allows.
pub fn decide(request: &AccessRequest, snapshot: &Snapshot) -> Decision {
    if !request.token_scopes.contains(request.required_scope) {
        return Decision::deny_because(Reason::ScopeNotInToken(request.required_scope));
    }
    let Some(subject) = Subject::of(request.principal, snapshot) else {
        return Decision::deny_because(Reason::PrincipalNotFound(request.principal));
    };
    use SecurableKind::*;
    match &request.action {
        Action::ReadTable(table) => {
            subject.use_object(table, &[Table, View, VectorIndex], Privilege::Select)
        }
        Action::WriteTable(table) => {
            subject.use_object(table, &[Table, VectorIndex], Privilege::Modify)
        }
        Action::ExecuteFunction(function) => {
            subject.use_object(function, &[Function], Privilege::Execute)
        }
        Action::ExecuteModel(model) => {
            subject.use_object(model, &[RegisteredModel], Privilege::Execute)
        }
        Action::ReadVolume(volume) => subject.use_object(volume, &[Volume], Privilege::ReadVolume),
        Action::WriteVolume(volume) => {
            subject.use_object(volume, &[Volume], Privilege::WriteVolume)
        }
        Action::UseConnection(connection) => {
            subject.use_object(connection, &[Connection], Privilege::UseConnection)
        }
        Action::CreateIn { parent, kind } => subject.create_in(parent, *kind),
        Action::ReadMetadata(securable) => subject.read_metadata(securable),
        Action::Manage(securable) => subject.manage(securable),
        Action::UseWorkspaceObject { object, level } => {
            subject.use_workspace_object(object, *level)
        }
        Action::CreateVectorSearchEndpoint => subject.create_vector_search_endpoint(),
    }
}

/// Whether `principal` may grant and revoke privileges on `securable` and transfer its ownership: a metastore admin,
/// the owner of the securable or of any ancestor (the parent catalog or schema), or a holder of `MANAGE` on it or an
/// ancestor. `ALL_PRIVILEGES` does not count: it never includes `MANAGE`.
pub fn may_grant(
    principal: PrincipalId,
    securable: &SecurableRef,
    snapshot: &Snapshot,
) -> Decision {
    match Subject::of(principal, snapshot) {
        Some(subject) => subject.manage(securable),
        None => Decision::deny_because(Reason::PrincipalNotFound(principal)),
    }
}

/// The privileges that reach `principal` on `securable` through grants on it or its ancestors, to the principal or
/// its groups, filtered to those that apply to the securable's kind. Listed as granted (an `ALL_PRIVILEGES` grant
/// stays `ALL_PRIVILEGES`), nearest securable first. Ownership and admin status are not grants and are not listed:
/// [`decide`] and [`may_grant`] account for them.
pub fn effective_privileges(
    principal: PrincipalId,
    securable: &SecurableRef,
    snapshot: &Snapshot,
) -> Result<Vec<EffectivePrivilege>, AuthzError> {
    let subject =
        Subject::of(principal, snapshot).ok_or(AuthzError::PrincipalNotFound(principal))?;
    let lineage = Lineage::of(securable, snapshot)
        .ok_or_else(|| AuthzError::SecurableNotFound(securable.clone()))?;
    let applicable = PrivilegeSet::applicable_to(lineage.target().reference.kind());
    let mut privileges = Vec::new();
    for (depth, node) in lineage.nodes().enumerate() {
        let granted = node
            .grants
            .granted_to_any(subject.closure())
            .intersection(applicable);
        let inherited_from = (depth > 0).then(|| node.reference.clone());
        privileges.extend(granted.iter().map(|privilege| EffectivePrivilege {
            privilege,
            inherited_from: inherited_from.clone(),
        }));
    }
    Ok(privileges)
}

/// Every permission level reaching `principal` on a workspace object: one entry per ACL entry for the principal or
/// one of its groups, plus `CAN_MANAGE` from the workspace root for admins.
pub fn effective_permission_levels(
    principal: PrincipalId,
    object: &WorkspaceObjectRef,
    snapshot: &Snapshot,
) -> Result<Vec<EffectivePermission>, AuthzError> {
    let subject =
        Subject::of(principal, snapshot).ok_or(AuthzError::PrincipalNotFound(principal))?;
    let acl = snapshot
        .workspace_acl(object)
        .ok_or_else(|| AuthzError::WorkspaceObjectNotFound(object.clone()))?;
    let mut levels = Vec::new();
    if subject.admin.is_some() {
        levels.push(EffectivePermission {
            level: PermissionLevel::CanManage,
            source: PermissionSource::WorkspaceRoot,
        });
    }
    for entry in acl.iter().filter(|entry| subject.includes(entry.principal)) {
        if let Some(grantee) = snapshot.principal(entry.principal) {
            levels.push(EffectivePermission {
                level: entry.level,
                source: PermissionSource::Acl(grantee.clone()),
            });
        }
    }
    Ok(levels)
}

/// The object → schema → catalog → metastore chain is at most this deep.
const MAX_DEPTH: usize = 4;

/// A securable and its ancestors, target first. Fixed-size so a check allocates nothing until it explains.
struct Lineage<'s> {
    target: &'s SecurableNode,
    // INVARIANT: filled from the front; `nodes[0]` is `target`.
    nodes: [Option<&'s SecurableNode>; MAX_DEPTH],
}

impl<'s> Lineage<'s> {
    fn of(securable: &SecurableRef, snapshot: &'s Snapshot) -> Option<Lineage<'s>> {
        let target = snapshot.lookup(securable)?;
        let mut nodes = [None; MAX_DEPTH];
        let mut current = Some(target);
        for slot in nodes.iter_mut() {
            *slot = current;
            current = current
                .and_then(|node| node.parent)
                .and_then(|parent| snapshot.node(parent));
        }
        // INVARIANT: the tree is at most four deep; a longer chain would mean a broken snapshot, so refuse to decide.
        match current {
            Some(_) => None,
            None => Some(Lineage { target, nodes }),
        }
    }

    fn target(&self) -> &'s SecurableNode {
        self.target
    }

    fn nodes(&self) -> impl Iterator<Item = &'s SecurableNode> + '_ {
        self.nodes.iter().map_while(|node| *node)
    }

    fn node_at(&self, depth: usize) -> Option<&'s SecurableNode> {
        self.nodes.get(depth).copied().flatten()
    }
}

/// The principal asking, with what every check needs precomputed once.
struct Subject<'s> {
    snapshot: &'s Snapshot,
    node: &'s PrincipalNode,
    admin: Option<AdminBasis>,
}

/// Privileges needed at given depths of a lineage (0 = the target). At most the usage chain plus one.
#[derive(Default)]
struct Requirements {
    items: [Option<(usize, Privilege)>; MAX_DEPTH + 1],
}

impl Requirements {
    fn push(&mut self, depth: usize, privilege: Privilege) {
        if let Some(slot) = self.items.iter_mut().find(|slot| slot.is_none()) {
            *slot = Some((depth, privilege));
        }
    }

    fn iter(&self) -> impl Iterator<Item = (usize, Privilege)> + '_ {
        self.items.iter().flatten().copied()
    }

    /// `USE_CATALOG` and `USE_SCHEMA` for every catalog and schema in the lineage from depth `from` up, catalog first.
    fn usage_chain(lineage: &Lineage<'_>, from: usize) -> Requirements {
        let mut requirements = Requirements::default();
        let from_top = lineage.nodes.iter().enumerate().rev();
        for (depth, node) in from_top.filter_map(|(depth, slot)| Some((depth, (*slot)?))) {
            if depth < from {
                continue;
            }
            match node.reference.kind() {
                SecurableKind::Catalog => requirements.push(depth, Privilege::UseCatalog),
                SecurableKind::Schema => requirements.push(depth, Privilege::UseSchema),
                _ => {}
            }
        }
        requirements
    }
}

/// The effective privileges at each depth of a lineage, for one subject.
struct Effective {
    sets: [PrivilegeSet; MAX_DEPTH],
}

impl Effective {
    fn at(&self, depth: usize) -> PrivilegeSet {
        self.sets.get(depth).copied().unwrap_or(PrivilegeSet::EMPTY)
    }
}

impl<'s> Subject<'s> {
    fn of(principal: PrincipalId, snapshot: &'s Snapshot) -> Option<Subject<'s>> {
        let node = snapshot.principal_node(principal)?;
        Some(Subject {
            snapshot,
            node,
            admin: snapshot.admin_basis(&node.closure),
        })
    }

    fn closure(&self) -> &[PrincipalId] {
        &self.node.closure
    }

    fn includes(&self, principal: PrincipalId) -> bool {
        self.closure().binary_search(&principal).is_ok()
    }

    fn principal_ref(&self, id: PrincipalId) -> Option<PrincipalRef> {
        if id == self.node.reference.id {
            return Some(self.node.reference.clone());
        }
        self.snapshot.principal(id).cloned()
    }

    /// Effective privileges at every depth, computed top-down so each level adds its own grants and ownership to
    /// what it inherits.
    fn effective(&self, lineage: &Lineage<'_>) -> Effective {
        let mut sets = [PrivilegeSet::EMPTY; MAX_DEPTH];
        let mut inherited = PrivilegeSet::EMPTY;
        let mut owns_ancestor_or_self = self.admin.is_some();
        for (depth, slot) in lineage.nodes.iter().enumerate().rev() {
            let Some(node) = slot else { continue };
            // Once the subject owns an ancestor (or is an admin) grants no longer matter: skip their lookups.
            owns_ancestor_or_self = owns_ancestor_or_self || self.includes(node.owner);
            if !owns_ancestor_or_self {
                inherited = inherited.union(node.grants.granted_to_any(self.closure()));
            }
            let effective = if owns_ancestor_or_self {
                PrivilegeSet::all()
            } else {
                inherited
                    .expand_all_privileges()
                    .intersection(PrivilegeSet::applicable_to(node.reference.kind()))
            };
            if let Some(set) = sets.get_mut(depth) {
                *set = effective;
            }
        }
        Effective { sets }
    }

    fn use_object(
        &self,
        securable: &SecurableRef,
        kinds: &[SecurableKind],
        privilege: Privilege,
    ) -> Decision {
        let Some(lineage) = self.lineage_of_kind(securable, kinds) else {
            return Decision::deny_because(Reason::SecurableNotFound(securable.clone()));
        };
        let mut requirements = Requirements::usage_chain(&lineage, 0);
        requirements.push(0, privilege);
        self.check(&lineage, &requirements)
    }

    fn create_in(&self, parent: &SecurableRef, kind: SecurableKind) -> Decision {
        let privilege = match creation_privilege(kind) {
            Some(privilege) if kind.parent_kind() == Some(parent.kind()) => privilege,
            _ => {
                return Decision::deny_because(Reason::CannotCreateIn {
                    parent: parent.clone(),
                    kind,
                });
            }
        };
        let Some(lineage) = self.lineage_of_kind(parent, &[parent.kind()]) else {
            return Decision::deny_because(Reason::SecurableNotFound(parent.clone()));
        };
        let mut requirements = Requirements::usage_chain(&lineage, 0);
        requirements.push(0, privilege);
        self.check(&lineage, &requirements)
    }

    fn read_metadata(&self, securable: &SecurableRef) -> Decision {
        let Some(lineage) = Lineage::of(securable, self.snapshot) else {
            return Decision::deny_because(Reason::SecurableNotFound(securable.clone()));
        };
        let effective = self.effective(&lineage);
        let on_target = effective.at(0);
        let mut requirements = Requirements::default();
        if on_target.contains(Privilege::Browse) {
            requirements.push(0, Privilege::Browse);
            return self.explain(&lineage, &requirements);
        }
        requirements = Requirements::usage_chain(&lineage, 1);
        let mut missing = self.missing(&lineage, &effective, &requirements);
        match on_target.iter().next() {
            Some(any) if missing.is_empty() => {
                requirements.push(0, any);
                self.explain(&lineage, &requirements)
            }
            Some(_) => Decision::deny(missing),
            None => {
                missing.push(Reason::MissingAnyPrivilege {
                    on: lineage.target().reference.clone(),
                });
                Decision::deny(missing)
            }
        }
    }

    fn manage(&self, securable: &SecurableRef) -> Decision {
        let Some(lineage) = Lineage::of(securable, self.snapshot) else {
            return Decision::deny_because(Reason::SecurableNotFound(securable.clone()));
        };
        let on = &lineage.target().reference;
        if let Some(reason) = self.admin_reason() {
            return Decision::allow(vec![reason]);
        }
        let by_ownership = lineage.nodes().find(|node| self.includes(node.owner));
        let by_grant = || {
            lineage.nodes().find_map(|node| {
                self.grant_holding(node, Privilege::Manage)
                    .map(|grantee| (node, grantee))
            })
        };
        let reason = match by_ownership {
            Some(node) => self.principal_ref(node.owner).map(|owner| Reason::Owner {
                privilege: Privilege::Manage,
                on: on.clone(),
                owned: node.reference.clone(),
                owner,
            }),
            None => by_grant().map(|(node, grantee)| Reason::Granted {
                privilege: Privilege::Manage,
                on: on.clone(),
                granted: Privilege::Manage,
                granted_on: node.reference.clone(),
                grantee,
            }),
        };
        match reason {
            Some(reason) => Decision::allow(vec![reason]),
            None => Decision::deny_because(Reason::MissingManage { on: on.clone() }),
        }
    }

    fn use_workspace_object(
        &self,
        object: &WorkspaceObjectRef,
        level: PermissionLevel,
    ) -> Decision {
        let Some(acl) = self.snapshot.workspace_acl(object) else {
            return Decision::deny_because(Reason::WorkspaceObjectNotFound(object.clone()));
        };
        let kind = object.kind();
        let Some(required_rank) = kind.rank(level) else {
            return Decision::deny_because(Reason::LevelNotApplicable {
                object: object.clone(),
                level,
            });
        };
        let from_admin = self
            .admin
            .map(|_| (PermissionLevel::CanManage, PermissionSource::WorkspaceRoot));
        let from_acl = acl
            .iter()
            .filter(|entry| self.includes(entry.principal))
            .filter_map(|entry| {
                let grantee = self.principal_ref(entry.principal)?;
                Some((entry.level, PermissionSource::Acl(grantee)))
            });
        let best = from_admin
            .into_iter()
            .chain(from_acl)
            .filter_map(|(held, source)| kind.rank(held).map(|rank| (rank, held, source)))
            .fold(
                None::<(usize, PermissionLevel, PermissionSource)>,
                |best, candidate| match best {
                    Some(current) if current.0 >= candidate.0 => Some(current),
                    _ => Some(candidate),
                },
            );
        match best {
            Some((rank, held, source)) if rank >= required_rank => {
                Decision::allow(vec![Reason::LevelHeld {
                    object: object.clone(),
                    required: level,
                    held,
                    source,
                }])
            }
            _ => Decision::deny_because(Reason::MissingLevel {
                object: object.clone(),
                level,
            }),
        }
    }

    fn create_vector_search_endpoint(&self) -> Decision {
        if let Some(reason) = self.admin_reason() {
            return Decision::allow(vec![reason]);
        }
        let creator = self
            .closure()
            .iter()
            .find(|principal| self.snapshot.vector_search_creators().contains(*principal))
            .and_then(|principal| self.principal_ref(*principal));
        match creator {
            Some(grantee) => Decision::allow(vec![Reason::VectorSearchCreator { grantee }]),
            None => Decision::deny_because(Reason::MissingVectorSearchCreate),
        }
    }

    /// The lineage of `securable` if it exists and is one of `kinds`; otherwise `None`, so a kind mismatch reads as
    /// "not found" and says nothing about what else carries that name.
    fn lineage_of_kind(
        &self,
        securable: &SecurableRef,
        kinds: &[SecurableKind],
    ) -> Option<Lineage<'s>> {
        Lineage::of(securable, self.snapshot)
            .filter(|lineage| kinds.contains(&lineage.target().reference.kind()))
    }

    fn missing(
        &self,
        lineage: &Lineage<'_>,
        effective: &Effective,
        requirements: &Requirements,
    ) -> Vec<Reason> {
        requirements
            .iter()
            .filter(|(depth, privilege)| !effective.at(*depth).contains(*privilege))
            .filter_map(|(depth, privilege)| {
                lineage.node_at(depth).map(|node| Reason::MissingPrivilege {
                    privilege,
                    on: node.reference.clone(),
                })
            })
            .collect()
    }

    fn check(&self, lineage: &Lineage<'_>, requirements: &Requirements) -> Decision {
        let effective = self.effective(lineage);
        let missing = self.missing(lineage, &effective, requirements);
        if missing.is_empty() {
            self.explain(lineage, requirements)
        } else {
            Decision::deny(missing)
        }
    }

    /// Names what grants each requirement. If any requirement cannot be explained, the snapshot contradicts the
    /// effective sets just computed; deny rather than allow on an unexplained privilege.
    fn explain(&self, lineage: &Lineage<'_>, requirements: &Requirements) -> Decision {
        if let Some(reason) = self.admin_reason() {
            return Decision::allow(vec![reason]);
        }
        let mut reasons = Vec::with_capacity(MAX_DEPTH);
        for (depth, privilege) in requirements.iter() {
            match self.explain_one(lineage, depth, privilege) {
                Some(reason) => reasons.push(reason),
                None => {
                    let on = lineage.node_at(depth).unwrap_or_else(|| lineage.target());
                    return Decision::deny_because(Reason::MissingPrivilege {
                        privilege,
                        on: on.reference.clone(),
                    });
                }
            }
        }
        Decision::allow(reasons)
    }

    /// The nearest source of `privilege` at `depth`: at each level from the securable up, ownership first, then a
    /// grant of the privilege itself, then `ALL_PRIVILEGES`.
    fn explain_one(
        &self,
        lineage: &Lineage<'_>,
        depth: usize,
        privilege: Privilege,
    ) -> Option<Reason> {
        let on = &lineage.node_at(depth)?.reference;
        lineage.nodes().skip(depth).find_map(|node| {
            if self.includes(node.owner) {
                return Some(Reason::Owner {
                    privilege,
                    on: on.clone(),
                    owned: node.reference.clone(),
                    owner: self.principal_ref(node.owner)?,
                });
            }
            let exact = self
                .grant_holding(node, privilege)
                .map(|grantee| (privilege, grantee));
            let via_all = || {
                (privilege != Privilege::Manage)
                    .then(|| self.grant_holding(node, Privilege::AllPrivileges))
                    .flatten()
                    .map(|grantee| (Privilege::AllPrivileges, grantee))
            };
            exact
                .or_else(via_all)
                .map(|(granted, grantee)| Reason::Granted {
                    privilege,
                    on: on.clone(),
                    granted,
                    granted_on: node.reference.clone(),
                    grantee,
                })
        })
    }

    /// A principal of the closure holding `privilege` directly on `node`.
    fn grant_holding(&self, node: &SecurableNode, privilege: Privilege) -> Option<PrincipalRef> {
        node.grants
            .holder_of(self.closure(), privilege)
            .and_then(|principal| self.principal_ref(principal))
    }

    fn admin_reason(&self) -> Option<Reason> {
        Some(Reason::Admin {
            principal: self.node.reference.clone(),
            basis: self.admin?,
        })
    }
}

/// The privilege that creating a securable of `kind` needs on its parent; `None` for the metastore, which is never
/// created.
fn creation_privilege(kind: SecurableKind) -> Option<Privilege> {
    Some(match kind {
        SecurableKind::Metastore => return None,
        SecurableKind::Catalog => Privilege::CreateCatalog,
        SecurableKind::Connection => Privilege::CreateConnection,
        SecurableKind::Schema => Privilege::CreateSchema,
        SecurableKind::Table | SecurableKind::VectorIndex => Privilege::CreateTable,
        SecurableKind::View => Privilege::CreateView,
        SecurableKind::Function => Privilege::CreateFunction,
        SecurableKind::Volume => Privilege::CreateVolume,
        SecurableKind::RegisteredModel => Privilege::CreateModel,
    })
}
