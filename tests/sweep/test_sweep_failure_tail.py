"""A failed arm's reason reaches the console and report.md in full: the server log's tail on lines of its
own (a traceback reads as one), not only the reason's first line. Real sweep runner and real loopback
test server that never becomes healthy; its log carries a multi-line traceback."""

from __future__ import annotations

import io
import os

from cc_runtime.sweep import report, runner
from cc_runtime.sweep.arms import plan_arms
from cc_runtime.sweep.client import ClientInfo
from cc_runtime.sweep.grid import build_grid


def test_failed_arm_shows_the_log_tail_across_lines(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "_progress_bar", lambda total: _Bar())
    cfg = runner.SweepConfig(
        out_dir=str(tmp_path), cells=build_grid([(32, 8)], [1, 2]),
        arms=plan_arms(["cc-off"], emulate=None, real_cc=False),
        server_args=["--model-path", "m", "--never-healthy"], client=ClientInfo("sglang.benchmark.serving", None),
        test_server=True, health_timeout_s=1.5)
    # What a crashing server leaves in its log before the sweep gives up on it.
    os.makedirs(tmp_path / "cc-off", exist_ok=True)
    crash = ["Traceback (most recent call last):", '  File "async_d2h_copy_worker.py", line 93, in run',
             "    self.d2h_copy_stream.synchronize()", "AttributeError: 'Stream' object has no attribute 'synchronize'"]
    (tmp_path / "cc-off" / "server.log").write_text("\n".join(crash) + "\n")
    out = io.StringIO()
    assert runner.Sweep(cfg, out=out).run() == 2
    console = out.getvalue()
    assert "ARM FAILED after 2 server start(s): arm failed" not in console
    armed = console[console.index("ARM FAILED"):]
    # The reason's later lines are printed, each indented on a line of its own.
    assert "\n    " in armed and "log tail" in armed.splitlines()[0]
    assert any(ln.startswith("    ") and "TEST SERVER" in ln for ln in armed.splitlines()[1:])

    rep = report.write(runner.ResultStore(cfg.results_path).records, str(tmp_path))
    md = (tmp_path / report.REPORT_FILE).read_text()
    assert md == rep.markdown
    section = md[md.index("## Cells without a result"):]
    assert "```text" in section and "(log tail as under" in section  # shown once, then referred to
    block = section[section.index("```text"):section.index("```", section.index("```text") + 3)]
    assert len(block.splitlines()) > 3


class _Bar:
    def update(self, n=1):
        pass

    def set_description(self, d):
        pass

    def close(self):
        pass
