import os, socket, pytest, torch
import torch.distributed as dist
import torch.multiprocessing as mp

# Two cores on CI: keep torch from oversubscribing them. Under pytest-xdist (`make pytest` runs 2 workers) each
# worker gets one thread: the tests' tiny convolutions gain little from a second thread, much from a second process
torch.set_num_threads(1 if os.environ.get('PYTEST_XDIST_WORKER') else min(2, os.cpu_count() or 1))

@pytest.fixture
def no_fmnist(tmp_path, monkeypatch):
    "A machine without Fashion-MNIST anywhere: empty $SSL_DATA and an empty system folder"
    import self_supervised.data as data
    monkeypatch.setenv('SSL_DATA', str(tmp_path/'env'))
    monkeypatch.setattr(data, 'DEBIAN_FMNIST', tmp_path/'system')
    return tmp_path

# --- several processes: what the multi-process tests share --------------------------------------------------------
WORLD = 2   # processes of every multi-process test

def free_port() -> int:
    "A TCP port of the loopback interface that nothing listens on"
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def _rank(rank, fn, port, out, args, fastai):
    "One process: the environment of a `WORLD`-process gloo group (fastai/accelerate read it), `fn(rank, *args)`, its result saved"
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD),
                      ACCELERATE_USE_CPU='true')
    torch.set_num_threads(1)
    if not fastai: dist.init_process_group('gloo', rank=rank, world_size=WORLD)   # fastai's `distrib_ctx` starts its own
    try:
        res = fn(rank, *args)
        if dist.is_initialized(): dist.barrier()   # every process done before any closes its connections: gloo aborts one whose peer left mid-message
    finally:
        if dist.is_initialized(): dist.destroy_process_group()
    torch.save(res, out/f'{rank}.pt')

@pytest.fixture
def in_processes(tmp_path):
    """`in_processes(fn, *args, fastai=False)`: `fn(rank, *args)` in `WORLD` CPU processes of a gloo group (with
    `fastai=True`, only its environment: `learn.distrib_ctx()` starts the group); the list of their results"""
    def run(fn, *args, fastai=False):
        out = tmp_path/'ranks'; out.mkdir(exist_ok=True)
        mp.spawn(_rank, args=(fn, free_port(), out, args, fastai), nprocs=WORLD, join=True)
        return [torch.load(out/f'{r}.pt', weights_only=False) for r in range(WORLD)]
    return run

def fit_distributed(rank, setup, args, path=None):
    "For `in_processes(..., fastai=True)`: the Learner `setup(*args)` trained for 2 epochs in `learn.distrib_ctx()`; its weights and steps"
    import fastai.distributed  # noqa: F401 (Learner.distrib_ctx)
    learn = setup(*args)
    if path is not None: learn.path = path/f'rank{rank}'
    with learn.distrib_ctx(sync_bn=False, cpu=True):
        assert dist.get_world_size() == WORLD and dist.get_backend() == 'gloo'
        with learn.no_logging(): learn.fit(2)
        steps = learn.train_iter
        if path is not None: learn.save('ckpt')   # every process calls it, as a script would
    return dict(sd=learn.model.state_dict(), steps=steps)

def assert_trained_like_one(res:list, single, steps:int):
    "Every process of `res` (from `fit_distributed`) took `steps` steps and ended with the model of `single`, state included"
    want = single.model.state_dict()
    for r, o in enumerate(res):
        assert o['steps'] == steps, f'rank {r}: {o["steps"]} steps, not {steps}'
        assert o['sd'].keys() == want.keys(), f'rank {r}: other entries in the model'
        for k, v in want.items(): torch.testing.assert_close(o['sd'][k], v, atol=1e-5, rtol=1e-4, msg=lambda m: f'rank {r} {k}: {m}')
