//! `cryptonets bench batch`: one encrypted batch evaluated again and again in one process,
//! timed step by step (`cryptonets_host::phases`), so that a profile can be read without
//! perf and two binaries compared by their medians.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use cryptonets_core::bfv::{Evaluator, MultiplyScratch, SeededCiphertext};
use cryptonets_core::network::{
    EvaluationKeys, INPUTS, NetworkEvaluator, NetworkParameters, Packing,
};
use cryptonets_host::phases::{self, PhaseClock};
use cryptonets_host::pipeline::{
    BatchFile, BatchKind, BatchWorkspace, encrypt_batch, evaluate_batch_in, keygen, peak_rss_bytes,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use serde::Serialize;

use super::median_ns;
use crate::pipeline_cli::Loaded;

#[derive(Debug, Args)]
pub(crate) struct BatchArgs {
    /// The model (version 1: the CryptoNets network).
    #[arg(long, default_value = "models/cryptonets-mnist.cnmd")]
    model: PathBuf,
    /// Images in the batch (at most n = 8192; fewer are packed as `run` packs them).
    #[arg(long, default_value_t = 8192)]
    images: usize,
    /// Timed evaluations; the median of each step is reported.
    #[arg(long, default_value_t = 5)]
    samples: usize,
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct BatchReport {
    backend: &'static str,
    threads: usize,
    images: usize,
    channels: usize,
    samples: usize,
    /// Parse, evaluate and serialize: what `run` reports as a batch's evaluation.
    eval_seconds_median: f64,
    eval_seconds_min: f64,
    /// Median seconds per step, in the order a batch reaches them.
    phase_seconds_median: Vec<(&'static str, f64)>,
    /// One convolution output's square (at the plan's square level) switched down to the
    /// hidden level (one thread).
    square_to_hidden_level_us: f64,
    /// Square and relinearize one fresh input ciphertext (one thread), the primitive pair
    /// compared with other libraries.
    square_relinearize_us: f64,
    peak_rss_bytes: u64,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

pub(crate) fn batch(args: &BatchArgs, backend: Option<&str>) -> Result<(), String> {
    if crate::general_cli::is_v2(&args.model) {
        return Err("bench batch takes the CryptoNets model (version 1)".into());
    }
    let backend = crate::selected_backend(backend)?;
    let loaded = Loaded::new(&args.model, backend)?;
    let model = loaded.model();
    let n = loaded.params.degree();
    if !(1..=n).contains(&args.images) {
        return Err(format!("--images must be 1 to {n}"));
    }
    // Timings do not depend on the pixels: seeded ones, so that no data set is needed.
    let mut rng = ChaCha20Rng::seed_from_u64(18);
    let images: Vec<[u8; INPUTS]> = (0..args.images)
        .map(|i| core::array::from_fn(|p| ((i * 7 + p * 13) % 256) as u8))
        .collect();
    let packing = Packing::for_batch(
        n,
        images.len(),
        cryptonets_core::network::DEFAULT_MAX_PACKING,
    );
    let params = loaded.params_for(packing);
    let keys = keygen(params, packing.factor(), &mut rng).map_err(|e| e.to_string())?;
    let evaluator = NetworkEvaluator::new(params, &model, &keys.eval).map_err(|e| e.to_string())?;
    let upload = encrypt_batch(
        params,
        &model,
        &keys.secret,
        &images,
        packing,
        &mut rng,
        &|| {},
    )
    .map_err(|e| e.to_string())?
    .to_bytes();

    let (square_to_hidden_level_us, square_relinearize_us) =
        primitives(params, &evaluator, &keys.eval, &upload)?;
    let (mut totals, mut steps) = (Vec::new(), Vec::new());
    // One service side evaluating batch after batch: the buffers stay from one to the next
    // (the first sample also pays for fresh memory).
    let mut workspace = BatchWorkspace::default();
    for _ in 0..args.samples.max(1) {
        let clock = PhaseClock::new();
        let start = Instant::now();
        let received =
            BatchFile::from_bytes(&upload, BatchKind::Images).map_err(|e| e.to_string())?;
        clock.done(phases::PARSE);
        let result = evaluate_batch_in(
            &mut workspace,
            params,
            &evaluator,
            &received,
            &|_| {},
            &clock,
        )
        .map_err(|e| e.to_string())?;
        drop(result.to_bytes());
        clock.done(phases::SERIALIZE);
        totals.push(start.elapsed().as_secs_f64());
        steps.push(clock.seconds());
    }
    let phase_seconds_median = phases::names()
        .into_iter()
        .map(|name| {
            let of = |s: &Vec<(&str, f64)>| s.iter().find(|(n, _)| *n == name).map_or(0.0, |p| p.1);
            (name, median(steps.iter().map(of).collect()))
        })
        .collect();
    let report = BatchReport {
        backend: backend.name(),
        threads: rayon::current_num_threads(),
        images: args.images,
        channels: params.channels().len(),
        samples: totals.len(),
        eval_seconds_median: median(totals.clone()),
        eval_seconds_min: totals.iter().copied().fold(f64::INFINITY, f64::min),
        phase_seconds_median,
        square_to_hidden_level_us,
        square_relinearize_us,
        peak_rss_bytes: peak_rss_bytes().unwrap_or(0),
    };
    if args.json {
        crate::print_json(&report)?;
        return Ok(());
    }
    println!(
        "{} images, {} channels, backend {}, {} threads: evaluation median {:.3} s (min {:.3} s) over {} samples",
        report.images,
        report.channels,
        report.backend,
        report.threads,
        report.eval_seconds_median,
        report.eval_seconds_min,
        report.samples
    );
    for (name, seconds) in &report.phase_seconds_median {
        println!(
            "  {name:<27} {seconds:>8.3} s  {:>5.1} %",
            100.0 * seconds / report.eval_seconds_median
        );
    }
    println!(
        "one thread: square to the hidden level {:.0} us, square + relinearize {:.0} us",
        report.square_to_hidden_level_us, report.square_relinearize_us
    );
    Ok(())
}

/// Medians of the batch's two costliest primitives on channel 0's first input ciphertext:
/// its square switched to the hidden level, and square + relinearize.
fn primitives(
    params: &NetworkParameters,
    evaluator: &NetworkEvaluator<'_>,
    keys: &EvaluationKeys,
    upload: &[u8],
) -> Result<(f64, f64), String> {
    let p = &params.channels()[0];
    let batch = BatchFile::from_bytes(upload, BatchKind::Images).map_err(|e| e.to_string())?;
    let ct = SeededCiphertext::from_bytes(p, &batch.channel(0)[0])
        .and_then(|seeded| seeded.expand(p))
        .map_err(|e| e.to_string())?;
    let eval = Evaluator::new(p);
    let plan = evaluator.plan();
    // Squared where the batch squares its convolution outputs: at the plan's square level.
    let mut conv = ct.clone();
    while conv.level() > plan.square_level {
        eval.mod_switch_to_next_assign(&mut conv)
            .map_err(|e| e.to_string())?;
    }
    let mut scratch = MultiplyScratch::default();
    let square_us = median_ns(11, || {
        drop(eval.square_to_level(&conv, plan.hidden_level, &mut scratch));
    }) / 1e3;
    let relin_us = median_ns(11, || {
        let mut sq = eval.square(&ct).expect("size 2");
        eval.relinearize_assign(&mut sq, &keys.relin)
            .expect("size 3");
    }) / 1e3;
    Ok((square_us, relin_us))
}
