"""Rating accuracy on the ML-100k benchmark split (issue 14): the ablation of `collab_ext.rating` and the winner against peers.

Run from the repo root: `python bench/accuracy.py` (three seeds), `--quick` (seed 0, fewer rows), `--json` (also print every row
as one JSON line: model, seed, rmse, mae, fit_s, cpu_s), `--seeds 0 1 2`, `--no-peers`, `--members ordinal autorec ordinal-nn`
(only these members and the blends they make), `--no-hybrid-ablation` (leave out the ordinal / time-bias hybrid rows).
Only training rows inform a prediction: members and blend weights are fitted on the 80,000 training rows (the blend weights on
a 10% slice of them); the validation rows are scored once, at the end. Fit seconds are wall-clock on a shared machine.
Ablation rows come from one set of member fits per seed: each member is fitted (a) on the training rows less the 10% holdout
slice, scored on the slice (blend weights) and (b) refitted on all training rows, exactly as `RatingLearner.fit_recipe` does
(same seeds: member k of a recipe gets seed+k); a blend's fit time is the sum of its members' (a) and (b) times (wall; `cpu_s`: process CPU seconds, less sensitive to other jobs on the machine)."""
import argparse, itertools, time, warnings
from functools import partial
import numpy as np, pandas as pd, torch
from harness import *
from fastai.learner import Learner
from fastai.losses import MSELossFlat
from fastai.collab import collab_learner
from collab_ext.core import *
from collab_ext.models import DotProductBias
from collab_ext.learner import L2Penalty
from collab_ext.data.loaders import FastCollabDataLoaders, train_codes
from collab_ext.data.split import RandomRatingSplitter
from collab_ext.rating.all import *

warnings.simplefilter('ignore', CollabWarning)
ROWS = []

def add(model, seed, pred, y, secs, kind, cpu=None):
    "Record one row (RMSE, MAE of clipped predictions `pred` against `y`)"
    pred = np.clip(np.asarray(pred, dtype=np.float64), 1, 5)
    d = dict(model=model, kind=kind, seed=seed, rmse=float(np.sqrt(((pred-y)**2).mean())), mae=float(np.abs(pred-y).mean()), fit_s=float(secs),
             cpu_s=None if cpu is None else float(cpu))
    ROWS.append(d)
    print(f"  {model:<58} seed {seed}  rmse {d['rmse']:.4f}  mae {d['mae']:.4f}  fit {secs:6.1f}s" + (f" (cpu {cpu:.1f}s)" if cpu else ''), flush=True)

# Members, in the order the winner's recipe seeds them (member k gets seed+k): ordinal 0, autorec 1, then the others
MEMBERS = {'ordinal': OrdinalMember(), 'autorec': AutoRecMember(), 'ordinal-nn': OrdinalMember(use_nn=True), 'ordinal++': OrdinalMember(user_side=True),
           'ordinal++items': OrdinalMember(user_side=True, item_side=True, name='ordinal++items'), 'u-autorec': AutoRecMember(user_based=True)}
WINNER = ('ordinal','autorec','ordinal-nn')     # `best_members()`, same order (same seeds)
MEMBER_LABEL = {'ordinal': 'ordinal dot (collab_ext.ce recipe, 100 factors)',
                'ordinal++': '+ SVD++ implicit user vectors (ordinal++)',
                'ordinal++items': '+ SVD++ user and item-side implicit vectors',
                'autorec': 'item AutoRec (neural; autorec_learner)', 'u-autorec': 'user AutoRec (the mirror)',
                'ordinal-nn': '+ NeuMF paths, dot product kept (OrdinalMember(use_nn=True))'}
BLENDS = [WINNER, ('ordinal','autorec'), ('ordinal++','autorec'), ('ordinal++items','autorec'), ('ordinal','autorec','u-autorec'),
          ('ordinal++items','autorec','u-autorec'), ('ordinal','ordinal++items','autorec','u-autorec'), ('ordinal','ordinal-nn'),
          ('ordinal-nn','autorec')]

def ablation(dls, y, seed, names):
    "Fit every member twice (holdout stage, refit) and score members and blends"
    r = train_codes(dls)[2]
    n = len(r)
    idx = np.random.default_rng(seed).permutation(n)
    cut = int(round(n*0.9))
    keep,hold = np.sort(idx[:cut]),np.sort(idx[cut:])
    xh,xv = dls.train_ds.x[torch.as_tensor(hold)],dls.valid_ds.x
    ph,pv,pv_h,t_h,t_f,c_h,c_f = {},{},{},{},{},{},{}
    for k,name in enumerate(names):
        rec = MEMBERS[name]
        t0,c0 = time.perf_counter(),time.process_time(); m = fit_member(dls, rec, keep, seed+k)
        t_h[name],c_h[name] = time.perf_counter()-t0,time.process_time()-c0
        with torch.no_grad(): ph[name],pv_h[name] = m.ratings_of(xh).numpy(),m.ratings_of(xv).numpy()
        t0,c0 = time.perf_counter(),time.process_time(); m = fit_member(dls, rec, None, seed+k)
        t_f[name],c_f[name] = time.perf_counter()-t0,time.process_time()-c0
        with torch.no_grad(): pv[name] = m.ratings_of(xv).numpy()
        add(MEMBER_LABEL[name], seed, pv[name], y, t_f[name], 'ablation', c_f[name])
    for bl in BLENDS:
        if not all(b in names for b in bl): continue
        w,b = fit_blend_weights(np.stack([ph[o] for o in bl], 1), r[hold])
        label = 'blend ' + ' + '.join(bl)
        if bl == WINNER:
            add(label + ', members not refitted (90% of training rows)', seed, np.stack([pv_h[o] for o in bl], 1)@w + b, y,
                sum(t_h[o] for o in bl), 'ablation', sum(c_h[o] for o in bl))
            label = 'WINNER rating_learner: ' + label
        add(label, seed, np.stack([pv[o] for o in bl], 1)@w + b, y, sum(t_h[o]+t_f[o] for o in bl), 'winner' if 'WINNER' in label else 'ablation',
            sum(c_h[o]+c_f[o] for o in bl))

def peers(r, splits, dls, y, seed, quick):
    "Stock fastai, DotProductBias, the hybrid, Surprise SVD / SVD++ / KNNBaseline on the same split"
    tr,va = splits
    fdls = FastCollabDataLoaders.from_df(r[['user','item','rating']], splitter=RandomRatingSplitter(**BENCH_SPLIT), bs=64, seed=seed)
    torch.manual_seed(seed)
    learn = collab_learner(fdls, n_factors=50, y_range=(0, 5.5))
    secs = quiet_fit(learn, 5, 5e-3, wd=0.1)
    add('fastai collab_learner (chapter recipe: 50 factors, 5 epochs 5e-3, wd 0.1, bs 64)', seed, learn.predict_ratings(r.iloc[va], unknown='na'), y, secs, 'peer')
    dls2 = FastCollabDataLoaders.from_df(r[['user','item','rating']], splitter=RandomRatingSplitter(**BENCH_SPLIT), bs=2048, seed=seed)
    torch.manual_seed(seed)
    dot = Learner(dls2, DotProductBias.from_dls(dls2, 50, y_range=(0, 5.5)), loss_func=MSELossFlat(), cbs=L2Penalty(0.1, rows='batch'))
    secs = quiet_fit(dot, 10, 1e-2, wd=0., pct_start=0.1)
    add('DotProductBias (chapter-8 recipe: bs 2048, L2Penalty 0.1, 10 epochs)', seed, dot.predict_ratings(r.iloc[va], unknown='na'), y, secs, 'peer')
    if not quick: hybrid(r, y, seed)
    if peer_available('surprise'): surprise_rows(r, splits, y, seed, quick)
    else: print("  (scikit-surprise not installed: `pip install -e .[dev]` for the Surprise rows)")

def hybrid(r, y, seed):
    "The metadata hybrid (`tabular_collab_learner` towers, no MLP; bench/tabular.py's recipe)"
    from collab_ext.tabular import TabularCollabDataLoaders, movielens_tables, tabular_collab_learner
    ml = ml100k()
    users,items = movielens_tables(ml)
    R = ml.ratings[['user','item','rating','timestamp']]
    tdls = TabularCollabDataLoaders.from_dfs(R, users, items, date_col='timestamp', cat_names=['gender','occupation','zip1'],
                                             cont_names=['age','year']+ml.genres, splitter=RandomRatingSplitter(**BENCH_SPLIT),
                                             bs=128, val_bs=8192, seed=seed)
    torch.manual_seed(seed)
    learn = tabular_collab_learner(tdls, n_factors=50, layers=(64,), p_id=0.05, use_mlp=False)
    secs = quiet_fit(learn, 5, 5e-3, wd=0.2)
    add('hybrid: metadata + date towers (bench/tabular.py recipe)', seed, learn.predict_ratings(R.iloc[tdls.splits[1]], unknown='na'), y, secs, 'peer')

def hybrid_fit(R, users, items, genres, splits, seed, ordinal=False, time_bias=False, epochs=5, lr=5e-3, wd=0.2, n_bins=30):
    "(valid-row predictions, wall s, CPU s) of the hybrid recipe on fixed `splits`: MSE or ordinal head (`OrdinalHybrid`), optional time-bias columns"
    from collab_ext.tabular import TabularCollabDataLoaders, tabular_collab_learner
    t0,c0 = time.perf_counter(),time.process_time()
    extra = []
    if time_bias: R,extra = time_bias_columns(R, splits[0], n_bins=n_bins),['item_bin','user_day']
    tdls = TabularCollabDataLoaders.from_dfs(R, users, items, date_col='timestamp', cat_names=['gender','occupation','zip1']+extra,
                                             cont_names=['age','year']+genres, splitter=lambda df: splits, bs=128, val_bs=8192, seed=seed)
    torch.manual_seed(seed)
    make = ordinal_hybrid_learner if ordinal else partial(tabular_collab_learner, use_mlp=False)
    learn = make(tdls, n_factors=50, layers=(64,), p_id=0.05, cbs=SkipValidation())
    quiet_fit(learn, epochs, lr, wd=wd)
    m,ds = learn.model.eval(),tdls.valid_ds
    with torch.no_grad(): p = (m.ratings_of(ds.x_cat, ds.x_cont) if ordinal else m(ds.x_cat, ds.x_cont)[:,0]).numpy()
    return p,time.perf_counter()-t0,time.process_time()-c0

HYBRIDS = {'hybrid + time-bias columns (item × time bin, user × day; time_bias_columns)': dict(time_bias=True),
           'ordinal hybrid (OrdinalHybrid: hybrid score through the ordinal head)': dict(ordinal=True),
           'ordinal hybrid + time-bias columns': dict(ordinal=True, time_bias=True)}

def hybrid_ablation(y, seed):
    "The hybrid recipe (bench/tabular.py) with the ordinal head and/or timeSVD++-style time-bias columns"
    from collab_ext.tabular import movielens_tables
    ml = ml100k()
    users,items = movielens_tables(ml)
    R = ml.ratings[['user','item','rating','timestamp']]
    splits = benchmark_split(R)
    for label,kw in HYBRIDS.items():
        p,secs,cpu = hybrid_fit(R, users, items, ml.genres, splits, seed, **kw)
        add(label, seed, p, y, secs, 'ablation', cpu)

def surprise_rows(r, splits, y, seed, quick):
    from surprise import SVD, SVDpp, KNNBaseline, Dataset, Reader
    tr,va = splits
    ts = Dataset.load_from_df(r.iloc[tr][['user','item','rating']], Reader(rating_scale=(1, 5))).build_full_trainset()
    algos = [('Surprise SVD (tuned: 100 factors, 100 epochs, lr 0.01, reg 0.15)', lambda: SVD(n_factors=100, n_epochs=100, lr_all=0.01, reg_all=0.15, random_state=seed))]
    if not quick: algos.append(('Surprise SVD++ (defaults)', lambda: SVDpp(random_state=seed)))
    if seed == 0 and not quick:     # deterministic: one run
        algos.append(('Surprise KNNBaseline (item-based, pearson_baseline)', lambda: KNNBaseline(sim_options=dict(name='pearson_baseline', user_based=False), verbose=False)))
    for name,make in algos:
        algo = make()
        secs,_ = timed(algo.fit, ts)
        pred = [algo.predict(u, i).est for u,i in r.iloc[va][['user','item']].itertuples(index=False, name=None)]
        add(name, seed, pred, y, secs, 'peer')

def summary():
    df = pd.DataFrame(ROWS)
    g = df.groupby(['kind','model'], sort=False).agg(rmse=('rmse','mean'), rmse_max=('rmse','max'), mae=('mae','mean'), fit_s=('fit_s','mean'), cpu_s=('cpu_s','mean'), seeds=('seed','count')).reset_index()
    print("\n## Mean over seeds\n" + md_table(g.round(4)), flush=True)

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--quick', action='store_true'); ap.add_argument('--json', action='store_true')
    ap.add_argument('--seeds', type=int, nargs='*'); ap.add_argument('--no-peers', action='store_true')
    ap.add_argument('--members', nargs='*', help='ablation members to fit (default: all; none: skip the member ablation)')
    ap.add_argument('--no-hybrid-ablation', action='store_true', help='skip the ordinal / time-bias hybrid rows')
    ap.add_argument('--smoke', action='store_true', help=argparse.SUPPRESS)     # 1-3 epochs everywhere: checks the script runs
    args = ap.parse_args()
    if args.smoke:
        for m in MEMBERS.values(): m.epochs = 2
        global quiet_fit
        _qf = quiet_fit
        quiet_fit = lambda learn, epochs, *a, **k: _qf(learn, 1, *a, **k)
    set_threads(1)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    names = args.members if args.members is not None else list(WINNER) if args.quick else list(MEMBERS)
    r = ml100k().ratings[['user','item','rating','title']]
    splits = benchmark_split(r)
    dls = FastCollabDataLoaders.from_df(r, splitter=RandomRatingSplitter(**BENCH_SPLIT), bs=1024, seed=42)
    y = dls.valid_ds.y[:,0].numpy().astype(np.float64)
    assert np.allclose(y, r.rating.to_numpy()[splits[1]])
    for seed in seeds:
        print(f"\n# seed {seed}", flush=True)
        if not args.smoke and names: ablation(dls, y, seed, names)
        if not (args.quick or args.smoke or args.no_hybrid_ablation): hybrid_ablation(y, seed)
        if not args.no_peers: peers(r, splits, dls, y, seed, args.quick)
    summary()
    if args.json: print_json(ROWS)

if __name__ == '__main__': main()
