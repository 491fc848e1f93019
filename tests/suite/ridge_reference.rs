//! The closed-form ridge of `convlens::viz::ridge` (the probe's input reconstruction) against
//! scikit-learn (`tests/fixtures/make/fx_ridge.py`): the validation R^2 of every strength and
//! target group, the choice, and the held-out R^2 of the refitted model, on the fixture's rows
//! streamed in uneven batches.

use convlens::viz::ridge::{RidgeStats, held_out_r2};

use crate::common::fixture;

#[test]
fn ridge_from_streamed_sums_matches_scikit_learn() {
    let f = fixture("ridge_reference");
    let stats = |set: &str| {
        let (x, y) = (&f[&format!("x_{set}")], &f[&format!("y_{set}")]);
        let mut s = RidgeStats::new(x.dim(1).unwrap(), y.dim(1).unwrap()).unwrap();
        // Batches of 7 rows (the last one shorter), as a probe adds a batch at a time.
        let n = x.dim(0).unwrap();
        for start in (0..n).step_by(7) {
            let len = 7.min(n - start);
            s.add(
                &x.narrow(0, start, len).unwrap(),
                &y.narrow(0, start, len).unwrap(),
            )
            .unwrap();
        }
        s
    };
    let alphas = f["alphas"].to_vec1::<f64>().unwrap();
    let (r2, choice) =
        held_out_r2(&stats("fit"), &stats("val"), &stats("held"), 2, &alphas).unwrap();
    let want = f["val_r2"].to_vec2::<f64>().unwrap();
    for (g, (got_row, want_row)) in choice.validation_r2.iter().zip(&want).enumerate() {
        for (a, (got, want)) in got_row.iter().zip(want_row).enumerate() {
            assert!(
                (got - want).abs() < 1e-9,
                "group {g}, alpha {}: {got} vs scikit-learn's {want}",
                alphas[a]
            );
        }
    }
    let pick = f["choice"].to_vec1::<f64>().unwrap();
    assert_eq!(
        [choice.group as f64, choice.alpha as f64],
        [pick[0], pick[1]]
    );
    let held = f["held_r2"].to_vec1::<f64>().unwrap()[0];
    assert!((r2 - held).abs() < 1e-9, "{r2} vs scikit-learn's {held}");
}
