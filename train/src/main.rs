//! Trains the CryptoNets topology on MNIST with candle: conv 5x5 stride 2 (5 maps, padding 1,
//! 13 x 13 outputs), square, dense 845 -> 100, square, dense 100 -> 10.

use candle_core::{D, DType, Device, Tensor};
use candle_nn::{
    BatchNorm, Conv2d, Conv2dConfig, Linear, Module, ModuleT, Optimizer, VarBuilder, VarMap,
    batch_norm, conv2d, linear, loss,
};
use clap::Parser;
use cryptonets_host::mnist::{self, PIXELS, Split};
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

mod architecture;
use cryptonets_train::{float_network, onnx, quantize};
use quantize::{BatchNormStats, FloatNet, fold_batch_norm, integer_model};

#[derive(Debug, Parser)]
struct Args {
    #[arg(long)]
    data: Option<std::path::PathBuf>,
    /// Training epochs (25: chosen on the validation split, which peaks there; 15 gave 0.9906
    /// float validation accuracy, 25 gave 0.9916).
    #[arg(long, default_value_t = 25)]
    epochs: usize,
    /// Training images held out (the last ones of the training set) as the validation split
    /// that every choice is scored on: epochs are reported and the integer precision is chosen
    /// on it. The test set is used once, at the end, for the accuracies recorded in the model.
    #[arg(long, default_value_t = mnist::VALIDATION_IMAGES)]
    validation: usize,
    /// Validation accuracy the integer model may lose against the float one: the precision
    /// search keeps the smallest plaintext that stays within it.
    #[arg(long, default_value_t = 0.001)]
    tolerance: f64,
    /// For imported and architecture-file networks: the least fraction of validation images
    /// on which the integer model must predict what the float model predicts (0.9996: at
    /// most 2 of 5,000 differ; accuracy alone lets added errors cancel against fixed ones).
    #[arg(long, default_value_t = 0.9996)]
    agreement: f64,
    #[arg(long, default_value_t = 1e-3)]
    learning_rate: f64,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    #[arg(long, default_value_t = 2016)]
    seed: u64,
    /// Largest random shift, in pixels, applied to training images (0: none).
    #[arg(long, default_value_t = 2)]
    shift: i64,
    /// Where to write the integer model.
    #[arg(long, default_value = SHIPPED_MODEL)]
    output: std::path::PathBuf,
    /// Import this float ONNX model (for example exported from PyTorch) instead of training;
    /// it is quantized with its precision chosen on the validation split and written as a
    /// version 2 model (`--output` is then required). Supported layers: `train/src/onnx.rs`.
    #[arg(long, value_name = "FILE.onnx", requires = "output")]
    onnx: Option<std::path::PathBuf>,
    /// With `--onnx`, for a model trained on normalized pixels whose graph does not
    /// normalize them: the mean of (x - mean) / std, x in [0, 1] (one value, or one per
    /// input channel separated by commas), folded in exactly as if it were in the graph.
    #[arg(long, requires_all = ["onnx", "input_std"], value_delimiter = ',', allow_negative_numbers = true)]
    input_mean: Option<Vec<f64>>,
    /// With `--onnx`: the standard deviation of that normalization (as many values as
    /// `--input-mean`).
    #[arg(long, requires_all = ["onnx", "input_mean"], value_delimiter = ',')]
    input_std: Option<Vec<f64>>,
    /// Train the network this architecture file describes (JSON, `train/src/architecture.rs`;
    /// `models/cryptonets.json` is the CryptoNets one) and write it as a version 2 model
    /// (`--output` is then required).
    #[arg(
        long,
        value_name = "FILE.json",
        requires = "output",
        conflicts_with = "onnx"
    )]
    architecture: Option<std::path::PathBuf>,
    /// Replace the shipped model (models/cryptonets-mnist.cnmd) with an imported one.
    #[arg(long)]
    replace_shipped_model: bool,
    /// With `--onnx` or `--architecture`: never score on the test set (an architecture search
    /// scores candidates on the validation split only); the model records no test accuracy.
    #[arg(long)]
    validation_only: bool,
}

const SHIPPED_MODEL: &str = "models/cryptonets-mnist.cnmd";

/// A network candle trains.
trait Trainable {
    fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor>;
}

impl Trainable for architecture::ArchitectureNet {
    fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        architecture::ArchitectureNet::forward(self, x, train)
    }
}

pub(crate) fn values(t: &Tensor) -> candle_core::Result<Vec<f64>> {
    t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()
}

/// A trained batch normalization's statistics in f64.
pub(crate) fn batch_norm_stats(norm: &BatchNorm) -> candle_core::Result<BatchNormStats> {
    let (gamma, beta) = norm.weight_and_bias().expect("affine batch norm");
    Ok(BatchNormStats {
        gamma: values(gamma)?,
        beta: values(beta)?,
        mean: values(norm.running_mean())?,
        var: values(norm.running_var())?,
        eps: norm.eps(),
    })
}

/// The trained network in f64 with both batch normalizations folded in.
fn folded(net: &Net) -> candle_core::Result<FloatNet> {
    let mut conv_w = values(net.conv.weight())?;
    let mut conv_b = values(net.conv.bias().expect("conv bias"))?;
    let mut dense1_w = values(net.dense1.weight())?;
    let mut dense1_b = values(net.dense1.bias().expect("dense bias"))?;
    for (norm, w, b, width) in [
        (&net.norm1, &mut conv_w, &mut conv_b, 25),
        (&net.norm2, &mut dense1_w, &mut dense1_b, 845),
    ] {
        fold_batch_norm(w, b, width, &batch_norm_stats(norm)?);
    }
    Ok(FloatNet {
        conv_w,
        conv_b,
        dense1_w,
        dense1_b,
        dense2_w: values(net.dense2.weight())?,
        dense2_b: values(net.dense2.bias().expect("dense bias"))?,
    })
}

/// A training batch with each image shifted by a random (dy, dx) in [-shift, shift]^2.
fn shifted_batch(
    set: &mnist::Dataset,
    indices: &[u32],
    shift: i64,
    rng: &mut ChaCha8Rng,
    dev: &Device,
) -> candle_core::Result<Tensor> {
    let mut out = vec![0f32; indices.len() * PIXELS];
    for (b, &i) in indices.iter().enumerate() {
        let span = 2 * shift as u64 + 1;
        let (dy, dx) = (
            (rng.next_u64() % span) as i64 - shift,
            (rng.next_u64() % span) as i64 - shift,
        );
        let image = set.image(i as usize);
        for y in 0..28i64 {
            for x in 0..28i64 {
                let (sy, sx) = (y - dy, x - dx);
                if (0..28).contains(&sy) && (0..28).contains(&sx) {
                    out[b * PIXELS + (y * 28 + x) as usize] =
                        image[(sy * 28 + sx) as usize] as f32 / 255.0;
                }
            }
        }
    }
    Tensor::from_vec(out, (indices.len(), 1, 28, 28), dev)
}

/// Batch normalization after each linear layer is affine at inference time, so it folds into
/// that layer's weights and biases when quantizing: the deployed topology is unchanged.
struct Net {
    conv: Conv2d,
    norm1: BatchNorm,
    dense1: Linear,
    norm2: BatchNorm,
    dense2: Linear,
}

impl Trainable for Net {
    fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        Net::forward(self, x, train)
    }
}

impl Net {
    fn new(vb: VarBuilder) -> candle_core::Result<Self> {
        let cfg = Conv2dConfig {
            padding: 1,
            stride: 2,
            ..Default::default()
        };
        Ok(Self {
            conv: conv2d(1, 5, 5, cfg, vb.pp("conv"))?,
            norm1: batch_norm(5, 1e-5, vb.pp("norm1"))?,
            dense1: linear(845, 100, vb.pp("dense1"))?,
            norm2: batch_norm(100, 1e-5, vb.pp("norm2"))?,
            dense2: linear(100, 10, vb.pp("dense2"))?,
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let h = self
            .norm1
            .forward_t(&self.conv.forward(x)?, train)?
            .sqr()?
            .flatten_from(1)?;
        let h = self
            .norm2
            .forward_t(&self.dense1.forward(&h)?, train)?
            .sqr()?;
        self.dense2.forward(&h)
    }
}

fn tensors(set: &mnist::Dataset, dev: &Device) -> candle_core::Result<(Tensor, Tensor)> {
    let pixels: Vec<f32> = set.pixels.iter().map(|&p| p as f32 / 255.0).collect();
    let x = Tensor::from_vec(pixels, (set.len(), 1, 28, 28), dev)?;
    let y = Tensor::from_vec(
        set.labels.iter().map(|&l| l as u32).collect::<Vec<_>>(),
        set.len(),
        dev,
    )?;
    Ok((x, y))
}

fn accuracy(net: &impl Trainable, x: &Tensor, y: &Tensor) -> candle_core::Result<f64> {
    let mut correct = 0usize;
    let n = x.dim(0)?;
    for start in (0..n).step_by(1000) {
        let len = 1000.min(n - start);
        let logits = net.forward(&x.narrow(0, start, len)?, false)?;
        let pred = logits.argmax(D::Minus1)?;
        correct += pred
            .eq(&y.narrow(0, start, len)?)?
            .to_dtype(DType::F32)?
            .sum_all()?
            .to_scalar::<f32>()? as usize;
    }
    Ok(correct as f64 / n as f64)
}

/// Uniform in +-1/sqrt(fan_in) (the usual default), drawn from a seeded stream in the order of
/// the parameters' names: candle's CPU device cannot be seeded. A layer's fan-in is its
/// weight's size per output; batch normalization and quadratic coefficients keep their own
/// initialization.
fn seeded_init(vars: &VarMap, rng: &mut ChaCha8Rng) -> candle_core::Result<()> {
    let data = vars.data().lock().expect("var map");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        if name.starts_with("norm") || name.starts_with("quadratic") {
            continue;
        }
        let layer = name.rsplit_once('.').map_or(name.as_str(), |(l, _)| l);
        let weight = data
            .get(&format!("{layer}.weight"))
            .ok_or_else(|| candle_core::Error::Msg(format!("{name} has no weight beside it")))?;
        let fan_in = weight.elem_count() / weight.dims()[0].max(1);
        let bound = 1.0 / (fan_in as f32).sqrt();
        let values: Vec<f32> = (0..var.elem_count())
            .map(|_| (rng.next_u32() as f32 / u32::MAX as f32 * 2.0 - 1.0) * bound)
            .collect();
        var.set(&Tensor::from_vec(values, var.shape(), var.device())?)?;
    }
    Ok(())
}

/// Trains the CryptoNets network and returns it in f64 with batch normalization folded in.
fn train_float(
    args: &Args,
    train: &mnist::Dataset,
    validation: &mnist::Dataset,
) -> candle_core::Result<FloatNet> {
    let vars = VarMap::new();
    let net = Net::new(VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu))?;
    fit(args, &net, &vars, train, validation)?;
    folded(&net)
}

/// The training loop: seeded initialization, AdamW, the learning rate divided by 10 for the
/// last third of the epochs, shifted images, validation accuracy after every epoch.
fn fit(
    args: &Args,
    net: &impl Trainable,
    vars: &VarMap,
    train: &mnist::Dataset,
    validation: &mnist::Dataset,
) -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let (train_x, train_y) = tensors(train, &dev)?;
    let (val_x, val_y) = tensors(validation, &dev)?;
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    seeded_init(vars, &mut rng)?;
    let mut opt = candle_nn::AdamW::new(
        vars.all_vars(),
        candle_nn::ParamsAdamW {
            lr: args.learning_rate,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let n = train.len();
    for epoch in 0..args.epochs {
        let start = std::time::Instant::now();
        let mut order: Vec<u32> = (0..n as u32).collect();
        for i in (1..n).rev() {
            order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        let lr = args.learning_rate
            * if epoch >= args.epochs * 2 / 3 {
                0.1
            } else {
                1.0
            };
        opt.set_learning_rate(lr);
        let mut total = 0.0;
        for chunk in order.chunks(args.batch) {
            let idx = Tensor::from_slice(chunk, chunk.len(), &dev)?;
            let x = if args.shift > 0 {
                shifted_batch(train, chunk, args.shift, &mut rng, &dev)?
            } else {
                train_x.index_select(&idx, 0)?
            };
            let y = train_y.index_select(&idx, 0)?;
            let l = loss::cross_entropy(&net.forward(&x, true)?, &y)?;
            opt.backward_step(&l)?;
            total += l.to_scalar::<f32>()? as f64;
        }
        let acc = accuracy(net, &val_x, &val_y)?;
        eprintln!(
            "epoch {epoch}: loss {:.4} validation accuracy {:.4} ({:.1}s)",
            total / (n / args.batch) as f64,
            acc,
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

fn main() -> candle_core::Result<()> {
    let args = Args::parse();
    let dir = args.data.clone().unwrap_or_else(mnist::default_dir);
    let full_train = mnist::load(&dir, Split::Train).map_err(candle_core::Error::wrap)?;
    let test = mnist::load(&dir, Split::Test).map_err(candle_core::Error::wrap)?;
    if args.validation == 0 || args.validation >= full_train.len() {
        return Err(candle_core::Error::Msg(format!(
            "--validation must be between 1 and {}",
            full_train.len() - 1
        )));
    }
    let (train, validation) = full_train.hold_out(args.validation);
    drop(full_train);
    eprintln!(
        "{} training images, {} held out for validation",
        train.len(),
        validation.len()
    );
    if let Some(path) = &args.onnx {
        return import_onnx(&args, path, &validation, &test).map_err(candle_core::Error::Msg);
    }
    if let Some(path) = &args.architecture {
        let arch = architecture::Architecture::read(path).map_err(candle_core::Error::Msg)?;
        if arch.input != [1, 28, 28] {
            return Err(candle_core::Error::Msg(format!(
                "{}: training takes MNIST's 1 x 28 x 28 input, not {:?}",
                path.display(),
                arch.input
            )));
        }
        let vars = VarMap::new();
        let net = architecture::ArchitectureNet::new(
            &arch,
            VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu),
        )?;
        fit(&args, &net, &vars, &train, &validation)?;
        return write_general(&args, &net.folded()?, &validation, &test)
            .map_err(candle_core::Error::Msg);
    }
    let float = train_float(&args, &train, &validation)?;
    let float_validation = quantize::float_accuracy(&float, &validation);
    eprintln!(
        "float network with batch normalization folded: validation accuracy {float_validation:.4}"
    );
    let best = quantize::choose_precision(&float, &validation, float_validation - args.tolerance);
    // The test set, once: the accuracies recorded in the model file.
    let mut writer = integer_model(&float, best);
    let model_bytes = writer.to_bytes();
    let model = cryptonets_core::model::Model::parse(&model_bytes)
        .map_err(|e| candle_core::Error::Msg(format!("quantized model refused: {e}")))?;
    let integer_test = quantize::integer_accuracy(&model, &test);
    let float_test = quantize::float_accuracy(&float, &test);
    writer.float_accuracy = (float_test * 10000.0).round() as u16;
    writer.integer_accuracy = (integer_test * 10000.0).round() as u16;
    let bytes = writer.to_bytes();
    let model = cryptonets_core::model::Model::parse(&bytes)
        .map_err(|e| candle_core::Error::Msg(format!("quantized model refused: {e}")))?;
    if let Some(dir) = args.output.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.output, &bytes)?;
    eprintln!(
        "wrote {} ({} bytes): {best:?}; test accuracy (measured once) integer {integer_test:.4}, float {float_test:.4}; plaintext bits {}",
        args.output.display(),
        bytes.len(),
        model.bounds().plaintext_bits()
    );
    Ok(())
}

/// `--onnx`: import, choose the precision on the validation split, score on the test set
/// once, check that a plan exists, write a version 2 model.
fn import_onnx(
    args: &Args,
    path: &std::path::Path,
    validation: &mnist::Dataset,
    test: &mnist::Dataset,
) -> Result<(), String> {
    let normalization = match (&args.input_mean, &args.input_std) {
        (Some(mean), Some(std)) => Some(onnx::InputNormalization {
            mean: mean.clone(),
            std: std.clone(),
        }),
        _ => None,
    };
    let float = onnx::import_file_normalized(path, normalization.as_ref())
        .map_err(|e| format!("cannot import {}: {e}", path.display()))?;
    eprintln!(
        "imported {}: {} layers, input {:?}",
        path.display(),
        float.layers.len(),
        float.input
    );
    write_general(args, &float, validation, test)
}

/// A float network of the v2 family (imported or trained) to a version 2 model: precision
/// chosen on the validation split, accuracy measured once on the test set, a plan checked
/// to exist, then written (never over the shipped model unless told to).
fn write_general(
    args: &Args,
    float: &float_network::FloatNetwork,
    validation: &mnist::Dataset,
    test: &mnist::Dataset,
) -> Result<(), String> {
    use cryptonets_core::model::polynomial::Shape;
    use quantize::polynomial::{Precision, choose_precision, integer_accuracy, quantize};
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(SHIPPED_MODEL);
    let same = |a: &std::path::Path, b: &std::path::Path| matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y);
    if !args.replace_shipped_model
        && (same(&args.output, &shipped) || args.output == std::path::Path::new(SHIPPED_MODEL))
    {
        return Err(format!(
            "{} is the shipped model: give another --output, or --replace-shipped-model",
            args.output.display()
        ));
    }
    let compiled = float.compile()?;
    // One JSON object on stdout at the end, for scripts (the architecture search).
    let mut summary = serde_json::Map::new();
    let mnist_shaped = float.input.len() == PIXELS
        && (float.input
            == Shape {
                channels: 1,
                height: 28,
                width: 28,
            }
            || float.input == Shape::vector(PIXELS));
    let (mut network, accuracies) = if mnist_shaped {
        let float_validation = compiled.accuracy(validation);
        eprintln!("float network: validation accuracy {float_validation:.4}");
        let required = quantize::polynomial::Requirement {
            accuracy: float_validation - args.tolerance,
            agreement: args.agreement,
        };
        let precision = choose_precision(float, validation, required)?;
        let network = quantize(float, &precision)?;
        let integer_validation = integer_accuracy(&network, validation);
        summary.insert("validation_float".into(), float_validation.into());
        summary.insert("validation_integer".into(), integer_validation.into());
        summary.insert("precision_levels".into(), precision.levels.into());
        summary.insert("precision_bits".into(), precision.bits.clone().into());
        if args.validation_only {
            eprintln!("{precision:?}: integer validation accuracy {integer_validation:.4}");
            (network, None)
        } else {
            // The test set, once.
            let integer_test = integer_accuracy(&network, test);
            let float_test = compiled.accuracy(test);
            eprintln!(
                "{precision:?}: test accuracy (measured once) integer {integer_test:.4}, float {float_test:.4}"
            );
            summary.insert("test_float".into(), float_test.into());
            summary.insert("test_integer".into(), integer_test.into());
            (network, Some((float_test, integer_test)))
        }
    } else {
        // No data set of this shape ships here: a fixed precision, for exact evaluation.
        let precision = Precision {
            levels: 15,
            bits: vec![6; quantize::polynomial::weighted_layers(float)],
        };
        eprintln!(
            "input {:?} is not MNIST's: no accuracy measured; {precision:?}",
            float.input
        );
        (quantize(float, &precision)?, None)
    };
    if let Some((f, i)) = accuracies {
        network.set_recorded_accuracy((f * 10000.0).round() as u16, (i * 10000.0).round() as u16);
    }
    let plan = cryptonets_core::network::PlannedNetwork::new(
        &network,
        cryptonets_core::backend::Backend::detect(),
        1,
        network_slots(),
    )
    .map_err(|e| format!("the imported network has no encryption plan: {e}"))?;
    let bytes = network.to_bytes();
    if let Some(dir) = args.output.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    std::fs::write(&args.output, &bytes)
        .map_err(|e| format!("cannot write {}: {e}", args.output.display()))?;
    eprintln!(
        "wrote {} ({} bytes): {} plaintext bits; plan: n = {}, {} CRT channels",
        args.output.display(),
        bytes.len(),
        network.plaintext_bits(),
        plan.params.degree(),
        plan.params.channels().len(),
    );
    summary.insert("output".into(), args.output.display().to_string().into());
    summary.insert("plaintext_bits".into(), network.plaintext_bits().into());
    println!("{}", serde_json::Value::Object(summary));
    Ok(())
}

/// Images the plan is checked for: one full batch of the smallest planned ring.
fn network_slots() -> usize {
    8192
}
