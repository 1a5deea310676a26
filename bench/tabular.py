"""Tabular collab (metadata, cold start) benchmarks on the real ML-100k.

Run from the repo root: `python bench/tabular.py` (all parts) or `python bench/tabular.py warm cold_items cold_users foldin ablation`
(`cold_users` and `foldin` both print the cold-user table and the fold-in curve; `ablation` adds the feature ablation).
Warm: the benchmark split (u.data order, `RandomRatingSplitter(0.2, 42)`); cold items / cold users: `ColdItemSplitter(0.2, 42)` /
`ColdUserSplitter(0.2, 42)`; fold-in: k known ratings of each cold user revealed in a seeded order, the same rows scored for every k."""
import sys, warnings
import pandas as pd, torch
from harness import *
from fastai.learner import Learner
from fastai.losses import MSELossFlat
from collab_ext.models import DotProductBias
from collab_ext.learner import L2Penalty
from collab_ext.core import *
from collab_ext.data.split import *
from collab_ext.data.loaders import FastCollabDataLoaders
from collab_ext.tabular import *
from collab_ext.metrics.rating import rmse_np

warnings.simplefilter('ignore', CollabWarning)
torch.manual_seed(0); set_threads(1)
ML = ml100k()
USERS,ITEMS = movielens_tables(ML)
R = ML.ratings[['user','item','rating','timestamp']]
USER_CATS,USER_CONTS = ['gender','occupation','zip1'], ['age']
ITEM_CONTS = ['year'] + ML.genres
# the recipe: small batches, decoupled weight decay 0.2, 5 one-cycle epochs
RECIPE = dict(n_factors=50, layers=(64,), p_id=0.05, epochs=5, lr=5e-3, wd=0.2, bs=128)

def make_dls(splitter, cats=USER_CATS, conts=USER_CONTS+ITEM_CONTS, date_col='timestamp', bs=RECIPE['bs']):
    "TabularCollabDataLoaders of ML-100k with the given features"
    return TabularCollabDataLoaders.from_dfs(R, USERS, ITEMS, date_col=date_col, cat_names=cats, cont_names=conts,
                                             splitter=splitter, bs=bs, val_bs=8192, seed=0)

def fit(dls, epochs=RECIPE['epochs'], lr=RECIPE['lr'], wd=RECIPE['wd'], **kw):
    "A `tabular_collab_learner` trained with the recipe; returns (learn, seconds)"
    kw = {**{k:v for k,v in RECIPE.items() if k in ('n_factors','layers','p_id')}, **kw}
    torch.manual_seed(0)
    learn = tabular_collab_learner(dls, **kw)
    return learn, quiet_fit(learn, epochs, lr, wd=wd)

def row(name, rmse, base=None, secs=None):
    d = dict(model=name, rmse=round(rmse, 5))
    if base is not None: d['vs_baseline_%'] = round(100*(rmse/base-1), 3)
    if secs is not None: d['fit_s'] = round(secs, 1)
    print('  ', d, flush=True)
    return d

def show(title, rows):
    print(f"\n## {title}\n" + md_table(pd.DataFrame(rows)), flush=True)

def warm():
    sp = RandomRatingSplitter(**BENCH_SPLIT)
    rows = []
    fdls = FastCollabDataLoaders.from_df(R[['user','item','rating']], splitter=sp, bs=2048, val_bs=20_000, seed=0, unseen='keep')
    torch.manual_seed(0)
    dot = Learner(fdls, DotProductBias.from_dls(fdls, 50, y_range=(0, 5.5)), loss_func=MSELossFlat(), cbs=L2Penalty(0.1, rows='batch'))
    secs = quiet_fit(dot, 10, 1e-2, wd=0., pct_start=0.1)
    rows.append(row("id-only: DotProductBias, chapter-8 recipe (bench/chapter8.py: bs 2048, L2Penalty 0.1, 10 epochs)", valid_rmse(dot), secs=secs))
    l,s = fit(make_dls(sp, [], [], None), use_mlp=False)
    rows.append(row("id-only: TabularCollabModel, no features, no MLP", valid_rmse(l), secs=s))
    best_id = min(r['rmse'] for r in rows)
    for name,kw,(cats,conts,dc) in [
        ("hybrid towers (users+items metadata+date), no MLP", dict(use_mlp=False), (USER_CATS, USER_CONTS+ITEM_CONTS, 'timestamp')),
        ("hybrid towers + MLP (full TabularCollabModel)", {}, (USER_CATS, USER_CONTS+ITEM_CONTS, 'timestamp'))]:
        l,s = fit(make_dls(sp, cats, conts, dc), **kw)
        rows.append(row(name, valid_rmse(l), best_id, s))
    show("Warm: benchmark split (RandomRatingSplitter(0.2, 42)); vs_baseline = vs best id-only", rows)

def cold_rows(splitter, warm_side):
    "Loaders, train/valid rows, targets, the `warm_side`-bias baseline and the hybrid's rows for a cold-start split"
    dls = make_dls(splitter)
    tr,va = dls.splits
    train,valid = R.iloc[tr], R.iloc[va]
    y = valid.rating.to_numpy()
    base = rmse_np(BiasBaseline(warm_side).fit(train).predict(valid), y)
    rows = [row(f"{warm_side}-bias baseline (global mean + shrunk {warm_side} bias)", base, base)]
    l,s = fit(dls)
    for st in ('mean','tower'): rows.append(row(f"hybrid, strategy={st!r}", rmse_np(predict_cold(l, valid, st), y), base, s))
    return dls, l, train, valid, y, base, rows

def cold_items():
    dls, l, train, valid, y, base, rows = cold_rows(ColdItemSplitter(0.2, 42), 'user')
    show(f"Cold items: ColdItemSplitter(0.2, 42), {len(valid)} ratings of {valid.item.nunique()} unseen items", rows)

def cold_users(ablation=False):
    sp = ColdUserSplitter(0.2, 42)
    dls, l, train, valid, y, base, rows = cold_rows(sp, 'item')
    l1,s1 = fit(dls, p_id=0.1)
    rows.append(row("hybrid with id dropout p_id=0.1, strategy='tower'", rmse_np(predict_cold(l1, valid, 'tower'), y), base, s1))
    if ablation:
        for name,cats,conts in [("items metadata only (no user features)", [], ITEM_CONTS), ("+ gender", ['gender'], ITEM_CONTS),
                                ("+ age", [], ['age']+ITEM_CONTS), ("+ occupation", ['occupation'], ITEM_CONTS),
                                ("+ zip1", ['zip1'], ITEM_CONTS),
                                ("all user features but zip1 (chosen after this ablation, same split)", ['gender','occupation'], ['age']+ITEM_CONTS)]:
            la,sa = fit(make_dls(sp, cats, conts))
            rows.append(row(f"ablation: {name}, tower", rmse_np(predict_cold(la, valid, 'tower'), y), base, sa))
    show(f"Cold users: ColdUserSplitter(0.2, 42), {len(valid)} ratings of {valid.user.nunique()} unseen users", rows)
    return l, train, valid

def foldin(learn=None, train=None, cold=None):
    if learn is None: learn,train,cold = cold_users()
    curve = foldin_curve(learn, cold, train, ks=(0,1,2,3,5,8,10,15,20))
    for c in ('bias_foldin','tower','foldin'): curve[f'{c}_vs_item_bias_%'] = (100*(curve[c]/curve['item_bias']-1)).round(2)
    print("\n## Fold-in: cold users, k known ratings (seeded order), the same rows scored for every k\n" + md_table(curve.round(4), index=True), flush=True)
    return curve

if __name__ == '__main__':
    parts = sys.argv[1:] or ['warm','cold_items','foldin','ablation']
    with Timer() as t:
        if 'warm' in parts: warm()
        if 'cold_items' in parts: cold_items()
        if 'foldin' in parts or 'cold_users' in parts: foldin(*cold_users(ablation='ablation' in parts))
    print(f"\ntotal {t.secs:.0f} s")
