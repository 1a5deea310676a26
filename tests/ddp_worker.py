"A `torchrun` worker for tests/test_distributed.py: the example recipe plus probes (rows seen, a failing or stalled rank)."
import os, sys, time, argparse
from pathlib import Path
import torch
from fastai.callback.core import Callback
sys.path.insert(0, str(Path(__file__).resolve().parents[1]/'examples'))
from ddp_train import get_args, main
from collab_ext.distributed import collab_distrib_ctx

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

def other_learners(names, seed:int, timeout:float, n_rows:int=20_000) -> dict:
    "Train each of the other collab_ext learners one epoch on the first `n_rows` ML-100k ratings, under DDP when launched"
    from fastai.collab import collab_learner
    from collab_ext.core import local_ml100k
    from collab_ext.data.load import load_movielens
    from collab_ext.data.split import RandomRatingSplitter
    from collab_ext.data.loaders import FastCollabDataLoaders
    from collab_ext.distributed import maybe_distrib_ctx
    ml = load_movielens(local_ml100k())
    r,res = ml.ratings.iloc[:n_rows],{}
    kw = dict(splitter=RandomRatingSplitter(0.2, seed), bs=256, seed=seed, device='cpu')
    for name in names:
        torch.manual_seed(seed)
        if name == 'nn':
            learn = collab_learner(FastCollabDataLoaders.from_df(r[['user','item','rating']], **kw), use_nn=True, layers=[32], y_range=(0,5.5))
        elif name == 'ce':
            from collab_ext.ce.data import CollabCEDataLoaders
            from collab_ext.ce.learner import collab_ce_learner
            learn = collab_ce_learner(CollabCEDataLoaders.from_df(r[['user','item','rating']], **kw), n_factors=16)
        elif name == 'tabular':
            from collab_ext.tabular import TabularCollabDataLoaders, tabular_collab_learner, movielens_tables
            users,items = movielens_tables(ml)
            dls = TabularCollabDataLoaders.from_dfs(r[['user','item','rating','timestamp']], users, items, date_col='timestamp',
                                                    cat_names=['gender','occupation'], cont_names=['age'], **kw)
            learn = tabular_collab_learner(dls, n_factors=16, layers=[32])
        rec = RecordRows()
        learn.add_cb(rec)
        with maybe_distrib_ctx(learn, timeout=timeout):
            learn.fit(1, 3e-3)
            preds,_ = learn.get_preds()
        res[name] = dict(params={k:v.detach().clone() for k,v in learn.model.named_parameters()},
                         rows=torch.cat(rec.rows[0])[:, :2], train_x=learn.dls.train_ds[:][0][:, :2] if name != 'tabular' else learn.dls.train_ds.x_cat[:, :2],
                         n_preds=len(preds), n_valid=len(learn.dls.valid_ds))
    return res

if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--out', required=True)
    p.add_argument('--misbehave', default=None, help='RANK:STEP:fail|stall')
    p.add_argument('--others', default='', help='comma-separated other learners to train too: nn,ce,tabular')
    a,rest = p.parse_known_args()
    args = get_args(rest)
    rec = RecordRows()
    cbs = [rec] + ([Misbehave(*map(int, a.misbehave.split(':')[:2]), a.misbehave.split(':')[2])] if a.misbehave else [])
    rank = int(os.environ.get('RANK', 0))
    learn,preds,targs = main(args, cbs)
    with collab_distrib_ctx(learn, timeout=args.timeout):  # get_preds under DDP on a set of odd size: unequal shards
        ds = learn.dls.valid_ds
        odd = learn.dls.valid.new(type(ds)(ds.x[:1001], ds.y[:1001], ds.classes, ds.y_names, ds.titles))
        odd_preds,_ = learn.get_preds(dl=odd)
        n_valid = len(learn.dls.valid)
    learn.export(os.path.join(a.out, f'export_from_rank{rank}.pkl'))
    ds = learn.dls.valid_ds
    with torch.no_grad(): local = learn.model.eval()(ds.x).flatten()
    others = other_learners([o for o in a.others.split(',') if o], args.seed, args.timeout)
    torch.save(dict(others=others, local_preds=local, train_x=learn.dls.train_ds.x, params={k:v.detach().clone() for k,v in learn.model.state_dict().items()},
                    rows=[torch.cat(e) for e in rec.rows], recorder=learn.recorder.values, preds=preds, targs=targs,
                    odd_preds=odd_preds, world_size=int(os.environ.get('WORLD_SIZE', 1))),
               os.path.join(a.out, f'rank{rank}.pt'))
