"""Stock fastai `CollabDataLoaders` vs `FastCollabDataLoaders` with the same `collab_learner` and recipe, in one run.

Benchmark split: ML-100k `u.data` in file order, `np.random.default_rng(42).permutation(100000)`, first 80,000 train.
Stock DataLoaders are built exactly as `CollabDataLoaders.from_df` builds them (`TabularCollab` + `Categorify`),
with that split passed in. Also times collab_ext's fast recipe and Surprise's tuned SVD.

    python bench/dataloaders.py            # full run (~2-3 min on 2 cores)
    python bench/dataloaders.py --epochs 2 # shorter pairs
"""
import argparse, time, warnings, json
import numpy as np, pandas as pd, torch
warnings.simplefilter('ignore')
from fastai.collab import collab_learner, TabularCollab
from fastai.tabular.core import Categorify
from fastai.data.block import TransformBlock
from collab_ext.core import local_ml100k
from collab_ext.data.load import load_movielens
from collab_ext.data.split import RandomRatingSplitter
from collab_ext.data.loaders import FastCollabDataLoaders

def stock_dls(r, splits, bs):
    to = TabularCollab(r, [Categorify], ['user','item'], y_names=['rating'], y_block=TransformBlock(), splits=[list(s) for s in splits])
    return to.dataloaders(bs=bs)

def fast_dls(r, splits, bs):
    return FastCollabDataLoaders.from_df(r, bs=bs, seed=42, splitter=lambda df: splits, unseen='keep')

def fit(dls, epochs, lr, wd, seed=42):
    "Seconds of `fit_one_cycle` and the final validation RMSE, for fastai's collab_learner on `dls`"
    torch.manual_seed(seed)
    learn = collab_learner(dls, n_factors=50, y_range=(0, 5.5))
    with learn.no_bar(), learn.no_logging():
        t = time.perf_counter(); learn.fit_one_cycle(epochs, lr, wd=wd); el = time.perf_counter() - t
        mse = float(learn.validate()[0])
    return el, mse**0.5

def iterate(dl, epochs=3):
    "Seconds to draw every batch of `dl` once (no model): the DataLoader's own cost per epoch"
    t = time.perf_counter()
    for _ in range(epochs):
        for b in dl: pass
    return (time.perf_counter() - t)/epochs

def plain_loop(dls, epochs=2, lr=5e-3, wd=0.1, seed=42):
    "Seconds per training epoch of the same model in a bare PyTorch loop (AdamW, no fastai Learner) on `dls.train`"
    torch.manual_seed(seed)
    m = collab_learner(dls, n_factors=50, y_range=(0, 5.5)).model
    opt = torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=wd)
    for _ in range(epochs):
        t = time.perf_counter()
        for x, y in dls.train:
            loss = torch.nn.functional.mse_loss(m(x), y[:, 0]); opt.zero_grad(); loss.backward(); opt.step()
        el = time.perf_counter() - t
    return el

def surprise_svd(r, splits):
    from surprise import SVD, Dataset, Reader, accuracy
    tr, va = splits
    data = Dataset.load_from_df(r.iloc[tr][['user','item','rating']], Reader(rating_scale=(1, 5)))
    algo = SVD(n_factors=100, n_epochs=100, lr_all=0.01, reg_all=0.15, random_state=42)
    t = time.perf_counter(); algo.fit(data.build_full_trainset()); el = time.perf_counter() - t
    preds = algo.test(list(r.iloc[va][['user','item','rating']].itertuples(index=False, name=None)))
    return el, accuracy.rmse(preds, verbose=False)

def main(epochs=5, recipe_epochs=8):
    torch.set_num_threads(max(1, torch.get_num_threads()))
    r = load_movielens(local_ml100k()).ratings[['user','item','rating']]
    splits = RandomRatingSplitter(0.2, 42)(r)
    rows, res = [], {}
    for bs in (64, 1024):
        t = time.perf_counter(); sd = stock_dls(r, splits, bs); t_sd = time.perf_counter() - t
        t = time.perf_counter(); fd = fast_dls(r, splits, bs); t_fd = time.perf_counter() - t
        (s_el, s_rmse), (f_el, f_rmse) = fit(sd, epochs, 5e-3, 0.1), fit(fd, epochs, 5e-3, 0.1)
        s_it, f_it = iterate(sd.train), iterate(fd.train)
        raw = plain_loop(fd)
        n_b = len(fd.train) + len(fd.valid)
        rows.append(dict(bs=bs, stock_s_per_epoch=s_el/epochs, fast_s_per_epoch=f_el/epochs, speedup=s_el/f_el,
                         stock_rmse=s_rmse, fast_rmse=f_rmse, rmse_diff=f_rmse-s_rmse, stock_dls_s=t_sd, fast_dls_s=t_fd,
                         stock_batches_s=s_it, fast_batches_s=f_it, batches_speedup=s_it/f_it,
                         learner_ms_per_batch=1000*(f_el/epochs - f_it)/n_b,
                         plain_torch_train_s=raw, plain_ms_per_batch=1000*raw/len(fd.train)))
        res[bs] = (s_el, s_rmse)
    print(f"## Same collab_learner(n_factors=50, y_range=(0,5.5)) + fit_one_cycle({epochs}, 5e-3, wd=0.1) on both DataLoaders")
    print(pd.DataFrame(rows).round(4).to_string(index=False))
    print("(stock/fast_batches_s: one epoch of training batches drawn with no model; learner_ms_per_batch: the rest of a"
          " fast epoch per batch, i.e. fastai's Learner loop, loss, optimizer and the model itself; plain_torch_train_s:"
          " the same model trained one epoch on the fast loader in a bare PyTorch loop, the floor without fastai's loop)")
    stock_total = res[64][0]
    t = time.perf_counter(); fd = fast_dls(r, splits, 1024); t_fd = time.perf_counter() - t
    rec_el, rec_rmse = fit(fd, recipe_epochs, 3e-2, 1.0)
    svd_el, svd_rmse = surprise_svd(r, splits)
    print(f"\n## Fast recipe: FastCollabDataLoaders(bs=1024) + collab_learner(n_factors=50, y_range=(0,5.5)) + fit_one_cycle({recipe_epochs}, 3e-2, wd=1.0)")
    summary = pd.DataFrame([
        dict(run=f'stock chapter recipe (bs=64, {epochs} epochs)', fit_s=stock_total, rmse=res[64][1], stock_time_over_this=1.0),
        dict(run=f'collab_ext fast recipe (DataLoaders built in {t_fd:.2f}s)', fit_s=rec_el, rmse=rec_rmse, stock_time_over_this=stock_total/rec_el),
        dict(run='Surprise SVD(100 factors, 100 epochs, lr .01, reg .15)', fit_s=svd_el, rmse=svd_rmse, stock_time_over_this=stock_total/svd_el)])
    print(summary.round(4).to_string(index=False))
    print(f"\nfast recipe: RMSE {rec_rmse:.4f} ({'<=' if rec_rmse <= 0.92 else '>'} 0.92), {stock_total/rec_el:.1f}x sooner than stock's {epochs}-epoch run, "
          f"{svd_el/rec_el:.2f}x sooner than Surprise's SVD fit")
    print(json.dumps(dict(pairs=rows, recipe=dict(fit_s=rec_el, rmse=rec_rmse), svd=dict(fit_s=svd_el, rmse=svd_rmse), stock_total_s=stock_total)))

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--epochs', type=int, default=5); p.add_argument('--recipe-epochs', type=int, default=8)
    a = p.parse_args()
    main(a.epochs, a.recipe_epochs)
