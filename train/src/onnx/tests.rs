//! The importer on ONNX files these tests build themselves with onnx-rs's encoder.

use onnx_rs::ast::{
    Attribute, AttributeType, DataType, Dimension, Graph, Model, Node, OpType, OperatorSetId,
    TensorProto, TensorShape, TensorShapeDimension, TensorTypeProto, TypeProto, TypeValue,
    ValueInfo,
};

use super::*;

/// Seeded values in (-scale, scale), exactly representable in f32.
fn values(len: usize, seed: u64, scale: f64) -> Vec<f64> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * scale
        })
        .map(|x| x as f32 as f64)
        .collect()
}

fn f32s(x: &[f64]) -> Vec<f32> {
    x.iter().map(|&v| v as f32).collect()
}

fn transpose(rows: &[f64], outputs: usize, inputs: usize) -> Vec<f64> {
    let mut t = vec![0.0; rows.len()];
    for o in 0..outputs {
        for i in 0..inputs {
            t[i * outputs + o] = rows[o * inputs + i];
        }
    }
    t
}

fn ints(name: &'static str, v: &[i64]) -> Attribute<'static> {
    Attribute {
        name,
        r#type: AttributeType::Ints,
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn int(name: &'static str, v: i64) -> Attribute<'static> {
    Attribute {
        name,
        r#type: AttributeType::Int,
        i: v,
        ..Default::default()
    }
}

fn float(name: &'static str, v: f32) -> Attribute<'static> {
    Attribute {
        name,
        r#type: AttributeType::Float,
        f: v,
        ..Default::default()
    }
}

fn node(
    op: OpType<'static>,
    inputs: &[&'static str],
    output: &'static str,
    attribute: Vec<Attribute<'static>>,
) -> Node<'static> {
    Node {
        name: output,
        op_type: op,
        input: inputs.to_vec(),
        output: vec![output],
        attribute,
        ..Default::default()
    }
}

/// A PyTorch `Linear` as exported: Gemm with the weights stored [outputs][inputs].
fn linear(
    input: &'static str,
    weights: &'static str,
    bias: &'static str,
    output: &'static str,
) -> Node<'static> {
    node(
        OpType::Gemm,
        &[input, weights, bias],
        output,
        vec![int("transB", 1)],
    )
}

fn conv_attributes(stride: i64) -> Vec<Attribute<'static>> {
    vec![
        ints("kernel_shape", &[5, 5]),
        ints("strides", &[stride, stride]),
        ints("pads", &[1, 1, 1, 1]),
    ]
}

fn encode(nodes: Vec<Node<'static>>, initializers: Vec<TensorProto<'static>>) -> Vec<u8> {
    let model = Model {
        ir_version: 8,
        producer_name: "cryptonets-train tests",
        opset_import: vec![OperatorSetId {
            domain: "",
            version: 17,
        }],
        graph: Some(Graph {
            name: "cryptonets",
            node: nodes,
            input: vec![image_input(&[None, Some(1), Some(28), Some(28)])],
            output: vec![ValueInfo {
                name: "logits",
                ..Default::default()
            }],
            initializer: initializers,
            ..Default::default()
        }),
        ..Default::default()
    };
    onnx_rs::encode(&model)
}

/// The declared image input: dimensions, `None` for a named (batch) dimension.
fn image_input(dims: &[Option<i64>]) -> ValueInfo<'static> {
    let dim = dims
        .iter()
        .map(|d| TensorShapeDimension {
            value: d.map_or(Dimension::Param("batch"), Dimension::Value),
            ..Default::default()
        })
        .collect();
    ValueInfo {
        name: "image",
        r#type: Some(TypeProto {
            value: Some(TypeValue::Tensor(TensorTypeProto {
                elem_type: DataType::Float,
                shape: Some(TensorShape { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A random network, every weight exactly an f32.
fn random_net(seed: u64) -> FloatNet {
    FloatNet {
        conv_w: values(MAPS * 25, seed, 0.5),
        conv_b: values(MAPS, seed + 1, 0.1),
        dense1_w: values(HIDDEN * CONV_OUTPUTS, seed + 2, 0.05),
        dense1_b: values(HIDDEN, seed + 3, 0.1),
        dense2_w: values(CLASSES * HIDDEN, seed + 4, 0.2),
        dense2_b: values(CLASSES, seed + 5, 0.1),
    }
}

/// The layout PyTorch exports for Conv2d, x * x, flatten, Linear, x ** 2, Linear.
fn pytorch_style(net: &FloatNet) -> Vec<u8> {
    encode(
        vec![
            node(
                OpType::Conv,
                &["image", "conv.w", "conv.b"],
                "c",
                conv_attributes(2),
            ),
            node(OpType::Mul, &["c", "c"], "c2", vec![]),
            node(OpType::Flatten, &["c2"], "f", vec![int("axis", 1)]),
            linear("f", "fc1.w", "fc1.b", "h"),
            node(OpType::Pow, &["h", "two"], "h2", vec![]),
            linear("h2", "fc2.w", "fc2.b", "logits"),
        ],
        vec![
            TensorProto::from_f32("conv.w", vec![5, 1, 5, 5], f32s(&net.conv_w)),
            TensorProto::from_f32("conv.b", vec![5], f32s(&net.conv_b)),
            TensorProto::from_f32("fc1.w", vec![100, 845], f32s(&net.dense1_w)),
            TensorProto::from_f32("fc1.b", vec![100], f32s(&net.dense1_b)),
            TensorProto::from_f32("two", vec![], vec![2.0]),
            TensorProto::from_f32("fc2.w", vec![10, 100], f32s(&net.dense2_w)),
            TensorProto::from_f32("fc2.b", vec![10], f32s(&net.dense2_b)),
        ],
    )
}

fn image(seed: u64) -> Vec<f64> {
    values(784, seed, 1.0).into_iter().map(f64::abs).collect()
}

fn assert_same_net(a: &FloatNet, b: &FloatNet) {
    assert_eq!(a.conv_w, b.conv_w);
    assert_eq!(a.conv_b, b.conv_b);
    assert_eq!(a.dense1_w, b.dense1_w);
    assert_eq!(a.dense1_b, b.dense1_b);
    assert_eq!(a.dense2_w, b.dense2_w);
    assert_eq!(a.dense2_b, b.dense2_b);
}

#[test]
fn pytorch_style_export_imports_exactly() {
    let net = random_net(7);
    let imported = import(&pytorch_style(&net)).expect("imports");
    assert_same_net(&imported, &net);
}

#[test]
fn matmul_add_identity_reshape_and_gemm_scaling_import() {
    let net = random_net(11);
    // Conv without bias plus Add; Reshape; MatMul + Add; Identity; Gemm with alpha and beta.
    let bytes = encode(
        vec![
            node(OpType::Conv, &["image", "conv.w"], "c", conv_attributes(2)),
            node(OpType::Add, &["conv.b", "c"], "cb", vec![]),
            node(OpType::Mul, &["cb", "cb"], "c2", vec![]),
            node(OpType::Reshape, &["c2", "shape"], "f", vec![]),
            node(OpType::MatMul, &["f", "fc1.w"], "h", vec![]),
            node(OpType::Add, &["h", "fc1.b"], "hb", vec![]),
            node(OpType::Identity, &["hb"], "hi", vec![]),
            node(OpType::Mul, &["hi", "hi"], "h2", vec![]),
            node(OpType::Dropout, &["h2"], "hd", vec![]),
            node(
                OpType::Gemm,
                &["hd", "fc2.w", "fc2.b"],
                "logits",
                vec![float("alpha", 2.0), float("beta", 0.5)],
            ),
        ],
        vec![
            TensorProto::from_f32("conv.w", vec![5, 1, 5, 5], f32s(&net.conv_w)),
            TensorProto::from_f32("conv.b", vec![1, 5, 1, 1], f32s(&net.conv_b)),
            TensorProto::from_i64("shape", vec![2], vec![-1, 845]),
            TensorProto::from_f32(
                "fc1.w",
                vec![845, 100],
                f32s(&transpose(&net.dense1_w, 100, 845)),
            ),
            TensorProto::from_f32("fc1.b", vec![1, 100], f32s(&net.dense1_b)),
            TensorProto::from_f32(
                "fc2.w",
                vec![100, 10],
                f32s(&transpose(&net.dense2_w, 10, 100)),
            ),
            TensorProto::from_f32("fc2.b", vec![10], f32s(&net.dense2_b)),
        ],
    );
    let imported = import(&bytes).expect("imports");
    let expected = FloatNet {
        dense2_w: net.dense2_w.iter().map(|w| 2.0 * w).collect(),
        dense2_b: net.dense2_b.iter().map(|b| 0.5 * b).collect(),
        ..net
    };
    assert_same_net(&imported, &expected);
}

/// Direct evaluation of conv -> square -> mean pool (k x k, stride s, no padding) -> dense
/// -> square -> dense, the reference for the folded network.
fn pooled_logits(net: &FloatNet, dense1_pooled: &[f64], k: usize, s: usize, x: &[f64]) -> Vec<f64> {
    let squared = net.squared_conv(x);
    let side = (13 - k) / s + 1;
    let mut pooled = Vec::new();
    for m in 0..MAPS {
        for oy in 0..side {
            for ox in 0..side {
                let sum: f64 = (0..k * k)
                    .map(|t| squared[m * 169 + (oy * s + t / k) * 13 + ox * s + t % k])
                    .sum();
                pooled.push(sum / (k * k) as f64);
            }
        }
    }
    let hidden: Vec<f64> = (0..HIDDEN)
        .map(|u| {
            let z = net.dense1_b[u]
                + (0..pooled.len())
                    .map(|f| dense1_pooled[u * pooled.len() + f] * pooled[f])
                    .sum::<f64>();
            z * z
        })
        .collect();
    (0..CLASSES)
        .map(|c| {
            net.dense2_b[c]
                + (0..HIDDEN)
                    .map(|u| net.dense2_w[c * HIDDEN + u] * hidden[u])
                    .sum::<f64>()
        })
        .collect()
}

#[test]
fn mean_pooling_folds_into_the_first_dense_layer() {
    let net = random_net(23);
    for (k, s) in [(2usize, 1usize), (3, 2), (1, 1)] {
        let side = (13 - k) / s + 1;
        let features = MAPS * side * side;
        let dense1_pooled = values(HIDDEN * features, 99, 0.05);
        let bytes = encode(
            vec![
                node(
                    OpType::Conv,
                    &["image", "conv.w", "conv.b"],
                    "c",
                    conv_attributes(2),
                ),
                node(OpType::Pow, &["c", "two"], "c2", vec![]),
                node(
                    OpType::AveragePool,
                    &["c2"],
                    "p",
                    vec![
                        ints("kernel_shape", &[k as i64, k as i64]),
                        ints("strides", &[s as i64, s as i64]),
                    ],
                ),
                node(OpType::Flatten, &["p"], "f", vec![]),
                linear("f", "fc1.w", "fc1.b", "h"),
                node(OpType::Mul, &["h", "h"], "h2", vec![]),
                linear("h2", "fc2.w", "fc2.b", "logits"),
            ],
            vec![
                TensorProto::from_f32("conv.w", vec![5, 1, 5, 5], f32s(&net.conv_w)),
                TensorProto::from_f32("conv.b", vec![5], f32s(&net.conv_b)),
                TensorProto::from_i64("two", vec![1], vec![2]),
                TensorProto::from_f32("fc1.w", vec![100, features as i64], f32s(&dense1_pooled)),
                TensorProto::from_f32("fc1.b", vec![100], f32s(&net.dense1_b)),
                TensorProto::from_f32("fc2.w", vec![10, 100], f32s(&net.dense2_w)),
                TensorProto::from_f32("fc2.b", vec![10], f32s(&net.dense2_b)),
            ],
        );
        let imported = import(&bytes).expect("imports");
        assert_eq!(imported.dense1_w.len(), HIDDEN * CONV_OUTPUTS);
        for seed in 0..3 {
            let x = image(seed);
            let got = imported.logits(&x);
            let want = pooled_logits(&net, &dense1_pooled, k, s, &x);
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-9 * w.abs().max(1.0),
                    "pool {k}/{s}: {g} vs {w}"
                );
            }
        }
    }
}

#[test]
fn imported_network_quantizes_to_a_valid_model() {
    let imported = import(&pytorch_style(&random_net(5))).expect("imports");
    let writer = crate::quantize::integer_model(
        &imported,
        crate::quantize::Precision {
            levels: 15,
            bits: [6, 5, 6],
        },
    );
    let bytes = writer.to_bytes();
    let model = cryptonets_core::model::Model::parse(&bytes).expect("valid model");
    assert!(model.bounds().plaintext_bits() > 0);
}

#[test]
fn unsupported_operators_are_named() {
    let net = random_net(3);
    let mut bytes = pytorch_style(&net);
    // Replace the first square by a ReLU, which encrypted evaluation cannot compute.
    let model = onnx_rs::parse(&bytes).expect("parses");
    let mut graph = model.graph.clone().expect("graph");
    graph.node[1] = node(OpType::Relu, &["c"], "c2", vec![]);
    let relu = Model {
        graph: Some(graph),
        ..model.clone()
    };
    let err = import(&onnx_rs::encode(&relu)).expect_err("relu refused");
    assert!(matches!(&err, ImportError::UnsupportedOperator { op, .. } if op == "Relu"));
    assert!(err.to_string().contains("Relu"), "{err}");
    bytes.truncate(bytes.len() / 2);
    assert!(import(&bytes).is_err(), "truncated file");
    assert!(import(b"not onnx at all").is_err(), "garbage");
}

#[test]
fn wrong_shapes_and_attributes_are_refused() {
    let net = random_net(4);
    let with = |edit: &dyn Fn(&mut Graph<'_>)| -> ImportError {
        let bytes = pytorch_style(&net);
        let mut model = onnx_rs::parse(&bytes).expect("parses");
        edit(model.graph.as_mut().expect("graph"));
        import(&onnx_rs::encode(&model)).expect_err("refused")
    };
    // Three channels of 32 x 32.
    let err = with(&|g| g.input[0] = image_input(&[Some(1), Some(3), Some(32), Some(32)]));
    assert!(err.to_string().contains("expected [N, 1, 28, 28]"), "{err}");
    // Stride 1 gives 24 x 24 outputs, not the 13 x 13 of the topology.
    let err = with(&|g| g.node[0].attribute = conv_attributes(1));
    assert!(err.to_string().contains("strides [1, 1]"), "{err}");
    // Pow 3 is not a square.
    let err = with(&|g| {
        g.initializer[4] = TensorProto::from_f32("two", vec![], vec![3.0]);
    });
    assert!(err.to_string().contains("exponent"), "{err}");
    // 99 hidden units.
    let err = with(&|g| {
        g.initializer[2] = TensorProto::from_f32("fc1.w", vec![99, 845], vec![0.0; 99 * 845]);
    });
    assert!(err.to_string().contains("[99, 845]"), "{err}");
    // Data that does not fill the declared shape.
    let err = with(&|g| {
        g.initializer[1] = TensorProto::from_f32("conv.b", vec![5], vec![0.0; 4]);
    });
    assert!(matches!(err, ImportError::BadTensor { .. }), "{err}");
    // A weight that is a graph input instead of a stored constant.
    let err = with(&|g| {
        g.initializer.remove(0);
    });
    assert!(err.to_string().contains("conv.w"), "{err}");
    // A graph that stops after the first dense layer.
    let err = with(&|g| g.node.truncate(4));
    assert_eq!(err, ImportError::Incomplete("the second square"));
    // A branch: the second square reads the conv output instead of the chain.
    let err = with(&|g| g.node[4].input = vec!["c", "two"]);
    assert!(err.to_string().contains("chain"), "{err}");
}

/// The pytorch-style graph with every weight in an external data file, as PyTorch's
/// default exporter writes it: each initializer a `location`, `offset` and `length` into
/// `model.onnx.data`. Returns the model bytes and the data file.
fn external_style(net: &FloatNet, location: &'static str) -> (Vec<u8>, Vec<u8>) {
    let inline = pytorch_style(net);
    let model = onnx_rs::parse(&inline).unwrap();
    let mut data = Vec::new();
    let mut entries: Vec<(usize, usize)> = Vec::new();
    let graph = model.graph.as_ref().unwrap();
    for t in &graph.initializer {
        let values = t.as_f32().unwrap();
        entries.push((data.len(), values.len() * 4));
        values
            .iter()
            .for_each(|v| data.extend_from_slice(&v.to_le_bytes()));
    }
    let texts: Vec<(String, String)> = entries
        .iter()
        .map(|(o, l)| (o.to_string(), l.to_string()))
        .collect();
    let initializers: Vec<TensorProto<'_>> = graph
        .initializer
        .iter()
        .zip(&texts)
        .map(|(t, (offset, length))| {
            TensorProto::from_raw(t.name(), t.dims().to_vec(), DataType::Float, &[])
                .with_data_location(onnx_rs::ast::DataLocation::External)
                .with_external_data(vec![
                    onnx_rs::ast::StringStringEntry {
                        key: "location",
                        value: location,
                    },
                    onnx_rs::ast::StringStringEntry {
                        key: "offset",
                        value: offset,
                    },
                    onnx_rs::ast::StringStringEntry {
                        key: "length",
                        value: length,
                    },
                ])
        })
        .collect();
    let mut model = model.clone();
    model.graph.as_mut().unwrap().initializer = initializers;
    (onnx_rs::encode(&model), data)
}

#[test]
fn external_data_files_are_read_beside_the_model_and_kept_inside_its_directory() {
    let net = random_net(11);
    let dir = std::env::temp_dir().join(format!("cryptonets-onnx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (model, data) = external_style(&net, "model.onnx.data");
    std::fs::write(dir.join("model.onnx"), &model).unwrap();
    std::fs::write(dir.join("model.onnx.data"), &data).unwrap();
    assert_same_net(&import_file(&dir.join("model.onnx")).unwrap(), &net);
    // From bytes alone the weights cannot be found: said so.
    let err = import(&model).unwrap_err().to_string();
    assert!(err.contains("import the model by its path"), "{err}");
    // A truncated data file, a missing one, and a location outside the directory.
    std::fs::write(dir.join("model.onnx.data"), &data[..data.len() - 4]).unwrap();
    let err = import_file(&dir.join("model.onnx"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("outside"), "{err}");
    std::fs::remove_file(dir.join("model.onnx.data")).unwrap();
    let err = import_file(&dir.join("model.onnx"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot read"), "{err}");
    for hostile in ["../model.onnx.data", "/etc/passwd"] {
        let (model, _) = external_style(&net, hostile);
        std::fs::write(dir.join("hostile.onnx"), &model).unwrap();
        let err = import_file(&dir.join("hostile.onnx"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("leaves the model's directory"),
            "{hostile}: {err}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn constant_nodes_stand_for_initializers() {
    // The exponent of the second square as a Constant node, as torch.onnx writes `x ** 2`.
    let net = random_net(13);
    let inline = pytorch_style(&net);
    let mut model = onnx_rs::parse(&inline).unwrap();
    let graph = model.graph.as_mut().unwrap();
    let two = graph
        .initializer
        .iter()
        .position(|t| t.name() == "two")
        .unwrap();
    let tensor = graph.initializer.remove(two);
    let constant = Node {
        op_type: OpType::Constant,
        output: vec!["two"],
        attribute: vec![Attribute {
            name: "value",
            r#type: onnx_rs::ast::AttributeType::Tensor,
            t: Some(tensor),
            ..Default::default()
        }],
        ..Default::default()
    };
    graph.node.insert(0, constant);
    let bytes = onnx_rs::encode(&model);
    assert_same_net(&import(&bytes).unwrap(), &net);
    // A Constant without a tensor is refused, naming it.
    let mut model = onnx_rs::parse(&bytes).unwrap();
    model.graph.as_mut().unwrap().node[0].attribute.clear();
    let err = import(&onnx_rs::encode(&model)).unwrap_err().to_string();
    assert!(err.contains("Constant"), "{err}");
}
