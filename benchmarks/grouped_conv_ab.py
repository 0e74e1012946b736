"""A/B in one process: the conv branch's channel-multiplier conv through cuDNN's grouped kernel vs as a depthwise conv.

Alternates `msmamba_nb.ss2d.GROUPED_CONV` between "cudnn" and "depthwise" round by round on one model (eager train steps,
random 224² input, Adam, as `msmamba bench-train`), so the two settings see the same process, GPU clocks and allocator.
Also times the conv alone (forward + backward, CUDA events) at the shapes of the four stages of t at batch 58.
Usage (GPU): python3 benchmarks/grouped_conv_ab.py --out OUT.json [--configs fp32,fp32+cl] [--rounds 4 --steps 10]
Run from the repository root with PYTHONPATH=. on the GPU machine (the package is not installed there).
Outcome (2026-12-03, one H200, commit dcd5f93, paper_figures/data/bench_grouped_conv_ab_h200_dcd5f93.json): the depthwise
form lost (conv alone slower at every stage; training 0.955x fp32, 1.06x fp32+cl, 0.976x bf16), so the default stays cudnn.
CPU smoke test: python3 benchmarks/grouped_conv_ab.py --device cpu --img-size 32 --batch 2 --rounds 1 --steps 1 --out x.json
"""
import argparse, json, statistics, time
import torch
from msmamba_nb import ss2d
from msmamba_nb.train import bench_setup, bench_config, environment_info, resolve_device, _sync

MODES = ("cudnn", "depthwise")

def conv_alone(dev, batch:int, reps:int)->list:
    "Forward + backward ms (median of `reps`) of the multiplier conv at each stage of t, per mode."
    rows = []
    for h, hw in ((48, 56), (96, 28), (192, 14), (384, 7)):
        conv = ss2d.GroupedConv2d(h, 2 * h, 3, 1, 1, groups=h).to(dev)
        x = torch.randn(batch, h, hw, hw, device=dev, requires_grad=True)
        row = dict(shape=[batch, h, hw, hw], out_channels=2 * h)
        for mode in MODES:
            ss2d.GROUPED_CONV = mode
            ts = []
            for i in range(reps + 3):
                _sync(dev); t0 = time.perf_counter()
                conv(x).sum().backward()
                _sync(dev)
                if i >= 3: ts.append(1e3 * (time.perf_counter() - t0))
            row[f"{mode}_fwdbwd_ms"] = statistics.median(ts)
        rows.append(row)
    return rows

def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--configs", default="fp32,fp32+cl")
    p.add_argument("--variant", default="t")
    p.add_argument("--batch", type=int, default=58)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--device", default="auto")
    a = p.parse_args()
    dev, orig = resolve_device(a.device), ss2d.GROUPED_CONV
    rec = dict(tool="benchmarks/grouped_conv_ab.py", variant=a.variant, batch=a.batch, img_size=a.img_size, rounds=a.rounds,
               steps=a.steps, env=environment_info(), device=str(dev), results=[])
    if dev.type != "cuda": rec["note"] = "not CUDA: both settings run the grouped call (the depthwise form is CUDA-only); a smoke test"
    for c in a.configs.split(","):
        cfg = bench_config(c)
        if cfg["compile"] or cfg["cuda_graph"]: raise SystemExit(f"{c}: eager configs only (compilation takes minutes)")
        model, fwd, opt, fmt, step = bench_setup(a.variant, 2, None, dev, a.batch, a.img_size, cfg["precision"] == "bf16",
                                                 cfg["channels_last"], False)
        per = {m: [] for m in MODES}
        for r in range(a.rounds):
            for mode in (MODES if r % 2 == 0 else MODES[::-1]):   # alternate the order: no setting always goes first
                ss2d.GROUPED_CONV = mode
                for _ in range(2): step()                          # warm-up of this setting's kernels
                for _ in range(a.steps):
                    _sync(dev); t0 = time.perf_counter(); step(); _sync(dev)
                    per[mode].append(time.perf_counter() - t0)
        res = dict(config=c, **{f"{m}_train_img_s": a.batch / statistics.median(per[m]) for m in MODES},
                   **{f"{m}_step_ms": [round(1e3 * t, 3) for t in per[m]] for m in MODES})
        res["depthwise_over_cudnn"] = res["depthwise_train_img_s"] / res["cudnn_train_img_s"]
        print(f"{c:>10}: cudnn {res['cudnn_train_img_s']:.1f} img/s, depthwise {res['depthwise_train_img_s']:.1f} img/s "
              f"({res['depthwise_over_cudnn']:.3f}x)", flush=True)
        rec["results"].append(res)
        del model, fwd, opt
    rec["conv_alone"] = conv_alone(dev, a.batch, max(5, a.steps))
    for r in rec["conv_alone"]:
        print(f"  conv {r['shape']} -> {r['out_channels']}: cudnn {r['cudnn_fwdbwd_ms']:.3f} ms, depthwise {r['depthwise_fwdbwd_ms']:.3f} ms")
    ss2d.GROUPED_CONV = orig
    with open(a.out, "w") as f: json.dump(rec, f, indent=1)

if __name__ == "__main__": main()
