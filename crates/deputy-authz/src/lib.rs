//! Deputy's one explainable decision engine: Unity Catalog privileges, workspace-object ACLs and token scopes.
//!
//! **Architecture invariant:** the engine knows nothing about HTTP, SQL, storage or tokio. It is pure data and
//! synchronous functions: [`decide`] takes an [`AccessRequest`] and a [`Snapshot`] and returns a [`Decision`] with
//! its reasons. Other crates (the server, the SQL engine) translate their own requests into [`Action`]s.
//!
//! **Architecture invariant:** default deny. A decision allows only when it can name the admin status, ownership,
//! grant or ACL entry that allows it; a missing scope, an unknown principal or securable, or an inconsistency denies.
//!
//! **Architecture invariant:** core types are not `Serialize`; the server converts them to the wire format at its
//! edge (names via [`Privilege::wire_name`], [`SecurableKind::name`], [`PermissionLevel::wire_name`]).
//!
//! State lives in an immutable [`Snapshot`] (persistent maps, cheap to copy and change) published through
//! [`AuthzState`], which swaps whole snapshots atomically so readers never see half a change.

mod decide;
mod grants;
mod principal;
mod privilege;
mod securable;
mod snapshot;
mod state;
mod workspace;

pub use decide::{
    AccessRequest, Action, Decision, Effect, EffectivePermission, EffectivePrivilege,
    PermissionSource, Reason, decide, effective_permission_levels, effective_privileges, may_grant,
};
pub use principal::{PrincipalId, PrincipalRef, PrincipalType};
pub use privilege::{Privilege, PrivilegeParseError, PrivilegeSet};
pub use securable::{MAX_NAME_LENGTH, NameError, SecurableKind, SecurableRef, validate_name};
pub use snapshot::{ADMINS_GROUP, AdminBasis, AuthzError, Snapshot};
pub use state::AuthzState;
pub use workspace::{PermissionLevel, WorkspaceObjectKind, WorkspaceObjectRef};
