//! An in-process test cluster with fault hooks.

use std::path::PathBuf;
use std::time::Duration;

use tessera_datanode::{DatanodeClient, DatanodeConfig};
use tessera_gateway::{Fs, FsOptions, RetryPolicy};
use tessera_meta::{MetaConfig, Settings};
use tessera_rpc::{Secret, Transport};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

struct Node {
    data: PathBuf,
    addr: String,
    running: Option<(CancellationToken, JoinHandle<()>)>,
}

pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub secret: Secret,
    pub meta_addr: String,
    /// The meta store the cluster serves (its counters, for tests).
    pub meta_store: tessera_meta::MetaStore,
    pub fs: Fs,
    transport: Transport,
    meta_stop: CancellationToken,
    meta_task: Option<JoinHandle<()>>,
    background: CancellationToken,
    webdav: Option<(CancellationToken, JoinHandle<()>)>,
    nodes: Vec<Node>,
}

/// A gateway started by [`TestCluster::gateway`].
pub struct Gateway {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Gateway {
    /// Stops serving and waits until it has.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Options for tests: GC without grace, quick retries.
pub fn test_options() -> FsOptions {
    FsOptions {
        gc_grace: Duration::ZERO,
        gc_interval: Duration::from_millis(100),
        retry: RetryPolicy {
            first: Duration::from_millis(20),
            max: Duration::from_millis(200),
        },
        datanode_timeout: Duration::from_secs(5),
        ring_refresh: Duration::from_millis(200),
        chunk_blocks: env_or(
            "TESSERA_TEST_CHUNK_BLOCKS",
            FsOptions::default().chunk_blocks,
        ),
        inflight_chunks: env_or(
            "TESSERA_TEST_INFLIGHT",
            FsOptions::default().inflight_chunks,
        ),
        ..FsOptions::default()
    }
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl TestCluster {
    pub async fn start(datanodes: u32, settings: Settings) -> TestCluster {
        Self::start_with(datanodes, settings, test_options()).await
    }

    pub async fn start_with(datanodes: u32, settings: Settings, options: FsOptions) -> TestCluster {
        Self::start_on(datanodes, settings, options, None).await
    }

    /// Like [`TestCluster::start_with`], with the datanodes' data directories
    /// under `node_root` (a small file system, say) instead of the temp dir.
    pub async fn start_on(
        datanodes: u32,
        settings: Settings,
        options: FsOptions,
        node_root: Option<&std::path::Path>,
    ) -> TestCluster {
        crate::init_tracing();
        let dir = tempfile::tempdir().expect("temp dir");
        let secret = Secret::new("test-cluster-secret-0123456789").expect("secret");
        let meta_config = MetaConfig {
            data: dir.path().join("meta"),
            settings: Some(settings),
            node_timeout: tessera_meta::health::DEFAULT_NODE_TIMEOUT,
        };
        let store = tessera_meta::server::open(&meta_config)
            .await
            .expect("meta store");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind meta");
        let meta_addr = listener.local_addr().expect("addr").to_string();
        let meta_stop = CancellationToken::new();
        let meta_store = store.clone();
        let meta_task = {
            let (s, stop) = (secret.clone(), meta_stop.clone());
            tokio::spawn(async move {
                tessera_meta::server::serve_store(store, listener, s, stop.cancelled_owned()).await
            })
        };
        let transport = Transport::new(secret.clone());
        let mut nodes = Vec::new();
        for i in 0..datanodes {
            nodes.push(Node {
                data: node_root
                    .unwrap_or(dir.path())
                    .join(format!("datanode-{i}")),
                addr: String::new(),
                running: None,
            });
        }
        let fs_meta = tessera_meta::MetaClient::new(&transport, &meta_addr);
        let mut cluster_nodes = nodes;
        for (i, node) in cluster_nodes.iter_mut().enumerate() {
            start_node(node, i as u32, &meta_addr, &secret).await;
            wait_registered(&fs_meta, i as u32, &node.addr).await;
        }
        let fs = Fs::connect(&meta_addr, transport.clone(), options)
            .await
            .expect("gateway");
        let background = CancellationToken::new();
        fs.start_background(background.clone());
        TestCluster {
            dir,
            secret,
            meta_addr,
            meta_store,
            fs,
            transport,
            meta_stop,
            meta_task: Some(meta_task),
            background,
            webdav: None,
            nodes: cluster_nodes,
        }
    }

    /// Stops datanode `i` (its redb file is closed when this returns).
    pub async fn stop_node(&mut self, i: usize) {
        if let Some((stop, task)) = self.nodes[i].running.take() {
            stop.cancel();
            let _ = task.await;
        }
    }

    /// Starts datanode `i` again on its data directory (a new port).
    pub async fn restart_node(&mut self, i: usize) {
        self.stop_node(i).await;
        start_node(&mut self.nodes[i], i as u32, &self.meta_addr, &self.secret).await;
        wait_registered(self.fs.meta(), i as u32, &self.nodes[i].addr).await;
        self.fs.refresh_ring().await;
    }

    /// Stops datanode `i`, deletes its data and starts it empty in its slot.
    pub async fn wipe_node(&mut self, i: usize) {
        self.stop_node(i).await;
        std::fs::remove_dir_all(&self.nodes[i].data).expect("wipe datanode");
        self.restart_node(i).await;
    }

    pub fn node_data(&self, i: usize) -> PathBuf {
        self.nodes[i].data.clone()
    }

    /// The cluster's transport (its secret), for extra gateways.
    pub fn transport(&self) -> Transport {
        self.transport.clone()
    }

    /// A direct client of datanode `i` (bypassing the gateway).
    pub fn node(&self, i: usize) -> DatanodeClient {
        DatanodeClient::new(&self.transport, &self.nodes[i].addr, Duration::from_secs(5))
    }

    /// Serves WebDAV over this cluster's `Fs`; returns its address.
    pub async fn webdav(&mut self) -> String {
        self.webdav_with(tessera::webdav::Limits::default()).await
    }

    /// Starts another gateway on this cluster: its own `Fs` (its own
    /// engine, caches and holder id) connected to meta, serving WebDAV.
    /// Returns its address and what stops it.
    pub async fn gateway(&self) -> (String, Gateway) {
        let fs = Fs::connect(&self.meta_addr, self.transport.clone(), test_options())
            .await
            .expect("connect another gateway");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind webdav");
        let addr = listener.local_addr().expect("addr").to_string();
        let stop = CancellationToken::new();
        let s = stop.clone();
        let task =
            tokio::spawn(
                async move { tessera::webdav::serve(listener, fs, s.cancelled_owned()).await },
            );
        (addr, Gateway { stop, task })
    }

    /// [`TestCluster::webdav`] with explicit limits.
    pub async fn webdav_with(&mut self, limits: tessera::webdav::Limits) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind webdav");
        let addr = listener.local_addr().expect("addr").to_string();
        let stop = CancellationToken::new();
        let fs = self.fs.clone();
        let s = stop.clone();
        let task = tokio::spawn(async move {
            tessera::webdav::serve_with(listener, fs, limits, s.cancelled_owned()).await
        });
        self.webdav = Some((stop, task));
        addr
    }

    pub async fn shutdown(mut self) {
        if let Some((stop, task)) = self.webdav.take() {
            stop.cancel();
            let _ = task.await;
        }
        self.background.cancel();
        for i in 0..self.nodes.len() {
            self.stop_node(i).await;
        }
        self.meta_stop.cancel();
        if let Some(t) = self.meta_task.take() {
            let _ = t.await;
        }
    }
}

async fn start_node(node: &mut Node, slot: u32, meta: &str, secret: &Secret) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind datanode");
    node.addr = listener.local_addr().expect("addr").to_string();
    let mut config = DatanodeConfig::new(node.data.clone(), meta.to_string());
    config.slot = Some(slot);
    config.cache_bytes = std::env::var("TESSERA_TEST_CACHE_MIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(64)
        << 20;
    let stop = CancellationToken::new();
    let (s, st) = (secret.clone(), stop.clone());
    let task = tokio::spawn(async move {
        tessera_datanode::run(config, listener, s, st.cancelled_owned())
            .await
            .expect("datanode runs");
    });
    node.running = Some((stop, task));
}

async fn wait_registered(meta: &tessera_meta::MetaClient, slot: u32, addr: &str) {
    for _ in 0..1000 {
        if let Ok(ring) = meta.ring().await
            && ring.slots.iter().any(|s| s.slot == slot && s.addr == addr)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("datanode {slot} did not register at {addr}");
}

/// Streams `bytes` of pseudo-random content into `/name` through `fs` in
/// 4 MiB pieces (never held whole); returns the published inode.
pub async fn write_stream(fs: &tessera_gateway::Fs, name: &str, bytes: u64) -> tessera_meta::Inode {
    let chunk = bytes::Bytes::from(crate::data::pseudo_random(7, 4 << 20));
    let seed = tessera_gateway::placement::seed_for_path(&format!("/{name}"));
    let mut writer = fs
        .replace(tessera_meta::ROOT_INO, name, seed, 0o644)
        .await
        .expect("start upload");
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        writer.write(chunk.slice(..n)).await.expect("write");
        left -= n as u64;
    }
    writer.finish(Some(bytes)).await.expect("publish")
}

/// Reads all of `inode` through a streaming reader; returns the byte count.
pub async fn read_stream(fs: &tessera_gateway::Fs, inode: tessera_meta::Inode) -> u64 {
    let mut reader = fs.reader(inode);
    let mut got = 0u64;
    loop {
        let b = reader.read(4 << 20).await.expect("read");
        if b.is_empty() {
            return got;
        }
        got += b.len() as u64;
    }
}
