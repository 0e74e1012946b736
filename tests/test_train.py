"Tests of msmamba_nb.train: metrics vs scikit-learn, schedule, checkpoints, determinism, resume, CLI, benchmark."
import contextlib, io, json, os, shutil
from dataclasses import asdict
from pathlib import Path
import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from msmamba_nb import train as T
from msmamba_nb.data import make_synthetic_dataset, load_data, DataError
from msmamba_nb.train import (TrainConfig, train, classification_metrics, roc_auc_binary, roc_auc_ovr, WarmupCosine,
                              EarlyStopping, load_checkpoint, model_from_checkpoint, evaluate_checkpoint,
                              CheckpointError, SimulatedKill, save_checkpoint, build_model)

SARS_DIR = Path(__file__).resolve().parents[1].parent/'shared'/'datasets'/'sars'

try:
    from msmamba_nb.model import MicroscopicMamba  # noqa: F401
    HAVE_MODEL = True
except Exception:
    HAVE_MODEL = False

# ---------------------------------------------------------------- metrics against scikit-learn
@pytest.mark.parametrize('seed', [0, 1, 2])
def test_binary_metrics_vs_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    p1 = np.clip(np.round(rng.random(300) * 0.8 + 0.3 * y, 2), 0, 1)    # rounded: ties
    probs = np.stack([1 - p1, p1], 1)
    m = classification_metrics(y, probs, ['neg', 'pos'])
    pred = probs.argmax(1)
    assert m['auc_kind'] == 'binary'
    assert m['AUC'] == pytest.approx(skm.roc_auc_score(y, p1), abs=1e-12) == m['AUC_macro']
    assert m['OA'] == pytest.approx(skm.accuracy_score(y, pred))
    for k, f in [('precision_weighted', skm.precision_score), ('recall_weighted', skm.recall_score), ('F1_weighted', skm.f1_score)]:
        assert m[k] == pytest.approx(f(y, pred, average='weighted', zero_division=0), abs=1e-12)
    assert m['confusion_matrix'] == skm.confusion_matrix(y, pred).tolist()
    rep = skm.classification_report(y, pred, output_dict=True, zero_division=0)
    for i, n in enumerate(['neg', 'pos']):
        assert m['per_class'][n]['f1'] == pytest.approx(rep[str(i)]['f1-score'], abs=1e-12)
        assert m['per_class'][n]['support'] == rep[str(i)]['support']

@pytest.mark.parametrize('k', [3, 8])
def test_multiclass_metrics_vs_sklearn(k):
    rng = np.random.default_rng(k)
    y = rng.integers(0, k, 400)
    probs = rng.dirichlet(np.ones(k), 400) + 0.2 * np.eye(k)[y]; probs /= probs.sum(1, keepdims=True)
    m = classification_metrics(y, probs)
    assert m['auc_kind'] == 'ovr'
    assert m['AUC'] == pytest.approx(skm.roc_auc_score(y, probs, multi_class='ovr', average='weighted'), abs=1e-12)
    assert m['AUC_macro'] == pytest.approx(skm.roc_auc_score(y, probs, multi_class='ovr', average='macro'), abs=1e-12)
    pred = probs.argmax(1)
    assert m['F1_weighted'] == pytest.approx(skm.f1_score(y, pred, average='weighted'), abs=1e-12)
    assert m['precision_weighted'] == pytest.approx(skm.precision_score(y, pred, average='weighted', zero_division=0), abs=1e-12)

def test_metric_edge_cases():
    assert np.isnan(roc_auc_binary([1, 1, 1], [0.1, 0.2, 0.3]))
    assert roc_auc_binary([0, 1], [0.5, 0.5]) == 0.5
    # a class never predicted: precision 0 for it (sklearn's zero_division=0)
    y, probs = np.array([0, 1, 2, 2]), np.eye(3)[[0, 0, 2, 2]]
    m = classification_metrics(y, probs)
    assert m['per_class']['1']['precision'] == 0.0
    assert m['precision_weighted'] == pytest.approx(skm.precision_score(y, probs.argmax(1), average='weighted', zero_division=0))

# ---------------------------------------------------------------- schedule and early stopping
def test_schedule_with_lambdalr():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=1e-4)
    steps_per_epoch, epochs = 2, 200
    sch = torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(10 * steps_per_epoch, epochs * steps_per_epoch))
    lrs = []
    for _ in range(epochs * steps_per_epoch):
        lrs.append(sch.get_last_lr()[0]); opt.step(); sch.step()
    assert lrs[0] == pytest.approx(1e-7)                  # 1e-3 x 1e-4
    assert lrs[20] == pytest.approx(1e-4)                 # warm-up done after 10 epochs
    assert max(lrs) == pytest.approx(1e-4) and np.argmax(lrs) == 20
    assert sch.get_last_lr()[0] == pytest.approx(1e-10)   # 1e-6 x 1e-4 at the end
    assert all(a >= b for a, b in zip(lrs[20:], lrs[21:]))

def test_early_stopping_like_released():
    es = EarlyStopping(3)
    assert [es.step(v) for v in [1.0, 1.1, 1.2, 1.0, 1.3, 1.3, 1.3]] == [False] * 6 + [True]

# ---------------------------------------------------------------- training runs
@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp('data')
    make_synthetic_dataset(root, 'MHIST', n_per_class=10, size=(24, 40))
    return root, load_data('MHIST', root)

def _cfg(root, run, **kw):
    base = dict(dataset='MHIST', data_root=str(root), variant='toy', epochs=3, batch_size=6, img_size=32,
                run_dir=str(run), progress=False, device='cpu')
    return TrainConfig(**{**base, **kw})

def _weights(run):
    return load_checkpoint(Path(run)/'checkpoint_last.pt')['model']

def test_run_directory_schema(tiny, tmp_path):
    root, data = tiny
    m = train(_cfg(root, tmp_path/'r'), data=data)
    r = tmp_path/'r'
    assert {p.name for p in r.iterdir()} == {'config.json', 'env.json', 'data.json', 'log.jsonl', 'metrics.json',
                                            'checkpoint_best.pt', 'checkpoint_last.pt', 'predictions.csv'}
    log = [json.loads(l) for l in (r/'log.jsonl').read_text().splitlines()]
    assert [l['epoch'] for l in log] == [1, 2, 3]
    assert {'train_loss', 'train_acc', 'val_loss', 'val_acc', 'lr', 'images_per_s', 'epoch_s'} <= set(log[0])
    env, dj, cfg = (json.loads((r/f).read_text()) for f in ('env.json', 'data.json', 'config.json'))
    assert {'git', 'hardware', 'versions'} <= set(env) and 'torch' in env['versions']
    assert dj['dataset'] == 'MHIST' and dj['counts']['test']['n'] == 20 and 'fidelity' in dj and len(dj['norm']['mean']) == 3
    assert cfg['lr'] == 1e-4 and cfg['batch_size'] == 6
    for k in ('OA', 'AUC', 'AUC_macro', 'precision_weighted', 'recall_weighted', 'F1_weighted', 'confusion_matrix',
              'per_class', 'n_test', 'class_names', 'checkpoint_sha256', 'complete'):
        assert k in m
    assert m['complete'] and m['n_test'] == 20 and m['checkpoint_sha256'] == T.file_sha256(r/'checkpoint_best.pt')
    best = load_checkpoint(r/'checkpoint_best.pt')
    assert best['epoch'] == m['best_epoch'] and best['val_acc'] == max(l['val_acc'] for l in log)
    assert best['meta']['class_names'] == ['class_0', 'class_1'] and best['meta']['img_size'] == 32
    with pytest.raises(DataError, match='already holds a run'): train(_cfg(root, r), data=data)

def test_same_seed_same_result_other_seed_differs(tiny, tmp_path):
    root, data = tiny
    a = train(_cfg(root, tmp_path/'a', epochs=2), data=data)
    b = train(_cfg(root, tmp_path/'b', epochs=2), data=data)
    c = train(_cfg(root, tmp_path/'c', epochs=2, seed=1), data=data)
    wa, wb, wc = _weights(tmp_path/'a'), _weights(tmp_path/'b'), _weights(tmp_path/'c')
    assert all(torch.equal(wa[k], wb[k]) for k in wa) and a['test_loss'] == b['test_loss']
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)

@pytest.mark.parametrize('kill_at', [2, 5, 7])   # 4 steps per epoch: kill inside epoch 1, 2 and 2
def test_resume_equals_uninterrupted(tiny, tmp_path, kill_at):
    root, data = tiny
    ref = train(_cfg(root, tmp_path/'ref', batch_size=5), data=data)
    with pytest.raises(SimulatedKill): train(_cfg(root, tmp_path/'k', batch_size=5), data=data, stop_after_steps=kill_at)
    if kill_at < 4:   # killed before the first checkpoint: nothing to resume, start again
        with pytest.raises(CheckpointError, match='nothing to resume'): train(_cfg(root, tmp_path/'k', batch_size=5), resume=True, data=data)
        return
    res = train(TrainConfig(run_dir=str(tmp_path/'k'), progress=False, device='cpu'), resume=True, data=data)
    wr, wk = _weights(tmp_path/'ref'), _weights(tmp_path/'k')
    assert all(torch.equal(wr[k], wk[k]) for k in wr)
    for k in ('OA', 'AUC', 'test_loss', 'F1_weighted', 'best_epoch', 'confusion_matrix', 'checkpoint_sha256'):
        assert res[k] == ref[k]
    log_r = [json.loads(l) for l in (tmp_path/'ref'/'log.jsonl').read_text().splitlines()]
    log_k = [json.loads(l) for l in (tmp_path/'k'/'log.jsonl').read_text().splitlines()]
    strip = lambda l: {k: v for k, v in l.items() if k not in ('images_per_s', 'train_s', 'epoch_s', 'next_epoch_est_s')}
    assert list(map(strip, log_r)) == list(map(strip, log_k))
    env = json.loads((tmp_path/'k'/'env.json').read_text())
    assert env['resumes'][0]['from_epoch'] == 1

def test_run_from_before_round_crops_resumes_unrounded(tiny, tmp_path):
    "A run whose config.json predates `round_crops` trained on unrounded crops, and resumes that way."
    root, data = tiny
    ref = train(_cfg(root, tmp_path/'ref', batch_size=5, round_crops=False), data=data)
    rounded = train(_cfg(root, tmp_path/'rnd', batch_size=5), data=data)
    assert not all(torch.equal(a, b) for a, b in zip(_weights(tmp_path/'ref').values(), _weights(tmp_path/'rnd').values()))
    with pytest.raises(SimulatedKill):
        train(_cfg(root, tmp_path/'k', batch_size=5, round_crops=False), data=data, stop_after_steps=5)
    cj = tmp_path/'k'/'config.json'
    c = json.loads(cj.read_text()); assert c.pop('round_crops') is False
    cj.write_text(json.dumps(c))                                   # as the code before the option wrote it
    res = train(TrainConfig(run_dir=str(tmp_path/'k'), progress=False, device='cpu'), resume=True, data=data)
    wr, wk = _weights(tmp_path/'ref'), _weights(tmp_path/'k')
    assert all(torch.equal(wr[k], wk[k]) for k in wr) and res['test_loss'] == ref['test_loss']

def test_time_budget_then_resume(tiny, tmp_path):
    root, data = tiny
    ref = train(_cfg(root, tmp_path/'ref'), data=data)
    m = train(_cfg(root, tmp_path/'b', time_budget_min=1e-6), data=data)
    assert (m['complete'], m['status'], m['resumable'], m['epochs_run']) == (False, 'time_budget', True, 1)
    assert '--resume' in m['note']
    m2 = train(TrainConfig(run_dir=str(tmp_path/'b'), progress=False, device='cpu'), resume=True, data=data)
    assert m2['complete'] and m2['epochs_run'] == 3 and m2['checkpoint_sha256'] == ref['checkpoint_sha256']
    m3 = train(TrainConfig(run_dir=str(tmp_path/'b'), progress=False, device='cpu'), resume=True, data=data)
    assert m3 == m2   # already complete: nothing happens

def _slow_first_step(monkeypatch):
    "A fake clock for train(): the model's first forward call takes 100 s (as compilation would), every later one 1 s."
    import types, time
    clock, calls = [0.0], [0]
    monkeypatch.setattr(T, 'time', types.SimpleNamespace(time=lambda: clock[0], perf_counter=time.perf_counter))
    real = T.build_model
    def build(*a, **k):
        m = real(*a, **k)
        def tick(mod, inp): clock[0] += 100.0 if calls[0] == 0 else 1.0; calls[0] += 1
        m.register_forward_pre_hook(tick); return m
    monkeypatch.setattr(T, 'build_model', build)

@pytest.mark.parametrize('budget_s,status,epochs', [(150, 'finished', 3), (105, 'time_budget', 1)])
def test_time_budget_ignores_a_slow_first_step(tiny, tmp_path, monkeypatch, budget_s, status, epochs):
    "The budget check takes the later half of an epoch as the rate: epoch 1 lasts ~103 s (a 100-s first step), later ones ~4 s."
    root, data = tiny
    _slow_first_step(monkeypatch)
    m = train(_cfg(root, tmp_path/'r', time_budget_min=budget_s / 60), data=data)
    log = [json.loads(l) for l in (tmp_path/'r'/'log.jsonl').read_text().splitlines()]
    assert log[0]['epoch_s'] > 100 and log[0]['next_epoch_est_s'] < 10      # the first epoch's own time would stop at 150 s
    assert (m['status'], m['epochs_run']) == (status, epochs)
    if status == 'time_budget':   # a stop on the budget does not test: the test split is evaluated once, at the end
        assert 'OA' not in m and m['resumable'] and not (tmp_path/'r'/'predictions.csv').exists()

def test_resume_refuses_to_test_a_stale_best_checkpoint(tiny, tmp_path):
    root, data = tiny
    m = train(_cfg(root, tmp_path/'b'), data=data)
    (tmp_path/'b'/'metrics.json').unlink()              # as if killed during the test: resuming goes straight to it
    best = load_checkpoint(tmp_path/'b'/'checkpoint_best.pt'); best['epoch'] = m['best_epoch'] % 3 + 1
    save_checkpoint(best, tmp_path/'b'/'checkpoint_best.pt')   # a best file from another epoch than the run's best
    with pytest.raises(CheckpointError, match=f"best val accuracy .* was at epoch {m['best_epoch']}"):
        train(TrainConfig(run_dir=str(tmp_path/'b'), progress=False, device='cpu'), resume=True, data=data)
    (tmp_path/'b'/'checkpoint_best.pt').unlink()        # the best file not there at all
    with pytest.raises(CheckpointError, match=f"checkpoint_best.pt is missing, but .* was at epoch {m['best_epoch']}"):
        train(TrainConfig(run_dir=str(tmp_path/'b'), progress=False, device='cpu'), resume=True, data=data)

def test_early_stop_in_run(tiny, tmp_path):
    root, data = tiny
    m = train(_cfg(root, tmp_path/'e', epochs=30, lr=0.5, patience=2), data=data)   # a huge lr: val loss gets worse
    assert m['status'] == 'early_stopped' and m['complete'] and m['epochs_run'] < 30

def test_speed_options_cpu(tiny, tmp_path):
    root, data = tiny
    m = train(_cfg(root, tmp_path/'o', epochs=2, bf16=True, channels_last=True, compile=True, compile_backend='eager',
                   eval_every=2, warmup_epochs=1), data=data)
    assert m['complete'] and np.isfinite(m['test_loss'])
    log = [json.loads(l) for l in (tmp_path/'o'/'log.jsonl').read_text().splitlines()]
    assert 'val_loss' not in log[0] and 'val_loss' in log[1]

def test_compiled_run_compiles_once(tiny, tmp_path):
    "--compile: only full training batches go through the compiled model; the shorter last batch and evaluation run eagerly."
    from torch._dynamo import register_backend
    graphs = []
    @register_backend
    def count_graphs(gm, example_inputs):   # called once per graph dynamo compiles
        graphs.append(tuple(example_inputs[0].shape) if example_inputs else ()); return gm.forward
    root, data = tiny
    n_tr = len(data.splits['train'])
    assert n_tr % 6 != 0, n_tr                   # the fixture leaves a shorter last batch at batch size 6
    m = train(_cfg(root, tmp_path/'c', epochs=2, compile=True, compile_backend='count_graphs'), data=data)
    assert m['complete'] and len(graphs) == 1, graphs

def test_compile_cache_round_trip_cpu(tiny, tmp_path):
    "--compile-cache: a fresh process with an empty inductor cache loads what an earlier run wrote, hits it, and trains the same weights."
    import re, subprocess, sys
    root, _ = tiny
    def run(name):   # each process gets its own, empty local inductor cache: only the cache file can bring hits
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(tmp_path/f'inductor_{name}'), OMP_NUM_THREADS='1')
        r = subprocess.run([sys.executable, '-m', 'msmamba_nb.cli', 'train', '--dataset', 'MHIST', '--data-root', str(root),
                            '--variant', 'toy', '--epochs', '1', '--batch-size', '6', '--img-size', '32', '--device', 'cpu',
                            '--no-progress', '--compile', '--compile-cache', str(tmp_path/'cc'), '--run-dir', str(tmp_path/name)],
                           capture_output=True, text=True, env=env, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        fx = re.search(r'first compiled step: [0-9.]+ s \(FX graph cache (\d+) hits, (\d+) misses', r.stderr)
        assert fx, r.stderr[-3000:]
        return r.stderr, int(fx[1]), int(fx[2])
    err_a, hit_a, miss_a = run('a')
    assert 'compile cache: no ' in err_a and 'MiB written to' in err_a and hit_a == 0 and miss_a > 0
    (f,) = (tmp_path/'cc').glob('*.bin')
    assert f.name.endswith('-toy-2cls-default-b6x1-32px-cf-fp32-inductor-default.bin'), f.name
    err_b, hit_b, miss_b = run('b')
    assert 'artifacts loaded from' in err_b and hit_b == miss_a and miss_b == 0, err_b[-2000:]
    wa, wb = (load_checkpoint(tmp_path/n/'checkpoint_last.pt')['model'] for n in 'ab')
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert json.loads((tmp_path/'a'/'config.json').read_text())['compile_cache'] == str(tmp_path/'cc')

# ---------------------------------------------------------------- checkpoints and evaluation
def test_checkpoint_errors(tiny, tmp_path):
    root, data = tiny
    train(_cfg(root, tmp_path/'r', epochs=1), data=data)
    ck = tmp_path/'r'/'checkpoint_best.pt'
    with pytest.raises(CheckpointError, match=r"holds variant 'toy' with 2 classes \(class_0, class_1\); cannot load it for 8"):
        model_from_checkpoint(ck, num_classes=8)
    with pytest.raises(CheckpointError, match="cannot load it as variant 's'"): model_from_checkpoint(ck, variant='s')
    with pytest.raises(CheckpointError, match='checkpoint not found'): load_checkpoint(tmp_path/'none.pt')
    (tmp_path/'junk.pt').write_bytes(b'junk')
    with pytest.raises(CheckpointError, match='cannot read checkpoint'): load_checkpoint(tmp_path/'junk.pt')
    torch.save({'state_dict': {}}, tmp_path/'other.pt')
    with pytest.raises(CheckpointError, match='not an msmamba_nb checkpoint'): load_checkpoint(tmp_path/'other.pt')
    bad = load_checkpoint(ck); bad['meta'] = dict(bad['meta'], model_kwargs={'width': 4}); save_checkpoint(bad, tmp_path/'w.pt')
    with pytest.raises(CheckpointError, match='does not fit the model'): model_from_checkpoint(tmp_path/'w.pt')
    other = tmp_path/'other_data'; make_synthetic_dataset(other, 'RPE', 2, size=(20, 20))
    with pytest.raises(CheckpointError, match='was trained on classes'): evaluate_checkpoint(ck, load_data('RPE', other), device='cpu')

def test_eval_cli_reproduces_metrics(tiny, tmp_path, capsys):
    root, data = tiny
    m = train(_cfg(root, tmp_path/'r', epochs=2), data=data)
    assert T.main_eval(['--checkpoint', str(tmp_path/'r'/'checkpoint_best.pt'), '--data-root', str(root), '--device', 'cpu',
                        '--batch-size', '7', '--out', str(tmp_path/'ev.json')]) == 0
    ev = json.loads((tmp_path/'ev.json').read_text())
    assert ev['confusion_matrix'] == m['confusion_matrix'] and ev['OA'] == m['OA']
    assert ev['AUC'] == pytest.approx(m['AUC'], abs=1e-9) and ev['loss'] == pytest.approx(m['test_loss'], rel=1e-5)
    assert T.main_eval(['--checkpoint', str(tmp_path/'nope.pt')]) == 2
    assert 'checkpoint not found' in capsys.readouterr().err

# ---------------------------------------------------------------- command line and benchmark
@pytest.mark.parametrize('fn,words', [(T.main_train, ['--resume', '--bf16', '--time-budget-min', 'RandomResizedCrop', 'examples']),
                                      (T.main_eval, ['--checkpoint', 'OA']), (T.main_bench_train, ['images/s', '--compile'])])
def test_cli_help(fn, words, capsys):
    with pytest.raises(SystemExit) as e: fn(['--help'])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert all(w in out for w in words)

def test_train_cli_kill_and_resume(tiny, tmp_path, capsys):
    root, _ = tiny
    args = ['--dataset', 'MHIST', '--data-root', str(root), '--variant', 'toy', '--epochs', '2', '--img-size', '32',
            '--batch-size', '8', '--device', 'cpu', '--no-progress', '--run-dir', str(tmp_path/'r')]
    assert T.main_train(args + ['--kill-after-steps', '4']) == 3
    assert T.main_train(args) == 2 and 'already holds a run' in capsys.readouterr().err
    assert T.main_train(['--resume', '--run-dir', str(tmp_path/'r'), '--no-progress', '--device', 'cpu']) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])['complete'] is True
    assert T.main_train(['--model-kwargs', '{bad']) == 2

def test_train_cli_fork_from_a_stopped_run(tiny, tmp_path, capsys):
    "--fork-from goes on from an early-stopped run with another patience and ends as that patience from the start would."
    root, _ = tiny
    args = ['--dataset', 'MHIST', '--data-root', str(root), '--variant', 'toy', '--epochs', '3', '--img-size', '32',
            '--batch-size', '8', '--device', 'cpu', '--no-progress']
    assert T.main_train(args + ['--patience', '0', '--run-dir', str(tmp_path/'stop')]) == 0        # stops after epoch 1
    assert T.main_train(args + ['--patience', '9', '--run-dir', str(tmp_path/'full')]) == 0
    before = (tmp_path/'stop'/'metrics.json').read_text()
    capsys.readouterr()
    assert T.main_train(['--fork-from', str(tmp_path/'stop'), '--run-dir', str(tmp_path/'fork'), '--patience', '9',
                         '--no-progress', '--device', 'cpu']) == 0
    out = capsys.readouterr().out
    assert 'forked' in out and json.loads(out.strip().splitlines()[-1])['epochs_run'] == 3
    wf, wn = _weights(tmp_path/'fork'), _weights(tmp_path/'full')
    assert wf.keys() == wn.keys() and all(torch.equal(wf[k], wn[k]) for k in wf)
    assert (tmp_path/'stop'/'metrics.json').read_text() == before                                  # the source is untouched
    for extra, why in ((['--run-dir', str(tmp_path/'fork')], 'exists'), ([], 'needs --run-dir'),
                       (['--run-dir', str(tmp_path/'x'), '--resume'], 'no --resume')):
        assert T.main_train(['--fork-from', str(tmp_path/'stop'), '--patience', '9', '--device', 'cpu', *extra]) == 2
        assert why in capsys.readouterr().err
    for extra, why in ((['--patience', '9', '--fork-from', str(tmp_path/'none')], 'nothing to fork'),
                       (['--fork-from', str(tmp_path/'stop')], 'needs --run-dir (the new run), --patience'),
                       (['--patience', '0', '--fork-from', str(tmp_path/'stop')], 'not larger than')):
        assert T.main_train(['--run-dir', str(tmp_path/'y'), '--device', 'cpu', *extra]) == 2
        assert why in capsys.readouterr().err and not (tmp_path/'y').exists()

def test_bench_train_cpu(tmp_path, capsys):
    out = tmp_path/'b.json'
    assert T.main_bench_train(['--variant', 'toy', '--img-size', '32', '--batch-size', '4', '--steps', '3', '--warmup', '1',
                               '--device', 'cpu', '--infer-batches', '4,8', '--configs', 'fp32,bf16+cl', '--out', str(out)]) == 0
    b = json.loads(out.read_text())
    assert [r['config'] for r in b['results']] == ['fp32', 'bf16+cl']
    for r in b['results']:
        assert len(r['train_step_ms']) == 3 and r['train_img_s'] == pytest.approx(4000 / r['train_step_ms_median'])
        assert set(r['infer_img_s']) == {'4', '8'}
    assert b['released_reference']['train_img_s']['fp32']['H100'] == 152 and 'git' in b['env']
    assert b['complete'] is True and b['configs'] == ['fp32', 'bf16+cl']
    out.unlink()
    assert T.main_bench_train(['--configs', 'fp16', '--device', 'cpu']) == 2
    assert T.main_bench_train(['--variant', 'toy', '--configs', 'fp32,fp32+typo', '--device', 'cpu', '--out', str(out)]) == 2
    assert not out.exists() and 'fp32+typo' in capsys.readouterr().err       # rejected before anything ran
    assert T.main_bench_train(['--variant', 'toy', '--img-size', '32', '--batch-size', '4', '--steps', '1', '--warmup', '1',
                               '--device', 'cpu', '--configs', 'fp32+compile+fused', '--out', str(out)]) == 0
    r = json.loads(out.read_text())['results'][0]
    assert (r['compile'], r['fused_adam'], r['graph_breaks']) == (True, True, 0) and r['warmup_s'] > 0
    assert T.main_bench_train(['--variant', 'toy', '--img-size', '32', '--batch-size', '4', '--steps', '1', '--warmup', '1',
                               '--device', 'cpu', '--configs', 'fp32+graph', '--out', str(out)]) == 1   # CUDA graphs need a GPU
    assert json.loads(out.read_text())['results'][0]['error'] == 'ValueError: +graph needs a CUDA device'

# ---------------------------------------------------------------- a short real training run
def _real_run(tmp_path, **kw):
    model = dict(variant='t', model_kwargs=dict(depths=[1, 1, 1, 1], dims=[16, 32, 64, 128])) if HAVE_MODEL else dict(variant='toy')
    cfg = TrainConfig(**{**dict(epochs=2, img_size=64, batch_size=32, run_dir=str(tmp_path/'real'), progress=False,
                                device='cpu'), **model, **kw})
    m = train(cfg)
    assert m['complete'] and m['n_test'] > 0 and 0 <= m['OA'] <= 1 and np.isfinite(m['test_loss'])
    dj = json.loads((tmp_path/'real'/'data.json').read_text())
    assert dj['dataset'] == 'SARS' and dj['norm']['source'].startswith('msmamba_nb/assets/stats.json')
    return m, dj

def test_short_real_training_sample_pack(tmp_path):
    "2 epochs at 64x64 on the bundled 200-cell SARS sample (the small paper model when it exists, else the toy CNN)."
    m, dj = _real_run(tmp_path, pack='sample', dataset=None)
    assert dj['fidelity']['quality'] == 85 and dj['fidelity']['pack_sha256']

@pytest.mark.skipif(not (SARS_DIR/'manifest.csv').is_file(), reason='../shared/datasets/sars is not present beside the repository')
def test_short_real_training_shared_sars(tmp_path):
    "2 epochs at 64x64 on 300 SARS cells (50 per class and split) read from ../shared/datasets/sars."
    m, dj = _real_run(tmp_path, data_root=str(SARS_DIR.parent), subset=50)
    assert dj['counts']['train']['n'] == 100 and dj['fidelity']['quality'] == 95 and m['n_test'] == 100

@pytest.mark.slow
@pytest.mark.skipif(not HAVE_MODEL, reason='msmamba_nb.model is not available')
def test_full_variant_t_two_epochs_sample(tmp_path):
    "The full variant t for 2 epochs at 64x64 on the sample (slow on CPU)."
    cfg = TrainConfig(pack='sample', dataset=None, variant='t', epochs=2, img_size=64, batch_size=32,
                      run_dir=str(tmp_path/'t'), progress=False, device='cpu')
    assert train(cfg)['complete']

def test_evaluate_batch_size_changes_nothing():
    torch.manual_seed(0)
    net = build_model('toy', 3).eval()
    x, y = torch.randint(0, 256, (11, 3, 16, 16), dtype=torch.uint8), torch.arange(11) % 3
    a = T.evaluate(net, x, y, [0.5] * 3, [0.2] * 3, 4)
    b = T.evaluate(net, x, y, [0.5] * 3, [0.2] * 3, 11)
    assert a['probs'].shape == (11, 3) and np.allclose(a['probs'], b['probs'], atol=1e-6) and a['acc'] == b['acc']

def test_resume_after_a_kill_during_the_test_evaluation(tiny, tmp_path):
    "A run that finished training but died before writing metrics.json is completed by --resume (test eval only)."
    root, data = tiny
    m = train(_cfg(root, tmp_path/'r'), data=data)
    (tmp_path/'r'/'metrics.json').unlink()
    m2 = train(_cfg(root, tmp_path/'r'), resume=True)
    assert m2['complete'] and m2['OA'] == m['OA'] and m2['AUC'] == m['AUC'] and m2['epochs_run'] == 3

def test_resume_refuses_other_data(tiny, tmp_path):
    "Resuming on another data root (different counts) is an error that names data.json, not a silent mix."
    root, data = tiny
    cfg = _cfg(root, tmp_path/'r', time_budget_min=0.0)      # stops after the first epoch, resumable
    train(cfg, data=data)
    other = tmp_path/'other'; make_synthetic_dataset(other, 'MHIST', n_per_class=7, size=(24, 40))
    with pytest.raises(DataError, match='data.json'):
        train(_cfg(other, tmp_path/'r', time_budget_min=None), resume=True)

def test_ddp_two_cpu_processes_match_one(tiny, tmp_path):
    "torchrun with 2 gloo processes (each takes half of every batch) ends at the single-process weights and metrics."
    import os, subprocess, sys
    root, data = tiny
    mk = {"bn": False, "drop": 0.0}     # gloo cannot synchronise BatchNorm; without BN/dropout the math is identical
    one = train(_cfg(root, tmp_path/'one', epochs=2, model_kwargs=mk), data=data)
    args = ['train', '--dataset', 'MHIST', '--data-root', str(root), '--variant', 'toy', '--model-kwargs', json.dumps(mk),
            '--epochs', '2', '--img-size', '32', '--batch-size', '6', '--device', 'cpu', '--no-progress', '--run-dir', str(tmp_path/'two')]
    p = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', '-m', 'msmamba_nb.cli', *args],
                       capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert p.returncode == 0, p.stderr[-3000:]
    wa, wb = _weights(tmp_path/'one'), _weights(tmp_path/'two')
    for k in wa: assert torch.allclose(wa[k], wb[k], rtol=1e-4, atol=1e-6), (k, float((wa[k] - wb[k]).abs().max()))
    two = json.loads((tmp_path/'two'/'metrics.json').read_text())
    assert two['OA'] == one['OA'] and abs(two['test_loss'] - one['test_loss']) < 1e-5
    assert json.loads((tmp_path/'two'/'config.json').read_text())['world_size'] == 2
    la = [json.loads(l) for l in (tmp_path/'one'/'log.jsonl').read_text().splitlines()]
    lb = [json.loads(l) for l in (tmp_path/'two'/'log.jsonl').read_text().splitlines()]   # rank 0 alone writes
    assert len(lb) == 2 and all(abs(a['train_loss'] - b['train_loss']) < 1e-5 and a['train_acc'] == b['train_acc'] for a, b in zip(la, lb))

def test_ddp_run_resumes_in_one_process(tiny, tmp_path, monkeypatch):
    "A run stopped under torchrun (2 processes) resumes in one process: same end as an uninterrupted one-process run."
    import os, subprocess, sys
    root, data = tiny
    mk = {"bn": False, "drop": 0.0}     # no BN/dropout: the math does not depend on the process layout
    one = train(_cfg(root, tmp_path/'one', epochs=2, model_kwargs=mk), data=data)
    args = ['train', '--dataset', 'MHIST', '--data-root', str(root), '--variant', 'toy', '--model-kwargs', json.dumps(mk),
            '--epochs', '2', '--img-size', '32', '--batch-size', '6', '--device', 'cpu', '--no-progress',
            '--time-budget-min', '0', '--run-dir', str(tmp_path/'two')]     # budget 0: stops after epoch 1, resumable
    p = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', '-m', 'msmamba_nb.cli', *args],
                       capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert p.returncode == 0, p.stderr[-3000:]
    assert len((tmp_path/'two'/'log.jsonl').read_text().splitlines()) == 1
    def no_restore(s): raise AssertionError("a DDP run's saved RNG states belong to another process layout")
    monkeypatch.setattr(T, 'set_rng_state', no_restore)
    two = train(_cfg(root, tmp_path/'two', epochs=2, model_kwargs=mk, time_budget_min=None), data=data, resume=True)
    wa, wb = _weights(tmp_path/'one'), _weights(tmp_path/'two')
    for k in wa: assert torch.allclose(wa[k], wb[k], rtol=1e-4, atol=1e-6), (k, float((wa[k] - wb[k]).abs().max()))
    assert two['complete'] and two['OA'] == one['OA'] and two['epochs_run'] == 2
    env = json.loads((tmp_path/'two'/'env.json').read_text())
    assert [r['world_size'] for r in env['resumes']] == [1] and env['resumes'][0]['from_epoch'] == 1

def test_default_run_dir_names_the_packs_split(tmp_path, monkeypatch):
    "Without --run-dir the run is named after the data it trains on: the bundled sample pack's scheme, not 'stratified'."
    monkeypatch.chdir(tmp_path)
    m = train(TrainConfig(pack='sample', dataset=None, variant='toy', epochs=1, img_size=32, batch_size=16, subset=8,
                          progress=False, device='cpu'))
    runs = [p.name for p in (tmp_path/'runs').iterdir()]
    assert runs == ['SARS-toy-sample-s0'] and m['split_scheme'] == 'sample', runs
    # --resume without --run-dir finds the run by the same name (here: already complete)
    assert T.main_train(['--pack', 'sample', '--variant', 'toy', '--subset', '8', '--resume', '--no-progress', '--device', 'cpu']) == 0

def test_ddp_runs_the_real_model(tmp_path):
    "The released model (its forward leaves some parameters unused) trains under torchrun: 2 gloo processes, 1 step."
    import os, subprocess, sys
    args = ['train', '--pack', 'sample', '--variant', 't', '--epochs', '1', '--img-size', '32', '--batch-size', '8',
            '--subset', '4', '--device', 'cpu', '--no-progress', '--run-dir', str(tmp_path/'r')]
    p = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', '-m', 'msmamba_nb.cli', *args],
                       capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert p.returncode == 0, p.stderr[-3000:]
    m = json.loads((tmp_path/'r'/'metrics.json').read_text())
    assert m['complete'] and m['n_test'] == 8 and json.loads((tmp_path/'r'/'config.json').read_text())['world_size'] == 2

def test_profile_train_step_script_cpu(tmp_path):
    "benchmarks/profile_train_step.py (a GPU tool) runs end to end on the CPU at a tiny size and writes its table."
    import subprocess, sys
    script = Path(__file__).parent.parent/'benchmarks'/'profile_train_step.py'
    out = tmp_path/'prof.txt'
    p = subprocess.run([sys.executable, str(script), '--out', str(out), '--device', 'cpu', '--eager', '--batch', '2',
                        '--img-size', '32', '--warmup', '1', '--steps', '1', '--rows', '5'], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    head, *rows = out.read_text().splitlines()
    assert head.startswith('t, batch 2, 32², fp32') and 'ms/step' in head and any('aten::' in r for r in rows)

def _train_call(run, out, budget, pack='sample', timeout=300, script_args=None, **env):
    "Run benchmarks/gpu_train_call.sh on the CPU (a 2-epoch toy run of `run`, records into `out`); extra env vars as keywords."
    import subprocess, sys
    root = Path(__file__).parent.parent
    args = script_args or [str(run), pack, str(budget), '--variant', 'toy', '--epochs', '2', '--img-size', '32', '--seed', '0',
                           '--device', 'cpu']
    env = dict(os.environ, OUT=str(out), OMP_NUM_THREADS='1', PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **env)
    return subprocess.run(['bash', str(root/'benchmarks'/'gpu_train_call.sh'), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=root)

def test_gpu_train_call_script_cpu(tmp_path):
    "benchmarks/gpu_train_call.sh (a device-call wrapper) starts a run, stops it at its budget, resumes it and packs its records."
    import tarfile
    out, run = tmp_path/'out', tmp_path/'run'; out.mkdir()
    for k, status in ((1, 'time_budget'), (2, 'finished')):   # the budget stops each call after one epoch
        p = _train_call(run, out, 0.0001)
        assert p.returncode == 0 and ('resuming' if k == 2 else 'new run') in p.stdout, p.stdout + p.stderr
        with tarfile.open(out/f'run_{k}.tgz') as t: names = t.getnames()
        assert 'run/metrics.json' in names and not any(n.endswith('.pt') for n in names)
        m = json.loads((run/'metrics.json').read_text())
        assert (m['status'], m['epochs_run']) == (status, k)
    bad = _train_call(None, out, 1, script_args=[str(tmp_path/'bad'), str(tmp_path/'no.pack'), '1'])
    assert bad.returncode == 2 and 'no.pack' in (out/'bad_1.log').read_text()   # train's exit code, its error in the log

def _kill_detached(runs):
    "Kill the process group of each run's detached training (its RUN_DIR.pid), if one was started."
    import signal
    for r in runs:
        pf = r.with_name(r.name + '.pid')
        if pf.exists():
            try: os.killpg(int(pf.read_text()), signal.SIGKILL)
            except (ProcessLookupError, ValueError, PermissionError): pass

def test_gpu_train_call_detached_cpu(tmp_path):
    "gpu_train_call.sh with MSMAMBA_BG_WAIT_S runs the training in its own session, waits for it, and never starts it twice."
    import subprocess, tarfile, signal, time
    out = tmp_path/'out'; out.mkdir()
    def call(run, wait, pack='sample'): return _train_call(run, out, 5, pack, MSMAMBA_BG_WAIT_S=str(wait))
    runs = [tmp_path/n for n in ('run', 'killed', 'bad')]
    try:
        run = runs[0]
        p = call(run, 0)                                  # 0: return at once, the training runs on
        assert p.returncode == 0 and 'detached training started' in p.stdout and 'still running' in p.stdout, p.stdout + p.stderr
        p = call(run, 280)                                # the next call finds it running and waits for its end
        pid = (tmp_path/'run.pid').read_text().strip()
        assert p.returncode == 0 and f'waiting for the detached training (pid {pid})' in p.stdout, p.stdout
        assert 'train exit code 0' in p.stdout and 'started' not in p.stdout
        m = json.loads((run/'metrics.json').read_text())
        assert (m['status'], m['epochs_run']) == ('finished', 2)
        with tarfile.open(out/'run_2.tgz') as t: assert 'run/metrics.json' in t.getnames()
        p = call(run, 280)                                # ended: reported, not restarted
        assert p.returncode == 0 and 'has ended' in p.stdout and len((run/'log.jsonl').read_text().splitlines()) == 2, p.stdout
        run = runs[1]                                     # a training killed (as by the OOM killer): its code is kept, no restart
        p = call(run, 0); assert 'started' in p.stdout, p.stdout
        for _ in range(200):
            kids = subprocess.run(['pgrep', '-P', (tmp_path/'killed.pid').read_text().strip()], capture_output=True, text=True).stdout.split()
            if kids: break
            time.sleep(0.05)
        os.kill(int(kids[0]), signal.SIGKILL)
        p = call(run, 60); assert p.returncode == 137 and 'train exit code 137' in p.stdout, p.stdout
        p = call(run, 60); assert p.returncode == 137 and 'has ended' in p.stdout and 'started' not in p.stdout, p.stdout
        p = call(runs[2], 60, pack=str(tmp_path/'no.pack'))   # a bad pack: train's exit code and its error in the log
        assert p.returncode == 2 and 'no.pack' in (out/'bad_1.log').read_text(), p.stdout
        p = _train_call(None, out, 1, timeout=60, script_args=[str(tmp_path/'x'), 'sample', '1'], MSMAMBA_BG_WAIT_S='abc')
        assert p.returncode == 2 and "got 'abc'" in p.stdout and not (tmp_path/'x.pid').exists()
    finally: _kill_detached(runs)                         # never leave a detached training behind

def test_gpu_train_call_state_cpu(tmp_path):
    "gpu_train_call.sh with MSMAMBA_STATE_OUT ships the whole run in chunks; a fresh machine restores it, refusing a missing chunk."
    import shutil
    out, run = tmp_path/'out', tmp_path/'run'; out.mkdir()
    def call(): return _train_call(run, out, 0.0001, MSMAMBA_STATE_OUT='1', MSMAMBA_STATE_CHUNK_KB='64')
    p = call()                                                          # stops on the budget after epoch 1
    assert p.returncode == 0 and 'chunk(s)' in p.stdout, p.stdout + p.stderr
    chunks = sorted(out.glob('run.state.[0-9][0-9]'))
    assert len(chunks) >= 2 and all(c.stat().st_size <= 64 * 1024 for c in chunks)
    state = tmp_path/'run.state'; state.mkdir()                          # "the next session": only the chunks survive
    for f in chunks[1:] + [out/'run.state.sha256']: shutil.copy(f, state)
    shutil.rmtree(run)
    p = call()
    assert p.returncode == 3 and chunks[0].name in p.stdout + p.stderr and not run.exists(), p.stdout + p.stderr
    shutil.copy(chunks[0], state)
    p = call()
    assert p.returncode == 0 and 'restored' in p.stdout and 'resuming' in p.stdout, p.stdout + p.stderr
    m = json.loads((run/'metrics.json').read_text())
    assert (m['status'], m['epochs_run']) == ('finished', 2) and 'OA' in m, m       # the last epoch ends the run: tested
    assert len((run/'log.jsonl').read_text().splitlines()) == 2          # epoch 1 from the state, epoch 2 after the restore

def test_gpu_train_call_snapshot_cpu(tmp_path):
    "A detached call that ends with the training running ships a snapshot; a fresh machine given it resumes from there."
    import shutil, signal, tarfile
    out, run, state = tmp_path/'out', tmp_path/'run', tmp_path/'run.state'; out.mkdir()
    args = [str(run), 'sample', '5', '--variant', 'toy', '--epochs', '6', '--img-size', '32', '--seed', '0', '--device', 'cpu']
    def call(wait): return _train_call(None, out, 5, script_args=args, MSMAMBA_BG_WAIT_S=str(wait), MSMAMBA_STATE_OUT='1',
                                       MSMAMBA_STATE_CHUNK_KB='64')
    pid = tmp_path/'run.pid'
    try:
        p = call(0)
        assert p.returncode == 0 and 'still running' in p.stdout and 'snapshot of the running training after epoch' in p.stdout, p.stdout
        done = int(p.stdout.split('after epoch ')[1].split()[0])
        chunks = sorted(out.glob('run.state.[0-9][0-9]'))
        state.mkdir(); [shutil.copy(f, state) for f in chunks + [out/'run.state.sha256']]
        with tarfile.open(fileobj=__import__('io').BytesIO(b''.join(f.read_bytes() for f in chunks))) as t: names = t.getnames()
        assert 'run/checkpoint_last.pt' in names and not any(n.endswith('.tmp') for n in names), names
    finally:
        os.killpg(int(pid.read_text()), signal.SIGKILL)                  # the machine is lost: only the snapshot survives
    assert 1 <= done < 6
    shutil.rmtree(run); pid.unlink(); (tmp_path/'run.calls').unlink()
    p = call(280)
    assert p.returncode == 0 and 'restored' in p.stdout and 'resuming' in p.stdout and 'train exit code 0' in p.stdout, p.stdout
    m = json.loads((run/'metrics.json').read_text())
    assert (m['status'], m['epochs_run']) == ('finished', 6) and 'OA' in m, m
    epochs = [json.loads(l)['epoch'] for l in (run/'log.jsonl').read_text().splitlines()]
    assert epochs == list(range(1, 7)), epochs      # the snapshot's epochs (consistent with its checkpoint), then the rest

def test_gpu_train_many_cpu(tmp_path):
    "gpu_train_many.sh runs two trainings in one call, returns all records in one archive and one run's state per call, in turn."
    import subprocess, sys, tarfile, signal
    root, out = Path(__file__).parent.parent, tmp_path/'out'; out.mkdir()
    runs = [tmp_path/'a', tmp_path/'b']
    specs = [f'{runs[0]}@0 --variant toy --epochs 2 --img-size 32 --seed 0 --device cpu',
             f'{runs[1]} --variant toy --epochs 2 --img-size 32 --seed 1 --device cpu']
    def call(*specs, **env):
        for f in out.iterdir(): f.unlink()                                   # each call's $OUT starts empty
        e = dict(os.environ, OUT=str(out), OMP_NUM_THREADS='1', MSMAMBA_MANY_CALLS=str(tmp_path/'many.calls'),
                 PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **env)
        return subprocess.run(['bash', str(root/'benchmarks'/'gpu_train_many.sh'), 'sample', '5', *specs], capture_output=True,
                              text=True, timeout=400, env=e, cwd=root)
    def members(k):
        with tarfile.open(out/f'many_{k}.tgz') as t: return t.getnames()
    try:
        p = call(*specs, MSMAMBA_BG_WAIT_S='280', MSMAMBA_STATE_RUN='auto')   # call 1: both train to the end; a's state back
        assert p.returncode == 0 and p.stdout.count('train exit code 0') == 2, p.stdout + p.stderr
        assert '==== a (GPU 0): call exit code 0' in p.stdout and '==== b (GPU default)' in p.stdout and 'state of a' in p.stdout
        for r in runs:
            m = json.loads((r/'metrics.json').read_text()); assert (m['status'], m['epochs_run']) == ('finished', 2) and 'OA' in m
        assert {'./a/a_1.tgz', './a/a_1.log', './b/b_1.tgz', './b/call.out', './b/call.rc'} <= set(members(1))
        assert sorted(f.name for f in out.iterdir() if 'state' in f.name)[-1] == 'a.state.sha256' and not list(out.glob('b.state*'))
        assert subprocess.run(['sha256sum', '--quiet', '-c', 'a.state.sha256'], cwd=out).returncode == 0
        p = call(*specs, MSMAMBA_BG_WAIT_S='60', MSMAMBA_STATE_RUN='auto')    # call 2: both have ended; b's state back, no retraining
        assert p.returncode == 0 and p.stdout.count('has ended') == 2 and 'state of b' in p.stdout, p.stdout
        assert list(out.glob('b.state.sha256')) and not list(out.glob('a.state*')) and './a/a_2.tgz' in members(2)
        assert all(len((r/'log.jsonl').read_text().splitlines()) == 2 for r in runs)
        for bad, msg in (((specs[0], specs[0]), "two specs name the run 'a'"), ((f'{runs[0]}@x1',), "GPU 'x1'"), ((), 'at least one')):
            p = call(*bad, MSMAMBA_BG_WAIT_S='1'); assert p.returncode == 2 and msg in p.stdout, p.stdout
        p = call(*specs, MSMAMBA_BG_WAIT_S='1', MSMAMBA_STATE_RUN='c'); assert p.returncode == 2 and "'c' is none of the runs" in p.stdout
        p = call(*specs); assert p.returncode == 2 and 'MSMAMBA_BG_WAIT_S' in p.stdout
        p = call(*specs, MSMAMBA_BG_WAIT_S='1', MSMAMBA_RESUME_ONLY='a c'); assert p.returncode == 2 and "names 'c'" in p.stdout
        assert (tmp_path/'many.calls').read_text().strip() == '2'          # refused calls are not counted
        new = f'{tmp_path/"c"} --variant toy --epochs 2 --img-size 32 --device cpu'   # a run whose state was not carried (yet)
        p = call(*specs, new, MSMAMBA_BG_WAIT_S='5', MSMAMBA_RESUME_ONLY='a\nb\tc')   # names split at any whitespace
        assert p.returncode == 3 and '==== c (GPU default): call exit code 3' in p.stdout and 'nothing started' in p.stdout, p.stdout
        assert p.stdout.count('has ended') == 2 and not (tmp_path/'c').exists()
        p = call(*specs, MSMAMBA_BG_WAIT_S='500'); assert p.returncode == 2 and 'over 540 s' in p.stdout
        d = [f'{tmp_path/"d"} --variant toy --epochs 2 --img-size 32 --device cpu']
        runs.append(tmp_path/'d')
        p = call(*d, MSMAMBA_BG_WAIT_S='0'); assert p.returncode == 0 and 'detached training started' in p.stdout, p.stdout
        p = call(*d, MSMAMBA_BG_WAIT_S='280', MSMAMBA_RESUME_ONLY='d')   # resume-only, but it trains (or has ended) here: not refused
        assert p.returncode == 0 and 'nothing started' not in p.stdout and 'started' not in p.stdout, p.stdout
        assert json.loads((tmp_path/'d'/'metrics.json').read_text())['status'] == 'finished'
    finally: _kill_detached(runs)                         # never leave a detached training behind

def test_concurrent_train_script_cpu(tmp_path):
    "benchmarks/concurrent_train.py (a GPU measurement) runs 1 and 2 processes through its barrier on the CPU and records each."
    import subprocess, sys
    script, out = Path(__file__).parent.parent/'benchmarks'/'concurrent_train.py', tmp_path/'c.json'
    args = ['--device', 'cpu', '--variant', 'toy', '--config', 'fp32', '--img-size', '32', '--batch', '2', '--seconds', '0.5',
            '--warmup', '1', '--procs', '1,2', '--out', str(out)]
    p = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert p.returncode == 0, p.stderr[-2000:]
    rec = json.loads(out.read_text())
    assert [r['procs'] for r in rec['rows']] == [1, 2] and [len(r['per_process']) for r in rec['rows']] == [1, 2]
    for r in rec['rows']:
        assert all(q['steps'] > 0 and q['seconds'] >= 0.5 for q in r['per_process'])
        assert abs(r["total_img_s"] - sum(q["img_s"] for q in r["per_process"])) < 1e-6 * r["total_img_s"]
    assert rec['rows'][1]['overlap_s'] > 0.4                         # the barrier makes the 2 windows overlap
    args[args.index('toy')] = 'nope'                                  # every process fails: the rows so far are kept, exit 1
    p = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=600)
    assert p.returncode == 1 and json.loads(out.read_text())['rows'] == [dict(procs=1, failed='exit codes [1]')], p.stdout
    bad = subprocess.run([sys.executable, str(script), '--procs', '0', '--device', 'cpu'], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and '--procs' in bad.stderr

def _shared_gpu_script(*args, cwd):
    import subprocess, sys
    return subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1]/'benchmarks'/'shared_gpu_from_logs.py'), *args],
                          capture_output=True, text=True, timeout=120, cwd=cwd)

def test_shared_gpu_from_logs_regenerates_its_record(tmp_path):
    "benchmarks/shared_gpu_from_logs.py recomputes the committed GPU-sharing record from the committed run logs."
    repo = Path(__file__).resolve().parents[1]
    rec = json.loads((repo/'paper_figures'/'data'/'shared_gpu_h100_610ed5a.json').read_text())
    cmd = rec['command'].split()
    cmd[cmd.index('--out') + 1] = str(tmp_path/'r.json')
    p = _shared_gpu_script(*cmd[1:], cwd=repo)
    assert p.returncode == 0, p.stderr[-2000:]
    new = json.loads((tmp_path/'r.json').read_text())
    assert {k: v for k, v in new.items() if k != 'command'} == {k: v for k, v in rec.items() if k != 'command'}

def test_shared_gpu_from_logs_logic(tmp_path):
    "Medians per range, each range's GPU from the sitting it ran in (start or resume), and refusals that name the fault."
    def run(name, ips, resumes):
        d = tmp_path/name; d.mkdir()
        (d/'config.json').write_text(json.dumps(dict(run_dir=f'runs/{name}')))
        (d/'env.json').write_text(json.dumps(dict(git=dict(commit='c0'), hardware=dict(gpus=[dict(name='G1')]), resumes=resumes)))
        (d/'log.jsonl').write_text(''.join(json.dumps(dict(epoch=e + 1, images_per_s=v)) + '\n' for e, v in enumerate(ips)))
        return d
    res = [dict(from_epoch=4, git=dict(commit='c1'), hardware=dict(gpus=[dict(name='G2')]))]
    a = run('a', [100, 300, 310, 290, 50, 700, 710, 690], res)          # epochs 1-4 on G1, 5-8 on G2 (resumed after 4)
    b = run('b', [50, 320, 330, 340, 300, 650, 640, 660], res)
    p = _shared_gpu_script('--shared', f'{a}:6-8', '--shared', f'{b}:6-8', '--alone', f'{a}:7-8', '--out', str(tmp_path/'o.json'), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    o = json.loads((tmp_path/'o.json').read_text())
    assert o['gpu'] == 'G2' and [s['median_img_s'] for s in o['shared']] == [700, 650] and o['alone']['median_img_s'] == 700
    assert o['shared_total_img_s'] == 1350 and o['ratio_shared_total_to_alone'] == round(1350/700, 3)
    assert [s['run'] for s in o['shared']] == ['a', 'b'] and o['shared'][0]['commit'] == 'c1'
    for args, why in [((f'{a}:2-4', f'{b}:2-4', f'{a}:6-8'), 'different GPUs'),    # G1 ranges against a G2 range
                      ((f'{a}:3-6', f'{b}:6-8', f'{a}:7-8'), 'spans a resume'),
                      ((f'{a}:6-9', f'{b}:6-8', f'{a}:7-8'), 'lacks epochs'),
                      ((f'{a}:8-6', f'{b}:6-8', f'{a}:7-8'), 'FIRST ≤ LAST'),
                      ((f'{a}:6-8', f'{a}:6-8', f'{a}:7-8'), 'different runs'),
                      ((f'{a}', f'{b}:6-8', f'{a}:7-8'), 'FIRST-LAST')]:
        p = _shared_gpu_script('--shared', args[0], '--shared', args[1], '--alone', args[2], cwd=tmp_path)
        assert p.returncode != 0 and why in p.stderr, (args, p.stderr)

def test_grouped_conv_ab_script_cpu(tmp_path):
    "benchmarks/grouped_conv_ab.py (a GPU A/B) runs end to end on the CPU at a tiny size and says it is only a smoke test there."
    import subprocess, sys
    script = Path(__file__).parent.parent/'benchmarks'/'grouped_conv_ab.py'
    out = tmp_path/'ab.json'
    p = subprocess.run([sys.executable, str(script), '--out', str(out), '--device', 'cpu', '--configs', 'fp32', '--img-size', '32',
                        '--batch', '2', '--rounds', '1', '--steps', '1'], capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert p.returncode == 0, p.stderr[-2000:]
    rec = json.loads(out.read_text())
    assert [r['config'] for r in rec['results']] == ['fp32'] and rec['results'][0]['depthwise_over_cudnn'] > 0
    assert len(rec['conv_alone']) == 4 and 'smoke test' in rec['note']
