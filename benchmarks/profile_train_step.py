"""PyTorch-profiler table of one training step of Microscopic-Mamba (random input, Adam, cross-entropy), GPU.

The step is bench-train's (`msmamba_nb.train.bench_setup`). Times `--steps` steps after `--warmup` (compiling happens
there), then profiles 3 more and writes the table sorted by CUDA time, headed by the configuration and the measured ms/step. The committed profile_train_step_*.txt files in
paper_figures/data came from earlier forms of this script (compiled fp32, batch 58).

    python3 benchmarks/profile_train_step.py --out paper_figures/data/profile_train_step_h100_bf16_compiled.txt --precision bf16
    python3 benchmarks/profile_train_step.py --out /dev/null --device cpu --eager --batch 2 --img-size 32 --warmup 1 --steps 1   # smoke test
"""
import os, sys, time, argparse
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # the repo's msmamba_nb
import torch
from torch.profiler import profile, ProfilerActivity
from msmamba_nb.train import bench_setup

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', required=True, help='text file for the table')
    p.add_argument('--variant', default='t')
    p.add_argument('--precision', choices=('fp32', 'bf16'), default='fp32')
    p.add_argument('--channels-last', action='store_true')
    p.add_argument('--eager', action='store_true', help='no torch.compile')
    p.add_argument('--batch', type=int, default=58)
    p.add_argument('--img-size', type=int, default=224)
    p.add_argument('--device', default='cuda', help='cuda (default) or cpu (smoke test: CPU ops only in the table)')
    p.add_argument('--warmup', type=int, default=5)
    p.add_argument('--steps', type=int, default=10)
    p.add_argument('--rows', type=int, default=45, help='table rows')
    a = p.parse_args(argv)
    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if dev.type == 'cuda' else (lambda: None)
    *_, step = bench_setup(a.variant, 2, None, dev, a.batch, a.img_size, a.precision == 'bf16', a.channels_last, not a.eager)
    for _ in range(a.warmup): step()
    sync(); t0 = time.perf_counter()
    for _ in range(a.steps): step()
    sync(); ms = 1e3 * (time.perf_counter() - t0) / a.steps
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == 'cuda' else [])
    with profile(activities=acts) as prof:
        for _ in range(3): step()
        sync()
    table = prof.key_averages().table(sort_by="self_cuda_time_total" if dev.type == 'cuda' else "self_cpu_time_total",
                                      row_limit=a.rows, max_name_column_width=90)
    head = (f"{a.variant}, batch {a.batch}, {a.img_size}², {a.precision}, channels_last={a.channels_last}, "
            f"{'eager' if a.eager else 'compiled'}, {torch.cuda.get_device_name() if dev.type == 'cuda' else 'cpu'}, torch {torch.__version__}, "
            f"commit {os.environ.get('MSMAMBA_GIT_COMMIT', '?')}: {ms:.1f} ms/step ({a.batch * 1e3 / ms:.0f} img/s); 3 steps profiled\n")
    with open(a.out, 'w') as fh: fh.write(head + table)
    print(head + table[-600:])

if __name__ == '__main__': main()
