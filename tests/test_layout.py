"""The package layout (issue 12): imports only point down the layers, no private name crosses modules, modules stay short,
no fastai protocol method is patched onto collab_ext's own classes, and the old import paths warn for one release."""
import ast, re, sys, importlib, subprocess, warnings
from pathlib import Path
import pytest

PKG = Path(__file__).resolve().parents[1]/'collab_ext'
HAND_WRITTEN = {'__init__', 'all', 'coldstart', 'feedback_loop', 'feedback_metrics'}   # re-exports and deprecated aliases
MAX_LINES = 300          # "a module over ~300 lines wants splitting": counted without blank lines and nbdev's `# %%` cell markers

# Layers, bottom first (docs: nbs/contributing.ipynb). A module may import from its own layer or below, never above.
LAYERS = [('core', 'synth'),
          ('data',),
          ('models',),
          ('metrics',),
          ('fastloop', 'learner', 'interpret'),
          ('ce', 'tabular', 'feedback', 'ranking', 'rating', 'export', 'distributed'),
          ('cli',)]

def layer(mod:str) -> int:
    "Layer of module `mod` ('tabular.data' -> its package's layer)"
    top = mod.split('.')[0]
    for k,names in enumerate(LAYERS):
        if top in names: return k
    raise KeyError(f"collab_ext.{mod} is in no layer of tests/test_layout.py: add it where it belongs")

def modules() -> dict:
    "{dotted name: path} of every generated module of collab_ext"
    res = {}
    for p in sorted(PKG.rglob('*.py')):
        if p.stem.startswith('_') and p.stem != '__init__' or p.stem in HAND_WRITTEN: continue
        res['.'.join(p.relative_to(PKG).with_suffix('').parts)] = p
    return res

def imports(name:str, path:Path):
    "(imported collab_ext module, imported names) of each import statement of module `name`"
    pkg = name.split('.')[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[:len(pkg)-(node.level-1)] if node.level > 1 else pkg
                target = '.'.join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith('collab_ext.'): target = node.module[len('collab_ext.'):]
            else: continue
            if not target: continue
            yield target, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith('collab_ext.'): yield a.name[len('collab_ext.'):], []

def test_every_module_has_a_layer():
    for name in modules(): layer(name)

def test_imports_point_down():
    bad = [f"collab_ext.{n} (layer {layer(n)}) imports collab_ext.{t} (layer {layer(t)})"
           for n,p in modules().items() for t,_ in imports(n, p) if t in modules() and layer(t) > layer(n)]
    assert not bad, '\n'.join(bad)

def test_no_import_cycles():
    mods = modules()
    graph = {n: {t for t,_ in imports(n, p) if t in mods and t != n} for n,p in mods.items()}
    state = {}
    def visit(n, stack):
        state[n] = 'open'
        for t in graph[n]:
            if state.get(t) == 'open': raise AssertionError(f"import cycle: {' -> '.join(stack + [n, t])}")
            if t not in state: visit(t, stack + [n])
        state[n] = 'done'
    for n in graph:
        if n not in state: visit(n, [])

def test_no_private_name_crosses_modules():
    bad = [f"collab_ext.{n} imports {x} from collab_ext.{t}" for n,p in modules().items() for t,names in imports(n, p)
           for x in names if x.startswith('_') and not x.startswith('__')]
    assert not bad, '\n'.join(bad)

@pytest.mark.parametrize('old', ['_seen_index', '_user_code', '_titles', '_np'])
def test_named_private_helpers_are_gone(old):
    "The private helpers issue 12 found crossing modules are public methods or functions now"
    used = [str(p.relative_to(PKG)) for p in PKG.rglob('*.py') if p.name != '_modidx.py' and re.search(rf'\b{old}\(', p.read_text())]
    assert not used, used

def code_lines(path:Path) -> int:
    "Lines of `path` that are neither blank nor nbdev's `# %%` cell markers"
    return sum(1 for l in path.read_text().splitlines() if l.strip() and not l.startswith('# %%'))

def test_modules_are_short():
    long = {n: code_lines(p) for n,p in modules().items()}
    assert all(v <= MAX_LINES for v in long.values()), {n: v for n,v in long.items() if v > MAX_LINES}

PROTOCOL = re.compile(r'^(forward|before_\w+|after_\w+|encodes|decodes|show_batch|show_results|decode_batch|to_detach)$')

def test_protocol_methods_live_in_class_bodies():
    "`forward`, callback events and DataLoader hooks of collab_ext's own classes are defined in the class, not `@patch`ed on"
    bad = []
    for n,p in modules().items():
        tree = ast.parse(p.read_text())
        own = {c.name for c in ast.walk(tree) if isinstance(c, ast.ClassDef)}
        for f in tree.body:
            if not isinstance(f, ast.FunctionDef) or not PROTOCOL.match(f.name): continue
            if not any('patch' in ast.unparse(d) for d in f.decorator_list): continue
            ann = f.args.args[0].annotation if f.args.args else None
            if ann is not None and ast.unparse(ann) in own: bad.append(f"collab_ext.{n}: {ast.unparse(ann)}.{f.name}")
    assert not bad, bad

def test_one_test_dl():
    "`test_dl` is written once (FastCollabDataLoaders); the tabular loaders reuse it"
    defs = [f"{n}:{f.lineno}" for n,p in modules().items() for f in ast.walk(ast.parse(p.read_text()))
            if isinstance(f, ast.FunctionDef) and f.name == 'test_dl']
    assert len(defs) == 1, defs
    from collab_ext.data.loaders import FastCollabDataLoaders
    from collab_ext.tabular.data import TabularCollabDataLoaders
    assert TabularCollabDataLoaders.test_dl is FastCollabDataLoaders.test_dl

def _fresh(code:str) -> subprocess.CompletedProcess:
    "Run `code` in a fresh interpreter (module caches and warning registries empty)"
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=PKG.parent)

OLD_PATHS = [('collab_ext.coldstart', 'predict_cold', 'collab_ext.tabular.coldstart'),
             ('collab_ext.coldstart', 'rmse_np', 'collab_ext.metrics.rating'),
             ('collab_ext.feedback_loop', 'run_feedback', 'collab_ext.feedback.loop'),
             ('collab_ext.feedback_loop', 'run_arms', 'collab_ext.feedback.arms'),
             ('collab_ext.feedback_metrics', 'gini', 'collab_ext.metrics.beyond'),
             ('collab_ext.feedback_metrics', 'rmse_vs_world', 'collab_ext.metrics.beyond')]

@pytest.mark.parametrize('old,name,new', OLD_PATHS)
def test_old_paths_work_and_warn(old, name, new):
    mod = importlib.import_module(old)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        obj = getattr(mod, name)
    assert obj is getattr(importlib.import_module(new), name)
    msgs = [str(o.message) for o in w if issubclass(o.category, DeprecationWarning) and 'will be removed in the next release' in str(o.message)]
    assert len(msgs) == 1 and new in msgs[0] and old in msgs[0], msgs
    assert name in mod.__all__ and name in dir(mod)
    with pytest.raises(AttributeError): getattr(mod, 'no_such_name')

def test_star_import_of_old_path_warns():
    r = _fresh("import warnings; warnings.simplefilter('always', DeprecationWarning)\n"
               "from collab_ext.feedback_loop import *\nprint(FeedbackLoopCallback.__module__)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == 'collab_ext.feedback.loop'
    assert "`collab_ext.feedback_loop` is deprecated" in r.stderr

def test_package_names_need_no_warning():
    "`collab_ext.tabular` and `collab_ext.feedback` were modules and are packages now: their names are their public API"
    r = _fresh("import warnings; warnings.filterwarnings('error', '.*will be removed in the next release', DeprecationWarning)\n"
               "import collab_ext\n"
               "from collab_ext.tabular import tabular_collab_learner, TabularCollabDataLoaders, TabularCollabModel, movielens_tables, predict_cold\n"
               "from collab_ext.feedback import FeedbackWorld, GreedyPolicy, fit_oracle, FeedbackLoopCallback, run_feedback\n"
               "import collab_ext.tabular as ct; print(ct.TabularCollabModel.__module__)")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == 'collab_ext.tabular.model'

def test_import_collab_ext_uses_no_deprecated_path():
    r = _fresh("import warnings; warnings.simplefilter('always')\nimport collab_ext\nfrom collab_ext.all import *")
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'is deprecated and will be removed' not in r.stderr, r.stderr

def test_ce_all_keeps_its_names():
    "Helpers and metrics that moved down a layer are still exported by `collab_ext.ce.all`"
    import collab_ext.ce.all as ce
    for n in ('infer_levels', 'encode_ratings', 'expected_rating', 'nearest_level', 'ce_metrics', 'LevelMetric', 'mse_metrics',
              'RoundedAccuracy', 'collab_ce_learner', 'CollabCEDataLoaders'):
        assert hasattr(ce, n), n

def test_data_dir_never_searches_the_checkout(tmp_path, monkeypatch):
    from collab_ext.core import data_dir, local_ml100k
    assert data_dir(tmp_path) == tmp_path
    monkeypatch.setenv('COLLAB_EXT_DATA', str(tmp_path))
    assert data_dir() == tmp_path and local_ml100k() is None        # an empty folder: no ML-100k, and no search elsewhere
    monkeypatch.delenv('COLLAB_EXT_DATA')
    from fastai.data.external import fastai_path
    assert data_dir() == fastai_path('data')

@pytest.mark.parametrize('pkg', ['collab_ext.tabular', 'collab_ext.feedback'])
def test_package_star_import_exports_names_not_submodules(pkg):
    "`from collab_ext.tabular import *` gives the package's API and never its submodules (`all` would shadow the builtin)"
    ns = {}
    exec(f"from {pkg} import *", ns)
    assert 'all' not in ns and 'core' not in ns and 'data' not in ns and 'loop' not in ns
    assert set(importlib.import_module(pkg).__all__) == set(n for n in ns if n != '__builtins__')

# Classes and functions that learners exported before the move pickled by reference, at their old paths
OLD_GLOBALS = [('collab_ext.tabular', n) for n in ('TabularCollabModel', 'TabularCollabDataLoaders', 'TabularCollabDL',
                                                   'TabularCollabMeta', 'TabularCollabTensors')] + \
              [('collab_ext.ce.learner', n) for n in ('LevelMetric', 'level_accuracy', 'expected_rmse', 'rounded_accuracy', 'rounded_within_one', 'NoWDCallback')] + \
              [('collab_ext.ce.data', n) for n in ('CollabCETensors', 'CollabCEDL', 'CollabCEDataLoaders')] + \
              [('collab_ext.feedback', n) for n in ('FeedbackWorld', 'GreedyPolicy')]

@pytest.mark.parametrize('mod,name', OLD_GLOBALS)
def test_old_pickled_globals_resolve(mod, name):
    "An old export names `mod.name`; unpickling looks it up there and must find the same object"
    import pickle
    obj = pickle.loads(f"c{mod}\n{name}\n.".encode())
    assert obj.__name__ == name
