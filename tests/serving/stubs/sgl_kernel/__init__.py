"""TEST-ONLY CPU stand-in for ``sgl_kernel``, for serving SGLang 0.5.23 on CPU in the ``serve-0.5.23``
nox session. Never install it, never use it outside that session.

Why it exists: with ``SGLANG_USE_CPU_ENGINE=1`` SGLang imports functions of the CPU build of
``sgl_kernel`` at module level, and that build is not on PyPI (every published ``sglang-kernel`` wheel
needs libcuda). On the path the session serves (tiny Llama, dummy weights, torch_native attention)
SGLang calls exactly one of them, ``assign_req_to_token_pool_cpu``: it is ported below in plain torch
from SGLang's own Triton kernel ``sglang.srt.mem_cache.allocation.assign_req_to_token_pool``. Every
other name here is only imported; calling it raises. Names not listed raise ``AttributeError`` at
import, so a new upstream import shows up as an error instead of a silent placeholder.
"""

from __future__ import annotations

from typing import Any, NoReturn

import torch

__version__ = "0.0.0+cc-runtime-cpu-test-stand-in"
CC_RUNTIME_TEST_STUB = True

#: Imported at module level by SGLang 0.5.23's CPU engine but never called on the served path.
IMPORTED_ONLY: tuple[str, ...] = ("assign_draft_cache_locs_contiguous_cpu", "assign_extend_cache_locs_cpu", "build_tree_kernel_efficient_cpu", "copy_all_layer_kv_cache_cpu", "fill_accept_out_cache_loc_cpu", "fill_bonus_tokens_cpu", "verify_tree_greedy_cpu", )


def assign_req_to_token_pool_cpu(req_pool_indices: torch.Tensor, req_to_token: torch.Tensor,
                                 start_offset: torch.Tensor, end_offset: torch.Tensor,
                                 out_cache_loc: torch.Tensor, pool_len: int) -> None:
    """``req_to_token[req_pool_indices[i], start[i]:end[i]] = out_cache_loc[o_i:o_i + end[i] - start[i]]``
    where ``o_i`` is the sum of the lengths of the requests before ``i`` (as the Triton kernel does)."""
    del pool_len  # the row length; torch indexing knows it
    starts = start_offset.tolist()
    ends = end_offset.tolist()
    rows = req_pool_indices.tolist()
    offset = 0
    for row, start, end in zip(rows, starts, ends, strict=True):
        n = end - start
        if n > 0:
            req_to_token[row, start:end] = out_cache_loc[offset:offset + n].to(req_to_token.dtype)
        offset += max(n, 0)


def _imported_only(name: str) -> Any:
    def unavailable(*args: Any, **kwargs: Any) -> NoReturn:
        raise NotImplementedError(f"sgl_kernel.{name} is not in cc_runtime's CPU test stand-in: the serving "
                                  "path it supports never calls it")

    unavailable.__name__ = unavailable.__qualname__ = name
    return unavailable


for _name in IMPORTED_ONLY:
    globals()[_name] = _imported_only(_name)
