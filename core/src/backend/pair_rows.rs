//! The packed pairs a [`super::Kernels::pair_weighted_sum`] reads: a slice each, or rows at
//! one stride in one buffer.

/// The rows of packed pairs of [`super::Kernels::pair_weighted_sum`], each as long as the
/// accumulators.
///
/// Rows at one stride are the dense layers' form: each task packs its columns of every pair
/// into one buffer. A tile of the vector kernels then steps from row to row by the stride
/// instead of loading each row's pointer and length (with AVX2 on an AMD EPYC, those loads and
/// the length check were 6 of the 43 instructions of the six-output tile's loop). A list
/// serves the convolution, whose windows each pick their pairs among the packed ones.
///
/// ```
/// use cryptonets_core::backend::PairRows;
///
/// let words = [1u32, 2, 0, 3, 4, 0];
/// let rows = PairRows::Strided { words: &words, stride: 3 };
/// assert_eq!(rows.count(2), Some(2));
/// assert_eq!(rows.row(1, 2), &[3, 4]);
/// let listed: [&[u32]; 2] = [&[1, 2], &[3, 4]];
/// assert_eq!(PairRows::Listed(&listed).count(2), Some(2));
/// ```
#[derive(Clone, Copy, Debug)]
pub enum PairRows<'a> {
    /// Row p is `rows[p]`.
    Listed(&'a [&'a [u32]]),
    /// Row p is the start of `words[p * stride..]`.
    Strided {
        /// The rows, each padded to the stride: whole strides only.
        words: &'a [u32],
        /// Words from a row's start to the next's.
        stride: usize,
    },
}

impl<'a> PairRows<'a> {
    /// How many rows there are, if each holds `columns` words (and strided ones whole
    /// strides, none past the buffer): else `None`, the operands' shapes do not match.
    pub fn count(&self, columns: usize) -> Option<usize> {
        match *self {
            Self::Listed(rows) => rows
                .iter()
                .all(|r| r.len() == columns)
                .then_some(rows.len()),
            Self::Strided { words, stride } => {
                (stride >= columns && stride > 0 && words.len() % stride == 0)
                    .then(|| words.len() / stride)
            }
        }
    }

    /// Row p's first `columns` words (panics past the rows: callers check [`Self::count`]).
    pub fn row(&self, p: usize, columns: usize) -> &'a [u32] {
        match *self {
            Self::Listed(rows) => &rows[p][..columns],
            Self::Strided { words, stride } => &words[p * stride..][..columns],
        }
    }
}
