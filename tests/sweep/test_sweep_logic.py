"""Pure logic of ``cc-runtime sweep``: grid, arms -> settings, resume store, report, CLI. No server here."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cc_runtime import settings
from cc_runtime.sweep import arms, grid, report, store
from cc_runtime.sweep.cli import gpus_from_server_args

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# -- grid ------------------------------------------------------------------------------------------
def test_default_grid_is_the_seed_table():
    cells = grid.build_grid(grid.DEFAULT_ISL_OSL, grid.DEFAULT_CONCURRENCY)
    assert [(c.isl, c.osl) for c in cells[:1]] == [(1024, 1024)]
    assert {(c.isl, c.osl) for c in cells} == {(1024, 1024), (8192, 1024)}
    assert [c.concurrency for c in cells if c.isl == 8192] == [4, 8, 16, 32, 64, 128, 256]
    assert [c.num_prompts for c in cells[:3]] == [40, 80, 160]  # 10 per concurrency slot
    assert cells[0].warmup_requests == 4


def test_cell_renders_fixed_length_client_args():
    cell = grid.build_grid([(8192, 1024)], [64], prompts_per_concurrency=2, seed=7)[0]
    a = cell.client_args()
    pairs = dict(zip(a[::1], a[1:], strict=False))
    assert pairs["--dataset-name"] == "random-ids" and pairs["--random-range-ratio"] == "1"
    assert pairs["--random-input-len"] == "8192" and pairs["--random-output-len"] == "1024"
    assert pairs["--max-concurrency"] == "64" and pairs["--num-prompts"] == "128"
    assert pairs["--seed"] == "7" and "--tokenize-prompt" in a
    assert grid.build_grid([(8, 8)], [1])[0].num_prompts == grid.MIN_PROMPTS


@pytest.mark.parametrize("bad", ["1024", "1024/x", "0/5", ""])
def test_bad_isl_osl_is_rejected(bad):
    with pytest.raises(ValueError):
        grid.parse_isl_osl(bad)


def test_parse_lists():
    assert grid.parse_isl_osl("1024/1024, 8192/1024") == [(1024, 1024), (8192, 1024)]
    assert grid.parse_ints("4,8", "concurrency") == [4, 8]
    with pytest.raises(ValueError, match="concurrency"):
        grid.parse_ints("4,-1", "concurrency")


# -- arms ------------------------------------------------------------------------------------------
def _by_name(plans):
    return {p.name: p for p in plans}


def test_without_cc_or_emulation_only_cc_off_runs():
    plans = _by_name(arms.plan_arms(arms.ARM_NAMES, emulate=None, real_cc=False))
    assert plans["cc-off"].skip_reason is None and plans["cc-off"].env == {"CC_RUNTIME_DISABLE": "1"}
    assert "--emulate" in plans["cc"].skip_reason and plans["cc+cc_runtime"].skip_reason


def test_emulated_arms_are_labelled_and_set_the_emulator():
    plans = _by_name(arms.plan_arms(arms.ARM_NAMES, emulate="h100", real_cc=False))
    assert plans["cc"].cc == "emulated:h100" and plans["cc"].emulated
    assert "emulated" in plans["cc"].title and "emulated" in plans["cc+cc_runtime"].title
    assert plans["cc"].env == {"CC_RUNTIME_EMULATE": "h100", "CC_RUNTIME_PATCHES": arms.UPSTREAM_CC_PATCHES}
    assert plans["cc+cc_runtime"].env["CC_RUNTIME_PATCHES"] == "*"
    assert not plans["cc-off"].emulated and "CC_RUNTIME_EMULATE" not in plans["cc-off"].env


def test_emulated_cc_arm_allows_no_cc_runtime_fix():
    """The upstream-behaviour arm: the real registry's patches, filtered by the arm's real settings."""
    from cc_runtime.patches import all_patches

    names = {p.name for p in all_patches()}
    allowed_names = set(arms.UPSTREAM_CC_PATCHES.split(","))
    assert allowed_names <= names  # a renamed patch would silently drop out of the arm
    plan = _by_name(arms.plan_arms(["cc"], emulate="h100", real_cc=False))["cc"]
    s = settings.Settings.load(env=dict(plan.env))
    assert {n for n in names if s.patch_allowed(n)} == allowed_names
    assert s.emulate == "h100" and not s.disable
    full = settings.Settings.load(env=dict(_by_name(arms.plan_arms(["cc+cc_runtime"], emulate="h100",
                                                                    real_cc=False))["cc+cc_runtime"].env))
    assert all(full.patch_allowed(n) for n in names)


def test_on_a_cc_machine_cc_off_is_skipped_and_emulation_refused():
    plans = _by_name(arms.plan_arms(arms.ARM_NAMES, emulate=None, real_cc=True, real_reason="NVML: ccFeature"))
    assert "sweep report" in plans["cc-off"].skip_reason
    assert plans["cc"].env == {"CC_RUNTIME_DISABLE": "1"} and plans["cc"].cc == "on"
    assert plans["cc+cc_runtime"].skip_reason is None and plans["cc+cc_runtime"].cc == "on"
    with pytest.raises(arms.ArmError, match="real CC is on"):
        arms.plan_arms(["cc"], emulate="h100", real_cc=True)


def test_patches_option_names_opt_in_patches_for_the_cc_runtime_arm():
    from cc_runtime.patches import all_patches

    opt_in = [p.name for p in all_patches() if p.opt_in]
    if not opt_in:
        pytest.skip("no opt-in patch in the registry")
    wanted = "sglang.*,flashinfer.*,triton.*,inductor.*,emulation," + opt_in[0]
    plans = _by_name(arms.plan_arms(arms.ARM_NAMES, emulate="h100", real_cc=False, patches=wanted))
    arm = settings.Settings.load(env=dict(plans["cc+cc_runtime"].env))
    assert arm.patch_named(opt_in[0]) and arm.patch_allowed("emulation")
    assert plans["cc"].env["CC_RUNTIME_PATCHES"] == arms.UPSTREAM_CC_PATCHES  # the baseline never changes
    default = settings.Settings.load(env=dict(_by_name(arms.plan_arms(["cc+cc_runtime"], emulate="h100",
                                                                       real_cc=False))["cc+cc_runtime"].env))
    assert not default.patch_named(opt_in[0])
    with pytest.raises(arms.ArmError, match="emulation"):
        arms.plan_arms(["cc+cc_runtime"], emulate="h100", real_cc=False, patches="sglang.*")
    with pytest.raises(settings.SettingsError):
        arms.plan_arms(["cc+cc_runtime"], emulate=None, real_cc=True, patches="no.such.patch")


def test_bad_profile_and_arm_names():
    with pytest.raises(arms.ArmError, match="profile"):
        arms.plan_arms(["cc"], emulate="no-such-gpu", real_cc=False)
    with pytest.raises(arms.ArmError, match="valid"):
        arms.parse_arms("cc,fast")
    assert arms.parse_arms("cc, cc-off,cc") == ["cc", "cc-off"]


def test_server_environment_replaces_the_callers_arm_settings():
    base = {"PATH": "/bin", "CC_RUNTIME_DISABLE": "1", "CC_RUNTIME_EMULATE": "b300", "CC_RUNTIME_TIMER": "auto"}
    plan = _by_name(arms.plan_arms(["cc+cc_runtime"], emulate="h100", real_cc=False))["cc+cc_runtime"]
    env = arms.server_environment(base, plan)
    assert "CC_RUNTIME_DISABLE" not in env and env["CC_RUNTIME_EMULATE"] == "h100"
    assert env["CC_RUNTIME_BOOTSTRAP"] == "1" and env["CC_RUNTIME_TIMER"] == "auto"
    assert env["PYTHONPATH"].split(os.pathsep)[0].endswith(os.path.join("cc_runtime", "_launch"))
    client = arms.client_environment(base)
    assert client["CC_RUNTIME_DISABLE"] == "1" and "CC_RUNTIME_EMULATE" not in client
    with pytest.raises(settings.SettingsError, match="CC_RUNTIME_TIMER"):
        arms.server_environment({**base, "CC_RUNTIME_TIMER": "stopwatch"}, plan)


def test_gpus_from_server_args():
    assert gpus_from_server_args([]) == 1
    assert gpus_from_server_args(["--tp", "4"]) == 4
    assert gpus_from_server_args(["--tp-size=2", "--dp", "2"]) == 4
    assert gpus_from_server_args(["--tp", "8", "--dp", "8", "--enable-dp-attention"]) == 8
    assert gpus_from_server_args(["--tp", "2", "--pp-size", "2"]) == 4


# -- store -----------------------------------------------------------------------------------------
def _rec(arm="cc-off", conc=4, status="ok", tput=100.0, **kw):
    title = {"cc-off": "CC off", "cc": "emulated CC (h100)", "cc+cc_runtime": "emulated CC (h100) + cc_runtime"}
    r = {"kind": "cell", "arm": arm, "arm_title": title[arm], "cc": "off" if arm == "cc-off" else "emulated:h100",
         "emulated": arm != "cc-off", "results_from": "sglang", "isl": 1024, "osl": 1024, "concurrency": conc,
         "config": "cfg", "status": status, "reason": "" if status == "ok" else "server exited with code 3",
         "metrics": {"output_throughput_per_gpu": tput, "median_ttft_ms": 50.0, "median_tpot_ms": 10.0,
                     "tokens_per_s_per_user": 100.0}}
    r.update(kw)
    return r


def test_store_resumes_only_ok_cells_and_survives_a_torn_line(tmp_path):
    path = str(tmp_path / "results.jsonl")
    s = store.ResultStore(path)
    s.append(_rec(conc=4))
    s.append(_rec(conc=8, status="failed"))
    with open(path, "a") as f:
        f.write('{"schema": "cc_runtime.sweep/1", "kind": "ce')  # a sweep killed mid-write
    again = store.ResultStore(path)
    assert again.unreadable == 1 and len(again.records) == 2
    assert again.finished(("cc-off", 1024, 1024, 4, "cfg"))
    assert not again.finished(("cc-off", 1024, 1024, 8, "cfg"))  # failed: tried again
    assert not again.finished(("cc-off", 1024, 1024, 4, "other-config"))


def test_latest_per_cell_prefers_a_success():
    recs = [_rec(status="failed"), _rec(tput=5.0), _rec(status="failed")]
    (only,) = store.latest_per_cell(recs)
    assert only["status"] == "ok" and only["metrics"]["output_throughput_per_gpu"] == 5.0


# -- report ----------------------------------------------------------------------------------------
def test_report_table_has_the_seed_layout_and_labels(tmp_path):
    recs = [_rec("cc-off", 4, tput=100.0), _rec("cc", 4, tput=92.5), _rec("cc+cc_runtime", 4, tput=98.0),
            _rec("cc-off", 8, tput=180.0), _rec("cc", 8, status="failed")]
    md, series = report.build(recs)
    head = next(ln for ln in md.splitlines() if ln.startswith("| concurrency"))
    assert head.index("CC off tok/s/GPU") < head.index("emulated CC (h100) tok/s/GPU") < head.index("Δ emulated")
    row4 = next(ln for ln in md.splitlines() if ln.startswith("| 4 |")).split(" | ")
    assert row4[1:5] == ["100.0", "92.5", "-7.5%", "98.0"] and "-2.0%" in row4
    row8 = next(ln for ln in md.splitlines() if ln.startswith("| 8 |"))
    assert "failed" in row8
    assert "EMULATED CC" in md and "TEST SERVER" not in md
    assert "server exited with code 3" in md  # the failure's reason
    assert series[(1024, 1024)]["CC off"]["concurrency"] == [4, 8]


def test_report_labels_test_server_results():
    md, _ = report.build([_rec(results_from="test-server")])
    assert "TEST SERVER RESULTS" in md


def test_report_writes_plots_or_says_why_not(tmp_path, monkeypatch):
    recs = [_rec("cc-off", c, tput=100.0 * c) for c in (4, 8)] + [_rec("cc", c, tput=90.0 * c) for c in (4, 8)]
    rep = report.write(recs, str(tmp_path / "with"))
    pytest.importorskip("matplotlib")
    assert sorted(os.path.basename(p) for p in rep.plots) == [
        "interactivity_isl1024_osl1024.png", "latency_isl1024_osl1024.png", "throughput_isl1024_osl1024.png"]
    assert all(os.path.getsize(p) > 1000 for p in rep.plots)
    monkeypatch.setattr(report, "plots_available", lambda: False)
    rep = report.write(recs, str(tmp_path / "without"))
    assert rep.plots == [] and report.NO_MATPLOTLIB in rep.notes
    assert report.NO_MATPLOTLIB in open(tmp_path / "without" / "report.md").read()
    assert not [f for f in os.listdir(tmp_path / "without") if f.endswith(".png")]


# -- CLI -------------------------------------------------------------------------------------------
def _cli(*argv, timeout=120):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CC_RUNTIME_")}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "cc_runtime", *argv], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def test_cli_dry_run_prints_server_and_every_cell(tmp_path):
    r = _cli("sweep", "--dry-run", "--quick", "--out", str(tmp_path), "--", "--model-path", "M")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "sglang.launch_server --host 127.0.0.1 --port PORT --model-path M" in out
    assert "CC_RUNTIME_DISABLE=1 cc-runtime launch --" in out
    for conc in grid.QUICK_CONCURRENCY:
        assert f"concurrency {conc}," in out and f"--max-concurrency {conc} " in out
    assert "--random-input-len 1024 --random-output-len 128" in out
    assert not os.listdir(tmp_path)  # a dry run writes nothing


def test_cli_help_and_usage_errors(tmp_path):
    assert _cli("sweep", "--help").returncode == 0
    r = _cli("sweep", "report", "--help")
    assert r.returncode == 0 and "RESULTS.jsonl" in r.stdout
    r = _cli("sweep", "--dry-run", "--", "--model-path", "M", "--port", "30000")
    assert r.returncode == 2 and "--port" in r.stderr
    r = _cli("sweep", "--dry-run", "--", "--tp", "2")
    assert r.returncode == 2 and "--model-path" in r.stderr
    r = _cli("sweep", "--dry-run", "--emulate", "nope", "--", "--model-path", "M")
    assert r.returncode == 2 and "profile" in r.stderr


def test_cli_report_merges_files_from_two_machines(tmp_path):
    a, b = tmp_path / "off.jsonl", tmp_path / "on.jsonl"
    store.ResultStore(str(a)).append(_rec("cc-off", 4, tput=100.0))
    real_on = _rec("cc", 4, tput=95.0, arm_title="CC on", cc="on", emulated=False)
    store.ResultStore(str(b)).append(real_on)
    r = _cli("sweep", "report", str(a), str(b), "--out", str(tmp_path / "rep"))
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| 4 | 100.0 | 95.0 | -5.0% |" in md
    assert str(a) in md and str(b) in md  # each column names the file it came from


def test_dummy_weights_uses_the_shipped_model(tmp_path):
    r = _cli("sweep", "--dry-run", "--quick", "--dummy-weights", "--arms", "cc-off", "--", "--tp", "2")
    assert r.returncode == 0, r.stderr
    model = os.path.join(ROOT, "cc_runtime", "sweep", "models", "tiny-llama")
    assert f"--model-path {model} --tp 2 --load-format dummy" in r.stdout
    assert "HF_HUB_OFFLINE=1" in r.stdout
    cfg = json.load(open(os.path.join(model, "config.json")))
    tok = json.load(open(os.path.join(model, "tokenizer.json")))
    assert cfg["model_type"] == "llama" and len(tok["model"]["vocab"]) == cfg["vocab_size"]
    assert cfg["max_position_embeddings"] >= 8192 + 1024  # the default grid's longest request fits
