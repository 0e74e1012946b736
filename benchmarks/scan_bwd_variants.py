"""Backward variants of the Numba CUDA selective scan (impl "blk": v3 forward + BWD_VARIANTS backward), side by side.

One process: every variant is checked against the float64 NumPy reference (`_check_case`, outputs poisoned with NaN
first), then at each of the four STAGE_SHAPES every variant is timed in turn on the same inputs (backward kernel
alone, and forward+backward through the autograd wrapper; CUDA events, median of `--reps` after warm-up). Prints one
line per variant and ratio tables against v2; writes DIR/bench_scan_bwd_variants.json.

    python3 benchmarks/scan_bwd_variants.py --out DIR            # GPU
    python3 benchmarks/scan_bwd_variants.py --dry-run            # no GPU: variants, ptxas registers, warps/SM, waves
    NUMBA_ENABLE_CUDASIM=1 python3 benchmarks/scan_bwd_variants.py --sim-smoke --out DIR   # no GPU: the whole script at tiny shapes
"""
import os, sys, json, time, argparse
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # the repo's msmamba_nb
import numpy as np
import torch
import msmamba_nb.scan_cuda as sc

CHECKS = [(2, 136, 300, 16, 2, ("z",)),                 # z gate, two groups, parts of a group over several warps
          (2, 24, 3136, 16, 1, ()),                     # stage-1 length, G = 1, 49 tiles
          (232, 16, 49, 16, 4, ()),                     # many batches, L < tile, Dk = 4
          (2, 12, 130, 5, 2, ("nosp", "nobias")),       # N < 16, Dk = 6 (rows not a multiple of a warp's), L % 8 != 0
          (3, 8, 1, 16, 4, ("noD",))]                   # L = 1, Dk = 2
TOL = 1e-4        # max relative L2 error (fp32) of out and every gradient
DEV, SHAPES = "cuda", sc.STAGE_SHAPES
SMOKE_CHECKS = [(1, 8, 13, 16, 2, ("z",)), (1, 6, 9, 3, 2, ("nosp", "nobias"))]   # --sim-smoke (simulator, CPU tensors)
SMOKE_SHAPES = ((1, 8, 11),)

def _cpu_ms(fn, reps:int=3, warmup:int=1)->dict:
    "Wall-clock stand-in for `_events_ms` in the simulator smoke run."
    for _ in range(warmup): fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); fn(); ts.append((time.perf_counter() - t) * 1e3)
    ts.sort()
    return dict(median=ts[len(ts) // 2], min=ts[0], back_to_back=sum(ts) / len(ts))

def static_report(variants)->dict:
    "ptxas registers/spills/smem and warps per SM, waves at each stage shape (no GPU needed; {} if nvJitLink is missing)."
    try:
        rep = sc.bwd_variant_report(variants)
        for v in variants:
            rep[v]["waves_by_stage"] = []
            for shp in sc.STAGE_SHAPES:
                blocks, thr = sc._bwd_launch_shape(v, shp[0], shp[1], 4)
                per_sm = sc._occupancy(rep[v]["registers"], rep[v]["static_smem_bytes"] or 0, thr)
                rep[v]["waves_by_stage"].append(round(blocks / (sc.H100_SM["sms"] * per_sm), 2))
        return rep
    except Exception as e:
        print(f"ptxas report unavailable: {type(e).__name__}: {e}", file=sys.stderr)
        return {}

def gpu_regs(v:str)->dict:
    "Registers, local memory (spills) and static shared memory per build of the variant's kernel as the driver loaded it."
    name, kw, mr = sc.BWD_VARIANTS[v]
    out = {}
    for key, (disp, _) in sc._KERNELS.items():
        if key[0] == name and key[1] == mr and all((k, x) in key[2:] for k, x in kw.items()):
            build = ",".join(f"{k}={x}" for k, x in key[2:] if k not in kw) or "default"
            try: out[build] = dict(registers=disp.get_regs_per_thread(), local_bytes=disp.get_local_mem_per_thread(),
                                   shared_bytes=disp.get_shared_mem_per_block())
            except Exception as e: out[build] = f"{type(e).__name__}: {e}"
    return out

def check(v:str)->list:
    "Correctness cases of variant v on the GPU: [(case, max relative error)]."
    sc._POISON = True
    try:
        res = []
        for i, cs in enumerate(CHECKS if DEV == "cuda" else SMOKE_CHECKS):
            with sc.use_variants(bwd=v): r = sc._check_case(*cs, seed=i, impl="blk", device=DEV)
            res.append(dict(case=[list(x) if isinstance(x, tuple) else x for x in cs],
                            max_rel_err=max(x for k, x in r.items() if k not in ("case", "impl", "dtype")),
                            errors={k: x for k, x in r.items() if k not in ("case", "impl", "dtype")}))
        return res
    finally: sc._POISON = False

def time_shape(Bt, Dch, L, variants, reps, warmup)->dict:
    "Backward kernel alone and fwd+bwd (autograd wrapper) of every variant at one shape, same inputs, in turn."
    N, G = 16, 4
    ev = sc._events_ms if DEV == "cuda" else _cpu_ms
    x = sc._rand_inputs(Bt, Dch, L, N, G, device=DEV)
    args = [x[k] for k in ("u", "delta", "A", "B", "C", "D")]
    dout = torch.randn(Bt, Dch, L, device=DEV)
    _, st = sc.scan_fwd_cuda(*args, None, x["delta_bias"], impl="blk")
    fwd = ev(lambda: sc.scan_fwd_cuda(*args, None, x["delta_bias"], impl="blk"), reps, warmup)
    xg = {k: v.detach().clone().requires_grad_() for k, v in x.items()}
    res = dict(shape=[Bt, Dch, L, N, G], fwd_kernel_ms=fwd["median"], variants={})
    for v in variants:
        def fb():
            out = sc.selective_scan_cuda(*(xg[k] for k in ("u", "delta", "A", "B", "C", "D")), delta_bias=xg["delta_bias"], impl="blk")
            out.backward(dout)
        with sc.use_variants(bwd=v):
            kb = ev(lambda: sc.scan_bwd_cuda(dout, *args, None, x["delta_bias"], st, impl="blk"), reps, warmup)
            fbt = ev(fb, reps, warmup)
        res["variants"][v] = dict(bwd_kernel_ms=kb["median"], bwd_kernel=kb, fwdbwd_ms=fbt["median"], fwdbwd=fbt)
    del x, xg, args, dout, st
    if DEV == "cuda": torch.cuda.synchronize(); torch.cuda.empty_cache()
    return res

def common_args(p, json_name:str, variants:dict, base:str, reps:int):
    "The options this script shares with scan_fwd_variants.py."
    p.add_argument("--out", default=".", help=f"directory for {json_name}")
    p.add_argument("--variants", default=",".join(variants), help=f"comma-separated variant keys ({base})")
    p.add_argument("--reps", type=int, default=reps, help="timed calls per measurement (median reported)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--sim-smoke", action="store_true", help="no GPU: run everything at tiny shapes in the CUDA simulator (NUMBA_ENABLE_CUDASIM=1)")

def enter_sim_smoke(a):
    "--sim-smoke: small tiles, simulated shuffles, CPU tensors, one timed call; sets DEV and SHAPES here."
    global DEV, SHAPES
    assert sc._simulator(), "--sim-smoke needs NUMBA_ENABLE_CUDASIM=1"
    sc._install_sim_shuffles(); sc.BLK_TILE = sc.SEQ_TILE = 8
    DEV, SHAPES, a.reps, a.warmup = "cpu", SMOKE_SHAPES, 1, 0

def write_json(res:dict, out:str, name:str, base:str, t0:float)->int:
    "Write the record (with its baseline variant and the seconds since t0) to out/name; 0."
    res["base"], res["seconds"] = base, time.time() - t0
    path = os.path.join(out, name)
    json.dump(res, open(path, "w"), indent=1)
    print(f"wrote {path} ({res['seconds']:.0f} s)")
    return 0

def main(argv=None)->int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_args(p, "bench_scan_bwd_variants.json", sc.BWD_VARIANTS, "v2 first is the baseline", 20)
    p.add_argument("--dry-run", action="store_true", help="no GPU: list variants with ptxas registers, warps/SM and waves")
    a = p.parse_args(argv)
    if a.sim_smoke: enter_sim_smoke(a)
    variants = [v for v in a.variants.split(",") if v]
    for v in variants: sc._bwd_variant(v)                  # unknown names fail here
    if "v2" in variants: variants.remove("v2"); variants.insert(0, "v2")
    t0 = time.time()
    rep = {} if a.sim_smoke else static_report(variants)
    for v in variants:
        name, kw, mr = sc.BWD_VARIANTS[v]
        r = rep.get(v, {})
        print(f"{v:9s} {name:8s} {str(kw):38s} cap {str(mr):4s} ptxas regs {r.get('registers')} spills {r.get('spill_stores')}/"
              f"{r.get('spill_loads')} B smem {r.get('static_smem_bytes')} B  warps/SM {r.get('warps_per_sm')}  waves by stage "
              f"{r.get('waves_by_stage')}", flush=True)
    if a.dry_run: return 0
    if DEV == "cuda" and not torch.cuda.is_available(): print("no CUDA GPU (use --dry-run)", file=sys.stderr); return 1
    os.makedirs(a.out, exist_ok=True)
    res = dict(env=sc._env(), reps=a.reps, warmup=a.warmup, tol=TOL, variants=list(variants), ptxas=rep, checks={}, gpu_registers={},
               shapes=[], note=("impl 'blk' (v3 forward) with each backward variant; bwd_kernel: scan_bwd_cuda launches "
                                "(dB/dC zeroing included); fwdbwd: selective_scan_cuda + backward through autograd; CUDA events, "
                                "median per call; variants timed in turn at each shape on the same inputs; checks: max relative "
                                "L2 error of out and each gradient vs the float64 NumPy reference"))
    for v in list(variants):
        t = time.time()
        try: res["checks"][v] = check(v)
        except Exception as ex:            # a variant that does not compile or launch is reported and not timed
            res["checks"][v] = [dict(case=None, max_rel_err=float("inf"), error=f"{type(ex).__name__}: {ex}")]
            print(f"check {v:9s} ERROR {type(ex).__name__}: {ex}", flush=True)
            variants.remove(v); continue
        res["gpu_registers"][v] = gpu_regs(v)
        e = max(c["max_rel_err"] for c in res["checks"][v])
        print(f"check {v:9s} max rel err {e:.2e} {'ok' if e < TOL else 'FAIL'}  ({time.time() - t:.1f} s incl. JIT; "
              f"GPU builds: {res['gpu_registers'][v]})", flush=True)
    res["timed"] = list(variants)
    for (Bt, Dch, L) in SHAPES:
        r = time_shape(Bt, Dch, L, variants, a.reps, a.warmup)
        res["shapes"].append(r)
        print(f"shape {(Bt, Dch, L)}: fwd kernel {r['fwd_kernel_ms']:.3f} ms | bwd kernel / fwd+bwd ms: " +
              "  ".join(f"{v} {q['bwd_kernel_ms']:.3f}/{q['fwdbwd_ms']:.3f}" for v, q in r["variants"].items()), flush=True)
    if not variants: print("no variant ran", file=sys.stderr); return 1
    base = variants[0]
    print(f"\nper variant: backward kernel ms at stages 1-4 | fwd+bwd ms | ratio to {base} (bwd kernel) | check")
    for v in variants:
        b = [s["variants"][v]["bwd_kernel_ms"] for s in res["shapes"]]
        f = [s["variants"][v]["fwdbwd_ms"] for s in res["shapes"]]
        q = [s["variants"][v]["bwd_kernel_ms"] / s["variants"][base]["bwd_kernel_ms"] for s in res["shapes"]]
        e = max(c["max_rel_err"] for c in res["checks"][v])
        print(f"{v:9s} " + " ".join(f"{x:7.3f}" for x in b) + " | " + " ".join(f"{x:7.3f}" for x in f) + " | " +
              " ".join(f"{x:5.2f}" for x in q) + f" | {e:.1e} {'ok' if e < TOL else 'FAIL'}")
    res["summary"] = {v: dict(bwd_kernel_ms=[s["variants"][v]["bwd_kernel_ms"] for s in res["shapes"]],
                              fwdbwd_ms=[s["variants"][v]["fwdbwd_ms"] for s in res["shapes"]],
                              ratio_bwd_kernel_vs_base=[s["variants"][v]["bwd_kernel_ms"] / s["variants"][base]["bwd_kernel_ms"] for s in res["shapes"]],
                              ratio_fwdbwd_vs_base=[s["variants"][v]["fwdbwd_ms"] / s["variants"][base]["fwdbwd_ms"] for s in res["shapes"]],
                              max_check_err=max(c["max_rel_err"] for c in res["checks"][v]),
                              check_pass=all(c["max_rel_err"] < TOL for c in res["checks"][v])) for v in variants}
    return write_json(res, a.out, "bench_scan_bwd_variants.json", base, t0)

if __name__ == "__main__":
    sys.exit(main())
