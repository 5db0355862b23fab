"""Host->device input staging under CC: one packed crossing on an idle side stream (see stager.py).

``deferred.py`` collects the host->device copies a batch builder makes and flushes them through the
stager in one crossing (used by the SGLang patches). Imports nothing heavy: torch is imported inside
the functions that need it.
"""

from .inputs import StagedInputs, StagingError, host_tensors
from .stager import H2DStager

__all__ = ["H2DStager", "StagedInputs", "StagingError", "host_tensors"]
