"""SS2D's scan core in the map layout (no cross-scan/cross-merge copies) against the batched layout, side by side.

One process, variant t's four SS2D shapes (batch 58, 4 chunks, the stage's d_inner and map size, N = 16, K = 4):
- check: the map core's output and gradients (input, x_proj, dt_proj, A_logs, Ds, dt bias) against the batched core's,
  same weights and inputs, on the GPU in fp32 (largest relative L2 error over all of them);
- kernels: the v3 forward and v4 backward reading the sequence layout (the batched core's cross-scanned copies) and
  reading the channels-last map through the step table (`map_rows`), same numbers;
- core: `SS2D._ssm` (cross-scan, projections, one scan call, cross-merge, with the permutes SS2D.forward adds around
  it) against `SS2D._ssm_map`, forward and forward+backward, eager and (``--compile``) torch.compile'd.
CUDA events, median of `--reps` after warm-up. Writes DIR/bench_ss2d_map_layout.json.

    python3 benchmarks/ss2d_map_layout.py --out DIR --compile                             # GPU
    NUMBA_ENABLE_CUDASIM=1 python3 benchmarks/ss2d_map_layout.py --sim-smoke --out DIR    # no GPU: tiny shapes, simulator
"""
import os, sys, time, argparse, copy
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # the repo's msmamba_nb
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np, torch
import msmamba_nb.scan_cuda as sc
from msmamba_nb.ss2d import SS2D, map_to_sequences
from scan_bwd_variants import _cpu_ms, write_json

STAGES = [(12, 56), (24, 28), (48, 14), (96, 7)]     # variant t: (d_model of a chunk, map side); d_inner = 2·d_model
SMOKE_STAGES, BATCH, CHUNKS, N = [(2, 3)], 58, 4, 16       # the smoke run (simulator) uses N = 4

def cores(dm:int, dev):
    "Two SS2D of the same weights, batched and map layout; their cores as functions of the channels-last u (B, H, W, G, di)."
    torch.manual_seed(0)
    a = SS2D(dm, d_state=N).to(dev)
    b = copy.deepcopy(a); b.scan_layout = "map"
    batched = lambda u: a._ssm(u.permute(0, 3, 4, 1, 2)).permute(0, 3, 4, 1, 2)   # as SS2D.forward calls it
    return a, b, batched, b._ssm_map

def rel(x, r): return float((x - r).double().norm() / max(float(r.double().norm()), 1e-30))

def check(dm, side, bs, dev)->float:
    "Largest relative L2 error of the map core's output and gradients against the batched core's."
    a, b, fa, fb = cores(dm, dev)
    u = torch.randn(bs, side, side, CHUNKS, a.d_inner, device=dev)
    g = torch.randn_like(u)
    res = []
    for m, f in ((a, fa), (b, fb)):
        uu = u.clone().requires_grad_()
        y = f(uu); y.backward(g)
        res.append([y.detach(), uu.grad] + [p.grad for n, p in m.named_parameters() if p.grad is not None])
    return max(rel(x, r) for x, r in zip(res[1], res[0]))

def kernel_inputs(dm, side, bs, dev):
    "Random scan inputs in the map layout and the same numbers in the sequence layout (as the batched core hands them)."
    K, di = 4, 2 * dm
    u = torch.randn(bs, side, side, CHUNKS, di, device=dev)
    d = 0.5 * torch.randn(bs, side, side, CHUNKS, K, di, device=dev)
    B, C = (torch.randn(bs, side, side, CHUNKS, K, N, device=dev) for _ in range(2))
    A, D, bias = -torch.rand(K * di, N, device=dev) - 0.5, torch.randn(K * di, device=dev), 0.3 * torch.randn(K * di, device=dev)
    us, ds, _, Bs, Cs = (t.contiguous() for t in map_to_sequences(u, d, A, B, C))
    return (u, d, A, B, C, D, bias), (us, ds, A, Bs, Cs, D, bias), sc.map_rows(side, side, K, CHUNKS, u.device)

def time_kernels(dm, side, bs, dev, ev, reps, warmup)->dict:
    "v3 forward and v4 backward kernels, sequence layout vs map layout, same numbers."
    (u, d, A, B, C, D, bias), (us, ds, _, Bs, Cs, _, _), o = kernel_inputs(dm, side, bs, dev)
    fm = lambda: sc.scan_fwd_cuda(u, d, A, B, C, D, None, bias, impl="blk", rows=o)
    fs = lambda: sc.scan_fwd_cuda(us, ds, A, Bs, Cs, D, None, bias, impl="blk")
    (om, stm), (os_, sts) = fm(), fs()
    gm, gs = torch.randn_like(u), torch.randn(us.shape, device=dev)
    r = dict(fwd_seq=ev(fs, reps, warmup)["median"], fwd_map=ev(fm, reps, warmup)["median"],
             bwd_seq=ev(lambda: sc.scan_bwd_cuda(gs, us, ds, A, Bs, Cs, D, None, bias, sts, impl="blk"), reps, warmup)["median"],
             bwd_map=ev(lambda: sc.scan_bwd_cuda(gm, u, d, A, B, C, D, None, bias, stm, impl="blk", rows=o), reps, warmup)["median"])
    r["states_max_abs_diff"] = float((stm - sts).abs().max())
    return r

def time_cores(dm, side, bs, dev, ev, reps, warmup, compile_:bool)->dict:
    "Batched vs map core, forward and forward+backward (eager, or compiled)."
    a, b, fa, fb = cores(dm, dev)
    if compile_: fa, fb = torch.compile(fa, dynamic=False), torch.compile(fb, dynamic=False)
    u = torch.randn(bs, side, side, CHUNKS, a.d_inner, device=dev, requires_grad=True)
    g = torch.randn(u.shape, device=dev)
    r = {}
    for name, f in (("batched", fa), ("map", fb)):
        def fwdbwd(): f(u).backward(g)
        with torch.no_grad(): r[f"{name}_fwd"] = ev(lambda: f(u), reps, warmup)["median"]
        r[f"{name}_fwdbwd"] = ev(fwdbwd, reps, warmup)["median"]
    return r

def main(argv=None)->int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="."); p.add_argument("--reps", type=int, default=20); p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="also time the torch.compile'd cores")
    p.add_argument("--sim-smoke", action="store_true", help="no GPU: tiny shapes in the CUDA simulator (NUMBA_ENABLE_CUDASIM=1)")
    a = p.parse_args(argv)
    global N
    t0, dev, stages, bs, ev = time.time(), "cuda", STAGES, BATCH, sc._events_ms if not a.sim_smoke else _cpu_ms
    if a.sim_smoke:
        N = 4
        assert sc._simulator(), "--sim-smoke needs NUMBA_ENABLE_CUDASIM=1"
        sc._install_sim_shuffles(); sc.BLK_TILE = sc.SEQ_TILE = 8
        dev, stages, bs, a.reps, a.warmup, a.compile = "cpu", SMOKE_STAGES, 1, 1, 0, False
    rows = []
    for dm, side in stages:
        r = dict(d_model=dm, d_inner=2 * dm, side=side, L=side * side, batch=bs, chunks=CHUNKS, K=4, N=N,
                 max_rel_err=check(dm, side, bs, dev))
        r["kernels_ms"] = time_kernels(dm, side, bs, dev, ev, a.reps, a.warmup)
        r["eager_ms"] = time_cores(dm, side, bs, dev, ev, a.reps, a.warmup, False)
        if a.compile: r["compiled_ms"] = time_cores(dm, side, bs, dev, ev, a.reps, a.warmup, True)
        rows.append(r)
        k, e = r["kernels_ms"], r["eager_ms"]
        print(f"L={r['L']:5d} di={r['d_inner']:3d} err {r['max_rel_err']:.1e} | kernels fwd seq {k['fwd_seq']:.3f} map {k['fwd_map']:.3f}"
              f" bwd seq {k['bwd_seq']:.3f} map {k['bwd_map']:.3f} ms | core eager fwd {e['batched_fwd']:.3f}→{e['map_fwd']:.3f}"
              f" fwd+bwd {e['batched_fwdbwd']:.3f}→{e['map_fwdbwd']:.3f} ms", flush=True)
        if a.compile:
            c = r["compiled_ms"]
            print(f"{'':19s} core compiled fwd {c['batched_fwd']:.3f}→{c['map_fwd']:.3f} fwd+bwd {c['batched_fwdbwd']:.3f}→{c['map_fwdbwd']:.3f} ms", flush=True)
        if dev == "cuda": torch.cuda.empty_cache()
    tot = lambda key, col: sum(r[key][col] for r in rows)
    summ = {f"{key}:{x}": tot(key, f"map_{x}") / tot(key, f"batched_{x}") for key in ("eager_ms",) + (("compiled_ms",) if a.compile else ())
            for x in ("fwd", "fwdbwd")}
    summ.update({f"kernels:{x}": tot("kernels_ms", f"{x}_map") / tot("kernels_ms", f"{x}_seq") for x in ("fwd", "bwd")})
    print("map / batched, summed over the stages (one block each): " + ", ".join(f"{k} {v:.3f}" for k, v in summ.items()))
    res = dict(env=sc._env(), device=dev, reps=a.reps, warmup=a.warmup, stages=rows, ratio_map_over_batched=summ,
               note="fp32; same weights and inputs for both layouts; kernels: same numbers in both layouts; CUDA events, median")
    os.makedirs(a.out, exist_ok=True)
    return write_json(res, a.out, "bench_ss2d_map_layout.json", "batched", t0)

if __name__ == "__main__":
    sys.exit(main())
