"""Did two real trainings sharing one GPU train more images per second in total than one alone? Read from their logs.

`concurrent_train.py` asks the same question with synthetic steps; this script answers it from real runs' per-epoch
`log.jsonl` (images/s of each epoch's training part), given which epochs ran while the other run trained ("shared")
and which ran with the GPU to themselves ("alone"), as the device calls' logs show. Each range must lie in one sitting
of its run (`env.json`: the first start and each resume, `from_epoch`), whose GPU and commit go into the record beside
the medians, so the choice can be checked against the logs. All ranges must have run on the same GPU model.
Example (2026-12-06, one H100: seed 0's epochs 80-88 and seed 1's epochs 3-10 ran together, seed 1's 12-35 alone):
  python3 benchmarks/shared_gpu_from_logs.py --shared paper_figures/data/runs/SARS-t-stratified-s0-e200:80-88 \
     --shared paper_figures/data/runs/SARS-t-stratified-s1-e200:3-10 \
     --alone paper_figures/data/runs/SARS-t-stratified-s1-e200:12-35 --out paper_figures/data/shared_gpu_h100_610ed5a.json
"""
import argparse, json, statistics, sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from msmamba_nb.figures import read_run

def sitting_of(env:dict, epoch:int) -> dict:
    "The start or resume of a run (from its env.json) in which `epoch` was trained: the last one that began before it."
    sittings = [dict(env, from_epoch=0)] + [dict(s, from_epoch=s.get('from_epoch') or 0) for s in env.get('resumes') or []]
    return [s for s in sorted(sittings, key=lambda s: s['from_epoch']) if s['from_epoch'] < epoch][-1]

def summary(spec:str) -> dict:
    "'RUN_DIR:FIRST-LAST' → median, min and max training images/s of those epochs, with the run's name, GPU and commit."
    run, _, rng = spec.rpartition(':')
    try: a, b = (int(x) for x in rng.split('-'))
    except ValueError: raise SystemExit(f"{spec!r}: expected RUN_DIR:FIRST-LAST, e.g. runs/x:3-10") from None
    if not run or not 1 <= a <= b: raise SystemExit(f"{spec!r}: expected RUN_DIR:FIRST-LAST with 1 ≤ FIRST ≤ LAST")
    r = read_run(run)
    log = {x['epoch']: x for x in r['log']}
    missing = [e for e in range(a, b + 1) if e not in log]
    if missing: raise SystemExit(f"{spec!r}: {Path(run)/'log.jsonl'} lacks epochs {missing[:5]}")
    s, t = sitting_of(r['env'], a), sitting_of(r['env'], b)
    if s['from_epoch'] != t['from_epoch']:
        raise SystemExit(f"{spec!r}: the range spans a resume (after epoch {t['from_epoch']}); give one sitting's epochs")
    gpu = (s.get('hardware', {}).get('gpus') or [{}])[0].get('name')
    if not gpu: raise SystemExit(f"{spec!r}: {Path(run)/'env.json'} names no GPU for the sitting of these epochs")
    ips = [log[e]['images_per_s'] for e in range(a, b + 1)]
    return dict(run=Path(r['config'].get('run_dir') or run).name, epochs=[a, b], median_img_s=round(statistics.median(ips), 1),
                min_img_s=round(min(ips), 1), max_img_s=round(max(ips), 1),
                gpu=gpu, commit=s.get('git', {}).get('commit'))

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--shared', action='append', required=True, help='RUN_DIR:FIRST-LAST, epochs that ran while the other run(s) trained; once per run')
    p.add_argument('--alone', required=True, help='RUN_DIR:FIRST-LAST, epochs of one run with the GPU to itself')
    p.add_argument('--out', help='JSON file to write')
    a = p.parse_args(argv)
    shared, alone = [summary(s) for s in a.shared], summary(a.alone)
    if len(shared) < 2 or len({s['run'] for s in shared}) != len(shared):
        raise SystemExit(f"--shared needs one range from each of two or more different runs, got {a.shared}")
    gpus = {s['gpu'] for s in shared + [alone]}
    if len(gpus) != 1: raise SystemExit(f"the epochs ran on different GPUs ({sorted(map(str, gpus))}): not comparable")
    tot = sum(s['median_img_s'] for s in shared)
    rec = dict(what='training images/s of real runs sharing one GPU vs one alone, from their per-epoch logs (median per range)',
               gpu=gpus.pop(), shared=shared, alone=alone, shared_total_img_s=round(tot, 1),
               ratio_shared_total_to_alone=round(tot / alone['median_img_s'], 3), command=' '.join(sys.argv))
    print(f"{len(shared)} runs sharing one {rec['gpu']}: {tot:.1f} img/s in total "
          f"({', '.join(str(s['median_img_s']) for s in shared)}); one alone: {alone['median_img_s']} img/s; "
          f"ratio {rec['ratio_shared_total_to_alone']}")
    if a.out: Path(a.out).write_text(json.dumps(rec, indent=1) + '\n')
    return 0

if __name__ == '__main__': sys.exit(main())
