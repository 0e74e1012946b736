"GPU tests of training (marked cuda: skipped without a GPU): a CUDA-graph run trains like an eager one."
import json
from pathlib import Path
import pytest, torch
from msmamba_nb.data import make_synthetic_dataset, load_data
from msmamba_nb.train import TrainConfig, train, load_checkpoint

pytestmark = pytest.mark.cuda

@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp('data')
    make_synthetic_dataset(root, 'MHIST', n_per_class=24, size=(40, 56))
    return root, load_data('MHIST', root)

@pytest.mark.parametrize('model', [dict(variant='toy'),
                                   dict(variant='t', model_kwargs=dict(depths=[1, 1, 1, 1], dims=[16, 32, 64, 128]))])
def test_cuda_graph_trains_like_eager(tiny, tmp_path, model):
    "Same seed, same batches (a partial last batch runs eagerly): graph and eager runs end at the same weights and logs."
    root, data = tiny
    base = dict(dataset='MHIST', data_root=str(root), epochs=3, batch_size=10, img_size=64, progress=False, device='cuda', **model)
    ms = {g: train(TrainConfig(**base, cuda_graph=g, run_dir=str(tmp_path/f'g{int(g)}')), data=data) for g in (False, True)}
    w = {g: load_checkpoint(tmp_path/f'g{int(g)}'/'checkpoint_last.pt')['model'] for g in (False, True)}
    for k in w[False]:
        if w[False][k].is_floating_point():
            torch.testing.assert_close(w[True][k], w[False][k], rtol=1e-3, atol=1e-5, msg=k)
    logs = {g: [json.loads(l) for l in (tmp_path/f'g{int(g)}'/'log.jsonl').read_text().splitlines()] for g in (False, True)}
    for a, b in zip(logs[False], logs[True]):
        assert a['lr'] == pytest.approx(b['lr'], rel=1e-6) and a['train_loss'] == pytest.approx(b['train_loss'], rel=1e-3)
    assert ms[True]['OA'] == pytest.approx(ms[False]['OA'], abs=0.05)
    assert json.loads((tmp_path/'g1'/'config.json').read_text())['cuda_graph'] is True
