"""Chapter 8 models on the benchmark split: stock fastai's chapter run vs collab_ext's `DotProductBias` recipe,
and `predict_ratings` vs per-row `learn.predict`.

Run: python bench/chapter8.py [--seeds 3] [--sample 200] [--threads 1]
Torch runs single-threaded by default for both sides: on a shared 2-core box, multi-threaded OpenMP kernels spin and
slow small-batch training ~9x, which would flatter the recipe.
The benchmark split: ML-100k in u.data order, `RandomRatingSplitter(0.2, 42)` (np.random.default_rng(42).permutation,
first 80,000 rows train). Items only in the validation split are kept and scored with the `#na#` embedding, in both runs.
"""
import argparse, warnings
from harness import *      # quiet_fit, timed, Timer, stock_dls, ml100k, benchmark_split, set_threads
import numpy as np, pandas as pd, torch
from fastai.collab import collab_learner
from fastai.metrics import rmse
from fastai.callback.schedule import *
from collab_ext.core import CollabWarning
from collab_ext.data.split import RandomRatingSplitter
from collab_ext.data.loaders import FastCollabDataLoaders
from collab_ext.fastloop import LeanLearner, PlainMSELossFlat
from collab_ext.models import DotProductBias
from collab_ext.learner import L2Penalty

def fit(learn, epochs, lr, **kwargs):
    "`fit_one_cycle` quietly; return (seconds, final valid RMSE)"
    return quiet_fit(learn, epochs, lr, **kwargs), float(learn.recorder.values[-1][2])

def recipe(r, seed=0, bs=2048, n_factors=50, epochs=10, lr=1e-2, reg=0.1):
    "collab_ext's recipe: fast loaders, big batches, per-row L2 in the loss instead of decoupled wd, short warm-up"
    torch.manual_seed(seed)
    t_dls,dls = timed(FastCollabDataLoaders.from_df, r[['user','item','rating','title']], splitter=RandomRatingSplitter(0.2, 42),
                      bs=bs, val_bs=20_000, seed=seed, unseen='keep')
    learn = LeanLearner(dls, DotProductBias.from_dls(dls, n_factors, y_range=(0, 5.5)), loss_func=PlainMSELossFlat(), metrics=rmse,
                        cbs=L2Penalty(reg, rows='batch'))
    t_fit,err = fit(learn, epochs, lr, wd=0., pct_start=0.1)
    return learn, t_dls, t_fit, err

def main(seeds=3, sample=200):
    r = ml100k().ratings
    splits = benchmark_split(r)
    rows = []
    # stock fastai, the chapter's run
    torch.manual_seed(0)
    t_dls,dls = timed(stock_dls, r, splits)
    learn = collab_learner(dls, n_factors=50, y_range=(0, 5.5), metrics=rmse)
    t_fit,err = fit(learn, 5, 5e-3, wd=0.1)    # stock fastai: its Learner and loop (importing collab_ext patches nothing)
    rows.append(('stock fastai: CollabDataLoaders bs=64, collab_learner(50), fit_one_cycle(5, 5e-3, wd=0.1)', 0, err, t_dls, t_fit))
    stock_fit = t_fit
    # DotProductBias with fastai's decoupled wd at large batch (the ~0.918 plateau)
    torch.manual_seed(0)
    fdls = FastCollabDataLoaders.from_df(r[['user','item','rating','title']], splitter=RandomRatingSplitter(0.2, 42), bs=1024, val_bs=20_000, seed=0, unseen='keep')
    l = LeanLearner(fdls, DotProductBias.from_dls(fdls, 50), loss_func=PlainMSELossFlat(), metrics=rmse)
    t_fit,err = fit(l, 10, 1e-2, wd=1.0)
    rows.append(('DotProductBias bs=1024, fit_one_cycle(10, 1e-2, wd=1.0) (decoupled wd only)', 0, err, 0., t_fit))
    # the recipe, several seeds
    for s in range(seeds):
        learn, t_dls, t_fit, err = recipe(r, seed=s)
        rows.append(('recipe: DotProductBias bs=2048, L2Penalty(0.1, rows="batch"), fit_one_cycle(10, 1e-2, wd=0, pct_start=0.1)', s, err, t_dls, t_fit))
    df = pd.DataFrame(rows, columns=['run','seed','valid_rmse','dls_s','fit_s'])
    df['fit_speedup_vs_stock'] = stock_fit / df.fit_s
    with pd.option_context('display.max_colwidth', 120, 'display.width', 250): print(df.to_string(index=False, float_format='%.4f'))
    rec = df[df.run.str.startswith('recipe')]
    print(f"\nrecipe RMSE mean {rec.valid_rmse.mean():.4f} (max {rec.valid_rmse.max():.4f}); "
          f"fit speed-up vs stock: median {rec.fit_speedup_vs_stock.median():.1f}x (min {rec.fit_speedup_vs_stock.min():.1f}x)")

    # predict_ratings: every user x every item in one call vs learn.predict per row
    u_ids,i_ids = r.user.unique(), r.item.unique()
    grid = pd.DataFrame({'user': np.repeat(u_ids, len(i_ids)), 'item': np.tile(i_ids, len(u_ids))})
    t_all,preds = timed(learn.predict_ratings, grid, unknown='na')
    assert len(preds) == len(u_ids)*len(i_ids) == 943*1682
    va = r.iloc[splits[1]]
    va = va[va.item.isin(learn.dls.known_items())].sample(sample, random_state=0)
    with learn.no_bar(), Timer() as t: singles = np.array([float(learn.predict(row)[0]) for _,row in va.iterrows()])
    t_one = t.secs
    np.testing.assert_allclose(singles, learn.predict_ratings(va[['user','item']]), rtol=1e-5, atol=1e-5)
    per_pair_batched, per_pair_single = t_all/len(grid), t_one/sample
    print(f"\npredict_ratings: {len(grid):,} pairs in {t_all:.2f}s ({per_pair_batched*1e6:.2f} us/pair); "
          f"learn.predict: {sample} rows in {t_one:.2f}s ({per_pair_single*1e3:.2f} ms/row); "
          f"per-pair speed-up {per_pair_single/per_pair_batched:,.0f}x")

if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--seeds', type=int, default=3); p.add_argument('--sample', type=int, default=200)
    p.add_argument('--threads', type=int, default=1)
    a = p.parse_args()
    set_threads(a.threads)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', CollabWarning)
        main(a.seeds, a.sample)
