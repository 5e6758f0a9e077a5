//! The models a service offers, each with its plans: the single-image plan (one image a
//! ciphertext, rotations) and the batch plans (one image a slot) at every ring degree that
//! holds the network. The owner plans the same model the same way ([`batch_plan`],
//! [`PlannedSingle::new`]), so its keys fit the service's plans without a negotiation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cryptonets_core::Backend;
use cryptonets_core::model::polynomial::PolynomialNetwork;
use cryptonets_core::network::single::{EncodedDiagonals, PlannedSingle, SingleKeys};
use cryptonets_core::network::{EvaluationKeys, PLANNED_DEGREES, PlannedNetwork};

/// The thread count both sides plan batches for: the batch planner weighs candidate
/// parameters by their estimated time, and the owner and the service must pick the same ones
/// whatever their own core counts.
pub const PLANNING_THREADS: usize = 2;

/// The batch plan an owner uses for `images` images of `network`: the one a service offers
/// at the same ring degree.
pub fn batch_plan(
    network: &PolynomialNetwork,
    backend: Backend,
    images: usize,
) -> Result<PlannedNetwork, String> {
    PlannedNetwork::new(network, backend, PLANNING_THREADS, images)
        .map_err(|e| format!("no batch parameters evaluate this network: {e}"))
}

/// A model served.
#[derive(Debug)]
pub struct ServedModel {
    /// Its name: the file name without `.cnmd`.
    pub name: String,
    /// The network.
    pub network: PolynomialNetwork,
    /// The single-image plan, if the network has one.
    pub single: Option<PlannedSingle>,
    /// The batch plans, one per ring degree that holds the network.
    pub batch: Vec<PlannedNetwork>,
    /// The single-image plan's diagonals, encoded once (by the first worker that needs
    /// them) for every owner.
    diagonals: OnceLock<Result<EncodedDiagonals, String>>,
}

impl ServedModel {
    /// Plans `network` in both modes; `None` if neither plans.
    pub fn new(name: String, network: PolynomialNetwork, backend: Backend) -> Option<Self> {
        let single = match PlannedSingle::new(&network, backend) {
            Ok(planned) => Some(planned),
            Err(e) => {
                tracing::warn!(model = %name, error = %e, "no single-image plan");
                None
            }
        };
        let batch: Vec<PlannedNetwork> = PLANNED_DEGREES
            .into_iter()
            .filter_map(|n| PlannedNetwork::for_degree(&network, backend, PLANNING_THREADS, n).ok())
            .collect();
        if single.is_none() && batch.is_empty() {
            tracing::warn!(model = %name, "no plan in either mode: not served");
            return None;
        }
        Some(Self {
            name,
            network,
            single,
            batch,
            diagonals: OnceLock::new(),
        })
    }

    /// The single-image plan's encoded diagonals.
    pub fn diagonals(&self) -> Result<&EncodedDiagonals, String> {
        let planned = self
            .single
            .as_ref()
            .ok_or("this model has no single-image plan")?;
        self.diagonals
            .get_or_init(|| {
                EncodedDiagonals::new(&planned.params, &planned.plan).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The batch plan of ring degree `n`.
    pub fn batch_plan(&self, n: usize) -> Option<&PlannedNetwork> {
        self.batch.iter().find(|p| p.params.degree() == n)
    }

    /// The largest evaluation keys of any plan: the bound on a registration's body.
    pub fn max_key_bytes(&self) -> usize {
        let single = self
            .single
            .as_ref()
            .map_or(0, |p| SingleKeys::serialized_len_for(&p.params, &p.plan));
        let batch = self
            .batch
            .iter()
            .map(|p| EvaluationKeys::max_serialized_len(&p.params))
            .max()
            .unwrap_or(0);
        single.max(batch)
    }
}

/// Loads and plans the models of `dir` (every `*.cnmd`, by file name).
pub fn load_models(
    dir: &Path,
    backend: Backend,
) -> Result<BTreeMap<String, std::sync::Arc<ServedModel>>, String> {
    let mut models = BTreeMap::new();
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "cnmd"))
        .collect();
    paths.sort();
    for path in paths {
        let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let bytes = crate::files::read_checked(&path, 64 << 20, "model")?;
        let network = match PolynomialNetwork::parse(&bytes) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(model = %path.display(), error = %e, "not served");
                continue;
            }
        };
        if let Some(model) = ServedModel::new(name.to_string(), network, backend) {
            tracing::info!(
                model = %name,
                single = model.single.is_some(),
                batch_degrees = ?model.batch.iter().map(|p| p.params.degree()).collect::<Vec<_>>(),
                "serving"
            );
            models.insert(name.to_string(), std::sync::Arc::new(model));
        }
    }
    if models.is_empty() {
        return Err(format!("{}: no model to serve", dir.display()));
    }
    Ok(models)
}
