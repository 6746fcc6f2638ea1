//! Data-parallel training through burn's collective all-reduce (DDP): one
//! worker per device, each with a replica of the model and its optimiser,
//! each taking its share of every step's batch. The workers sum their
//! gradients with burn's `all_reduce` and so take the same AdamW step: the
//! replicas stay identical, and equal one worker on the whole batch.
//!
//! The loss is a mean over the batch's defined labels, so a worker cannot
//! weight its share alone: the workers first sum their defined-label
//! counts, and each weights its loss by its part of that total, before the
//! gradients are summed. Clipping then sees the whole batch's gradient.
//!
//! The workers stay in step when one fails: after computing its gradients
//! each adds its status to a sum, and unless every worker succeeded they all
//! return the error together instead of waiting for a gradient that will
//! never come.
//!
//! Several nodes: one process per node, each with its devices, joined by
//! burn's global collective ([`Cluster`]): an orchestrator process
//! (`cxr-trainer orchestrate`) pairs the nodes, and each node serves its
//! tensors to the others over WebSockets. Every node loads the same data,
//! takes the same global batch and steps on its workers' shares; ranks are
//! global, so the run would equal one worker on the whole batch whatever
//! the layout. On joining, every worker checks that all of them joined and
//! that they all start from the same config and weights.
//!
//! The nodes stop after that check, with an error: burn 0.21's global
//! all-reduce completes once and then stalls (both nodes wait in its
//! tensor service on the second sum; its barrier also never clears the
//! peers it has seen). A run that hangs forever is worse than one that
//! refuses, and burn is pinned to 0.21 (0.22's CUDA backend downloads LLVM
//! at build time).

use burn::collective::{self, AllReduceStrategy, CollectiveConfig, PeerId, ReduceOperation};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use sha2::{Digest, Sha256};

use crate::forward::{batch_gradients, StepInput};
use crate::groups::GroupedAdamW;
use crate::optim::clip_global_norm;
use crate::vit::BurnVit;
use crate::TrainerError;

fn collective_failed(what: &str, e: impl std::fmt::Debug) -> TrainerError {
    TrainerError::invalid(
        "data parallel",
        format!("{what}: {e:?}"),
        "every worker must run the same steps on the same model; restart the run from its last checkpoint",
    )
}

/// This process's place in a multi-node run (burn's global collective).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Nodes in the run, this one included.
    pub nodes: u32,
    /// This node's rank, 0 to `nodes - 1`.
    pub node_rank: u32,
    /// The orchestrator (`cxr-trainer orchestrate`), as `ws://HOST:PORT`.
    pub orchestrator: String,
    /// Where the other nodes reach this node, as `ws://HOST:PORT`.
    pub node_address: String,
    /// The port this node's tensor service listens on (every interface):
    /// the node address's.
    pub data_port: u16,
    /// How long a node waits for every other to join.
    pub join_timeout: std::time::Duration,
}

impl Cluster {
    pub fn validate(&self) -> Result<(), TrainerError> {
        let bad = |problem: String, fix| Err(TrainerError::invalid("cluster", problem, fix));
        if self.nodes < 2 || self.node_rank >= self.nodes {
            return bad(
                format!("node {} of {}", self.node_rank, self.nodes),
                "a cluster has 2 nodes or more, ranked from 0 to the number of nodes - 1",
            );
        }
        let port_of = |address: &str| {
            let (host, port) = address.strip_prefix("ws://")?.rsplit_once(':')?;
            let port = port.parse::<u16>().ok()?;
            (!host.is_empty() && port > 0).then_some(port)
        };
        for address in [&self.orchestrator, &self.node_address] {
            if port_of(address).is_none() {
                return bad(
                    format!("address {address:?}"),
                    "write addresses as ws://HOST:PORT",
                );
            }
        }
        if port_of(&self.node_address) != Some(self.data_port) {
            return bad(
                format!("data port {}, node address {}", self.data_port, self.node_address),
                "the other nodes reach this one at the node address: give its port as the data port",
            );
        }
        if self.join_timeout.is_zero() {
            return bad("join timeout 0".into(), "give the nodes time to join");
        }
        Ok(())
    }

    fn parse<T: std::str::FromStr>(address: &str) -> Result<T, TrainerError> {
        address.parse().map_err(|_| {
            TrainerError::invalid(
                "cluster",
                format!("address {address:?}"),
                "write addresses as ws://HOST:PORT",
            )
        })
    }
}

/// The collective of a run with `local` devices on this node. Between
/// nodes the sums go up and down a binary tree: burn's default there, a
/// ring, refuses tensors with fewer elements along their widest axis than
/// there are nodes (the run's one-number sums, a small head's bias).
pub(crate) fn collective_config(
    local: usize,
    cluster: Option<&Cluster>,
) -> Result<CollectiveConfig, TrainerError> {
    let config = CollectiveConfig::default().with_num_devices(local);
    Ok(match cluster {
        None => config,
        Some(c) => config
            .with_global_all_reduce_strategy(AllReduceStrategy::Tree(2))
            .with_num_nodes(c.nodes)
            .with_global_address(Cluster::parse(&c.orchestrator)?)
            .with_node_address(Cluster::parse(&c.node_address)?)
            .with_data_service_port(c.data_port),
    })
}

/// What every worker must start from, digested: the config (less what may
/// differ by node: data paths, loader threads, cache), the data as loaded
/// (`data`, see `Inputs`), the starting weights, and the layout (nodes,
/// devices per node).
pub(crate) fn run_digest(
    config: &crate::config::TrainConfig,
    weights: &cxr_model::Weights,
    data: &[u8; 32],
    (nodes, local): (u32, usize),
) -> Result<[u8; 32], TrainerError> {
    let unserialisable = |e: serde_json::Error| {
        TrainerError::invalid(
            "config",
            e.to_string(),
            "report this: a config that parsed must serialise",
        )
    };
    let mut shared = serde_json::to_value(config).map_err(unserialisable)?;
    if let Some(fields) = shared.as_object_mut() {
        fields.remove("workers");
        fields.remove("cache_mb");
    }
    if let Some(data) = shared.get_mut("data").and_then(|d| d.as_object_mut()) {
        data.remove("source");
    }
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(&shared).map_err(unserialisable)?);
    h.update(data);
    h.update(u64::from(nodes).to_le_bytes());
    h.update((local as u64).to_le_bytes());
    for (name, shape, values) in weights.iter() {
        h.update(name.as_bytes());
        for d in shape {
            h.update((*d as u64).to_le_bytes());
        }
        for v in values {
            h.update(v.to_le_bytes());
        }
    }
    Ok(h.finalize().into())
}

/// One worker of a data-parallel run: its place among the workers (of
/// every node).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Worker {
    pub rank: usize,
    pub workers: usize,
}

impl Worker {
    fn peer(&self) -> PeerId {
        PeerId::from(self.rank)
    }

    /// Join the run's collective on `device` (the inner, non-autodiff
    /// backend's); returns once every worker has joined and all of them
    /// start from the run `digest` names.
    pub fn join<B: Backend>(
        self,
        device: &B::Device,
        config: &CollectiveConfig,
        digest: &[u8; 32],
    ) -> Result<Self, TrainerError> {
        if self.workers == 0 || self.rank >= self.workers {
            return Err(TrainerError::invalid(
                "data parallel",
                format!("worker {} of {}", self.rank, self.workers),
                "ranks run from 0 to the number of workers - 1",
            ));
        }
        collective::register::<B>(self.peer(), device.clone(), config.clone()).map_err(|e| {
            TrainerError::invalid(
                "data parallel",
                format!("joining: {e:?}"),
                "start every node with the same --nodes and --devices, its own --node-rank, against a freshly started orchestrator",
            )
        })?;
        let agreed = self.check_start::<B>(digest, device);
        if agreed.is_err() {
            let _ = self.leave::<B>();
        }
        agreed.map(|()| self)
    }

    /// Every rank joined once, and every worker's start has this `digest`.
    /// One sum: a count per rank (each worker adds 1 at its own), then the
    /// digest's bytes (exact as f32: equal digests sum to `workers` times
    /// this one).
    fn check_start<B: Backend>(
        &self,
        digest: &[u8; 32],
        device: &B::Device,
    ) -> Result<(), TrainerError> {
        let mut mine = vec![0.0f32; self.workers];
        mine[self.rank] = 1.0;
        mine.extend(digest.iter().map(|&b| f32::from(b)));
        let summed = self.sum::<B>(mine, device)?;
        let (counts, bytes) = summed.split_at(self.workers);
        let wrong: Vec<String> = (0..self.workers)
            .filter(|&r| counts[r] != 1.0)
            .map(|r| format!("rank {r} joined {} times", counts[r]))
            .collect();
        if !wrong.is_empty() {
            return Err(TrainerError::invalid(
                "data parallel",
                wrong.join(", "),
                "give every node its own --node-rank and the same --nodes and --devices",
            ));
        }
        let n = self.workers as f32;
        if bytes
            .iter()
            .zip(digest)
            .any(|(s, &b)| *s != f32::from(b) * n)
        {
            return Err(TrainerError::invalid(
                "data parallel",
                "the workers start from different configs, data or weights".into(),
                "give every node the same config, data and init (or resume every node from the same epoch)",
            ));
        }
        Ok(())
    }

    /// Leave the collective once the run is over.
    pub fn leave<B: Backend>(self) -> Result<(), TrainerError> {
        collective::finish_collective::<B>(self.peer()).map_err(|e| collective_failed("leaving", e))
    }

    /// The sum over the workers of `values` (the same length on each).
    fn sum<B: Backend>(
        &self,
        values: Vec<f32>,
        device: &B::Device,
    ) -> Result<Vec<f32>, TrainerError> {
        let n = values.len();
        let local = Tensor::<B, 1>::from_data(TensorData::new(values, [n]), device);
        let summed = collective::all_reduce::<B>(
            self.peer(),
            local.into_primitive().tensor(),
            ReduceOperation::Sum,
        )
        .map_err(|e| collective_failed("summing", e))?;
        Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(summed))
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| collective_failed("reading a sum", e))
    }
}

/// This worker's share of a step's images: contiguous, sizes differing by
/// one at most (empty when the batch has fewer images than workers).
pub fn share(worker: Worker, batch: usize) -> std::ops::Range<usize> {
    let w = worker.workers.max(1);
    let (base, extra) = (batch / w, batch % w);
    let start = worker.rank * base + worker.rank.min(extra);
    start..start + base + usize::from(worker.rank < extra)
}

/// This worker's part of a step's batch. Every worker needs an image to
/// compute gradients with, so an empty share becomes the batch's first
/// image with no label defined: its loss and gradients are exactly zero,
/// and the step stays the one-device step.
pub fn shard(worker: Worker, b: &crate::loader::Batch, pixels: usize) -> crate::loader::Batch {
    let r = share(worker, b.size);
    let labels = b.targets.len() / b.size.max(1);
    if r.is_empty() {
        return crate::loader::Batch {
            size: 1,
            images: b.images[..pixels].to_vec(),
            targets: b.targets[..labels].to_vec(),
            mask: vec![0.0; labels],
        };
    }
    let rows = |v: &[f32], width: usize| v[r.start * width..r.end * width].to_vec();
    crate::loader::Batch {
        size: r.len(),
        images: rows(&b.images, pixels),
        targets: rows(&b.targets, labels),
        mask: rows(&b.mask, labels),
    }
}

/// One data-parallel step on this worker's share of the batch (in
/// `input.batch`): the gradients weighted by the whole batch's defined
/// labels, summed over the workers, clipped, and AdamW. Returns the new
/// model, the whole batch's loss and the gradient norm before clipping,
/// the same on every worker.
pub fn data_parallel_step<AB: AutodiffBackend>(
    worker: Worker,
    model: BurnVit<AB>,
    optimizer: &mut GroupedAdamW<AB>,
    input: StepInput<'_, AB>,
    device: &AB::Device,
) -> Result<(BurnVit<AB>, f64, f64), TrainerError> {
    let local_defined = input.batch.mask.iter().sum::<f32>();
    let defined = worker.sum::<AB::InnerBackend>(vec![local_defined], device)?[0].max(1.0);
    let local = caught("computing gradients", || {
        batch_gradients(&model, &input, defined, device)
    });
    let local_loss = local.as_ref().map_or(0.0, |(_, loss)| *loss as f32);
    let ((grads, _), loss) = worker.agree::<AB::InnerBackend, _>(local, local_loss, device)?;
    let mut grads = grads
        .all_reduce::<AB::InnerBackend>(worker.peer(), ReduceOperation::Sum)
        .map_err(|e| collective_failed("summing gradients", e))?;
    // The update can fail too (memory for the optimiser's moments): the
    // workers agree on it before the next step's first sum.
    let stepped = caught("updating the weights", || {
        let norm = clip_global_norm::<AB, _>(&model, &mut grads, input.clip_norm);
        Ok((optimizer.step(input.lr, model, grads), norm))
    });
    let ((model, norm), _) = worker.agree::<AB::InnerBackend, _>(stepped, 0.0, device)?;
    Ok((model, f64::from(loss), norm))
}

/// `work`'s result, with a panic turned into an error.
fn caught<T>(
    what: &str,
    work: impl FnOnce() -> Result<T, TrainerError>,
) -> Result<T, TrainerError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
        .unwrap_or_else(|_| Err(collective_failed(what, "a panic")))
}

impl Worker {
    /// Every worker's outcome of the same stage: this worker's value and
    /// the sum of `extra` over the workers when all succeeded, else an
    /// error on every worker naming those that failed.
    fn agree<B: Backend, T>(
        &self,
        local: Result<T, TrainerError>,
        extra: f32,
        device: &B::Device,
    ) -> Result<(T, f32), TrainerError> {
        let mut status = vec![0.0; self.workers + 1];
        status[self.workers] = extra;
        if local.is_err() {
            status[self.rank] = 1.0;
        }
        let summed = self.sum::<B>(status, device)?;
        let failed: Vec<String> = (0..self.workers)
            .filter(|&r| summed[r] > 0.0)
            .map(|r| r.to_string())
            .collect();
        match local {
            Err(e) => Err(e),
            Ok(_) if !failed.is_empty() => Err(collective_failed(
                "another worker failed this step",
                format!("worker(s) {} of {}", failed.join(", "), self.workers),
            )),
            Ok(value) => Ok((value, summed[self.workers])),
        }
    }
}

/// What a helper worker is asked to do: one step on its share.
struct Job {
    batch: crate::loader::Batch,
    lr: f64,
}

/// The workers of a run beyond the first: threads, each with its device,
/// replica and optimiser, stepping on the shares the first worker (the
/// one that loads data, validates and saves) sends them.
pub(crate) struct Helpers {
    first: Worker,
    /// Workers on this node: ranks `first.rank..first.rank + local`.
    local: usize,
    /// Whether worker 0 is still in the collective (left on finish or drop).
    joined: bool,
    leave: fn(PeerId),
    jobs: Vec<std::sync::mpsc::Sender<Job>>,
    handles: Vec<std::thread::JoinHandle<Result<(), TrainerError>>>,
}

impl Drop for Helpers {
    /// A run that ends early: the helpers see their queue close and leave;
    /// worker 0 leaves too, so that a later run can join again.
    fn drop(&mut self) {
        self.jobs.clear();
        if self.joined {
            (self.leave)(self.first.peer());
        }
    }
}

fn leave_collective<B: Backend>(peer: PeerId) {
    let _ = collective::finish_collective::<B>(peer);
}

/// What every helper starts from: the run's weights, its config, and the
/// folder to load the optimiser's moments from on resume.
pub(crate) struct HelperStart<'a> {
    pub weights: &'a cxr_model::Weights,
    pub config: &'a crate::config::TrainConfig,
    pub resume_from: Option<&'a std::path::Path>,
    pub pos_weight: Option<Vec<f32>>,
    pub cluster: Option<&'a Cluster>,
    /// The data as loaded, digested (see `run_digest`).
    pub data: [u8; 32],
}

impl Helpers {
    /// Start a helper on each of `devices[1..]` and join the collective as
    /// this node's first worker; an error from any helper's start is
    /// returned here.
    pub(crate) fn start<AB: AutodiffBackend>(
        devices: &[AB::Device],
        start: HelperStart<'_>,
    ) -> Result<Self, TrainerError> {
        let local = devices.len();
        let ranks = node_ranks(start.cluster, local);
        let workers = start.cluster.map_or(1, |c| c.nodes as usize) * local;
        let collective = collective_config(local, start.cluster)?;
        let layout = (start.cluster.map_or(1, |c| c.nodes), local);
        let digest = run_digest(start.config, start.weights, &start.data, layout)?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let mut helpers = Helpers {
            first: Worker {
                rank: ranks.start,
                workers,
            },
            local,
            joined: false,
            leave: leave_collective::<AB::InnerBackend>,
            jobs: Vec::new(),
            handles: Vec::new(),
        };
        let mut go_signals = Vec::new();
        for (rank, device) in ranks.zip(devices).skip(1) {
            let (jobs, go) = (std::sync::mpsc::channel(), std::sync::mpsc::channel());
            let helper = HelperPlace {
                worker: Worker { rank, workers },
                device: device.clone(),
                collective: collective.clone(),
                digest,
            };
            helpers.jobs.push(jobs.0);
            go_signals.push(go.0);
            let signals = (ready_tx.clone(), go.1, jobs.1);
            helpers
                .handles
                .push(spawn_helper::<AB>(helper, &start, signals));
        }
        drop(ready_tx);
        for _ in 1..local {
            if let Ok(Some(e)) | Err(e) = ready_rx.recv().map_err(|e| e.to_string()) {
                // The go signals drop here: the healthy helpers end unjoined.
                return Err(collective_failed("starting a worker", e));
            }
        }
        for go in go_signals {
            go.send(())
                .map_err(|_| collective_failed("starting a worker", "it stopped"))?;
        }
        let first = (helpers.first, devices[0].clone(), collective, digest);
        helpers.first = join_within::<AB::InnerBackend>(first, start.cluster)?;
        helpers.joined = true;
        if start.cluster.is_some() {
            // Every node gets here after the same single sum, so all stop
            // together, their helpers and they leaving the collective.
            let _ = helpers.finish::<AB::InnerBackend>();
            return Err(TrainerError::invalid(
                "cluster",
                "the nodes joined and agree on the run, but burn 0.21's global collective stalls on the second sum across nodes".into(),
                "train on one node (--devices N); multi-node steps wait for a burn whose global all-reduce completes repeatedly",
            ));
        }
        Ok(helpers)
    }

    /// One step of the whole batch in `input`: each helper gets its share,
    /// this thread steps on the first.
    pub(crate) fn step<AB: AutodiffBackend>(
        &self,
        model: BurnVit<AB>,
        optimizer: &mut GroupedAdamW<AB>,
        mut input: StepInput<'_, AB>,
        device: &AB::Device,
    ) -> Result<(BurnVit<AB>, f64, f64), TrainerError> {
        let s = input.spec;
        let pixels = s.in_channels * s.image_size * s.image_size;
        let workers = self.first.workers;
        let ranks = self.first.rank..self.first.rank + self.local;
        let mut parts: Vec<_> = ranks
            .map(|rank| shard(Worker { rank, workers }, &input.batch, pixels))
            .collect();
        for (k, (jobs, batch)) in self.jobs.iter().zip(parts.drain(1..)).enumerate() {
            jobs.send(Job {
                batch,
                lr: input.lr,
            })
            .map_err(|_| collective_failed("a worker stopped", format!("worker {}", k + 1)))?;
        }
        input.batch = parts.remove(0);
        data_parallel_step(self.first, model, optimizer, input, device)
    }

    /// Stop the helpers, wait for them, and leave the collective.
    pub(crate) fn finish<B: Backend>(mut self) -> Result<(), TrainerError> {
        self.jobs.clear();
        for (k, h) in std::mem::take(&mut self.handles).into_iter().enumerate() {
            h.join().map_err(|_| {
                collective_failed("a worker panicked", format!("worker {}", k + 1))
            })??;
        }
        self.joined = false;
        self.first.leave::<B>()
    }
}

/// Where a helper works: its worker, device and collective, and the run
/// digest it joins with.
struct HelperPlace<D> {
    worker: Worker,
    device: D,
    collective: CollectiveConfig,
    digest: [u8; 32],
}

/// A helper's channels: it reports its replica built (or why not), waits
/// for the go to join, then takes jobs until their sender drops.
type HelperSignals = (
    std::sync::mpsc::Sender<Option<String>>,
    std::sync::mpsc::Receiver<()>,
    std::sync::mpsc::Receiver<Job>,
);

fn spawn_helper<AB: AutodiffBackend>(
    place: HelperPlace<AB::Device>,
    start: &HelperStart<'_>,
    (ready, go, jobs): HelperSignals,
) -> std::thread::JoinHandle<Result<(), TrainerError>> {
    let (weights, config) = (start.weights.clone(), start.config.clone());
    let resume_from = start.resume_from.map(std::path::Path::to_path_buf);
    let pos_weight = start.pos_weight.clone();
    std::thread::spawn(move || {
        let device = &place.device;
        let replica = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let model = crate::forward::replica::<AB>(&weights, &config, device)?;
            let o = config.optim;
            let mut optimizer = GroupedAdamW::new(&model, o.weight_decay, o.layer_decay);
            if let Some(dir) = &resume_from {
                optimizer = optimizer.load(dir, device)?;
            }
            Ok::<_, TrainerError>((model, optimizer))
        }))
        .unwrap_or_else(|_| Err(collective_failed("building a replica", "a panic")));
        let _ = ready.send(replica.as_ref().err().map(ToString::to_string));
        // Not held for the thread's life: a helper that dies before
        // reporting must close the channel, not keep it open.
        drop(ready);
        let (model, optimizer) = replica?;
        // Joining blocks until every worker has joined: wait until worker 0
        // knows that every replica was built.
        if go.recv().is_err() {
            return Ok(());
        }
        let worker =
            place
                .worker
                .join::<AB::InnerBackend>(device, &place.collective, &place.digest)?;
        let stepped = helper_loop(
            worker,
            (model, optimizer),
            &config,
            pos_weight,
            &jobs,
            device,
        );
        let left = worker.leave::<AB::InnerBackend>();
        stepped.and(left)
    })
}

/// The global ranks of this node's `local` workers: node k of a cluster
/// has `k * local ..`, so the nodes' ranks tile `0..nodes * local`.
pub(crate) fn node_ranks(cluster: Option<&Cluster>, local: usize) -> std::ops::Range<usize> {
    let first = cluster.map_or(0, |c| c.node_rank as usize) * local;
    first..first + local
}

/// `worker.join`, given up after the cluster's join timeout: in a
/// cluster, a node that never comes (stopped, misaddressed) would
/// otherwise keep the others waiting in burn's register forever. The
/// joining thread is left blocked; the run returns the error and its
/// process ends.
fn join_within<B: Backend>(
    (worker, device, collective, digest): (Worker, B::Device, CollectiveConfig, [u8; 32]),
    cluster: Option<&Cluster>,
) -> Result<Worker, TrainerError> {
    let Some(cluster) = cluster else {
        return worker.join::<B>(&device, &collective, &digest);
    };
    let (done, joined) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(worker.join::<B>(&device, &collective, &digest));
    });
    joined.recv_timeout(cluster.join_timeout).unwrap_or_else(|_| {
        Err(TrainerError::invalid(
            "cluster",
            format!(
                "not every node joined within {} s",
                cluster.join_timeout.as_secs()
            ),
            "start every node (see their logs for errors) against a freshly started `cxr-trainer orchestrate`",
        ))
    })
}

fn helper_loop<AB: AutodiffBackend>(
    worker: Worker,
    (mut model, mut optimizer): (BurnVit<AB>, GroupedAdamW<AB>),
    config: &crate::config::TrainConfig,
    pos_weight: Option<Vec<f32>>,
    jobs: &std::sync::mpsc::Receiver<Job>,
    device: &AB::Device,
) -> Result<(), TrainerError> {
    let pos_weight = pos_weight.map(|w| {
        let n = w.len();
        Tensor::<AB, 1>::from_data(TensorData::new(w, [n]), device)
    });
    while let Ok(job) = jobs.recv() {
        let input = StepInput {
            batch: job.batch,
            spec: config.model,
            loss: config.loss,
            pos_weight: pos_weight.as_ref(),
            accumulate: config.optim.accumulate,
            clip_norm: config.optim.clip_norm,
            lr: job.lr,
        };
        (model, _, _) = data_parallel_step(worker, model, &mut optimizer, input, device)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::optimisation_step;
    use crate::forward::tests::{tiny_batch, tiny_step};
    use crate::optim::Ema;
    use burn::module::AutodiffModule;
    use cxr_model::{VitSpec, Weights};

    /// burn's collective is one per process and backend: the tests that
    /// join it take turns.
    fn collective_in_use() -> std::sync::MutexGuard<'static, ()> {
        static COLLECTIVE: std::sync::Mutex<()> = std::sync::Mutex::new(());
        COLLECTIVE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A tiny model after `steps` steps on one worker with whole batches,
    /// or on `workers` workers (threads) each with its share: the weights
    /// and the EMA after every step, and the losses.
    fn trained(workers: usize, steps: usize) -> (Vec<f32>, Vec<f32>, Vec<f64>) {
        use crate::parallel::{data_parallel_step, shard, Worker};
        type AB = burn::backend::Autodiff<burn::backend::NdArray<f32>>;
        let spec = VitSpec::tiny();
        let init = Weights::random(&spec, 3).unwrap_or_else(|e| panic!("{e}"));
        let run = |rank: usize| {
            let device = Default::default();
            let worker = Worker { rank, workers };
            let collective =
                crate::parallel::collective_config(workers, None).unwrap_or_else(|e| panic!("{e}"));
            let worker = (workers > 1).then(|| {
                worker.join::<burn::backend::NdArray<f32>>(&device, &collective, &[7; 32])
            });
            let mut model =
                BurnVit::<AB>::from_weights(&init, &device).unwrap_or_else(|e| panic!("{e}"));
            let mut optimizer = GroupedAdamW::new(&model, 0.05, 0.8);
            let mut ema = Ema::new(init.clone(), 0.9);
            let mut losses = Vec::new();
            for step in 0..steps {
                // The last step has one image: the second worker gets a
                // padding image with no label defined.
                let size = if step + 1 == steps { 1 } else { 6 + step };
                let mut batch = tiny_batch(size, spec);
                if let Some(Ok(w)) = &worker {
                    let pixels = spec.in_channels * spec.image_size * spec.image_size;
                    batch = shard(*w, &batch, pixels);
                }
                let input = tiny_step(batch, 1);
                let (m, loss, _) = match &worker {
                    Some(Ok(w)) => data_parallel_step(*w, model, &mut optimizer, input, &device),
                    Some(Err(e)) => panic!("{e}"),
                    None => optimisation_step(model, &mut optimizer, input, &device),
                }
                .unwrap_or_else(|e| panic!("{e}"));
                model = m;
                losses.push(loss);
                ema.update(&model.valid().to_weights().unwrap_or_else(|e| panic!("{e}")))
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            if let Some(Ok(w)) = worker {
                w.leave::<burn::backend::NdArray<f32>>()
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            let flat = |w: &Weights| {
                w.iter()
                    .flat_map(|(_, _, v)| v.to_vec())
                    .collect::<Vec<f32>>()
            };
            (
                flat(&model.valid().to_weights().unwrap_or_else(|e| panic!("{e}"))),
                flat(&ema.weights),
                losses,
            )
        };
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|rank| s.spawn(move || run(rank)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| panic!("a worker panicked")))
                .collect()
        });
        for other in &results[1..] {
            assert_eq!(other.0, results[0].0, "the replicas drifted apart");
        }
        results.into_iter().next().unwrap_or_default()
    }

    /// Two workers with half-batches end where one worker with the whole
    /// batches does: AdamW with layer decay, an active clip, the EMA,
    /// unevenly defined labels (the second image has none), and a last
    /// batch of one image.
    #[test]
    fn data_parallel_two_workers_match_one_worker() {
        let _one_at_a_time = collective_in_use();
        let (one, one_ema, one_loss) = trained(1, 4);
        let (two, two_ema, two_loss) = trained(2, 4);
        let gap = cxr_bundle::rel_l2(&one, &two);
        assert!(gap < 1e-5, "1 vs 2 workers: rel L2 {gap:.3e}");
        let gap = cxr_bundle::rel_l2(&one_ema, &two_ema);
        assert!(gap < 1e-5, "EMA, 1 vs 2 workers: rel L2 {gap:.3e}");
        let init = Weights::random(&VitSpec::tiny(), 3).unwrap_or_else(|e| panic!("{e}"));
        let start: Vec<f32> = init.iter().flat_map(|(_, _, v)| v.to_vec()).collect();
        assert!(
            cxr_bundle::rel_l2(&start, &two) > 1e-3,
            "the steps moved the weights"
        );
        for (a, b) in one_loss.iter().zip(&two_loss) {
            assert!((a - b).abs() < 1e-5, "loss {a} vs {b}");
        }
    }

    /// A worker whose step fails (here: a damaged batch) makes both
    /// return the error at that step, naming it, instead of leaving the
    /// other waiting for its gradients.
    #[test]
    fn a_failing_worker_stops_every_worker() {
        use crate::parallel::{data_parallel_step, Worker};
        let _one_at_a_time = collective_in_use();
        type AB = burn::backend::Autodiff<burn::backend::NdArray<f32>>;
        let spec = VitSpec::tiny();
        let init = Weights::random(&spec, 3).unwrap_or_else(|e| panic!("{e}"));
        let (done, results) = std::sync::mpsc::channel();
        for rank in 0..2 {
            let (init, done) = (init.clone(), done.clone());
            std::thread::spawn(move || {
                let device = Default::default();
                let collective =
                    crate::parallel::collective_config(2, None).unwrap_or_else(|e| panic!("{e}"));
                let outcome = Worker { rank, workers: 2 }
                    .join::<burn::backend::NdArray<f32>>(&device, &collective, &[7; 32])
                    .and_then(|w| {
                        let model = BurnVit::<AB>::from_weights(&init, &device)?;
                        let mut optimizer = GroupedAdamW::new(&model, 0.05, 1.0);
                        let mut batch = tiny_batch(3, spec);
                        if rank == 1 {
                            batch.images.truncate(10);
                        }
                        let stepped = data_parallel_step(
                            w,
                            model,
                            &mut optimizer,
                            tiny_step(batch, 1),
                            &device,
                        );
                        let left = w.leave::<burn::backend::NdArray<f32>>();
                        stepped.map(|_| ()).and(left)
                    });
                let _ = done.send((rank, outcome.err().map(|e| e.to_string())));
            });
        }
        let mut errors = [None, None];
        for _ in 0..2 {
            let (rank, e) = results
                .recv_timeout(std::time::Duration::from_secs(120))
                .unwrap_or_else(|_| panic!("a worker is still waiting"));
            errors[rank] = e;
        }
        let [first, second] = errors;
        assert!(
            second.is_some_and(|e| e.contains("pixel values")),
            "worker 1's own error"
        );
        assert!(first.is_some_and(
            |e| e.contains("another worker failed this step") && e.contains("worker(s) 1 of 2")
        ));
    }

    /// Workers (nodes, in a cluster) that start from different configs or
    /// weights are all refused on joining, before any step.
    #[test]
    fn workers_with_different_starts_are_refused_on_joining() {
        use crate::parallel::{collective_config, Worker};
        let _one_at_a_time = collective_in_use();
        let (done, results) = std::sync::mpsc::channel();
        for rank in 0..2 {
            let done = done.clone();
            std::thread::spawn(move || {
                let device = Default::default();
                let mut digest = [9u8; 32];
                digest[31] = rank as u8;
                let outcome = Worker { rank, workers: 2 }.join::<burn::backend::NdArray<f32>>(
                    &device,
                    &collective_config(2, None).unwrap_or_else(|e| panic!("{e}")),
                    &digest,
                );
                let _ = done.send(outcome.err().map(|e| e.to_string()));
            });
        }
        for _ in 0..2 {
            let e = results
                .recv_timeout(std::time::Duration::from_secs(120))
                .unwrap_or_else(|_| panic!("a worker is still waiting"));
            assert!(
                e.is_some_and(|e| e.contains("different configs, data or weights")),
                "both workers refuse"
            );
        }
    }

    /// The nodes' workers hold the global ranks 0..nodes*devices, each once.
    #[test]
    fn the_ranks_of_every_node_tile_the_run() {
        use crate::parallel::{node_ranks, Cluster};
        assert_eq!(node_ranks(None, 3), 0..3);
        let mut seen = Vec::new();
        for node_rank in 0..3 {
            let cluster = Cluster {
                nodes: 3,
                node_rank,
                orchestrator: "ws://10.0.0.1:4500".into(),
                node_address: "ws://10.0.0.2:4501".into(),
                data_port: 4501,
                join_timeout: std::time::Duration::from_secs(60),
            };
            seen.extend(node_ranks(Some(&cluster), 4));
        }
        assert_eq!(seen, (0..12).collect::<Vec<_>>());
    }

    #[test]
    fn a_cluster_needs_two_nodes_a_rank_among_them_and_ws_addresses() {
        let good = crate::parallel::Cluster {
            nodes: 2,
            node_rank: 1,
            orchestrator: "ws://10.0.0.1:4500".into(),
            node_address: "ws://10.0.0.2:4501".into(),
            data_port: 4501,
            join_timeout: std::time::Duration::from_secs(60),
        };
        assert!(good.validate().is_ok());
        let bad = [
            crate::parallel::Cluster {
                nodes: 1,
                node_rank: 0,
                ..good.clone()
            },
            crate::parallel::Cluster {
                node_rank: 2,
                ..good.clone()
            },
            crate::parallel::Cluster {
                orchestrator: "10.0.0.1:4500".into(),
                ..good.clone()
            },
            crate::parallel::Cluster {
                node_address: "ws://10.0.0.2".into(),
                ..good.clone()
            },
            crate::parallel::Cluster {
                node_address: "ws://:4501".into(),
                ..good.clone()
            },
            crate::parallel::Cluster {
                data_port: 4502,
                ..good.clone()
            },
            crate::parallel::Cluster {
                join_timeout: std::time::Duration::ZERO,
                ..good.clone()
            },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }
}
