"Shared pytest fixtures: the real ML-100k from `$COLLAB_EXT_DATA` (default ../shared/data)."
import os, warnings
import numpy as np, pandas as pd, pytest
from collab_ext.core import local_ml100k, data_dir, CollabWarning

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
