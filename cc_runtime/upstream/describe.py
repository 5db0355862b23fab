"""PR.md for a staged PR, written from the project's data, not typed a second time.

- the problem: the runtime patch's ``why``, ``summary`` and upstream note (its record in
  :mod:`cc_runtime.patches`) and the PR's ``sources``;
- the change: the PR's ``change`` and its files;
- evidence: the figures its ``evidence`` entries name, read from ``benchmarks/results/``, each labelled
  with the device kind the result file records (simulated, host or GPU);
- the test plan: the PR's test files and what ``cc-runtime upstream check`` proved;
- related upstream PRs and issues; upstream's PR-template sections and checklist where it has one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .staged import StagedPR

RESULTS_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def _patch_record(name: str | None) -> Any:
    if not name:
        return None
    from ..patches import all_patches

    return next((p for p in all_patches() if p.name == name), None)


def _fmt(value: Any) -> str:
    if isinstance(value, dict) and "median" in value:
        return (f"median {value['median']:.4g} (min {value['min']:.4g}, max {value['max']:.4g}, "
                f"n={value['n']})")
    if isinstance(value, dict) and "value" in value:
        return f"{value['value']:.4g}" + (f" (n={value['n']})" if "n" in value else "")
    return str(value)


def evidence_lines(pr: StagedPR, results_dir: Path = RESULTS_DIR) -> list[str]:
    lines = []
    for ev in pr.evidence:
        file = results_dir / ev["result"]
        try:
            data = json.loads(file.read_text())
        except (OSError, ValueError):
            lines.append(f"- `{ev['result']}`: not found in this install (a source checkout has it)")
            continue
        env = data.get("environment", {})
        kind = env.get("device_kind", "unknown device")
        label = "GPU" if kind == "gpu" else kind
        where = f"{env.get('device', '?')}, CC {env.get('cc', '?')}, {env.get('timestamp', '?')[:10]}"
        lines.append(f"- `benchmarks/results/{ev['result']}` ({label}: {where}):")
        for key in ev.get("summary", ()):
            if key in data.get("summary", {}):
                lines.append(f"  - measured `{key}`: {_fmt(data['summary'][key])}")
        for key in ev.get("model", ()):
            if key in data.get("model", {}):
                m = data["model"][key]
                lines.append(f"  - model `{key}` = {m.get('value')!s:.60} ({m.get('source', 'no source')})")
        if ev.get("reading"):
            lines.append(f"  - reading: {ev['reading']}")
    return lines


def render(pr: StagedPR, check_steps: list[str] | None = None, results_dir: Path = RESULTS_DIR) -> str:
    patch = _patch_record(pr.runtime_patch)
    problem = []
    if patch is not None:
        problem.append(f"{patch.why[:1].upper()}{patch.why[1:]}." if patch.why else patch.summary)
        problem.append(f"Upstream today: {patch.upstream}.")
    problem += ["", "Sources:"] + [f"- {s}" for s in pr.sources]
    change = [pr.change, "", "Files:"] + [f"- `{f}`" for f in pr.files]
    evidence = evidence_lines(pr, results_dir) or ["- none committed yet"]
    evidence = ["Figures from cc_runtime's committed benchmark results (labelled by the device that produced "
                "them; simulated figures come from a CPU emulation of CC's costs, not from a GPU):", "",
                *evidence]
    tests = ["New tests (CPU only; stand-ins are named in each file's docstring):"]
    tests += [f"- `{t}`" for t in pr.test_files()]
    tests += ["", "Checked with `cc-runtime upstream check " + pr.name + "` on the files of "
              f"{pr.project.dist} {pr.base_version} laid out at the repository's paths:",
              "- the diff applies exactly (no offset, no fuzz);",
              "- the new tests fail on the pristine release and pass with the change;",
              (f"- the runtime-patch comparison is not run on a CPU-only machine: {pr.runtime_check_skip}"
               if pr.runtime_check_skip else
               "- the same tests pass on the pristine release with the cc_runtime runtime patch "
               f"`{pr.runtime_patch}` that users run today (so the change matches it).")
              if pr.runtime_patch else "- (no runtime patch to compare with)"]
    if check_steps:
        tests += ["", "Last check:"] + [f"    {s}" for s in check_steps]
    related = [f"- {r}" for r in pr.related] or ["- none known"]
    body = {"problem": problem, "change": change, "evidence": evidence, "tests": tests, "related": related}
    return _layout(pr, body)


def _layout(pr: StagedPR, body: dict[str, list[str]]) -> str:
    proj = pr.project
    checklist = [f"- [ ] {c}" for c in proj.checklist]
    out = [f"# {pr.title}", ""]
    if proj.name == "sglang":
        sections = [("Motivation", body["problem"] + ["", "Related:"] + body["related"]),
                    ("Modifications", body["change"]),
                    ("Accuracy Tests", ["No model output changes: the change affects only "
                                        "when and how data crosses the CPU/GPU boundary."] + [""] + body["tests"]),
                    ("Benchmarking and Profiling", body["evidence"]),
                    ("Checklist", checklist)]
    elif proj.name == "flashinfer":
        sections = [("📌 Description", body["problem"] + [""] + body["change"] + [""] + body["evidence"]),
                    ("🔍 Related Issues", body["related"]),
                    ("🚀 Pull Request Checklist", checklist),
                    ("🧪 Tests", body["tests"])]
    else:
        sections = [("Problem", body["problem"]), ("Change", body["change"]), ("Evidence", body["evidence"]),
                    ("Test plan", body["tests"]), ("Related", body["related"])]
        if checklist:
            sections.append(("Checklist", checklist))
    for head, lines in sections:
        out += [f"## {head}", "", *lines, ""]
    if pr.notes:
        out += ["## Notes for the sender", "", pr.notes, ""]
    return "\n".join(out).rstrip() + "\n"
