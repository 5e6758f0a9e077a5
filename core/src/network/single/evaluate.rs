//! Evaluation of a [`SinglePlan`]: the owner's encoding and keys, the service's steps, the
//! owner's decoding.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use super::column_slots;
use super::keys::SingleKeys;
use super::plan::{
    Bias, Diagonal, DiagonalStep, GatherStep, RotationTree, SinglePlan, SingleStep, TapsStep,
};
use super::rotation_element;
use crate::Error;
use crate::backend::Kernels;
use crate::bfv::{
    BatchEncoder, Ciphertext, Evaluator, GaloisKey, MultiplyScratch, Parameters, Plaintext,
    SecretKey,
};
use crate::model::polynomial::PolynomialNetwork;
use crate::network::{NetworkParameters, WideCrt, decrypt_residues, parallel};

/// The owner's plaintext of one image under one channel's parameters: every input neuron's
/// quantized pixel at its column of the plan's layout, zero elsewhere.
pub fn encode_single_input(
    params: &Parameters,
    plan: &SinglePlan,
    network: &PolynomialNetwork,
    image: &[u8],
) -> Result<Plaintext, Error> {
    let n = params.degree();
    if image.len() != network.input().len() || plan.layout.n != n {
        return Err(Error::InvalidParameters {
            reason: "an image of the network's input size, under the plan's ring degree",
        });
    }
    encode_columns(params, &plan.layout.input, |neuron| {
        network.quantize_pixel(image[neuron as usize])
    })
}

/// The plaintext with `value(neuron)` at each (neuron, column) of an owner's layout: what
/// [`encode_single_input`] and a device's [`super::DeviceProfile::encode`] share.
pub(crate) fn encode_columns(
    params: &Parameters,
    input: &[(u32, u32)],
    value: impl Fn(u32) -> i64,
) -> Result<Plaintext, Error> {
    let n = params.degree();
    let slots = column_slots(n);
    let mut values = alloc::vec![0i64; n];
    for &(neuron, column) in input {
        let slot = slots.get(column as usize).ok_or(Error::InvalidParameters {
            reason: "an input column outside the slot row",
        })?;
        values[*slot as usize] = value(neuron);
    }
    BatchEncoder::new(params).encode_signed(&values)
}

/// Decrypts one image's outputs (per channel, one ciphertext per output part), checking
/// every noise budget first, and combines the residues into the exact logits.
pub fn decode_single_outputs(
    params: &NetworkParameters,
    secret: &SecretKey,
    plan: &SinglePlan,
    outputs: &[Vec<Ciphertext>],
) -> Result<(Vec<num_bigint::BigInt>, u32), Error> {
    let parts = plan.layout.output();
    if outputs.iter().any(|o| o.len() != parts.len()) {
        return Err(Error::Incompatible {
            reason: "expected one ciphertext per output part in every CRT channel",
        });
    }
    let (residues, budget) = decrypt_residues(params, secret, outputs)?;
    let crt = WideCrt::new(&params.plaintext_moduli())?;
    let slots = column_slots(params.degree());
    let classes = parts.iter().map(|p| p.neurons.len()).sum::<usize>();
    let mut logits = alloc::vec![num_bigint::BigInt::default(); classes];
    for (k, part) in parts.iter().enumerate() {
        for (&o, &column) in part.neurons.iter().zip(&part.columns) {
            let slot = slots[column as usize] as usize;
            let r: heapless::Vec<u32, { crate::network::MAX_CHANNELS }> = residues
                .iter()
                .map(|per_part| per_part[k][slot] as u32)
                .collect();
            *logits.get_mut(o as usize).ok_or(Error::Incompatible {
                reason: "an output neuron outside the network's outputs",
            })? = crt.combine(&r)?;
        }
    }
    Ok((logits, budget))
}

/// Most bytes of diagonals kept encoded (NTT form, every channel) between images: below
/// this, a service encodes each diagonal once instead of once an image (for the CryptoNets
/// network about 600 MiB, a third of its latency).
pub const MAX_ENCODED_DIAGONAL_BYTES: usize = 1 << 30;

/// A plan's diagonals encoded for every channel: what a service computes once per model and
/// shares between every owner's evaluator ([`SingleEvaluator::with_diagonals`]). Empty
/// (diagonals encoded as they are used) above [`MAX_ENCODED_DIAGONAL_BYTES`].
#[derive(Clone, Debug)]
pub struct EncodedDiagonals {
    /// [`crate::bfv::Parameters::id`] of each channel.
    channels: Vec<u64>,
    /// encoded[channel][step][product]: each diagonal's plaintext at the step's level in
    /// NTT form, times 2^32 (for the Montgomery dot product).
    encoded: Vec<Vec<Vec<Vec<u32>>>>,
}

impl EncodedDiagonals {
    /// Encodes the diagonals of `plan` under `params`, unless they would take more than
    /// [`MAX_ENCODED_DIAGONAL_BYTES`].
    pub fn new(params: &NetworkParameters, plan: &SinglePlan) -> Result<Self, Error> {
        let n = params.degree();
        let bytes: usize = plan
            .layout
            .steps
            .iter()
            .zip(&plan.steps)
            .map(|(s, p)| match s {
                SingleStep::Diagonal(d) => {
                    d.giants.iter().map(|g| g.diagonals.len()).sum::<usize>() * p.input_level
                }
                _ => 0,
            })
            .sum::<usize>()
            .saturating_mul(n * 4 * params.channels().len());
        let encoded = match bytes <= MAX_ENCODED_DIAGONAL_BYTES {
            true => params
                .channels()
                .iter()
                .map(|p| {
                    plan.layout
                        .steps
                        .iter()
                        .zip(&plan.steps)
                        .map(|(s, planned)| match s {
                            SingleStep::Diagonal(d) => encode_diagonals(p, d, planned.input_level),
                            _ => Ok(Vec::new()),
                        })
                        .collect::<Result<Vec<_>, Error>>()
                })
                .collect::<Result<Vec<_>, Error>>()?,
            false => Vec::new(),
        };
        Ok(Self {
            channels: params.channels().iter().map(|p| p.id()).collect(),
            encoded,
        })
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.encoded
            .iter()
            .flatten()
            .flatten()
            .map(|d| d.len() * 4)
            .sum()
    }
}

/// Evaluates a planned network on one image's ciphertexts: public data only.
#[derive(Debug)]
pub struct SingleEvaluator<'a> {
    params: &'a NetworkParameters,
    plan: &'a SinglePlan,
    keys: &'a SingleKeys,
    diagonals: alloc::borrow::Cow<'a, EncodedDiagonals>,
    /// The slot of every column ([`column_slots`]), computed once.
    slots: Vec<u32>,
}

impl<'a> SingleEvaluator<'a> {
    /// Checks the keys against the parameters and the plan, before any work.
    pub fn new(
        params: &'a NetworkParameters,
        plan: &'a SinglePlan,
        keys: &'a SingleKeys,
    ) -> Result<Self, Error> {
        let diagonals = EncodedDiagonals::new(params, plan)?;
        Self::checked(params, plan, keys, alloc::borrow::Cow::Owned(diagonals))
    }

    /// [`SingleEvaluator::new`] with diagonals encoded once ([`EncodedDiagonals::new`] of
    /// the same parameters and plan) and shared.
    pub fn with_diagonals(
        params: &'a NetworkParameters,
        plan: &'a SinglePlan,
        keys: &'a SingleKeys,
        diagonals: &'a EncodedDiagonals,
    ) -> Result<Self, Error> {
        Self::checked(params, plan, keys, alloc::borrow::Cow::Borrowed(diagonals))
    }

    fn checked(
        params: &'a NetworkParameters,
        plan: &'a SinglePlan,
        keys: &'a SingleKeys,
        diagonals: alloc::borrow::Cow<'a, EncodedDiagonals>,
    ) -> Result<Self, Error> {
        keys.check(params, plan)?;
        let same_params = diagonals.channels.len() == params.channels().len()
            && diagonals
                .channels
                .iter()
                .zip(params.channels())
                .all(|(&id, p)| id == p.id());
        if params.degree() != plan.layout.n
            || plan.steps.len() != plan.layout.steps.len()
            || !same_params
            || diagonals.encoded.iter().any(|steps| {
                steps.len() != plan.layout.steps.len()
                    || steps.iter().zip(&plan.layout.steps).any(|(e, s)| {
                        let products = match s {
                            SingleStep::Diagonal(d) => {
                                d.giants.iter().map(|g| g.diagonals.len()).sum()
                            }
                            _ => 0,
                        };
                        e.len() != products
                    })
            })
        {
            return Err(Error::Incompatible {
                reason: "a plan of another ring degree, or diagonals of other parameters",
            });
        }
        Ok(Self {
            params,
            plan,
            keys,
            diagonals,
            slots: column_slots(params.degree()),
        })
    }

    /// The network on channel `channel`'s input (one fresh ciphertext, size 2, top level):
    /// one ciphertext per output part, at the plan's output level.
    pub fn evaluate_channel(
        &self,
        channel: usize,
        input: &Ciphertext,
    ) -> Result<Vec<Ciphertext>, Error> {
        self.evaluate_channel_observed(channel, input, |_, _| {})
    }

    /// [`SingleEvaluator::evaluate_channel`], showing `observe(step, parts)` every step's
    /// outputs (after its planned switch): how the tests hold the noise plan against the
    /// budgets measured step by step.
    pub fn evaluate_channel_observed(
        &self,
        channel: usize,
        input: &Ciphertext,
        mut observe: impl FnMut(usize, &[Ciphertext]),
    ) -> Result<Vec<Ciphertext>, Error> {
        let p = self.params.channel(channel)?;
        if input.parameters_id() != p.id() || input.level() != p.max_level() || input.size() != 2 {
            return Err(Error::Incompatible {
                reason: "one fresh ciphertext of this channel expected",
            });
        }
        let evaluator = Evaluator::new(p);
        let mut current: Vec<Ciphertext> = alloc::vec![input.clone()];
        for (i, (step, planned)) in self
            .plan
            .layout
            .steps
            .iter()
            .zip(&self.plan.steps)
            .enumerate()
        {
            let mut next = match step {
                SingleStep::Reshape => current,
                SingleStep::Taps(t) => self.taps(p, &evaluator, t, &current[0])?,
                SingleStep::Activation {
                    coefficients,
                    drop_constant,
                } => {
                    let mut c = *coefficients;
                    if *drop_constant {
                        c[0] = 0;
                    }
                    self.activation(&evaluator, c, &current)?
                }
                SingleStep::Diagonal(d) => {
                    let encoded = self
                        .diagonals
                        .encoded
                        .get(channel)
                        .map(|steps| steps[i].as_slice())
                        .filter(|e| !e.is_empty());
                    alloc::vec![self.diagonal(p, &evaluator, d, encoded, &current)?]
                }
                SingleStep::Gather(g) => alloc::vec![self.gather(p, &evaluator, g, &current[0])?],
            };
            for ct in next.iter_mut() {
                while ct.level() > planned.level {
                    evaluator.mod_switch_to_next_assign(ct)?;
                }
            }
            observe(i, &next);
            current = next;
        }
        Ok(current)
    }

    fn key(&self, shift: u32) -> Result<&GaloisKey, Error> {
        let g = rotation_element(self.plan.layout.n, shift as usize);
        self.keys.galois.get(&g).ok_or(Error::Incompatible {
            reason: "a Galois key the plan needs is missing",
        })
    }

    /// ct rotated by each shift (0 is ct itself), sharing one decomposition.
    fn rotations(
        &self,
        evaluator: &Evaluator<'_>,
        ct: &Ciphertext,
        shifts: &[u32],
    ) -> Result<Vec<Ciphertext>, Error> {
        let keys = shifts
            .iter()
            .filter(|&&s| s != 0)
            .map(|&s| self.key(s))
            .collect::<Result<Vec<_>, _>>()?;
        let mut rotated = evaluator.apply_galois_many(ct, &keys)?.into_iter();
        Ok(shifts
            .iter()
            .map(|&s| match s {
                0 => ct.clone(),
                _ => rotated.next().expect("one rotation per key"),
            })
            .collect())
    }

    /// ct rotated by one shift.
    fn rotate(
        &self,
        evaluator: &Evaluator<'_>,
        ct: Ciphertext,
        shift: u32,
    ) -> Result<Ciphertext, Error> {
        match shift {
            0 => Ok(ct),
            s => evaluator.apply_galois(&ct, self.key(s)?),
        }
    }

    /// ct rotated by every leaf of `tree`, in leaf order: digit by digit, each distinct
    /// prefix's ciphertext rotated by the next digit's values it leads to, together.
    fn tree_rotations(
        &self,
        evaluator: &Evaluator<'_>,
        ct: &Ciphertext,
        tree: &RotationTree,
    ) -> Result<Vec<Ciphertext>, Error> {
        let mut nodes: BTreeMap<Vec<u8>, Ciphertext> = BTreeMap::new();
        nodes.insert(Vec::new(), ct.clone());
        for (d, values) in tree.digits.iter().enumerate() {
            // prefix -> the value indices of this digit its leaves take.
            let mut wanted: BTreeMap<&[u8], alloc::collections::BTreeSet<u8>> = BTreeMap::new();
            for leaf in &tree.leaves {
                wanted.entry(&leaf[..d]).or_default().insert(leaf[d]);
            }
            let wanted: Vec<(&[u8], Vec<u8>)> = wanted
                .into_iter()
                .map(|(p, v)| (p, v.into_iter().collect()))
                .collect();
            let rotated = parallel::map(wanted.len(), |k| -> Result<Vec<Ciphertext>, Error> {
                let (prefix, indices) = &wanted[k];
                let node = nodes.get(*prefix).ok_or(Error::Incompatible {
                    reason: "a rotation tree's prefix is missing",
                })?;
                let shifts: Vec<u32> = indices
                    .iter()
                    .map(|&i| values.get(i as usize).copied().unwrap_or(0))
                    .collect();
                self.rotations(evaluator, node, &shifts)
            });
            let mut next = BTreeMap::new();
            for ((prefix, indices), cts) in wanted.iter().zip(rotated) {
                for (&i, c) in indices.iter().zip(cts?) {
                    let mut key = prefix.to_vec();
                    key.push(i);
                    next.insert(key, c);
                }
            }
            nodes = next;
        }
        tree.leaves
            .iter()
            .map(|leaf| {
                nodes.get(leaf).cloned().ok_or(Error::Incompatible {
                    reason: "a rotation tree's leaf is missing",
                })
            })
            .collect()
    }

    /// Horner's rule over `indices` (from the outermost): acc = rot(acc, shift) + P_i for
    /// each, then one more rotation, taking the sums out of `sums` (a missing one is zero).
    /// Returns zero for no indices.
    fn horner(
        &self,
        evaluator: &Evaluator<'_>,
        sums: &mut BTreeMap<i32, Ciphertext>,
        indices: impl Iterator<Item = i32>,
        shift: u32,
        level: usize,
    ) -> Result<Ciphertext, Error> {
        let mut acc: Option<Ciphertext> = None;
        for i in indices {
            let next = sums.remove(&i);
            acc = match (acc, next) {
                (None, next) => next,
                (Some(a), None) => Some(self.rotate(evaluator, a, shift)?),
                (Some(a), Some(mut p)) => {
                    evaluator.add_assign(&mut p, &self.rotate(evaluator, a, shift)?)?;
                    Some(p)
                }
            };
        }
        match acc {
            Some(a) => self.rotate(evaluator, a, shift),
            None => evaluator.linear_combination(&[], 0, level, 2),
        }
    }

    fn taps(
        &self,
        p: &Parameters,
        evaluator: &Evaluator<'_>,
        t: &TapsStep,
        input: &Ciphertext,
    ) -> Result<Vec<Ciphertext>, Error> {
        let leaves = self.tree_rotations(evaluator, input, &t.tree)?;
        let tap = |r: u32| -> Result<&Ciphertext, Error> {
            leaves.get(r as usize).ok_or(Error::Incompatible {
                reason: "a tap's rotation is not planned",
            })
        };
        let level = input.level();
        let maps = parallel::map(t.maps.len(), |o| -> Result<Ciphertext, Error> {
            let terms: Vec<(&Ciphertext, i64)> = t.maps[o]
                .iter()
                .map(|&(r, w)| Ok((tap(r)?, w)))
                .collect::<Result<_, Error>>()?;
            match &t.biases[o] {
                Bias::Constant(b) => evaluator.linear_combination(&terms, *b, level, 2),
                Bias::Columns(values) => {
                    let mut y = evaluator.linear_combination(&terms, 0, level, 2)?;
                    evaluator
                        .add_plain_assign(&mut y, &column_plaintext(p, &self.slots, values)?)?;
                    Ok(y)
                }
            }
        });
        maps.into_iter().collect()
    }

    fn activation(
        &self,
        evaluator: &Evaluator<'_>,
        c: [i64; 4],
        parts: &[Ciphertext],
    ) -> Result<Vec<Ciphertext>, Error> {
        let relin = self.keys.relin.as_ref();
        let results = parallel::map_init(parts.len(), MultiplyScratch::default, |s, k| {
            let x = &parts[k];
            let level = x.level();
            let needs = |d: usize| c[d..].iter().any(|&ck| ck != 0);
            let relin = || {
                relin.ok_or(Error::Incompatible {
                    reason: "the relinearization key is missing",
                })
            };
            let x2 = match needs(2) {
                true => {
                    let mut x2 = evaluator.square_to_level(x, level, s)?;
                    evaluator.relinearize_assign(&mut x2, relin()?)?;
                    Some(x2)
                }
                false => None,
            };
            let x3 = match (c[3], &x2) {
                (0, _) | (_, None) => None,
                (_, Some(x2)) => {
                    let mut x3 = evaluator.multiply_with(x2, x, s)?;
                    evaluator.relinearize_assign(&mut x3, relin()?)?;
                    Some(x3)
                }
            };
            if c == [0, 0, 1, 0] {
                return Ok(x2.expect("a square"));
            }
            let powers = [Some(x), x2.as_ref(), x3.as_ref()];
            let terms: Vec<(&Ciphertext, i64)> = powers
                .iter()
                .zip(&c[1..])
                .filter(|&(_, &ck)| ck != 0)
                .filter_map(|(p, &ck)| p.map(|p| (p, ck)))
                .collect();
            evaluator.linear_combination(&terms, c[0] as i128, level, 2)
        });
        results.into_iter().collect()
    }

    fn diagonal(
        &self,
        p: &Parameters,
        evaluator: &Evaluator<'_>,
        d: &DiagonalStep,
        encoded: Option<&[Vec<u32>]>,
        parts: &[Ciphertext],
    ) -> Result<Ciphertext, Error> {
        let (n, level) = (p.degree(), parts[0].level());
        if parts.len() != d.babies.len() || parts.iter().any(|c| c.level() != level) {
            return Err(Error::Incompatible {
                reason: "the parts of a layer do not match its plan",
            });
        }
        let basis = p.ciphertext_basis();
        let backend = p.backend();
        // Every part's baby rotations, in NTT form: [part][baby index] = (c0, c1).
        let rotated = parallel::map(parts.len(), |q| -> Result<Vec<[Vec<u32>; 2]>, Error> {
            let cts = self.tree_rotations(evaluator, &parts[q], &d.trees[q])?;
            Ok(cts
                .into_iter()
                .map(|ct| {
                    [0, 1].map(|i| {
                        let mut poly = ct.poly(i).to_vec();
                        basis.forward(backend, &mut poly, 0);
                        poly
                    })
                })
                .collect())
        });
        let rotated = rotated.into_iter().collect::<Result<Vec<_>, _>>()?;
        // Where each giant's products start in the flat list of encoded diagonals.
        let starts: Vec<usize> = d
            .giants
            .iter()
            .scan(0, |at, g| {
                let start = *at;
                *at += g.diagonals.len();
                Some(start)
            })
            .collect();
        let moduli = &basis.moduli()[..level];
        let partials = parallel::map(d.giants.len(), |g| -> Result<Ciphertext, Error> {
            let giant = &d.giants[g];
            let mut plaintexts: Vec<alloc::borrow::Cow<'_, [u32]>> =
                Vec::with_capacity(giant.diagonals.len());
            let mut inputs: Vec<&[Vec<u32>; 2]> = Vec::with_capacity(giant.diagonals.len());
            for (k, diagonal) in giant.diagonals.iter().enumerate() {
                plaintexts.push(match encoded {
                    Some(e) => alloc::borrow::Cow::Borrowed(e[starts[g] + k].as_slice()),
                    None => {
                        alloc::borrow::Cow::Owned(encode_diagonal(p, &self.slots, diagonal, level)?)
                    }
                });
                let b = d.babies[diagonal.part as usize]
                    .binary_search(&diagonal.baby)
                    .map_err(|_| Error::Incompatible {
                        reason: "a diagonal's baby step is not planned",
                    })?;
                inputs.push(&rotated[diagonal.part as usize][b]);
            }
            // sum_k x_k * p_k per limb, sixteen products to a lazy Montgomery dot product.
            let mut acc = [0, 1].map(|_| alloc::vec![0u32; level * n]);
            let mut chunk = alloc::vec![0u32; n];
            for (half, a) in acc.iter_mut().enumerate() {
                for (i, q) in moduli.iter().enumerate() {
                    let at = i * n..(i + 1) * n;
                    for (xs, ps) in inputs.chunks(16).zip(plaintexts.chunks(16)) {
                        let xs: Vec<&[u32]> = xs.iter().map(|x| &x[half][at.clone()]).collect();
                        let ps: Vec<&[u32]> = ps.iter().map(|p| &p[at.clone()]).collect();
                        backend.dot_pointwise_montgomery(&mut chunk, &xs, &ps, q);
                        a[at.clone()]
                            .iter_mut()
                            .zip(&chunk)
                            .for_each(|(a, &c)| *a = q.add(*a, c));
                    }
                }
                basis.inverse(backend, a, 0);
            }
            let [c0, c1] = acc;
            Ok(Ciphertext::from_parts(p, level, alloc::vec![c0, c1]))
        });
        let mut sums: BTreeMap<i32, Ciphertext> = BTreeMap::new();
        for (giant, partial) in d.giants.iter().zip(partials) {
            sums.insert(giant.index, partial?);
        }
        let columns = (n / 2) as u32;
        let (lo, hi) = d.giant_range();
        // Horner's rule: y = P_0 + rot(P_1 + rot(P_2 + ..., b), b), and the same with -b
        // for the negative giants.
        let mut y = self.horner(evaluator, &mut sums, (1..=hi).rev(), d.baby, level)?;
        let down = self.horner(evaluator, &mut sums, lo..=-1, columns - d.baby, level)?;
        evaluator.add_assign(&mut y, &down)?;
        if let Some(p0) = sums.remove(&0) {
            evaluator.add_assign(&mut y, &p0)?;
        }
        evaluator.add_plain_assign(&mut y, &column_plaintext(p, &self.slots, &d.bias)?)?;
        Ok(y)
    }

    fn gather(
        &self,
        p: &Parameters,
        evaluator: &Evaluator<'_>,
        g: &GatherStep,
        input: &Ciphertext,
    ) -> Result<Ciphertext, Error> {
        let level = input.level();
        let rotated = self.tree_rotations(evaluator, input, &g.tree)?;
        // T_o = U_o0 + rot(U_o1 + rot(U_o2 + ..., b), b): output o at column 0.
        let outputs = parallel::map(g.weights.len(), |o| -> Result<Ciphertext, Error> {
            let mut sums: BTreeMap<i32, Ciphertext> = BTreeMap::new();
            for (k, weights) in g.weights[o].iter().enumerate() {
                let terms: Vec<(&Ciphertext, i64)> = weights
                    .iter()
                    .map(|&(b, w)| (&rotated[b as usize], w))
                    .collect();
                sums.insert(k as i32, evaluator.linear_combination(&terms, 0, level, 2)?);
            }
            let giants = g.weights[o].len() as i32;
            let mut t = self.horner(evaluator, &mut sums, (1..giants).rev(), g.babies, level)?;
            if let Some(u0) = sums.remove(&0) {
                evaluator.add_assign(&mut t, &u0)?;
            }
            Ok(t)
        });
        // y = T_0 + rot(T_1 + rot(T_2 + ..., -K), -K): output o lands at column o K.
        let mut sums: BTreeMap<i32, Ciphertext> = BTreeMap::new();
        for (o, t) in outputs.into_iter().enumerate() {
            sums.insert(o as i32, t?);
        }
        let columns = (p.degree() / 2) as u32;
        let last = g.weights.len() as i32;
        let mut y = self.horner(
            evaluator,
            &mut sums,
            (1..last).rev(),
            columns - g.spacing,
            level,
        )?;
        if let Some(t0) = sums.remove(&0) {
            evaluator.add_assign(&mut y, &t0)?;
        }
        evaluator.add_plain_assign(&mut y, &column_plaintext(p, &self.slots, &g.bias)?)?;
        Ok(y)
    }
}

/// The plaintext with these values at these columns, zero elsewhere.
fn column_plaintext(
    p: &Parameters,
    slots: &[u32],
    values: &[(u32, i128)],
) -> Result<Plaintext, Error> {
    let n = p.degree();
    let t = p.plaintext_modulus().value() as i128;
    let mut slot_values = alloc::vec![0u64; n];
    for &(column, v) in values {
        slot_values[slots[column as usize] as usize] = v.rem_euclid(t) as u64;
    }
    BatchEncoder::new(p).encode(&slot_values)
}

/// One diagonal's plaintext at `level`: its values in their slots, encoded, lifted to Q
/// in NTT form and multiplied by 2^32 (undone by the Montgomery dot product).
fn encode_diagonal(
    p: &Parameters,
    slots: &[u32],
    diagonal: &Diagonal,
    level: usize,
) -> Result<Vec<u32>, Error> {
    let n = p.degree();
    let t = p.plaintext_modulus();
    let mut values = alloc::vec![0u64; n];
    for &(column, w) in &diagonal.values {
        values[slots[column as usize] as usize] = t.reduce_i64(w) as u64;
    }
    let mut lifted = lift_to_ntt(p, &BatchEncoder::new(p).encode(&values)?, level);
    for (limb, q) in lifted
        .chunks_exact_mut(n)
        .zip(p.ciphertext_basis().moduli())
    {
        p.backend()
            .mul_scalar_assign(limb, q.shoup(q.montgomery_r().value), q);
    }
    Ok(lifted)
}

/// Every diagonal of a step, in the order of its giants.
fn encode_diagonals(
    p: &Parameters,
    d: &DiagonalStep,
    level: usize,
) -> Result<Vec<Vec<u32>>, Error> {
    let all: Vec<&Diagonal> = d.giants.iter().flat_map(|g| &g.diagonals).collect();
    let slots = column_slots(p.degree());
    parallel::map(all.len(), |k| encode_diagonal(p, &slots, all[k], level))
        .into_iter()
        .collect()
}

/// m's centered coefficients modulo the first `level` primes of Q, in NTT form.
fn lift_to_ntt(p: &Parameters, m: &Plaintext, level: usize) -> Vec<u32> {
    let n = p.degree();
    let basis = p.ciphertext_basis();
    let t = p.plaintext_modulus();
    let mut lifted = alloc::vec![0u32; level * n];
    for (i, limb) in lifted.chunks_exact_mut(n).enumerate() {
        let q = &basis.moduli()[i];
        limb.iter_mut()
            .zip(m.coefficients())
            .for_each(|(x, &c)| *x = q.reduce_i64(t.center(c)));
    }
    basis.forward(p.backend(), &mut lifted, 0);
    lifted
}
