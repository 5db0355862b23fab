#!/usr/bin/env python3
"""Prepare, here, what a lent GPU machine's image lacks for the GPU check, within the 64 MiB a lease carries.

    python scripts/prepare_gpu_wheels.py [--dest .gpu-wheels] [--dry-run]

The image (docs/gpu-check.md) holds torch, Triton, cuda-bindings, nvidia-ml-py, wrapt, pytest and
safetensors but no SGLang, FlashInfer or tvm-ffi, and cannot reach a registry. Each entry of ``CARRY``
names a requirement, the step that needs it and what of its wheel to keep: ``pip download --no-deps``
fetches the wheel for the image's Python (3.12, x86-64 manylinux), and the kept members are unpacked
into ``DEST/site`` (with the distribution's metadata, so ``importlib.metadata.version`` answers), which
the lease command puts on ``PYTHONPATH``. A pure-Python wheel is kept whole; SGLang's is 39 MB and
platform-specific, and the peer arm needs one standard-library-only module of it, so only that module
is kept (no ``sglang/__init__.py``: ``sglang`` imports as a namespace package, without its dependencies).
Fails, naming the sizes, if the tracked tree and DEST together pass the carry limit.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CARRY_LIMIT = 64 * 2**20
PLATFORM = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
            *[a for n in (39, 35, 34, 31, 28, 27, 24, 17) for a in ("--platform", f"manylinux_2_{n}_x86_64")],
            "--platform", "manylinux2014_x86_64", "--platform", "any"]

#: requirement -> (the step and what in it needs it, members to keep: None = the whole wheel)
CARRY: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "sglang==0.5.23": ("bench-readback's peer arms (sglang_worker*) and "
                       "tests/readback/test_readback_worker_gpu.py::test_sglang_worker_with_blocking_waits_reads_back_exactly",
                       ("sglang/srt/managers/async_d2h_copy_worker.py",)),
}


def _tracked_bytes() -> int:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    return sum((REPO / p).stat().st_size for p in out.decode().split("\0") if p and (REPO / p).is_file())


def _unpack(wheel: Path, site: Path, members: tuple[str, ...] | None) -> int:
    kept = 0
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            top = info.filename.split("/", 1)[0]
            is_meta = top.endswith(".dist-info") and info.filename.endswith(("/METADATA", "/top_level.txt"))
            if members is None or info.filename in members or is_meta:
                zf.extract(info, site)
                kept += info.file_size
    return kept


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dest", default=str(REPO / ".gpu-wheels"))
    ap.add_argument("--dry-run", action="store_true", help="say what would be carried, download nothing")
    args = ap.parse_args(argv)
    dest = Path(args.dest)
    for req, (why, members) in CARRY.items():
        print(f"{req}: for {why}; keeps {', '.join(members) if members else 'the whole wheel'}")
    if args.dry_run:
        return 0
    site = dest / "site"
    shutil.rmtree(site, ignore_errors=True)
    site.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        for req in CARRY:
            cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", *PLATFORM, "-d", tmp, req]
            if subprocess.run(cmd).returncode != 0:
                print(f"prepare_gpu_wheels: pip could not download {req}", file=sys.stderr)
                return 1
        for wheel in sorted(Path(tmp).glob("*.whl")):
            name = wheel.name.split("-", 1)[0].replace("_", "-").lower()
            members = next((m for r, (_w, m) in CARRY.items() if r.split("==")[0].lower() == name), None)
            print(f"  {wheel.name}: {_unpack(wheel, site, members) / 1024:.0f} KiB kept")
    carried = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    tracked = _tracked_bytes()
    print(f"{dest}: {carried / 2**20:.2f} MiB; tracked tree {tracked / 2**20:.2f} MiB; "
          f"limit {CARRY_LIMIT / 2**20:.0f} MiB")
    if carried + tracked > CARRY_LIMIT:
        print("prepare_gpu_wheels: over the lease's carry limit", file=sys.stderr)
        return 1
    print(f"carry '{dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest}' with the lease command "
          "(docs/gpu-check.md)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
