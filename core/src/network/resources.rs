//! A priori resource estimates: peak memory and time of one batch, from the model's sizes,
//! the parameters and the packing, computed before anything is evaluated so that a service
//! can refuse work it cannot finish (a model at the parser's limits needs gigabytes).
//!
//! Memory counts what the evaluator and the batch path hold at their peak, channel by
//! channel: the expanded inputs of one channel (every pixel unpacked: 784 ciphertexts of two
//! polynomials at the top level), the first dense layer's accumulators (8 bytes a residue:
//! two half-word sums or one i64, for every hidden unit and the three polynomials of a
//! product before relinearization), one group of convolutions and their squares, the
//! outputs, and the serialized batch itself (which stays in memory while it is read). Time
//! counts the dominant operations (squares with relinearization, and multiply-accumulates of
//! the linear layers) at rates measured on the development machine, so it is an order of
//! magnitude, not a promise.

use super::evaluator::GROUP_POSITIONS;
use super::{INPUTS, NetworkEvaluator, Packing};
use crate::Error;
use crate::model::{CLASSES, CONV_SIDE, KERNEL};

/// Bytes of a residue in memory.
const RESIDUE: u64 = 4;
/// Bytes of an accumulator residue of the first dense layer.
const ACCUMULATOR: u64 = 8;
/// What the allocator and the threads' scratch add, as a fraction of the counted total: set so
/// that the estimate stays above the measured peak RSS (committed model: 1.10 GB measured by
/// `run` over all 10,000 test images with the buffers kept between batches, 1.25 GB planned,
/// with groups of 85 positions; 1.43 GB measured, 1.71 GB planned, where the first dense layer
/// sums the squares' unscaled tensors; 16 maps x 4096 hidden units: 5.43 GiB measured with groups of
/// 13 positions, when the estimate counted the group as it does now).
pub(super) const OVERHEAD: f64 = 0.25;
/// Seconds of one square, per ciphertext prime, on one core, scaled linearly in n. Measured
/// with `cryptonets bench batch` on the committed model (2 cores of an Intel Xeon, AVX-512):
/// the convolution's and the hidden units' squares take about 0.94 core-seconds a channel
/// for 845 squares of 5 primes and 100 of 4, 0.20 ms a prime; rounded up, as an estimate
/// should be for the slower of the development machines.
pub(super) const SQUARE_SECONDS_PER_LIMB_8192: f64 = 0.25e-3;
/// Seconds of one residue multiply-accumulate in the linear layers, on one core. Measured as
/// above: the convolution and the two dense layers take about 0.36 core-seconds a channel
/// for 10.1 billion, 0.036 ns each, rounded up.
pub(super) const MAC_SECONDS: f64 = 0.05e-9;

/// The estimate of one batch on one machine.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ResourceEstimate {
    /// Peak memory, in bytes (the serialized batch included).
    pub peak_bytes: u64,
    /// Wall-clock seconds with `threads` threads, an order of magnitude.
    pub seconds: f64,
}

impl ResourceEstimate {
    /// `Ok` if the peak fits `limit_bytes`, else [`Error::ResourceLimit`] with the estimate.
    pub fn check_memory(&self, limit_bytes: u64) -> Result<(), Error> {
        match self.peak_bytes <= limit_bytes {
            true => Ok(()),
            false => Err(Error::ResourceLimit {
                what: "evaluating this batch",
                estimated_bytes: self.peak_bytes,
                limit_bytes,
            }),
        }
    }
}

impl NetworkEvaluator<'_> {
    /// Estimates one batch of `packing` whose serialized form takes `batch_bytes`, on
    /// `threads` threads. Saturating arithmetic: a model too large to count is "huge".
    pub fn estimate(
        &self,
        packing: Packing,
        batch_bytes: u64,
        threads: usize,
    ) -> Result<ResourceEstimate, Error> {
        let plan = self.plan_for(packing)?;
        let first = &self.params().channels()[0];
        let n = first.degree() as u64;
        let top = first.max_level() as u64;
        let (hidden_level, output_level) = (plan.hidden_level as u64, plan.output_level as u64);
        let (maps, hidden) = (self.maps() as u64, self.hidden() as u64);
        let features = maps.saturating_mul((CONV_SIDE * CONV_SIDE) as u64);
        let poly = |level: u64, size: u64| size.saturating_mul(level).saturating_mul(n);
        let inputs = (INPUTS as u64)
            .saturating_mul(poly(top, 2))
            .saturating_mul(RESIDUE);
        // Where the first dense layer sums the squares' unscaled tensors, its accumulators and
        // a group's squares hold Q u P of the square level.
        let square_level = plan.square_level;
        let summed_limbs = match self.sums_tensors(first, square_level) {
            true => square_level + first.level_data(square_level).auxiliary_limbs,
            false => hidden_level as usize,
        } as u64;
        let accumulators = hidden
            .saturating_mul(poly(summed_limbs, 3))
            .saturating_mul(ACCUMULATOR);
        let group = (GROUP_POSITIONS as u64)
            .saturating_mul(maps)
            .saturating_mul(poly(top, 2).saturating_add(poly(summed_limbs.max(top), 3)))
            .saturating_mul(RESIDUE);
        let second = hidden
            .saturating_mul(poly(hidden_level, 2))
            .saturating_mul(RESIDUE);
        let outputs = (CLASSES as u64)
            .saturating_mul(
                poly(hidden_level, 3).saturating_mul(ACCUMULATOR) + poly(output_level, 2) * RESIDUE,
            )
            .saturating_mul(self.params().channels().len() as u64);
        let counted = [inputs, accumulators, group, second, outputs, batch_bytes]
            .into_iter()
            .fold(0u64, u64::saturating_add);
        let peak_bytes = (counted as f64 * (1.0 + OVERHEAD)) as u64;

        let per_limb = SQUARE_SECONDS_PER_LIMB_8192 * n as f64 / 8192.0;
        let square_seconds = (features as f64 * plan.square_level as f64
            + hidden as f64 * hidden_level as f64)
            * per_limb;
        let macs = (features as f64 * (KERNEL * KERNEL) as f64 * poly(top, 2) as f64)
            + (hidden as f64 * features as f64 * poly(hidden_level, 3) as f64)
            + (CLASSES as f64 * hidden as f64 * poly(hidden_level, 2) as f64);
        let channels = self.params().channels().len() as f64;
        let seconds = channels * (square_seconds + macs * MAC_SECONDS) / threads.max(1) as f64;
        Ok(ResourceEstimate {
            peak_bytes,
            seconds,
        })
    }
}
