//! A priori noise estimates: how much of the noise budget every step of the network uses,
//! computed from the parameters and the model's weights before anything is evaluated.
//!
//! Noise is tracked as the invariant noise v = |[t (c0 + c1 s + c2 s^2)]_Q| / Q of a
//! coefficient (decryption is correct while v < 1/2; the budget is -log2(2 v) bits). Linear
//! steps are bounded exactly from the weights; multiplication, relinearization and rounding
//! use the usual heuristic bounds at six standard deviations, with a margin. The estimates
//! are checked against the measured budgets on real data by the tests.

use super::NetworkParameters;
use crate::Error;
use crate::model::{CLASSES, CONV_SIDE, KERNEL, Model};
use crate::rns::libm_log2;
use crate::sampling::CBD_ETA;

/// Bits of budget that must remain after the last step.
pub const MARGIN_BITS: f64 = 4.0;

/// What the network's input ciphertexts went through before the convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inputs {
    /// Fresh secret-key encryptions (a full batch).
    Fresh,
    /// Fresh encryptions that a Galois automorphism and key switch unpacked (a packed batch).
    Unpacked,
}

impl Inputs {
    /// What the inputs of a batch of `packing` go through: a packed batch is unpacked.
    pub fn of(packing: super::Packing) -> Self {
        match packing.factor() {
            1 => Inputs::Fresh,
            _ => Inputs::Unpacked,
        }
    }
}

/// Estimated noise budget, in bits, after each step of the network (worst channel).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NoiseEstimate {
    /// An input ciphertext (fresh, or unpacked).
    pub fresh: f64,
    /// After the convolution.
    pub conv: f64,
    /// After squaring the convolution outputs (at the square level).
    pub conv_squared: f64,
    /// After the first dense layer (at the hidden level).
    pub dense1: f64,
    /// After relinearizing and squaring the hidden units.
    pub dense1_squared: f64,
    /// The logits at the hidden level.
    pub logits: f64,
    /// The logits switched down to the output level: what decryption sees.
    pub output: f64,
}

/// How the evaluator runs a model under given parameters: the level the convolution outputs
/// are squared at (they are switched down to it first: a square over fewer primes, with a
/// smaller auxiliary basis, is the batch's largest saving), the level of the hidden layer
/// (the squares are switched down to it before the first dense layer) and of the outputs,
/// the lowest ones the noise estimate allows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvaluationPlan {
    /// Level of the convolution outputs' squares.
    pub square_level: usize,
    /// Level of the first dense layer, the relinearization and the second square (at most
    /// `square_level`).
    pub hidden_level: usize,
    /// Level of the output ciphertexts.
    pub output_level: usize,
    /// Estimated budgets.
    pub estimate: NoiseEstimate,
}

/// log2(2^a + 2^b).
pub(super) fn log_add(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    hi + libm_log2(1.0 + pow2(lo - hi))
}

fn pow2(x: f64) -> f64 {
    libm::exp2(x)
}

pub(super) struct Estimator {
    log_t: f64,
    log_n: f64,
    /// log2 Q_l for l = 1..=L.
    log_q: [f64; 16],
    /// log2 S, the special modulus of key switching.
    log_s: f64,
}

impl Estimator {
    /// The estimator of these parameters (the largest t of the channels: the worst one).
    pub(super) fn new(params: &NetworkParameters) -> Self {
        let first = &params.channels()[0];
        let moduli = first.ciphertext_basis().moduli();
        let mut log_q = [0.0; 16];
        for l in 1..=first.max_level().min(15) {
            log_q[l] = log_q[l - 1] + libm_log2(moduli[l - 1].value() as f64);
        }
        let log_t = params
            .channels()
            .iter()
            .map(|p| libm_log2(p.plaintext_modulus().value() as f64))
            .fold(0.0, f64::max);
        Self {
            log_t,
            log_n: libm_log2(first.degree() as f64),
            log_q,
            log_s: first.special_basis().map_or(0.0, |s| s.log2()),
        }
    }

    /// The invariant noise (log2) of a fresh secret-key encryption at level l.
    pub(super) fn fresh(&self, level: usize) -> f64 {
        self.log_t + libm_log2(CBD_ETA as f64 + 0.5) - self.log_q[level]
    }

    /// The invariant noise (log2) of a fresh encryption at level l whose last limb was
    /// dropped (`SeededCiphertext::compress`): the correction, up to q_{l-1} / 2, dominates.
    pub(super) fn fresh_compressed(&self, level: usize) -> f64 {
        let log_last = self.log_q[level] - self.log_q[level - 1];
        log_add(
            self.fresh(level),
            self.log_t + log_last - 1.0 - self.log_q[level],
        )
    }

    /// A product of two ciphertexts of noises a and b (the square's estimate generalized).
    pub(super) fn multiply(&self, a: f64, b: f64, level: usize) -> f64 {
        log_add(
            log_add(a, b) + self.log_t + self.log_n,
            self.rounding(level, 3),
        )
    }

    /// c x for an integer |c| >= 1.
    pub(super) fn scale(&self, v: f64, c: u64) -> f64 {
        v + libm_log2(c.max(1) as f64)
    }

    /// log2 of the rounding noise of a size-`size` ciphertext at level l (scale-and-round or
    /// modulus switching): t / Q_l (1 + 2 sqrt(n) + 2 n (size 3)).
    pub(super) fn rounding(&self, level: usize, size: usize) -> f64 {
        let n = pow2(self.log_n);
        let spread = 1.0 + 2.0 * libm::sqrt(n) + if size >= 3 { 2.0 * n } else { 0.0 };
        self.log_t - self.log_q[level] + libm_log2(spread)
    }

    /// Squaring multiplies the noise by about 2 t n (the cross terms m e and e k with
    /// the plaintext and the overflow polynomial), plus the rounding of t / Q.
    pub(super) fn square(&self, v: f64, level: usize) -> f64 {
        log_add(v + 1.0 + self.log_t + self.log_n, self.rounding(level, 3))
    }

    /// Relinearization at level l adds sum_i d_i e_i: l digits below q / 2 times key errors
    /// of deviation 3.24, six deviations: about 6 sqrt(l n) 2^30 absolute.
    pub(super) fn relinearize(&self, v: f64, level: usize) -> f64 {
        let absolute = libm_log2(6.0) + (libm_log2(level as f64) + self.log_n) / 2.0 + 30.0;
        log_add(v, self.log_t - self.log_q[level] + absolute)
    }

    /// A Galois automorphism with key switching at level l: the division by S rounds like a
    /// modulus switch of a size-2 ciphertext, and leaves the relinearization-like sum of
    /// digits times key errors divided by S.
    pub(super) fn unpack(&self, v: f64, level: usize) -> f64 {
        let absolute =
            libm_log2(6.0) + (libm_log2(level as f64) + self.log_n) / 2.0 + 30.0 - self.log_s;
        let keys = self.log_t - self.log_q[level] + absolute;
        log_add(v, log_add(self.rounding(level, 2), keys))
    }

    /// A product by a plaintext whose centered coefficients are anywhere in (-t/2, t/2]:
    /// the noise polynomial times the plaintext grows by about the plaintext's L2 norm, at
    /// most sqrt(n) t / 2 (measured: sqrt(n) t / sqrt(12) for a vector of slots, t = 2^19.5,
    /// n = 8192).
    pub(super) fn plain_product(&self, v: f64) -> f64 {
        v + self.log_n / 2.0 + self.log_t - 1.0
    }

    /// Noise v at `level` switched down to the lowest level that keeps [`MARGIN_BITS`] and
    /// from which `rest_fits(noise, level)` (the rest of the network) holds; unchanged if
    /// none below does.
    pub(super) fn switch_down(
        &self,
        v: f64,
        level: usize,
        rest_fits: impl Fn(f64, usize) -> bool,
    ) -> (f64, usize) {
        (1..level)
            .map(|l| (self.switch(v, l, 2), l))
            .find(|&(switched, l)| budget(switched) >= MARGIN_BITS && rest_fits(switched, l))
            .unwrap_or((v, level))
    }

    pub(super) fn switch(&self, v: f64, level: usize, size: usize) -> f64 {
        log_add(v, self.rounding(level, size))
    }

    /// A linear layer with weights summing to `l1` in absolute value and a rounded bias.
    pub(super) fn linear(&self, v: f64, l1: u64, level: usize) -> f64 {
        log_add(
            v + libm_log2(l1.max(1) as f64),
            self.log_t - self.log_q[level] - 1.0,
        )
    }
}

pub(super) fn budget(v: f64) -> f64 {
    -1.0 - v
}

impl EvaluationPlan {
    /// Estimates every step and picks the lowest hidden and output levels that keep
    /// [`MARGIN_BITS`]; refuses parameters under which decryption could fail.
    pub fn new(params: &NetworkParameters, model: &Model) -> Result<Self, Error> {
        Self::with_inputs(params, model, Inputs::Fresh)
    }

    /// As [`EvaluationPlan::new`], for inputs that went through `inputs`.
    pub fn with_inputs(
        params: &NetworkParameters,
        model: &Model,
        inputs: Inputs,
    ) -> Result<Self, Error> {
        let first = &params.channels()[0];
        let top = first.max_level();
        if inputs == Inputs::Unpacked && first.special_basis().is_none() {
            return Err(Error::InvalidParameters {
                reason: "unpacking needs parameters with special primes",
            });
        }
        let e = Estimator::new(params);
        let log_t = e.log_t;
        let log_q = e.log_q;
        let conv_l1 = (0..model.maps())
            .map(|m| {
                (0..KERNEL * KERNEL)
                    .map(|k| model.conv_weight(m, k).unsigned_abs())
                    .sum::<u64>()
            })
            .max()
            .unwrap_or(0);
        let features = model.maps() * CONV_SIDE * CONV_SIDE;
        let dense1_l1 = (0..model.hidden())
            .map(|u| {
                (0..features)
                    .map(|f| model.dense1_weight(u, f).unsigned_abs())
                    .sum::<u64>()
            })
            .max()
            .unwrap_or(0);
        let dense2_l1 = (0..CLASSES)
            .map(|c| {
                (0..model.hidden())
                    .map(|u| model.dense2_weight(c, u).unsigned_abs())
                    .sum::<u64>()
            })
            .max()
            .unwrap_or(0);

        let fresh = log_t + libm_log2(CBD_ETA as f64 + 0.5) - log_q[top];
        let fresh = match inputs {
            Inputs::Fresh => fresh,
            Inputs::Unpacked => e.unpack(fresh, top),
        };
        let conv = e.linear(fresh, conv_l1, top);
        // The convolution outputs switched down to `level` and squared there.
        let conv_squared_at = |level: usize| {
            let switched = if level < top {
                e.switch(conv, level, 2)
            } else {
                conv
            };
            e.square(switched, level)
        };
        let run_hidden = |square_level: usize, hidden: usize| {
            let conv_squared = conv_squared_at(square_level);
            let switched = if hidden < square_level {
                e.switch(conv_squared, hidden, 3)
            } else {
                conv_squared
            };
            let dense1 = e.linear(switched, dense1_l1, hidden);
            let squared = e.square(e.relinearize(dense1, hidden), hidden);
            let logits = e.linear(squared, dense2_l1, hidden);
            (dense1, squared, logits)
        };
        let enough = |v: f64| budget(v) >= MARGIN_BITS;
        let refuse = |layer: &'static str, v: f64| Error::InsufficientNoiseBudget {
            layer,
            estimated_bits: budget(v) as i32,
        };
        for (layer, v) in [
            ("input", fresh),
            ("convolution", conv),
            ("first square", conv_squared_at(top)),
        ] {
            if !enough(v) {
                return Err(refuse(layer, v));
            }
        }
        // The cheapest plan: the lowest square level, then the lowest hidden level, that
        // keep the margin to the logits.
        let levels = (1..=top)
            .filter(|&square| enough(conv_squared_at(square)))
            .find_map(|square| {
                (1..=square)
                    .find(|&hidden| enough(run_hidden(square, hidden).2))
                    .map(|hidden| (square, hidden))
            });
        let Some((square_level, hidden_level)) = levels else {
            let (dense1, squared, logits) = run_hidden(top, top);
            let (layer, v) = [
                ("first dense", dense1),
                ("second square", squared),
                ("last dense", logits),
            ]
            .into_iter()
            .find(|&(_, v)| !enough(v))
            .unwrap_or(("last dense", logits));
            return Err(refuse(layer, v));
        };
        let conv_squared = conv_squared_at(square_level);
        let (dense1, squared, logits) = run_hidden(square_level, hidden_level);
        let output_level = (1..=hidden_level)
            .find(|&l| l == hidden_level || enough(e.switch(logits, l, 3)))
            .unwrap_or(hidden_level);
        let output = if output_level < hidden_level {
            e.switch(logits, output_level, 3)
        } else {
            logits
        };
        Ok(Self {
            square_level,
            hidden_level,
            output_level,
            estimate: NoiseEstimate {
                fresh: budget(fresh),
                conv: budget(conv),
                conv_squared: budget(conv_squared),
                dense1: budget(dense1),
                dense1_squared: budget(squared),
                logits: budget(logits),
                output: budget(output),
            },
        })
    }
}
