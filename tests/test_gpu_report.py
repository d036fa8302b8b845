"""benchmarks/gpu_report.py on the H200 results in benchmarks/results/, checked against figures computed here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.gpu_report import (
    RESULTS,
    decode_rows,
    find,
    follow_up_row,
    load,
    main,
    precision_row,
    whole_turn_row,
)

OPT, T5 = "blip2-opt-2.7b", "blip2-flan-t5-xl"


def figures(name: str) -> dict:
    path = RESULTS / name
    if not path.exists():
        pytest.skip(f"no {name}")
    return json.loads(path.read_text())


def test_opt_decode_row_shows_rate_fraction_and_ratio() -> None:
    data = figures(f"decode-{OPT}-cuda-bfloat16.json")
    rate, limit, plain = data["ours_tokens_per_s"], data["limit_tokens_per_s"], data["plain_tokens_per_s"]
    expected = f"{round(rate)} tok/s, {round(100 * rate / limit)}%; {round(rate / plain, 1)}x plain"
    assert expected == "268 tok/s, 35%; 4.8x plain"  # the figures docs/benchmarks.md quotes
    rows = decode_rows(*load(RESULTS, f"decode-{OPT}-cuda-*.json"), label="OPT", goal=True)
    assert len(rows) == 1  # this file predates the compiled step
    target, measured, met = rows[0]
    assert measured == expected and met.startswith("no:") and "about 302 tok/s" in target


def test_follow_up_row_median_and_count() -> None:
    rows = [row for row in figures(f"turns-{OPT}-cuda-bfloat16.json")["rows"] if row["turn"] > 1]
    by_turn = {row["turn"]: row["ours_ttft"] / row["naive_ttft"] for row in rows}
    ratios = sorted(by_turn.values())
    _, measured, met = follow_up_row(*load(RESULTS, f"turns-{OPT}-cuda-*.json"))
    assert len(ratios) == 7 and f"median {ratios[3]:.2f}x" in measured  # 7 follow-ups: the middle one
    assert "median 0.43x" in measured  # as docs/benchmarks.md says
    assert f"{ratios[0]:.2f}-{ratios[-1]:.2f}x" in measured
    over = {turn: ratio for turn, ratio in by_turn.items() if ratio > 0.5}
    assert f"{len(ratios) - len(over)} of {len(ratios)} follow-ups" in measured
    reasons = ", ".join(f"turn {turn} at {ratio:.2f}x" for turn, ratio in over.items())
    assert met == (f"no: {reasons}" if over else "yes")
    assert list(over) == [5]  # the turn on which the naive loop was fastest


def test_flan_t5_whole_turn_row_says_yes() -> None:
    rows = figures(f"turns-{T5}-cuda-bfloat16.json")["rows"]
    speedups = [row["naive_total"] / row["ours_total"] for row in rows]
    _, measured, met = whole_turn_row(*load(RESULTS, f"turns-{T5}-cuda-*.json"))
    assert met == "yes" and all(speedup >= 1 for speedup in speedups)
    assert measured.startswith(f"{min(speedups):.1f}-{max(speedups):.1f}x")


def test_precision_row_compares_int8_with_bitsandbytes_8bit() -> None:
    rates = {row["precision"]: row["tokens_per_second"] for row in figures(f"precision-cuda-{OPT}.json")["rows"]}
    _, measured, met = precision_row(*load(RESULTS, f"precision-cuda-{OPT}.json"))
    assert f"int8 {round(rates['int8'])}" in measured and f"8bit {round(rates['8bit'])} tok/s" in measured
    assert rates["int8"] > rates["8bit"] and met == "yes"


def test_main_prints_both_tables(capsys: pytest.CaptureFixture[str]) -> None:
    figures(f"describe-nvidia-h200-{OPT}.json")
    assert main([str(RESULTS)]) == 0
    out = capsys.readouterr().out
    assert "### Against the targets of the GPU issue" in out and "| model | limit | ours |" in out
    assert "| describe images/s at batch 1, 8, 32, 64 | 6.4, 13.4, 34.5, 60.1 | measured |" in out
    assert "not measured" not in out


def test_a_folder_with_only_a_compiled_decode_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = figures(f"decode-{OPT}-cuda-bfloat16.json")
    limit, plain = data["limit_tokens_per_s"], data["plain_tokens_per_s"]
    data.update(compiled_tokens_per_s=0.5 * limit, compiled_fraction_of_limit=0.5,
                compiled_over_plain=0.5 * limit / plain, compile_and_capture_s=41.26, ours_kernels_per_step=702,
                compiled_kernels_per_step=None,
                compiled_decoding="CUDA graphs, compiled")
    (tmp_path / f"decode-{OPT}-cuda-bfloat16.json").write_text(json.dumps(data))
    assert main([str(tmp_path), "--opt", OPT]) == 0
    out = capsys.readouterr().out
    compiled = [line for line in out.splitlines() if line.startswith("| the same, the decode step compiled")]
    assert len(compiled) == 1
    assert f"{round(0.5 * limit)} tok/s, 50%; {0.5 * limit / plain:.1f}x plain" in compiled[0]
    assert "compile and capture 41.3 s" in compiled[0] and "702 uncompiled" in compiled[0]
    assert "None" not in out and compiled[0].endswith("| yes |")  # 50% and over 5x plain (378 / 56)
    assert f"{round(0.5 * limit)} tok/s (50%)" in out  # the decode table's compiled column
    for name in (f"turns-{OPT}-cuda-*.json", f"turns-{T5}-cuda-*.json", f"decode-{T5}-cuda-*.json",
                 f"precision-cuda-{OPT}.json", f"describe-*-{OPT}.json"):
        assert f"not measured (no {name})" in out


def test_find_prefers_bfloat16_and_skips_cpu_results(tmp_path: Path) -> None:
    for name in ("turns-x-cuda-float32.json", "turns-x-cuda-bfloat16-old.json", "turns-x-cuda-bfloat16.json",
                 "describe-cpu-x.json"):
        (tmp_path / name).write_text("{}")
    assert find(tmp_path, "turns-x-cuda-*.json") == tmp_path / "turns-x-cuda-bfloat16.json"
    assert find(tmp_path, "describe-*-x.json") is None


def test_the_linear_layers_table_and_what_fusing_saves(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    layers, hidden, ffn = 32, 2560, 10240
    qkv_gb, out_gb = layers * 3 * (hidden**2 + hidden) * 2 / 1e9, layers * (hidden**2 + hidden) * 2 / 1e9
    ffn_gb = layers * (2 * ffn * hidden + ffn + hidden) * 2 / 1e9
    timings = {"query, key, value apart": (0.62, qkv_gb), "query, key, value fused": (0.40, qkv_gb),
               "output projection": (0.21, out_gb), "FFN (fc1, fc2)": (1.05, ffn_gb)}
    rows = [{"variant": name, "ms_per_step": ms, "gb_per_step": gb, "tb_per_s": gb / ms} for name, (ms, gb) in
            timings.items()]
    (tmp_path / "gemv-cuda-bfloat16-2560.json").write_text(json.dumps(
        {"when": "2026-12-01 10:00:00", "device": "NVIDIA H200", "dtype": "bfloat16", "hidden": hidden, "ffn": ffn,
         "layers": layers, "rows": rows}))
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "(NVIDIA H200, bfloat16, 32 layers of width 2560)" in out
    assert "| query, key, value apart | 0.620 ms | 1.26 GB | 2.03 TB/s |" in out  # 1.2585 GB in 0.62 ms
    assert "| query, key, value fused | 0.400 ms | 1.26 GB | 3.15 TB/s |" in out
    assert "| FFN (fc1, fc2) | 1.050 ms | 3.36 GB | 3.20 TB/s |" in out
    assert "Fusing query, key and value: 0.220 ms a step less (0.65x the time)." in out
    assert "`gemv-cuda-bfloat16-2560.json` (2026-12-01 10:00:00)" in out


def test_no_linear_layers_table_without_its_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main([str(tmp_path)]) == 0
    assert "bench_gemv" not in capsys.readouterr().out
