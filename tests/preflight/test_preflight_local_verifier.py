"""The integration with the real nv-local-gpu-verifier package (NVIDIA nvtrust's local GPU verifier,
PyPI 2.7.3). Runs where it is installed: the nox session ``preflight-verifier`` installs it with its own
pins (it pins nvidia-ml-py 12.550.52, so it gets a venv of its own). No GPU here: the real verifier
cannot collect evidence, so what is checked is the API cc_runtime calls, the claims it reads back
(built by the package's own ClaimsUtils), and that no GPU never reads as a pass."""

from __future__ import annotations

import inspect
import re

import pytest

from cc_runtime.preflight import attestation

cc_admin = pytest.importorskip("verifier.cc_admin")


def test_the_functions_cc_runtime_calls_exist_with_these_parameters() -> None:
    assert list(inspect.signature(cc_admin.collect_gpu_evidence_local).parameters)[0] == "nonce"
    assert list(inspect.signature(cc_admin.attest).parameters) == ["arguments_as_dictionary", "nonce",
                                                                  "gpu_evidence_list"]


def test_the_options_cover_every_key_attest_reads() -> None:
    source = inspect.getsource(cc_admin.attest)
    read = set(re.findall(r"arguments_as_dictionary\[['\"](\w+)['\"]\]", source))
    read |= set(re.findall(r"arguments_as_dictionary\.get\(['\"](\w+)['\"]", source))
    assert read and read <= set(attestation.local_verifier_options("00" * 32)), read
    assert attestation.local_verifier_options("00" * 32)["user_mode"] is True  # never sets the ready state


def test_the_nonce_is_read_back_from_the_packages_own_jwt_claims() -> None:
    from verifier.utils.claims_utils import ClaimsUtils

    nonce = "5a" * 32
    claims = ClaimsUtils.create_detached_eat_claims(True, [{"measres": "success"}], nonce, ["GH100"], ["5703"],
                                                    ["0"], [""], [""])
    assert attestation._judge(nonce, True, claims, "v", "")["result"] == "pass"
    assert attestation._judge("a5" * 32, True, claims, "v", "")["result"] == "fail"
    assert attestation._judge(nonce, False, claims, "v", "overall false")["result"] == "fail"


@pytest.mark.timeout(60)
def test_without_a_gpu_the_real_verifier_never_passes() -> None:
    got = attestation._local_gpu_verifier(cc_admin, "11" * 32, timeout_s=5.0)
    assert got["result"] in ("fail", "unknown") and got["tool"] == "nv-local-gpu-verifier", got
