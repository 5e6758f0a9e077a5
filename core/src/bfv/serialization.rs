//! Serialization (filled in below).
