//! Bundles: the files of the single-image mode's uploads and results (`cryptonets encrypt`
//! and `eval` with `--mode single`), a list of serialized objects per image and CRT channel.
//!
//! Little-endian:
//!
//! | bytes | field |
//! | --- | --- |
//! | 4 | magic `CNSB` |
//! | 1 | version (1) |
//! | 1 | kind: 1 uploads (seeded ciphertexts), 2 results (ciphertexts) |
//! | 1 | CRT channels c |
//! | 1 | reserved (0) |
//! | 16 | bundle id (random, from `encrypt`; results repeat their uploads' id) |
//! | 4 | images k (at most [`MAX_BUNDLE_IMAGES`]) |
//! | 4 | objects per image and channel m |
//! | k c m (4 + ...) | each object as a u32 byte length and the object, image by image, channel by channel |
//!
//! The parser checks the shape against what the reader's plan expects and every length
//! before it copies anything; the objects themselves are parsed by their own readers.

/// Most images in one bundle.
pub const MAX_BUNDLE_IMAGES: usize = 10_000;
const MAGIC: [u8; 4] = *b"CNSB";
const VERSION: u8 = 1;
/// Bytes before the first object.
pub const HEADER: usize = 32;
/// The kind of a bundle of uploads (seeded ciphertexts).
pub const UPLOADS: u8 = 1;
/// The kind of a bundle of results (ciphertexts).
pub const RESULTS: u8 = 2;

/// A bundle of serialized objects: objects[image][channel][k].
#[derive(Debug, PartialEq, Eq)]
pub struct Bundle {
    /// [`UPLOADS`] or [`RESULTS`].
    pub kind: u8,
    /// The id `encrypt` drew; results repeat their uploads'.
    pub id: [u8; 16],
    /// The objects.
    pub objects: Vec<Vec<Vec<Vec<u8>>>>,
}

impl Bundle {
    /// Checks a bundle's header (at least its first [`HEADER`] bytes) against the kind and
    /// shape a reader expects, and returns its image count.
    pub fn check_header(
        bytes: &[u8],
        kind: u8,
        channels: usize,
        per: usize,
    ) -> Result<usize, String> {
        if bytes.len() < HEADER || bytes[..4] != MAGIC {
            return Err("not a single-image bundle (bad magic)".into());
        }
        if bytes[4] != VERSION || bytes[7] != 0 {
            return Err("unsupported bundle version".into());
        }
        if bytes[5] != kind {
            return Err(match kind {
                UPLOADS => "not encrypted images (a bundle of results?)".into(),
                _ => "not encrypted results (a bundle of images?)".into(),
            });
        }
        let word =
            |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4")) as usize;
        let (images, found_per) = (word(24), word(28));
        if bytes[6] as usize != channels || found_per != per {
            return Err(format!(
                "made for {} channels and {found_per} objects an image, this model's plan has {channels} and {per}",
                bytes[6]
            ));
        }
        if images == 0 || images > MAX_BUNDLE_IMAGES {
            return Err(format!(
                "{images} images: a bundle holds 1 to {MAX_BUNDLE_IMAGES}"
            ));
        }
        Ok(images)
    }

    /// Serializes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let channels = self.objects.first().map_or(0, Vec::len);
        let per = self
            .objects
            .first()
            .and_then(|i| i.first())
            .map_or(0, Vec::len);
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&[VERSION, self.kind, channels as u8, 0]);
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&(self.objects.len() as u32).to_le_bytes());
        out.extend_from_slice(&(per as u32).to_le_bytes());
        for object in self.objects.iter().flatten().flatten() {
            out.extend_from_slice(&(object.len() as u32).to_le_bytes());
            out.extend_from_slice(object);
        }
        out
    }

    /// Parses a bundle of `kind` with `channels` channels and `per` objects each, no object
    /// longer than `max_object`.
    pub fn from_bytes(
        bytes: &[u8],
        kind: u8,
        channels: usize,
        per: usize,
        max_object: usize,
    ) -> Result<Self, String> {
        let images = Self::check_header(bytes, kind, channels, per)?;
        let id: [u8; 16] = bytes[8..24].try_into().expect("16 bytes");
        let mut offset = HEADER;
        let mut objects = Vec::with_capacity(images);
        for _ in 0..images {
            let mut image = Vec::with_capacity(channels);
            for _ in 0..channels {
                let mut list = Vec::with_capacity(per);
                for _ in 0..per {
                    let len = bytes
                        .get(offset..offset + 4)
                        .map(|b| u32::from_le_bytes(b.try_into().expect("4")) as usize)
                        .ok_or("truncated bundle")?;
                    if len > max_object {
                        return Err(format!("an object of {len} bytes (at most {max_object})"));
                    }
                    let object = bytes
                        .get(offset + 4..offset + 4 + len)
                        .ok_or("truncated bundle")?;
                    list.push(object.to_vec());
                    offset += 4 + len;
                }
                image.push(list);
            }
            objects.push(image);
        }
        if offset != bytes.len() {
            return Err("trailing bytes after the bundle".into());
        }
        Ok(Self {
            kind: bytes[5],
            id,
            objects,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_round_trip_and_refuse_hostile_headers() {
        let bundle = Bundle {
            kind: UPLOADS,
            id: [7; 16],
            objects: vec![vec![vec![vec![1, 2, 3]], vec![vec![4]]]; 2],
        };
        let bytes = bundle.to_bytes();
        assert_eq!(
            Bundle::from_bytes(&bytes, UPLOADS, 2, 1, 8).unwrap(),
            bundle
        );
        // Another kind, shape, oversized object, truncation, trailing bytes, a huge count.
        assert!(Bundle::from_bytes(&bytes, RESULTS, 2, 1, 8).is_err());
        assert!(Bundle::from_bytes(&bytes, UPLOADS, 3, 1, 8).is_err());
        assert!(Bundle::from_bytes(&bytes, UPLOADS, 2, 2, 8).is_err());
        assert!(Bundle::from_bytes(&bytes, UPLOADS, 2, 1, 2).is_err());
        assert!(Bundle::from_bytes(&bytes[..bytes.len() - 1], UPLOADS, 2, 1, 8).is_err());
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(Bundle::from_bytes(&trailing, UPLOADS, 2, 1, 8).is_err());
        let mut huge = bytes.clone();
        huge[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Bundle::from_bytes(&huge, UPLOADS, 2, 1, 8).is_err());
        let mut zero = bytes;
        zero[24..28].copy_from_slice(&0u32.to_le_bytes());
        assert!(Bundle::from_bytes(&zero, UPLOADS, 2, 1, 8).is_err());
    }
}
