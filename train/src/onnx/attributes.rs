//! Node attributes: typed reads with defaults, and the windows of Conv and AveragePool.

use super::*;

pub(super) fn attribute<'n>(node: &'n Node<'_>, name: &str) -> Option<&'n Attribute<'n>> {
    node.attribute.iter().find(|a| a.name == name)
}

pub(super) fn int_attribute(node: &Node<'_>, name: &str, default: i64) -> i64 {
    attribute(node, name).map_or(default, |a| a.i)
}

pub(super) fn ints_attribute(node: &Node<'_>, name: &str) -> Option<Vec<i64>> {
    attribute(node, name).map(|a| a.ints.clone())
}

pub(super) fn float_attribute(node: &Node<'_>, name: &str, default: f64) -> f64 {
    attribute(node, name).map_or(default, |a| a.f as f64)
}

/// A small non-negative integer attribute list of `len` entries (`default` if absent).
pub(super) fn window_ints(
    node: &Node<'_>,
    name: &str,
    len: usize,
    default: usize,
) -> Result<Vec<usize>, ImportError> {
    match ints_attribute(node, name) {
        None => Ok(vec![default; len]),
        Some(v) if v.len() == len && v.iter().all(|&x| (0..=4096).contains(&x)) => {
            Ok(v.into_iter().map(|x| x as usize).collect())
        }
        Some(v) => Err(unsupported(
            node,
            format!("{name} {v:?}: {len} small non-negative values are taken"),
        )),
    }
}

pub(super) fn auto_pad_ok(node: &Node<'_>) -> Result<(), ImportError> {
    match attribute(node, "auto_pad").map_or(&b"NOTSET"[..], |a| a.s) {
        b"" | b"NOTSET" | b"VALID" => Ok(()),
        other => Err(unsupported(
            node,
            format!(
                "auto_pad {}: give explicit pads",
                String::from_utf8_lossy(other)
            ),
        )),
    }
}

/// Kernel, stride and pads of a Conv or AveragePool node (ONNX pads are [top, left, bottom,
/// right], the order of [`Window::padding`]).
pub(super) fn window(node: &Node<'_>, kernel: [usize; 2]) -> Result<Window, ImportError> {
    auto_pad_ok(node)?;
    let strides = window_ints(node, "strides", 2, 1)?;
    let pads = window_ints(node, "pads", 4, 0)?;
    if window_ints(node, "dilations", 2, 1)? != [1, 1] {
        return Err(unsupported(node, "dilations other than 1"));
    }
    Ok(Window {
        kernel,
        stride: [strides[0], strides[1]],
        padding: [pads[0], pads[1], pads[2], pads[3]],
    })
}
