//! Workspace objects with their own access-control lists: serving endpoints, SQL warehouses, vector-search endpoints
//! and Genie spaces.
//!
//! Each kind has its own ordered permission levels; holding a level implies every lower level of the same kind.
//! `CAN_CREATE` of vector search is not a level on an endpoint: it is a workspace-wide entitlement to create endpoints
//! (see [`crate::Snapshot::set_vector_search_endpoint_creators`]), because a permission on an object that does not
//! exist yet cannot live in that object's ACL. [`crate::Snapshot::set_object_acl`] refuses it on an endpoint.

use std::fmt;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkspaceObjectKind {
    ServingEndpoint,
    Warehouse,
    VectorSearchEndpoint,
    GenieSpace,
}

impl WorkspaceObjectKind {
    pub const ALL: [WorkspaceObjectKind; 4] = [
        WorkspaceObjectKind::ServingEndpoint,
        WorkspaceObjectKind::Warehouse,
        WorkspaceObjectKind::VectorSearchEndpoint,
        WorkspaceObjectKind::GenieSpace,
    ];

    /// The `object_type` of the permissions API.
    pub fn name(self) -> &'static str {
        match self {
            WorkspaceObjectKind::ServingEndpoint => "serving-endpoint",
            WorkspaceObjectKind::Warehouse => "warehouse",
            WorkspaceObjectKind::VectorSearchEndpoint => "vector-search-endpoint",
            WorkspaceObjectKind::GenieSpace => "genie-space",
        }
    }

    /// The levels of this kind, lowest first. A level's rank is its index here.
    pub fn levels(self) -> &'static [PermissionLevel] {
        use PermissionLevel::*;
        match self {
            WorkspaceObjectKind::ServingEndpoint => &[CanView, CanQuery, CanManage],
            WorkspaceObjectKind::Warehouse => &[CanView, CanMonitor, CanUse, CanManage, IsOwner],
            WorkspaceObjectKind::VectorSearchEndpoint => &[CanUse, CanManage],
            WorkspaceObjectKind::GenieSpace => &[CanView, CanRun, CanEdit, CanManage],
        }
    }

    /// The rank of `level` within this kind, `None` if the kind has no such level.
    pub fn rank(self, level: PermissionLevel) -> Option<usize> {
        self.levels()
            .iter()
            .position(|candidate| *candidate == level)
    }
}

impl fmt::Display for WorkspaceObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PermissionLevel {
    CanView,
    CanQuery,
    CanMonitor,
    CanUse,
    CanRun,
    CanEdit,
    CanManage,
    IsOwner,
    CanCreate,
}

impl PermissionLevel {
    pub const ALL: [PermissionLevel; 9] = [
        PermissionLevel::CanView,
        PermissionLevel::CanQuery,
        PermissionLevel::CanMonitor,
        PermissionLevel::CanUse,
        PermissionLevel::CanRun,
        PermissionLevel::CanEdit,
        PermissionLevel::CanManage,
        PermissionLevel::IsOwner,
        PermissionLevel::CanCreate,
    ];

    pub fn wire_name(self) -> &'static str {
        match self {
            PermissionLevel::CanView => "CAN_VIEW",
            PermissionLevel::CanQuery => "CAN_QUERY",
            PermissionLevel::CanMonitor => "CAN_MONITOR",
            PermissionLevel::CanUse => "CAN_USE",
            PermissionLevel::CanRun => "CAN_RUN",
            PermissionLevel::CanEdit => "CAN_EDIT",
            PermissionLevel::CanManage => "CAN_MANAGE",
            PermissionLevel::IsOwner => "IS_OWNER",
            PermissionLevel::CanCreate => "CAN_CREATE",
        }
    }

    pub fn from_wire_name(name: &str) -> Option<PermissionLevel> {
        PermissionLevel::ALL
            .into_iter()
            .find(|level| level.wire_name() == name)
    }
}

impl fmt::Display for PermissionLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.wire_name())
    }
}

/// A workspace object named by kind and id (serving endpoints are keyed by `id`, not name, in the permissions API).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkspaceObjectRef {
    kind: WorkspaceObjectKind,
    id: Arc<str>,
}

impl WorkspaceObjectRef {
    pub fn new(kind: WorkspaceObjectKind, id: &str) -> WorkspaceObjectRef {
        WorkspaceObjectRef {
            kind,
            id: Arc::from(id),
        }
    }

    pub fn kind(&self) -> WorkspaceObjectKind {
        self.kind
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

/// "serving-endpoint ep-123".
impl fmt::Display for WorkspaceObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.id)
    }
}

impl fmt::Debug for WorkspaceObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_ordered_per_kind() {
        use PermissionLevel::*;
        let serving = WorkspaceObjectKind::ServingEndpoint;
        assert!(serving.rank(CanView) < serving.rank(CanQuery));
        assert!(serving.rank(CanQuery) < serving.rank(CanManage));
        assert_eq!(serving.rank(CanRun), None);
        let warehouse = WorkspaceObjectKind::Warehouse;
        assert!(warehouse.rank(CanMonitor) < warehouse.rank(CanUse));
        assert!(warehouse.rank(CanManage) < warehouse.rank(IsOwner));
        assert_eq!(
            WorkspaceObjectKind::VectorSearchEndpoint.rank(CanCreate),
            None
        );
        let genie = WorkspaceObjectKind::GenieSpace;
        assert!(genie.rank(CanRun) < genie.rank(CanEdit));
        for kind in WorkspaceObjectKind::ALL {
            assert!(
                kind.rank(CanManage).is_some(),
                "{kind} must have CAN_MANAGE for admins"
            );
        }
    }

    #[test]
    fn level_names_round_trip() {
        for level in PermissionLevel::ALL {
            assert_eq!(
                PermissionLevel::from_wire_name(level.wire_name()),
                Some(level)
            );
        }
        assert_eq!(PermissionLevel::from_wire_name("can_view"), None);
    }
}
