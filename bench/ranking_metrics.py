"""What `RankingMetrics` adds to an epoch: the fast recipe (fastai `collab_learner`, 4 metrics and all of them) and the CE /
ordinal models, with and without the metric, CPU seconds (`time.process_time`, robust to other load on the machine) and wall
seconds; then the CPU cost of one `ranking_report` (every metric, scores given) and of `catalog_scores` for each model.

    python bench/ranking_metrics.py [--reps 3]
"""
import argparse, time, warnings
from harness import *
import numpy as np, torch
from fastai.collab import collab_learner
from fastai.metrics import rmse
from collab_ext.core import CollabWarning
from collab_ext.data.split import RandomRatingSplitter
from collab_ext.data.loaders import FastCollabDataLoaders
from collab_ext.ce.data import CollabCEDataLoaders
from collab_ext.ce.learner import collab_ce_learner
from collab_ext.metrics.ranking import RankingMetrics, RANKING_METRICS, ranking_report, holdout_truth, seen_matrix, catalog_scores

def fit_cost(make, epochs, lr, wd):
    "(CPU s, wall s) of `fit_one_cycle(epochs)` of the learner `make()` builds, and the learner"
    torch.manual_seed(0)
    learn = make()
    with learn.no_bar(), learn.no_logging():
        c,w = time.process_time(),time.perf_counter()
        learn.fit_one_cycle(epochs, lr, wd=wd)
        return time.process_time()-c, time.perf_counter()-w, learn

def cpu_ms(f, reps:int=7) -> float:
    "Best-of-`reps` CPU milliseconds of `f()`"
    res = []
    for _ in range(reps):
        c = time.process_time(); f(); res.append(time.process_time()-c)
    return 1000*min(res)

def compare(name, make, epochs, lr, wd, reps):
    "Best-of-`reps` cost without and with `RankingMetrics(10)`, printed as a row"
    res = {k: [fit_cost(lambda: make(k), epochs, lr, wd)[:2] for _ in range(reps)] for k in (False, True)}
    (c0,w0),(c1,w1) = ((min(c for c,_ in res[k]), min(w for _,w in res[k])) for k in (False, True))
    print(f"{name:32s} {epochs} epochs: CPU {c0:.2f}s -> {c1:.2f}s ({100*(c1/c0-1):+.0f}%), wall {w0:.2f}s -> {w1:.2f}s ({100*(w1/w0-1):+.0f}%)", flush=True)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0]); p.add_argument('--reps', type=int, default=3)
    reps = p.parse_args().reps
    set_threads(1)
    ratings = ml100k().ratings[['user','item','rating']]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', CollabWarning)
        dls = FastCollabDataLoaders.from_df(ratings, splitter=RandomRatingSplitter(0.2, 42), bs=1024, seed=42, unseen='keep')
        cdls = CollabCEDataLoaders.from_df(ratings, splitter=RandomRatingSplitter(0.2, 42), bs=1024, seed=42, unseen='keep')
    rm = lambda on, ms=('ndcg','precision','recall','map'): [*RankingMetrics(10, metrics=ms)] if on else []
    compare('fast recipe (collab_learner)', lambda on: collab_learner(dls, n_factors=50, y_range=(0, 5.5), metrics=[rmse, *rm(on)]), 8, 3e-2, 1.0, reps)
    compare('fast recipe, all metrics', lambda on: collab_learner(dls, n_factors=50, y_range=(0, 5.5), metrics=[rmse, *rm(on, RANKING_METRICS)]), 8, 3e-2, 1.0, reps)
    compare('CE dot', lambda on: collab_ce_learner(cdls, loss='ce', n_factors=50, metrics=rm(on)), 5, 1e-2, 0.6, reps)
    compare('ordinal dot', lambda on: collab_ce_learner(cdls, loss='ordinal', n_factors=100, metrics=rm(on)), 5, 1e-2, 0.7, reps)
    users = np.arange(len(dls.classes['user']))
    truth,_ = holdout_truth(dls); seen = seen_matrix(dls)
    fast = fit_cost(lambda: collab_learner(dls, n_factors=50, y_range=(0, 5.5)), 1, 3e-2, 1.0)[2]
    S = catalog_scores(fast, users)
    print(f"ranking_report, all {len(RANKING_METRICS)} metrics, {len(users)} users x {S.shape[1]} items, scores given: "
          f"{cpu_ms(lambda: ranking_report(S, truth, 10, seen=seen, metrics=RANKING_METRICS)):.1f} ms CPU")
    print(f"the same with catalog_scores (EmbeddingDotBias): "
          f"{cpu_ms(lambda: ranking_report(catalog_scores(fast, users), truth, 10, seen=seen, metrics=RANKING_METRICS)):.1f} ms CPU")
    for loss,nf,wd in (('ce', 50, 0.6), ('ordinal', 100, 0.7)):
        l = fit_cost(lambda: collab_ce_learner(cdls, loss=loss, n_factors=nf, metrics=[]), 1, 1e-2, wd)[2]
        print(f"catalog_scores, {loss} model, {len(users)} users: {cpu_ms(lambda: catalog_scores(l, users)):.1f} ms CPU", flush=True)

if __name__ == '__main__': main()
