"""Put on PYTHONPATH by ``cc-runtime launch`` so children activate cc_runtime even without the .pth
installed (running from a source tree). Chains to the next ``sitecustomize`` on sys.path, if any, so
a user's or distribution's own sitecustomize still runs.
"""

import importlib.util
import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
try:
    from _cc_runtime_bootstrap import run as _run  # gated on CC_RUNTIME_BOOTSTRAP inside
except ImportError:
    _run = None  # type: ignore[assignment]
if _run is not None:
    _run()  # never raises; exits the process (status 1) in strict mode (a strict deployment must not run unpatched)

_rest = [p for p in sys.path if os.path.abspath(p or ".") != _here]
for _p in _rest:
    _cand = os.path.join(_p or ".", "sitecustomize.py")
    if os.path.isfile(_cand):
        _spec = importlib.util.spec_from_file_location("_cc_runtime_next_sitecustomize", _cand)
        if _spec and _spec.loader:
            try:
                _spec.loader.exec_module(importlib.util.module_from_spec(_spec))
            except Exception:  # noqa: BLE001
                pass
        break
