"""Whole training steps of Ms-Mamba with different scan kernel variants or scan layouts, alternating in one process (A B A B ...).

What a scan kernel change is worth to training: one model, one Adam, one random batch (`msmamba_nb.train.bench_setup`,
as `msmamba bench-train`), and between rounds only the scan's forward/backward variants change (`FWD_VARIANT`,
`BWD_VARIANT` are read at every launch, so an eager or a compiled step picks them up without rebuilding), and with a
third field the SS2D scan layout (`set_scan_layout`: "batched" or "map"; a compiled step recompiles once for it). Each round
times `--steps` steps after `--warmup` (median, synchronised wall clock); rounds alternate the settings so drift in
clocks or temperature hits both. Writes DIR/bench_scan_variants_train_ab.json.

    python3 benchmarks/scan_variants_train_ab.py --out DIR --settings v3:v4_nocap,v3_vec_sp:v4_sp      # GPU
    python3 benchmarks/scan_variants_train_ab.py --out DIR --settings v3:v4_nocap,v3:v4_nocap:map     # layouts
    python3 benchmarks/scan_variants_train_ab.py --device cpu --variant toy ...                         # no GPU: the loop only
"""
import os, sys, json, time, argparse
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # the repo's msmamba_nb
import numpy as np, torch
import msmamba_nb.scan_cuda as sc
from msmamba_nb.train import bench_setup, resolve_device, time_steps
from msmamba_nb.pvm import set_scan_layout

def parse_settings(s:str)->list:
    "'fwd:bwd[:layout],...' → [(fwd, bwd, layout), ...], names checked against FWD_VARIANTS / BWD_VARIANTS / the layouts."
    out = []
    for item in s.split(','):
        parts = item.split(':')
        if len(parts) not in (2, 3): raise ValueError(f"setting {item!r} is not FWD:BWD or FWD:BWD:LAYOUT (e.g. v3:v4_nocap:map)")
        f, b, lay = (*parts, "batched")[:3]
        sc._fwd_variant(f); sc._bwd_variant(b)
        if lay not in ("batched", "map"): raise ValueError(f"setting {item!r}: layout must be 'batched' or 'map', got {lay!r}")
        out.append((f, b, lay))
    return out

def name(f, b, lay): return f"{f}:{b}" + ("" if lay == "batched" else f":{lay}")

def main(argv=None)->int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=".", help="directory for bench_scan_variants_train_ab.json")
    p.add_argument("--settings", default="v3:v4_nocap,v3_vec_sp:v4_sp", help="comma list of FWD:BWD[:LAYOUT] (the first is the baseline)")
    p.add_argument("--rounds", type=int, default=3, help="rounds; each times every setting once, in turn")
    p.add_argument("--steps", type=int, default=20, help="timed steps per setting and round (median reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before each timing (the first round's compile or JIT)")
    p.add_argument("--variant", default="t"); p.add_argument("--batch-size", type=int, default=58); p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16")); p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (the scan stays one custom op per call)")
    p.add_argument("--device", default="auto")
    a = p.parse_args(argv)
    settings = parse_settings(a.settings)
    dev = resolve_device(a.device)
    model, fwd, opt, fmt, step = bench_setup(a.variant, 2, None, dev, a.batch_size, a.img_size, a.precision == "bf16",
                                             a.channels_last, a.compile)
    rows, t0 = [], time.time()
    for r in range(a.rounds):
        for f, b, lay in settings:
            set_scan_layout(model, lay)
            with sc.use_variants(f, b): ts, warm = time_steps(step, dev, a.steps, a.warmup)
            med = float(np.median(ts))
            rows.append(dict(round=r, fwd=f, bwd=b, layout=lay, step_ms_median=1e3 * med, img_s=a.batch_size / med,
                             warmup_s=warm, step_ms=[round(1e3 * t, 3) for t in ts]))
            print(f"round {r} {name(f, b, lay):24s} {1e3 * med:8.2f} ms/step  {a.batch_size / med:7.1f} img/s  (warm-up {warm:.1f} s)", flush=True)
        write(a, settings, rows, dev, t0, final=r == a.rounds - 1)   # after every round: a cut run keeps what it measured
    return 0

def write(a, settings, rows, dev, t0, final:bool):
    "Summarise the rounds so far (median of the rounds' medians per setting) and write the JSON."
    summ = {}
    for f, b, lay in settings:
        ms = [x["step_ms_median"] for x in rows if (x["fwd"], x["bwd"], x["layout"]) == (f, b, lay)]
        if ms: summ[name(f, b, lay)] = dict(step_ms_per_round=ms, step_ms_median=float(np.median(ms)), img_s=a.batch_size / (float(np.median(ms)) / 1e3))
    base = name(*settings[0])
    for k, v in summ.items(): v["speedup_vs_base"] = summ[base]["step_ms_median"] / v["step_ms_median"]
    if final: print("\n".join(f"{k:20s} {v['step_ms_median']:8.2f} ms/step {v['img_s']:7.1f} img/s  ×{v['speedup_vs_base']:.3f} vs {base}" for k, v in summ.items()))
    res = dict(env=sc._env(), device=str(dev), variant=a.variant, batch=a.batch_size, img_size=a.img_size, precision=a.precision,
               channels_last=a.channels_last, compile=a.compile, steps=a.steps, warmup=a.warmup, rounds=rows, summary=summ,
               base=base, seconds=time.time() - t0, complete=final,
               note="one model, optimizer and random batch; settings alternate round by round; synchronised wall clock per step")
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, "bench_scan_variants_train_ab.json")
    json.dump(res, open(path, "w"), indent=1)
    if final: print(f"wrote {path} ({res['seconds']:.0f} s)")

if __name__ == "__main__":
    sys.exit(main())
