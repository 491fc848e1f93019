mod common;
use common::{fixture, lite0};
#[test]
fn dbg() {
    let model = lite0();
    let net = &model.network;
    let fx = fixture("filters_lite0");
    let init = fx["blocks.4.f0.init"].clone();
    let stem = net.forward_with_taps(&init, &["stem"]).unwrap().remove(0);
    let (_, c, h, w) = stem.dims4().unwrap();
    let v = stem.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for (i, &x) in v.iter().enumerate() {
        if (x > 0.0 && x < 1e-3) || (x < 6.0 && x > 6.0 - 1e-3) {
            println!(
                "stem c{} y{} x{}: {x:e}",
                i / (h * w),
                (i % (h * w)) / w,
                i % w
            );
        }
    }
    let _ = c;
}
