"""Train collab_ext's dot-product model data-parallel on PyTorch's engine (DDP through fastai's `DistributedTrainer`).

    torchrun --nproc_per_node 2 examples/ddp_train.py --epochs 2 --bs 512           # 2 processes, gloo on CPU
    accelerate launch --multi_gpu --num_processes 2 examples/ddp_train.py --bs 512  # the same via Accelerate (gloo without GPUs)
    torchrun --nproc_per_node 8 examples/ddp_train.py --bs 128                      # 8 GPUs: NCCL, same code
    python examples/ddp_train.py --bs 1024                                          # one process, same global batch

`--bs` is per process (PyTorch's and fastai's convention): the global batch is bs × processes.
Every rank sees its own part of each global batch, so each rating is used once per epoch across ranks;
metrics are computed on the rows of all ranks; `export` writes from rank 0 only.
"""
import argparse, os, time
import torch
from fastcore.foundation import L
from fastai.callback.core import Callback
from fastai.collab import collab_learner
from fastai.metrics import rmse
from collab_ext.core import local_ml100k
from collab_ext.data.load import load_movielens
from collab_ext.data.split import RandomRatingSplitter
from collab_ext.data.loaders import FastCollabDataLoaders
from collab_ext.synth import synth_ratings
from collab_ext.distributed import maybe_distrib_ctx   # needs accelerate: pip install "collab_ext[distributed]"

def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--data', default='ml100k', help="'ml100k' (the local copy) or 'synth:N' for N synthetic ratings")
    p.add_argument('--epochs', type=int, default=2)
    p.add_argument('--bs', type=int, default=512, help='batch size per process')
    p.add_argument('--lr', type=float, default=5e-3)
    p.add_argument('--wd', type=float, default=0.1)
    p.add_argument('--n-factors', type=int, default=50)
    p.add_argument('--seed', type=int, default=42)
    p.add_argument('--timeout', type=float, default=600, help='seconds a rank waits for the others before failing')
    p.add_argument('--export', default=None, help='export the trained Learner here (rank 0 writes)')
    p.add_argument('--timing', action='store_true', help='print the seconds of each training epoch')
    return p.parse_args(argv)

def get_ratings(data:str):
    "The benchmark ratings (ML-100k, u.data order) or a synthetic ML-25M-shaped sample"
    if data.startswith('synth:'): return synth_ratings(int(float(data[6:])), seed=0)[['user','item','rating']]
    path = local_ml100k()
    assert path is not None, "ML-100k not found: set $COLLAB_EXT_DATA"
    return load_movielens(path).ratings[['user','item','rating']]

def build_learner(args, cbs=None):
    "The benchmark split, seeded loaders and a seeded dot-product model: identical on every rank"
    torch.manual_seed(args.seed)
    dls = FastCollabDataLoaders.from_df(get_ratings(args.data), splitter=RandomRatingSplitter(0.2, args.seed),
                                        bs=args.bs, seed=args.seed, device='cpu' if not torch.cuda.is_available() else None)
    return collab_learner(dls, n_factors=args.n_factors, y_range=(0, 5.5), metrics=rmse, cbs=cbs)

class EpochTimer(Callback):
    "Seconds of each training phase"
    def __init__(self): self.times = []        # not in before_fit: `get_preds` fires it too
    def before_train(self): self.t = time.perf_counter()
    def after_train(self): self.times.append(round(time.perf_counter() - self.t, 2))

def main(args, cbs=None):
    timer = EpochTimer() if args.timing else None
    learn = build_learner(args, L(cbs) + L(timer))
    with maybe_distrib_ctx(learn, timeout=args.timeout):
        learn.fit_one_cycle(args.epochs, args.lr, wd=args.wd)
        preds,targs = learn.get_preds()               # gathered: the whole validation set on every rank
    if args.export: learn.export(os.path.abspath(args.export))   # fastai writes from rank 0 only
    if int(os.environ.get('RANK', 0)) == 0:
        print(f"world size {os.environ.get('WORLD_SIZE', 1)}: valid rmse {float(((preds.flatten()-targs.flatten())**2).mean().sqrt()):.4f} "
              f"on {len(preds)} ratings")
        if timer: print(f"train seconds per epoch: {timer.times}")
    return learn, preds, targs

if __name__ == '__main__': main(get_args())
