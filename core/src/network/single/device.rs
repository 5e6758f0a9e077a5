//! What a small device needs to encrypt images for a model's single-image plan, without the
//! model or the planner (whose search over parameters takes megabytes): the parameters the
//! plan chose, the owner's input layout (which pixel goes to which column), the quantized
//! value of each pixel level, and each channel's parameter id. The service's owner makes it
//! once with [`DeviceProfile::new`]; the device reads it with [`DeviceProfile::from_bytes`]
//! (checked like any input), builds one channel's [`Parameters`] at a time
//! ([`DeviceProfile::channel`], checked against the id) and encodes with
//! [`DeviceProfile::encode`], which gives the plaintext [`super::encode_single_input`] gives.

use alloc::vec::Vec;

use super::PlannedSingle;
use super::evaluate::encode_columns;
use crate::Error;
use crate::backend::Backend;
use crate::bfv::{Parameters, Plaintext};
use crate::model::polynomial::PolynomialNetwork;
use crate::network::MAX_CHANNELS;

const MAGIC: [u8; 4] = *b"CNDP";
const VERSION: u8 = 1;
/// Pixel levels: one quantized value for each byte value.
const LEVELS: usize = 256;

/// A model's single-image plan as a device needs it (see the module).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceProfile {
    /// Ring degree.
    pub n: usize,
    /// Ciphertext primes (30 bits each).
    pub q_primes: usize,
    /// Special primes.
    pub special_primes: usize,
    /// Whether uploads drop their last limb ([`crate::bfv::SecretKey::encrypt_compressed_by_limb`]).
    pub compressed: bool,
    /// The plaintext CRT primes, one per channel.
    pub plaintext_primes: Vec<u32>,
    /// [`Parameters::id`] of each channel.
    pub channel_ids: Vec<u64>,
    /// The network's input size in pixels.
    pub pixels: usize,
    /// The quantized value of each pixel level 0..=255.
    pub levels: Vec<i64>,
    /// (input neuron, column) of the owner's layout.
    pub input: Vec<(u32, u32)>,
}

fn malformed(reason: &'static str) -> Error {
    Error::Malformed { reason }
}

impl DeviceProfile {
    /// The profile of `planned`, the single-image plan of `network`.
    pub fn new(planned: &PlannedSingle, network: &PolynomialNetwork) -> Self {
        let params = &planned.params;
        let first = &params.channels()[0];
        Self {
            n: params.degree(),
            q_primes: first.max_level(),
            special_primes: first.special_basis().map_or(0, |s| s.len()),
            compressed: planned.plan.compressed_input,
            plaintext_primes: params.plaintext_primes(),
            channel_ids: params.channels().iter().map(Parameters::id).collect(),
            pixels: network.input().len(),
            levels: (0..=255u8).map(|p| network.quantize_pixel(p)).collect(),
            input: planned.plan.layout.input.clone(),
        }
    }

    /// Serializes (little-endian): magic, version, flags, counts, primes, ids, levels, layout.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&[
            VERSION,
            u8::from(self.compressed),
            self.q_primes as u8,
            self.special_primes as u8,
        ]);
        for word in [
            self.n as u32,
            self.plaintext_primes.len() as u32,
            self.pixels as u32,
            self.input.len() as u32,
        ] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        for t in &self.plaintext_primes {
            out.extend_from_slice(&t.to_le_bytes());
        }
        for id in &self.channel_ids {
            out.extend_from_slice(&id.to_le_bytes());
        }
        for v in &self.levels {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for (neuron, column) in &self.input {
            out.extend_from_slice(&neuron.to_le_bytes());
            out.extend_from_slice(&column.to_le_bytes());
        }
        out
    }

    /// Parses and checks a profile: every count is bounded by the bytes present, every
    /// neuron by the input size and every column by the slot row.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let mut reader = Reader { bytes, at: 0 };
        if reader.take(4)? != MAGIC {
            return Err(malformed("not a device profile (bad magic)"));
        }
        let head = reader.take(4)?;
        if head[0] != VERSION {
            return Err(malformed("unsupported device profile version"));
        }
        if head[1] > 1 {
            return Err(malformed("the compression flag is 0 or 1"));
        }
        let (compressed, q_primes, special_primes) =
            (head[1] == 1, head[2] as usize, head[3] as usize);
        let n = reader.u32()? as usize;
        let channels = reader.u32()? as usize;
        let pixels = reader.u32()? as usize;
        let inputs = reader.u32()? as usize;
        if !n.is_power_of_two() || !(crate::ntt::MIN_DEGREE..=crate::ntt::MAX_DEGREE).contains(&n) {
            return Err(malformed("the ring degree is not a supported power of two"));
        }
        if channels == 0 || channels > MAX_CHANNELS {
            return Err(malformed("one to eight CRT channels"));
        }
        if q_primes == 0 || !(1..=2).contains(&special_primes) {
            return Err(malformed(
                "no ciphertext primes, or not one or two special primes",
            ));
        }
        // The rest must hold exactly what the counts say (8 bytes an input pair).
        let rest = channels * 12 + LEVELS * 8;
        if inputs > n / 2 || pixels == 0 || reader.remaining() != rest + inputs.saturating_mul(8) {
            return Err(malformed("the counts do not match the profile's length"));
        }
        let plaintext_primes = (0..channels)
            .map(|_| reader.u32())
            .collect::<Result<_, _>>()?;
        let channel_ids = (0..channels)
            .map(|_| reader.u64())
            .collect::<Result<_, _>>()?;
        let levels = (0..LEVELS)
            .map(|_| reader.u64().map(|v| v as i64))
            .collect::<Result<_, _>>()?;
        let mut input = Vec::with_capacity(inputs);
        for _ in 0..inputs {
            let (neuron, column) = (reader.u32()?, reader.u32()?);
            if neuron as usize >= pixels || column as usize >= n / 2 {
                return Err(malformed("an input pixel or column out of range"));
            }
            input.push((neuron, column));
        }
        Ok(Self {
            n,
            q_primes,
            special_primes,
            compressed,
            plaintext_primes,
            channel_ids,
            pixels,
            levels,
            input,
        })
    }

    /// The parameters of channel `c`, built alone (a device holds one channel's at a time),
    /// checked to be those the profile was made under.
    pub fn channel(&self, c: usize, backend: Backend) -> Result<Parameters, Error> {
        let (&t, &id) = self
            .plaintext_primes
            .get(c)
            .zip(self.channel_ids.get(c))
            .ok_or(Error::Incompatible {
                reason: "no such CRT channel",
            })?;
        let params = Parameters::builder()
            .degree(self.n)
            .ciphertext_prime_sizes(30, self.q_primes)
            .special_primes(self.special_primes)
            .plaintext_modulus(t)
            .backend(backend)
            .build()?;
        if params.id() != id {
            return Err(Error::Incompatible {
                reason: "the profile's parameters are not those its ids name",
            });
        }
        Ok(params)
    }

    /// The plaintext of `image` (its pixels, the network's input order) under `params`.
    pub fn encode(&self, params: &Parameters, image: &[u8]) -> Result<Plaintext, Error> {
        if image.len() != self.pixels || params.degree() != self.n {
            return Err(Error::InvalidParameters {
                reason: "an image of the profile's input size, under its ring degree",
            });
        }
        encode_columns(params, &self.input, |neuron| {
            self.levels[image[neuron as usize] as usize]
        })
    }
}

/// Reads little-endian fields, each checked against the end.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, k: usize) -> Result<&'a [u8], Error> {
        let end = self
            .at
            .checked_add(k)
            .ok_or(malformed("truncated device profile"))?;
        let field = self
            .bytes
            .get(self.at..end)
            .ok_or(malformed("truncated device profile"))?;
        self.at = end;
        Ok(field)
    }

    fn u32(&mut self) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, Error> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }
}
