"Tests of msmamba_nb.reproduce: predictions I/O, the record comparison, the main job's messages, and the CI re-check of the released checkpoint."
import csv, json, re
from pathlib import Path
import numpy as np
import pytest
import torch
from msmamba_nb import reproduce as R
from msmamba_nb.data import default_data_root, make_synthetic_sars

REPO = Path(__file__).resolve().parents[1]
RECORDS = sorted((REPO/'paper_figures'/'data').glob('eval_*.json'))
CLASSES = ['Parasitized', 'Uninfected']


def test_predictions_roundtrip(tmp_path):
    probs = np.array([[.25, .75], [.9, .1], [.5, .5]])
    p = R.save_predictions(tmp_path/'p.csv', probs, [1, 0, 1], ['a.webp', 'b.webp', 'c.webp'])
    q, y, f = R.load_predictions(p)
    assert np.allclose(q, probs) and y.tolist() == [1, 0, 1] and f == ['a.webp', 'b.webp', 'c.webp']
    assert p.read_text().splitlines()[0] == 'file,label,prob_0,prob_1'


def test_oa_auc_against_sklearn():
    from sklearn.metrics import roc_auc_score
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200); p1 = np.clip(0.6*y + rng.random(200)*0.5, 0, 1)
    m = R.oa_auc(np.stack([1 - p1, p1], 1), y)
    assert m['OA'] == pytest.approx(100*((p1 > 0.5) == y).mean())
    assert m['AUC'] == pytest.approx(100*roc_auc_score(y, p1))


def test_compare_metrics():
    data = dict(source='folder sars/', encoding='webp', quality=95, split='stratified/test', subset=None, n_images=5512, files_sha256='x')
    rec = dict(OA=97.31, AUC=99.60, data=data)
    assert R.compare_metrics(dict(OA=97.40, AUC=99.51, data=data), rec)['ok']            # within 0.1 on both
    r = R.compare_metrics(dict(OA=97.45, AUC=99.60, data=data), rec)                     # OA off by 0.14
    assert not r['ok'] and r['diffs']['OA'] == pytest.approx(0.14) and 'MISMATCH' in r['lines'][0]
    r = R.compare_metrics(dict(OA=97.31, AUC=99.40, data=data), rec)                     # AUC off by 0.2
    assert not r['ok'] and 'MISMATCH' in r['lines'][1]
    r = R.compare_metrics(dict(OA=97.31, AUC=99.60, data={**data, 'quality': 85}), rec)  # other data: not comparable
    assert not r['ok'] and 'quality' in r['lines'][0]
    assert not R.compare_metrics(dict(OA=97.31, data=data), rec)['ok']                  # a missing metric fails


def test_no_checkpoint_is_said_clearly(tmp_path, capsys):
    rc = R.main_reproduce(['--checkpoint', str(tmp_path/'none.pt'), '--results', str(tmp_path/'res'), '--out', str(tmp_path/'figs'), '--quiet'])
    out = capsys.readouterr().out
    assert rc == 0 and 'NO RELEASED CHECKPOINT' in out and 'Evaluation skipped' in out
    assert '97.31 /  99.60' in out                                  # the paper's row is still printed
    assert (tmp_path/'figs'/'table1.md').exists() and 'paper_figures regenerated' in out


META = dict(variant='t', num_classes=2, class_names=CLASSES, model_kwargs={}, img_size=64, mean=[.5]*3, std=[.25]*3,
            dataset='SARS', split_scheme='stratified')


def _tiny_release(path, seed=0):
    "An untrained t model at 64², saved as a training checkpoint and exported as a release (a test fixture, not a result)."
    from msmamba_nb.model import MicroscopicMamba
    from msmamba_nb.train import save_checkpoint
    torch.manual_seed(seed)
    m = MicroscopicMamba('t', 2).eval()
    src = save_checkpoint(dict(meta=META, model=m.state_dict(), epoch=3, val_acc=0.5), Path(path).with_suffix('.train.pt'))
    return m, R.export_release(src, path, dict(run='test fixture'))


def test_release_is_float16_small_and_loads(tmp_path):
    m, p = _tiny_release(tmp_path/'r.pt')
    assert p.stat().st_size < 10e6
    ck = torch.load(p, weights_only=False)
    assert ck['release']['format'] == R.RELEASE_FORMAT and ck['release']['epoch'] == 3
    assert all(t.dtype == torch.float16 for t in ck['model'].values() if t.is_floating_point())
    m2, meta, rel = R.load_release(p)
    assert meta['class_names'] == CLASSES and meta['img_size'] == 64 and rel['run'] == 'test fixture'
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(): a, b = m(x), m2(x)
    assert torch.allclose(a, b, atol=0.05)                           # float16 rounding only


def test_committed_model_card_is_regenerated_from_the_records():
    "MODEL_CARD.md says what the release, its run and its evaluation records say now (rewrite: msmamba reproduce --model-card)."
    assert (REPO/'msmamba_nb'/'assets'/'MODEL_CARD.md').read_text() == R.model_card(R.RELEASED, REPO/'paper_figures'/'data')


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    "A synthetic SARS folder and an untrained t release at 64² (test fixtures, not results)."
    d = tmp_path_factory.mktemp('tiny')
    make_synthetic_sars(d/'sars', 15)
    _, ck = _tiny_release(d/'tiny.pt')
    rec = R.write_record(R.evaluate_release(ck, data_root=d, progress=False), d/'eval_tiny.json')
    return d, ck, rec


def test_check_released_logic(tiny):
    d, ck, rec = tiny
    r = json.loads(rec.read_text())
    assert r['data']['split'] == 'stratified/test' and r['data']['n_images'] == 6 and r['checkpoint_sha256'] == R.sha256_file(ck)
    assert (d/'eval_tiny_predictions.csv').exists() and str(d) not in rec.read_text()   # no machine paths in records
    ok = R.check_released(rec, ck, data_root=d)
    assert ok['ok'] and all(l.endswith('ok') for l in ok['lines'])
    bad = dict(r, AUC=r['AUC'] - 0.5); (d/'bad.json').write_text(json.dumps(bad))
    res = R.check_released(d/'bad.json', ck, data_root=d)
    assert not res['ok'] and 'AUC' in res['lines'][1] and 'MISMATCH' in res['lines'][1]
    other = dict(r, data=dict(r['data'], subset=2)); (d/'other.json').write_text(json.dumps(other))
    assert not R.check_released(d/'other.json', ck, data_root=d)['ok']   # data of the record differ from what is evaluated


def test_check_released_detects_changed_checkpoint(tiny):
    d, ck, rec = tiny
    _, ck2 = _tiny_release(d/'other.pt', seed=1)
    r = R.check_released(rec, ck2, data_root=d)
    assert not r['ok'] and 'sha256' in r['lines'][0]


def _data_for(rec):
    "Why a record cannot be re-checked here, or None when it can."
    if not R.RELEASED.exists(): return f"no released checkpoint at msmamba_nb/assets/{R.RELEASED.name} (the GPU runs produce it)"
    src = json.loads(rec.read_text())['data']['source']
    if src.startswith('pack '):
        return None if src[5:] == R.SAMPLE_PACK.name and R.SAMPLE_PACK.exists() else f"record made on {src}, which is not in the repository"
    root = default_data_root(REPO)
    if root is None or not (root/'sars'/'manifest.csv').exists(): return "no ../shared/datasets/sars here"
    return None


CI_MAX_IMAGES = 2 * R.CI_SUBSET   # larger records (the whole test split: ~15 min on one core) run only with --runslow


@pytest.mark.parametrize('record', RECORDS or [None], ids=[p.name for p in RECORDS] or ['no-records'])
def test_released_checkpoint_matches_its_record(record, request):
    "The CI re-check: the committed checkpoint, re-evaluated on the record's data, gives the recorded OA and AUC within 0.1 points."
    if record is None: pytest.skip("no paper_figures/data/eval_*.json record committed yet (made with msmamba reproduce --record)")
    why = _data_for(record)
    if why: pytest.skip(why)
    n = json.loads(record.read_text())['data']['n_images']
    if n > CI_MAX_IMAGES and not request.config.getoption('--runslow'):
        pytest.skip(f"{record.name}: {n} images (~{n/4.3/60:.0f} min on one core); run with --runslow")
    res = R.check_released(record, data_root=default_data_root(REPO))
    assert res['ok'], '\n'.join(res['lines'])


def test_predict_cli_on_real_cells_matches_the_committed_evaluation(tmp_path):
    "`msmamba predict` on 12 real test cells (q95 files; both classes, the 4 least certain among them) gives the committed q95 evaluation's probabilities."
    from msmamba_nb.cli import main
    rec_p = REPO/'paper_figures'/'data'/'eval_t_sars_q95_cpu.json'
    why = _data_for(rec_p)
    if why: pytest.skip(why)
    rec = json.loads(rec_p.read_text())
    assert rec['checkpoint_sha256'] == R.sha256_file(R.RELEASED), "the q95 record is of another checkpoint: regenerate it"
    probs, labels, files = R.load_predictions(rec_p.with_name(rec['predictions']))
    unsure = np.argsort(np.abs(probs[:, 1] - 0.5))[:4].tolist()
    pick = sorted(set(unsure + np.flatnonzero(labels == 0)[:4].tolist() + np.flatnonzero(labels == 1)[:4].tolist()))
    assert set(labels[pick]) == {0, 1} and len(pick) == 12
    sars = default_data_root(REPO)/'sars'
    out = tmp_path/'p.csv'
    assert main(['predict'] + [str(sars/files[i]) for i in pick] + ['--out', str(out), '--device', 'cpu']) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r['file'] for r in rows] == [str(sars/files[i]) for i in pick]   # files keep the order given
    got = np.array([[float(r['prob_Parasitized']), float(r['prob_Uninfected'])] for r in rows])
    assert np.abs(got - probs[pick]).max() < 1e-5                              # both CSVs hold 6 decimals
    assert [r['predicted'] for r in rows] == [CLASSES[i] for i in probs[pick].argmax(1)]


def test_without_data_falls_back_to_the_sample_loudly(tiny, tmp_path, monkeypatch, capsys):
    d, ck, rec = tiny
    monkeypatch.setenv('MSMAMBA_DATA_ROOT', str(tmp_path/'no-such-root'))
    rc = R.main_reproduce(['--checkpoint', str(ck), '--device', 'cpu', '--results', str(tmp_path/'res'), '--no-figures', '--quiet'])
    out = capsys.readouterr().out
    assert rc == 0
    if R.SAMPLE_PACK.exists():
        assert 'EVALUATING ON THE SMALL BUNDLED SAMPLE' in out and 'NOT the Table I number' in out
        assert 'pack sars_sample.pack' in out
    else:
        assert 'NO SARS DATA' in out and 'evaluation skipped' in out


def test_train_then_evaluate_the_new_checkpoint(tmp_path, capsys):
    "--train runs the training chapter's CLI and then evaluates the run's best checkpoint (toy CNN, tiny synthetic data, CPU)."
    make_synthetic_sars(tmp_path/'sars', 12)
    run = tmp_path/'run'
    targs = f'--dataset SARS --data-root {tmp_path} --variant toy --epochs 1 --img-size 32 --batch-size 8 --device cpu --no-progress --run-dir {run}'
    rc = R.main_reproduce(['--train', '--train-args', targs, '--data-root', str(tmp_path), '--device', 'cpu',
                           '--results', str(tmp_path/'res'), '--no-figures', '--quiet'])
    out = capsys.readouterr().out
    assert rc == 0 and (run/'metrics.json').exists()
    assert 'evaluating checkpoint_best.pt on the SARS test split' in out and 'released checkpoint, evaluated now' in out


def test_train_without_gpu_and_without_options_refuses(tmp_path, capsys):
    if torch.cuda.is_available(): pytest.skip('this machine has a GPU')
    assert R.main_reproduce(['--train', '--results', str(tmp_path), '--no-figures']) == 2
    assert 'no CUDA GPU here' in capsys.readouterr().out


def test_table1_lines_never_pool_protocols(tmp_path):
    "The main job prints one line of our runs per split and protocol (as Table I), never a mean over 13- and 200-epoch runs."
    from msmamba_nb.figures import write_synthetic_results, fmt_cell
    write_synthetic_results(tmp_path, seeds=(0, 1, 2))
    oa = {}
    for seed, epochs in ((0, 13), (1, 13), (2, 200)):          # two shortened runs and one with the paper's schedule
        d = tmp_path/'runs'/f'SYNTHETIC_t_sars_default_seed{seed}'
        for f, upd in (('config.json', dict(epochs=epochs, synthetic=False)), ('data.json', dict(synthetic=False))):
            j = json.loads((d/f).read_text()); j.update(upd); (d/f).write_text(json.dumps(j))
        oa[seed] = 100*json.loads((d/'metrics.json').read_text())['OA']
    ours = [l for l in R.table1_sars_lines(None, tmp_path) if 'our runs:' in l]
    assert len(ours) == 2                                       # the synthetic s and patient runs stay out
    assert re.search(r'default split, paper protocol \(200-epoch schedule\)\s+' + re.escape(f"{oa[2]:.2f} / 99.00"), ours[0]), ours
    assert re.search(r'default split, 13-epoch schedule \(paper 200\)\s+' + re.escape(fmt_cell([oa[0], oa[1]]) + ' / 99.00 ± 0.00 (n=2)'), ours[1]), ours
