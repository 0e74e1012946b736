"""Forward variants of the Numba CUDA selective scan (impl "blk": FWD_VARIANTS with the default backward), side by side.

One process: every variant is checked against the float64 NumPy reference (the cases of scan_bwd_variants.py, outputs
poisoned with NaN first), then at each of the four STAGE_SHAPES the variants are timed in turn on the same inputs:
forward kernel alone and forward+backward through autograd (CUDA events, median of `--reps` after warm-up), with the
forward's ratio to the memory floor (scan_notes §6.1) at 3.0 TB/s and at this card's measured copy rate. Prints one line
per shape and the ratios against the first variant; writes DIR/bench_scan_fwd_variants.json.

    python3 benchmarks/scan_fwd_variants.py --out DIR            # GPU
    NUMBA_ENABLE_CUDASIM=1 python3 benchmarks/scan_fwd_variants.py --sim-smoke --out DIR   # no GPU: the whole script at tiny shapes
"""
import os, sys, json, time, argparse
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # the repo's msmamba_nb
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch
import msmamba_nb.scan_cuda as sc
import scan_bwd_variants as bv                   # its correctness cases, tolerance and CPU timer

def check(v:str)->list:
    "Correctness cases of forward variant v (default backward): [(case, max relative error)]."
    with sc.use_variants(fwd=v): return bv.check(sc.BWD_VARIANT)

def time_shape(Bt, Dch, L, variants, reps, warmup)->dict:
    "Forward kernel alone and fwd+bwd (autograd.grad) of every variant at one shape, same inputs, in turn."
    N, G = 16, 4
    ev = sc._events_ms if bv.DEV == "cuda" else bv._cpu_ms
    x = sc._rand_inputs(Bt, Dch, L, N, G, device=bv.DEV)
    args = [x[k] for k in ("u", "delta", "A", "B", "C", "D")]
    xg = [x[k].detach().clone().requires_grad_() for k in ("u", "delta", "A", "B", "C", "D", "delta_bias")]
    dout = torch.randn(Bt, Dch, L, device=bv.DEV)
    res = dict(shape=[Bt, Dch, L, N, G], variants={})
    outs = {}
    for v in variants:
        kf = ev(lambda: sc.scan_fwd_cuda(*args, None, x["delta_bias"], impl="blk", fwd=v), reps, warmup)
        def fb():
            out = sc.selective_scan_cuda(*xg[:6], delta_bias=xg[6], impl="blk")
            torch.autograd.grad(out, xg, dout)
        with sc.use_variants(fwd=v): fbt = ev(fb, reps, warmup)
        outs[v] = sc.scan_fwd_cuda(*args, None, x["delta_bias"], impl="blk", fwd=v)
        res["variants"][v] = dict(fwd_kernel_ms=kf["median"], fwd_kernel=kf, fwdbwd_ms=fbt["median"], fwdbwd=fbt)
    base = variants[0]        # same inputs: every variant's out and stored states match the first's
    res["max_abs_diff_vs_base"] = {v: max(float((a - b).abs().max()) for a, b in zip(outs[v], outs[base])) for v in variants}
    del x, xg, args, dout, outs
    if bv.DEV == "cuda": torch.cuda.synchronize(); torch.cuda.empty_cache()
    return res

def main(argv=None)->int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bv.common_args(p, "bench_scan_fwd_variants.json", sc.FWD_VARIANTS, "the first is the baseline", 30)
    a = p.parse_args(argv)
    if a.sim_smoke: bv.enter_sim_smoke(a)
    shapes = bv.SHAPES
    variants = [v for v in a.variants.split(",") if v]
    for v in variants: sc._fwd_variant(v)                  # unknown names fail here
    if bv.DEV == "cuda" and not torch.cuda.is_available(): print("no CUDA GPU (use --sim-smoke)", file=sys.stderr); return 1
    os.makedirs(a.out, exist_ok=True)
    t0 = time.time()
    bw = sc.copy_bandwidth() if bv.DEV == "cuda" else None
    res = dict(env=sc._env(), reps=a.reps, warmup=a.warmup, tol=bv.TOL, variants=variants, hbm_bw_bytes_per_s=sc.HBM_BW,
               copy_bw_bytes_per_s=bw, checks={}, shapes=[],
               note=("impl 'blk': each forward variant with the default backward; fwd_kernel: scan_fwd_cuda launches; fwdbwd: "
                     "selective_scan_cuda + torch.autograd.grad; CUDA events, median per call; variants timed in turn at each "
                     "shape on the same inputs; floor: scan_floor_bytes (fp32, no z) at hbm_bw_bytes_per_s and at the card's "
                     "measured copy rate; checks: max relative L2 error of out and each gradient vs the float64 NumPy reference"))
    for v in variants:
        t = time.time()
        res["checks"][v] = check(v)
        e = max(c["max_rel_err"] for c in res["checks"][v])
        print(f"check {v:8s} max rel err {e:.2e} {'ok' if e < bv.TOL else 'FAIL'}  ({time.time() - t:.1f} s incl. JIT)", flush=True)
    for (Bt, Dch, L) in shapes:
        r = time_shape(Bt, Dch, L, variants, a.reps, a.warmup)
        fb = sc.scan_floor_bytes(Bt, Dch, L)[0]
        for q in r["variants"].values():
            q["fwd_floor_ratio"] = q["fwd_kernel_ms"] / (fb / sc.HBM_BW * 1e3)
            q["fwd_floor_ratio_card"] = q["fwd_kernel_ms"] / (fb / bw * 1e3) if bw else None
        res["shapes"].append(r)
        print(f"shape {(Bt, Dch, L)}: fwd kernel ms (× floor at 3.0 TB/s) | fwd+bwd ms: " +
              "  ".join(f"{v} {q['fwd_kernel_ms']:.3f} ({q['fwd_floor_ratio']:.2f}×) | {q['fwdbwd_ms']:.3f}" for v, q in r["variants"].items()) +
              f"  max |diff| vs {variants[0]}: {max(r['max_abs_diff_vs_base'].values()):.1e}", flush=True)
    base = variants[0]
    res["summary"] = {v: dict(fwd_kernel_ms=[s["variants"][v]["fwd_kernel_ms"] for s in res["shapes"]],
                              fwdbwd_ms=[s["variants"][v]["fwdbwd_ms"] for s in res["shapes"]],
                              fwd_floor_ratio=[s["variants"][v]["fwd_floor_ratio"] for s in res["shapes"]],
                              ratio_fwd_kernel_vs_base=[s["variants"][v]["fwd_kernel_ms"] / s["variants"][base]["fwd_kernel_ms"] for s in res["shapes"]],
                              ratio_fwdbwd_vs_base=[s["variants"][v]["fwdbwd_ms"] / s["variants"][base]["fwdbwd_ms"] for s in res["shapes"]],
                              max_check_err=max(c["max_rel_err"] for c in res["checks"][v]),
                              check_pass=all(c["max_rel_err"] < bv.TOL for c in res["checks"][v])) for v in variants}
    print(f"\nper variant: forward kernel ms at stages 1-4 | ratio to {base} (fwd kernel) | (fwd+bwd) | check")
    for v, s in res["summary"].items():
        print(f"{v:8s} " + " ".join(f"{x:7.3f}" for x in s["fwd_kernel_ms"]) + " | " + " ".join(f"{x:5.3f}" for x in s["ratio_fwd_kernel_vs_base"]) +
              " | " + " ".join(f"{x:5.3f}" for x in s["ratio_fwdbwd_vs_base"]) + f" | {s['max_check_err']:.1e} {'ok' if s['check_pass'] else 'FAIL'}")
    return bv.write_json(res, a.out, "bench_scan_fwd_variants.json", base, t0)

if __name__ == "__main__":
    sys.exit(main())
