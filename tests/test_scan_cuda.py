"CPU tests of msmamba_nb.scan_cuda: import without a GPU, PTX for sm_90 (no fp64), simulator runs vs the NumPy reference."
import os, re, sys, json, subprocess
from pathlib import Path
import numpy as np, pytest, torch
import msmamba_nb.scan_cuda as sc

ENV = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")

def _sim(code, timeout=300):
    p = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.split("JSON", 1)[1])

def test_import_does_not_load_numba_cuda():
    code = "import sys, msmamba_nb.scan_cuda; print('numba.cuda' in sys.modules)"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert p.returncode == 0 and p.stdout.strip() == "False", (p.stdout, p.stderr[-2000:])

def test_refuses_cpu_tensors():
    if sc._simulator(): pytest.skip("simulator process")
    x = torch.zeros(1, 2, 4)
    with pytest.raises(ValueError, match="CUDA tensors"):
        sc.selective_scan_cuda(x, x, torch.zeros(2, 2), torch.zeros(1, 1, 2, 4), torch.zeros(1, 1, 2, 4))

@pytest.mark.parametrize("items", [4, 8])
def test_ptx_sm90_no_fp64(items):
    names = ("fwd_warp", "bwd_warp") if items != 4 else ("fwd_warp", "bwd_warp", "fwd_chan", "bwd_chan")
    for nm in names:
        p = sc._ptx(nm, cc=(9, 0), **({"items": items} if "warp" in nm else {}))
        assert ".target sm_90" in p
        lines = p.splitlines()
        assert sum(".f64" in l for l in lines) == 0, f"{nm}: fp64 instructions in PTX"
        assert any("ex2.approx" in l for l in lines), f"{nm}: no fast exp2"
        if "warp" in nm: assert sum("shfl.sync" in l for l in lines) >= 10
        if nm == "bwd_warp": assert any("atom.shared.add.f32" in l for l in lines)

def test_bwd_config():
    for Bt, G, Dk, N in [(232, 4, 24, 16), (58, 1, 24, 16), (232, 4, 192, 16), (3, 4, 192, 16), (2, 2, 4, 64), (1, 1, 1, 1), (1, 1, 500, 1)]:
        W, S, CPB = sc._bwd_config(Bt, G, Dk, N)
        cw = -(-CPB // W)
        assert S * CPB >= Dk and (S - 1) * CPB < Dk and 1 <= W <= 8
        assert cw <= sc.CWMAX and cw * N <= sc.QMAX

def test_floor_bytes_match_scan_notes():
    fb, bb = sc.scan_floor_bytes(232, 96, 3136, 16, 4)
    assert abs(fb / 3.0e12 * 1e3 - 0.404) < 0.002 and abs(bb / 3.0e12 * 1e3 - 0.714) < 0.002   # scan_notes §6.2

def test_sim_shared_array_race():
    "The simulator's cuda.shared.array, as shipped, can give threads of one block different arrays; with our lock it cannot."
    code = """import json, time, numpy as np
from numba import cuda, float32
from numba.cuda.simulator import kernelapi
import msmamba_nb.scan_cuda as m
class SlowNp:                      # a slow np.empty widens the simulator's look-up-then-create window
    def __getattr__(self, k): return getattr(np, k)
    def empty(self, *a, **k): time.sleep(0.05); return np.empty(*a, **k)
kernelapi.np = SlowNp()
@cuda.jit
def k(out):
    s = cuda.shared.array(64, float32)
    t = cuda.threadIdx.x
    s[t] = t
    cuda.syncthreads()
    out[t] = s[(t + 1) % 64]
def wrong():
    o = np.full(64, -1, np.float32); k[1, 64](o)
    return int((o != (np.arange(64) + 1) % 64).sum())
before = wrong()
m._install_sim_shared()
print('JSON' + json.dumps([before, wrong(), wrong()]))"""
    before, *after = _sim(code, timeout=120)
    assert before > 0, "the slowed simulator no longer splits shared arrays: numba-cuda may have fixed the race"
    assert after == [0, 0], after      # one array per block with the lock

def test_sim_twins_vs_reference():
    res = _sim("import json; from msmamba_nb.scan_cuda import sim_check; print('JSON' + json.dumps(sim_check()))")
    assert len(res) == 4
    for r in res:
        errs = {k: v for k, v in r.items() if k not in ("case", "impl", "dtype")}
        assert "out" in errs and "du" in errs and max(errs.values()) < 1e-5, r

def test_sim_warp_kernels_vs_reference():
    code = """import json, msmamba_nb.scan_cuda as m
res = m.sim_check([(2, 4, 70, 3, 2, ("z",))], impl="warp", tile=64)
m._BWD_OVERRIDE.update(W=2, S=2)
res += m.sim_check([(1, 8, 40, 2, 1, ("noD", "B3"))], impl="warp", tile=32)
print('JSON' + json.dumps(res))"""
    res = _sim(code)
    for r in res:
        assert r["impl"] == "warp"
        errs = {k: v for k, v in r.items() if k not in ("case", "impl", "dtype")}
        assert max(errs.values()) < 1e-5, r

def test_ptx_v2_kernels():
    for nm in ("fwd_seq", "bwd_seq"):
        lines = sc._ptx(nm, cc=(9, 0)).splitlines()
        assert sum(".f64" in l for l in lines) == 0, f"{nm}: fp64 instructions in PTX"
        assert any("ex2.approx" in l for l in lines) and sum("shfl.sync" in l for l in lines) >= 10
        if nm == "fwd_seq": assert not any(".local" in l for l in lines), "v2 forward spilled to local memory"

def test_ptx_v3_kernels():
    lines = sc._ptx("fwd_blk", cc=(9, 0)).splitlines()
    assert sum(".f64" in l for l in lines) == 0, "fwd_blk: fp64 instructions in PTX"
    assert any("ex2.approx" in l for l in lines) and sum("shfl.sync" in l for l in lines) >= 10
    assert any("ld.shared" in l for l in lines), "fwd_blk: B/C not read from shared memory"
    assert not any(".local" in l for l in lines), "v3 forward spilled to local memory"
    assert not any("call" in l.split() for l in lines), "device functions (_steps4, _rs4) not inlined"

def test_blk_shape():
    assert sc._blk_shape(24) == (1, 24, 96) and sc._blk_shape(192) == (6, 32, 128) and sc._blk_shape(5) == (1, 5, 32)
    for dk in range(1, 300):   # parts cover the group exactly, every block is whole warps
        parts, rpb, nth = sc._blk_shape(dk)
        assert parts * rpb >= dk > (parts - 1) * rpb and nth % 32 == 0 and 4 * rpb <= nth <= 128

def _sim_kernels_ok(cases, impl, **kw):
    "Warp-shuffle kernels `impl` in the simulator on `cases`: every output and gradient within 1e-5 of the reference."
    for r in _sim(f"import json, msmamba_nb.scan_cuda as m\nprint('JSON' + json.dumps(m.sim_check({cases!r}, impl={impl!r}, **{kw!r})))"):
        assert r["impl"] == impl
        errs = {k: v for k, v in r.items() if k not in ("case", "impl", "dtype")}
        assert "dB" in errs and max(errs.values()) < 1e-5, r

def test_sim_v3_kernels_vs_reference():
    # v3 forward + v2 backward (explicitly: the default backward is v4, tested below): a group split over 2 blocks,
    # whole groups, N < 16, z, L % 4 != 0
    _sim_kernels_ok([(1, 12, 9, 4, 1, ("z",)), (1, 8, 13, 5, 2, ("noD", "nosp", "B3"))], "blk", tile=8, rows=8, bwd="v2")

def test_impl_dispatch():
    assert sc._impl("auto", 16, 232 * 96) == "blk" and sc._impl("auto", 16, 58 * 24) == "warp"
    assert sc._impl("warp_v1", 16) == "warp" and sc._impl("seq", 32) == "warp"   # v2 covers N ≤ 16
    with pytest.raises(ValueError): sc._impl("nope", 16)

def test_sim_v2_kernels_vs_reference():
    # 8 rows of one group per warp (warp-reduced dB/dC), rows straddling groups (per-lane atomics), N < 16, L % 4 != 0
    _sim_kernels_ok([(2, 8, 23, 16, 1, ()), (1, 4, 9, 3, 2, ("z", "nobias")), (1, 8, 13, 5, 2, ("noD", "nosp", "B3", "z"))], "seq", tile=8,
                    bwd="v2")   # the v2 backward explicitly (the default is v4)

def test_torch_compile_with_numba_scan():
    "torch.compile(model) runs forward+backward with the Numba scan inside (the scan is opaque to dynamo)."
    code = """import torch
torch.manual_seed(0)
from msmamba_nb.model import MicroscopicMamba
m = MicroscopicMamba("t", num_classes=3, depths=(1, 1, 1, 1), dims=(16, 32, 64, 128), scan_backend="numba", drop_path_rate=0.0)
x = torch.randn(2, 3, 32, 32)
ps = [p for p in m.parameters()]
ref = m(x); ref.sum().backward(); keep = [p.grad is not None for p in ps]; g0 = [p.grad.clone() for p, k in zip(ps, keep) if k]; m.zero_grad()
out = torch.compile(m, backend="aot_eager")(x); out.sum().backward()
scale = max(float(g.abs().max()) for g in g0)   # fp32 reassociation in the compiled graph: compare on the global scale
err = max(float((p.grad - g).abs().max()) for p, g in zip([p for p, k in zip(ps, keep) if k], g0)) / scale
assert len(g0) > 50 and all(p.grad is not None for p, k in zip(ps, keep) if k)
print("RES", float((out - ref).abs().max()), err)"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1"))
    assert p.returncode == 0, p.stderr[-3000:]
    o, g = map(float, p.stdout.split("RES", 1)[1].split())
    assert o < 1e-5 and g < 1e-4, (o, g)   # same function and same gradients through the compiled model

def test_ptxas_report_no_spills():
    "ptxas (nvJitLink, no GPU) assembles the default kernels without spills; the backward's register count is recorded."
    rp = sc.ptxas_report(("fwd_blk", "fwd_seq", "bwd_seq"))
    for nm, r in rp.items():
        assert r["registers"] and r["spill_stores"] == 0 and r["spill_loads"] == 0, (nm, r)
    assert rp["fwd_blk"]["static_smem_bytes"] >= 2 * 16 * (sc.BLK_TILE + 1) * 4      # the B, C tiles
    assert rp["bwd_seq"]["warps_per_sm_by_registers"] < rp["fwd_blk"]["warps_per_sm_by_registers"]

@pytest.mark.parametrize("bwd,cases,tile", [
    # v4 (8 lanes per row, 4-step sub-chunks): z, two groups; N = 3 with a group's rows not filling its last warp and a
    # stored-state tile taking columns of the tile before it; L = 1, N = 1; G = 4 with 2 rows per group, batch 2
    ("v4", [(1, 8, 13, 16, 2, ("z",)), (1, 6, 9, 3, 2, ("noD", "nosp", "nobias", "B3")), (1, 4, 1, 1, 1, ()),
            (2, 8, 7, 2, 4, ("z", "nobias"))], 8),
    ("v4", [(1, 4, 16, 16, 1, ())], 8),                                   # L a multiple of the tile
    ("v4", [(1, 4, 23, 16, 1, ("bigdelta",))], 16),                       # 4 sub-chunks per tile, softplus threshold
    ("v4_s8", [(1, 8, 19, 16, 2, ("z",)), (1, 6, 9, 3, 2, ("noD", "nosp", "nobias", "B3"))], 16),   # 8-step sub-chunks
    ("v4_l4", [(1, 16, 11, 16, 2, ("z",)), (1, 12, 6, 5, 1, ("noD", "nosp"))], 8),                     # 4 lanes per row
    ("v5", [(1, 8, 19, 16, 2, ("z",)), (1, 6, 9, 3, 2, ("noD", "nosp", "nobias", "B3"))], 16),      # v5: 8-step sub-chunks, uncapped
    ("v4_sp", [(1, 8, 13, 16, 2, ("z",)), (1, 4, 23, 16, 1, ("bigdelta",))], 16),                   # v4 with the short softplus
    # cooperative blocks (shared B/C tile, dB/dC summed over the block's warps): 20 rows = 5 warps of a 6-warp block (one
    # ghost warp), two tiles, the second partial; 2-warp blocks: a group over 2 blocks (3 warps + a ghost), 1 warp + a ghost
    ("v4_coop", [(1, 40, 19, 16, 2, ("z",))], 16),
    ("v4_coop2", [(1, 8, 13, 3, 2, ("noD", "nosp", "nobias", "B3")), (2, 24, 13, 16, 2, ("z", "nobias"))], 8),
])
def test_sim_v4_kernels_vs_reference(bwd, cases, tile):
    "The v4 backward variants (v3 forward before them) in the simulator against the float64 reference."
    _sim_kernels_ok(cases, "seq" if bwd != "v4" else "blk", tile=tile, rows=8, bwd=bwd)

def test_ptx_v4_kernels():
    for kw in (dict(lpr=8, sub=4), dict(lpr=8, sub=8), dict(lpr=4, sub=4), dict(lpr=8, sub=4, zgate=False)):
        lines = sc._ptx("bwd_v4", cc=(9, 0), **kw).splitlines()
        assert ".target sm_90" in "\n".join(lines[:40])
        assert sum(".f64" in l for l in lines) == 0, f"{kw}: fp64 instructions in PTX"
        assert any("ex2.approx" in l for l in lines) and sum("shfl.sync" in l for l in lines) >= 30, kw
        assert any("ld.shared.f32" in l for l in lines) and any("atom.global.add.f32" in l for l in lines), kw
        assert any("bar.warp.sync" in l for l in lines), kw                  # syncwarp around the per-warp tiles
        assert not any(".local" in l for l in lines), f"{kw}: local memory in PTX"
        assert not any("call" in l.split() for l in lines), f"{kw}: device functions not inlined"

def test_ptx_v4_coop_kernels():
    "The cooperative v4 builds: block barriers instead of warp ones, no fp64, no local memory, everything inlined."
    for kw in (dict(warps=6), dict(warps=2, zgate=False), dict(warps=6, zgate=False, map_layout=True)):
        ins = sc.ptx_instructions(sc._ptx("bwd_v4", cc=(9, 0), lpr=8, sub=4, coop=True, **kw))
        assert sum(l.startswith(("bar.sync", "barrier.sync")) for l in ins) == 3 and not any("bar.warp.sync" in l for l in ins), kw
        assert not any(".f64" in l or ".local" in l for l in ins) and not any("call" in l.split() for l in ins), kw
        assert any("atom.global.add.f32" in l for l in ins) and any("ex2.approx" in l for l in ins), kw

def test_sim_map_layout_coop():
    "The map layout with the cooperative backward (MSMAMBA_SCAN_BWD=v4_coop2): 10 channels = 3 warps in 2 two-warp blocks, one a ghost."
    code = "import json, msmamba_nb.scan_cuda as m\nprint('JSON' + json.dumps([m.BWD_VARIANT, m.sim_check_map(shape=(1, 3, 5, 1, 2, 10, 16))]))"
    p = subprocess.run([sys.executable, "-c", code], env=dict(ENV, MSMAMBA_SCAN_BWD="v4_coop2"), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    v, r = json.loads(p.stdout.split("JSON", 1)[1])
    assert v == "v4_coop2" and len(r) == 8 and max(r.values()) < 1e-5, (v, r)

def test_bwd_variants_ptxas():
    "Registers, spills and occupancy of the backward variants (ptxas through nvJitLink, no GPU)."
    rp = sc.bwd_variant_report(("v2", "v2_r128", "v4", "v4_nocap", "v4_l4"))
    for v in ("v4", "v4_nocap", "v4_l4"):                                     # the v4 kernels do not spill (no-z builds)
        assert rp[v]["spill_stores"] == 0 and rp[v]["spill_loads"] == 0 and rp[v]["stack_bytes"] == 0, (v, rp[v])
    assert rp["v4"]["registers"] <= 128
    assert rp["v2_r128"]["registers"] <= 128 and rp["v2"]["registers"] > 128
    assert rp["v4"]["warps_per_sm"] >= 2 * rp["v2"]["warps_per_sm"] and rp["v4"]["static_smem_bytes"] <= 48 * 1024
    assert rp["v4"]["warps"] == 232 * 4 * 6 and rp["v2"]["warps"] == 232 * 96 // 8             # stage 1: rows / rows per warp

def test_bwd_variant_knob():
    assert sc.BWD_VARIANT == os.environ.get("MSMAMBA_SCAN_BWD", "v4_nocap") and set(sc.BWD_VARIANTS) >= {"v2", "v2_r128", "v4"}
    with pytest.raises(ValueError): sc._bwd_variant("nope")
    for v in sc.BWD_VARIANTS:                 # every group row gets a warp lane; v4 warps never span two groups
        for Bt, Dch, G in [(232, 96, 4), (3, 20, 4), (1, 7, 1)]:
            blocks, thr = sc._bwd_launch_shape(v, Bt, Dch, G)
            lanes = sc.BWD_VARIANTS[v][1].get("lpr", 4)   # lanes per row: 4 (v2), 8 (v4) or 4 (v4_l4)
            assert thr % 32 == 0 and blocks * thr >= lanes * Bt * Dch, (v, Bt, Dch, G)
    code = "import msmamba_nb.scan_cuda as sc; print(sc.BWD_VARIANT, sc.scan_config()['blk_bwd'], sc.scan_config()['blk_bwd_maxreg'])"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, MSMAMBA_SCAN_BWD="v4", OMP_NUM_THREADS="1"))
    assert p.returncode == 0 and p.stdout.split() == ["v4", "v4", "128"], (p.stdout, p.stderr[-2000:])
    p = subprocess.run([sys.executable, "-c", "import msmamba_nb.scan_cuda"], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, MSMAMBA_SCAN_BWD="nope", OMP_NUM_THREADS="1"))
    assert p.returncode != 0 and "MSMAMBA_SCAN_BWD='nope': must be one of" in p.stderr   # a bad value names the variable

def test_bench_bwd_variants_dry_run():
    "The GPU benchmark script's CPU side: lists every variant with its ptxas registers."
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "scan_bwd_variants.py")
    p = subprocess.run([sys.executable, script, "--dry-run", "--variants", "v4,v2"], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.strip().splitlines()
    assert [l.split()[0] for l in lines] == ["v2", "v4"] and all("ptxas regs" in l and "regs None" not in l for l in lines), p.stdout

def test_v4_smem_formula_matches_loaded_kernels():
    "The v4 shared-memory size formula equals what the driver loaded on the H100 (committed benchmark)."
    rec = json.load(open(Path(__file__).parents[1]/"paper_figures"/"data"/"bench_scan_bwd_variants_v4.json"))
    n = 0
    for v, builds in rec["gpu_registers"].items():
        name, kw, _ = sc.BWD_VARIANTS[v]
        if name != "bwd_v4": continue
        want = 4 * kw["warps"] * sc._v4_smem_floats(rec["env"]["scan"]["blk_tile"], kw["lpr"], kw.get("sub"))
        assert all(b["shared_bytes"] == want for b in builds.values()), (v, builds, want); n += 1
    assert n == 4

def test_sim_custom_ops_opcheck_and_compile():
    "Under the simulator: opcheck of the CUDA scan's custom ops, and torch.compile(fullgraph) of a function around it equals eager."
    code = """import json, torch
import msmamba_nb.scan_cuda as m
from msmamba_nb.scan import random_scan_inputs
c = {k: None if v is None else torch.from_numpy(v).float() for k, v in random_scan_inputs(Bt=2, Dc=4, L=9, N=2, G=2, z=True).items()}
fop, bop = m.SelectiveScanCudaFn.ops
ins = [c[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
cfg = "chan," + m.BWD_VARIANT
out, *saved = fop(*ins, True, cfg)
w = torch.randn(out.shape, generator=torch.Generator().manual_seed(0))
for op, args in [(fop, (*ins, True, cfg)), (bop, (w, *ins, saved, True, cfg))]: torch.library.opcheck(op, args)
f = lambda c: (m.selective_scan_cuda(**c) * w).sum()
def grads(fn):
    cc = {k: None if v is None else v.clone().requires_grad_() for k, v in c.items()}
    loss = fn(cc); loss.backward()
    return loss.item(), [cc[k].grad for k in cc if cc[k] is not None]
l0, g0 = grads(f)
l1, g1 = grads(torch.compile(f, fullgraph=True))
print('JSON' + json.dumps(dict(dl=abs(l1 - l0), dg=max(float((a - b).abs().max()) for a, b in zip(g0, g1)), n=len(g0))))
"""
    r = _sim(code, timeout=600)
    assert r["n"] == 8 and r["dl"] < 1e-5 and r["dg"] < 1e-5, r

def test_ptx_unsigned_indices():
    "Indices are uint64 in the kernels' loops: Numba's negative-index wraparound (a sign shift per index) is left only in set-up code."
    import re
    for nm, kw, most in (("fwd_blk", {}, 32), ("bwd_v4", dict(lpr=8, sub=4, warps=2, zgate=False), 24)):   # 66 and 36 before (4adb40f)
        n = len(re.findall(r"shr\.s64\s+%rd\d+, %rd\d+, 63;", sc._ptx(nm, cc=(9, 0), **kw)))
        assert n <= most, f"{nm}: {n} sign shifts (negative-index wraparound) in the PTX, expected ≤ {most}"

def test_scan_sass_loop_parser():
    "benchmarks/scan_sass.py finds a loop (a backward branch) in an nvdisasm listing and counts its instruction mix."
    import importlib.util, pathlib
    spec = importlib.util.spec_from_file_location("scan_sass", pathlib.Path(__file__).parent.parent/"benchmarks"/"scan_sass.py")
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    listing = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;
.L_x_3:
        /*0010*/                   FMUL.FTZ R4, R5, R6 ;
        /*0020*/                   MUFU.EX2 R4, R4 ;
        /*0030*/                   LDS R7, [R8+UR4+0x104] ;
        /*0040*/                   IADD3 R8, R8, 0x4, RZ ;
        /*0050*/                   ISETP.GE.AND P0, PT, R8, R9, PT ;
        /*0060*/              @!P0 BRA `(.L_x_3) ;
        /*0070*/                   EXIT ;
"""
    (lp,) = m.loops(listing)
    assert (lp['label'], lp['instructions'], lp['mufu_ex2'], lp['lds'], lp['fmul'], lp['int_uniform_move'], lp['bra']) == \
        ('.L_x_3', 6, 1, 1, 1, 2, 1)
    assert m.loops(listing, min_ex2=2) == []
    (r,) = m.ptx_counts([("fwd_chan", {})])          # the --ptx mode: no nvdisasm needed
    assert r['kernel'] == 'fwd_chan' and r['instructions'] > 100 and r['ex2'] > 0 and r['shfl'] == 0

def test_ptx_first_call_in_a_fresh_process():
    "`_ptx` binds numba.cuda before it builds a kernel (kernels copy the module's globals when built)."
    import subprocess, sys
    code = "from msmamba_nb import scan_cuda as sc; print('.target sm_90' in sc._ptx('fwd_chan'))"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and p.stdout.strip() == "True", p.stderr[-2000:]

def test_ptx_v3_vec_forward():
    "The v3_vec forward reads B and C four steps at a time (128-bit shared loads); the v3 build has none."
    vec = sc._ptx("fwd_blk", cc=(9, 0), **sc.FWD_VARIANTS["v3_vec"]).splitlines()
    base = sc._ptx("fwd_blk", cc=(9, 0), **sc.FWD_VARIANTS["v3"]).splitlines()
    n = lambda lines, pat: sum(pat in l for l in lines)
    assert n(vec, "ld.shared.v4.f32") >= 8 and n(base, "ld.shared.v4.f32") == 0          # 4 states × (B, C) per 4 steps
    assert n(vec, ".f64") == 0 and not any(".local" in l for l in vec) and not any("call" in l.split() for l in vec)
    with pytest.raises(ValueError): sc._fwd_variant("nope")

def test_bench_fwd_variants_sim_smoke(tmp_path):
    "The forward-variant benchmark end to end in the simulator: variants pass the reference checks; v3_vec's out is v3's, bit for bit."
    script = Path(__file__).parents[1]/"benchmarks"/"scan_fwd_variants.py"
    p = subprocess.run([sys.executable, str(script), "--sim-smoke", "--variants", "v3,v3_vec,v3_sp", "--out", str(tmp_path)],
                       env=ENV, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    rec = json.load(open(tmp_path/"bench_scan_fwd_variants.json"))
    assert rec["variants"] == ["v3", "v3_vec", "v3_sp"] and all(s["check_pass"] for s in rec["summary"].values()), rec["summary"]
    assert rec["shapes"] and all(s["max_abs_diff_vs_base"]["v3_vec"] == 0.0 for s in rec["shapes"])   # same arithmetic
    assert all(0 < s["max_abs_diff_vs_base"]["v3_sp"] < 1e-5 for s in rec["shapes"])                 # another softplus formula

def test_softplus_fast_formula():
    "The kernels' _softplus with SP_FAST, run as Python in float32: within 5e-7 of log1p(exp(x)); with SP_FAST off, within 3e-7."
    import types
    f32 = np.float32
    m32 = types.SimpleNamespace(exp=lambda v: f32(np.exp(f32(v))), log=lambda v: f32(np.log(f32(v))), log1p=lambda v: f32(np.log1p(f32(v))))
    x = np.linspace(-40, 20, 20001, dtype=f32)
    ref = np.log1p(np.exp(x.astype(np.float64)))
    for fast, tol in ((True, 5e-7), (False, 3e-7)):
        sp = sc._with_consts(sc._softplus, SP_FAST=fast, float32=f32, math=m32)
        y = np.array([sp(v, True)[0] for v in x])
        assert y.dtype == f32 and np.max(np.abs(y - ref) / ref) < tol, (fast, np.max(np.abs(y - ref) / ref))
        g = np.array([sp(v, True)[1] for v in x[::50]])     # the derivative, sigmoid(x)
        np.testing.assert_allclose(g, 1 / (1 + np.exp(-x[::50].astype(np.float64))), rtol=2e-6)

def test_bench_variants_train_ab_cpu(tmp_path):
    "The training A/B of scan variants runs its loop on CPU (toy model: no scan) and refuses an unknown variant by name."
    script = Path(__file__).parents[1]/"benchmarks"/"scan_variants_train_ab.py"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, str(script), "--device", "cpu", "--variant", "toy", "--img-size", "32", "--batch-size", "4",
                        "--steps", "2", "--warmup", "1", "--rounds", "2", "--out", str(tmp_path), "--settings", "v3:v4_nocap,v3_vec_sp:v4_sp:map"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    rec = json.load(open(tmp_path/"bench_scan_variants_train_ab.json"))
    want = [(0, "v3", "v4_nocap", "batched"), (0, "v3_vec_sp", "v4_sp", "map"), (1, "v3", "v4_nocap", "batched"), (1, "v3_vec_sp", "v4_sp", "map")]
    assert [(r["round"], r["fwd"], r["bwd"], r["layout"]) for r in rec["rounds"]] == want
    assert sorted(rec["summary"]) == ["v3:v4_nocap", "v3_vec_sp:v4_sp:map"] and rec["complete"] and all(r["warmup_s"] > 0 for r in rec["rounds"])
    assert rec["summary"]["v3:v4_nocap"]["speedup_vs_base"] == 1.0 and all(len(r["step_ms"]) == 2 for r in rec["rounds"])
    p = subprocess.run([sys.executable, str(script), "--device", "cpu", "--settings", "v3:nope"], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode != 0 and "got 'nope'" in p.stderr
    p = subprocess.run([sys.executable, str(script), "--device", "cpu", "--settings", "v3:v4_nocap:diagonal"], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode != 0 and "layout must be 'batched' or 'map', got 'diagonal'" in p.stderr

def test_sim_map_layout_vs_reference():
    "The map-layout kernels (v3 forward, v4 backward reading the channels-last map through the step table) in the simulator equal cross-scan → scan → cross-merge in float64: output and all gradients."
    r = sc.run_sim_check(600, fn="sim_check_map")
    assert sorted(r) == sorted(["out", "du", "ddelta", "dA", "dB", "dC", "dD", "ddelta_bias"]) and max(r.values()) < 1e-5, r
    r = sc.run_sim_check(600, fn="sim_check_map", shape=(1, 4, 4, 1, 2, 10, 16))  # K = 2, N = 16, L = 16: two full tiles; 10 channels:
    assert max(r.values()) < 1e-5, r                                                # two forward blocks of 5 rows, the last backward warp half idle

def test_map_layout_names_bad_shapes():
    "selective_scan_map_cuda checks every shape against delta's before anything else, and names the tensor."
    Bb, H, W, GC, K, Dk, N = 2, 3, 5, 2, 4, 4, 3
    a = dict(u=torch.zeros(Bb, H, W, GC, Dk), delta=torch.zeros(Bb, H, W, GC, K, Dk), A=torch.zeros(K * Dk, N),
             B=torch.zeros(Bb, H, W, GC, K, N), C=torch.zeros(Bb, H, W, GC, K, N))
    big = torch.zeros(Bb, H, W, GC, K, 32)
    for bad, msg in ((dict(u=torch.zeros(Bb, H, W, GC, Dk + 1)), "u has shape (2, 3, 5, 2, 5), expected (2, 3, 5, 2, 4)"),
                     (dict(B=torch.zeros(Bb, H, W, GC, K, N + 1)), "B has shape (2, 3, 5, 2, 4, 4), expected (2, 3, 5, 2, 4, 3)"),
                     (dict(delta=torch.zeros(Bb, H * W, GC, K, Dk)), "delta must be (B, H, W, GC, K, Dk)"),
                     (dict(A=torch.zeros(K * Dk, 32), B=big, C=big), "d_state N=32 > 16")):
        with pytest.raises(ValueError, match=re.escape(msg)): sc.selective_scan_map_cuda(**dict(a, **bad))
    with pytest.raises(ValueError, match="needs CUDA tensors"): sc.selective_scan_map_cuda(**a)

def test_ptx_map_layout_kernels():
    "The map-layout builds compile for sm_90 without fp64 or local memory and read the int32 step table; the sequence-layout builds read no table."
    for nm, kw in (("fwd_blk", {}), ("bwd_v4", dict(lpr=8, sub=4, warps=2, zgate=False))):
        seq, mp = (sc.ptx_instructions(sc._ptx(nm, cc=(9, 0), map_layout=x, **kw)) for x in (False, True))
        assert not any(".f64" in l or ".local" in l for l in mp), nm
        assert sum(l.startswith("ld.global.s32") for l in mp) >= 4 and not any(l.startswith("ld.global.s32") for l in seq), nm
    rp = sc.ptxas_report(("fwd_blk", "v4_nocap"), map_layout=True)                     # assembled for sm_90: no spills
    assert all(r["spill_stores"] == 0 and r["registers"] <= 168 for r in rp.values()), rp

def test_bench_ss2d_map_layout_sim_smoke(tmp_path):
    "The map-layout benchmark end to end in the simulator: the map core equals the batched core, and both kernel layouts store the same states bit for bit."
    script = Path(__file__).parents[1]/"benchmarks"/"ss2d_map_layout.py"
    p = subprocess.run([sys.executable, str(script), "--sim-smoke", "--out", str(tmp_path)], env=ENV, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    rec = json.load(open(tmp_path/"bench_ss2d_map_layout.json"))
    (st,) = rec["stages"]
    assert st["max_rel_err"] < 1e-5 and st["kernels_ms"]["states_max_abs_diff"] == 0.0, st
    assert sorted(rec["ratio_map_over_batched"]) == ["eager_ms:fwd", "eager_ms:fwdbwd", "kernels:bwd", "kernels:fwd"]

def test_sim_map_op_opcheck_and_compile():
    "Under the simulator: opcheck of the map layout's custom ops, and a torch.compile(fullgraph) SS2D in the map layout equals eager (loss, every gradient)."
    code = """import json, torch
import msmamba_nb.scan_cuda as m
m._install_sim_shuffles()
m.BLK_TILE = m.SEQ_TILE = m.BLK_ROWS = 8
g = torch.Generator().manual_seed(0)
r = lambda *s: torch.randn(*s, generator=g)
Bb, H, W, GC, K, Dk, N = 1, 2, 5, 2, 4, 2, 3
ins = [r(Bb, H, W, GC, Dk), 0.5 * r(Bb, H, W, GC, K, Dk), -torch.rand(K * Dk, N, generator=g) - 0.5,
       r(Bb, H, W, GC, K, N), r(Bb, H, W, GC, K, N), r(K * Dk), None, 0.3 * r(K * Dk)]
fop, bop = m.SelectiveScanMapFn.ops
cfg = "blk," + m.BWD_VARIANT
out, *saved = fop(*ins, True, cfg)
w = r(*out.shape)
for op, args in [(fop, (*ins, True, cfg)), (bop, (w, *ins, saved, True, cfg))]: torch.library.opcheck(op, args)
from msmamba_nb.ss2d import SS2D
torch.manual_seed(0)
s = SS2D(2, d_state=3, scan_layout="map", scan_backend="cuda")
x = r(Bb, H, W, GC, 2)
def grads(fn):
    s.zero_grad(); xx = x.clone().requires_grad_()
    loss = (fn(xx) * 1.5).sum(); loss.backward()
    return loss.item(), [xx.grad] + [p.grad.clone() for p in s.parameters() if p.grad is not None]
l0, g0 = grads(s)
l1, g1 = grads(torch.compile(s, fullgraph=True))
print('JSON' + json.dumps(dict(dl=abs(l1 - l0), dg=max(float((a - b).abs().max()) for a, b in zip(g0, g1)), n=len(g0))))
"""
    r = _sim(code, timeout=900)
    assert r["n"] == 12 and r["dl"] < 1e-5 and r["dg"] < 1e-5, r
