use core::fmt;

/// Every way the core refuses its input. Untrusted data never panics: it gets one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A modulus is not an odd prime in the supported range.
    InvalidModulus {
        /// The rejected value.
        value: u64,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The ring degree is not a power of two in the supported range.
    InvalidDegree {
        /// The rejected degree.
        n: usize,
    },
    /// The modulus has no 2n-th root of unity (it is not 1 mod 2n).
    NotNttFriendly {
        /// The modulus.
        modulus: u32,
        /// The ring degree.
        n: usize,
    },
    /// Not enough primes of the requested shape exist.
    NotEnoughPrimes {
        /// Requested bit size.
        bits: u32,
        /// Requested count.
        count: usize,
    },
    /// A caller-provided buffer has the wrong length.
    BufferLength {
        /// Length required.
        expected: usize,
        /// Length given.
        actual: usize,
    },
    /// A parameter set is inconsistent or outside what is supported or secure.
    InvalidParameters {
        /// Why it was rejected.
        reason: &'static str,
    },
    /// Operands that cannot be combined (levels, sizes or lengths differ).
    Incompatible {
        /// What differs.
        reason: &'static str,
    },
    /// Serialized data is malformed, truncated or made for other parameters.
    Malformed {
        /// What is wrong.
        reason: &'static str,
    },
    /// The parameters leave too little noise budget for the network: decryption would fail.
    InsufficientNoiseBudget {
        /// The layer after which the estimated budget runs out.
        layer: &'static str,
        /// Estimated budget left after that layer, in bits (at most the required margin).
        estimated_bits: i32,
    },
    /// An integer computation left its range (a defect if it happens: bounds are checked
    /// before any computation that could reach it).
    Overflow {
        /// The computation.
        what: &'static str,
    },
    /// The planned memory of a computation exceeds the caller's limit.
    ResourceLimit {
        /// What the estimate is for.
        what: &'static str,
        /// The estimate, in bytes.
        estimated_bytes: u64,
        /// The limit, in bytes.
        limit_bytes: u64,
    },
    /// A ciphertext's measured noise budget is too low for its decryption to be trusted:
    /// the secret key is not the one it was encrypted under, or it was corrupted or
    /// tampered with (an honest evaluation leaves the planned margin).
    NoiseExhausted {
        /// The lowest budget measured, in bits.
        budget_bits: u32,
        /// The least budget accepted, in bits.
        required_bits: u32,
    },
    /// The requested backend cannot run on this CPU.
    BackendUnavailable {
        /// Backend name.
        backend: &'static str,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidModulus { value, reason } => {
                write!(f, "invalid modulus {value}: {reason}")
            }
            Error::InvalidDegree { n } => {
                write!(
                    f,
                    "invalid ring degree {n}: must be a power of two in 128..=32768"
                )
            }
            Error::NotNttFriendly { modulus, n } => {
                write!(f, "modulus {modulus} is not 1 mod 2n for n = {n}")
            }
            Error::NotEnoughPrimes { bits, count } => {
                write!(f, "fewer than {count} NTT-friendly primes of {bits} bits")
            }
            Error::BufferLength { expected, actual } => {
                write!(f, "buffer holds {actual} words, {expected} required")
            }
            Error::InvalidParameters { reason } => write!(f, "invalid parameters: {reason}"),
            Error::Incompatible { reason } => write!(f, "incompatible operands: {reason}"),
            Error::Malformed { reason } => write!(f, "malformed data: {reason}"),
            Error::InsufficientNoiseBudget {
                layer,
                estimated_bits,
            } => write!(
                f,
                "the parameters leave too little noise budget for this model: about \
                 {estimated_bits} bits after the {layer} layer (decryption would be wrong); use \
                 more ciphertext primes or a model with smaller weights"
            ),
            Error::Overflow { what } => write!(f, "integer overflow in {what}"),
            Error::ResourceLimit {
                what,
                estimated_bytes,
                limit_bytes,
            } => write!(
                f,
                "{what} is estimated to need {:.2} GiB of memory, above the limit of {:.2} GiB \
                 (raise --max-memory, or use a smaller model or batch)",
                *estimated_bytes as f64 / (1u64 << 30) as f64,
                *limit_bytes as f64 / (1u64 << 30) as f64
            ),
            Error::NoiseExhausted {
                budget_bits,
                required_bits,
            } => write!(
                f,
                "the result cannot be trusted: its noise budget is {budget_bits} bits, below the \
                 {required_bits} bits an honest evaluation leaves (wrong secret key, or a \
                 corrupted or tampered result)"
            ),
            Error::BackendUnavailable { backend } => {
                write!(f, "the {backend} backend is not supported by this CPU")
            }
        }
    }
}

impl core::error::Error for Error {}
