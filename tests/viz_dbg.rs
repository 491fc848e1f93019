mod common;
use candle_core::{DType, IndexOp, Tensor, Var};
use common::{fixture, lite0, rel_to_max, repo};
use convlens::zoo::efficientnet_lite::lite0_blocks;

fn bn(x: &Tensor, w: &std::collections::HashMap<String, Tensor>, p: &str) -> Tensor {
    let g = |k: &str| {
        w[&format!("{p}.{k}")]
            .to_dtype(x.dtype())
            .unwrap()
            .reshape((1, (), 1, 1))
            .unwrap()
    };
    let scale = (g("weight") / (g("running_var") + 1e-3).unwrap().sqrt().unwrap()).unwrap();
    x.broadcast_sub(&g("running_mean"))
        .unwrap()
        .broadcast_mul(&scale)
        .unwrap()
        .broadcast_add(&g("bias"))
        .unwrap()
}
fn conv(
    x: &Tensor,
    w: &std::collections::HashMap<String, Tensor>,
    k: &str,
    pad: usize,
    stride: usize,
    groups: usize,
) -> Tensor {
    let wt = w[k].to_dtype(x.dtype()).unwrap();
    x.conv2d(&wt, pad, stride, 1, groups).unwrap()
}
fn relu6(x: &Tensor) -> Tensor {
    let z = x.zeros_like().unwrap();
    x.maximum(&z).unwrap().minimum(&(z + 6.0).unwrap()).unwrap()
}

fn reference(x: &Tensor, w: &std::collections::HashMap<String, Tensor>, upto: usize) -> Tensor {
    let mut h = relu6(&bn(&conv(x, w, "_conv_stem.weight", 1, 2, 1), w, "_bn0"));
    for (i, b) in lite0_blocks().iter().enumerate().take(upto + 1) {
        let p = format!("_blocks.{i}");
        let inp = h.clone();
        let mut t = h.clone();
        if b.expand != 1 {
            t = relu6(&bn(
                &conv(&t, w, &format!("{p}._expand_conv.weight"), 0, 1, 1),
                w,
                &format!("{p}._bn0"),
            ));
        }
        let c = t.dim(1).unwrap();
        t = relu6(&bn(
            &conv(
                &t,
                w,
                &format!("{p}._depthwise_conv.weight"),
                (b.kernel - 1) / 2,
                b.stride,
                c,
            ),
            w,
            &format!("{p}._bn1"),
        ));
        t = bn(
            &conv(&t, w, &format!("{p}._project_conv.weight"), 0, 1, 1),
            w,
            &format!("{p}._bn2"),
        );
        h = if b.stride == 1 && b.in_channels == b.out_channels {
            (t + inp).unwrap()
        } else {
            t
        };
    }
    h
}

fn block_ref(x: &Tensor, w: &std::collections::HashMap<String, Tensor>, i: usize) -> Tensor {
    let b = lite0_blocks()[i];
    let p = format!("_blocks.{i}");
    let mut t = x.clone();
    if b.expand != 1 {
        t = relu6(&bn(
            &conv(&t, w, &format!("{p}._expand_conv.weight"), 0, 1, 1),
            w,
            &format!("{p}._bn0"),
        ));
    }
    let c = t.dim(1).unwrap();
    t = relu6(&bn(
        &conv(
            &t,
            w,
            &format!("{p}._depthwise_conv.weight"),
            (b.kernel - 1) / 2,
            b.stride,
            c,
        ),
        w,
        &format!("{p}._bn1"),
    ));
    t = bn(
        &conv(&t, w, &format!("{p}._project_conv.weight"), 0, 1, 1),
        w,
        &format!("{p}._bn2"),
    );
    if b.stride == 1 && b.in_channels == b.out_channels {
        (t + x).unwrap()
    } else {
        t
    }
}

#[test]
fn per_block() {
    let w = candle_core::safetensors::load(
        repo("models/efficientnet_lite0.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let model = lite0();
    let fx = fixture("filters_lite0");
    let init = fx["blocks.4.f0.init"].clone();
    for b in 0..=10usize {
        let prev = if b == 0 {
            "stem".to_string()
        } else {
            format!("blocks.{}", b - 1)
        };
        let x = model
            .network
            .forward_with_taps(&init, &[&prev])
            .unwrap()
            .remove(0);
        let v1 = Var::from_tensor(&x).unwrap();
        let y = model
            .network
            .forward_range(Some(&prev), &format!("blocks.{b}"), v1.as_tensor(), false)
            .unwrap();
        let r = y
            .ones_like()
            .unwrap()
            .affine(0.0, 0.0)
            .unwrap()
            .randn_like(0.0, 1.0)
            .unwrap();
        let g1 = (&y * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
            .get(v1.as_tensor())
            .unwrap()
            .clone();
        let v2 = Var::from_tensor(&x).unwrap();
        let y2 = block_ref(v2.as_tensor(), &w, b);
        let g2 = (&y2 * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
            .get(v2.as_tensor())
            .unwrap()
            .clone();
        println!(
            "block {b}: fwd {:.1e} grad {:.1e}",
            rel_to_max(&y, &y2),
            rel_to_max(&g1, &g2)
        );
    }
    // stem
    let v1 = Var::from_tensor(&init).unwrap();
    let y = model
        .network
        .forward_range(None, "stem", v1.as_tensor(), false)
        .unwrap();
    let r = y.randn_like(0.0, 1.0).unwrap();
    let g1 = (&y * &r)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap()
        .get(v1.as_tensor())
        .unwrap()
        .clone();
    let v2 = Var::from_tensor(&init).unwrap();
    let y2 = relu6(&bn(
        &conv(v2.as_tensor(), &w, "_conv_stem.weight", 1, 2, 1),
        &w,
        "_bn0",
    ));
    let g2 = (&y2 * &r)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap()
        .get(v2.as_tensor())
        .unwrap()
        .clone();
    println!(
        "stem: fwd {:.1e} grad {:.1e}",
        rel_to_max(&y, &y2),
        rel_to_max(&g1, &g2)
    );
}

#[test]
fn chain() {
    let w = candle_core::safetensors::load(
        repo("models/efficientnet_lite0.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let model = lite0();
    let fx = fixture("filters_lite0");
    let init = fx["blocks.4.f0.init"].clone();
    for from in ["input", "stem", "blocks.0", "blocks.1"] {
        let x = if from == "input" {
            init.clone()
        } else {
            model
                .network
                .forward_with_taps(&init, &[from])
                .unwrap()
                .remove(0)
        };
        for k in 0..=4usize {
            let to = format!("blocks.{k}");
            let f = if from == "input" { None } else { Some(from) };
            if f.is_some()
                && model.network.index_of(from).unwrap() >= model.network.index_of(&to).unwrap()
            {
                continue;
            }
            let v1 = Var::from_tensor(&x).unwrap();
            let y = model
                .network
                .forward_range(f, &to, v1.as_tensor(), false)
                .unwrap();
            let r = y.randn_like(0.0, 1.0).unwrap();
            let g1 = (&y * &r)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap()
                .get(v1.as_tensor())
                .unwrap()
                .clone();
            let v2 = Var::from_tensor(&x).unwrap();
            let mut h = v2.as_tensor().clone();
            if from == "input" {
                h = relu6(&bn(&conv(&h, &w, "_conv_stem.weight", 1, 2, 1), &w, "_bn0"));
            }
            let start = match from {
                "input" | "stem" => 0,
                "blocks.0" => 1,
                _ => 2,
            };
            for b in start..=k {
                h = block_ref(&h, &w, b);
            }
            let g2 = (&h * &r)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap()
                .get(v2.as_tensor())
                .unwrap()
                .clone();
            println!(
                "{from} -> {to}: fwd {:.1e} grad {:.1e}",
                rel_to_max(&y, &h),
                rel_to_max(&g1, &g2)
            );
        }
    }
}

#[test]
fn stem_layout() {
    let w = candle_core::safetensors::load(
        repo("models/efficientnet_lite0.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let model = lite0();
    let fx = fixture("filters_lite0");
    let init = fx["blocks.4.f0.init"].clone();
    let x = model
        .network
        .forward_with_taps(&init, &["stem"])
        .unwrap()
        .remove(0);
    let v = Var::from_tensor(&x).unwrap();
    let y = model
        .network
        .forward_range(Some("stem"), "blocks.1", v.as_tensor(), false)
        .unwrap();
    let r = y.randn_like(0.0, 1.0).unwrap();
    let ga = (&y * &r)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap()
        .get(v.as_tensor())
        .unwrap()
        .clone();
    println!(
        "grad at stem: {:?} contiguous {}",
        ga.layout(),
        ga.is_contiguous()
    );
    for (name, gin) in [
        ("as is", ga.clone()),
        ("copied", ga.copy().unwrap()),
        (
            "fresh",
            Tensor::from_vec(
                ga.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                ga.dims(),
                &candle_core::Device::Cpu,
            )
            .unwrap(),
        ),
    ] {
        let v1 = Var::from_tensor(&init).unwrap();
        let y = model
            .network
            .forward_range(None, "stem", v1.as_tensor(), false)
            .unwrap();
        let g1 = (&y * &gin)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
            .get(v1.as_tensor())
            .unwrap()
            .clone();
        let v2 = Var::from_tensor(&init).unwrap();
        let y2 = relu6(&bn(
            &conv(v2.as_tensor(), &w, "_conv_stem.weight", 1, 2, 1),
            &w,
            "_bn0",
        ));
        let g2 = (&y2 * &gin)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
            .get(v2.as_tensor())
            .unwrap()
            .clone();
        let nz = gin
            .ne(0f32)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        println!(
            "{name}: stem grad {:.1e}, nonzero frac {nz}",
            rel_to_max(&g1, &g2)
        );
    }
}

#[test]
fn manual_chain() {
    let model = lite0();
    let fx = fixture("filters_lite0");
    let init = fx["blocks.4.f0.init"].clone();
    let v = Var::from_tensor(&init).unwrap();
    let ys = model
        .network
        .forward_range(None, "stem", v.as_tensor(), false)
        .unwrap();
    let y0 = model
        .network
        .forward_range(Some("stem"), "blocks.0", &ys, false)
        .unwrap();
    let y1 = model
        .network
        .forward_range(Some("blocks.0"), "blocks.1", &y0, false)
        .unwrap();
    let r = y1.randn_like(0.0, 1.0).unwrap();
    let grads = (&y1 * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let g_y0 = grads.get(&y0).unwrap();
    let g_ys = grads.get(&ys).unwrap();
    // separate: var at blocks.0 output
    let v0 = Var::from_tensor(&y0.detach()).unwrap();
    let y1b = model
        .network
        .forward_range(Some("blocks.0"), "blocks.1", v0.as_tensor(), false)
        .unwrap();
    let g0b = (&y1b * &r)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap()
        .get(v0.as_tensor())
        .unwrap()
        .clone();
    println!(
        "grad at blocks.0 out: chain vs separate {:.1e}",
        rel_to_max(g_y0, &g0b)
    );
    let vs = Var::from_tensor(&ys.detach()).unwrap();
    let y0c = model
        .network
        .forward_range(Some("stem"), "blocks.0", vs.as_tensor(), false)
        .unwrap();
    let gsb = (&y0c * g_y0)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap()
        .get(vs.as_tensor())
        .unwrap()
        .clone();
    println!(
        "grad at stem out: chain vs separate {:.1e}",
        rel_to_max(g_ys, &gsb)
    );
}

#[test]
fn mix() {
    let w = candle_core::safetensors::load(
        repo("models/efficientnet_lite0.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let model = lite0();
    let net = &model.network;
    let fx = fixture("filters_lite0");
    let init = fx["blocks.4.f0.init"].clone();
    let y_shape = net
        .forward_with_taps(&init, &["blocks.1"])
        .unwrap()
        .remove(0);
    let r = y_shape.randn_like(0.0, 1.0).unwrap();
    let stem_ref = |x: &Tensor| relu6(&bn(&conv(x, &w, "_conv_stem.weight", 1, 2, 1), &w, "_bn0"));
    let stem_fused = |x: &Tensor| net.forward_range(None, "stem", x, false).unwrap();
    let b01_ref = |x: &Tensor| block_ref(&block_ref(x, &w, 0), &w, 1);
    let b01_fused = |x: &Tensor| {
        net.forward_range(Some("stem"), "blocks.1", x, false)
            .unwrap()
    };
    let b0_fused = |x: &Tensor| {
        net.forward_range(Some("stem"), "blocks.0", x, false)
            .unwrap()
    };
    let b1_fused = |x: &Tensor| {
        net.forward_range(Some("blocks.0"), "blocks.1", x, false)
            .unwrap()
    };
    let grad = |f: &dyn Fn(&Tensor) -> Tensor| {
        let v = Var::from_tensor(&init).unwrap();
        let y = f(v.as_tensor());
        (&y * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
            .get(v.as_tensor())
            .unwrap()
            .clone()
    };
    let g_ref = grad(&|x| b01_ref(&stem_ref(x)));
    println!(
        "fused stem + ref blocks: {:.1e}",
        rel_to_max(&grad(&|x| b01_ref(&stem_fused(x))), &g_ref)
    );
    println!(
        "ref stem + fused blocks: {:.1e}",
        rel_to_max(&grad(&|x| b01_fused(&stem_ref(x))), &g_ref)
    );
    println!(
        "ref stem + fused b0 + ref b1: {:.1e}",
        rel_to_max(
            &grad(&|x| block_ref(&b0_fused(&stem_ref(x)), &w, 1)),
            &g_ref
        )
    );
    println!(
        "ref stem + ref b0 + fused b1: {:.1e}",
        rel_to_max(
            &grad(&|x| b1_fused(&block_ref(&stem_ref(x), &w, 0))),
            &g_ref
        )
    );
    println!(
        "all fused: {:.1e}",
        rel_to_max(&grad(&|x| b01_fused(&stem_fused(x))), &g_ref)
    );
    println!(
        "conv only ref + fused rest: {:.1e}",
        rel_to_max(
            &grad(&|x| {
                let c = conv(x, &w, "_conv_stem.weight", 1, 2, 1);
                b01_fused(&relu6(&bn(&c, &w, "_bn0")))
            }),
            &g_ref
        )
    );
}

#[test]
fn stem_variants() {
    use convlens::ops::{Activation, bias_act};
    let w = candle_core::safetensors::load(
        repo("models/efficientnet_lite0.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let model = lite0();
    let net = &model.network;
    let fx = fixture("filters_lite0");
    let init = fx["blocks.4.f0.init"].clone();
    let y_shape = net
        .forward_with_taps(&init, &["blocks.1"])
        .unwrap()
        .remove(0);
    let r = y_shape.randn_like(0.0, 1.0).unwrap();
    let g = |k: &str| w[&format!("_bn0.{k}")].clone();
    let scale = (g("weight") / (g("running_var") + 1e-3).unwrap().sqrt().unwrap()).unwrap();
    let shift = (g("bias") - (g("running_mean") * &scale).unwrap()).unwrap();
    let wf = w["_conv_stem.weight"]
        .broadcast_mul(&scale.reshape((32, 1, 1, 1)).unwrap())
        .unwrap();
    let b01_ref = |x: &Tensor| block_ref(&block_ref(x, &w, 0), &w, 1);
    let grad = |f: &dyn Fn(&Tensor) -> Tensor| {
        let v = Var::from_tensor(&init).unwrap();
        let y = f(v.as_tensor());
        (&y * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
            .get(v.as_tensor())
            .unwrap()
            .clone()
    };
    let stem_ref = |x: &Tensor| relu6(&bn(&conv(x, &w, "_conv_stem.weight", 1, 2, 1), &w, "_bn0"));
    let g_ref = grad(&|x| b01_ref(&stem_ref(x)));
    let a = |x: &Tensor| {
        bias_act(
            &x.conv2d(&wf, 1, 2, 1, 1).unwrap(),
            &shift,
            Activation::Relu6,
        )
        .unwrap()
    };
    let b = |x: &Tensor| {
        relu6(
            &x.conv2d(&wf, 1, 2, 1, 1)
                .unwrap()
                .broadcast_add(&shift.reshape((1, 32, 1, 1)).unwrap())
                .unwrap(),
        )
    };
    let c = |x: &Tensor| {
        let y = bias_act(
            &x.conv2d(&wf, 1, 2, 1, 1).unwrap(),
            &shift,
            Activation::Identity,
        )
        .unwrap();
        relu6(&y)
    };
    println!(
        "A folded+bias_act: {:.1e}",
        rel_to_max(&grad(&|x| b01_ref(&a(x))), &g_ref)
    );
    println!(
        "B folded+candle: {:.1e}",
        rel_to_max(&grad(&|x| b01_ref(&b(x))), &g_ref)
    );
    println!(
        "C folded+bias_act(id)+relu6: {:.1e}",
        rel_to_max(&grad(&|x| b01_ref(&c(x))), &g_ref)
    );
    let ya = a(&init);
    let yb = b(&init);
    println!("fwd A vs B {:.1e}", rel_to_max(&ya, &yb));
    let pre = init
        .conv2d(&wf, 1, 2, 1, 1)
        .unwrap()
        .broadcast_add(&shift.reshape((1, 32, 1, 1)).unwrap())
        .unwrap();
    let v = pre.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let ex0 = v.iter().filter(|&&x| x == 0.0).count();
    let ex6 = v.iter().filter(|&&x| x == 6.0).count();
    let near6 = v.iter().filter(|&&x| (x - 6.0).abs() < 1e-5).count();
    let gt6 = v.iter().filter(|&&x| x > 6.0).count();
    println!("pre-activation exact 0: {ex0}, exact 6: {ex6}, near 6: {near6}, >6: {gt6}");
}

#[test]
fn dbg() {
    let w = candle_core::safetensors::load(
        repo("models/efficientnet_lite0.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let model = lite0();
    let fx = fixture("filters_lite0");
    for (tap, blk, filter) in [("blocks.4", 4usize, 0usize), ("blocks.10", 10, 3)] {
        let init = fx[&format!("{tap}.f{filter}.init")].clone();
        let gref = fx[&format!("{tap}.f{filter}.grad_step0")].clone();
        let var = Var::from_tensor(&init.to_dtype(DType::F64).unwrap()).unwrap();
        let act = reference(var.as_tensor(), &w, blk);
        let (_, _, h, ww) = act.dims4().unwrap();
        let loss = act
            .i((0, filter, 2..h - 2, 2..ww - 2))
            .unwrap()
            .mean_all()
            .unwrap();
        let g = loss
            .backward()
            .unwrap()
            .get(var.as_tensor())
            .unwrap()
            .clone();
        let n = g
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .sqrt()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        let g = (g / (n + 1e-8)).unwrap().to_dtype(DType::F32).unwrap();
        let (_, ours) =
            convlens::viz::filters::loss_and_gradient(&model.network, tap, &[filter], &init, 2)
                .unwrap();
        println!(
            "{tap}: loss64 {:.7} | f64ref vs torch {:.2e} | ours vs torch {:.2e} | ours vs f64ref {:.2e}",
            loss.to_scalar::<f64>().unwrap(),
            rel_to_max(&g, &gref),
            rel_to_max(&ours, &gref),
            rel_to_max(&ours, &g)
        );
        // f32 unfused candle
        let var32 = Var::from_tensor(&init).unwrap();
        let act = reference(var32.as_tensor(), &w, blk);
        let loss = act
            .i((0, filter, 2..h - 2, 2..ww - 2))
            .unwrap()
            .mean_all()
            .unwrap();
        let g32 = loss
            .backward()
            .unwrap()
            .get(var32.as_tensor())
            .unwrap()
            .clone();
        let n = g32
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .sqrt()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let g32 = (g32 / (n as f64 + 1e-8)).unwrap();
        println!("  unfused f32 vs torch {:.2e}", rel_to_max(&g32, &gref));
        // Fused forward, but compare the taps with the f64 reference at every block
        for b in 0..=blk {
            let t = format!("blocks.{b}");
            let ours = model
                .network
                .forward_with_taps(&init, &[&t])
                .unwrap()
                .remove(0);
            let r = reference(&init.to_dtype(DType::F64).unwrap(), &w, b)
                .to_dtype(DType::F32)
                .unwrap();
            let r32 = reference(&init, &w, b);
            print!(
                "{b}:{:.1e}/{:.1e} ",
                rel_to_max(&ours, &r),
                rel_to_max(&r32, &r)
            );
        }
        println!();
    }
}
