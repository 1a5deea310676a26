"A `torchrun` worker for tests/test_distributed.py: the example recipe plus probes (rows seen, a failing or stalled rank)."
import os, sys, time, argparse
from pathlib import Path
import torch
from fastai.callback.core import Callback
sys.path.insert(0, str(Path(__file__).resolve().parents[1]/'examples'))
from ddp_train import get_args, main

class RecordRows(Callback):
    "Keep the (user, item) codes of every training batch, per epoch"
    order = 100
    def __init__(self): self.rows = []     # not in before_fit: `get_preds` fires before_fit too
    def before_train(self): self.rows.append([])
    def after_batch(self):
        if self.training: self.rows[-1].append(self.xb[0].detach().cpu().clone())

class Misbehave(Callback):
    "On rank `rank`, raise (`how='fail'`) or stall (`how='stall'`) at training step `step`"
    def __init__(self, rank, step, how): self.rank,self.step,self.how = rank,step,how
    def after_batch(self):
        if not self.training or int(os.environ.get('RANK', 0)) != self.rank or self.iter != self.step: return
        if self.how == 'fail': raise RuntimeError(f"injected failure on rank {self.rank} at step {self.step}")
        time.sleep(600)

if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--out', required=True)
    p.add_argument('--misbehave', default=None, help='RANK:STEP:fail|stall')
    a,rest = p.parse_known_args()
    args = get_args(rest)
    rec = RecordRows()
    cbs = [rec] + ([Misbehave(*map(int, a.misbehave.split(':')[:2]), a.misbehave.split(':')[2])] if a.misbehave else [])
    rank = int(os.environ.get('RANK', 0))
    learn,preds,targs = main(args, cbs)
    with learn.distrib_ctx(timeout=args.timeout):          # get_preds under DDP on a set of odd size: unequal shards
        ds = learn.dls.valid_ds
        odd = learn.dls.valid.new(type(ds)(ds.x[:1001], ds.y[:1001], ds.classes, ds.y_names, ds.titles))
        odd_preds,_ = learn.get_preds(dl=odd)
        n_valid = len(learn.dls.valid)
    learn.export(os.path.join(a.out, f'export_from_rank{rank}.pkl'))
    torch.save(dict(params={k:v.detach().clone() for k,v in learn.model.state_dict().items()},
                    rows=[torch.cat(e) for e in rec.rows], recorder=learn.recorder.values, preds=preds, targs=targs,
                    odd_preds=odd_preds, world_size=int(os.environ.get('WORLD_SIZE', 1))),
               os.path.join(a.out, f'rank{rank}.pt'))
