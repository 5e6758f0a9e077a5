//! MNIST in its raw IDX form: checksum verification and parsing with typed errors.
//!
//! IDX: a big-endian header (magic 0x0000_0803 for images, 0x0000_0801 for labels, then the
//! dimensions) followed by unsigned bytes. A file is accepted only if its length is exactly
//! what its header announces, so nothing is allocated from an unchecked length.

use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Image side in pixels.
pub const SIDE: usize = 28;

/// Images of the validation split: the last ones of the training set, held out by
/// cryptonets-train (its `--validation` default) and rescored by `model score --validation`.
/// Hyperparameters and precision are chosen on it; the test set is used once.
pub const VALIDATION_IMAGES: usize = 5000;

/// The shape of an MNIST image as a network input: one channel of 28 x 28.
pub const SHAPE: cryptonets_core::model::polynomial::Shape =
    cryptonets_core::model::polynomial::Shape {
        channels: 1,
        height: SIDE,
        width: SIDE,
    };
/// Pixels per image.
pub const PIXELS: usize = SIDE * SIDE;

/// The SHA-256 digests of the four files, recorded when they were first fetched.
const DIGESTS: &str = include_str!("../mnist.sha256");

/// Which half of MNIST.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// 60,000 training images.
    Train,
    /// 10,000 test images.
    Test,
}

impl Split {
    fn files(self) -> (&'static str, &'static str) {
        match self {
            Split::Train => ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
            Split::Test => ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
        }
    }
}

/// Why a data set could not be loaded.
#[derive(Debug)]
pub enum MnistError {
    /// A file is missing or unreadable.
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file is not the one recorded in `host/mnist.sha256`.
    Checksum {
        /// The file.
        path: PathBuf,
    },
    /// A file is not valid IDX of the expected kind.
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl fmt::Display for MnistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MnistError::Io { path, source } => write!(
                f,
                "cannot read {}: {source} (run `bash scripts/fetch-mnist.sh` or pass --data DIR)",
                path.display()
            ),
            MnistError::Checksum { path } => write!(
                f,
                "{} does not match its SHA-256 in host/mnist.sha256 (corrupt or another file)",
                path.display()
            ),
            MnistError::Malformed { path, reason } => {
                write!(
                    f,
                    "{} is not a valid MNIST IDX file: {reason}",
                    path.display()
                )
            }
        }
    }
}

impl std::error::Error for MnistError {}

/// Images and labels of one split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dataset {
    /// Row-major 28 x 28 pixels per image, `PIXELS` bytes each, concatenated.
    pub pixels: Vec<u8>,
    /// The digit of each image, 0 to 9.
    pub labels: Vec<u8>,
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The pixels of image i.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.pixels[i * PIXELS..(i + 1) * PIXELS]
    }

    /// The first `len - held_out` images and the last `held_out` (a validation split taken
    /// from the end of the training set); `held_out` is capped at the set's size.
    pub fn hold_out(&self, held_out: usize) -> (Dataset, Dataset) {
        let at = self.len() - held_out.min(self.len());
        let (front_pixels, back_pixels) = self.pixels.split_at(at * PIXELS);
        let (front_labels, back_labels) = self.labels.split_at(at);
        (
            Dataset {
                pixels: front_pixels.to_vec(),
                labels: front_labels.to_vec(),
            },
            Dataset {
                pixels: back_pixels.to_vec(),
                labels: back_labels.to_vec(),
            },
        )
    }
}

fn big_endian(bytes: &[u8], word: usize) -> Option<u32> {
    let b = bytes.get(4 * word..4 * word + 4)?;
    Some(u32::from_be_bytes(b.try_into().ok()?))
}

/// Parses an IDX image file: 28 x 28 unsigned bytes per image.
pub fn parse_images(bytes: &[u8]) -> Result<&[u8], String> {
    if big_endian(bytes, 0) != Some(0x0000_0803) {
        return Err("bad magic number for an image file (expected 0x00000803)".into());
    }
    let (count, rows, cols) = match (
        big_endian(bytes, 1),
        big_endian(bytes, 2),
        big_endian(bytes, 3),
    ) {
        (Some(c), Some(r), Some(k)) => (c as usize, r as usize, k as usize),
        _ => return Err("truncated header".into()),
    };
    if rows != SIDE || cols != SIDE {
        return Err(format!(
            "images are {rows} x {cols}, expected {SIDE} x {SIDE}"
        ));
    }
    let expected = count.checked_mul(PIXELS).and_then(|p| p.checked_add(16));
    if expected != Some(bytes.len()) {
        return Err(format!(
            "header announces {count} images but the file has {} bytes",
            bytes.len()
        ));
    }
    Ok(&bytes[16..])
}

/// Parses an IDX label file: one byte, 0 to 9, per image.
pub fn parse_labels(bytes: &[u8]) -> Result<&[u8], String> {
    if big_endian(bytes, 0) != Some(0x0000_0801) {
        return Err("bad magic number for a label file (expected 0x00000801)".into());
    }
    let count = big_endian(bytes, 1).ok_or("truncated header")? as usize;
    if count.checked_add(8) != Some(bytes.len()) {
        return Err(format!(
            "header announces {count} labels but the file has {} bytes",
            bytes.len()
        ));
    }
    let labels = &bytes[8..];
    if let Some(position) = labels.iter().position(|&l| l > 9) {
        return Err(format!(
            "label {} at index {position} is not a digit",
            labels[position]
        ));
    }
    Ok(labels)
}

const MAX_FILE_BYTES: u64 = 47_040_016;

fn read_verified(dir: &Path, name: &str) -> Result<Vec<u8>, MnistError> {
    let path = dir.join(name);
    // The largest MNIST file (training images) is 47,040,016 bytes; anything else is refused
    // before it is read, as is a path that is not a regular file.
    let bytes = crate::files::read_checked(&path, MAX_FILE_BYTES, "MNIST file").map_err(|e| {
        MnistError::Io {
            path: path.clone(),
            source: std::io::Error::other(e),
        }
    })?;
    let recorded = DIGESTS
        .lines()
        .filter_map(|line| line.split_once("  "))
        .find(|(_, file)| *file == name)
        .map(|(digest, _)| digest)
        .expect("every MNIST file has a recorded digest");
    let actual: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if actual != recorded {
        return Err(MnistError::Checksum { path });
    }
    Ok(bytes)
}

/// Loads one split from `dir`, verifying both files' checksums, then parsing them.
pub fn load(dir: &Path, split: Split) -> Result<Dataset, MnistError> {
    let (images_name, labels_name) = split.files();
    let image_bytes = read_verified(dir, images_name)?;
    let label_bytes = read_verified(dir, labels_name)?;
    parse(dir, split, &image_bytes, &label_bytes)
}

/// Parses a split already read (checksums not checked): the shared core of [`load`].
pub fn parse(
    dir: &Path,
    split: Split,
    image_bytes: &[u8],
    label_bytes: &[u8],
) -> Result<Dataset, MnistError> {
    let (images_name, labels_name) = split.files();
    let malformed = |name: &str, reason: String| MnistError::Malformed {
        path: dir.join(name),
        reason,
    };
    let pixels = parse_images(image_bytes).map_err(|r| malformed(images_name, r))?;
    let labels = parse_labels(label_bytes).map_err(|r| malformed(labels_name, r))?;
    if pixels.len() / PIXELS != labels.len() {
        return Err(malformed(
            labels_name,
            format!(
                "{} labels for {} images",
                labels.len(),
                pixels.len() / PIXELS
            ),
        ));
    }
    Ok(Dataset {
        pixels: pixels.to_vec(),
        labels: labels.to_vec(),
    })
}

/// The directory the data lives in by default (what `scripts/fetch-mnist.sh` fills).
pub fn default_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("data")
        .join("mnist")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx_images(count: u32, rows: u32, cols: u32, body: usize) -> Vec<u8> {
        let mut v = Vec::new();
        for w in [0x0803, count, rows, cols] {
            v.extend_from_slice(&u32::to_be_bytes(w));
        }
        v.extend((0..body).map(|i| i as u8));
        v
    }

    fn idx_labels(labels: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for w in [0x0801, labels.len() as u32] {
            v.extend_from_slice(&u32::to_be_bytes(w));
        }
        v.extend_from_slice(labels);
        v
    }

    #[test]
    fn parses_well_formed_files() {
        let images = idx_images(3, 28, 28, 3 * PIXELS);
        let labels = idx_labels(&[7, 2, 1]);
        let data = parse(Path::new("x"), Split::Test, &images, &labels).unwrap();
        assert_eq!(data.len(), 3);
        assert_eq!(data.pixels[PIXELS], (PIXELS % 256) as u8);
        assert_eq!(data.labels, [7, 2, 1]);
    }

    #[test]
    fn malformed_files_give_typed_errors() {
        let labels = idx_labels(&[1, 2, 3]);
        for (images, what) in [
            (idx_images(3, 28, 28, 3 * PIXELS - 1), "announces"),
            (idx_images(3, 28, 28, 3 * PIXELS + 1), "announces"),
            (idx_images(3, 27, 28, 3 * PIXELS), "expected 28 x 28"),
            (idx_images(u32::MAX, 28, 28, 10), "announces"),
            (vec![0, 0, 8, 3, 0], "truncated"),
            (idx_labels(&[1, 2, 3]), "magic"),
        ] {
            match parse(Path::new("d"), Split::Test, &images, &labels) {
                Err(MnistError::Malformed { reason, .. }) => {
                    assert!(reason.contains(what), "{reason}")
                }
                other => panic!("accepted or wrong error: {other:?}"),
            }
        }
        let images = idx_images(3, 28, 28, 3 * PIXELS);
        for (labels, what) in [
            (idx_labels(&[1, 2]), "2 labels for 3 images"),
            (idx_labels(&[1, 12, 3]), "not a digit"),
            (idx_images(1, 28, 28, PIXELS), "magic"),
            (vec![0, 0, 8, 1, 0, 0, 0, 9, 1], "announces"),
        ] {
            match parse(Path::new("d"), Split::Test, &images, &labels) {
                Err(MnistError::Malformed { reason, .. }) => {
                    assert!(reason.contains(what), "{reason}")
                }
                other => panic!("accepted or wrong error: {other:?}"),
            }
        }
    }

    #[test]
    fn missing_and_altered_files_are_reported() {
        let dir =
            std::env::temp_dir().join(format!("cryptonets-mnist-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = load(&dir, Split::Test).unwrap_err();
        assert!(
            matches!(missing, MnistError::Io { .. }) && missing.to_string().contains("fetch-mnist")
        );
        std::fs::write(
            dir.join("t10k-images-idx3-ubyte"),
            idx_images(1, 28, 28, PIXELS),
        )
        .unwrap();
        std::fs::write(dir.join("t10k-labels-idx1-ubyte"), idx_labels(&[5])).unwrap();
        assert!(matches!(
            load(&dir, Split::Test),
            Err(MnistError::Checksum { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The real test split, when `scripts/fetch-mnist.sh` has fetched it.
    #[test]
    fn real_test_split_when_present() {
        let dir = default_dir();
        if !dir.join("t10k-images-idx3-ubyte").exists() {
            assert!(
                std::env::var("CI").is_err(),
                "MNIST is required in CI (CI is set): fetch it with bash scripts/fetch-mnist.sh"
            );
            eprintln!(
                "SKIPPED: no MNIST in {} (bash scripts/fetch-mnist.sh)",
                dir.display()
            );
            return;
        }
        let data = load(&dir, Split::Test).unwrap();
        assert_eq!(data.len(), 10_000);
        let mut counts = [0usize; 10];
        data.labels.iter().for_each(|&l| counts[l as usize] += 1);
        assert_eq!(
            counts,
            [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
        );
    }
}
