"""benchmarks/bench_gpu.py's parts that need no GPU: arguments, the peak table, the FLOP count (against a count
written from the ViT's definition) and the one line it prints without CUDA."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
from bench_gpu import bf16_peak, parse_args, step_flops  # noqa: E402
from mtv.models.siglip import build_model, preset_config  # noqa: E402


def test_defaults_are_the_issue_s_benchmark_and_bad_counts_are_refused(capsys):
    a = parse_args([])
    assert (a.steps, a.size, a.image_size, a.parallel, a.backend) == (20, "base", 224, ["ddp", "fsdp"], "inductor")
    assert parse_args(["--parallel", "fsdp", "--steps", "5"]).parallel == ["fsdp"]
    with pytest.raises(SystemExit) as e:
        parse_args(["--steps", "0"])
    assert e.value.code == 2 and "--steps" in capsys.readouterr().err


@pytest.mark.parametrize("name, peak", [("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12),
                                        ("NVIDIA H200", 989e12), ("NVIDIA A100-SXM4-80GB", 312e12),
                                        ("Tesla T4", None)])
def test_bf16_peaks_by_device_name(name, peak):
    assert bf16_peak(name) == peak


def test_flop_count_of_a_tiny_vit_equals_the_count_from_its_definition():
    """SigLIP's image tower (micro: 32 px, patch 8, width 32, MLP 64, 2 blocks) on 3 images, forward and backward.
    Multiply-adds per image, ×2 for FLOPs: the patch convolution N·3p²·D; per block the q, k, v, o projections
    4·N·D², attention scores and values 2·N²·D, the MLP 2·N·D·M; the pooling head (one probe query) its query and
    output projections 2·D², key and value projections 2·N·D², attention 2·N·D and MLP 2·D·M. Backward: twice
    every forward product, except the convolution (the pixels need no gradient: its weights only, once) and
    attention, where the flash kernel recomputes the scores (5 N²·D products, not 4)."""
    model = build_model(preset_config("micro", 100, 16, 0, 1)).vision_model
    c = model.config
    n, d, m, p, layers, b = (c.image_size // c.patch_size) ** 2, c.hidden_size, c.intermediate_size, c.patch_size, \
        c.num_hidden_layers, 3
    conv = n * 3 * p * p * d
    attention = n * n * d
    block = 4 * n * d * d + 2 * attention + 2 * n * d * m
    head = 2 * d * d + 2 * n * d * d + 2 * n * d + 2 * d * m
    forward = conv + layers * block + head
    backward = 2 * (forward - conv - layers * 2 * attention) + conv + layers * 5 * attention
    pixels = torch.randn(b, 3, c.image_size, c.image_size)
    with torch.no_grad():
        assert step_flops(lambda: model(pixel_values=pixels)) == 2 * b * forward
    assert step_flops(lambda: model(pixel_values=pixels).pooler_output.sum().backward()) == \
        2 * b * (forward + backward)


def test_without_cuda_it_prints_one_line_and_exits_0():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the benchmark would run")
    out = subprocess.run([sys.executable, str(BENCH / "bench_gpu.py")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    assert out.stdout.strip().splitlines() == ["bench_gpu: no CUDA device on this machine; nothing measured (run it "
                                               "where NVIDIA GPUs are visible)"]
