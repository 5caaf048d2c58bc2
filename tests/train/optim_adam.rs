//! Adam, AdamW, gradient clipping and LR schedules against PyTorch 2.15 (f64). The expected
//! values were printed by (`repr` of each value):
//!
//!   def run(cls, steps, **kw):
//!       p = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
//!       opt = cls([p], **kw)
//!       for s in range(steps):
//!           p.grad = torch.tensor([2.0 / (s + 1), -1.0 + s], dtype=torch.float64)
//!           opt.step()
//!       return p.tolist()
//!   run(torch.optim.Adam, 5, lr=0.1, betas=(0.9, 0.5), eps=1e-8, weight_decay=0.01, amsgrad=A)
//!   run(torch.optim.AdamW, 5, lr=0.1, betas=(0.9, 0.5), eps=1e-8, weight_decay=0.1, amsgrad=A)
//!   run(torch.optim.Adam, 5, lr=0.01)
//!
//!   a, b = zeros(3), zeros(2) (float64 Parameters)
//!   a.grad = [3.0, -4.0, 12.0]; b.grad = [0.5, -2.0]
//!   torch.nn.utils.clip_grad_norm_([a, b], 1.0)   # and again with a.grad = [0.3, -0.4, 0], b.grad = 0
//!
//!   def lrs(make, n):   # lr at index t = get_last_lr() after t scheduler steps
//!       p = torch.nn.Parameter(torch.zeros(1)); opt = torch.optim.SGD([p], lr=0.1)
//!       s = make(opt); out = []
//!       for t in range(n): out.append(s.get_last_lr()[0]); opt.step(); s.step()
//!       return out
//!   S = torch.optim.lr_scheduler
//!   lrs(lambda o: S.CosineAnnealingLR(o, T_max=10, eta_min=0.001), 11)
//!   lrs(lambda o: S.StepLR(o, step_size=3, gamma=0.5), 10)
//!   lrs(lambda o: S.MultiStepLR(o, milestones=[2, 5, 7], gamma=0.1), 10)
//!   lrs(lambda o: S.SequentialLR(o, [S.LinearLR(o, start_factor=0.1, total_iters=4),
//!       S.CosineAnnealingLR(o, T_max=6, eta_min=0.001)], milestones=[4]), 11)
//!   lrs(lambda o: S.SequentialLR(o, [S.LinearLR(o, start_factor=0.25, total_iters=3),
//!       S.StepLR(o, step_size=2, gamma=0.5)], milestones=[3]), 9)

use std::collections::HashMap;

use quadra::nn::container::Sequential;
use quadra::nn::conv::Conv2d;
use quadra::nn::Module;
use quadra::ops::conv::ConvGeom;
use quadra::optim::{
    clip_grad_norm, Adam, AdamConfig, CosineAnnealing, MultiStep, Optimizer, Schedule, Sgd,
    StepDecay, Warmup,
};
use quadra::{Category, DType, Error, Tensor};

/// A 1x1 conv with `n` inputs and one output whose weight is `w`.
fn vec_param(path: &str, w: &[f64]) -> Conv2d {
    let n = w.len();
    let mut m = Conv2d::new(path, ConvGeom::square(n, 1, 1, 1, 0), false, DType::F64, 0).unwrap();
    let mut sd = HashMap::new();
    sd.insert(
        format!("{path}.weight"),
        Tensor::from_vec(w.to_vec(), &[1, n, 1, 1]).unwrap(),
    );
    m.load_state_dict(&mut sd).unwrap();
    m
}

fn set_grad(m: &mut dyn Module, g: &[f64]) {
    m.visit_params(&mut |_, p| {
        let t = Tensor::from_vec_in(
            g.to_vec(),
            p.value.shape(),
            quadra::Device::Cpu,
            Category::Gradient,
        )
        .unwrap();
        p.grad = Some(t);
    });
}

fn values(m: &mut dyn Module) -> Vec<f64> {
    let mut out = Vec::new();
    m.visit_params(&mut |_, p| out.extend(p.value.to_f64_vec()));
    out
}

fn run(cfg: AdamConfig, steps: usize) -> Vec<f64> {
    let mut m = vec_param("c", &[1.0, -2.0]);
    let mut opt = Adam::new(cfg).unwrap();
    for s in 0..steps {
        set_grad(&mut m, &[2.0 / (s as f64 + 1.0), -1.0 + s as f64]);
        opt.step(&mut m).unwrap();
    }
    values(&mut m)
}

fn close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (a, b) in got.iter().zip(want) {
        assert!(
            (a - b).abs() <= tol * (1.0 + b.abs()),
            "{what}: {got:?} vs {want:?}"
        );
    }
}

#[test]
fn adam_and_adamw_match_pytorch() {
    let mk = |decoupled: bool, amsgrad: bool| AdamConfig {
        lr: 0.1,
        betas: (0.9, 0.5),
        eps: 1e-8,
        weight_decay: if decoupled { 0.1 } else { 0.01 },
        amsgrad,
        decoupled,
    };
    let cases = [
        (false, false, [0.4302703140101567, -1.9113914390941655]),
        (true, false, [0.39158299959620585, -1.824300259599879]),
        (false, true, [0.6057696863000932, -1.9358748208154328]),
        (true, true, [0.5664410540220374, -1.8476168167162559]),
    ];
    for (decoupled, ams, want) in cases {
        let got = run(mk(decoupled, ams), 5);
        close(
            &got,
            &want,
            1e-12,
            &format!("adamw={decoupled} amsgrad={ams}"),
        );
    }
    let got = run(AdamConfig::adam(0.01), 5);
    close(
        &got,
        &[0.955985391319733, -1.9962900245372637],
        1e-12,
        "adam defaults",
    );
}

#[test]
fn adam_state_is_charged_to_optimizer_state() {
    let mut m = vec_param("c", &[1.0, -2.0]);
    let mut opt = Adam::new(AdamConfig {
        amsgrad: true,
        ..AdamConfig::adam(0.1)
    })
    .unwrap();
    set_grad(&mut m, &[1.0, 1.0]);
    opt.step(&mut m).unwrap();
    let st = opt.state().unwrap();
    let names: Vec<&str> = st.tensors.iter().map(|t| t.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "c.weight.exp_avg",
            "c.weight.exp_avg_sq",
            "c.weight.max_exp_avg_sq"
        ]
    );
    assert!(st
        .tensors
        .iter()
        .all(|t| t.1.category() == Category::OptimizerState));
    assert_eq!(st.scalar("c.weight.step"), Some(1.0));
    assert_eq!(st.kind, "adam");
}

#[test]
fn clip_grad_norm_matches_pytorch() {
    // the gradients of `net`'s parameters, in visiting order
    fn set_grads(net: &mut Sequential, grads: &[Vec<f64>]) {
        let mut k = 0;
        net.visit_params(&mut |_, p| {
            let g = Tensor::from_vec_in(
                grads[k].clone(),
                p.value.shape(),
                quadra::Device::Cpu,
                Category::Gradient,
            )
            .unwrap();
            p.grad = Some(g);
            k += 1;
        });
    }
    let mut net = Sequential::new(
        "",
        vec![
            Box::new(vec_param("a", &[0.0; 3])),
            Box::new(vec_param("b", &[0.0; 2])),
        ],
    );
    set_grads(&mut net, &[vec![3.0, -4.0, 12.0], vec![0.5, -2.0]]);
    let total = clip_grad_norm(&mut net, 1.0).unwrap();
    assert!((total - 13.162446581088183).abs() < 1e-12, "{total}");
    let mut got = Vec::new();
    net.visit_params(&mut |_, p| got.extend(p.grad.as_ref().unwrap().to_f64_vec()));
    close(
        &got,
        &[
            0.22792113560325988,
            -0.3038948474710132,
            0.9116845424130395,
            0.03798685593387665,
            -0.1519474237355066,
        ],
        1e-14,
        "clipped",
    );
    // below the threshold: unchanged
    set_grads(&mut net, &[vec![0.3, -0.4, 0.0], vec![0.0, 0.0]]);
    let total = clip_grad_norm(&mut net, 1.0).unwrap();
    assert!((total - 0.5).abs() < 1e-15);
    let mut got = Vec::new();
    net.visit_params(&mut |_, p| got.extend(p.grad.as_ref().unwrap().to_f64_vec()));
    assert_eq!(got, [0.3, -0.4, 0.0, 0.0, 0.0]);
    assert!(clip_grad_norm(&mut net, 0.0).is_err());
    assert!(clip_grad_norm(&mut net, f64::NAN).is_err());
}

fn check_schedule(s: &dyn Schedule, want: &[f64], what: &str) {
    let got: Vec<f64> = (0..want.len()).map(|t| s.lr_at(t)).collect();
    close(&got, want, 1e-13, what);
}

#[test]
fn schedules_match_pytorch() {
    check_schedule(
        &CosineAnnealing::new(0.1, 0.001, 10).unwrap(),
        &[
            0.1,
            0.09757729755661011,
            0.0905463412215599,
            0.07959536998847742,
            0.0657963412215599,
            0.0505,
            0.03520365877844011,
            0.02140463001152259,
            0.010453658778440109,
            0.0034227024433899004,
            0.001,
        ],
        "cosine",
    );
    // after T the cosine schedule stays at the final lr (QuadraLib's reference)
    let c = CosineAnnealing::new(0.1, 0.001, 10).unwrap();
    assert_eq!(c.lr_at(11), 0.001);
    assert_eq!(c.lr_at(100), 0.001);
    check_schedule(
        &StepDecay::new(0.1, 3, 0.5).unwrap(),
        &[0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025, 0.0125],
        "step",
    );
    check_schedule(
        &MultiStep::new(0.1, vec![2, 5, 7], 0.1).unwrap(),
        &[
            0.1,
            0.1,
            0.010000000000000002,
            0.010000000000000002,
            0.010000000000000002,
            0.0010000000000000002,
            0.0010000000000000002,
            0.00010000000000000003,
            0.00010000000000000003,
            0.00010000000000000003,
        ],
        "multistep",
    );
    check_schedule(
        &Warmup::new(CosineAnnealing::new(0.1, 0.001, 6).unwrap(), 4, 0.1).unwrap(),
        &[
            0.010000000000000002,
            0.03250000000000001,
            0.055000000000000014,
            0.07750000000000003,
            0.1,
            0.09336825748732973,
            0.07525000000000001,
            0.0505,
            0.025750000000000012,
            0.007631742512670284,
            0.001,
        ],
        "warm-up + cosine",
    );
    check_schedule(
        &Warmup::new(StepDecay::new(0.1, 2, 0.5).unwrap(), 3, 0.25).unwrap(),
        &[
            0.025,
            0.05,
            0.07500000000000001,
            0.1,
            0.1,
            0.05,
            0.05,
            0.025,
            0.025,
        ],
        "warm-up + step",
    );
}

#[test]
fn lr_scheduler_per_epoch_and_per_step() {
    use quadra::optim::{Every, LrScheduler};
    let cos = || Box::new(CosineAnnealing::new(0.1, 0.0, 4).unwrap()) as Box<dyn Schedule>;
    let per_epoch = LrScheduler::new(cos(), Every::Epoch);
    let per_step = LrScheduler::new(cos(), Every::Step { steps_per_epoch: 2 });
    assert_eq!(per_epoch.lr(1, 1), per_epoch.schedule.lr_at(1));
    assert_eq!(per_step.lr(1, 1), per_step.schedule.lr_at(3));
    let mut opt = Sgd::new(0.5, 0.0, 0.0, false).unwrap();
    let lr = per_step.apply(&mut opt, 0, 1);
    assert_eq!(opt.lr(), lr);
}

fn invalid(r: Result<impl std::fmt::Debug, Error>, what: &str) {
    match r {
        Err(e @ Error::Invalid { .. }) => assert!(!e.to_string().is_empty()),
        other => panic!("{what}: expected an Invalid error, got {other:?}"),
    }
}

#[test]
fn invalid_hyper_parameters_are_errors() {
    let base = AdamConfig::adam(0.1);
    invalid(Adam::new(AdamConfig { lr: -0.1, ..base }), "negative lr");
    invalid(
        Adam::new(AdamConfig {
            lr: f64::NAN,
            ..base
        }),
        "NaN lr",
    );
    invalid(
        Adam::new(AdamConfig {
            betas: (1.0, 0.999),
            ..base
        }),
        "beta1 = 1",
    );
    invalid(
        Adam::new(AdamConfig {
            betas: (0.9, -0.1),
            ..base
        }),
        "beta2 < 0",
    );
    invalid(
        Adam::new(AdamConfig {
            betas: (f64::NAN, 0.9),
            ..base
        }),
        "NaN beta",
    );
    invalid(Adam::new(AdamConfig { eps: 0.0, ..base }), "eps = 0");
    invalid(Adam::new(AdamConfig { eps: -1e-8, ..base }), "eps < 0");
    invalid(
        Adam::new(AdamConfig {
            eps: f64::NAN,
            ..base
        }),
        "NaN eps",
    );
    invalid(
        Adam::new(AdamConfig {
            weight_decay: -0.1,
            ..base
        }),
        "negative wd",
    );
    invalid(
        Adam::new(AdamConfig {
            weight_decay: f64::NAN,
            ..base
        }),
        "NaN wd",
    );
    invalid(Sgd::new(-0.1, 0.9, 0.0, false), "sgd negative lr");
    invalid(Sgd::new(0.1, f64::NAN, 0.0, false), "sgd NaN momentum");
    invalid(Sgd::new(0.1, 1.0, 0.0, false), "sgd momentum 1");
    invalid(CosineAnnealing::new(0.1, -0.1, 10), "negative final lr");
    invalid(CosineAnnealing::new(0.1, 0.0, 0), "T = 0");
    invalid(StepDecay::new(0.1, 0, 0.5), "step size 0");
    invalid(StepDecay::new(0.1, 2, f64::NAN), "NaN gamma");
    invalid(MultiStep::new(0.1, vec![5, 2], 0.1), "unsorted milestones");
    invalid(
        Warmup::new(StepDecay::new(0.1, 2, 0.5).unwrap(), 3, 0.0),
        "start factor 0",
    );
    let g = quadra::optim::ParamGroup::new("q", &[quadra::nn::ParamKind::QuadWeight]);
    invalid(
        Adam::new(base)
            .unwrap()
            .with_groups(vec![g.clone().lr_scale(-1.0)]),
        "group lr",
    );
    invalid(
        Adam::new(base)
            .unwrap()
            .with_groups(vec![g.clone().betas(0.9, 1.0)]),
        "group beta",
    );
    invalid(
        Sgd::new(0.1, 0.0, 0.0, false)
            .unwrap()
            .with_groups(vec![g.betas(0.9, 0.99)]),
        "sgd betas",
    );
}
