"""Pretraining on users' own data: a folder of image files (tinted, resized Fashion-MNIST images in class subfolders,
two files that are not readable images), a fastai `DataBlock` without labels, a plain torch `Dataset`, every method of
the registry through the API, and the command line on the folder."""
import copy, math, re, warnings
from pathlib import Path
import numpy as np
import pytest, torch
from PIL import Image
from fastai.data.block import DataBlock
from fastai.data.core import DataLoaders
from fastai.data.transforms import get_image_files, RandomSplitter
from fastai.vision.data import ImageBlock
from fastai.vision.augment import Resize
from self_supervised.data import fashion_mnist, image_folder_dls
from self_supervised.registry import ALGOS, ssl_learner
from self_supervised.layers import create_encoder
from self_supervised.vision.simclr import SimCLR, create_simclr_model, get_simclr_aug_pipelines

CLASSES = (0, 1, 7)   # T-shirt, trouser, sneaker

def write_folder(root:Path, n=300, size=40, seed=0, classes=CLASSES) -> Path:
    "`n` Fashion-MNIST images of `classes`, tinted with a random colour each and resized, as png/jpg in class subfolders (some nested), and two broken files"
    ds, g = fashion_mnist(), np.random.default_rng(seed)
    idx = [i for i in range(len(ds.train_y)) if int(ds.train_y[i]) in classes][:n]
    for k, i in enumerate(idx):
        img = Image.fromarray(ds.train_x[i, 0].numpy()).resize((size, size)).convert('RGB')
        img = Image.fromarray((np.asarray(img) * (0.3 + 0.7 * g.random(3))).astype(np.uint8))
        d = root/f'class_{int(ds.train_y[i])}'/('more' if k % 7 == 0 else '')
        d.mkdir(parents=True, exist_ok=True)
        img.save(d/f'{k}.{"jpg" if k % 3 == 0 else "png"}')
    (root/f'class_{classes[0]}'/'not_an_image.png').write_bytes(b'\x00' * 100)
    png = next((root/f'class_{classes[1]}').glob('*.png')).read_bytes()
    (root/f'class_{classes[1]}'/'truncated.png').write_bytes(png[:len(png) // 2])
    return root

@pytest.fixture(scope='module')
def folder(tmp_path_factory): return write_folder(tmp_path_factory.mktemp('data')/'images')

@pytest.fixture(scope='module')
def folder_dls(folder):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        dls = image_folder_dls(folder, size=32, bs=16, num_workers=0)
    assert any('2 of the 302 image files are not readable' in str(o.message) and 'truncated.png' in str(o.message) for o in w)
    return dls

def _fit(learn, n_batches=2):
    "A short run: `n_batches` training batches of one epoch"
    from fastai.callback.core import Callback, CancelEpochException
    class Stop(Callback):
        def after_batch(self):
            if self.training and self.iter + 1 >= n_batches: raise CancelEpochException
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3, cbs=Stop())
    assert learn.train_iter == n_batches and all(math.isfinite(float(l)) for l in learn.recorder.losses)

@pytest.mark.parametrize('algo', list(ALGOS))
def test_every_method_trains_on_an_image_folder(algo, folder_dls):
    "Read from disk by fastai's DataBlock, colour, labelled by subfolder: the recipe's loaders (item indices added where needed)"
    learn = ssl_learner(folder_dls, algo, create_encoder('small_resnet', n_in=3, width=4))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        _fit(learn)
    # every image of the folder is labelled: SupCon has no unlabelled class to look for, and says nothing
    assert not [str(o.message) for o in w if 'unsup_class_id' in str(o.message)]
    if ALGOS[algo].labels: assert [c.unsup_class_id for c in learn.cbs if hasattr(c, 'unsup_class_id')] == [None]

def test_unlabelled_datablock_and_torch_dataset(folder):
    "The loaders users build themselves: an unlabelled DataBlock (no loss to infer) and `DataLoaders.from_dsets` over a torch Dataset of bytes"
    dblock = DataBlock(blocks=ImageBlock, get_items=get_image_files, splitter=RandomSplitter(0.1, seed=0), item_tfms=Resize(32))
    dls = dblock.dataloaders(folder/f'class_{CLASSES[2]}', bs=16, num_workers=0)   # a folder without broken files
    files = get_image_files(folder/f'class_{CLASSES[2]}')
    for algo in ('simclr', 'instdisc'):   # instdisc: item indices from a loader that has no labels
        _fit(ssl_learner(dls, algo, create_encoder('small_resnet', n_in=3, width=4)))
    # our folder loaders without labels: a plain fastai `Learner` and the SSL callback, no `loss_func`
    from fastai.learner import Learner
    udls = image_folder_dls(folder/f'class_{CLASSES[2]}', size=32, bs=16, num_workers=0)
    _fit(Learner(udls, create_simclr_model(create_encoder('small_resnet', n_in=3, width=4), 16, 8), cbs=SimCLR(get_simclr_aug_pipelines(32, stats=udls.stats))))
    class Bytes(torch.utils.data.Dataset):
        "What a plain PyTorch user writes: uint8 (C, H, W) tensors, no labels"
        def __init__(self, files): self.files = files
        def __len__(self): return len(self.files)
        def __getitem__(self, i): return torch.from_numpy(np.asarray(Image.open(self.files[i]).convert('RGB').resize((32, 32)))).permute(2, 0, 1)
    tdls = DataLoaders.from_dsets(Bytes(files[:64]), Bytes(files[64:80]), bs=16, num_workers=0)
    _fit(ssl_learner(tdls, 'moco', create_encoder('small_resnet', n_in=3, width=4)))
    _fit(ssl_learner(tdls, SimCLR(get_simclr_aug_pipelines(32, stats=None)), model=create_simclr_model(create_encoder('small_resnet', n_in=3, width=4), 16, 8)))

def test_too_small_for_a_batch_is_an_error(folder):
    "fewer training items than a batch: an error that names both numbers, not a run of zero steps"
    dblock = DataBlock(blocks=ImageBlock, splitter=RandomSplitter(0.5, seed=0), item_tfms=Resize(32))
    dls = dblock.dataloaders([f for f in get_image_files(folder) if f.suffix == '.jpg'][:20], bs=16, num_workers=0)
    msg = 'holds 10 items, fewer than one batch of bs=16.*use bs=10 or fewer'
    with pytest.raises(ValueError, match=msg): ssl_learner(dls, 'simclr', create_encoder('small_resnet', n_in=3, width=4))
    # a Learner built by hand (an unlabelled DataBlock has no loss for fastai's `Learner` to infer): the callback checks when training starts
    from self_supervised.callback import SSLLearner
    learn = SSLLearner(dls, create_simclr_model(create_encoder('small_resnet', n_in=3, width=4), 16, 8), cbs=SimCLR(get_simclr_aug_pipelines(32, stats=None)))
    with pytest.raises(ValueError, match=msg): learn.fit(1)

# --- the command line on image folders

def run_cli(*args):
    import os, subprocess, sys
    exe = Path(sys.executable).parent/'ssl-pretrain'
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=900, env=dict(os.environ))

def test_cli_on_a_folder_beats_the_random_encoder(tmp_path):
    "The whole command on a folder of 1,000 colour images of the 10 classes, read by fastai's workers: the kNN of the pretrained encoder beats the random one's"
    import json
    from self_supervised.layers import load_encoder
    data = write_folder(tmp_path/'clothes', n=1000, size=32, classes=tuple(range(10)))
    r = run_cli('--data', data, '--size', 32, '--bs', 64, '--epochs', 6, '--valid-pct', 0.2, '--probe', 'false', '--seed', 1, '--out', tmp_path/'out')
    assert r.returncode == 0, r.stderr[-3000:]
    assert '2 of the 1002 image files are not readable images' in r.stderr and 'truncated.png' in r.stderr
    assert f'{data} validation split (200 images, 10 classes)' in r.stdout
    out = json.loads((tmp_path/'out'/'results.json').read_text())
    assert out['args']['n_in'] == 3 and out['args']['size'] == 32
    knn = {k: v['knn'] for k, v in out['results'].items()}
    assert knn['simclr'] > knn['random'] + 0.05, knn   # measured: 0.625 against 0.425
    enc = load_encoder(tmp_path/'out'/'encoder.safetensors')
    assert enc(torch.rand(2, 3, 32, 32)).shape[0] == 2

@pytest.fixture(scope='module')
def small_folder(tmp_path_factory): return write_folder(tmp_path_factory.mktemp('cli')/'images', n=120, size=32)

def pretrain(data=None, out=None, **kwargs):
    "`ssl-pretrain --data data` called in this process: one epoch of batches of 16 at 32 px, kNN only"
    from self_supervised.cli import ssl_pretrain
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return ssl_pretrain(**{**dict(data=None if data is None else str(data), size=32, bs=16, epochs=1, probe=False, workers=0, out=str(out)), **kwargs})

@pytest.mark.parametrize('algo', list(ALGOS))
def test_cli_every_method_on_a_folder(algo, small_folder, tmp_path):
    res = pretrain(small_folder, tmp_path, algo=algo, valid_pct=0.25)
    assert set(res) == {'random', algo} and all(0 <= r['knn'] <= 1 for r in res.values())
    assert (tmp_path/'encoder.safetensors').exists() and (tmp_path/f'{algo}.png').exists()

def test_cli_unlabelled_folder_trains_exports_and_skips_the_evaluation(small_folder, tmp_path, capsys):
    "Images that sit in no class subfolder: the run trains and exports, and says why nothing is evaluated; `--eval-data` gives it labels; the export starts another run"
    import json, shutil
    from self_supervised.layers import load_encoder
    flat = tmp_path/'flat'; flat.mkdir()
    for f in get_image_files(small_folder/f'class_{CLASSES[2]}'): shutil.copy(f, flat/f.name)
    assert pretrain(flat, tmp_path/'a') is None
    out = capsys.readouterr().out
    assert f'The images of {flat} are not in class subfolders: no labels to evaluate with, so the evaluation is skipped' in out
    saved = json.loads((tmp_path/'a'/'results.json').read_text())
    assert saved['results'] is None and 'evaluation is skipped' in saved['evaluation']
    enc = load_encoder(tmp_path/'a'/'encoder.safetensors')
    # labels from another folder: the kNN's reference and test images come from its split
    res = pretrain(flat, tmp_path/'b', eval_data=str(small_folder), valid_pct=0.25)
    assert set(res) == {'random', 'simclr'} and f'{small_folder} validation split (30 images, 3 classes)' in capsys.readouterr().out
    # the exported encoder as the starting point of the next run: 'initial', not 'random', and its weights
    import self_supervised.cli as cli
    evaluated = []
    def spy(encoder, **kw): evaluated.append(copy.deepcopy(encoder)); return evaluate(encoder, **kw)
    evaluate, cli.evaluate_encoder = cli.evaluate_encoder, spy
    try: res = pretrain(small_folder, tmp_path/'c', pretrained_weights=str(tmp_path/'a'/'encoder.safetensors'), valid_pct=0.25)
    finally: cli.evaluate_encoder = evaluate
    assert set(res) == {'initial', 'simclr'}
    for a, b in zip(evaluated[0].state_dict().values(), enc.state_dict().values(), strict=True): assert torch.equal(a, b)

def _grey(root:Path) -> Path:
    for i in range(40):
        d = root/f'c{i % 2}'; d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (32, 32), dtype=np.uint8)).save(d/f'{i}.png')
    return root

CLI_ERRORS = [   # (how the folder is broken or the arguments wrong, the arguments, what the message must say)
    ('no such path', lambda t, f: dict(data=str(t/'nowhere')), r'--data .*nowhere: no such folder'),
    ('a file', lambda t, f: dict(data=str(next(f.rglob('*.png')))), r'is a file: pass the folder that holds the images'),
    ('no images', lambda t, f: dict(data=str((t/'empty').mkdir() or t/'empty')), r'--data: .*empty` holds no image files'),
    ('only broken files', lambda t, f: dict(data=str(_broken(t/'broken'))), r'None of the 2 image files is a readable image'),
    ('partial Fashion-MNIST', lambda t, f: dict(data=str(_partial_fmnist(t/'fm')), workers=None), r'lacks the Fashion-MNIST file\(s\) train-labels-idx1-ubyte.gz, t10k'),
    ('--n-train on a folder', lambda t, f: dict(data=str(f), n_train=100), r'--n-train applies to Fashion-MNIST, not to --data'),
    ('--valid-pct on Fashion-MNIST', lambda t, f: dict(data=None, valid_pct=0.2, workers=None), r'--valid-pct applies to image folders, not to --data fashion-mnist'),
    ('missing weights file', lambda t, f: dict(data=str(f), pretrained_weights=str(t/'w.safetensors')), r'--pretrained-weights .*w.safetensors: no such file'),
    ('colour method, grey images', lambda t, f: dict(data=str(_grey(t/'grey')), algo='splitbrain'), r'--algo splitbrain learns from colour, and the images of .*grey are grey'),
    ('labels, unlabelled folder', lambda t, f: dict(data=str(f/f'class_{CLASSES[2]}'), algo='supcon'), r'--algo supcon trains with class labels, and the images of .* are not in class subfolders'),
    ('unlabelled --eval-data', lambda t, f: dict(data=str(f), eval_data=str(f/f'class_{CLASSES[2]}'), valid_pct=0.25), r'--eval-data .*: its images are not in class subfolders'),
    ('no --eval-data folder', lambda t, f: dict(data=str(f), eval_data=str(t/'nowhere'), valid_pct=0.25), r'--eval-data: No image folder at `path=.*nowhere`'),
    ('batch larger than the split', lambda t, f: dict(data=str(f), bs=128), r'holds 108 items, fewer than one batch of bs=128.*use bs=108 or fewer'),
    ('two channels', lambda t, f: dict(data=str(f), n_in=2), r'`n_in` must be 1 \(grey\) or 3 \(colour\)'),
    ('unknown method', lambda t, f: dict(data=str(f), algo='simclr2'), r"Unknown --algo 'simclr2': choose one of simclr"),
]

def _broken(root:Path) -> Path:
    root.mkdir(); (root/'a.png').write_bytes(b'\x00' * 50); (root/'b.jpg').write_text('not a jpeg')
    return root

def _partial_fmnist(root:Path) -> Path:
    from self_supervised.data import FMNIST_FILES
    root.mkdir(); (root/FMNIST_FILES['train_x']).write_bytes(b'')
    return root

@pytest.mark.parametrize('case,args,msg', CLI_ERRORS, ids=[c[0] for c in CLI_ERRORS])
def test_cli_errors_on_folders(case, args, msg, small_folder, tmp_path):
    with pytest.raises(SystemExit) as e: pretrain(**{'out': tmp_path/'out', **args(tmp_path, small_folder)})
    assert re.search(msg, str(e.value)), str(e.value)
