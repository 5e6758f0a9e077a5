//! The one place that decides whether loops run on every core (feature `parallel`, rayon)
//! or on one. Results never depend on it: every task is exact integer arithmetic on its own
//! output.

use alloc::vec::Vec;

/// [f(0), ..., f(count - 1)].
pub(crate) fn map<T: Send>(count: usize, f: impl Fn(usize) -> T + Sync + Send) -> Vec<T> {
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        (0..count).into_par_iter().map(f).collect()
    }
    #[cfg(not(feature = "parallel"))]
    {
        (0..count).map(f).collect()
    }
}

/// f(i, &mut items[i]) for every item.
pub(crate) fn for_each_mut<T: Send>(items: &mut [T], f: impl Fn(usize, &mut T) + Sync + Send) {
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        items.par_iter_mut().enumerate().for_each(|(i, x)| f(i, x))
    }
    #[cfg(not(feature = "parallel"))]
    {
        items.iter_mut().enumerate().for_each(|(i, x)| f(i, x))
    }
}

/// [f(s, 0), ..., f(s, count - 1)], each task's `s` made by `init` and reused across the
/// items that task takes (scratch buffers).
pub(crate) fn map_init<T: Send, S>(
    count: usize,
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, usize) -> T + Sync + Send,
) -> Vec<T> {
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        (0..count).into_par_iter().map_init(init, f).collect()
    }
    #[cfg(not(feature = "parallel"))]
    {
        let mut s = init();
        (0..count).map(|i| f(&mut s, i)).collect()
    }
}

/// [`for_each_mut_init`] in splits of at least an eighth of a thread's share of the items:
/// rayon calls `init` once a split, so a large scratch (its pages faulted in anew each time)
/// is made fewer times, for a coarser balance of the work at the end.
pub(crate) fn for_each_mut_init_coarse<T: Send, S>(
    items: &mut [T],
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, usize, &mut T) + Sync + Send,
) {
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        let min_len = items.len() / (8 * rayon::current_num_threads());
        items
            .par_iter_mut()
            .with_min_len(min_len.max(1))
            .enumerate()
            .for_each_init(init, |s, (i, x)| f(s, i, x))
    }
    #[cfg(not(feature = "parallel"))]
    for_each_mut_init(items, init, f)
}

/// f(s, i, &mut items[i]) for every item, each task's `s` made by `init` and reused across
/// the items that task takes (scratch buffers).
pub(crate) fn for_each_mut_init<T: Send, S>(
    items: &mut [T],
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, usize, &mut T) + Sync + Send,
) {
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        items
            .par_iter_mut()
            .enumerate()
            .for_each_init(init, |s, (i, x)| f(s, i, x))
    }
    #[cfg(not(feature = "parallel"))]
    {
        let mut s = init();
        items
            .iter_mut()
            .enumerate()
            .for_each(|(i, x)| f(&mut s, i, x))
    }
}
