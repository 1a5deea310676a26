"Shared pytest fixtures: the real ML-100k from `$COLLAB_EXT_DATA` (default ../shared/data)."
import os
from pathlib import Path
import pytest

# The library looks for data only where it is told (`core.data_dir`: argument, `$COLLAB_EXT_DATA`, fastai's data folder);
# this repo's tests default the variable to `shared/data` beside the checkout, as `.ci/run` does.
os.environ.setdefault('COLLAB_EXT_DATA', str(Path(__file__).resolve().parents[2]/'shared'/'data'))
from collab_ext.core import local_ml100k, data_dir

IN_CI = os.environ.get('CI', '').lower() in ('1', 'true', 'yes')

# Small-batch CPU training is dominated by per-op overhead: one torch thread per process avoids oversubscribing
# the 2 cores when notebooks or test processes run side by side (2 threads measured up to 9x slower under load).
import torch
torch.set_num_threads(1)

def require_ml100k():
    "Path of the real ML-100k; fails under CI=true when it is missing, skips elsewhere"
    p = local_ml100k()
    if p is None:
        msg = f"real MovieLens-100k not found under {data_dir()} (set $COLLAB_EXT_DATA)"
        if IN_CI: pytest.fail(msg)
        pytest.skip(msg)
    return p

@pytest.fixture(scope='session')
def ml100k_path(): return require_ml100k()

@pytest.fixture(scope='session')
def ml100k(ml100k_path):
    "The loaded real ML-100k (`MovieLensData`); treat as read-only"
    from collab_ext.data.load import load_movielens
    return load_movielens(ml100k_path)

@pytest.fixture(scope='session')
def ratings(ml100k):
    "A copy of the real ML-100k ratings (u.data file order)"
    return ml100k.ratings.copy()

@pytest.fixture(scope='session')
def ml_dls(ratings):
    "`FastCollabDataLoaders` on the benchmark split of the real ML-100k (bs=4096, titles kept)"
    from collab_ext.data.split import RandomRatingSplitter
    from collab_ext.data.loaders import FastCollabDataLoaders
    return FastCollabDataLoaders.from_df(ratings[['user','item','rating','title']], splitter=RandomRatingSplitter(0.2, 42),
                                         bs=4096, seed=42, unseen='keep')

@pytest.fixture(scope='session')
def ml_dot_learn(ml_dls):
    "A 16-factor `DotProductBias` trained 2 epochs on `ml_dls` (shared, read-only: tests must not train it further)"
    from fastai.learner import Learner
    from fastai.losses import MSELossFlat
    import fastai.callback.schedule  # noqa: F401  (adds Learner.fit_one_cycle)
    from collab_ext.models import DotProductBias
    torch.manual_seed(0)
    learn = Learner(ml_dls, DotProductBias.from_dls(ml_dls, 16), loss_func=MSELossFlat())
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(2, 3e-2, wd=1.0)
    return learn
