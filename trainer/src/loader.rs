//! The batch loader: worker threads read and prepare images (through
//! `load_input`, the appliance's path), a bounded cache keeps prepared
//! inputs between epochs, and the order of each epoch is fixed by the seed.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Mutex;

use cxr_preprocess::{InputSpec, ModelInput};

use crate::augment::AugmentConfig;
use crate::data::load_input;
use crate::rng::Rng;
use crate::TrainerError;

/// One training example: image path, soft targets and loss mask `[labels]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub image: PathBuf,
    pub targets: Vec<f32>,
    pub mask: Vec<f32>,
}

/// A batch: images `[B, C, S, S]`, targets and masks `[B, labels]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub size: usize,
    pub images: Vec<f32>,
    pub targets: Vec<f32>,
    pub mask: Vec<f32>,
}

/// Prepared inputs kept in memory up to a byte budget, oldest out first.
#[derive(Debug, Default)]
struct Cache {
    map: HashMap<usize, ModelInput>,
    order: VecDeque<usize>,
    bytes: usize,
}

#[derive(Debug)]
pub struct Loader {
    examples: Vec<Example>,
    spec: InputSpec,
    workers: usize,
    cache_budget: usize,
    cache: Mutex<Cache>,
}

impl Loader {
    pub fn new(
        examples: Vec<Example>,
        spec: InputSpec,
        workers: usize,
        cache_budget_bytes: usize,
    ) -> Self {
        Loader {
            examples,
            spec,
            workers: workers.max(1),
            cache_budget: cache_budget_bytes,
            cache: Mutex::new(Cache::default()),
        }
    }

    pub fn len(&self) -> usize {
        self.examples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }

    /// The order of `epoch`: a permutation fixed by `(seed, epoch)`.
    pub fn epoch_order(&self, seed: u64, epoch: u64) -> Vec<usize> {
        Rng::new(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15)).permutation(self.examples.len())
    }

    /// Bytes the cache holds now.
    pub fn cached_bytes(&self) -> usize {
        self.cache.lock().map(|c| c.bytes).unwrap_or(0)
    }

    fn prepared(&self, index: usize) -> Result<ModelInput, TrainerError> {
        if let Ok(c) = self.cache.lock() {
            if let Some(x) = c.map.get(&index) {
                return Ok(x.clone());
            }
        }
        let x = load_input(&self.examples[index].image, &self.spec)?;
        if let Ok(mut c) = self.cache.lock() {
            let size = x.data.len() * 4;
            if size <= self.cache_budget && !c.map.contains_key(&index) {
                while c.bytes + size > self.cache_budget {
                    let Some(old) = c.order.pop_front() else {
                        break;
                    };
                    if let Some(o) = c.map.remove(&old) {
                        c.bytes -= o.data.len() * 4;
                    }
                }
                c.bytes += size;
                c.order.push_back(index);
                c.map.insert(index, x.clone());
            }
        }
        Ok(x)
    }

    /// Load the examples at `indices` in parallel; with `augment`, each gets
    /// its own augmentation drawn from `seed` (so batches repeat by seed).
    pub fn batch(
        &self,
        indices: &[usize],
        augment: Option<&AugmentConfig>,
        seed: u64,
    ) -> Result<Batch, TrainerError> {
        let n = indices.len();
        let mut slots: Vec<Option<Result<ModelInput, TrainerError>>> =
            (0..n).map(|_| None).collect();
        let chunk = n.div_ceil(self.workers).max(1);
        std::thread::scope(|scope| {
            for (w, part) in slots.chunks_mut(chunk).enumerate() {
                let idx = &indices[w * chunk..(w * chunk + part.len())];
                scope.spawn(move || {
                    for (slot, &i) in part.iter_mut().zip(idx) {
                        let r = self.prepared(i).map(|x| match augment {
                            Some(a) => a.apply(
                                &x,
                                &mut Rng::new(
                                    seed ^ (i as u64).wrapping_mul(0xA24B_AED4_963E_E407),
                                ),
                            ),
                            None => x,
                        });
                        *slot = Some(r);
                    }
                });
            }
        });
        let mut batch = Batch {
            size: n,
            images: Vec::new(),
            targets: Vec::new(),
            mask: Vec::new(),
        };
        for (slot, &i) in slots.into_iter().zip(indices) {
            let x = slot.unwrap_or_else(|| {
                Err(TrainerError::invalid(
                    "loader",
                    "a worker did not finish".into(),
                    "report this bug",
                ))
            })?;
            batch.images.extend_from_slice(&x.data);
            batch.targets.extend_from_slice(&self.examples[i].targets);
            batch.mask.extend_from_slice(&self.examples[i].mask);
        }
        Ok(batch)
    }
}
