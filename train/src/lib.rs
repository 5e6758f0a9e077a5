//! The trainer's library: what does not need candle, so that it also builds without the
//! `training` feature (for the fuzz targets): the ONNX importer, the float networks it
//! produces, and their quantization to integer models.

pub mod float_network;
pub mod onnx;
pub mod quantize;
