"""Stock fastai `CollabDataLoaders` vs `FastCollabDataLoaders` with the same `collab_learner` and recipe, in one run.

Benchmark split: ML-100k `u.data` in file order, `np.random.default_rng(42).permutation(100000)`, first 80,000 train.
Stock DataLoaders are built exactly as `CollabDataLoaders.from_df` builds them (`TabularCollab` + `Categorify`),
with that split passed in. Each pair runs twice: with fastai's `collab_learner` (fastai's `Learner`, `MSELossFlat`, `Adam`,
nothing patched: importing collab_ext changes nothing in fastai) and with collab_ext's `fast_collab_learner` (the same
model as a `LeanLearner` with `PlainMSELossFlat` and `lean_adam`), the same learner on both sides of a pair. The headline
compares stock fastai as users run it (its loaders, its learner and loop) with collab_ext (fast loaders, lean learner).
Also times collab_ext's fast recipe against stock fastai's whole chapter run and Surprise's tuned SVD.

    python bench/dataloaders.py            # full run (~5 min on a quiet 2-core machine)
    python bench/dataloaders.py --epochs 2 --repeats 1 # shorter
"""
import argparse, warnings, json, os
import pandas as pd, torch
warnings.simplefilter('ignore')
from harness import set_threads, timed, Timer, quiet_fit, ml100k, benchmark_split, stock_dls, fast_dls, iterate, surprise_svd
from fastai.collab import collab_learner
from collab_ext.core import torch_gen
from collab_ext.data.loaders import FastCollabDL
from collab_ext.fastloop import fast_collab_learner
from fastai.optimizer import Adam
from fastai.losses import MSELossFlat

LOOPS = dict(fastai=collab_learner, lean=fast_collab_learner)   # learner factory per loop

class WithReplacementDL(FastCollabDL):
    "Control only: draws an epoch's rows with replacement, as stock fastai's `TabWeightedDL` does"
    def get_idxs(self):
        if not self.shuffle: return super().get_idxs()
        if self._gen is None: self._gen = torch_gen(self.seed)
        return torch.randint(self.n, (self.n,), generator=self._gen)

def with_replacement(dls):
    dls.train.__class__ = WithReplacementDL
    return dls

def fit(dls, epochs, lr, wd, loop='lean', seed=42):
    "Seconds of `fit_one_cycle` and the final validation RMSE, for `loop`'s learner (fastai's or collab_ext's) on `dls`"
    torch.manual_seed(seed)
    learn = LOOPS[loop](dls, n_factors=50, y_range=(0, 5.5))
    el = quiet_fit(learn, epochs, lr, wd=wd)
    with learn.no_bar(), learn.no_logging(): mse = float(learn.validate()[0])
    return el, mse**0.5

def bare_loop(dls, epochs=2, lr=5e-3, wd=0.1, seed=42):
    """Seconds of the last of `epochs` epochs (train, then validation loss) of the same model, `MSELossFlat` and fastai's
    `Adam` in a bare loop with no `Learner`, fastai's code as shipped: the floor a `Learner` epoch could reach"""
    torch.manual_seed(seed)
    m = collab_learner(dls, n_factors=50, y_range=(0, 5.5)).model
    opt, loss_func = Adam(list(m.parameters()), lr=lr, wd=wd), MSELossFlat()
    for _ in range(epochs):
        with Timer() as t:
            m.train()
            for x, y in dls.train:
                loss = loss_func(m(x), y); loss.backward(); opt.step(); opt.zero_grad()
            m.eval()
            with torch.no_grad():
                for x, y in dls.valid: loss_func(m(x), y)
    return t.secs

def main(epochs=5, recipe_epochs=8, repeats=2):
    r = ml100k().ratings[['user','item','rating']]
    splits = benchmark_split(r)
    rows, res = [], {}
    for bs in (64, 1024):
        t_sd,sd = timed(stock_dls, r, splits, bs)
        t_fd,fd = timed(fast_dls, r, splits, bs)
        s_it, f_it = iterate(sd.train), iterate(fd.train)
        n_b = len(fd.train) + len(fd.valid)
        floor = bare_loop(fd)
        reps = repeats if bs == 64 else 3*repeats  # best of several fits per side, as timeit does: the shared VM's hiccups only ever add time
        for loop in LOOPS:
            # fresh loaders per fit (both loops see the same shuffles); stock and fast interleaved so drift hits both
            runs = [(fit(stock_dls(r, splits, bs), epochs, 5e-3, 0.1, loop), fit(fast_dls(r, splits, bs), epochs, 5e-3, 0.1, loop))
                    for _ in range(reps)]
            s_el, f_el = min(a[0] for a,_ in runs), min(b[0] for _,b in runs)
            s_rmse, f_rmse = runs[0][0][1], runs[0][1][1]
            rows.append(dict(bs=bs, loop=loop, fits=reps, stock_s_per_epoch=s_el/epochs, fast_s_per_epoch=f_el/epochs, speedup=s_el/f_el,
                             stock_rmse=s_rmse, fast_rmse=f_rmse, rmse_diff=f_rmse-s_rmse,
                             fast_ms_per_batch=1000*f_el/epochs/n_b, bare_loop_ms_per_batch=1000*floor/n_b,
                             stock_batches_s=s_it, fast_batches_s=f_it, batches_speedup=s_it/f_it, stock_dls_s=t_sd, fast_dls_s=t_fd))
            res[bs, loop] = (s_el, s_rmse, f_el)
    _, ctl_rmse = fit(with_replacement(fast_dls(r, splits, 64)), epochs, 5e-3, 0.1, 'lean')
    df = pd.DataFrame(rows)
    print(f"## Same model (collab_learner(n_factors=50, y_range=(0,5.5)) or fast_collab_learner, per loop) + fit_one_cycle({epochs}, 5e-3, wd=0.1) on both DataLoaders")
    print(df.round(4).to_string(index=False))
    print("(loop: fastai = fastai's collab_learner (Learner, MSELossFlat, Adam), lean = collab_ext's fast_collab_learner (LeanLearner, PlainMSELossFlat, lean_adam), on"
          " both sides of the pair; fast_ms_per_batch: a whole fast epoch per batch, train and validation;"
          " bare_loop_ms_per_batch: the same, for the same model, MSELossFlat and fastai's Adam (fastai's code as shipped) in a bare loop with no Learner;"
          " *_batches_s: one epoch of training batches drawn with no model; fits: fits per side, the fastest shown)")
    print(f"control: FastCollabDataLoaders drawing training rows with replacement, as stock's TabWeightedDL does "
          f"(lean loop, bs=64): RMSE {ctl_rmse:.4f} vs stock {res[64,'lean'][1]:.4f} (diff {ctl_rmse-res[64,'lean'][1]:+.4f})")
    for bs in (64, 1024):
        print(f"bs={bs}: per-epoch speed-up {res[bs,'fastai'][0]/res[bs,'fastai'][2]:.2f}x under fastai's loop, "
              f"{res[bs,'lean'][0]/res[bs,'lean'][2]:.2f}x under the lean loop; stock fastai (its loaders, learner and loop) vs "
              f"collab_ext (fast loaders, fast_collab_learner): {res[bs,'fastai'][0]/res[bs,'lean'][2]:.2f}x "
              f"({'>=' if res[bs,'fastai'][0] >= 2*res[bs,'lean'][2] else 'UNDER'} 2x)")
    stock_total = res[64, 'fastai'][0]
    t_fd,fd = timed(fast_dls, r, splits, 1024)
    rec_el, rec_rmse = fit(fd, recipe_epochs, 3e-2, 1.0)   # collab_ext's learner
    svd_el, svd_rmse = surprise_svd(r, splits) or (float('nan'), float('nan'))
    print(f"\n## Fast recipe: FastCollabDataLoaders(bs=1024) + fast_collab_learner(n_factors=50, y_range=(0,5.5)) + fit_one_cycle({recipe_epochs}, 3e-2, wd=1.0)")
    summary = pd.DataFrame([
        dict(run=f'stock fastai chapter recipe (bs=64, {epochs} epochs)', fit_s=stock_total, rmse=res[64,'fastai'][1], stock_time_over_this=1.0),
        dict(run=f'collab_ext fast recipe (DataLoaders built in {t_fd:.2f}s)', fit_s=rec_el, rmse=rec_rmse, stock_time_over_this=stock_total/rec_el),
        dict(run='Surprise SVD(100 factors, 100 epochs, lr .01, reg .15)', fit_s=svd_el, rmse=svd_rmse, stock_time_over_this=stock_total/svd_el)])
    print(summary.round(4).to_string(index=False))
    print(f"\nfast recipe: RMSE {rec_rmse:.4f} ({'<=' if rec_rmse <= 0.92 else '>'} 0.92), {stock_total/rec_el:.1f}x sooner than stock's {epochs}-epoch run, "
          f"{svd_el/rec_el:.2f}x sooner than Surprise's SVD fit")
    print(json.dumps(dict(pairs=rows, control_with_replacement_rmse=ctl_rmse, recipe=dict(fit_s=rec_el, rmse=rec_rmse),
                          svd=dict(fit_s=svd_el, rmse=svd_rmse), stock_total_s=stock_total)))

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--epochs', type=int, default=5); p.add_argument('--recipe-epochs', type=int, default=8)
    p.add_argument('--repeats', type=int, default=2, help='fits per side at bs=64 (3x that at bs=1024); the fastest is reported')
    p.add_argument('--threads', type=int, default=1, help='torch threads (1: the shared 2-core box)')
    a = p.parse_args()
    set_threads(a.threads)
    print(f"load average before: {os.getloadavg()}")
    main(a.epochs, a.recipe_epochs, a.repeats)
    print(f"load average after: {os.getloadavg()}")
