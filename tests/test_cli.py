"""The `collab_ext` command end to end (issue 11): it trains on exactly the data it is given (MovieLens folders, ratings
files with named or positional columns, $COLLAB_EXT_DATA, the offline synthetic fallback), says what it trains on, never
overwrites a model without --force, and answers every mistake with one line on stderr and exit code 2.
Most commands run in this process (`main(argv)`, output captured); the entry point itself, `--help` and torchrun run as
subprocesses."""
import io, os, subprocess, sys
from contextlib import redirect_stdout, redirect_stderr
from pathlib import Path
from types import SimpleNamespace
import pytest
from collab_ext.cli import main

ROOT = Path(__file__).resolve().parents[1]

def run(*args, env=None):
    "`collab_ext ARGS` in this process: exit code, stdout and stderr"
    out,err,old = io.StringIO(),io.StringIO(),dict(os.environ)
    os.environ.update(env or {})
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try: main([str(a) for a in args]); code = 0
            except SystemExit as e: code = e.code
    finally: os.environ.clear(); os.environ.update(old)
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())

def run_process(*args, **kw):
    return subprocess.run([sys.executable, '-m', 'collab_ext.cli', *map(str, args)], capture_output=True, text=True, **kw)

def one_line_error(res, *needles):
    "Exit code 2, exactly one line on stderr (no traceback), containing every needle"
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert res.stderr.count('\n') == 1 and 'Traceback' not in res.stderr, res.stderr
    for n in needles: assert n in res.stderr, (n, res.stderr)

def rmse_of(stdout): return float(stdout.split('validation RMSE:')[1].split()[0])

@pytest.fixture(scope='module')
def model(tmp_path_factory, ml100k_path):
    "One model trained by the command on the real ML-100k (3 epochs), and its output"
    out = tmp_path_factory.mktemp('cli')/'model'
    res = run_process('train', '--data', ml100k_path, '--epochs', 3, '--out', out)   # the real entry point, output to a pipe
    assert res.returncode == 0, res.stderr
    return out, res

def test_train_says_what_it_trains_on(model, ml100k_path):
    out,res = model
    assert f"data: {ml100k_path/'u.data'} (MovieLens, titles from u.item)" in res.stdout
    assert '100,000 ratings, 943 users, 1,682 items' in res.stdout
    assert 'split: random (seed 42): 80,000 training rows, 20,000 validation rows (20%)' in res.stdout
    assert 'validation rows with a user or item unseen in training: 34 (users 0, items 34' in res.stdout
    assert res.stdout.index('data:') < res.stdout.index('train_loss')       # printed before training
    assert 0.85 < rmse_of(res.stdout) < 0.97
    assert (out/'model.json').exists() and (out/'model.pkl').exists()

def test_plain_lines_and_rmse_column_when_not_a_terminal(model):
    _,res = model
    header = next(l for l in res.stdout.splitlines() if 'train_loss' in l)
    assert header.split() == ['epoch', 'train_loss', 'valid_loss', 'rmse', 'time']
    assert '\r' not in res.stdout and '█' not in res.stdout and '00:00<' not in res.stdout

def test_recommend(model):
    out,_ = model
    rec = run('recommend', '--model', out, '--user', 196, '-n', 5)
    assert rec.returncode == 0, rec.stderr
    lines = rec.stdout.strip().splitlines()
    assert len(lines) == 6 and 'title' in lines[0]            # header + 5 items
    assert rec.stderr == ''                                   # no pickle warning: the pickle-free files are loaded

def test_unknown_user(model):
    out,_ = model
    one_line_error(run('recommend', '--model', out, '--user', 99999), '--user 99999: not one of this model', '--unknown na')
    res = run('recommend', '--model', out, '--user', 99999, '--unknown', 'na', '-n', 3)
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.strip().splitlines()) == 4 and "unknown-user ('#na#')" in res.stderr
    one_line_error(run('recommend', '--model', out, '--user', 99999, '--unknown', 'maybe'), "use 'error' or 'na'")

def test_out_is_not_overwritten_without_force(model, ml100k_path):
    out,_ = model
    before = (out/'model.json').stat().st_mtime_ns
    one_line_error(run('train', '--data', ml100k_path, '--out', out), 'already holds a model', '--force')
    assert (out/'model.json').stat().st_mtime_ns == before

def test_force_replaces(tmp_path):
    assert run('train', '--data', 'synthetic', '--epochs', 1, '--out', tmp_path).returncode == 0
    res = run('train', '--data', 'synthetic', '--epochs', 1, '--out', tmp_path, '--force')
    assert res.returncode == 0, res.stderr

@pytest.mark.parametrize('args,needles', [
    (['train', '--bs', 0], ['--bs 0: give a whole number']),
    (['train', '--epochs', 0], ['--epochs 0']),
    (['train', '--epochs', 'x'], ['invalid int value']),
    (['train', '--model', 'svd', '--data', '/nonexistent'], ["--model 'svd'"]),     # options before data
    (['train', '--lr', 0], ['--lr 0']),
    (['train', '--valid-pct', 1.5], ['--valid-pct 1.5']),
    (['train', '--threads', 0], ['--threads 0']),
    (['train', '--data', '/nonexistent'], ['no such file or folder']),
    (['recommend', '--model', '/nonexistent', '--user', 1], ['no such file or folder']),
    (['recommend', '--user', 1, '-n', 0, '--model', '/nonexistent'], ['-n 0']),
    (['frobnicate'], ['invalid choice']),
])
def test_mistakes_are_one_line(args, needles):
    one_line_error(run(*args), *needles)

def test_recommend_wrong_model_files(tmp_path, model):
    out,_ = model
    one_line_error(run('recommend', '--model', tmp_path, '--user', 196), 'no model.json in this folder')
    csv = tmp_path/'some.csv'; csv.write_text('user,item,rating\n1,2,3\n')
    one_line_error(run('recommend', '--model', csv, '--user', 196), 'not a model')
    bad = tmp_path/'bad.pkl'; bad.write_text('not a pickle')
    one_line_error(run('recommend', '--model', bad, '--user', 196), 'is a pickle', '--trust-pickle')
    one_line_error(run('recommend', '--model', bad, '--user', 196, '--trust-pickle'), 'not a readable fastai export')

def test_data_folder_is_never_substituted(tmp_path, ml100k_path):
    "A folder holding ml-100k/ is not ml-100k; a file beside an ml-100k/ folder is read itself"
    (tmp_path/'ml-100k').symlink_to(ml100k_path)
    one_line_error(run('train', '--data', tmp_path, '--out', tmp_path/'o'), 'no ratings file in this folder', f"--data {tmp_path/'ml-100k'}")
    mine = tmp_path/'my_ratings.csv'
    mine.write_text('user,item,rating\n' + ''.join(f'{u},{i},{(u*i)%5+1}\n' for u in range(1, 41) for i in range(1, 31)))
    res = run('train', '--data', mine, '--epochs', 1, '--bs', 64, '--out', tmp_path/'o')
    assert res.returncode == 0, res.stderr
    assert f'data: {mine}' in res.stdout and '1,200 ratings, 40 users, 30 items' in res.stdout

def test_ratings_files(tmp_path):
    "TSV without header, CSV with other names (--user-col ...), a 3-column ratings.csv without movies.csv"
    rows = [(u, i, (u+i) % 5 + 1) for u in range(1, 31) for i in range(1, 21)]
    tsv = tmp_path/'r.tsv'; tsv.write_text(''.join(f'{u}\t{i}\t{r}\t88125094{u%10}\n' for u,i,r in rows))
    res = run('train', '--data', tsv, '--epochs', 1, '--bs', 64, '--out', tmp_path/'a')
    assert res.returncode == 0 and '600 ratings, 30 users, 20 items' in res.stdout, res.stderr
    csv = tmp_path/'other.csv'; csv.write_text('who,what,score\n' + ''.join(f'{u},{i},{r}\n' for u,i,r in rows))
    one_line_error(run('train', '--data', csv, '--out', tmp_path/'b'), "no user column among ['who', 'what', 'score']", '--user-col')
    res = run('train', '--data', csv, '--user-col', 'who', '--item-col', 'what', '--epochs', 1, '--bs', 64, '--out', tmp_path/'b')
    assert res.returncode == 0 and '600 ratings' in res.stdout, res.stderr
    one_line_error(run('train', '--data', csv, '--user-col', 'nobody', '--out', tmp_path/'c'), "--user-col 'nobody'", "['who', 'what', 'score']")
    d = tmp_path/'latest'; d.mkdir()
    (d/'ratings.csv').write_text('userId,movieId,rating\n' + ''.join(f'{u},{i},{r}\n' for u,i,r in rows))
    res = run('train', '--data', d, '--epochs', 1, '--bs', 64, '--out', tmp_path/'d')
    assert res.returncode == 0 and f"data: {d/'ratings.csv'}" in res.stdout, res.stderr
    bad = tmp_path/'bad.csv'; bad.write_text('user,item,rating\n1,2,3\n1,3,five\n')
    one_line_error(run('train', '--data', bad, '--out', tmp_path/'e'), "line 3: rating 'five' is not a number")

def test_collab_ext_data_is_honoured(tmp_path, ml100k_path):
    (tmp_path/'ml-100k').symlink_to(ml100k_path)
    res = run('train', '--epochs', 1, '--out', tmp_path/'o', env={'COLLAB_EXT_DATA': str(tmp_path)})
    assert res.returncode == 0, res.stderr
    assert f"data: {tmp_path/'ml-100k'/'u.data'}" in res.stdout and 'synthetic' not in res.stdout

def test_offline_default_falls_back_to_synthetic(tmp_path, monkeypatch):
    "No --data and no local copy: untar_data cannot download (offline); the command says so and uses the synthetic set"
    import fastai.data.external as e
    def boom(*a, **k): raise OSError('no network')
    monkeypatch.setattr(e, 'untar_data', boom)
    res = run('train', '--epochs', 1, '--out', tmp_path, env={'COLLAB_EXT_DATA': str(tmp_path/'empty')})
    assert res.returncode == 0, res.stderr
    assert 'could not download MovieLens-100k' in res.stdout and 'data: the built-in synthetic' in res.stdout
    assert (tmp_path/'model.json').exists()

def test_defaults_are_the_readme_recipe():
    from collab_ext.cli import parser, RECIPE, DEFAULT_THREADS
    a = parser().parse_args(['train'])
    assert (a.model, a.epochs, a.bs, a.lr, a.wd, a.n_factors) == ('dot', 8, 1024, 3e-2, 1.0, 50) == tuple(RECIPE[k] for k in
            ('model','epochs','bs','lr','wd','n_factors'))
    assert a.threads == DEFAULT_THREADS == 1
    readme = (ROOT/'README.md').read_text()
    assert '`bs=1024`, 8 epochs, `lr=3e-2`, `wd=1.0`' in readme

def test_help_imports_nothing_heavy():
    "`collab_ext --help` and option errors load neither torch nor fastai nor pandas"
    code = ("import sys\nfrom collab_ext.cli import main\n"
            "try: main(['train', '--bs', '0'])\nexcept SystemExit as e: assert e.code == 2\n"
            "heavy = [m for m in ('torch','fastai','pandas') if m in sys.modules]; assert not heavy, heavy")
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert run_process('--help').returncode == 0

def test_train_under_torchrun(tmp_path, ml100k_path):
    "`collab_ext train` runs data-parallel under torchrun (gloo on CPU): one summary, one table, one RMSE line, one save"
    if os.environ.get('CI', '').lower() not in ('1','true','yes'): pytest.importorskip('accelerate')   # CI installs the dev extra
    from collab_ext.distributed import free_port
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_addr', '127.0.0.1',
           '--master_port', str(free_port()), '-m', 'collab_ext.cli', 'train', '--data', str(ml100k_path), '--epochs', '1',
           '--bs', '512', '--out', str(tmp_path)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert 'terminate called' not in res.stderr
    assert res.stdout.count('validation RMSE:') == 1 and res.stdout.count('train_loss') == 1 and res.stdout.count('data:') == 1
    assert 0.85 < rmse_of(res.stdout) < 1.0
    assert (tmp_path/'model.json').exists()
