"""Do several trainings sharing one GPU train more images per second in total than one alone? (P = 1, 2, 3 processes.)

Each of P processes builds the model and Adam as `msmamba bench-train` does (random batch, cross-entropy), warms up
(compiling), waits at a file barrier until all P are warm, then trains for the same --seconds of wall time with no
per-step synchronisation (as a real epoch runs) and reports its steps; the P windows overlap by construction. The
total images/s over P is what several runs of Table I on one GPU would get (gpu_train_many.sh runs them so).
GPU: PYTHONPATH=. python3 benchmarks/concurrent_train.py --out $OUT/concurrent.json --procs 1,2,3 --config fp32+cl+compile
CPU smoke test: python3 benchmarks/concurrent_train.py --device cpu --variant toy --config fp32 --img-size 32 --batch 4 --seconds 1 --procs 1,2
"""
import argparse, json, subprocess, sys, tempfile, time
from pathlib import Path

def child(a):
    "One training process: warm up, meet the others at the barrier, train --seconds, write its count."
    import torch
    from msmamba_nb.train import bench_setup, bench_config
    c = bench_config(a.config)
    dev = torch.device(a.device)
    model, fwd, opt, fmt, step = bench_setup(a.variant, 2, None, dev, a.batch, a.img_size, c['precision'] == 'bf16',
                                             c['channels_last'], c['compile'], c['compile_mode'], seed=a.rank)
    t0 = time.perf_counter()
    for _ in range(a.warmup): step()
    if dev.type == 'cuda': torch.cuda.synchronize(dev)
    warm = time.perf_counter() - t0
    bar = Path(a.barrier); (bar/f'ready_{a.rank}').touch()
    deadline = time.time() + a.barrier_timeout
    while len(list(bar.glob('ready_*'))) < int(a.procs):
        if time.time() > deadline: raise SystemExit(f'barrier {bar}: only {len(list(bar.glob("ready_*")))} of {a.procs} ready')
        time.sleep(0.05)
    n, w0, t0 = 0, time.time(), time.perf_counter()
    while time.perf_counter() - t0 < a.seconds:
        step(); n += 1
    if dev.type == 'cuda': torch.cuda.synchronize(dev)
    dt = time.perf_counter() - t0
    res = dict(rank=a.rank, steps=n, seconds=round(dt, 3), img_s=a.batch * n / dt, warmup_s=round(warm, 1),
               window_unix_s=[round(w0, 3), round(w0 + dt, 3)])
    if dev.type == 'cuda': res['peak_mem_GiB'] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 3)
    Path(a.result).write_text(json.dumps(res))

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--procs', default='1,2,3', help='comma list of process counts, measured one after the other')
    p.add_argument('--config', default='fp32+cl+compile', help="a bench-train config (precision[+cl][+compile]...)")
    p.add_argument('--variant', default='t'); p.add_argument('--batch', type=int, default=58)
    p.add_argument('--img-size', type=int, default=224); p.add_argument('--warmup', type=int, default=8)
    p.add_argument('--seconds', type=float, default=30.0, help='timed wall-clock window per process')
    p.add_argument('--device', default='cuda'); p.add_argument('--barrier-timeout', type=float, default=400)
    p.add_argument('--out', help='JSON file to write (default: print only)')
    p.add_argument('--rank', type=int, help=argparse.SUPPRESS); p.add_argument('--barrier', help=argparse.SUPPRESS)
    p.add_argument('--result', help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.rank is not None: return child(a)
    from msmamba_nb.train import bench_config, environment_info
    bench_config(a.config)                                    # a bad config fails here, before any process starts
    try: procs = [int(x) for x in a.procs.split(',')]
    except ValueError: p.error(f'--procs must be a comma list of whole numbers, got {a.procs!r}')
    if any(k < 1 for k in procs): p.error(f'--procs must be ≥ 1, got {a.procs!r}')
    rows, env = [], environment_info()                      # commit, GPUs, versions: once, for every write
    for k in procs:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, __file__, '--config', a.config, '--variant', a.variant, '--batch', str(a.batch),
                   '--img-size', str(a.img_size), '--warmup', str(a.warmup), '--seconds', str(a.seconds), '--device', a.device,
                   '--barrier-timeout', str(a.barrier_timeout), '--procs', str(k), '--barrier', tmp]
            ps = [subprocess.Popen(cmd + ['--rank', str(r), '--result', f'{tmp}/r{r}.json']) for r in range(k)]
            while any(q.poll() is None for q in ps):        # one failing (out of memory, say): stop the others at once
                if any(q.returncode for q in ps if q.returncode is not None):
                    for q in ps: q.poll() is None and q.kill()
                time.sleep(0.2)
            rcs = [q.wait() for q in ps]
            if any(rcs):
                rows.append(dict(procs=k, failed=f'exit codes {rcs}')); write(a, env, rows)
                print(f'{k} process(es): failed (exit codes {rcs}); rows so far in {a.out or "(no --out)"}', flush=True); return 1
            per = [json.loads(Path(f'{tmp}/r{r}.json').read_text()) for r in range(k)]
        tot = sum(r['img_s'] for r in per)
        overlap = min(r['window_unix_s'][1] for r in per) - max(r['window_unix_s'][0] for r in per)
        rows.append(dict(procs=k, total_img_s=tot, overlap_s=round(overlap, 3), per_process=per)); write(a, env, rows)
        each = ', '.join('%.1f' % r['img_s'] for r in per)
        print(f'{k} process(es): {tot:7.1f} img/s in total ({each}), {tot / rows[0]["total_img_s"]:.2f}× the first row', flush=True)
    return 0

def write(a, env, rows):
    "Write the record so far to --out (after every row, so a failure later keeps the rows measured)."
    if not a.out: return
    rec = dict(tool='benchmarks/concurrent_train.py', config=a.config, variant=a.variant, batch=a.batch, img_size=a.img_size,
               seconds=a.seconds, warmup=a.warmup, device=a.device, env=env,
               note='random input; each process trains the same wall-time window after a file barrier; no per-step sync; '
                    'overlap_s: the time all windows of a row shared',
               rows=rows)
    Path(a.out).write_text(json.dumps(rec, indent=1))

if __name__ == '__main__': sys.exit(main())
