"""Scale of collab_ext's data path (issue 6) on synthetic ratings of ML-25M shape (`collab_ext.synth.synth_ratings`).

Time and peak memory of `ratings_matrix`, `crosstab`, the splitters and `FastCollabDataLoaders.from_df` at 1M, 5M and
25M rows (each in a fresh subprocess: peak resident memory above the loaded frame, glibc told to return freed memory),
one epoch of the dot model at 25M on CPU, and DDP epoch times with 1 and 2 gloo processes.

    python bench/scale.py                                   # all of it: several minutes, < 4 GB
    python bench/scale.py --sizes 1e6 5e6 --no-epoch --no-ddp
"""
import argparse, gc, json, os, subprocess, sys, time, warnings
from pathlib import Path
import numpy as np, pandas as pd

ROOT = Path(__file__).resolve().parents[1]
COLS = ['user','item','rating','timestamp']
OPS = {  # name: columns it needs
    'ratings_matrix': COLS[:3], 'crosstab': COLS[:3], 'RandomRatingSplitter': COLS[:3], 'TimeSplitter': COLS,
    'LastNSplitter': COLS, 'ColdUserSplitter': COLS[:3], 'clean_ratings': COLS[:3], 'from_df': COLS[:3]}
ENV = {**os.environ, 'MALLOC_MMAP_THRESHOLD_': '65536', 'MALLOC_TRIM_THRESHOLD_': '0', 'OMP_NUM_THREADS': '1', 'PYTHONWARNINGS': 'ignore'}

def make_data(cache:Path, n:int):
    "Write `n` synthetic ML-25M-shaped ratings to `cache` (one .npy per column) unless already there"
    if (cache/f'{n}.done').exists(): return
    from collab_ext.synth import synth_ratings
    cache.mkdir(parents=True, exist_ok=True)
    t = time.time()
    r = synth_ratings(n, seed=0)
    for c in COLS: np.save(cache/f'{n}_{c}.npy', r[c].to_numpy())
    (cache/f'{n}.done').write_text(f'{time.time()-t:.1f}')

def load(cache:Path, n_all:int, n:int, cols) -> pd.DataFrame:
    "The first `n` rows (a random sample: the rows are in random order) of the cached set"
    return pd.DataFrame({c: np.array(np.load(cache/f'{n_all}_{c}.npy', mmap_mode='r')[:n]) for c in cols})

def run_op(op:str, df:pd.DataFrame):
    from collab_ext.data.core import ratings_matrix, crosstab, clean_ratings
    from collab_ext.data.split import RandomRatingSplitter, TimeSplitter, LastNSplitter, ColdUserSplitter
    from collab_ext.data.loaders import FastCollabDataLoaders
    if op == 'ratings_matrix': return ratings_matrix(df)
    if op == 'crosstab': return crosstab(df)
    if op == 'clean_ratings': return clean_ratings(df, 'user', 'item', 'rating')
    if op == 'RandomRatingSplitter': return RandomRatingSplitter(0.2, 42)(df)
    if op == 'TimeSplitter': return TimeSplitter(valid_pct=0.2)(df)
    if op == 'LastNSplitter': return LastNSplitter(n=1)(df)
    if op == 'ColdUserSplitter': return ColdUserSplitter(0.2, 42)(df)
    if op == 'from_df': return FastCollabDataLoaders.from_df(df, splitter=RandomRatingSplitter(0.2, 42), bs=65536, seed=42, device='cpu')
    raise ValueError(op)

def measure_one(cache, n_all, op, n) -> dict:
    "In this (fresh) process: load the frame, then time `op` and its peak memory above the loaded frame"
    from collab_ext.core import peak_memory
    import collab_ext.data.loaders    # imports before measuring
    df = load(cache, n_all, n, OPS[op]); gc.collect()
    raw = int(sum(df[c].to_numpy().nbytes for c in df))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        with peak_memory() as m:
            t = time.perf_counter(); res = run_op(op, df); secs = time.perf_counter() - t
    return dict(op=op, n=n, seconds=secs, peak=m.peak, raw=raw, users=int(df.user.nunique()), items=int(df.item.nunique()))

def breakdown(cache, n_all, n) -> list:
    "Peak memory of the steps of `from_df` (and of the heavier steps it replaced), in multiples of the raw columns"
    import torch
    from collab_ext.core import peak_memory
    from collab_ext.data.core import clean_ratings, duplicate_pairs, check_rating_values, make_vocab
    from collab_ext.data.split import RandomRatingSplitter, resolve_unseen
    from collab_ext.data.loaders import _encode
    df = load(cache, n_all, n, COLS[:3]); raw = 12*n; gc.collect()
    tr,va = RandomRatingSplitter(0.2, 42)(df)
    classes = {c: make_vocab(df[c].to_numpy()[tr]) for c in ('user','item')}
    def full_then_splits():    # from_df before the fix: encode all rows, then copy each split out of them
        full = _encode(df, classes, ['rating'], unknown='na')
        return [(full.x[torch.as_tensor(s)], full.y[torch.as_tensor(s)]) for s in (tr,va)]
    per_split = lambda: [_encode(df, classes, ['rating'], rows=s, unknown='na') for s in (tr,va)]   # what from_df does now
    pieces = [('clean_ratings (whole)', lambda: clean_ratings(df, 'user', 'item', 'rating')),
              ('  duplicate_pairs', lambda: duplicate_pairs(df.user.to_numpy(), df.item.to_numpy())),
              ('  check_rating_values', lambda: check_rating_values(df, 'rating')),
              ('RandomRatingSplitter', lambda: RandomRatingSplitter(0.2, 42)(df)),
              ('resolve_unseen', lambda: resolve_unseen(df, (tr,va), 'keep', 'user', 'item')),
              ('make_vocab (user and item)', lambda: [make_vocab(df[c].to_numpy()[tr]) for c in ('user','item')]),
              ('before: encode all rows, then copy the splits out', full_then_splits),
              ('from_df: encode each split directly', per_split),
              ('before: dls.splits kept as int64 (tr, va)', lambda: (tr.copy(), va.copy())),
              ('from_df: dls.splits as int32', lambda: (tr.astype(np.int32), va.astype(np.int32)))]
    res = []
    for name,f in pieces:
        gc.collect()
        with peak_memory() as m: r = f()
        del r; res.append((name, m.peak/raw))
    return res

def subprocess_json(args) -> dict:
    p = subprocess.run([sys.executable, __file__, *map(str, args)], capture_output=True, text=True, env=ENV, cwd=ROOT)
    if p.returncode: raise RuntimeError(f"{args}: {p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])

def epoch_one(cache, n_all, n, bs) -> dict:
    "One epoch of fastai's dot model (`collab_learner`, 50 factors) on `n` rows, timed by phase"
    import torch
    from fastai.collab import collab_learner
    from fastai.callback.core import Callback
    from collab_ext.data.split import RandomRatingSplitter
    from collab_ext.data.loaders import FastCollabDataLoaders
    class Timer(Callback):
        def before_train(self): self.t0 = time.perf_counter()
        def after_train(self): self.train = time.perf_counter() - self.t0
        def before_validate(self): self.t1 = time.perf_counter()
        def after_validate(self): self.valid = time.perf_counter() - self.t1
    df = load(cache, n_all, n, COLS[:3])
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        dls = FastCollabDataLoaders.from_df(df, splitter=RandomRatingSplitter(0.2, 42), bs=bs, seed=42, device='cpu')
    t_dls = time.perf_counter() - t
    del df; gc.collect()
    torch.manual_seed(42)
    tm = Timer()
    learn = collab_learner(dls, n_factors=50, y_range=(0, 5.5), cbs=tm)
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 5e-3)
    n_tr = len(dls.train)*bs
    return dict(n=n, bs=bs, from_df=t_dls, train=tm.train, valid=tm.valid, train_rows=n_tr, valid_rows=len(dls.valid_ds),
                valid_mse=float(learn.recorder.values[-1][1]), threads=torch.get_num_threads())

def ddp_epochs(data:str, global_bs:int, epochs:int=2) -> dict:
    "Seconds per training epoch of examples/ddp_train.py on `data` with 1 and 2 gloo processes (same global batch)"
    from collab_ext.distributed import launch_local
    res = {}
    for w in (1, 2):
        p = launch_local(ROOT/'examples'/'ddp_train.py', '--data', data, '--epochs', epochs, '--bs', global_bs//w,
                         '--timing', nprocs=w, timeout=1200, env={'PYTHONWARNINGS': 'ignore'})
        line = [l for l in p.stdout.splitlines() if l.startswith('train seconds per epoch')][-1]
        res[w] = json.loads(line.split(':', 1)[1])
    return res

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--sizes', nargs='+', type=float, default=[1e6, 5e6, 25e6])
    p.add_argument('--ops', nargs='*', default=list(OPS))
    p.add_argument('--cache', default='/tmp/collab_ext_scale')
    p.add_argument('--epoch-bs', type=int, default=65536)
    p.add_argument('--no-epoch', action='store_true')
    p.add_argument('--no-ddp', action='store_true')
    p.add_argument('--ddp-rows', type=float, default=1e6)
    p.add_argument('--one', nargs=2, default=None, help=argparse.SUPPRESS)     # OP N, run in a subprocess
    p.add_argument('--epoch', type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument('--breakdown-one', type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument('--no-breakdown', action='store_true')
    a = p.parse_args()
    cache,sizes = Path(a.cache),[int(s) for s in a.sizes]
    n_all = 25_000_095 if max(sizes) <= 25_000_095 else max(sizes)
    if a.one: print(json.dumps(measure_one(cache, n_all, a.one[0], int(float(a.one[1]))))); return
    if a.epoch: print(json.dumps(epoch_one(cache, n_all, int(a.epoch), a.epoch_bs))); return
    if a.breakdown_one: print(json.dumps(breakdown(cache, n_all, int(a.breakdown_one)))); return
    t = time.time(); make_data(cache, n_all)
    print(f"synthetic set: {n_all:,} ratings (synth_ratings, ML-25M shape), made in {(cache/f'{n_all}.done').read_text()} s "
          f"(this run waited {time.time()-t:.0f} s)\n")
    rows = []
    print(f"{'operation':22s} {'rows':>11s} {'users':>8s} {'items':>7s} {'seconds':>8s} {'rows/s':>11s} {'peak MB':>8s} {'raw MB':>7s} {'peak/raw':>8s}")
    for op in a.ops:
        for n in sizes:
            r = subprocess_json(['--one', op, n, '--cache', cache]); rows.append(r)
            print(f"{op:22s} {n:>11,} {r['users']:>8,} {r['items']:>7,} {r['seconds']:>8.2f} {n/r['seconds']:>11,.0f} "
                  f"{r['peak']/2**20:>8.0f} {r['raw']/2**20:>7.0f} {r['peak']/r['raw']:>8.2f}", flush=True)
        if len(sizes) > 1:
            a0,a1 = [r for r in rows if r['op']==op][0],[r for r in rows if r['op']==op][-1]
            print(f"{'':22s} growth {sizes[0]:,} -> {sizes[-1]:,} rows (x{sizes[-1]/sizes[0]:.0f}): time x{a1['seconds']/a0['seconds']:.1f}, "
                  f"peak memory x{a1['peak']/max(a0['peak'],1):.1f}")
    if not a.no_breakdown:
        n = sorted(sizes)[len(sizes)//2]
        print(f"\nwhere from_df spends memory, {n:,} rows (peak of each step over the raw user/item/rating columns):")
        for name,x in subprocess_json(['--breakdown-one', n, '--cache', cache]): print(f"  {name:68s} {x:5.2f}x")
    if not a.no_epoch:
        n = max(sizes)
        e = subprocess_json(['--epoch', n, '--epoch-bs', a.epoch_bs, '--cache', cache])
        print(f"\none epoch, dot model (collab_learner, 50 factors, Adam), {n:,} ratings, bs {e['bs']}, {e['threads']} thread(s): "
              f"from_df {e['from_df']:.1f} s; train {e['train']:.1f} s = {e['train_rows']/e['train']:,.0f} ratings/s; "
              f"validation {e['valid']:.1f} s = {e['valid_rows']/e['valid']:,.0f} ratings/s; valid MSE {e['valid_mse']:.3f}")
    if not a.no_ddp:
        print("\nDDP (torchrun, gloo, CPU, 1 thread per process), examples/ddp_train.py, dot model, 2 epochs, seconds per training epoch:")
        for data,gbs in (('ml100k', 1024), (f'synth:{int(a.ddp_rows)}', 8192)):
            d = ddp_epochs(data, gbs); t1,t2 = np.mean(d[1]),np.mean(d[2])
            print(f"  {data:14s} global batch {gbs:5d}: 1 process {t1:6.1f} s {d[1]}   2 processes {t2:6.1f} s {d[2]}   speed-up x{t1/t2:.2f}", flush=True)


# ---------------------------------------------------------------- memory benchmark (issue 15; self-contained: run with --memory)
MEMORY_DOC = """Memory of the data path and of exports, each in a fresh process on synthetic ML-25M-shaped ratings (`synth_ratings`):
retained = resident memory held after the call (the frame and the result alive, garbage collected), peak = highest resident
memory during the call, both above the loaded frame. A figure over 1.25x its BASELINE prints REGRESSION and the exit code is 1.

    python bench/scale.py --memory                      # 5M ratings, 10M predicted pairs, collab_ext only (~3 min)
    python bench/scale.py --memory --memory-stock       # + fastai's CollabDataLoaders.from_df for comparison (slower)
"""
MEMORY_BASELINE = {'from_df retained': 148, 'predict_ratings peak': 305}     # MB, measured 2026-12-01 (5M ratings; 10M pairs)

def _memory_data(cache:Path, n:int):
    "Cache `n` synthetic ratings as .npy columns (`load(cache, n, n, cols)` reads them)"
    if (cache/f'{n}.done').exists(): return
    from collab_ext.synth import synth_ratings
    cache.mkdir(parents=True, exist_ok=True)
    t = time.time(); r = synth_ratings(n, seed=0)
    for c in COLS: np.save(cache/f'{n}_{c}.npy', r[c].to_numpy())
    (cache/f'{n}.done').write_text(f'{time.time()-t:.1f}')

def _rss() -> int:
    import gc
    from collab_ext.core import _vm
    gc.collect(); return _vm('VmRSS')

def memory_one(cache:Path, what:str, n:int, pairs:int) -> dict:
    "In this (fresh) process: the memory figures of `what` on the first `n` cached ratings"
    import torch, tempfile
    torch.set_num_threads(1)
    from collab_ext.core import peak_memory
    from collab_ext.data.split import RandomRatingSplitter
    from collab_ext.data.loaders import FastCollabDataLoaders
    import collab_ext.learner, collab_ext.export   # noqa: F401  (imports before measuring)
    from fastai.collab import CollabDataLoaders, collab_learner
    df = load(cache, n, n, COLS[:3]); start = _rss()
    warnings.simplefilter('ignore')
    if what == 'stock_from_df':
        with peak_memory() as m: dls = CollabDataLoaders.from_df(df, valid_pct=0.2, seed=42, bs=65536)
        return {'what': what, 'n': n, 'retained': _rss()-start, 'peak': m.peak}
    with peak_memory() as m: dls = FastCollabDataLoaders.from_df(df, splitter=RandomRatingSplitter(0.2, 42), bs=65536, seed=42, device='cpu', unseen='keep')
    if what == 'from_df': return {'what': what, 'n': n, 'retained': _rss()-start, 'peak': m.peak}
    torch.manual_seed(0)
    learn = collab_learner(dls, n_factors=8, y_range=(0, 5.5))   # 8 factors: ~7.9 MB of weights at 5M (the issue's model)
    if what == 'predict_ratings':
        rng = np.random.default_rng(0)
        users,items = dls.classes['user'].items[1:],dls.classes['item'].items[1:]
        q = pd.DataFrame({'user': np.asarray(users)[rng.integers(0, len(users), pairs)], 'item': np.asarray(items)[rng.integers(0, len(items), pairs)]})
        base = _rss()
        with peak_memory() as m: p = learn.predict_ratings(q)
        return {'what': what, 'n': pairs, 'peak': m.peak, 'retained': _rss()-base, 'out_bytes': p.nbytes}
    if what == 'export':
        d = Path(tempfile.mkdtemp())
        learn.export_safe(d/'model.pkl')
        learn.save_collab(d)
        # the file before issue 15: the empty datasets were zero-length views of the training tensors (whole storage pickled)
        import cloudpickle
        old = learn.dls
        learn.dls = old.new_empty()
        for e,o in zip(learn.dls.loaders, old.loaders): e.dataset.x,e.dataset.y = o.dataset.x[:0],o.dataset.y[:0]
        learn.opt = None
        torch.save(learn, d/'before.pkl', pickle_module=cloudpickle, pickle_protocol=2)
        learn.dls = old
        size = lambda *fs: sum((d/f).stat().st_size for f in fs)
        return {'what': what, 'n': n, 'params': sum(p.numel()*4 for p in learn.model.parameters()), 'seen': len(dls.train_ds)*4,
                'before': size('before.pkl'), 'export_safe': size('model.pkl'), 'save_collab': size('weights.pt', 'model.json')}
    raise ValueError(what)

def memory_main():
    p = argparse.ArgumentParser(description=MEMORY_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--memory', action='store_true')
    p.add_argument('--memory-stock', action='store_true', help="also measure fastai's CollabDataLoaders.from_df")
    p.add_argument('--rows', type=float, default=5e6)
    p.add_argument('--pairs', type=float, default=10e6)
    p.add_argument('--cache', default='/tmp/collab_ext_scale')
    p.add_argument('--memory-one', default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    cache,n,pairs = Path(a.cache),int(a.rows),int(a.pairs)
    if a.memory_one: print(json.dumps(memory_one(cache, a.memory_one, n, pairs))); return
    _memory_data(cache, n)
    run = lambda what: subprocess_json(['--memory-one', what, '--rows', n, '--pairs', pairs, '--cache', cache])
    MB,bad = 2**20,[]
    def show(name, mb):
        base = MEMORY_BASELINE.get(name) if n == 5_000_000 and pairs == 10_000_000 else None
        flag = '' if base is None else f"  (baseline {base} MB{', REGRESSION' if mb > 1.25*base else ''})"
        if base is not None and mb > 1.25*base: bad.append(name)
        print(f"  {name:34s} {mb:8.0f} MB{flag}", flush=True)
    print(f"memory, {n:,} synthetic ratings (synth_ratings, ML-25M shape), fresh process per line:")
    r = run('from_df'); show('from_df retained', r['retained']/MB); show('from_df peak', r['peak']/MB)
    if a.memory_stock:
        s = run('stock_from_df'); show('stock CollabDataLoaders retained', s['retained']/MB); show('stock CollabDataLoaders peak', s['peak']/MB)
    r = run('predict_ratings'); show('predict_ratings peak', r['peak']/MB)
    print(f"  {'':34s} ({pairs:,} pairs; the float32 result alone is {r['out_bytes']/MB:.0f} MB)")
    e = run('export')
    print(f"export of collab_learner(n_factors=8): weights {e['params']/MB:.1f} MB, seen-items index {e['seen']/MB:.1f} MB;"
          f"\n  file before issue 15 (views of the training rows) {e['before']/MB:.1f} MB; export_safe {e['export_safe']/MB:.1f} MB;"
          f" save_collab (weights.pt + model.json) {e['save_collab']/MB:.1f} MB")
    if bad: print(f"REGRESSION: {bad}"); sys.exit(1)

if __name__ == '__main__':
    if any(o.startswith('--memory') for o in sys.argv[1:]): memory_main()
    else: main()
