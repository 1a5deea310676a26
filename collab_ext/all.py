"collab_ext's whole public API, plus what fastai.collab users need: `from collab_ext.all import *`"
# Hand-written (like fastai's own `all.py` files): nbdev does not generate this file.
from fastai.collab import *
from fastai.tabular.all import *
from .core import *
from .fastloop import *
from .synth import *
from .data.all import *
from .models import *
from .learner import *
from .interpret import *
from .ce.all import *
from .tabular import *
from .coldstart import *
from .feedback import *
from .feedback_metrics import *
from .feedback_loop import *
from .cli import train_learner
