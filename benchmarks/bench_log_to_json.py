"""Rebuild a `msmamba bench-train` JSON from its printed log, for runs cut short before the JSON existed (the
old bench wrote it only at the end; it now writes after every config). Numbers come from the log lines only.

    python benchmarks/bench_log_to_json.py LOG --commit SHA --gpu NAME --torch VER --note TEXT --out OUT.json
"""
import argparse, json, re, sys
from pathlib import Path
from msmamba_nb.train import bench_config

LINE = re.compile(r"^\s*(?P<config>[\w+]+): train (?P<img>[\d.]+) img/s \((?P<ms>[\d.]+) ms/step\), peak (?P<mem>[\d.]+) GiB; "
                  r"infer (?P<infer>.*)$")

def parse(text:str)->list:
    "Result rows (config, train img/s, ms/step, peak GiB, inference img/s per batch) of a bench-train log."
    rows = []
    for line in text.splitlines():
        m = LINE.match(line)
        if not m: continue
        infer = {k: float(v) for k, v in re.findall(r"b(\d+): ([\d.]+)", m['infer'])}
        rows.append(dict(bench_config(m['config']), train_img_s=float(m['img']), train_step_ms_median=float(m['ms']),
                         peak_mem_GiB=float(m['mem']), infer_img_s=infer))
    return rows

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('log'); p.add_argument('--commit', required=True); p.add_argument('--gpu', required=True)
    p.add_argument('--torch', required=True); p.add_argument('--note', default=''); p.add_argument('--out', required=True)
    p.add_argument('--batch', type=int, default=58); p.add_argument('--steps', type=int, default=20)
    a = p.parse_args()
    rows = parse(Path(a.log).read_text())
    if not rows: sys.exit(f'{a.log}: no bench-train result lines found')
    for r in rows: r.update(batch=a.batch, img_size=224, steps=a.steps)
    out = dict(tool='msmamba bench-train (rebuilt from its log)', variant='t', num_classes=2, device='cuda', tf32=False,
               env=dict(gpu=a.gpu, torch=a.torch, git_commit=a.commit), source_log=str(a.log), note=a.note, results=rows)
    Path(a.out).write_text(json.dumps(out, indent=1) + '\n')
    print(f'{a.out}: {len(rows)} configs')
