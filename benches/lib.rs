//! Shared helpers of the criterion benches.

/// The allocator the `cryptonets` binary uses, so that benches measure what it runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use cryptonets_core::zq::prime::ntt_primes;
use cryptonets_core::{Modulus, NttTable};

/// The largest 30-bit NTT prime for degree n, its table, and a deterministic polynomial.
pub fn ntt_setup(n: usize) -> (Modulus, NttTable<Vec<u32>>, Vec<u32>) {
    let q = ntt_primes(30, n).next().expect("30-bit NTT prime");
    let modulus = Modulus::new(q).expect("valid prime");
    let table = NttTable::new(modulus, n).expect("valid table");
    let poly = (0..n as u64)
        .map(|i| (i.wrapping_mul(2_654_435_761) % q as u64) as u32)
        .collect();
    (modulus, table, poly)
}
