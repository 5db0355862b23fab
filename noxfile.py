"""Test-environment matrix for cc_runtime (CPU-only machines, no GPU, no libcuda).

Sessions:
  lint             ruff check
  typecheck        mypy cc_runtime
  tests            unit tests on torch 2.13.0 (CPU wheel) + triton 3.6.0
  upstream-0.5.23  tests marked ``upstream`` against SGLang 0.5.23 / FlashInfer 0.7.2.post1
  upstream-0.5.12  tests marked ``upstream`` against SGLang 0.5.12 / FlashInfer 0.6.11.post1
  preflight-verifier  the preflight's attestation against the real nv-local-gpu-verifier 2.7.3
  serve-0.5.23     the REAL SGLang 0.5.23 server on CPU under every cc_runtime arm (tests/serving), then
                   ``cc-runtime sweep`` against it; reuses the upstream-0.5.23 venv (adds SERVE_0_5_23)

Venvs live in ``.nox/<session-slug>`` (e.g. ``.nox/upstream-0-5-23``) and are reused.
Each session writes a stamp file into its venv recording the exact install recipe; when the
recipe is unchanged the (slow) installs are skipped, so a second run only runs the tests.

Running a test file directly in a built venv (no nox):
  .nox/tests/bin/python -m pytest tests/foundation/test_detect.py
  CC_RUNTIME_TEST_SGLANG=0.5.23 .nox/upstream-0-5-23/bin/python -m pytest tests/upstream -m upstream
  CC_RUNTIME_TEST_SGLANG=0.5.12 \
  PYTHONPATH=.nox/upstream-0-5-12/sglang-0.5.12-site:tests/upstream/stubs \
      .nox/upstream-0-5-12/bin/python -m pytest tests/upstream -m upstream
(``tests/upstream/stubs`` holds a CPU-only import stand-in for ``sgl_kernel``; only the 0.5.12
session puts it on the path.)

To rebuild a venv from scratch: ``rm -rf .nox/<slug>`` (the stamp also invalidates itself when
a pin below or pyproject.toml changes).

torch is pinned exactly and taken from local disk (pip find-links /opt/wheels and the local
index /opt/pypi-more); the machine-wide pip constraint ``torch<=2.14.1`` stays in force.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import nox

nox.options.reuse_existing_virtualenvs = True
nox.options.envdir = ".nox"
nox.options.sessions = ["lint", "typecheck", "tests", "upstream-0.5.23", "upstream-0.5.12", "serve-0.5.23",
                        "upstream-prs", "preflight-verifier"]
nox.options.error_on_missing_interpreters = True

ROOT = Path(__file__).resolve().parent
PYTHON = "3.11"
STUBS_0_5_12 = ROOT / "tests" / "upstream" / "stubs"
STUBS_SERVE = ROOT / "tests" / "serving" / "stubs"  # test-only CPU stand-in for sgl_kernel (serving)
CHECK_IMPORTS = "scripts/check_upstream_imports.py"

# ---------------------------------------------------------------------------
# Pins
# ---------------------------------------------------------------------------
RUFF = ["ruff==0.17.6"]
MYPY = ["mypy==2.4.1"]

# Test tooling + the runtime deps cc_runtime itself uses (shared by every test venv).
TEST_TOOLS = [
    "pytest==9.2.0",
    "pytest-timeout==2.4.0",
    "hypothesis==6.170.17",
]
RUNTIME_DEPS = [
    "wrapt==2.5.2",  # project range: >=1.14,!=2.2.0,<3
    "nvidia-ml-py==13.615.71",
    "packaging==26.4",
    "matplotlib==3.11.2",
    "tqdm==4.70.1",
]

# `tests`: CPU torch from /opt/wheels, real triton (importable without a GPU).
TESTS_TORCH = ["torch==2.13.0", "triton==3.6.0"]
# cuda-python: installs on CPU; `cuda.bindings.runtime` imports, `cuda.bindings.driver` raises
# DynamicLibNotFoundError at import without libcuda (the NVIDIA driver).
TESTS_EXTRA = ["numpy==2.4.6", "cuda-python==13.4.4"]

# Upstream venvs: CUDA build of torch 2.14.1 (local disk, imports and runs on the CPU).
UPSTREAM_TORCH = [
    "torch==2.14.1",
    "torchvision==0.29.1",
    "triton==3.8.0",
]  # triton: what torch 2.14.1 requires

# What sglang.srt.{managers.scheduler, model_executor.*, server_args} and flashinfer need at
# *import* time on a CPU-only box (sglang/flashinfer themselves are installed --no-deps).
UPSTREAM_IMPORT_DEPS = [
    "numpy==2.4.6",
    "orjson==3.13.0",
    "psutil==7.2.2",
    "pybase64==1.5.1",
    "requests==2.34.2",
    "pillow==13.0.0",
    "starlette==1.10.0",
    "msgspec==0.22.0",
    "pydantic==2.14.4",
    "pyzmq==27.3.0",
    "IPython==9.18.1",
    "aiohttp==3.14.5",
    "dill==0.4.1",
    "einops==0.8.2",
    "setproctitle==1.3.8",
    "gguf==0.19.0",
    "partial_json_parser==0.2.1.1.post7",
    "uvicorn==0.54.0",
    "fastapi==0.165.0",
    "sentencepiece==0.2.1",
    "compressed-tensors==0.18.0",
    "openai==2.8.0",
    "cuda-python==13.4.4",
    # SGLang's benchmark client (sglang.benchmark.datasets imports mmmu, which imports `datasets` at
    # import time); `cc-runtime sweep` runs that client, and tests/sweep runs it against the test server.
    "datasets==5.2.0",
]

SGLANG_0_5_23 = ["sglang==0.5.23", "flashinfer-python==0.7.2.post1"]
SGLANG_0_5_23_DEPS = ["transformers==5.19.0", "tokenizers==0.23.2", "apache-tvm-ffi==0.1.11"]

# What `python -m sglang.launch_server --device cpu` imports beyond the upstream venv (pip's resolution
# against it, pinned whole; none of these changes torch, transformers, tokenizers or numpy). soundfile:
# SGLang 0.5.23 pins 0.13.1. No GPU-only package: sgl_kernel's CPU build is not on PyPI (stand-in).
SERVE_0_5_23 = [
    "jsonschema==4.26.0", "jsonschema-specifications==2025.9.1", "referencing==0.37.0", "rpds-py==2026.9.1",
    "xgrammar==0.2.7", "llguidance==1.9.1",
    "outlines==0.1.11", "outlines_core==0.1.26", "interegular==0.3.3", "airportsdata==20260905",
    "cloudpickle==3.1.3", "diskcache==5.6.3", "lark==1.3.1", "nest-asyncio==1.6.0", "pycountry==26.2.16",
    "anthropic==2.17.0", "docstring_parser==0.18.0", "httpx2==2.17.0", "httpcore2==2.17.0", "truststore==0.10.5",
    "python-multipart==0.0.34", "watchfiles==1.3.0", "prometheus_client==0.26.0", "soundfile==0.13.1",
    "cffi==2.1.1", "pycparser==3.12", "uvloop==0.23.0",
]

SGLANG_0_5_12_TARGET = [
    "sglang==0.5.12",
    "flashinfer-python==0.6.11.post1",
    "transformers==5.6.0",
    "tokenizers==0.22.2",
    "huggingface-hub==1.33.0",  # brief: >=1.5,<2
]
# Base-venv deps for 0.5.12 (the target dir above shadows transformers/tokenizers).
SGLANG_0_5_12_DEPS = ["transformers==5.6.0", "tokenizers==0.22.2", "apache-tvm-ffi==0.1.9"]


# nvtrust's local GPU verifier pins its own stack (nvidia-ml-py 12.550.52, cryptography 43.0.1, ...): it
# gets a small venv of its own, without torch, for the preflight's verifier integration tests.
PREFLIGHT_VERIFIER = ["nv-local-gpu-verifier==2.7.3", "wrapt==2.5.2", "packaging==26.4", "pytest==9.2.0",
                      "pytest-timeout==2.4.0"]


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
def _venv(session: nox.Session) -> Path:
    return Path(session.virtualenv.location)


def _project_file() -> Path | None:
    for name in ("pyproject.toml", "setup.py"):
        if (ROOT / name).exists():
            return ROOT / name
    return None


def _install_steps(session: nox.Session, steps: list[list[str]], *, project: str = "deps") -> None:
    """Run ``pip install`` steps unless the venv's stamp says this exact recipe is in place.

    ``project``: "deps" -> ``pip install -e .``; "nodeps" -> ``pip install --no-deps -e .``;
    "none" -> don't install cc_runtime. The stamp covers the pip steps and pyproject.toml, so a
    second run with nothing changed does no pip work at all (and never touches torch).
    Without a pyproject.toml the repo root goes on PYTHONPATH instead.
    """
    proj = _project_file() if project != "none" else None
    if proj is not None:
        steps = [*steps, ["-e", str(ROOT)] if project == "deps" else ["--no-deps", "-e", str(ROOT)]]
    stamp = _venv(session) / ".cc_runtime_install_stamp"
    recipe = {"steps": steps, "project": proj.read_text() if proj is not None else None}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
    if project != "none" and proj is None:
        session.log("no pyproject.toml yet: using PYTHONPATH=<repo root>")
        _prepend_pythonpath(session, str(ROOT))
    if stamp.exists() and stamp.read_text().strip() == digest:
        session.log(f"install recipe unchanged ({stamp.name}); skipping pip installs")
        return
    stamp.unlink(missing_ok=True)
    for args in steps:
        session.install(*args)
    stamp.write_text(digest + "\n")


def _prepend_pythonpath(session: nox.Session, *paths: str) -> None:
    old = session.env.get("PYTHONPATH") or os.environ.get("PYTHONPATH", "")
    parts = [*paths, *([old] if old else [])]
    session.env["PYTHONPATH"] = os.pathsep.join(parts)


def _upstream_env(session: nox.Session, version: str) -> None:
    session.env["CC_RUNTIME_TEST_SGLANG"] = version
    # Never try to reach a GPU / the network from tests.
    session.env.setdefault("CUDA_VISIBLE_DEVICES", "")
    session.env["HF_HUB_OFFLINE"] = "1"
    session.env["TRANSFORMERS_OFFLINE"] = "1"
    session.env["SGLANG_DISABLE_REQUEST_LOGGING"] = "1"


# ---------------------------------------------------------------------------
# Sessions
# ---------------------------------------------------------------------------
@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    _install_steps(session, [RUFF], project="none")
    targets = [
        p for p in ("cc_runtime", "tests", "benchmarks", "scripts", "noxfile.py") if (ROOT / p).exists()
    ]
    session.run("ruff", "check", *targets, *session.posargs)


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    _install_steps(session, [MYPY], project="nodeps")
    session.run("mypy", "cc_runtime", *session.posargs)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    _install_steps(session, [TESTS_TORCH, TESTS_EXTRA + RUNTIME_DEPS + TEST_TOOLS])
    session.run("python", "-m", "pytest", "tests", "-m", "not gpu and not upstream", *session.posargs)


def _upstream_base_steps(version_deps: list[str]) -> list[list[str]]:
    return [
        UPSTREAM_TORCH,
        UPSTREAM_IMPORT_DEPS + version_deps + RUNTIME_DEPS + TEST_TOOLS,
    ]


@nox.session(name="upstream-0.5.23", python=PYTHON)
def upstream_0_5_23(session: nox.Session) -> None:
    steps = _upstream_base_steps(SGLANG_0_5_23_DEPS)
    steps.append(["--no-deps", *SGLANG_0_5_23])
    _install_steps(session, steps)
    _upstream_env(session, "0.5.23")
    session.run("python", CHECK_IMPORTS, "0.5.23")
    session.run("python", "-m", "pytest", "tests", "-m", "upstream", *session.posargs, success_codes=[0, 5])


@nox.session(name="upstream-0.5.12", python=PYTHON)
def upstream_0_5_12(session: nox.Session) -> None:
    target = _venv(session) / "sglang-0.5.12-site"
    steps = _upstream_base_steps(SGLANG_0_5_12_DEPS)
    steps.append(["--no-deps", "--upgrade", "--target", str(target), *SGLANG_0_5_12_TARGET])
    _install_steps(session, steps)
    _upstream_env(session, "0.5.12")
    # target dir first (shadows the venv's transformers etc.), then the CPU-only sgl_kernel stub.
    _prepend_pythonpath(session, str(target), str(STUBS_0_5_12))
    session.run("python", CHECK_IMPORTS, "0.5.12")
    session.run("python", "-m", "pytest", "tests", "-m", "upstream", *session.posargs, success_codes=[0, 5])


@nox.session(name="preflight-verifier", python=PYTHON)
def preflight_verifier(session: nox.Session) -> None:
    """The preflight's attestation against the real nv-local-gpu-verifier package (no GPU: its API, its
    claims, and that no GPU never passes)."""
    _install_steps(session, [PREFLIGHT_VERIFIER], project="nodeps")
    session.run("python", "-m", "pytest", "tests/preflight/test_preflight_local_verifier.py", *session.posargs)


@nox.session(name="serve-0.5.23", python=False, requires=["upstream-0.5.23"])
def serve_0_5_23(session: nox.Session) -> None:
    """The real SGLang 0.5.23 server on CPU (docs/serving-ci.md). Shares the upstream-0.5.23 venv
    (6 GB, ~10 min to build) instead of building a second one: only SERVE_0_5_23 is added to it."""
    venv = ROOT / ".nox" / "upstream-0-5-23"
    python = venv / "bin" / "python"
    if not python.exists():
        session.error(f"{venv} is missing: run `nox -s upstream-0.5.23` first")
    stamp = venv / ".cc_runtime_serve_stamp"
    digest = hashlib.sha256(json.dumps(SERVE_0_5_23).encode()).hexdigest()
    if not (stamp.exists() and stamp.read_text().strip() == digest):
        session.run(str(python), "-m", "pip", "install", *SERVE_0_5_23, external=True)
        stamp.write_text(digest + "\n")
    env = {"CC_RUNTIME_TEST_SGLANG": "0.5.23", "CC_RUNTIME_TEST_SERVE": "1", "CUDA_VISIBLE_DEVICES": "",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "SGLANG_USE_CPU_ENGINE": "1",
           "SGLANG_DISABLE_REQUEST_LOGGING": "1",
           "PYTHONPATH": os.pathsep.join([str(STUBS_SERVE), str(ROOT)])}
    session.run(str(python), "-m", "pytest", "tests/serving", "-m", "serving", *session.posargs, env=env,
                external=True)
    # The sweep against the same real server: all three arms, results labelled CPU (not a CC measurement).
    out = ROOT / "build" / "serve-sweep"
    session.run(str(python), "-m", "cc_runtime", "sweep", "--quick", "--dummy-weights", "--emulate", "h100",
                "--isl-osl", "64/16", "--concurrency", "2", "--num-prompts", "8", "--warmup-requests", "1",
                "--no-resume", "--health-timeout", "900", "--cell-timeout", "900", "--out", str(out), "--",
                "--model-path", str(ROOT / "cc_runtime" / "sweep" / "models" / "tiny-llama"),
                "--load-format", "dummy", "--device", "cpu", "--max-total-tokens", "4096", "--random-seed", "1",
                env=env, external=True)
    session.run(str(python), str(ROOT / "scripts" / "check_serve_sweep.py"), str(out), env=env, external=True)


@nox.session(name="upstream-prs", python=False)
def upstream_prs(session: nox.Session) -> None:
    """``cc-runtime upstream check`` for every staged upstream PR, in the venvs built above (none of its own).

    In upstream-0.5.23's venv (SGLang 0.5.23, FlashInfer 0.7.2.post1, Triton 3.8, torch 2.14.1: each PR's
    base) every PR is proven; in upstream-0.5.12's (SGLang 0.5.12, FlashInfer 0.6.11.post1) and in
    tests' (Triton 3.6, torch 2.13) each is reported as applies / conflicts / upstream-covered.
    """
    envdir = ROOT / nox.options.envdir
    base = envdir / "upstream-0-5-23" / "bin" / "python"
    if not base.exists():
        session.error("run the upstream-0.5.23 session first: upstream-prs reuses its venv")
    env = {"PYTHONPATH": str(ROOT)}
    check = ["-m", "cc_runtime", "upstream", "check"]
    session.run(str(base), *check, *session.posargs, env=env, external=True)
    if session.posargs:
        return
    old = envdir / "upstream-0-5-12"
    if (old / "bin" / "python").exists():
        session.run(str(old / "bin" / "python"), *check, "--source", str(old / "sglang-0.5.12-site"),
                    "--pythonpath", str(STUBS_0_5_12), env=env, external=True)
    tests_python = envdir / "tests" / "bin" / "python"
    if tests_python.exists():
        session.run(str(tests_python), *check, "triton-do-bench-globaltimer",
                    "pytorch-inductor-benchmarker-globaltimer", env=env, external=True)
