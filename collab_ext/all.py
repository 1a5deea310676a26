"collab_ext's whole public API, plus what fastai.collab users need: `from collab_ext.all import *`"
# Hand-written (like fastai's own `all.py` files): nbdev does not generate this file. Other hand-written files:
# collab_ext/__init__.py, every package's `__init__.py` and `all.py`, and the deprecated-path aliases
# collab_ext/coldstart.py, collab_ext/feedback_loop.py and collab_ext/feedback_metrics.py (removed next release).
from fastai.collab import *
from fastai.tabular.all import *
from .core import *
from .fastloop import *
from .synth import *
from .data.all import *
from .models import *
from .metrics.all import *
from .learner import *
from .interpret import *
from .export import *
from .ce.all import *
from .rating.all import *
from .ranking.all import *
from .tabular.all import *
from .feedback.all import *
from .cli import train_learner
