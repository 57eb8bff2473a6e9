//! Warm `ReadTable` checks: deputy-authz against Cedar on the same decisions.
//!
//! Run with `cargo bench -p deputy-authz`. It builds one metastore with 100,000 securables (20 catalogs, 1,000
//! schemas, 98,980 tables), 10,000 principals (9,500 users, 500 groups nested as a DAG, one of them `admins`) and
//! 1,000,000 grants, then times single-threaded checks for a mix of allowed and denied reads.
//!
//! How the comparison with Cedar is kept fair:
//! - Cedar gets one policy that states the same rules (admins; ownership of the table, schema or catalog;
//!   `USE_CATALOG`, `USE_SCHEMA` and `SELECT` at any level; `ALL_PRIVILEGES`), and grants as entity data: each
//!   catalog, schema and table entity carries its owner and one set of grantees per privilege. Cedar's cost grows
//!   with the number of policies, so one grant per policy (a million policies) would be a straw man.
//! - Cedar does not have to search a million grants: each sampled request gets its own entity slice holding only the
//!   requester, the groups it is transitively in, and the table, schema and catalog with all their grants. That
//!   favours Cedar; deputy answers from the full snapshot.
//! - Building entities and requests is not timed, only `Authorizer::is_authorized`. Deputy's timing includes the
//!   name lookup, the closure lookup and building the explained `Decision`.
//! - Group nesting is acyclic here because Cedar's entity store rejects hierarchy cycles (it enforces a DAG when
//!   computing the transitive closure); deputy accepts cycles, which the tests cover.
//! - Both engines answer every sampled request and the run prints how many decisions agree.

use std::collections::{HashMap, HashSet};
use std::error::Error;
use std::hint::black_box;
use std::str::FromStr;
use std::time::Instant;

use cedar_policy::{
    Authorizer, Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, PolicySet, Request,
    RestrictedExpression,
};
use deputy_authz::{
    AccessRequest, Action, PrincipalId, PrincipalType, Privilege, PrivilegeSet, SecurableRef,
    Snapshot, decide,
};
use deputy_core::{ApiScope, ScopeSet};

const USERS: usize = 9_500;
const GROUPS: usize = 500;
const CATALOGS: usize = 20;
const SCHEMAS_PER_CATALOG: usize = 50;
const SECURABLES: usize = 100_000;
const GRANTS: usize = 1_000_000;
const CATALOG_USE_GRANTS: usize = 150;
const SCHEMA_USE_GRANTS: usize = 100;
const SCHEMA_SELECT_GRANTS: usize = 5;
const REQUESTS: usize = 20_000;
const DEPUTY_ROUNDS: usize = 50;
const CEDAR_SAMPLE: usize = 2_000;
const CEDAR_ROUNDS: usize = 3;

/// SplitMix64: deterministic, dependency-free, good enough to spread data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn user_id(index: usize) -> PrincipalId {
    PrincipalId(1 + index as u64)
}

fn group_id(index: usize) -> PrincipalId {
    PrincipalId(100_000 + index as u64)
}

/// Who is granted: a user or a group, by index.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Grantee {
    User(usize),
    Group(usize),
}

impl Grantee {
    fn id(self) -> PrincipalId {
        match self {
            Grantee::User(index) => user_id(index),
            Grantee::Group(index) => group_id(index),
        }
    }
}

/// The generated world as plain data, shared by both engines.
struct World {
    user_groups: Vec<Vec<usize>>,
    group_parents: Vec<Vec<usize>>,
    group_users: Vec<Vec<usize>>,
    /// Securable index → (reference, parent index, owner).
    securables: Vec<(SecurableRef, Option<usize>, Grantee)>,
    first_table: usize,
    /// Securable index → its grants.
    grants: Vec<Vec<(Grantee, Privilege)>>,
}

impl World {
    fn generate(rng: &mut Rng) -> World {
        // Group 0 is `admins`; every other group may sit inside groups with a higher index, so nesting is a DAG.
        let mut group_parents = vec![Vec::new(); GROUPS];
        for (group, parents) in group_parents.iter_mut().enumerate().skip(1) {
            if group + 1 < GROUPS && rng.chance(50) {
                for _ in 0..1 + rng.below(2) {
                    let parent = group + 1 + rng.below(GROUPS - group - 1);
                    if !parents.contains(&parent) {
                        parents.push(parent);
                    }
                }
            }
        }
        let mut user_groups = vec![Vec::new(); USERS];
        let mut group_users = vec![Vec::new(); GROUPS];
        for (user, groups) in user_groups.iter_mut().enumerate() {
            let wanted = if user < 5 { 1 } else { 1 + rng.below(3) };
            for _ in 0..wanted {
                let group = if user < 5 {
                    0
                } else {
                    1 + rng.below(GROUPS - 1)
                };
                if !groups.contains(&group) {
                    groups.push(group);
                    group_users[group].push(user);
                }
            }
        }
        let random_group = |rng: &mut Rng| Grantee::Group(1 + rng.below(GROUPS - 1));
        let random_user = |rng: &mut Rng| Grantee::User(5 + rng.below(USERS - 5));
        let mut securables = Vec::with_capacity(SECURABLES);
        for catalog in 0..CATALOGS {
            securables.push((
                SecurableRef::catalog(&format!("cat{catalog}")),
                None,
                random_group(rng),
            ));
        }
        for catalog in 0..CATALOGS {
            for schema in 0..SCHEMAS_PER_CATALOG {
                let name = format!("cat{catalog}.sch{schema}");
                securables.push((SecurableRef::schema(&name), Some(catalog), random_user(rng)));
            }
        }
        let first_table = securables.len();
        let schemas = CATALOGS * SCHEMAS_PER_CATALOG;
        for table in 0..SECURABLES - first_table {
            let schema = table % schemas;
            let name = format!("{}.t{table}", securables[CATALOGS + schema].0.full_name());
            securables.push((
                SecurableRef::table(&name),
                Some(CATALOGS + schema),
                random_user(rng),
            ));
        }
        let mut grants = vec![Vec::new(); securables.len()];
        for catalog_grants in grants.iter_mut().take(CATALOGS) {
            for _ in 0..CATALOG_USE_GRANTS {
                catalog_grants.push((random_group(rng), Privilege::UseCatalog));
            }
        }
        for schema_grants in grants.iter_mut().skip(CATALOGS).take(schemas) {
            for _ in 0..SCHEMA_USE_GRANTS {
                schema_grants.push((random_group(rng), Privilege::UseSchema));
            }
            for _ in 0..SCHEMA_SELECT_GRANTS {
                schema_grants.push((random_group(rng), Privilege::Select));
            }
        }
        let so_far: usize = grants.iter().map(Vec::len).sum();
        let tables = securables.len() - first_table;
        for index in 0..GRANTS - so_far {
            let grantee = if rng.chance(70) {
                random_user(rng)
            } else {
                random_group(rng)
            };
            let privilege = match rng.below(10) {
                0..=5 => Privilege::Select,
                6..=8 => Privilege::Modify,
                _ => Privilege::AllPrivileges,
            };
            grants[first_table + index % tables].push((grantee, privilege));
        }
        World {
            user_groups,
            group_parents,
            group_users,
            securables,
            first_table,
            grants,
        }
    }

    fn snapshot(&self) -> Result<Snapshot, Box<dyn Error>> {
        // The metastore belongs to `admins`, so ownership of it adds no admin beyond the group's members.
        let mut snapshot = Snapshot::new("bench", group_id(0))?;
        for user in 0..USERS {
            snapshot.add_principal(user_id(user), PrincipalType::User, &format!("u{user}"))?;
        }
        for group in 0..GROUPS {
            let name = if group == 0 {
                "admins".to_owned()
            } else {
                format!("g{group}")
            };
            snapshot.add_principal(group_id(group), PrincipalType::Group, &name)?;
        }
        // Nest groups before adding users, so each nesting recomputes only group closures.
        for (group, parents) in self.group_parents.iter().enumerate() {
            for parent in parents {
                snapshot.add_member(group_id(*parent), group_id(group))?;
            }
        }
        for (user, groups) in self.user_groups.iter().enumerate() {
            for group in groups {
                snapshot.add_member(group_id(*group), user_id(user))?;
            }
        }
        for (reference, _, owner) in &self.securables {
            snapshot.add_securable(reference, owner.id())?;
        }
        for (index, grants) in self.grants.iter().enumerate() {
            for (grantee, privilege) in grants {
                snapshot.grant(
                    &self.securables[index].0,
                    grantee.id(),
                    PrivilegeSet::from(*privilege),
                )?;
            }
        }
        Ok(snapshot)
    }

    /// Three requests in four follow a `SELECT` or `ALL_PRIVILEGES` grant on the table to a user or a group member
    /// (allowed when the usage chain is there too); the fourth pairs a random user with a random table (almost
    /// always denied). The mix comes out at roughly half allowed.
    fn requests(&self, rng: &mut Rng) -> Vec<(usize, usize)> {
        let tables = self.securables.len() - self.first_table;
        (0..REQUESTS)
            .map(|index| {
                let table = self.first_table + rng.below(tables);
                let readers: Vec<Grantee> = self.grants[table]
                    .iter()
                    .filter(|(_, privilege)| *privilege != Privilege::Modify)
                    .map(|(grantee, _)| *grantee)
                    .collect();
                let follow_grant = index % 4 != 3 && !readers.is_empty();
                let user = match readers.get(rng.below(readers.len().max(1))) {
                    Some(Grantee::User(user)) if follow_grant => *user,
                    Some(Grantee::Group(group))
                        if follow_grant && !self.group_users[*group].is_empty() =>
                    {
                        let members = &self.group_users[*group];
                        members[rng.below(members.len())]
                    }
                    _ => rng.below(USERS),
                };
                (user, table)
            })
            .collect()
    }

    /// The groups `user` is in, transitively.
    fn closure(&self, user: usize) -> Vec<usize> {
        let mut seen: HashSet<usize> = HashSet::new();
        let mut stack: Vec<usize> = self.user_groups[user].clone();
        while let Some(group) = stack.pop() {
            if seen.insert(group) {
                stack.extend(self.group_parents[group].iter().copied());
            }
        }
        let mut groups: Vec<usize> = seen.into_iter().collect();
        groups.sort_unstable();
        groups
    }
}

const CEDAR_POLICY: &str = r#"
permit(principal, action == Action::"ReadTable", resource)
when {
  principal in Group::"g0" ||
  (
    (principal in resource.catalog.owner || principal in resource.catalog.use_catalog ||
     principal in resource.catalog.all_privileges) &&
    (principal in resource.catalog.owner || principal in resource.schema.owner ||
     principal in resource.catalog.use_schema || principal in resource.schema.use_schema ||
     principal in resource.catalog.all_privileges || principal in resource.schema.all_privileges) &&
    (principal in resource.catalog.owner || principal in resource.schema.owner || principal in resource.owner ||
     principal in resource.catalog.select || principal in resource.schema.select || principal in resource.select ||
     principal in resource.catalog.all_privileges || principal in resource.schema.all_privileges ||
     principal in resource.all_privileges)
  )
};
"#;

fn uid(type_name: &str, id: &str) -> Result<EntityUid, Box<dyn Error>> {
    Ok(EntityUid::from_type_name_and_id(
        EntityTypeName::from_str(type_name)?,
        EntityId::new(id),
    ))
}

fn grantee_uid(grantee: Grantee) -> Result<EntityUid, Box<dyn Error>> {
    match grantee {
        Grantee::User(user) => uid("User", &format!("u{user}")),
        Grantee::Group(group) => uid("Group", &format!("g{group}")),
    }
}

fn securable_type(reference: &SecurableRef) -> &'static str {
    match reference.kind() {
        deputy_authz::SecurableKind::Catalog => "Catalog",
        deputy_authz::SecurableKind::Schema => "Schema",
        _ => "Table",
    }
}

/// The securable as a Cedar entity: owner, one grantee set per privilege, and links to its schema and catalog.
fn securable_entity(world: &World, index: usize) -> Result<Entity, Box<dyn Error>> {
    let (reference, parent, owner) = &world.securables[index];
    let mut attributes: HashMap<String, RestrictedExpression> = HashMap::new();
    attributes.insert(
        "owner".into(),
        RestrictedExpression::new_entity_uid(grantee_uid(*owner)?),
    );
    let mut by_privilege: HashMap<&str, Vec<RestrictedExpression>> = HashMap::new();
    let attribute_names: &[&str] = match reference.kind() {
        deputy_authz::SecurableKind::Catalog => {
            &["use_catalog", "use_schema", "select", "all_privileges"]
        }
        deputy_authz::SecurableKind::Schema => &["use_schema", "select", "all_privileges"],
        _ => &["select", "all_privileges"],
    };
    for name in attribute_names {
        by_privilege.insert(name, Vec::new());
    }
    for (grantee, privilege) in &world.grants[index] {
        let name = match privilege {
            Privilege::UseCatalog => "use_catalog",
            Privilege::UseSchema => "use_schema",
            Privilege::Select => "select",
            Privilege::AllPrivileges => "all_privileges",
            _ => continue,
        };
        if let Some(set) = by_privilege.get_mut(name) {
            set.push(RestrictedExpression::new_entity_uid(grantee_uid(*grantee)?));
        }
    }
    for (name, members) in by_privilege {
        attributes.insert(name.to_owned(), RestrictedExpression::new_set(members));
    }
    if let Some(parent) = parent {
        let parent_ref = &world.securables[*parent].0;
        let parent_uid = uid(securable_type(parent_ref), parent_ref.full_name())?;
        let link = if parent_ref.kind() == deputy_authz::SecurableKind::Schema {
            "schema"
        } else {
            "catalog"
        };
        attributes.insert(
            link.into(),
            RestrictedExpression::new_entity_uid(parent_uid),
        );
        if let Some(grandparent) = world.securables[*parent].1 {
            let catalog = &world.securables[grandparent].0;
            attributes.insert(
                "catalog".into(),
                RestrictedExpression::new_entity_uid(uid("Catalog", catalog.full_name())?),
            );
        }
    }
    Ok(Entity::new(
        uid(securable_type(reference), reference.full_name())?,
        attributes,
        HashSet::new(),
    )?)
}

/// The Cedar request and its entity slice for `user` reading `table`.
fn cedar_case(
    world: &World,
    user: usize,
    table: usize,
) -> Result<(Request, Entities), Box<dyn Error>> {
    let mut entities = Vec::new();
    let user_parents: HashSet<EntityUid> = world.user_groups[user]
        .iter()
        .map(|group| grantee_uid(Grantee::Group(*group)))
        .collect::<Result<_, _>>()?;
    entities.push(Entity::new_no_attrs(
        grantee_uid(Grantee::User(user))?,
        user_parents,
    ));
    for group in world.closure(user) {
        let parents: HashSet<EntityUid> = world.group_parents[group]
            .iter()
            .map(|parent| grantee_uid(Grantee::Group(*parent)))
            .collect::<Result<_, _>>()?;
        entities.push(Entity::new_no_attrs(
            grantee_uid(Grantee::Group(group))?,
            parents,
        ));
    }
    let schema = world.securables[table].1.ok_or("table without schema")?;
    let catalog = world.securables[schema].1.ok_or("schema without catalog")?;
    for index in [table, schema, catalog] {
        entities.push(securable_entity(world, index)?);
    }
    let table_ref = &world.securables[table].0;
    let request = Request::new(
        grantee_uid(Grantee::User(user))?,
        uid("Action", "ReadTable")?,
        uid("Table", table_ref.full_name())?,
        Context::empty(),
        None,
    )?;
    Ok((request, Entities::from_entities(entities, None)?))
}

fn deputy_request(world: &World, user: usize, table: usize) -> AccessRequest {
    AccessRequest {
        principal: user_id(user),
        token_scopes: ScopeSet::all(),
        required_scope: ApiScope::SqlStatementExecution,
        action: Action::ReadTable(world.securables[table].0.clone()),
    }
}

/// CPU time of the calling thread in nanoseconds, from `/proc/thread-self/schedstat` (Linux). Wall time on a shared
/// two-core machine also counts other processes' turns; the CPU figure does not.
fn thread_cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

/// Nanoseconds per run of `body`, by the wall clock and by the thread's CPU time.
struct Timing {
    checks: usize,
    wall_ns: f64,
    cpu_ns: Option<f64>,
}

fn time(checks: usize, body: impl FnOnce()) -> Timing {
    let cpu_start = thread_cpu_ns();
    let start = Instant::now();
    body();
    let wall = start.elapsed().as_nanos() as f64;
    let cpu = cpu_start
        .zip(thread_cpu_ns())
        .map(|(from, to)| to.saturating_sub(from) as f64);
    Timing {
        checks,
        wall_ns: wall / checks as f64,
        cpu_ns: cpu.map(|cpu| cpu / checks as f64),
    }
}

/// Times `rounds` passes over `requests`; returns the timing and how many are allowed in one pass.
fn time_deputy(requests: &[AccessRequest], snapshot: &Snapshot, rounds: usize) -> (Timing, usize) {
    let allowed = requests
        .iter()
        .filter(|request| decide(request, snapshot).is_allowed())
        .count();
    let timing = time(requests.len() * rounds, || {
        for _ in 0..rounds {
            for request in requests {
                black_box(decide(black_box(request), snapshot));
            }
        }
    });
    (timing, allowed)
}

fn main() -> Result<(), Box<dyn Error>> {
    let started = Instant::now();
    let mut rng = Rng(0xDE9_u64);
    let world = World::generate(&mut rng);
    let built = Instant::now();
    let snapshot = world.snapshot()?;
    let grant_count: usize = world.grants.iter().map(Vec::len).sum();
    println!(
        "world: {} securables, {} principals, {} grants; snapshot built in {:.2} s",
        snapshot.securable_count() - 1,
        snapshot.principal_count(),
        grant_count,
        built.elapsed().as_secs_f64()
    );

    let groups_per_user = (0..USERS)
        .map(|user| world.closure(user).len())
        .sum::<usize>() as f64
        / USERS as f64;
    println!("groups per user, transitively: {groups_per_user:.1} on average");
    let pairs = world.requests(&mut rng);
    let requests: Vec<AccessRequest> = pairs
        .iter()
        .map(|(user, table)| deputy_request(&world, *user, *table))
        .collect();
    let (full, allowed) = time_deputy(&requests, &snapshot, DEPUTY_ROUNDS);
    let sample = &pairs[..CEDAR_SAMPLE];
    let sample_requests = &requests[..CEDAR_SAMPLE];
    let (on_sample, sample_allowed) = time_deputy(sample_requests, &snapshot, DEPUTY_ROUNDS * 10);
    // One allowed request repeated: everything it touches stays in cache, so this is the pure CPU cost.
    let hot_request = sample_requests
        .iter()
        .find(|request| decide(request, &snapshot).is_allowed())
        .ok_or("no allowed request in the sample")?;
    let (hot, _) = time_deputy(std::slice::from_ref(hot_request), &snapshot, 1_000_000);

    let policies = PolicySet::from_str(CEDAR_POLICY)?;
    let cases: Vec<(Request, Entities)> = sample
        .iter()
        .map(|(user, table)| cedar_case(&world, *user, *table))
        .collect::<Result<_, _>>()?;
    let authorizer = Authorizer::new();
    let mut agreements = 0;
    for ((request, entities), deputy_request) in cases.iter().zip(sample_requests) {
        let cedar_allows = authorizer
            .is_authorized(request, &policies, entities)
            .decision()
            == cedar_policy::Decision::Allow;
        if cedar_allows == decide(deputy_request, &snapshot).is_allowed() {
            agreements += 1;
        }
    }
    let cedar = time(cases.len() * CEDAR_ROUNDS, || {
        for _ in 0..CEDAR_ROUNDS {
            for (request, entities) in &cases {
                black_box(authorizer.is_authorized(black_box(request), &policies, entities));
            }
        }
    });

    println!();
    println!(
        "| engine | requests | checks timed | allowed | ns/check (wall) | ns/check (cpu) | checks/s (cpu) |"
    );
    println!("|---|---|---|---|---|---|---|");
    let row = |engine: &str, set: &str, timing: &Timing, allowed: String| {
        let cpu = timing.cpu_ns.unwrap_or(timing.wall_ns);
        println!(
            "| {engine} | {set} | {} | {allowed} | {:.0} | {cpu:.0} | {:.0} |",
            timing.checks,
            timing.wall_ns,
            1e9 / cpu
        );
    };
    row(
        "deputy",
        "full mix",
        &full,
        format!("{allowed}/{}", requests.len()),
    );
    row(
        "deputy",
        "cedar sample",
        &on_sample,
        format!("{sample_allowed}/{CEDAR_SAMPLE}"),
    );
    row("deputy", "one request, hot", &hot, "1/1".to_owned());
    row(
        "cedar 4.14",
        "cedar sample",
        &cedar,
        format!("{sample_allowed}/{CEDAR_SAMPLE}"),
    );
    println!();
    let speedup = |deputy: f64, cedar: f64| cedar / deputy;
    println!("agreements: {agreements}/{CEDAR_SAMPLE} sampled decisions identical");
    println!(
        "speedup on the same sample: {:.1}x by wall time, {:.1}x by cpu time (cedar ns / deputy ns)",
        speedup(on_sample.wall_ns, cedar.wall_ns),
        speedup(
            on_sample.cpu_ns.unwrap_or(on_sample.wall_ns),
            cedar.cpu_ns.unwrap_or(cedar.wall_ns)
        )
    );
    println!("total bench time: {:.1} s", started.elapsed().as_secs_f64());
    if agreements != CEDAR_SAMPLE {
        return Err(format!(
            "engines disagree on {} sampled decisions",
            CEDAR_SAMPLE - agreements
        )
        .into());
    }
    Ok(())
}
