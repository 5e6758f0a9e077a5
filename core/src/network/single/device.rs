//! What a small device needs to encrypt images for a model's single-image plan, without the
//! model or the planner (whose search over parameters takes megabytes): the parameters the
//! plan chose (the primes themselves, so that a device need not search for them), the owner's
//! input layout (which pixel goes to which column), the quantized value of each pixel level,
//! and each channel's parameter id. The service's owner makes it once with
//! [`DeviceProfile::new`]; the device reads it with [`DeviceProfile::from_bytes`] (checked
//! like any input) and builds one channel at a time, checked against its id: a microcontroller
//! the table-free [`CompactChannel`] ([`DeviceProfile::compact_channel`], with
//! [`DeviceProfile::encode_into`]), a host full [`Parameters`] ([`DeviceProfile::channel`],
//! with [`DeviceProfile::encode`]). Both give the plaintext [`super::encode_single_input`]
//! gives.

use alloc::vec::Vec;

use super::PlannedSingle;
use super::evaluate::encode_columns;
use crate::Error;
use crate::backend::Backend;
use crate::bfv::{CompactChannel, Parameters, Plaintext, exponent_slot};
use crate::model::polynomial::PolynomialNetwork;
use crate::network::MAX_CHANNELS;
use crate::rns::MAX_LIMBS;

const MAGIC: [u8; 4] = *b"CNDP";
/// Version 2 lists the primes (version 1 had their counts only).
const VERSION: u8 = 2;

/// A model's single-image plan as a device needs it (see the module).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceProfile {
    /// Ring degree.
    pub n: usize,
    /// The ciphertext primes (30 bits each), q_0 first.
    pub q_primes: Vec<u32>,
    /// The special primes of the owner's keys (they enter the parameters' identity).
    pub special_primes: Vec<u32>,
    /// Whether uploads drop their last limb ([`crate::bfv::SecretKey::encrypt_compressed_by_limb`]).
    pub compressed: bool,
    /// The plaintext CRT primes, one per channel.
    pub plaintext_primes: Vec<u32>,
    /// [`Parameters::id`] of each channel.
    pub channel_ids: Vec<u64>,
    /// The network's input size in pixels.
    pub pixels: usize,
    /// The network's pixel precision: pixel p becomes round(p L / 255), L in 1..=255.
    pub input_levels: u16,
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
            q_primes: first.ciphertext_basis().primes(),
            special_primes: first.special_primes(),
            compressed: planned.plan.compressed_input,
            plaintext_primes: params.plaintext_primes(),
            channel_ids: params.channels().iter().map(Parameters::id).collect(),
            pixels: network.input().len(),
            input_levels: network.input_levels(),
            input: planned.plan.layout.input.clone(),
        }
    }

    /// Serializes (little-endian): magic, version, flags and prime counts, sizes, ciphertext and
    /// special primes, plaintext primes, ids, pixel levels, layout.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&[
            VERSION,
            u8::from(self.compressed),
            self.q_primes.len() as u8,
            self.special_primes.len() as u8,
        ]);
        for word in [
            self.n as u32,
            self.plaintext_primes.len() as u32,
            self.pixels as u32,
            self.input.len() as u32,
        ] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        for p in self
            .q_primes
            .iter()
            .chain(&self.special_primes)
            .chain(&self.plaintext_primes)
        {
            out.extend_from_slice(&p.to_le_bytes());
        }
        for id in &self.channel_ids {
            out.extend_from_slice(&id.to_le_bytes());
        }
        out.extend_from_slice(&u32::from(self.input_levels).to_le_bytes());
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
        if q_primes == 0
            || q_primes + special_primes > MAX_LIMBS
            || !(1..=2).contains(&special_primes)
        {
            return Err(malformed(
                "no ciphertext primes, too many, or not one or two special primes",
            ));
        }
        // The rest must hold exactly what the counts say (8 bytes an input pair).
        let rest = (q_primes + special_primes) * 4 + channels * 12 + 4;
        if inputs > n / 2 || pixels == 0 || reader.remaining() != rest + inputs.saturating_mul(8) {
            return Err(malformed("the counts do not match the profile's length"));
        }
        let mut primes = |count| {
            (0..count)
                .map(|_| reader.u32())
                .collect::<Result<Vec<_>, _>>()
        };
        let q_primes = primes(q_primes)?;
        let special_primes = primes(special_primes)?;
        let plaintext_primes = primes(channels)?;
        let channel_ids = (0..channels)
            .map(|_| reader.u64())
            .collect::<Result<_, _>>()?;
        let input_levels = match reader.u32()? {
            levels @ 1..=255 => levels as u16,
            _ => return Err(malformed("pixel levels must be 1 to 255")),
        };
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
            input_levels,
            input,
        })
    }

    /// Channel `c`'s plaintext prime and parameter id.
    fn channel_entry(&self, c: usize) -> Result<(u32, u64), Error> {
        self.plaintext_primes
            .get(c)
            .copied()
            .zip(self.channel_ids.get(c).copied())
            .ok_or(Error::Incompatible {
                reason: "no such CRT channel",
            })
    }

    /// The parameters of channel `c`, built alone (a host holds one channel's at a time),
    /// checked to be those the profile was made under.
    pub fn channel(&self, c: usize, backend: Backend) -> Result<Parameters, Error> {
        let (t, id) = self.channel_entry(c)?;
        let params = Parameters::builder()
            .degree(self.n)
            .ciphertext_primes(&self.q_primes)
            .special_primes(self.special_primes.len())
            .plaintext_modulus(t)
            .backend(backend)
            .build()?;
        // The builder chooses the special primes itself: they must be the listed ones.
        if params.special_primes() != self.special_primes {
            return Err(Error::Incompatible {
                reason: "the profile's special primes are not those of its parameters",
            });
        }
        check_id(params.id(), id)?;
        Ok(params)
    }

    /// Channel `c` for a microcontroller: the table-free [`CompactChannel`] (a few words a
    /// prime), checked to be the parameters the profile was made under.
    pub fn compact_channel(&self, c: usize) -> Result<CompactChannel, Error> {
        let (t, id) = self.channel_entry(c)?;
        let channel = CompactChannel::new(self.n, &self.q_primes, &self.special_primes, t)?;
        check_id(channel.id(), id)?;
        Ok(channel)
    }

    /// The plaintext of `image` (its pixels, the network's input order) under `params`.
    pub fn encode(&self, params: &Parameters, image: &[u8]) -> Result<Plaintext, Error> {
        if image.len() != self.pixels || params.degree() != self.n || !self.levels_valid() {
            return Err(Error::InvalidParameters {
                reason: "an image of the profile's input size, under its ring degree",
            });
        }
        encode_columns(params, &self.input, |neuron| {
            self.level(image[neuron as usize])
        })
    }

    /// [`DeviceProfile::encode`] for a [`CompactChannel`], into the caller's n words (no
    /// other memory): the plaintext's coefficients.
    pub fn encode_into(
        &self,
        channel: &CompactChannel,
        image: &[u8],
        m: &mut [u32],
    ) -> Result<(), Error> {
        let n = self.n;
        if image.len() != self.pixels
            || channel.degree() != n
            || m.len() != n
            || !self.levels_valid()
        {
            return Err(Error::InvalidParameters {
                reason: "an image of the profile's input size, n words, under its ring degree",
            });
        }
        let t = channel.plaintext_modulus();
        m.fill(0);
        for &(neuron, column) in &self.input {
            // Column c of the first slot row is the slot of exponent 3^c (super::column_slots).
            let slot = exponent_slot(n, three_to_the(column, 2 * n));
            m[slot] = t.reduce_i64(self.level(image[neuron as usize]));
        }
        channel.encode_slots(m)
    }
}

impl DeviceProfile {
    /// The quantized value of a (secret) pixel, as the network quantizes it
    /// ([`PolynomialNetwork::quantize_pixel`]): round(p L / 255) in 32-bit arithmetic,
    /// constant time (the division by the constant 255 compiles to a multiplication).
    fn level(&self, pixel: u8) -> i64 {
        ((u32::from(pixel) * u32::from(self.input_levels) + 127) / 255) as i64
    }

    /// Whether the pixel precision is one a network can have (1 to 255 levels).
    fn levels_valid(&self) -> bool {
        (1..=255).contains(&self.input_levels)
    }
}

/// 3^k mod `modulus` (a power of two up to 2^16: the products fit a u64).
fn three_to_the(mut k: u32, modulus: usize) -> usize {
    let (mut result, mut base) = (1u64, 3u64);
    while k > 0 {
        if k & 1 == 1 {
            result = result * base % modulus as u64;
        }
        base = base * base % modulus as u64;
        k >>= 1;
    }
    result as usize
}

fn check_id(made: u64, named: u64) -> Result<(), Error> {
    match made == named {
        true => Ok(()),
        false => Err(Error::Incompatible {
            reason: "the profile's parameters are not those its ids name",
        }),
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
