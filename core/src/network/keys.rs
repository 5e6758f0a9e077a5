//! The service's evaluation keys: relinearization, and the Galois keys that unpack packed
//! batches. They are made under the first channel's parameters: keys depend on n, Q and the
//! special primes, which every channel shares, not on t.
//!
//! Serialized, little-endian:
//!
//! | bytes | field |
//! | --- | --- |
//! | 4 | magic `CNEK` |
//! | 1 | version (1) |
//! | 1 | Galois keys g (0 to 15) |
//! | 2 | reserved (0) |
//! | 4 + ... | the relinearization key as a u32 byte length and the object (`bfv::serialization`) |
//! | g (4 + ...) | the Galois keys, each the same way, elements distinct |

use alloc::vec::Vec;

use rand_core::CryptoRng;

use super::{MAX_PACKING, NetworkParameters, Packing};
use crate::Error;
use crate::bfv::serialization::LengthPrefixed;
use crate::bfv::{GaloisKey, Parameters, RelinearizationKey, SecretKey};

const MAGIC: [u8; 4] = *b"CNEK";
const VERSION: u8 = 1;
const HEADER: usize = 8;

/// What the service needs besides the model: never a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvaluationKeys {
    /// Relinearization of the hidden layer.
    pub relin: RelinearizationKey,
    /// Galois keys of the packing elements (see [`Packing::elements`]).
    pub galois: Vec<GaloisKey>,
}

fn key_params(params: &NetworkParameters) -> &Parameters {
    &params.channels()[0]
}

fn malformed(reason: &'static str) -> Error {
    Error::Malformed { reason }
}

impl EvaluationKeys {
    /// The keys for batches packed up to `max_packing` pixels a ciphertext (a power of two,
    /// at most [`MAX_PACKING`]): `max_packing - 1` Galois keys.
    pub fn generate<R: CryptoRng + ?Sized>(
        params: &NetworkParameters,
        secret: &SecretKey,
        max_packing: usize,
        rng: &mut R,
    ) -> Result<Self, Error> {
        let p = key_params(params);
        let packing = Packing::new(max_packing)?;
        let relin = RelinearizationKey::new(p, secret, rng)?;
        let galois = packing
            .elements(p.degree())
            .into_iter()
            .map(|g| GaloisKey::new(p, secret, g, rng))
            .collect::<Result<_, _>>()?;
        Ok(Self { relin, galois })
    }

    /// `Ok` if these keys were made for the ring of `params` (every channel shares it) and
    /// have its shape: checked by [`super::NetworkEvaluator::new`] before any work.
    pub fn check(&self, params: &NetworkParameters) -> Result<(), Error> {
        let p = key_params(params);
        if params.channels().iter().any(|c| c.ring_id() != p.ring_id())
            || self.relin.ring_id() != p.ring_id()
            || self.galois.iter().any(|k| k.ring_id() != p.ring_id())
        {
            return Err(Error::Incompatible {
                reason: "evaluation keys made for other parameters than this model's",
            });
        }
        let evaluator = crate::bfv::Evaluator::new(p);
        for key in &self.galois {
            evaluator.check_galois_key(key)?;
        }
        Ok(())
    }

    /// The Galois key of element g, if present.
    pub fn galois_key(&self, element: usize) -> Option<&GaloisKey> {
        self.galois.iter().find(|k| k.element() == element)
    }

    /// The densest packing these keys unpack at degree n.
    pub fn max_packing(&self, n: usize) -> Packing {
        let mut best = Packing::NONE;
        let mut factor = 2;
        while factor <= MAX_PACKING {
            let packing = Packing::new(factor).expect("power of two");
            if packing
                .elements(n)
                .iter()
                .all(|&g| self.galois_key(g).is_some())
            {
                best = packing;
            }
            factor *= 2;
        }
        best
    }

    /// The largest serialized size of evaluation keys for `params` (every Galois key
    /// present): what a reader may accept before parsing them.
    pub fn max_serialized_len(params: &NetworkParameters) -> usize {
        let p = key_params(params);
        HEADER + 4 + p.relinearization_key_bytes() + (MAX_PACKING - 1) * (4 + p.galois_key_bytes())
    }

    /// Serializes.
    pub fn to_bytes(&self, params: &NetworkParameters) -> Vec<u8> {
        let p = key_params(params);
        let items: Vec<Vec<u8>> = core::iter::once(self.relin.to_bytes(p))
            .chain(self.galois.iter().map(|k| k.to_bytes(p)))
            .collect();
        let mut out = Vec::with_capacity(HEADER + items.iter().map(|i| 4 + i.len()).sum::<usize>());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&[VERSION, self.galois.len() as u8, 0, 0]);
        for item in &items {
            out.extend_from_slice(&(item.len() as u32).to_le_bytes());
            out.extend_from_slice(item);
        }
        out
    }

    /// Parses keys made for `params`, checking every field and key.
    pub fn from_bytes(params: &NetworkParameters, bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() < HEADER || bytes[..4] != MAGIC {
            return Err(malformed("not a cryptonets evaluation key (bad magic)"));
        }
        if bytes[4] != VERSION {
            return Err(malformed("unsupported evaluation key version"));
        }
        if bytes[6..8] != [0, 0] {
            return Err(malformed("reserved bytes are not zero"));
        }
        let count = bytes[5] as usize;
        if count >= MAX_PACKING {
            return Err(malformed("too many Galois keys"));
        }
        let mut items = LengthPrefixed::new(bytes, HEADER, "truncated evaluation key");
        let p = key_params(params);
        let relin = RelinearizationKey::from_bytes(p, items.next_item()?)?;
        let mut galois: Vec<GaloisKey> = Vec::with_capacity(count);
        for _ in 0..count {
            let key = GaloisKey::from_bytes(p, items.next_item()?)?;
            if galois.iter().any(|k| k.element() == key.element()) {
                return Err(malformed("repeated Galois element"));
            }
            galois.push(key);
        }
        items.finish("trailing bytes after the evaluation key")?;
        Ok(Self { relin, galois })
    }
}
