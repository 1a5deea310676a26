"""The harness the ML-100k bench scripts share (`scale.py` and `threads.py` measure in fresh subprocesses and keep their
own few lines): threads, timing, the ML-100k benchmark split, stock fastai and
collab_ext loaders, quiet fits, peer libraries and tables.

Scripts run as `python bench/NAME.py` from the repo root, so `bench/` is on `sys.path`: `from harness import *`.
Real data comes from `$COLLAB_EXT_DATA` (default `../shared/data` beside the checkout, set here as in tests/conftest.py).

The benchmark split: ML-100k `u.data` in file order, `RandomRatingSplitter(0.2, 42)` (= `np.random.default_rng(42)
.permutation(100_000)`, first 80,000 rows train). Items only in the validation split are kept (`unseen='keep'`) and
scored with the `#na#` embedding, on both sides of a comparison.
"""
import os, sys, time, json
from pathlib import Path
os.environ.setdefault('COLLAB_EXT_DATA', str(Path(__file__).resolve().parents[2]/'shared'/'data'))
import numpy as np, pandas as pd, torch

__all__ = ['set_threads', 'timed', 'best_of', 'Timer', 'ml100k', 'benchmark_split', 'BENCH_SPLIT', 'stock_dls', 'fast_dls',
           'quiet_fit', 'valid_rmse', 'iterate', 'surprise_svd', 'peer_available', 'md_table', 'print_json']

BENCH_SPLIT = dict(valid_pct=0.2, seed=42)

def set_threads(n:int=1):
    "One torch thread by default: on a shared 2-core box multi-threaded kernels spin and slow small-batch training ~9x"
    torch.set_num_threads(n)
    os.environ['OMP_NUM_THREADS'] = str(n)

def timed(f, *args, **kwargs) -> tuple:
    "(seconds, result) of one call `f(*args, **kwargs)`"
    t = time.perf_counter()
    res = f(*args, **kwargs)
    return time.perf_counter() - t, res

def best_of(n:int, f, *args, **kwargs) -> tuple:
    "(fastest seconds, its result) over `n` calls, as `timeit` reports: a shared machine's hiccups only ever add time"
    runs = [timed(f, *args, **kwargs) for _ in range(n)]
    return min(runs, key=lambda o: o[0])

class Timer:
    "Context manager: `with Timer() as t: ...`, then `t.secs`"
    def __enter__(self): self.t0 = time.perf_counter(); return self
    def __exit__(self, *exc): self.secs = time.perf_counter() - self.t0

def ml100k():
    "The real ML-100k (`MovieLensData`) from `$COLLAB_EXT_DATA`; exits with a one-line message when it is missing"
    from collab_ext.core import local_ml100k, data_dir
    from collab_ext.data.load import load_movielens
    p = local_ml100k()
    if p is None: sys.exit(f"bench: real MovieLens-100k not found under {data_dir()}: set $COLLAB_EXT_DATA")
    return load_movielens(p)

def benchmark_split(r:pd.DataFrame) -> tuple:
    "(train rows, valid rows) of the benchmark split of ratings `r` (ML-100k in file order)"
    from collab_ext.data.split import RandomRatingSplitter
    return RandomRatingSplitter(BENCH_SPLIT['valid_pct'], BENCH_SPLIT['seed'])(r)

def stock_dls(r:pd.DataFrame, splits, bs:int=64):
    "fastai's `CollabDataLoaders.from_df`, verbatim (`TabularCollab` + `Categorify`), with `splits` in place of its `RandomSplitter`"
    from fastai.collab import TabularCollab
    from fastai.tabular.core import Categorify
    from fastai.data.block import TransformBlock
    to = TabularCollab(r[['user','item','rating']], [Categorify], ['user','item'], y_names=['rating'],
                       y_block=TransformBlock(), splits=[list(s) for s in splits])
    return to.dataloaders(path='.', bs=bs)

def fast_dls(r:pd.DataFrame, splits=None, bs:int=64, seed:int=42, **kwargs):
    "`FastCollabDataLoaders.from_df` on `r` with `splits` (default: the benchmark split), unseen validation ids kept"
    from collab_ext.data.loaders import FastCollabDataLoaders
    splits = benchmark_split(r) if splits is None else splits
    return FastCollabDataLoaders.from_df(r, bs=bs, seed=seed, splitter=lambda df: splits, unseen='keep', **kwargs)

def valid_rmse(learn) -> float:
    "RMSE (float64) of the predictions of a rating learner `learn` on its validation set (no metric needed during fit)"
    from collab_ext.metrics.rating import rmse_np
    with learn.no_bar(): p,y = learn.get_preds()
    return rmse_np(p.flatten(), y.flatten())

def quiet_fit(learn, epochs:int, lr=None, one_cycle:bool=True, **kwargs) -> float:
    "Seconds of `fit_one_cycle` (or `fit`) with no progress bar or logging"
    f = learn.fit_one_cycle if one_cycle else learn.fit
    with learn.no_bar(), learn.no_logging(): secs,_ = timed(f, epochs, lr, **kwargs)
    return secs

def iterate(dl, epochs:int=3) -> float:
    "Seconds to draw every batch of `dl` once (no model): the DataLoader's own cost per epoch"
    t = time.perf_counter()
    for _ in range(epochs):
        for b in dl: pass
    return (time.perf_counter() - t)/epochs

def peer_available(name:str) -> bool:
    "Whether the peer library `name` (surprise, implicit, lightfm, cornac) is installed (`pip install -e .[bench]`)"
    import importlib.util
    return importlib.util.find_spec(name) is not None

def surprise_svd(r:pd.DataFrame, splits, n_factors:int=100, n_epochs:int=100, lr_all:float=0.01, reg_all:float=0.15, seed:int=42) -> tuple:
    "(fit seconds, validation RMSE) of Surprise's SVD (its tuned settings for ML-100k by default) on `splits`; None without surprise"
    if not peer_available('surprise'): return None
    from surprise import SVD, Dataset, Reader, accuracy
    tr,va = splits
    data = Dataset.load_from_df(r.iloc[tr][['user','item','rating']], Reader(rating_scale=(1, 5)))
    algo = SVD(n_factors=n_factors, n_epochs=n_epochs, lr_all=lr_all, reg_all=reg_all, random_state=seed)
    secs,_ = timed(algo.fit, data.build_full_trainset())
    preds = algo.test(list(r.iloc[va][['user','item','rating']].itertuples(index=False, name=None)))
    return secs, accuracy.rmse(preds, verbose=False)

def md_table(df:pd.DataFrame, index:bool=False, floatfmt:str=None) -> str:
    "`df` as a GitHub markdown table (for BENCHMARKS.md), without needing `tabulate`; missing values left blank"
    df = df.reset_index() if index else df
    def fmt(v):
        if v is None or (isinstance(v, (float, np.floating)) and np.isnan(v)): return ''
        return format(v, floatfmt) if floatfmt and isinstance(v, (float, np.floating)) else str(v)
    lines = ['| ' + ' | '.join(map(str, df.columns)) + ' |', '|' + '---|'*len(df.columns)]
    lines += ['| ' + ' | '.join(fmt(v) for v in row) + ' |' for row in df.itertuples(index=False)]
    return '\n'.join(lines)

def print_json(obj):
    "Print `obj` as one JSON line (the last line of a `--json` run)"
    print(json.dumps(obj, default=float))
