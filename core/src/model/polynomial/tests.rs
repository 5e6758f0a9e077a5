use alloc::vec::Vec;

use num_bigint::BigInt;
use proptest::prelude::*;

use super::*;
use crate::model::Model;

const MNIST_MODEL: &[u8] = include_bytes!("../../../../models/cryptonets-mnist.cnmd");

/// A small deterministic generator for the tests (also the network tests').
pub(crate) fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

fn random_pixels(len: usize, seed: u64) -> Vec<u8> {
    let mut next = xorshift(seed | 1);
    (0..len).map(|_| next() as u8).collect()
}

#[test]
fn version_1_models_load_as_the_equivalent_network() {
    let v1 = Model::parse(MNIST_MODEL).unwrap();
    let network = PolynomialNetwork::parse(MNIST_MODEL).unwrap();
    assert_eq!(network.classes(), 10);
    assert_eq!(
        network.shapes()[0],
        Shape {
            channels: v1.maps(),
            height: 13,
            width: 13
        }
    );
    assert_eq!(network.recorded_accuracy(), v1.recorded_accuracy());
    // Intervals are at least as tight as v1's magnitudes (squares are never negative).
    assert!(network.plaintext_bits() <= v1.bounds().max_bits());
    for seed in 0..20u64 {
        let pixels: [u8; 784] = random_pixels(784, seed).try_into().unwrap();
        let expected = v1.logits(&pixels).unwrap();
        assert_eq!(network.logits(&pixels).unwrap(), expected.to_vec());
        let wide: Vec<BigInt> = expected.iter().map(|&x| BigInt::from(x)).collect();
        assert_eq!(network.logits_wide(&pixels).unwrap(), wide);
        assert_eq!(
            network.predict(&pixels).unwrap(),
            crate::model::argmax(&expected)
        );
    }
    // Written as version 2 and read back: the same network.
    let bytes = network.to_bytes();
    assert_eq!(bytes[4], 2);
    assert_eq!(PolynomialNetwork::parse(&bytes).unwrap(), network);
}

#[test]
fn windows_follow_the_usual_output_formula_and_refuse_what_does_not_fit() {
    let w = Window {
        kernel: [3, 3],
        stride: [1, 1],
        padding: [1, 1, 1, 1],
    };
    assert_eq!(w.output(28, 28).unwrap(), (28, 28));
    let w = Window {
        kernel: [5, 5],
        stride: [2, 2],
        padding: [1, 1, 0, 0],
    };
    assert_eq!(w.output(28, 28).unwrap(), (13, 13));
    let w = Window {
        kernel: [2, 3],
        stride: [2, 1],
        padding: [0, 0, 0, 0],
    };
    assert_eq!(w.output(5, 4).unwrap(), (2, 2));
    for bad in [
        Window {
            kernel: [0, 3],
            stride: [1, 1],
            padding: [0; 4],
        },
        Window {
            kernel: [3, 3],
            stride: [0, 1],
            padding: [0; 4],
        },
        Window {
            kernel: [3, 3],
            stride: [1, 1],
            padding: [3, 0, 0, 0],
        },
        Window {
            kernel: [9, 9],
            stride: [1, 1],
            padding: [0; 4],
        },
    ] {
        assert!(bad.output(5, 5).is_err(), "{bad:?}");
    }
    // Sum pooling with padding: corners sum 4 of 9 taps.
    let network = PolynomialNetwork::new(
        Shape {
            channels: 1,
            height: 3,
            width: 3,
        },
        255,
        alloc::vec![
            Layer::SumPool {
                window: Window {
                    kernel: [3, 3],
                    stride: [1, 1],
                    padding: [1, 1, 1, 1]
                }
            },
            Layer::Flatten,
        ],
    )
    .unwrap();
    let logits = network.logits(&[1, 2, 3, 4, 5, 6, 7, 8, 9]).unwrap();
    assert_eq!(logits, [12, 21, 16, 27, 45, 33, 24, 39, 28]);
}

#[test]
fn bounds_past_the_limit_are_refused_and_wide_bounds_infer_in_big_integers() {
    let cube = Layer::Polynomial {
        coefficients: [0, 0, 0, 1],
    };
    let dense = |n: usize| Layer::Dense {
        outputs: n,
        weights: alloc::vec![100; n * 4],
        biases: alloc::vec![0; n],
    };
    let input = Shape::vector(4);
    // 255 -> dense (4 x 100 x 255 < 2^17) -> cube (2^51) -> dense (2^60) -> cube (2^180).
    let layers = alloc::vec![dense(4), cube.clone(), dense(4), cube.clone()];
    let wide = PolynomialNetwork::new(input, 255, layers.clone()).unwrap();
    assert!(wide.plaintext_bits() > 128 && !wide.fits_i128());
    assert!(wide.logits(&[1, 2, 3, 4]).is_err());
    let logits = wide.logits_wide(&[255; 4]).unwrap();
    let first: BigInt = BigInt::from(100 * 4 * 255i64).pow(3u32) * 400;
    assert_eq!(logits[0], first.pow(3u32));
    assert!(logits[0].bits() as u32 <= wide.bounds()[3].bits);
    let mut more = layers;
    more.push(dense(4));
    more.push(cube);
    let err = PolynomialNetwork::new(input, 255, more).unwrap_err();
    assert!(matches!(err, Error::Malformed { reason } if reason.contains("2^200")));
}

/// Draws a small random network: affine layers, pools and activations in any order, with
/// a final flatten and dense layer to a few classes.
pub(crate) fn random_network(seed: u64) -> Option<PolynomialNetwork> {
    let mut next = xorshift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut pick = |n: u64| (next() % n) as usize;
    let input = Shape {
        channels: 1 + pick(3),
        height: 3 + pick(7),
        width: 3 + pick(7),
    };
    let mut layers = Vec::new();
    let mut shape = input;
    for _ in 0..1 + pick(4) {
        let layer = match pick(4) {
            0 | 1 if shape.height > 1 => {
                let k = [
                    1 + pick(3.min(shape.height as u64)),
                    1 + pick(3.min(shape.width as u64)),
                ];
                let window = Window {
                    kernel: k,
                    stride: [1 + pick(2), 1 + pick(2)],
                    padding: [
                        pick(k[0] as u64),
                        pick(k[1] as u64),
                        pick(k[0] as u64),
                        pick(k[1] as u64),
                    ],
                };
                if pick(3) == 0 {
                    Layer::SumPool { window }
                } else {
                    let out = 1 + pick(3);
                    let n = out * shape.channels * k[0] * k[1];
                    // A bias per output neuron (a folded input normalization) or per map.
                    let biases = match window.output(shape.height, shape.width) {
                        Ok((h, w)) if pick(3) == 0 => out * h * w,
                        _ => out,
                    };
                    Layer::Conv2d {
                        out_channels: out,
                        window,
                        weights: (0..n).map(|_| pick(15) as i16 - 7).collect(),
                        biases: (0..biases).map(|_| pick(41) as i128 - 20).collect(),
                    }
                }
            }
            2 => {
                let degree = 1 + pick(3);
                let mut c = [0i64; 4];
                for (k, ck) in c.iter_mut().enumerate().take(degree + 1) {
                    *ck = pick(7) as i64 - 3;
                    if k == degree && *ck == 0 {
                        *ck = 1;
                    }
                }
                Layer::Polynomial { coefficients: c }
            }
            _ => {
                let out = 1 + pick(6);
                Layer::Dense {
                    outputs: out,
                    weights: (0..out * shape.len()).map(|_| pick(9) as i16 - 4).collect(),
                    biases: (0..out).map(|_| pick(21) as i128 - 10).collect(),
                }
            }
        };
        shape = layer.output_shape(shape).ok()?;
        layers.push(layer);
    }
    layers.push(Layer::Flatten);
    let classes = 2 + pick(4);
    layers.push(Layer::Dense {
        outputs: classes,
        weights: (0..classes * shape.len())
            .map(|_| pick(9) as i16 - 4)
            .collect(),
        biases: (0..classes).map(|_| pick(21) as i128 - 10).collect(),
    });
    PolynomialNetwork::new(input, 1 + pick(15) as u16, layers).ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn random_networks_infer_exactly_within_their_bounds(seed in any::<u64>()) {
        let Some(network) = random_network(seed) else { return Ok(()) };
        let len = network.input().len();
        for (k, pixels) in [
            alloc::vec![0u8; len],
            alloc::vec![255u8; len],
            random_pixels(len, seed),
            random_pixels(len, seed ^ 0x55),
        ]
        .into_iter()
        .enumerate()
        {
            let wide = network.logits_wide(&pixels).unwrap();
            let last = network.bounds().last().unwrap();
            for v in &wide {
                prop_assert!(&last.low <= v && v <= &last.high, "{k}: {v} outside {last:?}");
            }
            if network.fits_i128() {
                let narrow: Vec<BigInt> =
                    network.logits(&pixels).unwrap().into_iter().map(BigInt::from).collect();
                prop_assert_eq!(&narrow, &wide);
            }
        }
        // Serialized and parsed: the same network.
        prop_assert_eq!(PolynomialNetwork::parse(&network.to_bytes()).unwrap(), network);
    }

    #[test]
    fn mutated_model_files_are_refused_or_read_faithfully(
        seed in any::<u64>(),
        flips in proptest::collection::vec((any::<usize>(), 1..=255u8), 1..4),
        cut in proptest::option::weighted(0.2, any::<usize>()),
    ) {
        let Some(network) = random_network(seed) else { return Ok(()) };
        let mut bytes = network.to_bytes();
        for (at, xor) in flips {
            let len = if at % 2 == 0 { bytes.len().min(48) } else { bytes.len() };
            bytes[(at / 2) % len] ^= xor;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut % (bytes.len() + 1));
        }
        if let Ok(parsed) = PolynomialNetwork::parse(&bytes) {
            prop_assert_eq!(parsed.to_bytes(), bytes);
        }
    }
}

#[test]
fn malformed_networks_are_refused_with_a_reason() {
    let input = Shape::vector(3);
    let dense = Layer::Dense {
        outputs: 2,
        weights: alloc::vec![1; 6],
        biases: alloc::vec![0; 2],
    };
    assert!(PolynomialNetwork::new(input, 255, alloc::vec![dense.clone()]).is_ok());
    let cases: [(Shape, u16, Vec<Layer>); 6] = [
        (Shape::vector(0), 255, alloc::vec![dense.clone()]),
        (input, 0, alloc::vec![dense.clone()]),
        (input, 255, Vec::new()),
        (
            input,
            255,
            alloc::vec![Layer::Dense {
                outputs: 2,
                weights: alloc::vec![1; 5],
                biases: alloc::vec![0; 2]
            }],
        ),
        (
            input,
            255,
            alloc::vec![
                dense.clone(),
                Layer::Polynomial {
                    coefficients: [5, 0, 0, 0]
                }
            ],
        ),
        (
            Shape {
                channels: 1,
                height: 2,
                width: 2,
            },
            255,
            alloc::vec![Layer::SumPool {
                window: Window {
                    kernel: [1, 1],
                    stride: [1, 1],
                    padding: [0; 4]
                }
            }],
        ),
    ];
    for (shape, levels, layers) in cases {
        let err = PolynomialNetwork::new(shape, levels, layers.clone()).unwrap_err();
        assert!(
            matches!(err, Error::Malformed { .. }),
            "{shape:?} {layers:?}: {err:?}"
        );
    }
}

/// The generator behind the property tests draws every layer kind often (a generator that
/// drifted to trivial networks would make those tests vacuous).
#[test]
fn the_random_network_generator_covers_every_layer_kind() {
    let made: Vec<PolynomialNetwork> = (0..300).filter_map(random_network).collect();
    let wide = made.iter().filter(|n| !n.fits_i128()).count();
    let convs = made
        .iter()
        .filter(|n| n.layers().iter().any(|l| matches!(l, Layer::Conv2d { .. })))
        .count();
    let pools = made
        .iter()
        .filter(|n| {
            n.layers()
                .iter()
                .any(|l| matches!(l, Layer::SumPool { .. }))
        })
        .count();
    let polys = made
        .iter()
        .filter(|n| n.layers().iter().any(|l| l.degree() == 3))
        .count();
    let _ = wide;
    assert!(made.len() > 250, "{}", made.len());
    assert!(
        convs > 60 && pools > 30 && polys > 20,
        "{convs} {pools} {polys}"
    );
}
