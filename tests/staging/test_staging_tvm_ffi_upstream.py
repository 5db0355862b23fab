"""A real tvm-ffi function reads a deferred placeholder: it must get the filled bytes (poison on).

tvm-ffi (apache-tvm-ffi, which SGLang 0.5.23's JIT kernels use) converts torch tensors to DLPack in C,
through torch's DLPack exchange API: no torch hook sees the read. The function here is compiled on
the spot with tvm-ffi's own ``cpp.load_inline`` (a CPU function that memcpy's its first argument into
its second, as a kernel reads its input), and called on the simulated device's memory (CPU tensors).
Runs where apache-tvm-ffi and a C++ compiler are installed (the upstream venvs).
"""

from __future__ import annotations

import shutil

import pytest

torch = pytest.importorskip("torch")
tvm_ffi = pytest.importorskip("tvm_ffi")

from cc_runtime.staging import H2DStager  # noqa: E402
from cc_runtime.staging.deferred import deferred_h2d  # noqa: E402

pytestmark = [pytest.mark.upstream, pytest.mark.timeout(300)]

SOURCE = r"""
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/function.h>
#include <cstring>
void copy_bytes(tvm::ffi::TensorView x, tvm::ffi::TensorView y) {
  size_t n = 1;
  for (int i = 0; i < x.ndim(); ++i) n *= x.shape()[i];
  std::memcpy(y.data_ptr(), x.data_ptr(), n * ((x.dtype().bits * x.dtype().lanes + 7) / 8));
}
"""


@pytest.fixture(scope="module")
def ffi_module(tmp_path_factory):
    if shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("no C++ compiler to build the tvm-ffi function")
    import tvm_ffi.cpp

    build = tmp_path_factory.mktemp("tvm_ffi_copy")
    # Only loaded here: its function is fetched (and so wrapped) inside each test.
    return tvm_ffi.cpp.load_inline(name="cc_runtime_copy_bytes", cpp_sources=SOURCE, functions=["copy_bytes"],
                                   build_directory=str(build))


@pytest.fixture(autouse=True)
def _poison(monkeypatch):
    monkeypatch.setenv("CC_RUNTIME_STAGING_VERIFY", "1")


def _is_target(dev) -> bool:
    return str(dev) == "cpu"


@pytest.mark.parametrize("how", ["attribute", "get_function", "item"])
def test_a_tvm_ffi_function_reads_the_filled_bytes_of_a_placeholder(sim_cc, ffi_module, how):
    st = H2DStager(sim_cc)
    out = torch.zeros(4, dtype=torch.int64)
    with deferred_h2d(st, _is_target) as c:
        p = torch.tensor([5, 6, 7, 8]).to("cpu")
        fn = {"attribute": lambda: ffi_module.copy_bytes, "get_function": lambda: ffi_module.get_function("copy_bytes"),
              "item": lambda: ffi_module["copy_bytes"]}[how]()
        fn(p, out)  # reads p in C, at once
        assert out.tolist() == [5, 6, 7, 8]
        assert c.flushes == 1


def test_tvm_ffi_from_dlpack_of_a_placeholder_sees_the_filled_bytes(sim_cc):
    st = H2DStager(sim_cc)
    with deferred_h2d(st, _is_target):
        p = torch.tensor([1.5, 2.5]).to("cpu")
        ffi_tensor = tvm_ffi.from_dlpack(p)
        with torch._C.DisableTorchFunction():
            seen = torch.from_dlpack(ffi_tensor).clone().tolist()
    assert seen == [1.5, 2.5]


def test_a_tvm_ffi_function_fetched_before_the_wrappers_were_installed_still_gets_filled_bytes(sim_cc, ffi_module):
    from cc_runtime.staging import readers

    readers.uninstall()
    raw = ffi_module.get_function("copy_bytes")  # a plain tvm-ffi Function, no flushing wrapper
    assert getattr(raw, "__cc_flushing__", None) is None
    st = H2DStager(sim_cc)
    out = torch.zeros(3, dtype=torch.int32)
    with deferred_h2d(st, _is_target):
        p = torch.tensor([4, 5, 6], dtype=torch.int32).to("cpu")
        raw(p, out)  # tvm-ffi asks the placeholder's class for __tvm_ffi_object__
        assert out.tolist() == [4, 5, 6]
