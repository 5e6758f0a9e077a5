//! NTT-friendly primes: a deterministic primality test and a generator of
//! primes p = 1 mod 2n just below a power of two. Public data only.

/// Bases that make Miller-Rabin deterministic for every n < 3.3 * 10^24.
const WITNESSES: [u64; 12] = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37];

const fn mul_mod(a: u64, b: u64, n: u64) -> u64 {
    (a as u128 * b as u128 % n as u128) as u64
}

const fn pow_mod(mut base: u64, mut exponent: u64, n: u64) -> u64 {
    let mut result = 1 % n;
    base %= n;
    while exponent > 0 {
        if exponent & 1 == 1 {
            result = mul_mod(result, base, n);
        }
        base = mul_mod(base, base, n);
        exponent >>= 1;
    }
    result
}

/// Deterministic primality test for any 64-bit integer (Miller-Rabin with fixed witnesses).
pub const fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut i = 0;
    while i < WITNESSES.len() {
        let p = WITNESSES[i];
        if n.is_multiple_of(p) {
            return n == p;
        }
        i += 1;
    }
    let s = (n - 1).trailing_zeros();
    let d = (n - 1) >> s;
    let mut i = 0;
    'witness: while i < WITNESSES.len() {
        let mut x = pow_mod(WITNESSES[i], d, n);
        i += 1;
        if x == 1 || x == n - 1 {
            continue;
        }
        let mut round = 1;
        while round < s {
            x = mul_mod(x, x, n);
            if x == n - 1 {
                continue 'witness;
            }
            round += 1;
        }
        return false;
    }
    true
}

/// Whether q is a prime with q = 1 mod 2n, so Z_q holds a primitive 2n-th root of unity.
pub const fn is_ntt_friendly(q: u64, n: usize) -> bool {
    n.is_power_of_two() && q % (2 * n as u64) == 1 && is_prime(q)
}

/// The primes p = 1 mod 2n with 2^(bits-1) < p < 2^bits, largest first.
///
/// The order is fixed, so a parameter set is reproducible from (bits, n, index).
pub fn ntt_primes(bits: u32, n: usize) -> impl Iterator<Item = u32> {
    let step = 2 * n as u64;
    let top = if (2..=32).contains(&bits) {
        1u64 << bits
    } else {
        0
    };
    let bottom = top >> 1;
    // Largest candidate below 2^bits that is 1 mod 2n.
    let first = if top > step {
        (top - 1) / step * step + 1
    } else {
        0
    };
    let mut candidate = first;
    core::iter::from_fn(move || {
        while candidate > bottom && step > 0 {
            let c = candidate;
            candidate -= step;
            if is_prime(c) {
                return Some(c as u32);
            }
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_numbers_match_trial_division() {
        for n in 0u64..5000 {
            let trial = n >= 2 && (2..n).take_while(|d| d * d <= n).all(|d| n % d != 0);
            assert_eq!(is_prime(n), trial, "{n}");
        }
    }

    #[test]
    fn known_values() {
        // Strong pseudoprimes to many bases, and large known primes.
        assert!(!is_prime(3_215_031_751)); // spsp to bases 2, 3, 5, 7
        assert!(!is_prime(341_550_071_728_321)); // spsp to bases 2..17
        assert!(!is_prime(3_825_123_056_546_413_051)); // spsp to bases 2..23
        assert!(is_prime(18_446_744_073_709_551_557)); // largest 64-bit prime
        assert!(is_prime(998_244_353));
        assert!(!is_prime(u64::MAX));
    }

    #[test]
    fn generated_primes_are_ntt_friendly_and_descending() {
        for n in [128usize, 4096, 8192, 32768] {
            let primes: std::vec::Vec<u32> = ntt_primes(30, n).take(8).collect();
            assert_eq!(primes.len(), 8);
            for w in primes.windows(2) {
                assert!(w[0] > w[1]);
            }
            for &p in &primes {
                assert!(is_ntt_friendly(p as u64, n));
                assert!(p < 1 << 30 && p > 1 << 29);
            }
        }
        assert_eq!(ntt_primes(17, 8192).next(), Some(114_689));
        assert_eq!(ntt_primes(0, 8).next(), None);
        assert_eq!(ntt_primes(14, 8192).next(), None);
    }
}
