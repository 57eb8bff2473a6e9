//! A securable's direct grants, shaped for the hot path.
//!
//! Entries are sorted by principal. Short lists (the usual handful on a table) are searched directly; lists longer
//! than [`INDEX_THRESHOLD`] (catalogs and schemas granted to many groups) also carry a hash index, so checking a
//! principal's closure against them costs one probe per closure member instead of one binary search each. A list
//! is immutable and shared: a change builds a new one in O(entries), index included.

use std::collections::HashMap;
use std::sync::Arc;

use rustc_hash::FxBuildHasher;

use crate::principal::PrincipalId;
use crate::privilege::{Privilege, PrivilegeSet};

/// Lists longer than this get a hash index.
const INDEX_THRESHOLD: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GrantEntry {
    pub(crate) principal: PrincipalId,
    pub(crate) privileges: PrivilegeSet,
}

#[derive(Debug, Clone)]
pub(crate) struct GrantList(Arc<GrantTable>);

#[derive(Debug)]
struct GrantTable {
    // INVARIANT: sorted by principal, one entry per principal, no empty set.
    entries: Box<[GrantEntry]>,
    // INVARIANT: `Some` exactly when `entries` is longer than `INDEX_THRESHOLD`, and then holds the same pairs.
    index: Option<HashMap<PrincipalId, PrivilegeSet, FxBuildHasher>>,
}

impl GrantList {
    pub(crate) fn empty() -> GrantList {
        GrantList::from_sorted(Vec::new())
    }

    fn from_sorted(entries: Vec<GrantEntry>) -> GrantList {
        let index = (entries.len() > INDEX_THRESHOLD).then(|| {
            entries
                .iter()
                .map(|entry| (entry.principal, entry.privileges))
                .collect()
        });
        GrantList(Arc::new(GrantTable {
            entries: entries.into_boxed_slice(),
            index,
        }))
    }

    pub(crate) fn entries(&self) -> &[GrantEntry] {
        &self.0.entries
    }

    fn privileges_of(&self, principal: PrincipalId) -> PrivilegeSet {
        let found = match &self.0.index {
            Some(index) => index.get(&principal).copied(),
            None => self
                .0
                .entries
                .binary_search_by_key(&principal, |entry| entry.principal)
                .ok()
                .and_then(|position| self.0.entries.get(position))
                .map(|entry| entry.privileges),
        };
        found.unwrap_or(PrivilegeSet::EMPTY)
    }

    /// The union of the privileges granted to any principal of the sorted `closure`. The shorter side is walked.
    pub(crate) fn granted_to_any(&self, closure: &[PrincipalId]) -> PrivilegeSet {
        let entries = self.entries();
        if entries.len() <= closure.len() {
            entries
                .iter()
                .filter(|entry| closure.binary_search(&entry.principal).is_ok())
                .fold(PrivilegeSet::EMPTY, |set, entry| {
                    set.union(entry.privileges)
                })
        } else {
            closure.iter().fold(PrivilegeSet::EMPTY, |set, principal| {
                set.union(self.privileges_of(*principal))
            })
        }
    }

    /// A principal of the sorted `closure` that holds `privilege` here, if any.
    pub(crate) fn holder_of(
        &self,
        closure: &[PrincipalId],
        privilege: Privilege,
    ) -> Option<PrincipalId> {
        let entries = self.entries();
        if entries.len() <= closure.len() {
            entries
                .iter()
                .find(|entry| {
                    entry.privileges.contains(privilege)
                        && closure.binary_search(&entry.principal).is_ok()
                })
                .map(|entry| entry.principal)
        } else {
            closure
                .iter()
                .copied()
                .find(|principal| self.privileges_of(*principal).contains(privilege))
        }
    }

    /// A copy with `principal`'s set replaced by `change(old set)`; the entry is dropped if it becomes empty.
    pub(crate) fn with_changed(
        &self,
        principal: PrincipalId,
        change: impl FnOnce(PrivilegeSet) -> PrivilegeSet,
    ) -> GrantList {
        let privileges = change(self.privileges_of(principal));
        let mut entries: Vec<GrantEntry> = Vec::with_capacity(self.entries().len() + 1);
        entries.extend(
            self.entries()
                .iter()
                .copied()
                .filter(|entry| entry.principal < principal),
        );
        if !privileges.is_empty() {
            entries.push(GrantEntry {
                principal,
                privileges,
            });
        }
        entries.extend(
            self.entries()
                .iter()
                .copied()
                .filter(|entry| entry.principal > principal),
        );
        GrantList::from_sorted(entries)
    }

    pub(crate) fn without(&self, principal: PrincipalId) -> GrantList {
        self.with_changed(principal, |_| PrivilegeSet::EMPTY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(pairs: &[(u64, Privilege)]) -> GrantList {
        pairs
            .iter()
            .fold(GrantList::empty(), |list, (principal, privilege)| {
                list.with_changed(PrincipalId(*principal), |held| held.with(*privilege))
            })
    }

    #[test]
    fn short_and_indexed_lists_answer_alike() {
        for size in [3_u64, INDEX_THRESHOLD as u64 + 10] {
            let pairs: Vec<(u64, Privilege)> = (0..size)
                .rev()
                .map(|n| {
                    (
                        n * 2,
                        if n % 2 == 0 {
                            Privilege::Select
                        } else {
                            Privilege::Modify
                        },
                    )
                })
                .collect();
            let grants = list(&pairs);
            assert_eq!(grants.0.index.is_some(), size as usize > INDEX_THRESHOLD);
            let principals: Vec<u64> = grants
                .entries()
                .iter()
                .map(|entry| entry.principal.0)
                .collect();
            assert!(
                principals.windows(2).all(|pair| pair[0] < pair[1]),
                "sorted and unique"
            );
            let closure = [PrincipalId(1), PrincipalId(2), PrincipalId(4)];
            assert_eq!(
                grants.granted_to_any(&closure),
                [Privilege::Select, Privilege::Modify].into_iter().collect()
            );
            assert_eq!(
                grants.holder_of(&closure, Privilege::Modify),
                Some(PrincipalId(2))
            );
            assert_eq!(grants.holder_of(&[PrincipalId(3)], Privilege::Select), None);
            let fewer = grants.without(PrincipalId(2));
            assert_eq!(fewer.granted_to_any(&closure), Privilege::Select.into());
            assert_eq!(fewer.entries().len(), grants.entries().len() - 1);
        }
    }
}
