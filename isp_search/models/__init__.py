"""Generator backbones, registered under the names used in YAML and on the command line."""

from isp_search.models import efficient_isp as _efficient_isp  # noqa: F401  (registers)
from isp_search.models import rmfa as _rmfa  # noqa: F401  (registers)
from isp_search.models.registry import GENERATORS, BackboneSpec, create_generator, spec_for

__all__ = ["GENERATORS", "BackboneSpec", "create_generator", "spec_for"]
