"""`python -m alexnet.bench` at toy sizes on CPU: every section runs and reports positive
numbers in the JSON. Speed itself is never asserted."""

import json
from functools import partial

import pytest

from alexnet.bench.__main__ import bench, format_report
from alexnet.bench.flops import flops_per_image, mfu, peak_flops

TINY = [
    "model=alexnet_cifar",
    "data.num_classes=10",
    "model.conv_width=0.25",
    "compile=false",
    "profiles.cpu.batch_size=8",
    "profiles.cpu.steps=2",
    "profiles.cpu.lrn_shape=[2,8,6,6]",
    "profiles.cpu.cifar_images=1024",
    "profiles.cpu.cifar_batch_size=256",
    "profiles.cpu.imagenet_images=24",
    "profiles.cpu.imagenet_batch_size=4",
    "profiles.cpu.input_batches=2",
    "profiles.cpu.workers=[0]",
    "loop.progress_bar=false",
    "input.store_threads=2",
    "only=[paper_eager,fast_eager]",
    "loop.variant=fast_eager",
    "loop.host_probe.warmup=1",
    "loop.host_probe.steps=5",
    "cpu_train.batch_size=4",
    "cpu_train.warmup=1",
    "cpu_train.steps=1",
    "+cpu_train.models.alexnet_cifar.conv_width=0.25",
    "device=cpu",
]


# ~25 s on 2 busy cores: three training loops, two Trainers, five input pipelines
@pytest.mark.slow
def test_bench_writes_every_section_with_positive_numbers(cfg_factory, tmp_path, monkeypatch):
    import alexnet.bench.__main__ as bench_main

    # the matmul rate on 256x256 matrices, not 2048x2048: a rate is all that is checked
    monkeypatch.setattr(bench_main, "matmul_gflops", partial(bench_main.matmul_gflops, n=256))
    cfg = cfg_factory(TINY, name="bench", output_dir=tmp_path / "run")
    result = bench(cfg)
    saved = json.loads((tmp_path / "run" / "bench.json").read_text())
    assert saved["profile"]["name"] == "cpu" and saved["peak_tflops"] is None
    rows = {r["name"]: r for r in saved["train_step"]}
    assert set(rows) == {"paper_eager", "fast_eager"}
    for row in rows.values():
        assert "error" not in row, row
        assert row["img_per_s"] > 0 and row["ms_per_step"] > 0 and row["mfu"] is None
        assert row["gflops_per_image"] == pytest.approx(
            flops_per_image({"name": "alexnet_cifar", "num_classes": 10, "conv_width": 0.25})[
                "train"
            ]
            / 1e9
        )
    loop = saved["loop"]
    for key in ("raw_img_per_s", "lightning_img_per_s", "lightning_naive_img_per_s"):
        assert loop[key] > 0
    assert "lightning_overhead_pct" in loop and "lightning_naive_overhead_pct" in loop
    host = loop["host"]  # the same loops on four_layer: ms of host time per step
    assert host["model"]["name"] == "four_layer" and host["steps"] == 5
    assert all(host[f"{k}_ms_per_step"] > 0 for k in ("raw", "lightning", "lightning_naive"))
    lrn = saved["lrn"]
    assert lrn["eager_ms"] > 0 and lrn["relu_ms"] > 0 and lrn["compiled_ms"] is None
    names = [r["name"] for r in saved["input"]]
    assert names == [
        "cifar_dataloader_0w",
        "cifar_gpu_resident_cpu",
        "imagenet_folder_dataloader_0w",
        "imagenet_store_dataloader_0w",
        "imagenet_store_cpu_2t_to_cpu",
    ]
    assert all(r["img_per_s"] > 0 and r["batches"] >= 1 for r in saved["input"])
    cpu = saved["cpu_train"]  # before vs now, side by side, against the matmul rates
    assert cpu["matmul_gflops"]["fp32"] > 0 and cpu["matmul_gflops"]["bf16"] > 0
    assert [r["name"] for r in cpu["rows"]] == [
        "four_layer fp32_functional_lrn",
        "four_layer bf16_channels_last",
        "alexnet_cifar fp32_functional_lrn",
        "alexnet_cifar bf16_channels_last",
    ]
    assert all(r["img_per_s"] > 0 and r["gflops_per_s"] > 0 for r in cpu["rows"])
    assert [r["vs_first"] for r in cpu["rows"]][::2] == [1.0, 1.0]
    report = format_report(result)
    assert "CPU training step, batch 4 of 32x32" in report
    assert "fast_eager" in report and "lightning_naive" in report and "n/a" in report
    assert "host time per step, ms (four_layer, batch 2, 5 steps): raw " in report


def test_flops_follow_the_layer_shapes():
    paper = flops_per_image({"name": "alexnet", "num_classes": 1000})
    dense = flops_per_image({"name": "alexnet", "num_classes": 1000, "towers": 1})
    # conv1 alone by hand: 96 maps of 55x55, each output an 11x11x3 dot product
    conv1 = 2 * 96 * 55 * 55 * 11 * 11 * 3
    # conv2: 256 maps of 27x27 over 5x5x48 (two towers) or 5x5x96 (one)
    conv2_towers, conv2_dense = 2 * 256 * 27 * 27 * 5 * 5 * 48, 2 * 256 * 27 * 27 * 5 * 5 * 96
    assert dense["forward"] - paper["forward"] > conv2_dense - conv2_towers
    assert paper["train"] == 3 * paper["forward"] - conv1
    assert 1.4e9 < paper["forward"] < 1.5e9  # ~0.72 G multiply-adds, the usual AlexNet figure
    masked = flops_per_image({"name": "alexnet", "num_classes": 1000, "conv_impl": "masked"})
    assert masked == paper  # model FLOPs, not the implementation's


def test_mfu_needs_a_known_peak():
    import torch

    assert peak_flops(torch.device("cpu")) is None
    assert mfu(1000.0, 4e9, None) is None
    assert mfu(36_000.0, 4.1356e9, 989e12) == pytest.approx(0.1505, abs=1e-3)


def test_unknown_section_is_a_clear_error(cfg_factory):
    cfg = cfg_factory(["sections=[speed]", "device=cpu"], name="bench")
    with pytest.raises(ValueError, match="sections"):
        bench(cfg)
