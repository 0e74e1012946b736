"Tests of msmamba_nb.figures: Table I and every figure from synthetic run directories (CPU, seconds)."
import csv, json
from pathlib import Path
import pytest
from msmamba_nb import figures as F
from msmamba_nb.train import load_predictions

SIZES = {v: dict(params_m=p, gmacs=g, num_classes=2, source='test') for v, p, g in (('t', 3.55, .64), ('s', 4.2, .75), ('b', 8.38, 1.5))}


@pytest.fixture(scope='module')
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp('res')/'data'
    F.write_synthetic_results(root)
    (root/'model_size.json').write_text(json.dumps({v: dict(params=int(d['params_m']*1e6), gmacs=d['gmacs'], num_classes=2) for v, d in SIZES.items()}))
    (root/'bench_scan.json').write_text(json.dumps({'device': 'cpu', 'results': [{'backend': 'torch', 'ms': 9.0}, {'backend': 'numba', 'ms': 2.0}]}))
    return root


def test_paper_asset_matches_reference():
    p = F.paper_results()
    assert len(p['table1']) == 32
    t = F.paper_row(p, 't')
    assert (t['results']['SARS']['OA'], t['results']['SARS']['AUC'], t['gmacs'], t['params_m']) == (97.31, 99.6, 0.64, 4.32)


def test_find_runs_reads_schema(results):
    runs = F.find_runs(results)
    assert len(runs) == 5 and all(r['synthetic'] and r['dataset'] == 'SARS' for r in runs)
    r = next(r for r in runs if r['name'].endswith('t_sars_default_seed0'))
    probs, labels, files = load_predictions(r['predictions'])
    assert r['OA'] == pytest.approx(100*(probs.argmax(1) == labels).mean())   # fraction in metrics.json -> percent
    assert len(r['log']) == 6 and r['log'][0]['epoch'] == 0 and r['n_test'] == len(files)


def test_table1_rows(results):
    rows = F.table1(F.find_runs(results), sizes=SIZES)
    paper = [r for r in rows if r['source'] == 'paper']
    ours = [r for r in rows if r['source'] == 'measured']
    assert len(paper) == 32 and [r['method'] for r in paper] == [r['method'] for r in F.paper_results()['table1']]
    assert len(ours) == 4 and all(r['group'] == 'Ours' for r in ours)
    t = ours[0]
    assert t['method'] == 'SYNTHETIC Ms-Mamba-t (ours, measured)' and t['SARS_OA'].endswith('(n=3)') and '±' in t['SARS_OA']
    # the mean in the cell is the mean of the three seeds' OA
    oas = [r['OA'] for r in F.find_runs(results) if r['variant'] == 't' and r['split'] == 'default']
    assert t['SARS_OA'].startswith(f"{sum(oas)/3:.2f}")
    for r in ours:   # unrun datasets say why; never blank, never a paper number
        for d in ('RPE', 'MHIST', 'TissueMNIST', 'MedFM_Colon'):
            assert r[f'{d}_OA'] == r[f'{d}_AUC'] == F.NOT_OBTAINABLE
        assert r['params_m'].endswith('(K=2)')
    b = ours[-1]
    assert b['SARS_OA'] == F.NOT_RUN_YET and 'not trained' in b['method']
    # a single run's row carries its OA's test-sampling interval; a mean over seeds does not (its ± says more)
    s_run = next(r for r in F.find_runs(results) if r['variant'] == 's')
    lo, hi = F.wilson_interval(s_run['OA']/100, s_run['n_test'])
    assert f"SARS OA 95 % Wilson interval {100*lo:.2f}–{100*hi:.2f} (test-image sampling only, seed spread not included; n_test={s_run['n_test']})" in next(r for r in ours if 'Ms-Mamba-s' in r['method'])['note']
    assert lo < s_run['OA']/100 < hi and 'Wilson' not in t['note'] and 'Wilson' not in b['note']
    # our rows come right after the paper's row of the same variant
    names = [r['method'] for r in rows]
    assert names.index('SYNTHETIC Ms-Mamba-t (ours, measured)') == names.index('Ms-Mamba-t (MambaMIC-t)') + 1


def test_make_all_writes_everything(results, tmp_path):
    files = F.make_all(results, tmp_path, verbose=False)
    names = {p.name for p in files}
    assert {'table1.md', 'table1.csv', 'table1.png', 'radar_t.png', 'scatter_sars.png', 'bench_scan_summary.png'} <= names
    assert sum(n.startswith('curves_') for n in names) == 5
    assert sum(n.startswith('confusion_roc_') for n in names) == 4
    assert all(p.exists() and p.stat().st_size > (1000 if p.suffix == '.png' else 0) for p in files)
    assert {'seeds_SARS-t-default.png', 'seed_errors_SARS-t-default.json', 'seed_errors_SARS-t-default.png'} <= names
    with open(tmp_path/'table1.csv') as f: rows = list(csv.DictReader(f))
    assert len(rows) == 32 + 4 and sum(r['source'] == 'paper' for r in rows) == 32
    md = (tmp_path/'table1.md').read_text()
    assert md.count(F.NOT_OBTAINABLE) >= 8*4 and 'SYNTHETIC TEST DATA, NOT A RESULT' in md
    assert (tmp_path/'table1.png').read_bytes()[:4] == b'\x89PNG'


def test_make_all_without_results(tmp_path, capsys):
    files = F.make_all(tmp_path/'absent', tmp_path/'out')
    out = capsys.readouterr().out
    assert 'skipped: no runs found under' in out and 'skipped: no bench_*.json' in out
    assert {p.name for p in files} == {'table1.md', 'table1.csv', 'table1.png', 'radar_t.png', 'scatter_sars.png'}
    md = (tmp_path/'out'/'table1.md').read_text()
    ours = [l for l in md.splitlines() if l.startswith('| measured | Ours |') and '(ours' in l]
    assert 'SYNTHETIC' not in md and len(ours) == 3 and all('not trained yet' in l for l in ours)


def test_cli(tmp_path, capsys):
    assert F.main_figures(['--results', str(tmp_path/'none'), '--out', str(tmp_path), '--quiet']) == 0
    assert 'files written' in capsys.readouterr().out


def test_pct_and_cells():
    assert F.pct(0.5) == 50.0 and F.pct(97.3) == 97.3 and F.pct(None) is None
    assert F.fmt_cell([1.0, 2.0, 3.0]) == '2.00 ± 1.00 (n=3)' and F.fmt_cell([None]) is None


def test_incomplete_run_not_counted(results, tmp_path):
    import shutil
    root = tmp_path/'data'; shutil.copytree(results, root)
    d = root/'runs'/'SYNTHETIC_t_sars_default_seed2'
    m = json.loads((d/'metrics.json').read_text()); m.update(complete=False, status='time_budget'); (d/'metrics.json').write_text(json.dumps(m))
    rows = F.table1(F.find_runs(root), sizes=SIZES)
    t = next(r for r in rows if r['method'] == 'SYNTHETIC Ms-Mamba-t (ours, measured)')
    assert t['SARS_OA'].endswith('(n=2)') and 'not counted (incomplete, resumable): SYNTHETIC_t_sars_default_seed2' in t['note']


def test_reads_a_real_training_run_dir(tmp_path):
    "A run directory written by msmamba_nb.train (toy CNN, synthetic SARS cells) is read and drawn."
    from msmamba_nb.data import make_synthetic_sars
    from msmamba_nb.train import TrainConfig, train
    make_synthetic_sars(tmp_path/'sars', 12)
    run = tmp_path/'res'/'runs'/'toy'
    train(TrainConfig(dataset='SARS', data_root=str(tmp_path), variant='toy', epochs=2, batch_size=8, img_size=32,
                      run_dir=str(run), progress=False, device='cpu'))
    r = F.read_run(run)
    assert (r['variant'], r['dataset'], r['split'], r['finished'], len(r['log'])) == ('toy', 'SARS', 'default', True, 2)
    assert 0 <= r['OA'] <= 100 and r['class_names'] == ['Parasitized', 'Uninfected'] and 'webp' not in r['fidelity']
    assert len(F.fig_curves(r).axes) == 3 and len(F.fig_confusion_roc(r).axes) == 2   # confusion from metrics.json
    files = F.make_all(tmp_path/'res', tmp_path/'figs', verbose=False)
    assert (tmp_path/'figs'/'curves_toy.png') in files


def test_eval_records_give_rows_and_roc(results, tmp_path):
    "A whole-test-split evaluation record of a release (made by msmamba_nb.reproduce; here a tiny untrained model on synthetic cells) gets a Table I row and a confusion/ROC figure."
    import shutil
    from msmamba_nb import reproduce as R
    from msmamba_nb.data import make_synthetic_sars
    from msmamba_nb.model import MicroscopicMamba
    from msmamba_nb.train import save_checkpoint
    make_synthetic_sars(tmp_path/'sars', 12)
    meta = dict(variant='t', num_classes=2, class_names=['Parasitized', 'Uninfected'], model_kwargs={}, img_size=64,
                mean=[.5]*3, std=[.25]*3, dataset='SARS', split_scheme='stratified')
    save_checkpoint(dict(meta=meta, model=MicroscopicMamba('t', 2).state_dict()), tmp_path/'ck.pt')
    ck = R.export_release(tmp_path/'ck.pt', tmp_path/'rel.pt')
    root = tmp_path/'data'; shutil.copytree(results, root)
    p = R.write_record(R.evaluate_release(ck, data_root=tmp_path, progress=False), root/'eval_t_tiny_cpu.json')
    rec = json.loads(p.read_text()); rec['synthetic'] = True; p.write_text(json.dumps(rec))
    recs = F.find_eval_records(root)
    assert len(recs) == 1 and recs[0]['part'] == 'test' and recs[0]['OA'] == rec['OA'] and recs[0]['predictions'] is not None
    rows = F.table1(F.find_runs(root), sizes=SIZES, records=recs)
    row = next(r for r in rows if 'released float16 checkpoint' in r['method'])
    assert row['method'].startswith('SYNTHETIC') and row['SARS_OA'] == f"{rec['OA']:.2f}" and row['RPE_OA'] == F.NOT_OBTAINABLE
    files = {f.name for f in F.make_all(root, tmp_path/'figs', verbose=False)}
    assert 'confusion_roc_eval_t_tiny_cpu.png' in files

def test_table1_keeps_protocols_apart(tmp_path):
    "A shortened or ablated run never shares a Table I cell with full-protocol runs, and its label says how it differs."
    import json
    from msmamba_nb.figures import write_synthetic_results, find_runs, table1
    write_synthetic_results(tmp_path)
    d = tmp_path/'runs'/'SYNTHETIC_t_sars_default_seed0'
    cfg = json.loads((d/'config.json').read_text()); cfg.update(epochs=13, model_kwargs={'mifa': False})
    (d/'config.json').write_text(json.dumps(cfg))
    rows = [r for r in table1(find_runs(tmp_path)) if r['source'] == 'measured' and 'Ms-Mamba-t' in r['method']]
    names = [r['method'] for r in rows]
    assert 'SYNTHETIC Ms-Mamba-t (ours, measured, 13-epoch schedule (paper 200); mifa=False)' in names
    full = next(r for r in rows if r['method'] == 'SYNTHETIC Ms-Mamba-t (ours, measured)')
    assert full['SARS_OA'].endswith('(n=2)')

def test_committed_table1_regenerates_from_committed_data(tmp_path):
    "paper_figures/table1.md and the seed-error records are exactly what the committed data gives: nothing typed in, nothing missing from git."
    from pathlib import Path
    from msmamba_nb.figures import make_all
    repo = Path(__file__).resolve().parents[1]
    make_all(repo/'paper_figures'/'data', tmp_path)
    assert (tmp_path/'table1.md').read_text() == (repo/'paper_figures'/'table1.md').read_text()
    assert (tmp_path/'table1.csv').read_text() == (repo/'paper_figures'/'table1.csv').read_text()
    committed = sorted(p.name for p in (repo/'paper_figures').glob('seed_errors_*.json'))
    assert committed and committed == sorted(p.name for p in tmp_path.glob('seed_errors_*.json'))
    for n in committed: assert (tmp_path/n).read_text() == (repo/'paper_figures'/n).read_text(), n


def test_committed_runs_metrics_match_their_predictions():
    "Every committed GPU run with test predictions: OA and AUC recomputed from them equal its metrics.json."
    from sklearn.metrics import roc_auc_score
    root = Path(__file__).parents[1]/'paper_figures'/'data'
    runs = [r for r in F.find_runs(root) if r.get('predictions') and not r['synthetic']]
    assert len(runs) >= 3, [r['name'] for r in F.find_runs(root)]
    for r in runs:
        probs, labels, files = load_predictions(r['predictions'])
        m = json.loads((Path(r['predictions']).parent/'metrics.json').read_text())
        assert len(labels) == m['n_test'] == len(set(files))
        assert abs((probs.argmax(1) == labels).mean() - m['OA']) < 1e-9, r['name']
        assert abs(roc_auc_score(labels, probs[:, 1]) - m['AUC']) < 1e-4, r['name']   # probs stored to 6 decimals


def test_radar_takes_the_paper_protocol_first(results):
    "The radar sets our t beside the paper's values: the paper-protocol group when there is one, else the most seeds."
    pt = lambda proto, n, oa: dict(variant='t', split='default', protocol=proto, n=n, OA=oa, label=f'ours t [{proto}] n={n}')
    short, bf16, full = pt('13-epoch schedule (paper 200)', 3, 95.3), pt('13-epoch schedule (paper 200); bf16', 1, 95.0), pt('', 1, 96.2)
    assert F.radar_ours([short, bf16, full], results)['SARS'] == 96.2
    assert F.radar_ours([bf16, short], results)['SARS'] == 95.3
