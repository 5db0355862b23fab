from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, env_extra: dict | None = None, pythonpath: list[str] | None = None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CC_RUNTIME_")}
    env.update(env_extra or {})
    env["PYTHONPATH"] = os.pathsep.join([*(pythonpath or []), str(REPO)])
    return subprocess.run([sys.executable, "-m", "cc_runtime", *args], env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.timeout(150)
def test_doctor_json_has_the_documented_shape():
    r = cli("doctor", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert {"cc", "versions", "patches"} <= rep.keys()
    assert {"enabled", "source", "reason"} <= rep["cc"].keys()
    assert rep["cc"]["enabled"] is False  # no GPU here
    for key in ("python", "torch", "triton", "flashinfer-python", "sglang", "cuda-python", "nvidia-ml-py"):
        assert key in rep["versions"]
    names = [p["name"] for p in rep["patches"]]
    assert "sglang.cc_env" in names
    for p in rep["patches"]:
        assert {"name", "target", "status", "reason", "upstream"} <= p.keys()


def test_status_api_matches_doctor_keys():
    import cc_runtime

    rep = cc_runtime.status()
    assert {"cc", "versions", "patches"} <= rep.keys()


@pytest.mark.timeout(150)
def test_forced_cc_shows_in_doctor_and_patches():
    r = cli("patches", "--json", env_extra={"CC_RUNTIME_CC": "1"})
    assert r.returncode == 0, r.stderr
    statuses = {p["name"]: p["status"] for p in json.loads(r.stdout)}
    # Forced on, the patch is considered: applied where SGLang is installed, else not applicable.
    assert statuses["sglang.cc_env"] in ("not applicable", "applied")
    off = cli("patches", "--json")
    assert {p["name"]: p["status"] for p in json.loads(off.stdout)}["sglang.cc_env"] == "disabled"


@pytest.mark.timeout(150)
def test_invalid_setting_exits_2_naming_the_variable():
    r = cli("doctor", env_extra={"CC_RUNTIME_STRICT": "yes"})
    assert r.returncode == 2
    assert "CC_RUNTIME_STRICT='yes' is not valid; allowed: 0|1" in r.stderr


@pytest.mark.timeout(150)
def test_doctor_prints_even_with_torch_and_nvml_broken(tmp_path):
    for name in ("torch", "pynvml"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise RuntimeError('{name} is broken')\n")
    r = cli("doctor", pythonpath=[str(tmp_path)])
    assert r.returncode == 0, r.stderr
    assert "torch broken: RuntimeError: torch is broken" in r.stdout
    assert "pynvml is broken" in r.stdout or "not installed" in r.stdout


@pytest.mark.timeout(150)
def test_launch_runs_the_command_with_cc_runtime_in_the_child():
    code = "import sys; print('ACTIVE', 'cc_runtime' in sys.modules)"
    r = cli("launch", "--", sys.executable, "-c", code, env_extra={"CC_RUNTIME_CC": "1"})
    assert r.returncode == 0, r.stderr
    assert "ACTIVE True" in r.stdout


def test_launch_without_a_command_is_a_usage_error():
    r = cli("launch")
    assert r.returncode == 2 and "give a command" in r.stderr


def test_launch_propagates_the_exit_code():
    r = cli("launch", "--", sys.executable, "-c", "raise SystemExit(7)")
    assert r.returncode == 7


def test_version_and_bench_help_exit_0():
    from cc_runtime import __version__

    r = cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"cc-runtime {__version__}"
    r = cli("bench", "--help")
    assert r.returncode == 0, r.stderr
    assert "globaltimer" in r.stdout and "startup" in r.stdout


@pytest.mark.timeout(150)
def test_bench_device_cuda_without_cuda_is_one_line_exit_2():
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    r = cli("bench", "timer", "--device", "cuda")
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "--device cpu" in r.stderr


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("var", "raw"), [
    ("CC_RUNTIME_EMULATE", "h300"), ("CC_RUNTIME_EMULATE", "/nonexistent.json"),
    ("CC_RUNTIME_PATCHES", "sglang.readback_coalese"), ("CC_RUNTIME_PATCHES", "true"),
    ("CC_RUNTIME_SHUTDOWN_TIMEOUT_S", "inf"), ("CC_RUNTIME_SHUTDOWN_TIMEOUT_S", "1e309"),
    ("CC_RUNTIME_PREFILL_GRAPH_MAX_TOKENS", "0"), ("CC_RUNTIME_PREFILL_GRAPH_MAX_TOKENS", "\u0661"),
])
def test_doctor_exits_2_on_each_invalid_value_printed_once(var, raw):
    r = cli("doctor", env_extra={var: raw})
    assert r.returncode == 2, r.stdout[-500:]
    assert r.stderr.count(f"{var}=") == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    # The doctor still diagnoses: its report names the invalid setting.
    assert "INVALID SETTING" in r.stdout and var in r.stdout, r.stdout[-500:]


@pytest.mark.timeout(150)
def test_doctor_json_on_an_invalid_setting_is_still_json_naming_it():
    r = cli("doctor", "--json", env_extra={"CC_RUNTIME_PATCHES": "sglang.readback_coalese"})
    assert r.returncode == 2
    rep = json.loads(r.stdout)
    assert "CC_RUNTIME_PATCHES" in rep["activation"]["settings_error"]
    assert "invalid setting" in rep["cc"]["reason"]  # cc_runtime stayed inactive, and says why
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.timeout(150)
def test_doctor_reports_bootstrap_settings_sources_and_wraps_reasons(tmp_path):
    r = cli("doctor", "--json", env_extra={"CC_RUNTIME_TIMER": "cuda_event"})
    rep = json.loads(r.stdout)
    assert set(rep["bootstrap"]) >= {"installed", "path"} and isinstance(rep["bootstrap"]["installed"], bool)
    assert rep["settings"]["CC_RUNTIME_TIMER"] == {"value": "cuda_event", "source": "env", "default": "auto"}
    assert rep["settings"]["CC_RUNTIME_CC"]["source"] == "default"
    text = cli("doctor").stdout
    assert "CC_RUNTIME_PATCHES" in text and "*  [default]" in text and "off  [default]" in text
    assert "driver:" in text and "None" not in text.split("versions:")[0]
    # every reason appears whole (wrapped, never cut)
    for p in rep["patches"]:
        assert " ".join(p["reason"].split())[:40] in " ".join(text.split())


@pytest.mark.timeout(150)
def test_install_bootstrap_writes_and_removes_the_files(tmp_path):
    r = cli("install-bootstrap", "--target", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "cc_runtime_bootstrap.pth").read_text() == (REPO / "cc_runtime_bootstrap.pth").read_text()
    r = cli("install-bootstrap", "--target", str(tmp_path), "--remove")
    assert r.returncode == 0 and not (tmp_path / "cc_runtime_bootstrap.pth").exists()


@pytest.mark.timeout(300)
def test_bench_startup_writes_the_documented_summary(tmp_path):
    out = tmp_path / "startup.json"
    r = cli("bench", "startup", "--runs", "3", "--json", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    data = json.loads(out.read_text())
    for key in ("bootstrap_added_ms", "import_ms_cc_off", "import_ms_cc_on"):
        assert set(data["summary"][key]) == {"median", "min", "max", "n"} and data["summary"][key]["n"] == 3
    assert data["model"] == {} and "bootstrap_via" in data["environment"]
    # Measured with cc_runtime's .pyc in place (as after pip install), even where PYTHONDONTWRITEBYTECODE
    # is set: without them every child compiles cc_runtime from source and that is what gets measured.
    assert data["environment"]["bytecode_cache"].startswith("precompiled")
    import cc_runtime

    pkg = Path(cc_runtime.__file__).parent
    assert list((pkg / "__pycache__").glob("settings.*.pyc")), "the benchmark left no .pyc behind"


def test_doctor_renders_gpu_facts_readably():
    """Rendering only (no GPU here): the facts a GPU machine reports, as a person reads them."""
    from cc_runtime import doctor

    rep = doctor.collect()
    rep["gpu"] = {"nvml": "ok", "driver": "570.86.15", "driver_cuda": "12.8", "devices": ["NVIDIA H100 80GB HBM3"],
                  "torch_cuda": {"available": True, "cuda_version": "12.8", "device": "NVIDIA H100 80GB HBM3"}}
    text = doctor.render(rep)
    assert "driver:     570.86.15 (supports CUDA 12.8)" in text
    assert "torch.cuda: available, CUDA 12.8, device 0: NVIDIA H100 80GB HBM3" in text
    assert "{" not in text.split("versions:")[0]
