"The `collab_ext` command end to end: train on real ML-100k and on the offline synthetic fallback, recommend, bad input."
import subprocess, sys

def run(*args, **kw):
    return subprocess.run([sys.executable, '-c', 'from collab_ext.cli import main; main()', *args], capture_output=True, text=True, **kw)

def test_train_real_then_recommend(tmp_path, ml100k_path):
    res = run('train', '--data', str(ml100k_path), '--epochs', '3', '--out', str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert 'train_loss' in res.stdout and 'valid_loss' in res.stdout
    rmse = float(res.stdout.split('validation RMSE:')[1].split()[0])
    assert 0.85 < rmse < 0.97
    assert (tmp_path/'model.pkl').exists()
    rec = run('recommend', '--model', str(tmp_path/'model.pkl'), '--user', '196', '-n', '5')
    assert rec.returncode == 0, rec.stderr
    lines = rec.stdout.strip().splitlines()
    assert len(lines) == 6 and 'title' in lines[0]            # header + 5 items
    bad = run('recommend', '--model', str(tmp_path/'model.pkl'), '--user', '99999')
    assert bad.returncode == 1 and '99999' in bad.stderr

def test_offline_default_falls_back_to_synthetic(tmp_path):
    # no --data: untar_data cannot download here (no internet); the command says so and uses the synthetic set
    code = ("import fastai.data.external as e\n"
            "def boom(*a, **k): raise OSError('no network')\n"
            "e.untar_data = boom\n"
            "from collab_ext.cli import main; main()")
    res = subprocess.run([sys.executable, '-c', code, 'train', '--epochs', '1', '--out', str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert 'could not download MovieLens-100k' in res.stdout and 'synthetic' in res.stdout
    assert (tmp_path/'model.pkl').exists()

def test_bad_arguments(tmp_path):
    res = run('train', '--model', 'svd', '--data', 'synthetic')
    assert res.returncode == 1 and "use 'dot' or 'nn'" in res.stderr
    res = run('train', '--data', str(tmp_path/'missing'))
    assert res.returncode == 1 and 'no such file' in res.stderr
    res = run('recommend', '--model', str(tmp_path/'none.pkl'), '--user', '1')
    assert res.returncode == 1 and 'no such file' in res.stderr
    res = run('frobnicate')
    assert res.returncode == 2 and 'usage' in res.stdout

def test_train_under_torchrun(tmp_path, ml100k_path):
    "`collab_ext train` runs data-parallel under torchrun (gloo on CPU): one table, one RMSE line, one export"
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_addr', '127.0.0.1',
           '--master_port', str(__import__('collab_ext.distributed', fromlist=['free_port']).free_port()),
           '-m', 'collab_ext.cli', 'train', '--data', str(ml100k_path), '--epochs', '1', '--bs', '512', '--out', str(tmp_path)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count('validation RMSE:') == 1 and res.stdout.count('train_loss') == 1
    assert 0.85 < float(res.stdout.split('validation RMSE:')[1].split()[0]) < 1.0
    assert (tmp_path/'model.pkl').exists()
