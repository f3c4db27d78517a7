import os, pytest, torch

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
