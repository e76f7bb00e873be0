"""Op definitions, one module per family; importing this package fills the registry."""
from . import core  # noqa: F401
from . import math  # noqa: F401
from . import array  # noqa: F401
from . import nn  # noqa: F401
from . import random  # noqa: F401
