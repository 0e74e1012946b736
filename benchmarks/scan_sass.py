"""Static SASS of the scan kernels, loop by loop: what each pass over the sequence costs in instructions (no GPU needed).

The kernels are assembled for sm_90 by `scan_cuda.assemble` (Numba → PTX → nvJitLink → cubin, as `ptxas_report`) and disassembled
with nvdisasm; every loop (a backward branch) that contains exp2 instructions is reported with its instruction mix:
MUFU.EX2, shared/global loads and stores, shuffles, FP32 ops, and integer/uniform/move instructions (index arithmetic).
Nsight Compute showed both kernels issue-bound with the integer pipe the busiest (notebook 02, section 12), so these
counts are the first thing a kernel change should move. Static counts, not timings: a loop's count includes paths not
taken on every iteration (e.g. the tail of a row).

    pip install nvidia-cuda-nvdisasm      # or pass --nvdisasm PATH (the CUDA toolkit's nvdisasm)
    python3 benchmarks/scan_sass.py --out paper_figures/data/scan_sass_<commit>.json
    python3 benchmarks/scan_sass.py --ptx  # PTX instruction counts of every kernel build (no nvdisasm needed):
                                           # run at two commits to see whether a refactor changed any kernel
"""
import os, re, sys, json, shutil, argparse, tempfile, subprocess, collections, datetime
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # the repo's msmamba_nb
import msmamba_nb.scan_cuda as sc

INT_OPS = {'IADD3', 'IMAD', 'LOP3', 'SHF', 'LEA', 'ISETP', 'SEL', 'MOV', 'IABS', 'VIADD', 'PLOP3', 'R2UR', 'S2UR', 'UMOV',
           'UIADD3', 'ULEA', 'ULOP3', 'USHF', 'UIMAD', 'HFMA2', 'I2FP', 'IMNMX', 'R2P', 'P2R', 'IADD', 'SHL', 'SHR'}

PTX_BUILDS = [("fwd_warp", {}), ("bwd_warp", {}), ("fwd_chan", {}), ("bwd_chan", {}), ("fwd_seq", {}), ("bwd_seq", {}),
              ("fwd_blk", {}), ("bwd_v4", dict(lpr=8, sub=4, warps=2, zgate=False)), ("bwd_v4", dict(lpr=8, sub=4, warps=2, zgate=True))]

def ptx_counts(builds=PTX_BUILDS)->list:
    "Per kernel build: PTX instructions, ex2, shuffles and divisions/reciprocals (sm_90)."
    out = []
    for nm, kw in builds:
        ins = sc.ptx_instructions(sc._ptx(nm, cc=(9, 0), **kw))
        out.append(dict(kernel=nm, args=kw, instructions=len(ins), ex2=sum(i.startswith('ex2') for i in ins),
                        shfl=sum(i.startswith('shfl') for i in ins), div_rcp=sum(i.startswith(('div', 'rcp')) for i in ins)))
    return out

def find_nvdisasm(path=None)->str:
    "nvdisasm from --nvdisasm, the PATH, or the nvidia-cuda-nvdisasm wheel."
    if path: return path
    if shutil.which('nvdisasm'): return shutil.which('nvdisasm')
    try:
        import nvidia
        for d in nvidia.__path__:
            for root, _, files in os.walk(d):
                if 'nvdisasm' in files: return os.path.join(root, 'nvdisasm')
    except ImportError: pass
    sys.exit("nvdisasm not found: pip install nvidia-cuda-nvdisasm, or pass --nvdisasm PATH")

def sass(name:str, nvdisasm:str, **kw)->str:
    "SASS of a kernel (name or BWD_VARIANTS key; `kw`: more factory arguments, e.g. map_layout=True)."
    with tempfile.NamedTemporaryFile(suffix='.cubin') as f:
        f.write(sc.assemble(name, **kw)[0]); f.flush()
        return subprocess.run([nvdisasm, '-c', f.name], capture_output=True, text=True, check=True).stdout

def loops(text:str, min_ex2:int=1)->list:
    "Loops (label … backward branch to it) with ≥ min_ex2 MUFU.EX2: their instruction mix."
    ins, labels = [], {}
    for l in text.splitlines():
        if m := re.match(r'^\s*(\.L_x_\d+):', l): labels[m.group(1)] = len(ins); continue
        if m := re.search(r'/\*[0-9a-f]{4,}\*/\s+(.*?)\s*;', l): ins.append(m.group(1))
    out = []
    for k, i in enumerate(ins):
        m = re.search(r'BRA `\((\.L_x_\d+)\)', i)
        if not (m and m.group(1) in labels and labels[m.group(1)] <= k): continue
        body = ins[labels[m.group(1)]:k + 1]
        ops = collections.Counter(re.sub(r'^@!?U?P\w+\s+', '', b).split()[0].split('.')[0] for b in body)
        ex2 = sum('MUFU.EX2' in b for b in body)
        if ex2 < min_ex2: continue
        out.append(dict(label=m.group(1), instructions=len(body), mufu_ex2=ex2, lds=ops['LDS'], sts=ops['STS'], ldg=ops['LDG'],
                        stg=ops['STG'], shfl=ops['SHFL'], ffma=ops['FFMA'], fmul=ops['FMUL'], fadd=ops['FADD'],
                        int_uniform_move=sum(v for o, v in ops.items() if o in INT_OPS), bra=ops['BRA']))
    return out

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--kernels', default=f'fwd_blk,{sc.BWD_VARIANT}', help='kernel names or BWD_VARIANTS keys')
    p.add_argument('--nvdisasm', default=None)
    p.add_argument('--out', default=None, help='JSON file to write')
    p.add_argument('--ptx', action='store_true', help='print PTX instruction counts of every kernel build and stop')
    p.add_argument('--map-layout', action='store_true', help='also the map-layout build of each kernel (fwd_blk, bwd_v4 variants), as KERNEL+map')
    a = p.parse_args(argv)
    if a.ptx:
        rows = ptx_counts()
        for r in rows: print(f"{r['kernel']:9s} {str(r['args']):52s} {r['instructions']:5d} instr, ex2 {r['ex2']:3d}, shfl {r['shfl']:3d}, div/rcp {r['div_rcp']:3d}")
        return rows
    nvd = find_nvdisasm(a.nvdisasm)
    ver = subprocess.run([nvd, '--version'], capture_output=True, text=True).stdout.strip().splitlines()[-1]
    commit = os.environ.get('MSMAMBA_GIT_COMMIT') or subprocess.run(['git', 'rev-parse', 'HEAD'], capture_output=True, text=True,
                                                                    cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    rec = dict(tool='benchmarks/scan_sass.py', commit=commit, nvdisasm=ver, arch='sm_90',
               date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'), kernels={})
    builds = [(k, k, {}) for k in a.kernels.split(',')]
    if a.map_layout: builds += [(k + '+map', k, dict(map_layout=True)) for k in a.kernels.split(',')]
    for k, name, kw in builds:
        rec['kernels'][k] = loops(sass(name, nvd, **kw))
        for lp in rec['kernels'][k]:
            print(f"{k:10s} loop {lp['label']:8s} {lp['instructions']:5d} instr: EX2 {lp['mufu_ex2']:3d}, LDS {lp['lds']:3d}, "
                  f"LDG {lp['ldg']:3d}, SHFL {lp['shfl']:3d}, FP32 {lp['ffma'] + lp['fmul'] + lp['fadd']:4d}, "
                  f"integer/uniform/move {lp['int_uniform_move']:4d}, BRA {lp['bra']}")
    if a.out:
        with open(a.out, 'w') as f: json.dump(rec, f, indent=1)
    return rec

if __name__ == '__main__': main()
