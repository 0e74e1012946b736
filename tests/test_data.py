"Tests of msmamba_nb.data: registry, layouts, SARS splits, statistics, packs, the batched crop pipeline, errors."
import contextlib, csv, hashlib, io, json, math, random, shutil
from pathlib import Path
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from msmamba_nb import data as D
from msmamba_nb.data import (DATASETS, SPLITS, DataError, BadImageError, PackHashError, ImageSet, DeviceImages,
                             make_synthetic_dataset, make_synthetic_npz, make_synthetic_sars, load_data, locate_dataset,
                             scan_imagefolder, build_pack, load_pack, read_pack, pooled_mean_std, rrc_boxes,
                             resize_crops, eval_resize, epoch_plan, verify_sars, read_manifest, sars_splits,
                             split_summary, read_split_csv, split_csv_path, compute_sars_split, sample_pack_path)

SARS_DIR = Path(__file__).resolve().parents[1].parent/'shared'/'datasets'/'sars'
needs_sars = pytest.mark.skipif(not (SARS_DIR/'manifest.csv').is_file(),
                                reason=f'the SARS data (../shared/datasets/sars) is not present beside the repository')

# ---------------------------------------------------------------- registry and layouts
@pytest.mark.parametrize('name,k,gray', [('RPE', 4, True), ('MHIST', 2, False), ('SARS', 2, False),
                                         ('TissueMNIST', 8, True), ('MedFM_Colon', 2, False)])
def test_five_layouts(tmp_path, name, k, gray):
    info = DATASETS[name]
    size = (24, 24) if name == 'MHIST' else None
    d = make_synthetic_dataset(tmp_path, name, n_per_class=2, size=size)
    assert d.name == info.folder                                   # released folder name (TissueMnist, MedMf_Colon)
    src = next(d.rglob('*.png'))
    assert (Image.open(src).mode == 'L') == gray
    ld = load_data(name, tmp_path)
    assert ld.num_classes == k and ld.dataset == name
    assert info.num_classes in (None, k)                           # RPE: unknown, inferred from the folders
    assert D.auc_kind(k) == ('binary' if k == 2 else 'ovr')
    for s in SPLITS:
        assert len(ld.splits[s]) == 2 * k
        im = ld.splits[s].image(0)
        assert im.ndim == 3 and im.shape[2] == 3 and im.dtype == np.uint8
        if gray: assert (im[..., 0] == im[..., 1]).all() and (im[..., 1] == im[..., 2]).all()
    if name == 'TissueMNIST': assert ld.splits['train'].image(0).shape == (28, 28, 3)

def test_npz(tmp_path):
    make_synthetic_npz(tmp_path/'tissuemnist.npz', n=(16, 8, 8))
    assert locate_dataset('TissueMNIST', tmp_path)[0] == 'npz'
    ld = load_data('TissueMNIST', tmp_path)
    assert ld.num_classes == 8 and ld.class_names[0].startswith('Collecting Duct')
    assert [len(ld.splits[s]) for s in SPLITS] == [16, 8, 8]
    assert ld.splits['val'].labels.tolist() == list(range(8))
    assert ld.splits['test'].image(3).shape == (28, 28, 3)

def test_aliases():
    assert D.dataset_info('TissueMnist').name == 'TissueMNIST'
    assert D.dataset_info('MedMf_Colon').name == D.dataset_info('fm-colon').name == 'MedFM_Colon'
    with pytest.raises(KeyError, match='unknown dataset'): D.dataset_info('CIFAR10')

# ---------------------------------------------------------------- bad input names the culprit
def test_missing_split(tmp_path):
    d = make_synthetic_dataset(tmp_path, 'MHIST', 1, size=(8, 8)); shutil.rmtree(d/'val')
    with pytest.raises(DataError, match=r'missing split folder .*MHIST/val'): load_data('MHIST', tmp_path)

def test_class_sets_differ(tmp_path):
    d = make_synthetic_dataset(tmp_path, 'MHIST', 1, size=(8, 8))
    (d/'test'/'class_9').mkdir(); (d/'test'/'class_0'/'test_0_0.png').rename(d/'test'/'class_9'/'x.png')
    with pytest.raises(DataError, match=r"only in test: \['class_9'\]"): scan_imagefolder(d)

def test_missing_class_folder(tmp_path):
    d = make_synthetic_dataset(tmp_path, 'RPE', 1, size=(8, 8)); shutil.rmtree(d/'train'/'class_2')
    with pytest.raises(DataError, match=r"class folders differ .*missing in val: none; only in val: \['class_2'\]"):
        scan_imagefolder(d)

def test_empty_class(tmp_path):
    d = make_synthetic_dataset(tmp_path, 'MHIST', 1, size=(8, 8))
    for f in (d/'val'/'class_1').iterdir(): f.unlink()
    (d/'val'/'class_1'/'notes.txt').write_text('not an image')
    with pytest.raises(DataError, match=r'empty class folder .*val/class_1'): load_data('MHIST', tmp_path)

def test_no_class_folders(tmp_path):
    d = make_synthetic_dataset(tmp_path, 'MHIST', 1, size=(8, 8)); shutil.rmtree(d/'test'); (d/'test').mkdir()
    with pytest.raises(DataError, match=r'no class folders in .*MHIST/test'): load_data('MHIST', tmp_path)

def test_corrupt_image(tmp_path):
    d = make_synthetic_dataset(tmp_path, 'MHIST', 2, size=(8, 8))
    bad = d/'train'/'class_1'/'train_1_1.png'; bad.write_bytes(b'\x89PNG garbage')
    with pytest.raises(BadImageError, match='train_1_1.png'): load_data('MHIST', tmp_path)

def test_dataset_not_found(tmp_path):
    with pytest.raises(DataError, match='dataset MHIST not found'): load_data('MHIST', tmp_path)
    with pytest.raises(DataError, match='does not exist'): load_data('MHIST', tmp_path/'nope')

def test_npz_missing_key(tmp_path):
    np.savez(tmp_path/'tissuemnist.npz', train_images=np.zeros((2, 28, 28), np.uint8), train_labels=np.zeros((2, 1)))
    with pytest.raises(DataError, match='has no val_images'): load_data('TissueMNIST', tmp_path)

# ---------------------------------------------------------------- SARS splits and verification
def test_split_functions():
    labels = ['P'] * 50 + ['U'] * 30
    s = D.stratified_split(labels, seed=0)
    assert [int((s[:50] == k).sum()) for k in range(3)] == [35, 5, 10]
    assert [int((s[50:] == k).sum()) for k in range(3)] == [21, 3, 6]
    rng = np.random.default_rng(0)
    groups = [f'p{rng.integers(0, 25)}' for _ in labels]
    g = D.grouped_split(labels, groups, seed=0)
    for p in set(groups): assert len(set(g[np.array(groups) == p])) == 1
    assert all((g == k).any() for k in range(3))
    assert (D.grouped_split(labels, groups, seed=0) == g).all()

def test_synthetic_sars_split_and_verify(tmp_path):
    d = make_synthetic_sars(tmp_path/'sars', 30, n_patients=8)
    rows = read_manifest(d)
    sp, src = sars_splits(rows, 'patient')
    assert src.startswith('computed')
    summ = split_summary(rows, sp)
    assert summ['patient_overlap'] == {'train_test': 0, 'train_val': 0, 'val_test': 0}
    rep = verify_sars(d)
    assert rep['ok'] == 60 and rep['png_checked'] == 60 and not rep['pixel_hash_mismatch']
    f = d/rows[5]['file']; a = np.asarray(Image.open(f)).copy(); a[0, 0] ^= 1; Image.fromarray(a).save(f)
    (d/rows[6]['file']).unlink()
    rep = verify_sars(d)
    assert rep['pixel_hash_mismatch'] == [rows[5]['file']] and rep['missing'] == [rows[6]['file']]

@needs_sars
def test_committed_sars_splits():
    rows = read_manifest(SARS_DIR)
    for scheme in ('stratified', 'patient'):
        m = read_split_csv(split_csv_path(scheme))
        assert set(m) == {r['file'] for r in rows}
        assigned, src = sars_splits(rows, scheme)
        assert src.startswith('committed')
        summ = split_summary(rows, assigned)
        for s, n in zip(SPLITS, (9645, 1378, 2756)):          # 70/10/20 of 13,779 per class
            assert summ[s]['Parasitized'] == n and summ[s]['Uninfected'] == n
        if scheme == 'patient': assert sum(summ['patient_overlap'].values()) == 0
        else: assert summ['patient_overlap']['train_test'] == summ['patients_total'] == 200
        # the code still reproduces the committed file (it is authoritative; this guards the code)
        assert compute_sars_split(rows, scheme) == assigned

@needs_sars
def test_verify_real_webp_says_lossy():
    rows = read_manifest(SARS_DIR)[:20]
    rep = verify_sars(SARS_DIR, rows)
    assert rep['ok'] == 20 and rep['lossy_reencodes'] == 20 and rep['png_checked'] == 0
    assert 'lossy re-encodes' in rep['note'] and 'cannot match' in rep['note']

@needs_sars
def test_load_real_sars_subset():
    ld = load_data('SARS', SARS_DIR.parent, subset=3, workers=1)
    assert ld.class_names == ['Parasitized', 'Uninfected'] and [len(ld.splits[s]) for s in SPLITS] == [6, 6, 6]
    assert ld.fidelity['quality'] == 95 and 'WebP q95' in ld.fidelity['source']

# ---------------------------------------------------------------- statistics
def test_pooled_stats_any_sizes():
    rng = np.random.default_rng(1)
    ims = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(5, 9), (17, 3), (8, 8)]]
    st = pooled_mean_std(ImageSet.from_arrays(ims, [0, 1, 0]), chunk=7)
    px = np.concatenate([a.reshape(-1, 3) for a in ims]) / 255.0
    np.testing.assert_allclose(st['mean'], px.mean(0), atol=1e-6)
    np.testing.assert_allclose(st['std'], px.std(0), atol=1e-6)
    assert st['n_pixels'] == len(px)
    # get_means.py's recipe (mean of per-image stds) is smaller whenever image means differ
    two = ImageSet.from_arrays([np.zeros((3, 3, 3), np.uint8), np.full((3, 3, 3), 200, np.uint8)], [0, 0])
    assert D.per_image_std_mean(two) == [0.0] * 3 and pooled_mean_std(two)['std'][0] > 0.39

def test_cached_sars_stats():
    st = D.read_stats()
    for k in ('SARS:stratified', 'SARS:patient'):
        assert len(st[k]['mean']) == 3 and all(0 < v < 1 for v in st[k]['std']) and st[k]['n_images'] == 19290
    assert D.norm_stats('SARS')['mean'] == st['SARS:stratified']['mean']

# ---------------------------------------------------------------- packs
def test_pack_roundtrip_deterministic(tmp_path):
    make_synthetic_sars(tmp_path/'sars', 15)
    r1 = build_pack('SARS', tmp_path/'a.pack', tmp_path, workers=1)
    r2 = build_pack('SARS', tmp_path/'b.pack', tmp_path, workers=2)
    assert (tmp_path/'a.pack').read_bytes() == (tmp_path/'b.pack').read_bytes() and r1['sha256'] == r2['sha256']
    header, imgs = read_pack(tmp_path/'a.pack')
    assert header['encoding'] == 'webp' and header['quality'] == 85 and len(imgs) == 30
    assert all(p is not None and p > 25 for p in header['psnr_db'])
    ld = load_pack(tmp_path/'a.pack')
    src = load_data('SARS', tmp_path)
    for s in SPLITS:
        a = {f: (int(l), tuple(hw)) for f, l, hw in zip(ld.splits[s].files, ld.splits[s].labels, ld.splits[s].hw)}
        b = {f: (int(l), tuple(hw)) for f, l, hw in zip(src.splits[s].files, src.splits[s].labels, src.splits[s].hw)}
        assert a == b and len(a) == len(src.splits[s])
    assert ld.fidelity['pack_sha256'] == r1['sha256'] and ld.fidelity['quality'] == 85 and ld.fidelity['pack_split_scheme'] == 'stratified'
    # re-split at load time by the patient scheme: only possible with the committed CSV of the real data
    with pytest.raises(DataError, match='not in sars_patient_s0.csv.gz'): load_pack(tmp_path/'a.pack', split='patient')

def test_pack_lossless_npz(tmp_path):
    make_synthetic_npz(tmp_path/'tissuemnist.npz', n=(8, 8, 8))
    r = build_pack('TissueMNIST', tmp_path/'t.pack', tmp_path, lossless=True, workers=1)
    assert r['psnr_vs_source_db'] == {}                        # lossless: every PSNR is infinite (stored as null)
    ld, src = load_data('TissueMNIST', pack=tmp_path/'t.pack'), load_data('TissueMNIST', tmp_path)
    assert (ld.splits['val'].buf == src.splits['val'].buf).all()

def test_pack_errors(tmp_path):
    make_synthetic_sars(tmp_path/'sars', 5)
    build_pack('SARS', tmp_path/'a.pack', tmp_path, workers=1)
    raw = bytearray((tmp_path/'a.pack').read_bytes())
    bad = bytearray(raw); bad[-10] ^= 0xFF; (tmp_path/'bad.pack').write_bytes(bytes(bad))
    with pytest.raises(PackHashError, match=r'bad.pack is corrupt or was modified'): load_pack(tmp_path/'bad.pack')
    (tmp_path/'short.pack').write_bytes(bytes(raw[:-50]))
    with pytest.raises(PackHashError, match='short.pack'): load_pack(tmp_path/'short.pack')
    (tmp_path/'x.pack').write_bytes(b'PK\x03\x04' + bytes(100))
    with pytest.raises(DataError, match='not an msmamba pack'): load_pack(tmp_path/'x.pack')
    with pytest.raises(DataError, match='pack not found'): load_pack(tmp_path/'none.pack')
    with pytest.raises(DataError, match='holds SARS, not MHIST'): load_data('MHIST', pack=tmp_path/'a.pack')

def test_sample_pack():
    p = sample_pack_path()
    assert p.is_file() and p.stat().st_size < 2**20
    ld = load_pack('sample')
    assert ld.dataset == 'SARS' and ld.split_scheme == 'sample'
    assert sum(len(v) for v in ld.splits.values()) == 200
    for s in SPLITS: assert np.bincount(ld.splits[s].labels).tolist()[0] == np.bincount(ld.splits[s].labels).tolist()[1]
    m = read_split_csv(split_csv_path('stratified'))           # every sample cell comes from the default TEST split
    assert all(m[f][1] == 'test' for v in ld.splits.values() for f in v.files)
    assert ld.fidelity['psnr_vs_source_db']['mean'] > 38

# ---------------------------------------------------------------- the batched crop pipeline (CPU)
def _rrc_torchvision(height, width, rnd, scale=(0.08, 1.0), ratio=(3/4, 4/3)):
    "torchvision.transforms.RandomResizedCrop.get_params, transcribed with Python's random."
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rnd.uniform(*scale)
        aspect_ratio = math.exp(rnd.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect_ratio))); h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height: return rnd.randint(0, height - h), rnd.randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < min(ratio): w = width; h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio): h = height; w = int(round(h * max(ratio)))
    else: w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w

@pytest.mark.parametrize('h,w', [(130, 140), (60, 200), (300, 90)])
def test_rrc_matches_torchvision_distribution(h, w):
    n = 4000
    ref = torch.tensor([_rrc_torchvision(h, w, random.Random(i)) for i in range(n)]).double()
    new = rrc_boxes(torch.tensor([[h, w]] * n), torch.Generator().manual_seed(0)).double()
    assert ((new[:, :2] >= 0) & (new[:, :2] + new[:, 2:] <= torch.tensor([h, w]))).all()
    for f in (lambda b: b[:, 2] * b[:, 3] / (h * w), lambda b: b[:, 3] / b[:, 2], lambda b: (b[:, 0] + b[:, 2] / 2) / h):
        assert abs(float(f(new).mean() - f(ref).mean())) < 0.025
    assert abs(float((new[:, 2] == h).double().mean() - (ref[:, 2] == h).double().mean())) < 0.03  # fallback rate

def test_rrc_fallback_exact():
    for hw in [(1, 100), (100, 1), (2, 300)]:
        b = rrc_boxes(torch.tensor([hw]), torch.Generator().manual_seed(0))[0].tolist()
        assert tuple(b) == _rrc_torchvision(*hw, random.Random(0))

def test_resize_crops_matches_interpolate():
    rng = np.random.default_rng(0)
    ims = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(50, 61), (130, 97), (20, 33)]]
    d = DeviceImages(ImageSet.from_arrays(ims, [0, 1, 0]))
    boxes = torch.tensor([[0, 0, 50, 61], [7, 3, 120, 90], [2, 5, 11, 20]])   # enlarge, shrink (antialias), enlarge
    out = resize_crops(d, torch.tensor([0, 1, 2]), boxes, 40, rounded=False)
    for i, (t, l, h, w) in enumerate(boxes.tolist()):
        ref = torch.from_numpy(ims[i][t:t + h, l:l + w]).permute(2, 0, 1)[None].float()
        torch.testing.assert_close(out[i:i + 1], F.interpolate(ref, (40, 40), mode='bilinear', align_corners=False,
                                                               antialias=True), atol=2e-3, rtol=0)
    plain = resize_crops(d, torch.tensor([1]), boxes[1:2], 40, antialias=False, rounded=False)
    ref = torch.from_numpy(ims[1][7:127, 3:93]).permute(2, 0, 1)[None].float()
    torch.testing.assert_close(plain, F.interpolate(ref, (40, 40), mode='bilinear', align_corners=False), atol=2e-3, rtol=0)
    # the index order of a batch does not matter, and max_hw given by the host gives the same result
    out2 = resize_crops(d, torch.tensor([2, 0]), boxes[[2, 0]], 40, max_hw=(60, 70), rounded=False)
    torch.testing.assert_close(out2, out[[2, 0]], atol=1e-3, rtol=0)
    # by default the crops are rounded like the uint8 image torchvision's PIL path produces
    r = resize_crops(d, torch.tensor([0, 1, 2]), boxes, 40)
    assert torch.equal(r, r.to(torch.uint8).float()) and (r - out).abs().max() <= 0.5 + 1e-3

def test_eval_resize_and_normalize():
    rng = np.random.default_rng(2)
    ims = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(31, 40), (300, 250)]]
    e = eval_resize(ImageSet.from_arrays(ims, [0, 1]), 64, threads=2)
    assert e.dtype == torch.uint8 and e.shape == (2, 3, 64, 64)
    for i, a in enumerate(ims):
        ref = F.interpolate(torch.from_numpy(a).permute(2, 0, 1)[None].float(), (64, 64), mode='bilinear',
                            align_corners=False, antialias=True).round().clamp(0, 255)
        assert torch.equal(e[i], ref[0].to(torch.uint8))
    assert torch.equal(e, eval_resize(ImageSet.from_arrays(ims, [0, 1]), 64, threads=1))
    x = D.normalize(e.float(), [0.5, 0.4, 0.3], [0.2, 0.1, 0.3])
    torch.testing.assert_close(x[:, 1], (e[:, 1].float() / 255 - 0.4) / 0.1)

def test_epoch_plan():
    hw = torch.tensor([[40, 50], [60, 30], [20, 20]] * 10)
    o1, b1 = epoch_plan(hw, 0, 5); o2, b2 = epoch_plan(hw, 0, 5)
    assert torch.equal(o1, o2) and torch.equal(b1, b2) and sorted(o1.tolist()) == list(range(30))
    assert not torch.equal(o1, epoch_plan(hw, 1, 5)[0])
    assert ((b1[:, :2] + b1[:, 2:]) <= hw[o1]).all()

# ---------------------------------------------------------------- command line
@pytest.mark.parametrize('fn,words', [(D.main_pack, ['--quality', 'sha256', 'PSNR']), (D.main_stats, ['TRAINING', 'get_means']),
                                      (D.main_split, ['patient', 'stratified', '--verify'])])
def test_cli_help(fn, words, capsys):
    with pytest.raises(SystemExit) as e: fn(['--help'])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert all(w in out for w in words)

def test_cli_pack_split_stats(tmp_path, capsys):
    make_synthetic_sars(tmp_path/'sars', 10)
    assert D.main_pack(['--data-root', str(tmp_path), '--out', str(tmp_path/'s.pack'), '--workers', '1']) == 0
    assert json.loads(capsys.readouterr().out)['n'] == 20
    assert D.main_split(['--data-root', str(tmp_path), '--verify']) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep['patient']['patient_overlap']['train_test'] == 0 and rep['verify']['ok'] == 20
    assert rep['stratified']['csv_exists'] and rep['stratified']['computed_matches_csv'] is False  # not the real manifest
    assert D.main_stats(['--pack', str(tmp_path/'s.pack')]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st['key'] == 'SARS:stratified' and st['written'] is False and len(st['std']) == 3
    assert D.main_stats(['--dataset', 'RPE', '--data-root', str(tmp_path)]) == 2
    assert 'dataset RPE not found' in capsys.readouterr().err

@needs_sars
def test_pack_resplit_by_patient_records_both_splits(tmp_path):
    "A real SARS pack built with the stratified split loads re-split by patient; its fidelity still names the pack's own split."
    build_pack('SARS', tmp_path/'r.pack', SARS_DIR.parent, subset=3, workers=1)   # 3 cells per class and split
    ld = load_pack(tmp_path/'r.pack', split='patient')
    assert ld.split_scheme == 'patient' and ld.split_source == 'committed sars_patient_s0.csv.gz'
    assert ld.fidelity['pack_split_scheme'] == 'stratified' and ld.summary()['split_scheme'] == 'patient'
    m = read_split_csv(split_csv_path('patient'))
    assert all(m[f][1] == s for s, v in ld.splits.items() for f in v.files)

def test_pack_keeps_its_own_split_by_default(tmp_path):
    "load_data(pack=...) without a split uses the pack's recorded scheme (no silent re-split); a folder defaults to stratified."
    make_synthetic_sars(tmp_path/'sars', 15)
    build_pack('SARS', tmp_path/'p.pack', tmp_path, split='patient', workers=1)
    assert load_data('SARS', pack=tmp_path/'p.pack').split_scheme == 'patient'
    assert load_data('SARS', tmp_path).split_scheme == 'stratified'
