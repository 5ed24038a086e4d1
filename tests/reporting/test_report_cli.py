"""``sft-interactions report``: output files, printed paths, clean errors."""

from __future__ import annotations

from pathlib import Path

from sft_interaction_callback.cli import main
from sft_interaction_callback.reporting.plots import PLOTS


def test_report_cli_on_a_run_without_losses_reference_or_stop(tmp_path, make_run, capsys):
    made = make_run(tmp_path / "run", logs=None, reference=False, stop=False)
    assert main(["report", str(made.root)]) == 0
    out = made.interactions / "report"  # the default place
    captured = capsys.readouterr()
    names = [p.name for p in PLOTS if p.name != "loss.png"]  # no loss history: no loss plot
    assert captured.out.split() == [str(out / n) for n in names] + [str(out / "report.html")]
    for name in names:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "loss.png").exists()
    assert "note: no Trainer log history found" in captured.err
    assert "γ (generalizability) was not measured" in captured.err

    page = (out / "report.html").read_text(encoding="utf-8")
    assert all(f'<a href="{n}">' in page for n in names) and "data:image/png" not in page
    assert '<figure id="plot-noise">' in page and '<figure id="plot-loss">' not in page
    assert "Early stop</dt><dd>not triggered" in page
    assert "Reference model</dt><dd>none" in page and "<th>γ</th>" not in page
    assert "Metrics at step 20 (last)" in page
    assert "loss plot is left out" in page


def test_report_cli_passes_out_and_top(tmp_path, monkeypatch, capsys):
    from sft_interaction_callback.reporting import report

    seen = {}

    def fake_build(run_dir, out_dir=None, *, top=8):
        seen.update(run_dir=run_dir, out_dir=out_dir, top=top)
        html = Path(out_dir) / "report.html"
        return report.ReportPaths(Path(out_dir), html, {"a.png": Path(out_dir) / "a.png"}, [])

    monkeypatch.setattr(report, "build_report", fake_build)
    assert main(["report", "RUN", "--out", str(tmp_path), "--top", "3"]) == 0
    assert seen == {"run_dir": "RUN", "out_dir": str(tmp_path), "top": 3}
    assert capsys.readouterr().out.split() == [
        str(tmp_path / "a.png"),
        str(tmp_path / "report.html"),
    ]


def test_report_cli_errors_exit_2_without_traceback(tmp_path, capsys):
    (tmp_path / "interactions").mkdir()
    for folder in (tmp_path, tmp_path / "missing"):
        assert main(["report", str(folder)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("sft-interactions report: error: ") and "Traceback" not in err
    assert main(["report", str(tmp_path), "--top", "0"]) == 2
    assert "--top" in capsys.readouterr().err
