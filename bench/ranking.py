"""Top-k recommendation on ML-100k: collab_ext rankers and rating models against popularity and peer libraries.

Usage: python bench/ranking.py [--json] [--only NAME ...] [--protocol msr random] [--no-peers] [--bivae-epochs 500] [--ablation] [--save FILE]
Protocol 'msr' (Microsoft Recommenders): per-user stratified 75/25 split (seed 42), k=10, relevance = every held-out
interaction, training items removed from the lists. Protocol 'random': the benchmark split (u.data order,
np.random.default_rng(42).permutation(100000), first 80,000 train), relevance = held-out rating >= 4.
Metrics from collab_ext.metrics.ranking (MAP = Microsoft Recommenders' variant, AP@k / |relevant|); coverage = share of
the catalog in any list. fit_s = wall seconds to fit and score (the machine is shared: see cpu_s, the process's CPU
seconds, all single-threaded, for what the model costs). Peers (cornac, implicit, lightfm: `pip install -e .[bench]`) are skipped with a note when missing.
"""
import argparse, json, time, warnings, os, pathlib
import numpy as np, pandas as pd, scipy.sparse as sp, torch
from fastai.collab import collab_learner
from fastai.learner import Learner
from fastai.losses import MSELossFlat
from fastai.optimizer import Adam
from fastai.callback.progress import ProgressCallback
from functools import partial
from collab_ext.core import local_ml100k, CollabWarning
from collab_ext.data.load import load_movielens
from collab_ext.data.split import RandomRatingSplitter, StratifiedSplitter
from collab_ext.data.loaders import FastCollabDataLoaders
from collab_ext.data.implicit import ImplicitDataLoaders
from collab_ext.models import DotProductBias
from collab_ext.ce.all import CollabCEDataLoaders, collab_ce_learner
from collab_ext.metrics.ranking import ranking_report, holdout_truth, seen_matrix, catalog_scores
from collab_ext.ranking.all import *

METRICS = ['precision','recall','ndcg','map_msr','coverage']
PROTOCOLS = dict(msr=(lambda: StratifiedSplitter(0.25, 42), None), random=(lambda: RandomRatingSplitter(0.2, 42), 4))

class Bench:
    "Shared data of one protocol: loaders of every kind on one split, the truth, the training matrix"
    def __init__(self, ratings, protocol):
        mk,self.threshold = PROTOCOLS[protocol]
        self.protocol,self.r = protocol,ratings[['user','item','rating','title']]
        kw = dict(seed=42, unseen='keep')
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', CollabWarning)
            self.fdls = FastCollabDataLoaders.from_df(self.r, splitter=mk(), bs=1024, **kw)
            self.cdls = CollabCEDataLoaders.from_df(self.r, splitter=mk(), bs=1024, **kw)
            self.idls = {b: ImplicitDataLoaders.from_df(self.r, splitter=mk(), batch=b, bs=bs, **kw)
                         for b,bs in (('pairs',1024),('full',1024),('users',64))}
        self.truth,self.counts = holdout_truth(self.fdls, threshold=self.threshold)
        self.seen = seen_matrix(self.fdls)
        self.users = np.arange(1, len(self.fdls.classes['user']))
        self.n_items = len(self.fdls.classes['item'])

    def score(self, scores):
        "Ranking report of a (user codes × item codes) score matrix"
        s = torch.as_tensor(np.asarray(scores, dtype=np.float32)).clone()
        s[:,0] = float('-inf')
        return ranking_report(s, self.truth, k=10, seen=self.seen, metrics=METRICS)

    def train_frame(self):
        "Training rows as (user code, item code) arrays"
        x = self.fdls.train_ds.x.numpy()
        return x[:,0], x[:,1]

def quiet(learn):
    learn.remove_cbs(learn.cbs.filter(lambda c: isinstance(c, ProgressCallback)))
    return learn

# ---------- collab_ext models: each returns a score matrix over codes ----------
def popularity(b):
    u,i = b.train_frame()
    return np.tile(np.bincount(i, minlength=b.n_items).astype(np.float32), (len(b.fdls.classes['user']), 1))

def fast_recipe(b):
    torch.manual_seed(42)
    learn = quiet(collab_learner(b.fdls, n_factors=50, y_range=(0, 5.5)))
    with learn.no_logging(): learn.fit_one_cycle(8, 3e-2, wd=1.0)
    return catalog_scores(learn, np.arange(len(b.fdls.classes['user']))).numpy()

def dot_product_bias(b):
    torch.manual_seed(42)
    learn = quiet(Learner(b.fdls, DotProductBias.from_dls(b.fdls, 50), loss_func=MSELossFlat()))
    with learn.no_logging(): learn.fit_one_cycle(8, 3e-2, wd=1.0)
    return catalog_scores(learn, np.arange(len(b.fdls.classes['user']))).numpy()

_ORD = {}
def _ordinal(b):
    if b.protocol not in _ORD:
        torch.manual_seed(42)
        learn = quiet(collab_ce_learner(b.cdls, loss='ordinal', n_factors=100, metrics=[]))
        with learn.no_logging(): learn.fit_one_cycle(8, 1e-2, wd=0.7)
        _ORD[b.protocol] = learn
    return _ORD[b.protocol]

def ordinal_expected(b): return catalog_scores(_ordinal(b), np.arange(len(b.fdls.classes['user']))).numpy()
def ordinal_liked(b): return rank_scores(_ordinal(b), np.arange(len(b.fdls.classes['user'])), by='liked', liked=4).numpy()

def _fit(learn, epochs, lr, wd, one_cycle=True):
    quiet(learn)
    with learn.no_logging():
        if one_cycle: learn.fit_one_cycle(epochs, lr, wd=wd)
        else: learn.fit(epochs, lr, wd=wd)
    return learn

def _all(learn, b): return catalog_scores(learn, np.arange(len(b.fdls.classes['user']))).numpy()

def bpr(b):
    torch.manual_seed(42)
    return _all(_fit(implicit_learner(b.idls['pairs'], loss='bpr', n_factors=64, l2=1e-3), 10, 1e-2, 0), b)

_SM = {}
def softmax(b):
    "Full softmax over the catalog, dot model, `BatchL2` on the rows of each batch, constant lr"
    torch.manual_seed(42)
    _SM[b.protocol] = learn = _fit(implicit_learner(b.idls['full'], loss='softmax', n_factors=64, l2=3e-2), 10, 5e-3, 0, one_cycle=False)
    return _all(learn, b)

def softmax_wd(b):
    "Ablation: the same with fastai's (decoupled) weight decay on the whole tables instead of `BatchL2`"
    torch.manual_seed(42)
    return _all(_fit(implicit_learner(b.idls['full'], loss='softmax', n_factors=64), 8, 5e-3, 0.1), b)

def item_item_sgd(b):
    torch.manual_seed(42)
    learn = implicit_learner(b.idls['users'], loss='mse', opt_func=partial(Adam, decouple_wd=False))
    return _all(_fit(learn, 10, 1e-3, 1.0, one_cycle=False), b)

def genres(b):
    it = load_movielens(local_ml100k()).items.set_index('item')
    return it.select_dtypes('number').drop(columns=['year'], errors='ignore')

_EASE = {}
def ease(b, **kw):
    learn = ease_learner(b.idls['pairs'], **kw)
    _fit(learn, 1, 0, 0, one_cycle=False)
    return learn

def ease_plain(b): return _all(ease(b, lam=500), b)
def ease_liked(b): return _all(ease(b, lam=500, liked=4, liked_weight=0.5), b)
def ease_genres(b): return _all(ease(b, lam=500, item_features=genres(b), side_weight=3.), b)
def ease_best(b):
    _EASE[b.protocol] = learn = ease(b, lam=500, liked=4, liked_weight=0.5, item_features=genres(b), side_weight=3.)
    return _all(learn, b)

def _ensemble(b, w):
    if b.protocol not in _EASE: ease_best(b)
    if b.protocol not in _SM: softmax(b)
    learn = ensemble_learner([_EASE[b.protocol], _SM[b.protocol]], [1-w, w])
    _fit(learn, 1, 0, 0, one_cycle=False)
    return _all(learn, b)

def ensemble(b): return _ensemble(b, 0.7)        # weights chosen on the msr split (see the ablation); the random split checks them
def ensemble_30(b): return _ensemble(b, 0.3)
def ensemble_50(b): return _ensemble(b, 0.5)
def ensemble_80(b): return _ensemble(b, 0.8)

# ---------- peers: fit on the binary training matrix of codes ----------
def _train_csr(b):
    u,i = b.train_frame()
    return sp.csr_matrix((np.ones(len(u), np.float32), (u, i)), shape=(len(b.fdls.classes['user']), b.n_items))

def implicit_als(b):
    from implicit.als import AlternatingLeastSquares
    m = AlternatingLeastSquares(factors=32, regularization=0.1, alpha=3.0, iterations=15, random_state=42)   # best of 9 settings tried
    m.fit(_train_csr(b), show_progress=False)
    return np.asarray(m.user_factors) @ np.asarray(m.item_factors).T

def implicit_bpr(b):
    from implicit.bpr import BayesianPersonalizedRanking
    m = BayesianPersonalizedRanking(factors=32, learning_rate=0.02, regularization=0.01, iterations=200, random_state=42)   # best of 5 tried
    m.fit(_train_csr(b), show_progress=False)
    return np.asarray(m.user_factors) @ np.asarray(m.item_factors).T

def lightfm_warp(b):
    from lightfm import LightFM
    m = LightFM(no_components=64, loss='warp', learning_rate=0.05, random_state=42)
    X = _train_csr(b).tocoo()
    m.fit(X, epochs=30, num_threads=1)
    nu,ni = X.shape
    uu,ii = np.repeat(np.arange(nu), ni), np.tile(np.arange(ni), nu)
    return m.predict(uu.astype(np.int32), ii.astype(np.int32), num_threads=1).reshape(nu, ni)

def _cornac_data(b):
    import cornac
    u,i = b.train_frame()
    return cornac.data.Dataset.from_uir(list(zip(u.astype(str), i.astype(str), np.ones(len(u)))), seed=42)

def _cornac_scores(m, ds, b):
    S = np.full((len(b.fdls.classes['user']), b.n_items), -np.inf, np.float32)
    items = np.array([int(o) for o in ds.item_ids])
    for uid,uidx in ds.uid_map.items(): S[int(uid), items] = m.score(uidx)
    return S

def cornac_bpr(b):
    import cornac
    ds = _cornac_data(b)
    m = cornac.models.BPR(k=200, max_iter=100, learning_rate=0.01, lambda_reg=0.001, seed=42, verbose=False)
    m.fit(ds)
    return _cornac_scores(m, ds, b)

def cornac_bivae(b, epochs=500):
    import cornac
    ds = _cornac_data(b)
    m = cornac.models.BiVAECF(k=50, encoder_structure=[100], act_fn='tanh', likelihood='pois', n_epochs=epochs,
                              batch_size=128, learning_rate=0.001, seed=42, use_gpu=False, verbose=False)
    m.fit(ds)
    return _cornac_scores(m, ds, b)

MODELS = {
    'popularity': (popularity, None), 'fast recipe (rating)': (fast_recipe, None), 'DotProductBias (rating)': (dot_product_bias, None),
    'ordinal (expected rating)': (ordinal_expected, None), 'ordinal (P(liked))': (ordinal_liked, None),
    'collab_ext BPR': (bpr, None), 'collab_ext softmax': (softmax, None), 'collab_ext item-item SGD': (item_item_sgd, None),
    'collab_ext EASE': (ease_plain, None), 'collab_ext EASE liked+genres': (ease_best, None),
    'collab_ext EASE 0.3 + softmax 0.7 ensemble': (ensemble, None),
    'cornac BPR': (cornac_bpr, 'cornac'), 'cornac BiVAE': (cornac_bivae, 'cornac'), 'implicit ALS': (implicit_als, 'implicit'),
    'implicit BPR': (implicit_bpr, 'implicit'), 'LightFM WARP': (lightfm_warp, 'lightfm'),
}
# --ablation: what was tried on the way to the best ranker (Microsoft Recommenders protocol)
ABLATION = {
    'EASE (λ=500, binary)': ease_plain, 'EASE liked-weighted (rating>=4 counts 1.5)': ease_liked,
    'EASE + genres (side rows, weight 3)': ease_genres, 'EASE liked + genres': ease_best,
    'softmax dot, fastai wd=0.1 one-cycle': softmax_wd, 'softmax dot, BatchL2 3e-2': softmax,
    'item-item SGD (EASE objective)': item_item_sgd,
    'ensemble EASE best 0.7 + softmax 0.3': ensemble_30, 'ensemble EASE best 0.5 + softmax 0.5': ensemble_50,
    'ensemble EASE best 0.3 + softmax 0.7': ensemble, 'ensemble EASE best 0.2 + softmax 0.8': ensemble_80,
}

def have(mod):
    try: __import__(mod); return True
    except Exception as e: return False

def show(rows, title):
    print(f"\n{title}")
    print(f"{'model':<46}{'P@10':>7}{'R@10':>7}{'nDCG@10':>9}{'MAP@10':>8}{'cov':>7}{'fit_s':>8}{'cpu_s':>8}")
    for r in rows: print(f"{r['model']:<46}{r['precision']:>7.4f}{r['recall']:>7.4f}{r['ndcg']:>9.4f}{r['map_msr']:>8.4f}{r['coverage']:>7.3f}{r['fit_s']:>8.1f}{r['cpu_s']:>8.1f}")

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--json', action='store_true', help='print every row as JSON')
    ap.add_argument('--only', nargs='*', help='model names (substrings) to run')
    ap.add_argument('--protocol', nargs='*', default=['msr','random'])
    ap.add_argument('--no-peers', action='store_true')
    ap.add_argument('--save', help='also write every row as JSON to this file')
    ap.add_argument('--bivae-epochs', type=int, default=500)
    ap.add_argument('--ablation', action='store_true', help='run the ablation rows (msr protocol) instead of the main table')
    args = ap.parse_args()
    torch.set_num_threads(1)
    try:
        import threadpoolctl
        threadpoolctl.threadpool_limits(1)      # implicit/BLAS: one thread, like the rest
    except ImportError: pass
    ratings = load_movielens(local_ml100k()).ratings
    all_rows = []
    for proto in (['msr'] if args.ablation else args.protocol):
        b = Bench(ratings, proto)
        rows = []
        models = {n:(f,None) for n,f in ABLATION.items()} if args.ablation else MODELS
        for name,(fn,mod) in models.items():
            if args.only and not any(o.lower() in name.lower() for o in args.only): continue
            if mod is not None and (args.no_peers or not have(mod)):
                if not args.no_peers: print(f"note: {name} skipped ({mod} is not installed: pip install -e .[bench])")
                continue
            t0,c0 = time.perf_counter(),time.process_time()
            S = fn(b, args.bivae_epochs) if fn is cornac_bivae else fn(b)
            secs,cpu = time.perf_counter() - t0,time.process_time() - c0
            rep = b.score(S)
            row = dict(protocol=proto, model=name, **{m: float(rep[m]) for m in METRICS}, fit_s=secs, cpu_s=cpu)
            rows.append(row)
            if not args.json: print(f"  {name}: nDCG@10 {row['ndcg']:.4f} ({secs:.1f} s, {cpu:.1f} CPU s)", flush=True)
        all_rows += rows
        if not args.json:
            show(rows, f"protocol {proto}: {rep.counts if hasattr(rep, 'counts') else ''}")
    if args.json: print(json.dumps(all_rows, indent=1))
    if args.save: pathlib.Path(args.save).write_text(json.dumps(all_rows, indent=1))

if __name__ == '__main__': main()
