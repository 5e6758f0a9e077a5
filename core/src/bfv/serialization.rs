//! Versioned, compact, little-endian serialization.
//!
//! Every object starts with a 16-byte header: the magic `CNET`, the format version, the
//! object kind, two reserved zero bytes and the 64-bit identifier of its parameter set.
//! Residues are bit-packed with as many bits as their prime has (30 for the CryptoNets
//! primes), each limb padded to a whole byte. Decoding checks the header, derives every
//! length from the (already validated) parameters and one-byte fields it range-checks, checks
//! the exact total length before allocating, and checks that every residue is below its
//! prime: malformed input yields [`Error::Malformed`], never a panic.
//!
//! | kind | body |
//! | --- | --- |
//! | 1 parameters | n: u32, t: u32, k: u8, k primes: u32, and with special primes s: u8, s primes: u32 |
//! | 2 secret key | n ternary coefficients, 2 bits each (0, 1, 3 = -1) |
//! | 3 public key | p0, p1 (NTT form, top level) |
//! | 4 relinearization key | k digits of (k0, k1) (NTT form, top level) |
//! | 5 ciphertext | level: u8, size: u8, size polynomials of level limbs |
//! | 6 seeded ciphertext | level: u8, seed: 32 bytes, c0 of level limbs |
//! | 7 Galois key | element: u32, then per prime of Q: seed of k1 (32 bytes), k0 (NTT form, limbs of Q then of the special primes) |

use alloc::vec::Vec;

use super::encryption::{SeededCiphertext, expand_seed_into};
use super::galois::{check_element, digit_from_parts, serialized_k0};
use super::{
    Ciphertext, ExpandedCiphertext, GaloisKey, Parameters, PublicKey, RelinearizationKey, SecretKey,
};
use crate::Error;
use crate::backend::{Backend, Kernels};
use crate::zq::Modulus;
use zeroize::{Zeroize, Zeroizing};

/// The four bytes every serialized object starts with.
pub const MAGIC: [u8; 4] = *b"CNET";
/// The format version written and accepted.
pub const VERSION: u8 = 1;
const HEADER: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    Parameters = 1,
    SecretKey = 2,
    PublicKey = 3,
    RelinearizationKey = 4,
    Ciphertext = 5,
    SeededCiphertext = 6,
    GaloisKey = 7,
    CompressedSeededCiphertext = 8,
}

fn malformed(reason: &'static str) -> Error {
    Error::Malformed { reason }
}

/// Reads the items of a container, each prefixed by its length (u32, little-endian), every
/// length checked against the bytes left: the framing of key sets and batch files.
#[derive(Debug)]
pub struct LengthPrefixed<'a> {
    bytes: &'a [u8],
    offset: usize,
    truncated: &'static str,
}

impl<'a> LengthPrefixed<'a> {
    /// Items from `offset` on; a length past the end is refused with `truncated`.
    pub fn new(bytes: &'a [u8], offset: usize, truncated: &'static str) -> Self {
        Self {
            bytes,
            offset,
            truncated,
        }
    }

    /// The next item.
    pub fn next_item(&mut self) -> Result<&'a [u8], Error> {
        let start = self
            .offset
            .checked_add(4)
            .ok_or(malformed(self.truncated))?;
        let len = self
            .bytes
            .get(self.offset..start)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
            .ok_or(malformed(self.truncated))?;
        let item = self
            .bytes
            .get(start..start.saturating_add(len))
            .ok_or(malformed(self.truncated))?;
        self.offset = start + len;
        Ok(item)
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.offset)
    }

    /// `Ok` if every byte was read, else `trailing`.
    pub fn finish(self, trailing: &'static str) -> Result<(), Error> {
        match self.offset == self.bytes.len() {
            true => Ok(()),
            false => Err(malformed(trailing)),
        }
    }
}

fn header(kind: Kind, id: u64, body: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + body);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[VERSION, kind as u8, 0, 0]);
    out.extend_from_slice(&id.to_le_bytes());
    out
}

/// Checks the header and returns the body.
fn body(bytes: &[u8], kind: Kind, id: Option<u64>) -> Result<&[u8], Error> {
    if bytes.len() < HEADER || bytes[..4] != MAGIC {
        return Err(malformed("not a cryptonets object (bad magic)"));
    }
    if bytes[4] != VERSION {
        return Err(malformed("unsupported format version"));
    }
    if bytes[5] != kind as u8 {
        return Err(malformed("unexpected object kind"));
    }
    if bytes[6..8] != [0, 0] {
        return Err(malformed("reserved header bytes are not zero"));
    }
    let found = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    if id.is_some_and(|id| id != found) {
        return Err(malformed("made for another parameter set"));
    }
    Ok(&bytes[HEADER..])
}

/// Bytes of one packed limb of n residues mod q.
fn limb_bytes(n: usize, q: &Modulus) -> usize {
    (n * q.bits() as usize).div_ceil(8)
}

/// Bytes of a polynomial of `level` limbs.
fn poly_bytes(params: &Parameters, level: usize) -> usize {
    limbs_bytes(
        params.degree(),
        &params.ciphertext_basis().moduli()[..level],
    )
}

/// Bytes of a polynomial with one limb per modulus.
fn limbs_bytes(n: usize, moduli: &[Modulus]) -> usize {
    moduli.iter().map(|q| limb_bytes(n, q)).sum()
}

/// The moduli of key-switching keys: Q, then the special primes.
fn key_moduli(params: &Parameters) -> Vec<Modulus> {
    params.key_limbs().iter().map(|&(q, _)| *q).collect()
}

/// The moduli of a key-switching key truncated to `level`: Q_level, then the special primes.
fn key_moduli_at(params: &Parameters, level: usize) -> Vec<Modulus> {
    let top = params.max_level();
    let all = key_moduli(params);
    all[..level].iter().chain(&all[top..]).copied().collect()
}

fn pack_poly(params: &Parameters, poly: &[u32], out: &mut Vec<u8>) {
    pack_limbs(
        params.degree(),
        params.ciphertext_basis().moduli(),
        poly,
        out,
    )
}

fn pack_limbs(n: usize, moduli: &[Modulus], poly: &[u32], out: &mut Vec<u8>) {
    for (limb, q) in poly.chunks_exact(n).zip(moduli) {
        pack_limb(q, limb, out);
    }
}

/// Residues per packed chunk: a multiple of 8, so that every chunk but a limb's last ends on
/// a byte boundary and chunks packed one after the other are the limb packed whole.
pub(crate) const PACK_CHUNK: usize = 64;
/// Bytes of one packed chunk at most (residues below 2^32).
pub(crate) const PACKED_CHUNK_BYTES: usize = PACK_CHUNK * 4;

/// Packs up to [`PACK_CHUNK`] residues of `bits` bits into the front of `out` (the last byte
/// padded with zeros); returns the bytes written.
pub(crate) fn pack_chunk(bits: u32, residues: &[u32], out: &mut [u8; PACKED_CHUNK_BYTES]) -> usize {
    debug_assert!(residues.len() <= PACK_CHUNK);
    let (mut buffer, mut filled, mut written) = (0u64, 0u32, 0);
    for &x in residues {
        buffer |= (x as u64) << filled;
        filled += bits;
        while filled >= 8 {
            out[written] = buffer as u8;
            written += 1;
            buffer >>= 8;
            filled -= 8;
        }
    }
    if filled > 0 {
        out[written] = buffer as u8;
        written += 1;
    }
    written
}

/// Appends one limb of residues mod q, bit-packed and padded to a whole byte: limbs are
/// independent, so a polynomial can be written out one limb at a time.
pub(crate) fn pack_limb(q: &Modulus, limb: &[u32], out: &mut Vec<u8>) {
    let mut packed = [0u8; PACKED_CHUNK_BYTES];
    for chunk in limb.chunks(PACK_CHUNK) {
        let written = pack_chunk(q.bits(), chunk, &mut packed);
        out.extend_from_slice(&packed[..written]);
    }
}

/// Unpacks `level` limbs from the front of `bytes`, checking every residue.
fn unpack_poly(params: &Parameters, bytes: &[u8], level: usize) -> Result<Vec<u32>, Error> {
    unpack_limbs(
        params.backend(),
        params.degree(),
        &params.ciphertext_basis().moduli()[..level],
        bytes,
    )
}

/// Unpacks one limb per modulus from the front of `bytes`, checking every residue.
fn unpack_limbs(
    backend: &Backend,
    n: usize,
    moduli: &[Modulus],
    bytes: &[u8],
) -> Result<Vec<u32>, Error> {
    let mut out = Vec::new();
    unpack_limbs_into(backend, n, moduli, bytes, &mut out)?;
    Ok(out)
}

/// [`unpack_limbs`] into `out`, whatever it held (its buffer is reused).
fn unpack_limbs_into(
    backend: &Backend,
    n: usize,
    moduli: &[Modulus],
    bytes: &[u8],
    out: &mut Vec<u32>,
) -> Result<(), Error> {
    // Every word is written below: a buffer that already has the length is not zeroed again.
    out.resize(moduli.len() * n, 0);
    let mut offset = 0;
    for (q, out) in moduli.iter().zip(out.chunks_exact_mut(n)) {
        let len = limb_bytes(n, q);
        let limb = bytes
            .get(offset..offset + len)
            .ok_or(malformed("truncated polynomial"))?;
        offset += len;
        let bits = q.bits();
        if n.is_multiple_of(8) && bits == 30 {
            // Eight residues fill 30 bytes exactly: no padding, no partial byte.
            if !backend.unpack_30_bit(out, limb, q) {
                return Err(malformed("residue not below its prime"));
            }
            continue;
        }
        let mask = (1u64 << bits) - 1;
        let (mut buffer, mut filled, mut pos) = (0u64, 0u32, 0usize);
        for out in out.iter_mut() {
            if filled < bits {
                // Four bytes at a time (filled stays below bits + 32 <= 64), single bytes at
                // the end of the limb.
                if let Some(word) = limb.get(pos..pos + 4) {
                    let word = u32::from_le_bytes(word.try_into().expect("4 bytes"));
                    buffer |= (word as u64) << filled;
                    (pos, filled) = (pos + 4, filled + 32);
                } else {
                    while filled < bits {
                        let byte = *limb.get(pos).ok_or(malformed("truncated limb"))?;
                        buffer |= (byte as u64) << filled;
                        (pos, filled) = (pos + 1, filled + 8);
                    }
                }
            }
            let x = (buffer & mask) as u32;
            if x >= q.value() {
                return Err(malformed("residue not below its prime"));
            }
            *out = x;
            buffer >>= bits;
            filled -= bits;
        }
        if buffer != 0 || limb[pos..].iter().any(|&b| b != 0) {
            return Err(malformed("nonzero padding bits"));
        }
    }
    Ok(())
}

impl Parameters {
    /// Serializes (n, t, Q, special primes).
    pub fn to_bytes(&self) -> Vec<u8> {
        let k = self.max_level();
        let special = self.special_basis().map_or(&[][..], |s| s.moduli());
        let extra = if special.is_empty() {
            0
        } else {
            1 + 4 * special.len()
        };
        let mut out = header(Kind::Parameters, self.id(), 9 + 4 * k + extra);
        out.extend_from_slice(&(self.degree() as u32).to_le_bytes());
        out.extend_from_slice(&self.plaintext_modulus().value().to_le_bytes());
        out.push(k as u8);
        for q in self.ciphertext_basis().moduli() {
            out.extend_from_slice(&q.value().to_le_bytes());
        }
        if !special.is_empty() {
            out.push(special.len() as u8);
            for p in special {
                out.extend_from_slice(&p.value().to_le_bytes());
            }
        }
        out
    }

    /// Parses and validates parameters (128-bit security enforced), on the default backend.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let body = body(bytes, Kind::Parameters, None)?;
        let word = |i: usize| -> Result<u32, Error> {
            let b = body
                .get(i..i + 4)
                .ok_or(malformed("truncated parameters"))?;
            Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
        };
        let (n, t) = (word(0)?, word(4)?);
        let k = *body.get(8).ok_or(malformed("truncated parameters"))? as usize;
        if k == 0 || k > crate::rns::MAX_LIMBS || body.len() < 9 + 4 * k {
            return Err(malformed("wrong parameter length"));
        }
        let primes = (0..k)
            .map(|i| word(9 + 4 * i))
            .collect::<Result<Vec<_>, _>>()?;
        // Special primes, if any: their count (never 0 when present), then the primes.
        let s = body.get(9 + 4 * k).map_or(0, |&s| s as usize);
        let expected_len = 9 + 4 * k + if s == 0 { 0 } else { 1 + 4 * s };
        if body.len() != expected_len || s > crate::rns::MAX_LIMBS {
            return Err(malformed("wrong parameter length"));
        }
        let special = (0..s)
            .map(|i| word(10 + 4 * k + 4 * i))
            .collect::<Result<Vec<_>, _>>()?;
        let params = Parameters::builder()
            .degree(n as usize)
            .ciphertext_primes(&primes)
            .special_primes(s)
            .plaintext_modulus(t)
            .build()?;
        let chosen = params.special_basis().map_or(&[][..], |b| b.moduli());
        if chosen
            .iter()
            .map(Modulus::value)
            .ne(special.iter().copied())
        {
            return Err(malformed(
                "special primes are not the ones these parameters use",
            ));
        }
        if params.id() != u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")) {
            return Err(malformed(
                "parameter identifier does not match the parameters",
            ));
        }
        Ok(params)
    }
}

impl Parameters {
    /// The largest serialized [`Ciphertext`] of these parameters (size 3, top level): what a
    /// reader may accept before parsing one.
    pub fn max_ciphertext_bytes(&self) -> usize {
        HEADER + 2 + 3 * poly_bytes(self, self.max_level())
    }

    /// The serialized size of a fresh [`SeededCiphertext`] (top level).
    pub fn seeded_ciphertext_bytes(&self) -> usize {
        HEADER + 33 + poly_bytes(self, self.max_level())
    }

    /// The serialized size of a fresh [`SeededCiphertext`] with its last limb dropped
    /// ([`SeededCiphertext::compress`]).
    pub fn compressed_ciphertext_bytes(&self) -> usize {
        HEADER + 34 + poly_bytes(self, self.max_level().saturating_sub(1))
    }

    /// The serialized size of a [`RelinearizationKey`].
    pub fn relinearization_key_bytes(&self) -> usize {
        HEADER + 2 * self.max_level() * poly_bytes(self, self.max_level())
    }

    /// The serialized size of a [`GaloisKey`] (special primes included).
    pub fn galois_key_bytes(&self) -> usize {
        self.galois_key_bytes_at(self.max_level())
    }

    /// The serialized size of a [`GaloisKey`] truncated to `level` ([`GaloisKey::truncated`]).
    pub fn galois_key_bytes_at(&self, level: usize) -> usize {
        HEADER + 4 + level * (32 + limbs_bytes(self.degree(), &key_moduli_at(self, level)))
    }

    /// The serialized size of a [`SecretKey`].
    pub fn secret_key_bytes(&self) -> usize {
        HEADER + self.degree().div_ceil(4)
    }
}

impl Ciphertext {
    /// Serializes the ciphertext.
    pub fn to_bytes(&self, params: &Parameters) -> Vec<u8> {
        // The ciphertext's own identity: serialized under parameters it does not belong to,
        // it is refused when parsed with them (or with its own, by the length checks).
        let mut out = header(
            Kind::Ciphertext,
            self.params,
            2 + self.size() * poly_bytes(params, self.level),
        );
        out.extend_from_slice(&[self.level as u8, self.size() as u8]);
        for p in &self.polys {
            pack_poly(params, p, &mut out);
        }
        out
    }

    /// Parses a ciphertext made under `params`.
    pub fn from_bytes(params: &Parameters, bytes: &[u8]) -> Result<Self, Error> {
        let body = body(bytes, Kind::Ciphertext, Some(params.id()))?;
        let (&level, &size) = body
            .first()
            .zip(body.get(1))
            .ok_or(malformed("truncated ciphertext"))?;
        let (level, size) = (level as usize, size as usize);
        if level == 0 || level > params.max_level() || !(2..=3).contains(&size) {
            return Err(malformed("ciphertext level or size out of range"));
        }
        let per_poly = poly_bytes(params, level);
        if body.len() != 2 + size * per_poly {
            return Err(malformed("wrong ciphertext length"));
        }
        let polys = body[2..]
            .chunks_exact(per_poly)
            .map(|chunk| unpack_poly(params, chunk, level))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Ciphertext::from_parts(params, level, polys))
    }
}

/// What a serialized [`SeededCiphertext`] starts with, before its limbs of c0: the header
/// (with the ciphertext's parameter identifier `id`), the level and the seed; `reserve`
/// bytes of room for what follows. It depends on no table, so a device without
/// [`Parameters`] writes the same bytes.
pub(crate) fn seeded_ciphertext_header(
    id: u64,
    level: usize,
    seed: &[u8; 32],
    reserve: usize,
) -> Vec<u8> {
    let mut out = header(Kind::SeededCiphertext, id, 33 + reserve);
    out.push(level as u8);
    out.extend_from_slice(seed);
    out
}

/// What a serialized compressed [`SeededCiphertext`] starts with, before its kept limbs of
/// c0: the header, the level, the dropped limbs and the seed (room reserved as above).
pub(crate) fn compressed_ciphertext_header(
    id: u64,
    level: usize,
    dropped: usize,
    seed: &[u8; 32],
    reserve: usize,
) -> Vec<u8> {
    let mut out = header(Kind::CompressedSeededCiphertext, id, 34 + reserve);
    out.push(level as u8);
    out.push(dropped as u8);
    out.extend_from_slice(seed);
    out
}

impl SeededCiphertext {
    /// Serializes c0 and the seed: about half a [`Ciphertext`]. A compressed one
    /// ([`SeededCiphertext::compress`]) is its own kind: level, dropped limbs, seed, and
    /// the limbs of c0 kept.
    pub fn to_bytes(&self, params: &Parameters) -> Vec<u8> {
        let reserve = poly_bytes(params, self.level - self.dropped);
        let mut out = match self.dropped {
            0 => seeded_ciphertext_header(self.params, self.level, &self.seed, reserve),
            dropped => {
                compressed_ciphertext_header(self.params, self.level, dropped, &self.seed, reserve)
            }
        };
        pack_poly(params, &self.c0, &mut out);
        out
    }

    /// Parses a seeded ciphertext made under `params`, compressed or not.
    pub fn from_bytes(params: &Parameters, bytes: &[u8]) -> Result<Self, Error> {
        let parts = SeededParts::parse(params, bytes)?;
        Ok(SeededCiphertext {
            params: params.id(),
            level: parts.level,
            dropped: parts.dropped,
            c0: unpack_poly(params, parts.c0, parts.level - parts.dropped)?,
            seed: parts.seed,
        })
    }
}

impl ExpandedCiphertext {
    /// Parses a serialized seeded ciphertext made under `params` (compressed or not) and
    /// expands it ([`Self::read_seeded_into`] into fresh buffers).
    pub fn read_seeded(params: &Parameters, bytes: &[u8]) -> Result<Self, Error> {
        let mut out = Self {
            inner: Ciphertext::from_parts(params, 0, Vec::new()),
        };
        out.read_seeded_into(params, bytes)?;
        Ok(out)
    }

    /// Parses a serialized seeded ciphertext made under `params` (compressed or not) and
    /// expands it into this one's buffers, whatever they held: [`SeededCiphertext::from_bytes`]
    /// and [`SeededCiphertext::expand_ntt_into`] without the copy of c0 in between.
    pub fn read_seeded_into(&mut self, params: &Parameters, bytes: &[u8]) -> Result<(), Error> {
        let parts = SeededParts::parse(params, bytes)?;
        let (n, level) = (params.degree(), parts.level);
        let kept = &params.ciphertext_basis().moduli()[..level - parts.dropped];
        let out = &mut self.inner;
        out.polys.resize_with(2, Vec::new);
        let backend = params.backend();
        if let Err(e) = unpack_limbs_into(backend, n, kept, parts.c0, &mut out.polys[0]) {
            // Left empty, at level 0: no evaluator takes it for a ciphertext.
            out.level = 0;
            out.polys.iter_mut().for_each(Vec::clear);
            return Err(e);
        }
        // The dropped limbs are zero.
        out.polys[0].resize(level * n, 0);
        out.polys[1].resize(level * n, 0);
        expand_seed_into(params, parts.seed, &mut out.polys[1]);
        (out.params, out.level, out.n) = (params.id(), level, n);
        Ok(())
    }
}

/// A serialized seeded ciphertext's fields, checked, its c0 still packed.
struct SeededParts<'a> {
    level: usize,
    dropped: usize,
    seed: [u8; 32],
    c0: &'a [u8],
}

impl<'a> SeededParts<'a> {
    fn parse(params: &Parameters, bytes: &'a [u8]) -> Result<Self, Error> {
        if bytes.len() > 5 && bytes[5] == Kind::CompressedSeededCiphertext as u8 {
            let body = body(bytes, Kind::CompressedSeededCiphertext, Some(params.id()))?;
            let (level, dropped) = match body {
                [level, dropped, ..] => (*level as usize, *dropped as usize),
                _ => return Err(malformed("truncated ciphertext")),
            };
            if level > params.max_level() || dropped != 1 || level < 2 {
                return Err(malformed("compressed ciphertext level out of range"));
            }
            if body.len() != 34 + poly_bytes(params, level - dropped) {
                return Err(malformed("wrong compressed ciphertext length"));
            }
            let seed = body[2..34].try_into().expect("32 bytes");
            return Ok(Self {
                level,
                dropped,
                seed,
                c0: &body[34..],
            });
        }
        let body = body(bytes, Kind::SeededCiphertext, Some(params.id()))?;
        let level = *body.first().ok_or(malformed("truncated ciphertext"))? as usize;
        if level == 0 || level > params.max_level() {
            return Err(malformed("ciphertext level out of range"));
        }
        if body.len() != 33 + poly_bytes(params, level) {
            return Err(malformed("wrong seeded ciphertext length"));
        }
        let seed = body[1..33].try_into().expect("32 bytes");
        Ok(Self {
            level,
            dropped: 0,
            seed,
            c0: &body[33..],
        })
    }
}

impl PublicKey {
    /// Serializes the public key.
    pub fn to_bytes(&self, params: &Parameters) -> Vec<u8> {
        let mut out = header(
            Kind::PublicKey,
            params.id(),
            2 * poly_bytes(params, params.max_level()),
        );
        pack_poly(params, &self.p0, &mut out);
        pack_poly(params, &self.p1, &mut out);
        out
    }

    /// Parses a public key made under `params`.
    pub fn from_bytes(params: &Parameters, bytes: &[u8]) -> Result<Self, Error> {
        let body = body(bytes, Kind::PublicKey, Some(params.id()))?;
        let per_poly = poly_bytes(params, params.max_level());
        if body.len() != 2 * per_poly {
            return Err(malformed("wrong public key length"));
        }
        let p0 = unpack_poly(params, &body[..per_poly], params.max_level())?;
        let p1 = unpack_poly(params, &body[per_poly..], params.max_level())?;
        Ok(Self {
            ring: params.ring_id(),
            p0,
            p1,
        })
    }
}

impl RelinearizationKey {
    /// Serializes the relinearization key.
    pub fn to_bytes(&self, params: &Parameters) -> Vec<u8> {
        let per_poly = poly_bytes(params, params.max_level());
        let mut out = header(
            Kind::RelinearizationKey,
            params.id(),
            2 * self.digits.len() * per_poly,
        );
        for (k0, k1) in &self.digits {
            pack_poly(params, k0, &mut out);
            pack_poly(params, k1, &mut out);
        }
        out
    }

    /// Parses a relinearization key made under `params`.
    pub fn from_bytes(params: &Parameters, bytes: &[u8]) -> Result<Self, Error> {
        let body = body(bytes, Kind::RelinearizationKey, Some(params.id()))?;
        let (k, per_poly) = (params.max_level(), poly_bytes(params, params.max_level()));
        if body.len() != 2 * k * per_poly {
            return Err(malformed("wrong relinearization key length"));
        }
        let mut polys = body
            .chunks_exact(per_poly)
            .map(|chunk| unpack_poly(params, chunk, k));
        let digits = (0..k)
            .map(|_| {
                Ok((
                    polys.next().expect("2k chunks")?,
                    polys.next().expect("2k chunks")?,
                ))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Self {
            ring: params.ring_id(),
            digits,
        })
    }
}

impl GaloisKey {
    /// Serializes the Galois key: per digit the seed of k1 and k0, about half its size in
    /// memory.
    pub fn to_bytes(&self, params: &Parameters) -> Vec<u8> {
        let moduli = key_moduli_at(params, self.digits.len());
        let per_digit = 32 + limbs_bytes(params.degree(), &moduli);
        let mut out = header(
            Kind::GaloisKey,
            params.id(),
            4 + self.digits.len() * per_digit,
        );
        out.extend_from_slice(&(self.element as u32).to_le_bytes());
        for digit in &self.digits {
            out.extend_from_slice(&digit.seed);
            let k0 = serialized_k0(params, self.element, digit);
            pack_limbs(params.degree(), &moduli, &k0, &mut out);
        }
        out
    }

    /// Parses a Galois key made under `params` (which must have special primes), expanding
    /// the seeds. Its level ([`GaloisKey::truncated`]) is the one its length gives.
    pub fn from_bytes(params: &Parameters, bytes: &[u8]) -> Result<Self, Error> {
        let body = body(bytes, Kind::GaloisKey, Some(params.id()))?;
        if params.special_basis().is_none() {
            return Err(malformed("Galois keys need parameters with special primes"));
        }
        let n = params.degree();
        let per_digit = |levels| 32 + limbs_bytes(n, &key_moduli_at(params, levels));
        // The length grows with the level: at most one level matches it.
        let levels = (1..=params.max_level())
            .find(|&l| body.len() == 4 + l * per_digit(l))
            .ok_or_else(|| malformed("wrong Galois key length"))?;
        let moduli = key_moduli_at(params, levels);
        let per_digit = per_digit(levels);
        let element = u32::from_le_bytes(body[..4].try_into().expect("4 bytes")) as usize;
        check_element(n, element).map_err(|_| malformed("not a Galois element"))?;
        let digits = body[4..]
            .chunks_exact(per_digit)
            .map(|chunk| {
                let seed: [u8; 32] = chunk[..32].try_into().expect("32 bytes");
                let k0 = unpack_limbs(params.backend(), n, &moduli, &chunk[32..])?;
                Ok(digit_from_parts(params, element, levels, seed, &k0))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Self {
            ring: params.ring_id(),
            element,
            digits,
        })
    }
}

impl SecretKey {
    /// Serializes the secret key (2 bits per coefficient). The bytes are zeroized when the
    /// returned buffer is dropped; keep them secret until then.
    pub fn to_bytes(&self, params: &Parameters) -> Zeroizing<Vec<u8>> {
        debug_assert_eq!(
            self.ring,
            params.ring_id(),
            "serialized with its own parameters"
        );
        let mut out = header(
            Kind::SecretKey,
            params.id(),
            self.coefficients.len().div_ceil(4),
        );
        for chunk in self.coefficients.chunks(4) {
            // -1 -> 3, 0 -> 0, 1 -> 1, branch-free.
            let byte = chunk
                .iter()
                .enumerate()
                .fold(0u8, |acc, (i, &c)| acc | (((c as u8) & 3) << (2 * i)));
            out.push(byte);
        }
        Zeroizing::new(out)
    }

    /// Parses a secret key made under `params`.
    pub fn from_bytes(params: &Parameters, bytes: &[u8]) -> Result<Self, Error> {
        let body = body(bytes, Kind::SecretKey, Some(params.id()))?;
        let n = params.degree();
        if body.len() != n.div_ceil(4) {
            return Err(malformed("wrong secret key length"));
        }
        let mut coefficients = Vec::with_capacity(n);
        let mut invalid = 0u8;
        for &byte in body {
            for i in 0..4 {
                let code = (byte >> (2 * i)) & 3;
                invalid |= (code == 2) as u8;
                // 3 -> -1 by sign extension of the two-bit code.
                coefficients.push(((code << 6) as i8) >> 6);
            }
        }
        coefficients.truncate(n);
        if invalid != 0 {
            coefficients.zeroize();
            return Err(malformed("secret key coefficient is not ternary"));
        }
        SecretKey::from_coefficients(params, coefficients)
    }
}
