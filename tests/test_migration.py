"""The "Simple Usage" examples of the README of self-supervised 1.0.4 (the older library this one succeeds) run
unchanged, and so do the 2.0 versions of the DINO and CLIP examples, which never ran, from nbs/90_migration.ipynb.

Each example is executed exactly as written (the strings below are copied from that README), in the namespace the
README assumed:

- `from fastai.vision.all import *`, then `from self_supervised.layers import *`: the algorithm modules never exported
  `create_encoder`, neither in 1.0 nor now; 1.0's tutorial imported it this way;
- `size`, `resize`, `bs` and `unsup_class_id`, and `get_dls(resize, bs)`: fastai `DataLoaders` of 3-channel images from a
  `DataBlock` on PNGs written into a temporary folder, with a class `unsup` for SupCon's unlabelled images;
- `Learner`: fastai's `Learner` plus a callback that stops `fit` after 2 training batches (`StopAfter`), so that the
  examples' `learn.fit_flat_cos(100, 1e-2)` costs seconds; it also keeps the losses and the weights before the fit.

The examples keep their timm model `tf_efficientnet_b4_ns` (pretrained=False; timm maps the deprecated name to
`tf_efficientnet_b4.ns_jft_in1k`), at `size=32` and `bs=8`. SwAV's and DINO's examples write their crop sizes,
128 and 96 px: they run with smaller batches (`bs=4` and `bs=2`).
"""
import json, math
from pathlib import Path
import numpy as np, pytest, torch
from PIL import Image
from fastai.vision.all import Learner, Callback, CancelFitException, ProgressCallback, L, noop

pytestmark = pytest.mark.filterwarnings('ignore:Mapping deprecated model name tf_efficientnet_b4_ns')   # the README's name

# ---------------------------------------------------------------- the README's examples, verbatim
README_SIMCLR = r'''from self_supervised.vision.simclr import *
dls = get_dls(resize, bs)
# encoder = create_encoder("xresnet34", n_in=3, pretrained=False) # a fastai encoder
encoder = create_encoder("tf_efficientnet_b4_ns", n_in=3, pretrained=False) # a timm encoder
model = create_simclr_model(encoder, hidden_size=2048, projection_size=128)
aug_pipelines = get_simclr_aug_pipelines(size=size)
learn = Learner(dls,model,cbs=[SimCLR(aug_pipelines, temp=0.07)])
learn.fit_flat_cos(100, 1e-2)
'''

README_MOCO = r'''from self_supervised.vision.moco import *
dls = get_dls(resize, bs)
# encoder = create_encoder("xresnet34", n_in=3, pretrained=False) # a fastai encoder
encoder = create_encoder("tf_efficientnet_b4_ns", n_in=3, pretrained=False) # a timm encoder
model = create_moco_model(encoder, hidden_size=2048, projection_size=128)
aug_pipelines = get_moco_aug_pipelines(size=size)
learn = Learner(dls, model,cbs=[MOCO(aug_pipelines=aug_pipelines, K=128)])
learn.fit_flat_cos(100, 1e-2)
'''

README_BYOL = r'''from self_supervised.vision.byol import *
dls = get_dls(resize, bs)
# encoder = create_encoder("xresnet34", n_in=3, pretrained=False) # a fastai encoder
encoder = create_encoder("tf_efficientnet_b4_ns", n_in=3, pretrained=False) # a timm encoder
model = create_byol_model(encoder, hidden_size=2048, projection_size=128)
aug_pipelines = get_byol_aug_pipelines(size=size)
learn = Learner(dls, model,cbs=[BYOL(aug_pipelines=aug_pipelines)])
learn.fit_flat_cos(100, 1e-2)
'''

README_SWAV = r'''from self_supervised.vision.swav import *
dls = get_dls(resize, bs)
encoder = create_encoder("xresnet34", n_in=3, pretrained=False) # a fastai encoder
encoder = create_encoder("tf_efficientnet_b4_ns", n_in=3, pretrained=False) # a timm encoder
model = create_swav_model(encoder, hidden_size=2048, projection_size=128)
aug_pipelines = get_swav_aug_pipelines(num_crops=[2,6],
                                       crop_sizes=[128,96], 
                                       min_scales=[0.25,0.05],
                                       max_scales=[1.0,0.3])
learn = Learner(dls, model, cbs=[SWAV(aug_pipelines=aug_pipelines, crop_assgn_ids=[0,1], K=bs*2**6, queue_start_pct=0.5)])
learn.fit_flat_cos(100, 1e-2)
'''

README_BARLOW_TWINS = r'''from self_supervised.vision.simclr import *
dls = get_dls(resize, bs)
# encoder = create_encoder("xresnet34", n_in=3, pretrained=False) # a fastai encoder
encoder = create_encoder("tf_efficientnet_b4_ns", n_in=3, pretrained=False) # a timm encoder
model = create_barlow_twins_model(encoder, hidden_size=2048, projection_size=128)
aug_pipelines = get_barlow_twins_aug_pipelines(size=size)
learn = Learner(dls,model,cbs=[BarlowTwins(aug_pipelines, lmb=5e-3)])
learn.fit_flat_cos(100, 1e-2)
'''

README_DINO = r'''from self_supervised.models.vision_transformer import *
from self_supervised.vision.dino import *
dls = get_dls(resize, bs)

deits16 = MultiCropWrapper(deit_small(patch_size=16, drop_path_rate=0.1))
dino_head = DINOHead(deits16.encoder.embed_dim, 2**16, norm_last_layer=True)
student_model = nn.Sequential(deits16,dino_head)

deits16 = MultiCropWrapper(deit_small(patch_size=16))
dino_head = DINOHead(deits16.encoder.embed_dim, 2**16, norm_last_layer=True)
teacher_model = nn.Sequential(deits16,dino_head)

dino_model = DINOModel(student_model, teacher_model)
aug_pipelines = get_dino_aug_pipelines(num_crops=[2,6],
                                       crop_sizes=[128,96], 
                                       min_scales=[0.25,0.05],
                                       max_scales=[1.0,0.3])
 learn = Learner(dls,model,cbs=[DINO(aug_pipelines=aug_pipelines)])
learn.fit_flat_cos(100, 1e-2)
'''

README_SUPCON = r'''from self_supervised.vision.supcon import *
dls = get_dls(resize, bs)
# encoder = create_encoder("xresnet34", n_in=3, pretrained=False) # a fastai encoder
encoder = create_encoder("tf_efficientnet_b4_ns", n_in=3, pretrained=False) # a timm encoder
model = create_supcon_model(encoder, hidden_size=2048, projection_size=128)
aug_pipelines = get_supcon_aug_pipelines(size=size)
learn = Learner(dls,model,cbs=[SupCon(aug_pipelines, unsup_class_id, unsup_method=UnsupMethod.All,                                               reg_lambda=1.0, temp=0.07)])
learn.fit_flat_cos(100, 1e-2)
'''

README_CLIP = r'''from self_supervised.multimodal.clip import *
dls = get_dls(...)
clip_tokenizer = ClipTokenizer()
vitb32_config_dict = vitb32_config(224, clip_tokenizer.context_length, clip_tokenizer.vocab_size)
clip_model = CLIP(**vitb32_config_dict, checkpoint=False, checkpoint_nchunks=0)
learner = Learner(dls, clip_model, loss_func=noop, cbs=[CLIPTrainer()])
learn.fit_flat_cos(100, 1e-2)
'''

README_CLIP_MOCO = r'''from self_supervised.multimodal.clip_moco import *
dls = get_dls(...)
clip_tokenizer = ClipTokenizer()
vitb32_config_dict = vitb32_config(224, clip_tokenizer.context_length, clip_tokenizer.vocab_size)
clip_model = CLIPMOCO(K=4096,m=0.999, **vitb32_config_dict, checkpoint=False, checkpoint_nchunks=0)
learner = Learner(dls, clip_model, loss_func=noop, cbs=[CLIPMOCOTrainer()])
learn.fit_flat_cos(100, 1e-2)
'''

# ---------------------------------------------------------------- the namespace they assumed
PRELUDE = 'from fastai.vision.all import *\nfrom self_supervised.layers import *\n'
SIZE, RESIZE, BS = 32, 40, 8
CLASSES = ('cat', 'dog', 'unsup')   # 'unsup': SupCon's unlabelled images
N_PER_CLASS = 8                     # 24 images, 18 for training: 2 batches of 8
NB = Path(__file__).resolve().parents[1]/'nbs'/'90_migration.ipynb'

class StopAfter(Callback):
    "Stop `fit` after `n` training batches; keep their losses and the model's state from before the fit"
    order = 100   # after the Recorder and the SSL callbacks
    def __init__(self, n=2): self.n = n
    def before_fit(self): self.losses, self.init = [], {k: v.detach().clone() for k, v in self.learn.model.state_dict().items()}
    def after_batch(self):
        if not self.training: return
        self.losses.append(self.learn.loss.item())
        if len(self.losses) >= self.n: raise CancelFitException

class ShortLearner(Learner):
    "The examples' `Learner`: fastai's, stopped after 2 training batches, without progress bar and logging"
    def __init__(self, *args, cbs=None, **kwargs):
        super().__init__(*args, cbs=L(cbs) + [StopAfter(2)], **kwargs)
        self.remove_cb(ProgressCallback)
        self.logger = noop

@pytest.fixture(scope='module')
def image_folder(tmp_path_factory):
    "Random 48 px RGB PNGs in one folder per class"
    path, rng = tmp_path_factory.mktemp('images'), np.random.default_rng(0)
    for c in CLASSES:
        (path/c).mkdir()
        for i in range(N_PER_CLASS): Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(path/c/f'{i}.png')
    return path

@pytest.fixture
def ns(image_folder):
    "A fresh namespace with what the README's examples assumed"
    g = {}
    exec(PRELUDE, g)
    DataBlock, ImageBlock, CategoryBlock = g['DataBlock'], g['ImageBlock'], g['CategoryBlock']
    def get_dls(resize, bs):
        "Labelled fastai `DataLoaders` of the PNGs, cropped to `resize` px, on the CPU (as 1.0's tutorial made them)"
        db = DataBlock((ImageBlock, CategoryBlock), get_items=g['get_image_files'], get_y=g['parent_label'],
                       splitter=g['RandomSplitter'](0.25, seed=0), item_tfms=g['RandomResizedCrop'](resize, min_scale=0.9))
        return db.dataloaders(image_folder, bs=bs, num_workers=0, device='cpu')
    g.update(size=SIZE, resize=RESIZE, bs=BS, get_dls=get_dls, Learner=ShortLearner,
             unsup_class_id=get_dls(RESIZE, BS).vocab.o2i['unsup'])
    # for the CLIP examples: images and their captions
    g['images'] = torch.randint(0, 256, (24, 3, RESIZE, RESIZE), dtype=torch.uint8)
    g['captions'] = [f'a photo of a {c} number {i}' for i, c in enumerate(['red cat', 'blue dog', 'green bird'] * 8)]
    return g

def run(code:str, ns:dict, **kwargs):
    "Execute `code` in a copy of `ns` (plus `kwargs`); its `learn` after checking that it trained 2 steps with finite losses"
    g = {**ns, **kwargs}
    exec(compile(code, '<example>', 'exec'), g)
    learn = g['learn']
    losses = learn.stop_after.losses
    assert len(losses) == 2 and all(math.isfinite(l) for l in losses), losses
    return learn, g

def changed(learn, prefix='encoder.') -> list:
    "Names of the model's parameters under `prefix` that the 2 steps changed"
    init = learn.stop_after.init
    return [k for k, p in learn.model.named_parameters() if k.startswith(prefix) and not torch.equal(p.detach(), init[k])]

def moved(module, init:dict) -> list:
    "Names of the parameters of a momentum copy that differ from the model's before the fit (the EMA moved them)"
    return [k for k, p in module.named_parameters() if not torch.equal(p.detach(), init[k])]

def nb_cell(first_line:str) -> str:
    "The code of the cell of nbs/90_migration.ipynb that starts with `first_line` (after its `#|` directives)"
    for c in json.loads(NB.read_text())['cells']:
        lines = ''.join(c['source']).splitlines()
        while lines and lines[0].startswith('#|'): lines = lines[1:]
        if c['cell_type'] == 'code' and lines and lines[0] == first_line: return '\n'.join(lines) + '\n'
    raise LookupError(f'No cell of {NB.name} starts with {first_line!r}')

# ---------------------------------------------------------------- the examples that run unchanged
def test_simclr(ns):
    learn, g = run(README_SIMCLR, ns)
    assert isinstance(learn.model, g['SimCLRModel']) and changed(learn)

def test_moco(ns):
    learn, _ = run(README_MOCO, ns)
    assert changed(learn)
    assert learn.moco.queue.shape == (128, 128) and learn.moco.queue_ptr == 2 * BS   # K=128: two batches of keys queued
    assert moved(learn.moco.encoder_k, learn.stop_after.init)

def test_byol(ns):
    learn, _ = run(README_BYOL, ns)
    assert changed(learn)
    assert moved(learn.byol.target, learn.stop_after.init)   # the target network follows the online one

def test_swav(ns):
    # bs=4: the example's 2+6 crops of 128 and 96 px through an EfficientNet-B4 cost ~7 s a step at bs=8 on 2 cores
    learn, _ = run(README_SWAV, ns, bs=4)
    assert changed(learn)
    assert [v.shape[-1] for v in learn.swav.views] == [128] * 2 + [96] * 6   # the crop sizes the example writes
    # 2.0 freezes the prototypes for the first 1% of training (both steps here); the queue starts at queue_start_pct=0.5
    assert not changed(learn, 'prototypes.') and learn.swav.queue_n == 0

def test_barlow_twins(ns):
    # the README imports `self_supervised.vision.simclr`, a NameError in 1.0 too: run it with the import it meant
    with pytest.raises(NameError, match='create_barlow_twins_model'): exec(README_BARLOW_TWINS, dict(ns))
    learn, _ = run(README_BARLOW_TWINS.replace('self_supervised.vision.simclr', 'self_supervised.vision.barlow_twins'), ns)
    assert changed(learn)

def test_supcon(ns):
    learn, _ = run(README_SUPCON, ns)
    assert changed(learn)
    assert learn.sup_con.unsup_class_id == ns['unsup_class_id']

# ---------------------------------------------------------------- DINO and CLIP: the README's never ran, 2.0's do
def test_readme_dino_and_clip_do_not_run():
    with pytest.raises(IndentationError): compile(README_DINO, '<example>', 'exec')
    for s in (README_CLIP, README_CLIP_MOCO): assert 'learner = Learner(' in s and 'learn.fit' in s   # `learn` is never made
    import self_supervised.multimodal.clip as clip, self_supervised.multimodal.clip_moco as clip_moco
    for name in ('ClipTokenizer', 'vitb32_config', 'CLIPTrainer'): assert not hasattr(clip, name)
    assert not hasattr(clip_moco, 'CLIPMOCOTrainer')

def test_dino(ns):
    # bs=2: ViT-S/16 on 8 crops of the README's 128 and 96 px costs about 10 s a step at bs=8 on 2 cores
    learn, _ = run(nb_cell('# DINO in 2.0 (tests/test_migration.py runs this cell)'), ns, bs=2)
    init = learn.stop_after.init
    assert changed(learn) and moved(learn.dino.teacher, init)
    assert learn.dino.center.abs().sum() > 0
    assert not changed(learn, 'head.last_layer.')   # frozen during the first epoch (freeze_last_layer=1)

def test_clip(ns):
    learn, _ = run(nb_cell('# CLIP in 2.0 (tests/test_migration.py runs this cell)'), ns)
    assert changed(learn) and changed(learn, 'text.')
    assert 0 <= learn.model.logit_scale.item() <= math.log(100)

def test_clip_moco(ns):
    learn, _ = run(nb_cell('# CLIP-MoCo in 2.0 (tests/test_migration.py runs this cell)'), ns)
    cb = learn.clipmoco
    assert changed(learn) and moved(cb.model_k, learn.stop_after.init)
    assert cb.img_queue.shape[0] == 4096 and cb.queue_ptr == 2 * BS
