//! CryptoNets core: everything the data owner and the evaluating service share.
//!
//! Layering, bottom up:
//! - [`zq`]: constant-time arithmetic modulo one NTT-friendly prime below 2^30;
//! - [`ntt`]: the negacyclic number-theoretic transform tables for one prime;
//! - [`backend`]: the kernels (NTT, pointwise products) behind one small trait,
//!   with portable, AVX2 and NEON implementations and one dispatch point;
//! - [`rns`], [`bfv`]: RNS-BFV (feature `alloc`);
//! - [`model`]: the integer CryptoNets model and its exact plaintext inference;
//! - [`network`]: the model evaluated on encrypted images (feature `alloc`; multi-core with
//!   `parallel`).
//!
//! The crate is `#![no_std]`. With the `alloc` feature tables can own their
//! storage; without it every table is built in a caller-provided buffer.
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod backend;
#[cfg(feature = "alloc")]
pub mod bfv;
mod error;
pub mod model;
#[cfg(feature = "alloc")]
pub mod network;
pub mod ntt;
#[cfg(feature = "alloc")]
pub mod rns;
pub mod sampling;
pub mod zq;

pub use backend::{Backend, Kernels};
pub use error::Error;
pub use ntt::NttTable;
pub use zq::Modulus;
