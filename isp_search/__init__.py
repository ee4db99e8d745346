"""isp-search: learned lightweight smartphone ISPs trained with unpaired data, tuned by a distributed search."""

__version__ = "0.1.0"
