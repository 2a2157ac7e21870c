//! Meta's messages, its handler and its typed client.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tessera_rpc::{Client, Payload, Service, Transport};

use crate::store::{Change, MetaStore, Outcome};
use crate::types::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MetaRequest {
    /// Walks a path from the root in one round trip.
    Resolve(Vec<String>),
    /// The directory holding a path and what is there now, if anything.
    ResolveParent(Vec<String>),
    /// The inode at a path and, for a directory, its entries with their
    /// inodes (a listing in one round trip).
    List(Vec<String>),
    Lookup {
        parent: u64,
        name: String,
    },
    GetAttr(u64),
    ReadDir(u64),
    Ring,
    /// Objects that have waited for GC at least `min_age_ns` by meta's clock.
    GcList {
        limit: u32,
        min_age_ns: i64,
    },
    Counts,
    /// Everything a WebDAV request needs to know about a path first.
    View {
        path: Vec<String>,
        want: ViewWant,
        /// Whether to bring the dead properties (PROPFIND wants them).
        props: bool,
    },
    /// The live WebDAV locks around a path.
    Locks(Vec<String>),
    Change(Change),
    /// A change made on behalf of `origin` (a gateway or mount), which its
    /// events in the change feed carry.
    ChangeAs {
        origin: u64,
        change: Change,
        /// Answer once committed, before it is durable (see
        /// [`Change::may_be_lazy`]; ignored for other changes).
        lazy: bool,
    },
    GetXattr {
        ino: u64,
        name: Vec<u8>,
    },
    ListXattr(u64),
    GetLock {
        ino: u64,
        lock: FileLock,
    },
    /// The change feed from sequence number `since` (0: from now on),
    /// waiting up to `wait_ms` (at most 30 s) while there is nothing new.
    Watch {
        since: u64,
        wait_ms: u32,
    },
    /// A datanode's heartbeat: it holds `slot` as `node_id`.
    NodeBeat {
        slot: u32,
        node_id: String,
        report: crate::health::NodeReport,
    },
    /// A gateway's (or mount's) heartbeat.
    GatewayBeat {
        id: u64,
        blocked_writes: u64,
    },
    /// Every slot with its state, and what gateways reported.
    Health,
    /// Up to `limit` queued repairs of `slot` (of every slot: `None`).
    Repairs {
        slot: Option<u32>,
        limit: u32,
    },
    /// Up to `limit` objects held by files, in inode order after `after`.
    Objects {
        after: u64,
        limit: u32,
    },
    /// Asks every datanode for a scrub pass now; answers its number.
    Scrub,
    /// Like `GcList`, each with the slots that deleted it, leaving out
    /// those that wait only for datanodes that are down.
    GcDue {
        limit: u32,
        min_age_ns: i64,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MetaReply {
    Inode(Inode),
    Parent(Inode, Option<Inode>),
    Listing(Inode, Option<Vec<(String, Inode)>>),
    Entries(Vec<(String, Inode)>),
    Ring(Ring),
    Gc(Vec<GcEntry>),
    Counts { inodes: u64, gc: u64, leases: u64 },
    View(Box<DavView>),
    Locks(Vec<LockInfo>),
    Outcome(Outcome),
    Xattr(Vec<u8>),
    Names(Vec<Vec<u8>>),
    FileLock(Option<FileLock>),
    Events(Events),
    Noted,
    Health(Box<crate::health::ClusterHealth>),
    Beat(crate::health::BeatReply),
    Repairs(Vec<RepairEntry>),
    Objects(Vec<LiveObject>),
    Scrub(u64),
    GcDue(Vec<GcDue>),
}

pub type MetaResponse = Result<MetaReply, MetaError>;

/// The handler: plain async calls on the store, testable without sockets.
pub struct MetaService {
    store: MetaStore,
}

impl MetaService {
    pub fn new(store: MetaStore) -> Self {
        MetaService { store }
    }
}

impl Service for MetaService {
    type Request = MetaRequest;
    type Response = MetaResponse;
    const NAME: &'static str = "meta";

    fn call_name(req: &MetaRequest) -> &'static str {
        match req {
            MetaRequest::Resolve(_) => "resolve",
            MetaRequest::ResolveParent(_) => "resolve_parent",
            MetaRequest::List(_) => "list",
            MetaRequest::Lookup { .. } => "lookup",
            MetaRequest::GetAttr(_) => "getattr",
            MetaRequest::ReadDir(_) => "readdir",
            MetaRequest::Ring => "ring",
            MetaRequest::GcList { .. } => "gc_list",
            MetaRequest::Counts => "counts",
            MetaRequest::View { .. } => "view",
            MetaRequest::Locks(_) => "locks",
            MetaRequest::Change(_) | MetaRequest::ChangeAs { .. } => "change",
            MetaRequest::GetXattr { .. } => "getxattr",
            MetaRequest::ListXattr(_) => "listxattr",
            MetaRequest::GetLock { .. } => "getlock",
            MetaRequest::Watch { .. } => "watch",
            MetaRequest::NodeBeat { .. } => "node_beat",
            MetaRequest::GatewayBeat { .. } => "gateway_beat",
            MetaRequest::Health => "health",
            MetaRequest::Repairs { .. } => "repairs",
            MetaRequest::Objects { .. } => "objects",
            MetaRequest::Scrub => "scrub",
            MetaRequest::GcDue { .. } => "gc_due",
        }
    }

    async fn handle(&self, req: MetaRequest, payload: Bytes) -> (MetaResponse, Payload) {
        if !payload.is_empty() {
            return (
                Err(MetaError::Invalid("meta calls carry no payload".into())),
                vec![],
            );
        }
        (self.handle_request(req).await, vec![])
    }
}

impl MetaService {
    /// Answers one request (no sockets involved).
    pub async fn handle_request(&self, req: MetaRequest) -> MetaResponse {
        let s = &self.store;
        s.counters()
            .calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(match req {
            MetaRequest::Resolve(path) => MetaReply::Inode(s.resolve(path).await?),
            MetaRequest::ResolveParent(path) => {
                let (parent, existing) = s.resolve_parent(path).await?;
                MetaReply::Parent(parent, existing)
            }
            MetaRequest::List(path) => {
                let (inode, entries) = s.list(path).await?;
                MetaReply::Listing(inode, entries)
            }
            MetaRequest::Lookup { parent, name } => MetaReply::Inode(s.lookup(parent, name).await?),
            MetaRequest::GetAttr(ino) => MetaReply::Inode(s.getattr(ino).await?),
            MetaRequest::ReadDir(ino) => MetaReply::Entries(s.readdir(ino).await?),
            MetaRequest::Ring => {
                let mut ring = s.ring().await?;
                ring.down = s.health().down_slots(&ring);
                ring.rebuilding = s.health().slots_in(&ring, crate::NodeState::Rebuilding);
                MetaReply::Ring(ring)
            }
            MetaRequest::GcList { limit, min_age_ns } => {
                MetaReply::Gc(s.gc_list(limit.min(10_000) as usize, min_age_ns).await?)
            }
            MetaRequest::Counts => {
                let (inodes, gc, leases) = s.counts().await?;
                MetaReply::Counts { inodes, gc, leases }
            }
            MetaRequest::View { path, want, props } => {
                MetaReply::View(Box::new(s.view(path, want, props).await?))
            }
            MetaRequest::Locks(path) => MetaReply::Locks(s.locks(path).await?),
            MetaRequest::Change(c) => {
                let registering = match &c {
                    Change::Register { node_id, .. } => Some(node_id.clone()),
                    _ => None,
                };
                let outcome = s.apply(c).await?;
                if let (Some(node_id), Outcome::Slot(slot)) = (registering, &outcome) {
                    s.health().registered(*slot, &node_id);
                }
                MetaReply::Outcome(outcome)
            }
            MetaRequest::ChangeAs {
                origin,
                change,
                lazy,
            } => {
                let lazy = lazy && change.may_be_lazy();
                MetaReply::Outcome(s.apply_with(origin, lazy, change).await?)
            }
            MetaRequest::GetXattr { ino, name } => MetaReply::Xattr(s.get_xattr(ino, name).await?),
            MetaRequest::ListXattr(ino) => MetaReply::Names(s.list_xattr(ino).await?),
            MetaRequest::GetLock { ino, lock } => MetaReply::FileLock(s.get_lock(ino, lock).await?),
            MetaRequest::Watch { since, wait_ms } => MetaReply::Events(
                s.watch(since, Duration::from_millis(u64::from(wait_ms.min(30_000))))
                    .await,
            ),
            MetaRequest::NodeBeat {
                slot,
                node_id,
                report,
            } => {
                let ring = s.ring().await?;
                match ring.slots.iter().find(|r| r.slot == slot) {
                    Some(r) if r.node_id == node_id => {
                        s.health().node_beat(slot, &node_id, report);
                        let repairs = s.repairs(Some(slot), 1).await?.len() as u64;
                        MetaReply::Beat(crate::health::BeatReply {
                            repairs,
                            scrub: s.health().scrub_requested(),
                        })
                    }
                    Some(r) => {
                        return Err(MetaError::Invalid(format!(
                            "slot {slot} is held by node {} now, not {node_id}",
                            r.node_id
                        )));
                    }
                    None => {
                        return Err(MetaError::Invalid(format!("the ring has no slot {slot}")));
                    }
                }
            }
            MetaRequest::GatewayBeat { id, blocked_writes } => {
                s.health().gateway_beat(id, blocked_writes);
                MetaReply::Noted
            }
            MetaRequest::Health => {
                let ring = s.ring().await?;
                let mut health = s.health().cluster(&ring);
                for (slot, n) in s.under_replicated(ring.settings.replicas).await? {
                    if let Some(node) = health.nodes.iter_mut().find(|h| h.slot == slot) {
                        node.under_replicated = n;
                    }
                    health.under_replicated_blocks += n;
                }
                MetaReply::Health(Box::new(health))
            }
            MetaRequest::Repairs { slot, limit } => {
                MetaReply::Repairs(s.repairs(slot, limit.min(10_000) as usize).await?)
            }
            MetaRequest::Objects { after, limit } => {
                MetaReply::Objects(s.live_objects(after, limit.min(10_000) as usize).await?)
            }
            MetaRequest::Scrub => MetaReply::Scrub(s.health().request_scrub()),
            MetaRequest::GcDue { limit, min_age_ns } => {
                let ring = s.ring().await?;
                let slots = ring.width();
                let down = s.health().down_slots(&ring);
                let limit = limit.min(10_000) as usize;
                MetaReply::GcDue(s.gc_due(limit, min_age_ns, slots, down).await?)
            }
        })
    }
}

/// A failed call to meta: either meta answered with an error, or it could
/// not be reached.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("metadata service unreachable: {0}")]
    Rpc(#[from] tessera_rpc::Error),
    #[error("metadata service gave an unexpected reply to {0}")]
    Unexpected(&'static str),
}

/// The typed client gateways and datanodes use.
#[derive(Clone)]
pub struct MetaClient {
    rpc: Client<MetaService>,
    /// Who this client's changes are made for, in the change feed (0: nobody).
    origin: u64,
    /// Ask for names and attributes to be changed lazily (see
    /// [`Change::may_be_lazy`]): a FUSE mount, like a local file system,
    /// makes them durable on fsync.
    lazy: bool,
}

/// Default per-call timeout for meta calls.
pub const META_TIMEOUT: Duration = Duration::from_secs(10);

macro_rules! expect {
    ($reply:expr, $pat:pat => $out:expr, $what:literal) => {
        match $reply {
            $pat => Ok($out),
            _ => Err(CallError::Unexpected($what)),
        }
    };
    ($reply:expr, $($pat:pat => $out:expr),+; $what:literal) => {
        match $reply {
            $($pat => Ok($out),)+
            _ => Err(CallError::Unexpected($what)),
        }
    };
}

impl MetaClient {
    pub fn new(transport: &Transport, addr: &str) -> Self {
        MetaClient {
            rpc: transport.client(addr, META_TIMEOUT),
            origin: 0,
            lazy: false,
        }
    }

    /// The same client, asking for lazy changes where meta allows them.
    pub fn lazy(mut self) -> Self {
        self.lazy = true;
        self
    }

    /// Returns once every change committed so far is durable.
    pub async fn sync(&self) -> Result<(), CallError> {
        expect!(self.call(MetaRequest::Change(Change::Sync)).await?, MetaReply::Outcome(Outcome::Done) => (), "sync")
    }

    /// The same client, its changes tagged with `origin` in the change feed
    /// (so that their maker can skip its own).
    pub fn with_origin(mut self, origin: u64) -> Self {
        self.origin = origin;
        self
    }

    pub fn addr(&self) -> &str {
        self.rpc.peer()
    }

    pub async fn call(&self, req: MetaRequest) -> Result<MetaReply, CallError> {
        Ok(self.rpc.call(&req).await??)
    }

    pub async fn resolve(&self, components: Vec<String>) -> Result<Inode, CallError> {
        expect!(self.call(MetaRequest::Resolve(components)).await?, MetaReply::Inode(i) => i, "resolve")
    }

    pub async fn lookup(&self, parent: u64, name: &str) -> Result<Inode, CallError> {
        let req = MetaRequest::Lookup {
            parent,
            name: name.to_string(),
        };
        expect!(self.call(req).await?, MetaReply::Inode(i) => i, "lookup")
    }

    pub async fn getattr(&self, ino: u64) -> Result<Inode, CallError> {
        expect!(self.call(MetaRequest::GetAttr(ino)).await?, MetaReply::Inode(i) => i, "getattr")
    }

    pub async fn readdir(&self, ino: u64) -> Result<Vec<(String, Inode)>, CallError> {
        expect!(self.call(MetaRequest::ReadDir(ino)).await?, MetaReply::Entries(e) => e, "readdir")
    }

    /// Reports this datanode alive, holding `slot` as `node_id`.
    pub async fn node_beat(
        &self,
        slot: u32,
        node_id: &str,
        report: crate::health::NodeReport,
    ) -> Result<crate::health::BeatReply, CallError> {
        let req = MetaRequest::NodeBeat {
            slot,
            node_id: node_id.to_string(),
            report,
        };
        expect!(self.call(req).await?, MetaReply::Beat(b) => b, "node heartbeat")
    }

    /// Up to `limit` queued repairs of `slot` (of every slot: `None`).
    pub async fn repairs(
        &self,
        slot: Option<u32>,
        limit: u32,
    ) -> Result<Vec<RepairEntry>, CallError> {
        let req = MetaRequest::Repairs { slot, limit };
        expect!(self.call(req).await?, MetaReply::Repairs(r) => r, "repairs")
    }

    /// Queues repairs of replicas that missed acknowledged writes.
    pub async fn need_repair(&self, ranges: Vec<RepairRange>) -> Result<(), CallError> {
        self.change_done(Change::NeedRepair { ranges }).await
    }

    /// These repairs are done (see [`RepairEntry::seq`]).
    pub async fn repair_done(&self, done: Vec<RepairEntry>) -> Result<(), CallError> {
        self.change_done(Change::RepairDone { done }).await
    }

    /// Up to `limit` objects held by files, in inode order after `after`.
    pub async fn objects(&self, after: u64, limit: u32) -> Result<Vec<LiveObject>, CallError> {
        let req = MetaRequest::Objects { after, limit };
        expect!(self.call(req).await?, MetaReply::Objects(o) => o, "objects")
    }

    /// Asks every datanode for a scrub pass now; returns its number.
    pub async fn request_scrub(&self) -> Result<u64, CallError> {
        expect!(self.call(MetaRequest::Scrub).await?, MetaReply::Scrub(n) => n, "scrub")
    }

    /// Reports this gateway alive, with its writes blocked now.
    pub async fn gateway_beat(&self, id: u64, blocked_writes: u64) -> Result<(), CallError> {
        let req = MetaRequest::GatewayBeat { id, blocked_writes };
        expect!(self.call(req).await?, MetaReply::Noted => (), "gateway heartbeat")
    }

    /// Every slot with its state.
    pub async fn health(&self) -> Result<crate::health::ClusterHealth, CallError> {
        expect!(self.call(MetaRequest::Health).await?, MetaReply::Health(h) => *h, "health")
    }

    pub async fn ring(&self) -> Result<Ring, CallError> {
        expect!(self.call(MetaRequest::Ring).await?, MetaReply::Ring(r) => r, "ring")
    }

    /// The directory holding `components` and what is there now.
    pub async fn resolve_parent(
        &self,
        components: Vec<String>,
    ) -> Result<(Inode, Option<Inode>), CallError> {
        expect!(self.call(MetaRequest::ResolveParent(components)).await?, MetaReply::Parent(p, e) => (p, e), "resolve parent")
    }

    /// The inode at `components` and, for a directory, its entries.
    pub async fn list(
        &self,
        components: Vec<String>,
    ) -> Result<(Inode, Option<Vec<(String, Inode)>>), CallError> {
        expect!(self.call(MetaRequest::List(components)).await?, MetaReply::Listing(i, e) => (i, e), "list")
    }

    /// Up to `limit` objects queued for GC at least `min_age` ago (meta's clock).
    pub async fn gc_list(&self, limit: u32, min_age: Duration) -> Result<Vec<GcEntry>, CallError> {
        let req = MetaRequest::GcList {
            limit,
            min_age_ns: min_age.as_nanos().min(i64::MAX as u128) as i64,
        };
        expect!(self.call(req).await?, MetaReply::Gc(g) => g, "gc list")
    }

    /// (inodes, objects waiting for GC, live id leases)
    pub async fn counts(&self) -> Result<(u64, u64, u64), CallError> {
        expect!(self.call(MetaRequest::Counts).await?, MetaReply::Counts { inodes, gc, leases } => (inodes, gc, leases), "counts")
    }

    async fn change(&self, change: Change) -> Result<Outcome, CallError> {
        let lazy = self.lazy && change.may_be_lazy();
        let req = if self.origin == 0 && !lazy {
            MetaRequest::Change(change)
        } else {
            MetaRequest::ChangeAs {
                origin: self.origin,
                change,
                lazy,
            }
        };
        expect!(self.call(req).await?, MetaReply::Outcome(o) => o, "change")
    }

    /// A change that yields an inode.
    async fn change_inode(&self, change: Change) -> Result<Inode, CallError> {
        expect!(self.change(change).await?, Outcome::Inode(i) => i, "change (inode)")
    }

    async fn change_done(&self, change: Change) -> Result<(), CallError> {
        expect!(self.change(change).await?, Outcome::Done => (), "change")
    }

    /// One look at a path for a WebDAV request (see [`DavView`]).
    pub async fn view(
        &self,
        path: Vec<String>,
        want: ViewWant,
        props: bool,
    ) -> Result<DavView, CallError> {
        expect!(self.call(MetaRequest::View { path, want, props }).await?, MetaReply::View(v) => *v, "view")
    }

    /// The live WebDAV locks around a path.
    pub async fn locks(&self, path: Vec<String>) -> Result<Vec<LockInfo>, CallError> {
        expect!(self.call(MetaRequest::Locks(path)).await?, MetaReply::Locks(l) => l, "locks")
    }

    /// Takes a WebDAV lock; `MetaError::Locked` names a conflicting one.
    pub async fn lock(&self, req: LockRequest) -> Result<LockInfo, CallError> {
        expect!(self.change(Change::Lock(req)).await?, Outcome::Lock(l) => l, "lock")
    }

    /// Releases lock `token` covering `path`, as `principal`.
    pub async fn unlock(
        &self,
        path: &str,
        token: &str,
        principal: Option<&str>,
    ) -> Result<(), CallError> {
        self.change_done(Change::Unlock {
            path: path.to_string(),
            token: token.to_string(),
            principal: principal.map(str::to_string),
        })
        .await
    }

    pub async fn refresh_lock(
        &self,
        path: &str,
        token: &str,
        timeout_s: u64,
        principal: Option<&str>,
    ) -> Result<LockInfo, CallError> {
        let change = Change::RefreshLock {
            path: path.to_string(),
            token: token.to_string(),
            timeout_s,
            principal: principal.map(str::to_string),
        };
        expect!(self.change(change).await?, Outcome::Lock(l) => l, "refresh lock")
    }

    /// Drops the locks on `path` and below.
    pub async fn drop_locks(&self, path: &str) -> Result<(), CallError> {
        self.change_done(Change::DropLocks {
            path: path.to_string(),
        })
        .await
    }

    /// Sets and removes dead properties of `ino` in one change (see
    /// [`Change::PatchProps`]).
    pub async fn patch_props(
        &self,
        ino: u64,
        patch: Vec<(bool, DeadProp)>,
        mtime: Option<i64>,
    ) -> Result<(), CallError> {
        self.change_done(Change::PatchProps { ino, patch, mtime })
            .await
    }

    pub async fn copy_props(&self, from: u64, to: u64) -> Result<(), CallError> {
        self.change_done(Change::CopyProps { from, to }).await
    }

    /// Registers datanode `node_id` at `addr` (taking `slot`, or the next
    /// free one); returns its slot.
    pub async fn register(
        &self,
        node_id: &str,
        addr: &str,
        slot: Option<u32>,
    ) -> Result<u32, CallError> {
        let change = Change::Register {
            node_id: node_id.to_string(),
            addr: addr.to_string(),
            slot,
        };
        expect!(self.change(change).await?, Outcome::Slot(s) => s, "register")
    }

    /// Creates `parent/name` (or returns what is there, unless `exclusive`).
    pub async fn create(&self, new: NewNode) -> Result<Inode, CallError> {
        Ok(self.create_in(new).await?.0)
    }

    /// Like [`MetaClient::create`], with the directory as the create left
    /// it (`None` when the name was there already and nothing changed).
    pub async fn create_in(&self, new: NewNode) -> Result<(Inode, Option<Inode>), CallError> {
        let change = Change::Create {
            parent: new.parent,
            name: new.name,
            kind: new.kind,
            mode: new.mode,
            uid: new.uid,
            gid: new.gid,
            target: new.target,
            seed: new.seed,
            exclusive: new.exclusive,
        };
        expect!(self.change(change).await?,
            Outcome::Entry { inode, dir } => (inode, Some(dir)),
            Outcome::Inode(i) => (i, None); "create")
    }

    pub async fn unlink(&self, parent: u64, name: &str) -> Result<(), CallError> {
        self.unlink_held(parent, name, None).await.map(drop)
    }

    /// Unlinks `parent/name`; if that was its last name and `hold` names
    /// a session that has it open, meta keeps it until that session
    /// [`forget`](MetaClient::forget)s it. Returns the node and the
    /// directory as the unlink left them.
    pub async fn unlink_held(
        &self,
        parent: u64,
        name: &str,
        hold: Option<u64>,
    ) -> Result<(Inode, Inode), CallError> {
        let change = Change::Unlink {
            parent,
            name: name.to_string(),
            hold,
        };
        expect!(self.change(change).await?, Outcome::Entry { inode, dir } => (inode, dir), "unlink")
    }

    /// A new name for file `ino` (a hard link).
    pub async fn link(
        &self,
        ino: u64,
        new_parent: u64,
        new_name: &str,
    ) -> Result<Inode, CallError> {
        self.change_inode(Change::Link {
            ino,
            new_parent,
            new_name: new_name.to_string(),
        })
        .await
    }

    /// Creates or renews mount session `session` for `ttl`.
    pub async fn renew_session(&self, session: u64, ttl: Duration) -> Result<(), CallError> {
        self.change_done(Change::RenewSession {
            session,
            ttl_ns: ttl.as_nanos().min(i64::MAX as u128) as i64,
        })
        .await
    }

    /// Ends mount session `session`: its locks and orphans go.
    pub async fn end_session(&self, session: u64) -> Result<(), CallError> {
        self.change_done(Change::EndSession { session }).await
    }

    /// `session` closed its last handle of `ino`: an orphan it holds goes.
    pub async fn forget(&self, ino: u64, session: u64) -> Result<(), CallError> {
        self.change_done(Change::Forget { ino, session }).await
    }

    pub async fn set_xattr(
        &self,
        ino: u64,
        name: &[u8],
        value: &[u8],
        mode: XattrMode,
    ) -> Result<(), CallError> {
        self.change_done(Change::SetXattr {
            ino,
            name: name.to_vec(),
            value: value.to_vec(),
            mode,
        })
        .await
    }

    pub async fn remove_xattr(&self, ino: u64, name: &[u8]) -> Result<(), CallError> {
        self.change_done(Change::RemoveXattr {
            ino,
            name: name.to_vec(),
        })
        .await
    }

    pub async fn get_xattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>, CallError> {
        let req = MetaRequest::GetXattr {
            ino,
            name: name.to_vec(),
        };
        expect!(self.call(req).await?, MetaReply::Xattr(v) => v, "get_xattr")
    }

    pub async fn list_xattr(&self, ino: u64) -> Result<Vec<Vec<u8>>, CallError> {
        expect!(self.call(MetaRequest::ListXattr(ino)).await?, MetaReply::Names(n) => n, "list_xattr")
    }

    /// Takes, changes or releases a byte range lock (see `Change::SetLock`).
    pub async fn set_lock(&self, ino: u64, lock: FileLock) -> Result<(), CallError> {
        self.change_done(Change::SetLock { ino, lock }).await
    }

    /// The lock of another owner that would keep `lock` from being taken.
    pub async fn get_lock(&self, ino: u64, lock: FileLock) -> Result<Option<FileLock>, CallError> {
        expect!(self.call(MetaRequest::GetLock { ino, lock }).await?, MetaReply::FileLock(l) => l, "get_lock")
    }

    pub async fn release_locks(
        &self,
        ino: u64,
        session: u64,
        owner: Option<u64>,
    ) -> Result<(), CallError> {
        self.change_done(Change::ReleaseLocks {
            ino,
            session,
            owner,
        })
        .await
    }

    /// The change feed from `since` (0: from now), waiting up to `wait`.
    pub async fn watch(&self, since: u64, wait: Duration) -> Result<Events, CallError> {
        let wait = wait.min(Duration::from_secs(30));
        let rpc = self.rpc.with_timeout(wait + META_TIMEOUT);
        let req = MetaRequest::Watch {
            since,
            wait_ms: wait.as_millis() as u32,
        };
        expect!(rpc.call(&req).await??, MetaReply::Events(e) => e, "watch")
    }

    pub async fn rmdir(&self, parent: u64, name: &str) -> Result<(), CallError> {
        self.rmdir_in(parent, name).await.map(drop)
    }

    /// Removes the empty directory `parent/name`; returns `parent` as the
    /// removal left it.
    pub async fn rmdir_in(&self, parent: u64, name: &str) -> Result<Inode, CallError> {
        self.change_inode(Change::Rmdir {
            parent,
            name: name.to_string(),
        })
        .await
    }

    /// Moves `parent/name` to `new_parent/new_name` atomically.
    pub async fn rename(
        &self,
        (parent, name): (u64, &str),
        (new_parent, new_name): (u64, &str),
        no_replace: bool,
    ) -> Result<Inode, CallError> {
        let flags = RenameFlags {
            no_replace,
            ..RenameFlags::default()
        };
        self.rename_with((parent, name), (new_parent, new_name), flags)
            .await
    }

    /// A rename with renameat2's flags (and an orphan `hold`).
    pub async fn rename_with(
        &self,
        (parent, name): (u64, &str),
        (new_parent, new_name): (u64, &str),
        flags: RenameFlags,
    ) -> Result<Inode, CallError> {
        self.change_inode(Change::Rename {
            parent,
            name: name.to_string(),
            new_parent,
            new_name: new_name.to_string(),
            flags,
        })
        .await
    }

    pub async fn setattr(&self, ino: u64, attr: SetAttr) -> Result<Inode, CallError> {
        self.change_inode(Change::SetAttr { ino, attr }).await
    }

    /// Grows `ino` to `size` if its content is still `object`, under
    /// `holder`'s write lease, which ends.
    pub async fn resize(
        &self,
        ino: u64,
        object: u64,
        size: u64,
        holder: u64,
    ) -> Result<Inode, CallError> {
        self.change_inode(Change::Resize {
            ino,
            object,
            size,
            holder,
        })
        .await
    }

    /// Leases `count` fresh object ids (see [`Change::LeaseObjects`]).
    pub async fn lease_objects(&self, count: u64) -> Result<ObjectLease, CallError> {
        expect!(self.change(Change::LeaseObjects { count }).await?,
            Outcome::Lease { first, count, generation, width } => ObjectLease { first, count, generation, width },
            "lease objects")
    }

    /// Takes or renews `holder`'s write lease of `ino` for a write that may
    /// reach `end` (see [`Change::BeginWrite`]).
    pub async fn begin_write(
        &self,
        ino: u64,
        end: u64,
        holder: u64,
        ttl: Duration,
    ) -> Result<WriteGrant, CallError> {
        let ttl_ns = ttl.as_nanos().min(i64::MAX as u128) as i64;
        let change = Change::BeginWrite {
            ino,
            end,
            holder,
            ttl_ns,
        };
        expect!(self.change(change).await?,
            Outcome::Write { generation, dirty_end } => WriteGrant { generation, dirty_end },
            "begin write")
    }

    /// Ends `holder`'s write lease of `ino` after a failed write.
    pub async fn end_write(&self, ino: u64, holder: u64) -> Result<(), CallError> {
        self.change_done(Change::EndWrite { ino, holder }).await
    }

    /// Keeps the pending upload of `object` alive (see [`Change::RenewUpload`]).
    pub async fn renew_upload(&self, object: u64) -> Result<(), CallError> {
        self.change_done(Change::RenewUpload { object }).await
    }

    /// Records a write into `object` (the file's, or adopted by an empty
    /// file) that ended at `end`.
    pub async fn commit_write(
        &self,
        ino: u64,
        object: ObjectRef,
        end: u64,
        mtime: i64,
        holder: u64,
    ) -> Result<Inode, CallError> {
        self.change_inode(Change::CommitWrite {
            ino,
            object,
            end,
            mtime,
            holder,
        })
        .await
    }

    /// Replaces the content of `ino` with `object` if it still is `expect`.
    pub async fn swap_object(
        &self,
        ino: u64,
        expect: u64,
        object: ObjectRef,
        size: u64,
        mtime: i64,
    ) -> Result<Inode, CallError> {
        self.change_inode(Change::SwapObject {
            ino,
            expect,
            object,
            size,
            mtime,
        })
        .await
    }

    /// Makes `object` the content of `parent/name`, creating the file or
    /// replacing its content.
    pub async fn publish(
        &self,
        (parent, name): (u64, &str),
        object: ObjectRef,
        size: u64,
        mode: u32,
        mtime: i64,
    ) -> Result<Inode, CallError> {
        self.change_inode(Change::Publish {
            parent,
            name: name.to_string(),
            object,
            size,
            mode,
            mtime,
        })
        .await
    }

    /// An upload that will never be published: its object goes to GC.
    pub async fn abandon(&self, object: u64) -> Result<(), CallError> {
        self.change_done(Change::Abandon { object }).await
    }

    /// Collects the unused ids of leases older than `ttl` (meta's clock);
    /// returns how many.
    pub async fn reap_leases(&self, ttl: Duration) -> Result<u64, CallError> {
        let ttl_ns = ttl.as_nanos().min(i64::MAX as u128) as i64;
        expect!(self.change(Change::ReapLeases { ttl_ns }).await?, Outcome::Count(n) => n, "reap leases")
    }

    /// Objects deleted from every datanode: drop them from the GC queue.
    pub async fn gc_done(&self, objects: Vec<u64>) -> Result<(), CallError> {
        self.change_done(Change::GcDone { objects }).await
    }

    /// Objects due for deletion, each with the slots that deleted it (see
    /// [`MetaRequest::GcDue`]).
    pub async fn gc_due(&self, limit: u32, min_age: Duration) -> Result<Vec<GcDue>, CallError> {
        let req = MetaRequest::GcDue {
            limit,
            min_age_ns: min_age.as_nanos().min(i64::MAX as u128) as i64,
        };
        expect!(self.call(req).await?, MetaReply::GcDue(g) => g, "gc due")
    }

    /// The datanode in `slot` deleted `objects`.
    pub async fn gc_done_on(&self, slot: u32, objects: Vec<u64>) -> Result<(), CallError> {
        self.change_done(Change::GcDoneOn { slot, objects }).await
    }
}

/// A new directory entry (see [`MetaClient::create`]).
#[derive(Debug, Clone)]
pub struct NewNode {
    pub parent: u64,
    pub name: String,
    pub kind: FileKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub target: Option<String>,
    /// Placement seed of the file's future content.
    pub seed: u64,
    /// Fail with `Exists` if the name is taken.
    pub exclusive: bool,
}

/// A write lease granted by [`MetaClient::begin_write`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteGrant {
    /// The generation to write blocks with.
    pub generation: u64,
    /// Uncommitted writes may have left bytes up to here past the file's
    /// size (0: none): zero them before growing the file over them.
    pub dirty_end: u64,
}

/// Object ids `first..first + count` leased to one gateway: it places each
/// new object itself over `width` ring slots and writes its blocks with
/// `generation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLease {
    pub first: u64,
    pub count: u64,
    pub generation: u64,
    pub width: u32,
}

/// The service behind an `Arc`, as `serve` wants it.
pub fn service(store: MetaStore) -> Arc<MetaService> {
    Arc::new(MetaService::new(store))
}
