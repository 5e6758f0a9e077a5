//! The host side of CryptoNets: MNIST data and what the `cryptonets` binary shares with the
//! trainer.

pub mod bundle;
pub mod files;
pub mod mnist;
pub mod phases;
pub mod pipeline;
#[cfg(feature = "service")]
pub mod service;
pub mod single_image;
