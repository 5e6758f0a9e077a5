//! The owner's evaluation keys for a single-image plan, and their file format.
//!
//! Serialized, little-endian:
//!
//! | bytes | field |
//! | --- | --- |
//! | 4 | magic `CNSK` |
//! | 1 | version (1) |
//! | 1 | 1 if a relinearization key follows, else 0 |
//! | 2 | Galois keys g |
//! | 4 + ... | the relinearization key as a u32 byte length and the object (`bfv::serialization`) |
//! | g (4 + ...) | the Galois keys, each the same way, by increasing element |

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use rand_core::CryptoRng;

use super::plan::SinglePlan;
use crate::Error;
use crate::bfv::serialization::LengthPrefixed;
use crate::bfv::{Evaluator, GaloisKey, RelinearizationKey, SecretKey};
use crate::network::NetworkParameters;

const MAGIC: [u8; 4] = *b"CNSK";
const VERSION: u8 = 1;
const HEADER: usize = 8;

fn malformed(reason: &'static str) -> Error {
    Error::Malformed { reason }
}

/// The owner's evaluation keys for a plan: the relinearization key (when an activation
/// multiplies) and the Galois key of every rotation, truncated to the highest level the
/// plan applies it at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SingleKeys {
    /// Relinearization.
    pub relin: Option<RelinearizationKey>,
    /// Galois keys by element.
    pub galois: BTreeMap<usize, GaloisKey>,
}

impl SingleKeys {
    /// Exactly the keys `plan` needs, from the owner's secret key.
    pub fn generate<R: CryptoRng + ?Sized>(
        params: &NetworkParameters,
        plan: &SinglePlan,
        secret: &SecretKey,
        rng: &mut R,
    ) -> Result<Self, Error> {
        let p = &params.channels()[0];
        let relin = match plan.needs_relinearization() {
            true => Some(RelinearizationKey::new(p, secret, rng)?),
            false => None,
        };
        let mut galois = BTreeMap::new();
        for (&g, &level) in &plan.keys {
            let key = GaloisKey::new(p, secret, g, rng)?.truncated(p, level)?;
            galois.insert(g, key);
        }
        Ok(Self { relin, galois })
    }

    /// `Ok` if these keys are made for `params` and hold every key `plan` needs at its
    /// level: checked before any work.
    pub fn check(&self, params: &NetworkParameters, plan: &SinglePlan) -> Result<(), Error> {
        let p = &params.channels()[0];
        let mismatch = Error::Incompatible {
            reason: "evaluation keys made for other parameters or another plan",
        };
        if params.channels().iter().any(|c| c.ring_id() != p.ring_id()) {
            return Err(mismatch);
        }
        match &self.relin {
            Some(r) if r.ring_id() != p.ring_id() => return Err(mismatch),
            None if plan.needs_relinearization() => return Err(mismatch),
            _ => {}
        }
        let evaluator = Evaluator::new(p);
        for (&g, &level) in &plan.keys {
            let key = self.galois.get(&g).ok_or(Error::Incompatible {
                reason: "a Galois key the plan needs is missing",
            })?;
            evaluator.check_galois_key(key)?;
            if key.element() != g || key.level() < level {
                return Err(mismatch);
            }
        }
        Ok(())
    }

    /// Serialized size ([`SingleKeys::to_bytes`]).
    pub fn serialized_len(&self, params: &NetworkParameters) -> usize {
        let p = &params.channels()[0];
        HEADER
            + self
                .relin
                .as_ref()
                .map_or(0, |_| 4 + p.relinearization_key_bytes())
            + self
                .galois
                .values()
                .map(|k| 4 + p.galois_key_bytes_at(k.level()))
                .sum::<usize>()
    }
}

impl SingleKeys {
    /// The serialized size of the keys `plan` needs: what a reader accepts at most.
    pub fn serialized_len_for(params: &NetworkParameters, plan: &SinglePlan) -> usize {
        let p = &params.channels()[0];
        HEADER
            + if plan.needs_relinearization() {
                4 + p.relinearization_key_bytes()
            } else {
                0
            }
            + plan
                .keys
                .values()
                .map(|&l| 4 + p.galois_key_bytes_at(l))
                .sum::<usize>()
    }

    /// Serializes.
    pub fn to_bytes(&self, params: &NetworkParameters) -> Vec<u8> {
        let p = &params.channels()[0];
        let items: Vec<Vec<u8>> = self
            .relin
            .iter()
            .map(|r| r.to_bytes(p))
            .chain(self.galois.values().map(|k| k.to_bytes(p)))
            .collect();
        let mut out = Vec::with_capacity(HEADER + items.iter().map(|i| 4 + i.len()).sum::<usize>());
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(self.relin.is_some() as u8);
        out.extend_from_slice(&(self.galois.len() as u16).to_le_bytes());
        for item in &items {
            out.extend_from_slice(&(item.len() as u32).to_le_bytes());
            out.extend_from_slice(item);
        }
        out
    }

    /// Parses keys made for `params`, checking every field and key (whether they serve a
    /// plan is [`SingleKeys::check`]'s).
    pub fn from_bytes(params: &NetworkParameters, bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() < HEADER || bytes[..4] != MAGIC {
            return Err(malformed("not single-image evaluation keys (bad magic)"));
        }
        if bytes[4] != VERSION {
            return Err(malformed("unsupported single-image key version"));
        }
        let has_relin = match bytes[5] {
            0 => false,
            1 => true,
            _ => return Err(malformed("bad relinearization flag")),
        };
        let count = u16::from_le_bytes([bytes[6], bytes[7]]) as usize;
        let mut items = LengthPrefixed::new(bytes, HEADER, "truncated single-image keys");
        let p = &params.channels()[0];
        let relin = match has_relin {
            true => Some(RelinearizationKey::from_bytes(p, items.next_item()?)?),
            false => None,
        };
        let mut galois = BTreeMap::new();
        let mut last = 0;
        for _ in 0..count {
            let key = GaloisKey::from_bytes(p, items.next_item()?)?;
            if key.element() <= last {
                return Err(malformed("Galois keys out of order or repeated"));
            }
            last = key.element();
            galois.insert(key.element(), key);
        }
        items.finish("trailing bytes after the single-image keys")?;
        Ok(Self { relin, galois })
    }
}
