"""GPU attestation with a fresh nonce: collect the report through NVML, verify it with NVIDIA's verifier.

The report comes from ``nvmlDeviceGetConfComputeGpuAttestationReport`` with a random 32-byte nonce. The
report begins with the SPDM GET_MEASUREMENTS request it answers (4 header bytes, then the 32-byte nonce;
nvtrust's ``verifier/attestation/spdm_msrt_req_msg.py``), so the nonce must come back at bytes 4-36:
otherwise the report is a replay. Verification uses whichever verifier is installed:

* ``nvattest`` on PATH (NVIDIA Attestation SDK, NVAT, the supported tool; not on PyPI):
  ``nvattest --format json attest --device gpu --verifier local|remote --nonce HEX``; exit code 0 and
  ``result_code`` 0 pass, and the claims must carry the same nonce (``eat_nonce``);
* the ``nv-local-gpu-verifier`` Python package (``verifier.cc_admin``, deprecated since nvtrust 2.7.0):
  ``collect_gpu_evidence_local(nonce)`` then ``attest(...)``, local only.

``--attest remote`` is the only mode that asks a network service (NVIDIA's NRAS) for the verdict; a
local verifier still fetches NVIDIA's reference manifests (RIMs) and certificate status (OCSP) unless it
was configured with local copies, which is the verifier's doing, not cc_runtime's. Evidence keeps
sizes, digests and results, never the report bytes, certificates or the device identifiers in claims.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import subprocess
import threading
from collections.abc import Callable
from typing import Any

from . import Check

NONCE_BYTES = 32
NONCE_OFFSET = 4  # the SPDM request header (version, code, param1, param2) precedes the nonce


def check(state: Any, attest: str, timeout_s: float, pynvml: Any = None,
          which: Callable[[str], str | None] | None = None) -> Check:
    if attest == "off":
        return Check("attestation", "not applicable", "not requested (--attest local|remote runs it)")
    if not state.enabled:
        return Check("attestation", "not applicable", "CC is off: there is no GPU attestation report")
    if state.source == "emulated":
        return Check("attestation", "not applicable", f"emulated CC ({state.profile}): no GPU to attest")
    nonce = secrets.token_bytes(NONCE_BYTES)
    reports = collect(nonce, pynvml)
    evidence: dict[str, Any] = {"mode": attest, "reports": reports}
    if isinstance(reports, str):
        return Check("attestation", "unknown", f"no attestation report: {reports}", evidence)
    replayed = [r["gpu"] for r in reports if not r["nonce_echoed"]]
    if replayed:
        return Check("attestation", "fail", f"GPU(s) {replayed} returned a report without this run's nonce "
                     "(a replayed or forged report)", evidence)
    verdict = verify(nonce.hex(), attest, timeout_s, which or shutil.which)
    evidence["verifier"] = verdict
    return Check("attestation", verdict["result"], verdict["reason"], evidence)


def collect(nonce: bytes, pynvml: Any = None) -> list[dict[str, Any]] | str:
    """Every GPU's report for ``nonce``: its size, a digest, and whether the nonce came back."""
    if pynvml is None:
        from ..detect import _import_pynvml

        pynvml = _import_pynvml()
        if pynvml is None:
            return "nvidia-ml-py is not installed"
    fn = getattr(pynvml, "nvmlDeviceGetConfComputeGpuAttestationReport", None)
    if fn is None:
        return "nvidia-ml-py has no nvmlDeviceGetConfComputeGpuAttestationReport (too old)"
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001
        return f"NVML unavailable: {exc}"
    try:
        out = []
        for i in range(int(pynvml.nvmlDeviceGetCount())):
            rep = fn(pynvml.nvmlDeviceGetHandleByIndex(i), list(nonce))
            size = int(rep.attestationReportSize)
            body = bytes(rep.attestationReport[:size])
            out.append({"gpu": i, "bytes": size, "sha256": hashlib.sha256(body).hexdigest()[:16],
                        "nonce_echoed": body[NONCE_OFFSET:NONCE_OFFSET + NONCE_BYTES] == nonce})
        return out
    except Exception as exc:  # noqa: BLE001
        return f"NVML attestation report failed: {type(exc).__name__}: {exc}"
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001,S110
            pass


def _jwt_payload(text: str) -> Any:
    """The payload of a JWT (``header.payload.signature``), unverified, or None: the verifier signs its
    claims with its own key; cc_runtime only reads the nonce back out of them."""
    import base64

    parts = text.split(".")
    if len(parts) != 3:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None


def _nonces_in(obj: Any) -> set[str]:
    """Every ``eat_nonce`` value anywhere in a claims structure, JWT-encoded parts included (lower-case)."""
    found: set[str] = set()
    if isinstance(obj, str):
        payload = _jwt_payload(obj)
        return _nonces_in(payload) if payload is not None else found
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "eat_nonce" and isinstance(v, str):
                found.add(v.lower())
            else:
                found |= _nonces_in(v)
    elif isinstance(obj, list):
        for v in obj:
            found |= _nonces_in(v)
    return found


def _judge(nonce_hex: str, ok: bool, claims: Any, tool: str, message: str) -> dict[str, Any]:
    nonces = _nonces_in(claims)
    if not ok:
        return {"tool": tool, "result": "fail", "reason": f"{tool} rejected the GPU: {message}"}
    if nonces != {nonce_hex.lower()}:
        return {"tool": tool, "result": "fail", "reason": f"{tool} passed but its claims carry "
                f"{'no nonce' if not nonces else 'another nonce'}: not this run's attestation"}
    return {"tool": tool, "result": "pass", "reason": f"{tool} verified the GPU(s) with this run's nonce"}


def verify(nonce_hex: str, attest: str, timeout_s: float, which: Callable[[str], str | None]) -> dict[str, Any]:
    tool = which("nvattest")
    if tool:
        return _nvattest(tool, nonce_hex, attest, timeout_s)
    if attest == "local":
        try:
            from verifier import cc_admin  # type: ignore[import-not-found]  # nv-local-gpu-verifier
        except Exception:  # noqa: BLE001
            cc_admin = None
        if cc_admin is not None:
            return _local_gpu_verifier(cc_admin, nonce_hex, timeout_s)
    need = "nvattest (NVIDIA Attestation SDK) on PATH" + (" or the nv-local-gpu-verifier package" if
                                                          attest == "local" else "")
    return {"tool": None, "result": "unknown", "reason": f"no verifier installed: needs {need}"}


def _nvattest(tool: str, nonce_hex: str, attest: str, timeout_s: float) -> dict[str, Any]:
    argv = [tool, "--format", "json", "attest", "--device", "gpu", "--verifier", attest, "--nonce", nonce_hex]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return {"tool": "nvattest", "result": "unknown", "reason": f"nvattest did not answer within {timeout_s:g} s"}
    except OSError as exc:
        return {"tool": "nvattest", "result": "unknown", "reason": f"nvattest could not run: {exc}"}
    try:
        out = json.loads(proc.stdout)
    except ValueError:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        return {"tool": "nvattest", "result": "fail" if proc.returncode else "unknown",
                "reason": f"nvattest exit {proc.returncode}, no JSON output: {tail[0][:200]}"}
    ok = proc.returncode == 0 and out.get("result_code") == 0
    message = f"exit {proc.returncode}, {out.get('result_message', out.get('result_code'))}"
    return _judge(nonce_hex, ok, out.get("claims"), "nvattest", message)


def local_verifier_options(nonce_hex: str) -> dict[str, Any]:
    """The options ``cc_admin.attest`` reads (its command line as a dict). ``user_mode``: verify only, never
    set the GPU ready state (that stays the deployment's own attestation step)."""
    return {"verbose": False, "test_no_gpu": False, "driver_rim": None, "vbios_rim": None, "user_mode": True,
            "allow_hold_cert": False, "service_key": None, "nonce": nonce_hex, "rim_root_cert": None,
            "rim_service_url": None, "ocsp_url": None, "ocsp_nonce_disabled": False, "claims_version": "2.0"}


def _local_gpu_verifier(cc_admin: Any, nonce_hex: str, timeout_s: float) -> dict[str, Any]:
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            evidence = cc_admin.collect_gpu_evidence_local(nonce_hex)
            box["result"] = cc_admin.attest(local_verifier_options(nonce_hex), nonce_hex, evidence)
        except BaseException as exc:  # noqa: BLE001 - the verifier calls sys.exit on some errors
            box["error"] = f"{type(exc).__name__}: {exc}"

    worker = threading.Thread(target=run, name="cc_runtime-attest", daemon=True)
    worker.start()
    worker.join(timeout_s)
    tool = "nv-local-gpu-verifier"
    if worker.is_alive():
        return {"tool": tool, "result": "unknown", "reason": f"{tool} did not answer within {timeout_s:g} s"}
    if "error" in box:
        return {"tool": tool, "result": "fail", "reason": f"{tool} failed: {box['error']}"}
    ok, claims = box["result"]
    return _judge(nonce_hex, bool(ok), claims, tool, "overall attestation result false")
