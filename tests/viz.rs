//! Visualisation: filter patterns against the gradient-ascent fixture, CAM figures, exports.

mod common;

use std::time::Instant;

use candle_core::Tensor;
use common::{fixture, lite0, rel_to_max};
use convlens::viz::filters::{self, AscentOptions};

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn rel(a: f32, b: f32) -> f32 {
    (a - b).abs() / b.abs().max(1e-12)
}

#[test]
fn gradient_ascent_matches_the_fixture() {
    let model = lite0();
    let net = &model.network;
    let fx = fixture("filters_lite0");
    for (tap, filter) in [("blocks.4", 0usize), ("blocks.10", 3)] {
        let p = |k: &str| fx[&format!("{tap}.f{filter}.{k}")].clone();
        let init = p("init");
        let (loss0, g0) = filters::loss_and_gradient(net, tap, &[filter], &init, 2).unwrap();
        let g_err = rel_to_max(&g0, &p("grad_step0"));
        assert!(
            g_err <= 1e-4,
            "{tap} f{filter}: grad_step0 off by {g_err:e}"
        );

        let two = AscentOptions {
            steps: 2,
            ..AscentOptions::default()
        };
        let a2 = filters::ascend(net, tap, &[filter], &init, &two, &mut |_| true).unwrap();
        let img_err = max_abs(&a2.images, &p("image_step2"));
        assert!(
            img_err <= 1e-4,
            "{tap} f{filter}: image_step2 off by {img_err:e}"
        );

        let t0 = Instant::now();
        let full = filters::ascend(
            net,
            tap,
            &[filter],
            &init,
            &AscentOptions::default(),
            &mut |_| true,
        )
        .unwrap();
        let elapsed = t0.elapsed();
        let losses = &full.losses[0];
        let reference = p("loss_per_step").to_vec1::<f32>().unwrap();
        assert_eq!(losses.len(), 30);
        assert!(rel(loss0[0], reference[0]) <= 1e-4);
        for s in 0..3 {
            let e = rel(losses[s], reference[s]);
            assert!(e <= 1e-4, "{tap} f{filter}: loss[{s}] off by {e:e}");
        }
        let e3 = rel(losses[3], reference[3]);
        assert!(e3 <= 1e-2, "{tap} f{filter}: loss[3] off by {e3:e}");
        let final_ref = p("loss_final")
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()[0];
        let ef = rel(full.final_losses[0], final_ref);
        println!(
            "{tap} f{filter}: grad {g_err:.1e}, image_step2 {img_err:.1e}, loss[3] {e3:.1e}, \
             final {:.3} vs {final_ref:.3} ({ef:.1e}); 30 steps in {elapsed:.2?}",
            full.final_losses[0]
        );
        assert!(ef <= 0.15, "{tap} f{filter}: final loss off by {ef:e}");
        assert!(
            full.final_losses[0] > losses[0] && losses[29] > losses[0],
            "the loss rises: {losses:?}"
        );
    }
}
