"""``cc-runtime sweep``: NVIDIA's CC serving table (CC off vs CC vs CC + cc_runtime) for any model.

Small modules, each one step: :mod:`.grid` (cells -> client argv), :mod:`.arms` (arms -> CC_RUNTIME_*
settings), :mod:`.server` (a server in its own process group, health, no orphans), :mod:`.client`
(SGLang's own benchmark client), :mod:`.store` (JSONL, resume), :mod:`.runner` (the loop and its
failure policy), :mod:`.report` (Markdown table and plots from saved results), :mod:`.cli`.
:mod:`.testserver` is a loopback stand-in for a GPU server, for tests; its results are labelled so.
Nothing here is imported by ``import cc_runtime``.
"""
