"""isp-search: learned lightweight smartphone ISPs trained with unpaired data, tuned by a distributed search."""

__version__ = "0.1.0"

# Before anything imports TensorFlow, LiteRT or onnx2tf: their log noise is silenced in every process (quiet.py).
from isp_search import quiet as _quiet

_quiet.install()
