__version__ = "0.1.0"

# Hand-written. `import collab_ext` loads nothing else (the `collab_ext` command starts at once, and nothing in fastai
# changes); the public API comes from `collab_ext.all` on first use: `collab_ext.load_movielens`, `from collab_ext import *`.
def __getattr__(name):
    "Names of `collab_ext.all`, imported on first use"
    if name.startswith('__') and name != '__all__': raise AttributeError(f"module 'collab_ext' has no attribute {name!r}")
    import importlib
    api = importlib.import_module('collab_ext.all')
    if name == '__all__': return [n for n in vars(api) if not n.startswith('_')]
    try: return getattr(api, name)
    except AttributeError: raise AttributeError(f"module 'collab_ext' has no attribute {name!r}") from None
