"""SGLang plugin (entry-point group ``sglang.srt.plugins``).

SGLang calls ``load_plugins()`` first thing in every scheduler process (and the detokenizer from
0.5.22, and the engine), which is exactly where the patches must be active: the process that ran
``import cc_runtime`` is not the one that runs the model. Plugin exceptions are only logged by SGLang,
but we never raise anyway.
"""

from __future__ import annotations


def load() -> None:
    from ..runtime import auto_activate

    auto_activate()
    from ..detect import cc_state

    if cc_state().enabled:  # the status file now names the process's role (run_scheduler_process)
        from ..status_file import write

        write()
