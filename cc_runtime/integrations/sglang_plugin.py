"""SGLang plugin (entry-point group ``sglang.srt.plugins``).

SGLang calls ``load_plugins()`` first thing in every scheduler process (and the detokenizer from
0.5.22, and the engine), which is exactly where the patches must be active: the process that ran
``import cc_runtime`` is not the one that runs the model. It is also where each rank runs its preflight
(``CC_RUNTIME_PREFLIGHT``), before the model's weights load.

SGLang's ``load_plugins`` logs a plugin's exception and goes on, so a refusal that only raised would let
the rank serve anyway: a refused preflight, or a strict-mode failure, ends the process instead (the one
line is already printed), and SGLang's launcher reports the dead rank.
"""

from __future__ import annotations


def load() -> None:
    from ..runtime import auto_activate, preflight_here

    try:
        auto_activate()
        preflight_here("sglang")
    except Exception as exc:
        if getattr(exc, "cc_runtime_strict", False):
            raise SystemExit(1) from None
        raise
    from ..detect import cc_state

    if cc_state().enabled:  # the status file now names the process's role (run_scheduler_process)
        from ..status_file import write

        write()
