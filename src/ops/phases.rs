//! Rows split into their column phases: `phase[q][k] = padded[S*k + q]` of a row padded in
//! front. Stride-`S` windows (max pooling) and Winograd's patches at step 2 or 4 then read each
//! window element of a whole row of outputs as one contiguous run, which vectorises.

/// Splits `src` (one row) padded by `p` values of `fill` in front, and as many as needed
/// behind, into its `S` column phases: `phases[q][k] = padded[S*k + q]` with
/// `padded[j] = src[j - p]` inside `src`, `fill` outside, for `k` in `0..phases[0].len()`.
/// The columns where every phase lies inside `src` are copied `S` at a time, straight from
/// `src`.
///
/// # Panics
/// If the phases differ in length.
#[inline(always)]
pub(crate) fn split_phases<const S: usize>(
    src: &[f32],
    p: usize,
    fill: f32,
    phases: [&mut [f32]; S],
) {
    let n = phases[0].len();
    assert!(
        phases.iter().all(|ph| ph.len() == n),
        "split_phases: phases of different lengths"
    );
    // All inside src: S*k - p >= 0 and S*k + S - 1 - p <= len - 1.
    let lo = p.div_ceil(S).min(n);
    let hi = ((src.len() + p) / S).clamp(lo, n);
    let at = |j: usize| {
        j.checked_sub(p)
            .and_then(|i| src.get(i))
            .copied()
            .unwrap_or(fill)
    };
    let mut phases = phases;
    for (q, ph) in phases.iter_mut().enumerate() {
        for k in (0..lo).chain(hi..n) {
            ph[k] = at(S * k + q);
        }
    }
    if hi > lo {
        let mut mid = phases.map(|ph| &mut ph[lo..hi]);
        let chunks = src[S * lo - p..][..S * (hi - lo)].chunks_exact(S);
        for (k, c) in chunks.enumerate() {
            for (m, &v) in mid.iter_mut().zip(c) {
                m[k] = v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<const S: usize>() {
        for len in 0..13 {
            let src: Vec<f32> = (0..len).map(|i| i as f32 + 1.0).collect();
            for p in 0..2 * S + 1 {
                for n in 0..8 {
                    let mut phases = [0; S].map(|_| vec![f32::NAN; n]);
                    split_phases::<S>(&src, p, -7.0, phases.each_mut().map(|v| v.as_mut_slice()));
                    let padded = |j: usize| {
                        j.checked_sub(p)
                            .and_then(|i| src.get(i))
                            .copied()
                            .unwrap_or(-7.0)
                    };
                    for (q, ph) in phases.iter().enumerate() {
                        for (k, &v) in ph.iter().enumerate() {
                            assert_eq!(
                                v,
                                padded(S * k + q),
                                "S {S} len {len} p {p} n {n} [{q}][{k}]"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn split_phases_is_the_padded_row_by_column() {
        check::<1>();
        check::<2>();
        check::<3>();
        check::<4>();
    }
}
