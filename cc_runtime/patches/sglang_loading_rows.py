"""Tensor-parallel row reads for the ``sglang.loading`` patch: which dim-0 rows this rank keeps.

Why: with tensor parallelism every rank keeps a slice of most tensors; where the slice is a range of
dim-0 rows (column-parallel, merged gate/up, QKV and vocab-parallel shards) it is one contiguous byte
range of the file, and only it needs to cross the encrypted bounce buffer.

How: before the real load, ``DefaultModelLoader._get_all_weights`` (wrapped) runs once with the
patched iterators yielding :mod:`cc_runtime.loading.tp_rows` tracers (header shapes and dtypes, no
data), through SGLang's own chain (source prefixes, MTP filtering) into the model's real
``load_weights`` and its real ``weight_loader``\\ s, with every write suppressed. A tensor whose only
use was one dim-0 ``narrow`` copied into a parameter gets those rows; every other tensor is read
whole. During the real load the iterators hand each row-read tensor out at its full shape, the rows
at their offset and the rest poisoned (``ChunkedLoader(rows_in_place=True)``), so the same
``weight_loader`` narrows the same rows out of it. Anything that makes the trace unfaithful (an
exception, a file set the patch would not serve, a loader renaming checkpoint tensors) reads every
tensor whole, with one log line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger("cc_runtime.patches.sglang_loading")

#: Tests set the tensor-parallel world size here instead of building SGLang's process groups.
TP_SIZE_FOR_TESTS: int | None = None
#: The last load's split: {"rows": n, "whole": n, "row_bytes": read, "row_full_bytes": whole size, ...}.
LAST_SPLIT: dict[str, int] = {}

_logged: set[str] = set()


def _log_once(msg: str, *args: Any) -> None:
    key = msg % args
    if key not in _logged:
        _logged.add(key)
        log.info(msg, *args)


def tp_size() -> int:
    """SGLang's tensor-parallel world size; 1 where it cannot be read (nothing to save then)."""
    if TP_SIZE_FOR_TESTS is not None:
        return TP_SIZE_FOR_TESTS
    try:  # 0.5.2x: the process-wide runtime context
        from sglang.srt.runtime_context import get_parallel

        return int(get_parallel().tp_size)
    except Exception:  # noqa: BLE001 - older SGLang, or nothing published: try the process groups
        pass
    try:
        from sglang.srt.distributed import parallel_state

        return int(parallel_state.get_tensor_model_parallel_world_size())
    except Exception:  # noqa: BLE001 - not initialised: no tensor parallelism to exploit
        return 1


def trace_all_weights(local: Any, applicable: Callable[[], bool]) -> Callable[..., Any]:
    """The wrapt wrapper of ``DefaultModelLoader._get_all_weights(model_config, model)``."""

    def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        if type(instance).__name__ != "DefaultModelLoader" or tp_size() <= 1 or not applicable():
            return wrapped(*args, **kwargs)
        model = kwargs.get("model", args[1] if len(args) > 1 else None)
        if not wanted_for(model):
            return wrapped(*args, **kwargs)
        found = _discover(local, model, lambda: wrapped(*args, **kwargs))
        if found is None:
            return wrapped(*args, **kwargs)
        return _with_rows(local, wrapped(*args, **kwargs), found)

    return wrapper


#: Model classes whose tensor-parallel row-read load a test proves byte-identical to upstream's, on
#: every SGLang version the patch covers (tests/upstream/test_sglang_loading_upstream.py). The trace
#: checks a ``weight_loader`` once, before the real load; the real load is not checked again, so a
#: class not proven here reads whole tensors unless ``CC_RUNTIME_LOAD_TP_ROWS=on``.
VERIFIED_MODELS = frozenset({"LlamaForCausalLM"})


def wanted_for(model: Any) -> bool:
    """Whether ``CC_RUNTIME_LOAD_TP_ROWS`` lets this model's rank read rows (logged once when not)."""
    from .. import settings

    mode = settings.get("CC_RUNTIME_LOAD_TP_ROWS")
    kind = type(model).__name__
    if mode == "off":
        _log_once("cc_runtime: tensor-parallel rows: off (CC_RUNTIME_LOAD_TP_ROWS=off); every tensor is read whole")
        return False
    if mode == "auto" and kind not in VERIFIED_MODELS:
        _log_once("cc_runtime: tensor-parallel rows: %s is not among the model classes proven byte-identical "
                  "(%s); every tensor is read whole (CC_RUNTIME_LOAD_TP_ROWS=on reads rows for it)", kind,
                  ", ".join(sorted(VERIFIED_MODELS)))
        return False
    return True


def _discover(local: Any, model: Any, weights: Callable[[], Any]) -> dict[Any, Any] | None:
    from ..loading.tp_rows import RowTrace, Untraceable

    kind = type(model).__name__
    quant = getattr(model, "quant_config", None)
    try:
        qname = quant.get_name() if quant is not None else None
    except Exception:  # noqa: BLE001 - a quant config without a name: treat as renaming
        qname = "unknown"
    if qname == "mxfp8" or qname == "unknown":  # load_weights_only renames its tensors: not traced
        _log_once("cc_runtime: tensor-parallel rows: %s quantization renames checkpoint tensors; every "
                  "tensor is read whole", qname)
        return None
    if not callable(getattr(model, "load_weights", None)):
        return None
    trace = RowTrace()
    prev = getattr(local, "tracing", None)
    local.tracing = trace
    try:
        trace.run(lambda: model.load_weights(weights()))
    except Untraceable as exc:
        _log_once("cc_runtime: tensor-parallel rows: tracing %s.load_weights failed (%s); every tensor is "
                  "read whole", kind, exc)
        return None
    finally:
        local.tracing = prev
    rows = trace.rows()
    return {key: rows.get(key) for key in trace.roots}


def _with_rows(local: Any, weights: Iterator[Any], found: dict[Any, Any]) -> Iterator[Any]:
    """``weights`` with ``found`` visible to the patched iterators only while ``weights`` advances (it
    calls them lazily), so no other load on this thread ever sees rows traced for this one."""
    while True:
        prev = getattr(local, "rows", None)
        local.rows = found
        try:
            item = next(weights)
        except StopIteration:
            return
        finally:
            local.rows = prev
        yield item


def tracers(trace: Any, files: list[str]) -> Iterator[tuple[str, Any]]:
    """What a patched iterator yields while tracing: a data-less tracer per tensor, in file order."""
    from ..loading.header import read_header
    from ..loading.transport import torch_dtype

    for path in files:
        for t in read_header(path).tensors:
            dtype = torch_dtype(t.dtype)
            if dtype is None:
                from ..loading.tp_rows import Untraceable

                raise Untraceable(f"{path}: dtype {t.dtype} has no torch dtype")
            yield t.name, trace.tracer((path, t.name), t.shape, dtype)


def rows_for(local: Any, files: list[str]) -> dict[str, tuple[int, int]]:
    """The rows to read for a patched iterator's files: a name gets rows only where every file of the
    call holding that name traced to the same rows."""
    found = getattr(local, "rows", None)
    if not found:
        return {}
    wanted = set(files)
    per_name: dict[str, set[Any]] = {}
    for (path, name), rows in found.items():
        if path in wanted:
            per_name.setdefault(name, set()).add(rows)
    return {name: next(iter(r)) for name, r in per_name.items() if len(r) == 1 and None not in r}


def summary(loader: Any) -> str:
    """One line: how many tensors and bytes this rank reads as rows, and how many whole."""
    wanted = loader.plan.wanted
    part = [w for w in wanted if w.partial]
    split = {"rows": len(part), "whole": len(wanted) - len(part),
             "row_bytes": sum(w.nbytes for w in part), "row_full_bytes": sum(w.hand_out_nbytes for w in part),
             "whole_bytes": sum(w.nbytes for w in wanted if not w.partial)}
    LAST_SPLIT.clear()
    LAST_SPLIT.update(split)
    return (f"tensor parallel: {split['rows']} tensor(s) row-read ({split['row_bytes']} of "
            f"{split['row_full_bytes']} bytes), {split['whole']} whole ({split['whole_bytes']} bytes)")
