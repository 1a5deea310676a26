"""Ratings as classes vs MSE on the ML-100k benchmark split: expected-rating RMSE/MAE, accuracy, NLL, fit seconds.

Usage: python bench/ce.py [--epochs 10] [--bs 1024] [--lr 1e-2] [--seed 0] [--only NAME ...] [--no-half]
Every model gets the same budget (bs, epochs, one-cycle lr); each row's wd / n_factors is its own tuned setting.
MSE rows use fastai's `collab_learner` on `FastCollabDataLoaders`, scored with `mse_metrics(levels)` (accuracy rounds the
prediction to the nearest level); CE/ordinal rows with `ce_metrics()`. Metrics are off during the timed fit.
"""
import argparse, warnings
import numpy as np, torch
from harness import *
from fastai.collab import collab_learner
from fastai.callback.progress import ProgressCallback
from collab_ext.core import CollabWarning
from collab_ext.synth import synth_movielens
from collab_ext.data.split import RandomRatingSplitter
from collab_ext.data.loaders import FastCollabDataLoaders
from collab_ext.ce.data import CollabCEDataLoaders
from collab_ext.ce.all import *

# name: (kind, kwargs for the learner factory, wd). Settings tuned per model with the same budget (see BENCHMARKS.md):
# MSE dot: n_factors 10/20/50/100 x wd 0.1..1.0 -> nf 10, wd 0.3 best; NN rows: wd 0.3 vs 1.0 -> 1.0.
MODELS = {
    'MSE dot':     ('mse', dict(n_factors=10, y_range=(0, 5.5)), 0.3),
    'MSE NN':      ('mse', dict(use_nn=True, layers=[100], y_range=(0, 5.5)), 1.0),
    'CE dot':      ('ce', dict(n_factors=50), 0.6),
    'CE NN':       ('ce', dict(use_nn=True, layers=[100]), 1.0),
    'ordinal dot': ('ordinal', dict(n_factors=100), 0.7),
    'ordinal NN':  ('ordinal', dict(use_nn=True, layers=[100]), 1.0),
}

def scores(learn, metrics):
    "`metrics` (fastai metrics) of `learn` on its validation set, by name"
    learn.metrics = metrics
    return dict(zip(learn.metrics.attrgot('name'), learn.validate()[1:]))

def run(name, kind, kw, wd, fdls, cdls, args):
    torch.manual_seed(args.seed)
    learn = collab_learner(fdls, **kw) if kind=='mse' else collab_ce_learner(cdls, loss=kind, metrics=[], **kw)
    learn.remove_cb(ProgressCallback)
    with learn.no_logging(): secs,_ = timed(learn.fit_one_cycle, args.epochs, args.lr, wd=wd)
    res = scores(learn, mse_metrics(cdls.levels) if kind=='mse' else ce_metrics())
    return dict(model=name, wd=wd, **{'nll': float('nan'), 'ece': float('nan'), **res}, fit_s=secs)

def show(rows, title):
    print(f"\n{title}")
    print(f"{'model':<15}{'wd':>5}{'exp_rmse':>10}{'exp_mae':>9}{'accuracy':>10}{'nll':>8}{'within_1':>10}{'ece':>8}{'fit_s':>8}")
    for r in rows:
        print(f"{r['model']:<15}{r['wd']:>5}{r['exp_rmse']:>10.4f}{r['exp_mae']:>9.4f}{r['accuracy']:>10.4f}{r['nll']:>8.4f}"
              f"{r['within_1']:>10.4f}{r['ece']:>8.4f}{r['fit_s']:>8.1f}")

def loaders(df, args, splitter=None, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', CollabWarning)
        return (FastCollabDataLoaders.from_df(df, splitter=splitter, bs=args.bs, seed=42, **kw),
                CollabCEDataLoaders.from_df(df, splitter=splitter, bs=args.bs, seed=42, **kw))

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--epochs', type=int, default=10); ap.add_argument('--bs', type=int, default=1024)
    ap.add_argument('--lr', type=float, default=1e-2); ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--only', nargs='*'); ap.add_argument('--no-half', action='store_true')
    args = ap.parse_args()
    set_threads(1)
    ratings = ml100k().ratings[['user','item','rating']]
    split = RandomRatingSplitter(**BENCH_SPLIT)
    tr,va = benchmark_split(ratings)
    perm = np.random.default_rng(42).permutation(len(ratings))
    assert set(va) == set(perm[80_000:]), "benchmark split mismatch"
    fdls,cdls = loaders(ratings, args, split)
    names = args.only or list(MODELS)
    rows = [run(n, *MODELS[n], fdls, cdls, args) for n in names]
    show(rows, f"ML-100k benchmark split (80k/20k), bs={args.bs}, {args.epochs} epochs, fit_one_cycle lr={args.lr}, seed {args.seed}")
    by = {r['model']: r for r in rows}
    if 'MSE dot' in by:
        for n in ('CE dot','ordinal dot'):
            if n in by: print(f"{n} / MSE dot expected-rating RMSE: {by[n]['exp_rmse']/by['MSE dot']['exp_rmse']:.4f}")
    if args.no_half: return
    half = synth_movielens(levels=np.arange(.5, 5.01, .5), seed=7).ratings[['user','item','rating']]
    hf,hc = loaders(half, args, RandomRatingSplitter(0.2, 42), unseen='keep')
    print(f"\nhalf-star synthetic data: {hc.n_levels} levels {list(hc.vocab)}")
    hrows = [run(n, *MODELS[n], hf, hc, args) for n in ('MSE dot','CE dot','ordinal dot')]
    show(hrows, "synth_movielens(levels=0.5..5.0 step 0.5, seed=7), same code and settings")

if __name__ == '__main__': main()
