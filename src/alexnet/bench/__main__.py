"""Speed figures: `python -m alexnet.bench [key=value ...]` (`make bench`), configured by
conf/bench.yaml.

Sections (`sections=[...]` picks some):

- `train_step`: img/s, ms per step and MFU of a full SGD step (forward, loss, backward, update)
  for each model variant -- the paper's net eager and compiled, without LRN, torchvision's net
  (the baselines), and the fast paths (fused LRN, split or masked tower convs);
- `loop`: one variant in a raw PyTorch loop, under the Lightning Trainer, and under the Trainer
  with the module's old per-step logging (the naive baseline), in the same process, on the
  same batches;
- `lrn`: the LRN layer forward + backward on conv1's output: torch eager, compiled, the fused
  Triton kernel (CUDA only), and a ReLU of the same shape for scale;
- `input`: augmented images per second delivered to the device by each input pipeline;
- `cpu_train` (CPU only by default): the four-layer net and AlexNet-CIFAR at batch 128, the
  path training used before (fp32, NCHW, torch's LRN) vs the one `precision: auto` picks on a
  CPU with native bf16, with GFLOP/s against this machine's matmul rate.

On CUDA the `gpu` profile measures the speed targets (bf16, batch 256); elsewhere the `cpu`
profile runs the same code at toy sizes, so CI can smoke-test it. Prints tables and writes the
JSON (`output`, default `bench.json` in the run dir). Never asserts a speed.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from alexnet.bench import inputs, loops
from alexnet.bench.flops import flops_per_image, mfu, peak_flops
from alexnet.bench.lrn import bench_lrn
from alexnet.bench.timer import seconds_per_call
from alexnet.config import CONF_DIR
from alexnet.config.entry import one_line_errors
from alexnet.config.hardware import describe
from alexnet.models import MODELS
from alexnet.training import record

log = logging.getLogger(__name__)
SECTIONS = ("train_step", "loop", "lrn", "input", "cpu_train")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but CUDA is not available; use device=cpu or device=auto")
    return device


def resolve_profile(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    name = cfg.profile if cfg.profile != "auto" else ("gpu" if device.type == "cuda" else "cpu")
    if name not in cfg.profiles:
        raise ValueError(
            f"profile={name!r} is unknown; choose auto or one of {', '.join(cfg.profiles)}"
        )
    return {"name": name, **OmegaConf.to_container(cfg.profiles[name], resolve=True)}


def variant_model(cfg: DictConfig, variant: dict) -> dict[str, Any]:
    """The network's keyword arguments for a variant: conf/model with its overrides."""
    overrides = dict(variant.get("model") or {})
    base = OmegaConf.to_container(cfg.model, resolve=True)
    if "name" in overrides and overrides["name"] != base["name"]:
        return {"num_classes": base["num_classes"], **overrides}
    return {**base, **overrides}


def _variant(cfg: DictConfig, name: str) -> dict[str, Any]:
    if name not in cfg.variants:
        raise ValueError(f"variant {name!r} is not in `variants` ({', '.join(cfg.variants)})")
    return OmegaConf.to_container(cfg.variants[name], resolve=True)


def _release(device: torch.device) -> None:
    torch._dynamo.reset()  # compiled graphs of the previous variant: no recompilation limits
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _attempt(row: dict, fn) -> dict:
    """Run `fn` into `row`; a failure is recorded (the other rows still run)."""
    try:
        row.update(fn())
    except Exception as err:  # a benchmark reports what failed and goes on
        log.exception("bench row %s failed", row.get("name"))
        row["error"] = f"{type(err).__name__}: {err}"
    return row


# ---- sections ----------------------------------------------------------------------------------


def run_train_step(cfg, device, prof) -> list[dict]:
    rows = []
    peak = peak_flops(device)
    for name in cfg.only or cfg.variants:
        variant = _variant(cfg, name)
        model = variant_model(cfg, variant)
        compile = bool(variant.get("compile")) and cfg.compile
        input_size = MODELS[model["name"]].input_size
        flops = flops_per_image(model)["train"]

        def measure(model=model, compile=compile, input_size=input_size, flops=flops):
            batches = loops.synthetic_batches(
                2,
                prof["batch_size"],
                input_size,
                model["num_classes"],
                device,
                prof["channels_last"],
            )
            img_s = loops.raw_loop(
                model,
                batches,
                device,
                prof["precision"],
                prof["channels_last"],
                compile,
                prof["warmup"],
                prof["steps"],
            )
            return {
                "img_per_s": img_s,
                "ms_per_step": 1e3 * prof["batch_size"] / img_s,
                "tflops_per_s": img_s * flops / 1e12,
                "mfu": mfu(img_s, flops, peak),
            }

        row = {
            "name": name,
            "compile": compile,
            "model": variant.get("model") or {},
            "gflops_per_image": flops / 1e9,
        }
        rows.append(_attempt(row, measure))
        log.info("train_step %s: %s", name, row)
        _release(device)
    return rows


def run_loop(cfg, device, prof) -> dict:
    variant = _variant(cfg, cfg.loop.variant)
    model = variant_model(cfg, variant)
    compile = bool(variant.get("compile")) and cfg.compile
    batches = loops.synthetic_batches(
        2,
        prof["batch_size"],
        MODELS[model["name"]].input_size,
        model["num_classes"],
        device,
        prof["channels_last"],
    )
    args = (
        model,
        batches,
        device,
        prof["precision"],
        prof["channels_last"],
        compile,
        prof["warmup"],
        prof["steps"],
    )
    result: dict[str, Any] = {"name": cfg.loop.variant, "compile": compile}
    for key, fn in _loops(cfg, args).items():
        _attempt(result, lambda key=key, fn=fn: {f"{key}_img_per_s": fn()})
        _release(device)
    raw = result.get("raw_img_per_s")
    for key in ("lightning", "lightning_naive"):
        got = result.get(f"{key}_img_per_s")
        if raw and got:
            result[f"{key}_overhead_pct"] = 100.0 * (1.0 - got / raw)
    if cfg.loop.host_probe:
        result["host"] = _attempt({}, lambda: run_host_probe(cfg, device, prof))
    return result


def _loops(cfg, args: tuple) -> dict[str, Callable[[], float]]:
    """The loops to time on the same `args`, by name: raw, Lightning, and the naive baseline."""
    runs = {
        "raw": lambda: loops.raw_loop(*args),
        "lightning": lambda: loops.lightning_loop(*args, progress_bar=cfg.loop.progress_bar),
    }
    if cfg.loop.naive:
        runs["lightning_naive"] = lambda: loops.lightning_loop(
            *args, naive=True, progress_bar=cfg.loop.progress_bar
        )
    return runs


def run_host_probe(cfg, device, prof) -> dict[str, Any]:
    """ms per step of the three loops on a net too small to cost anything: what Lightning and
    the callbacks add on the host. Without host syncs a GPU hides this time as long as it is
    shorter than its own step; with one per step, it adds to every step."""
    probe = cfg.loop.host_probe
    model = OmegaConf.to_container(probe.model, resolve=True)
    batches = loops.synthetic_batches(
        2,
        probe.batch_size,
        MODELS[model["name"]].input_size,
        model["num_classes"],
        device,
        prof["channels_last"],
    )
    args = (
        model,
        batches,
        device,
        prof["precision"],
        prof["channels_last"],
        False,
        probe.warmup,
        probe.steps,
    )
    result = {"model": model, "batch_size": probe.batch_size, "steps": probe.steps}
    for key, fn in _loops(cfg, args).items():
        result[f"{key}_ms_per_step"] = 1e3 * probe.batch_size / fn()
        _release(device)
    return result


def _relu_ms(shape, dtype, device, steps: int) -> float:
    x = (
        torch.randn(shape, device=device, dtype=dtype)
        .contiguous(memory_format=torch.channels_last)
        .requires_grad_(True)
    )
    g = torch.randn_like(x)

    def step(_i):
        torch.relu(x).backward(g)

    return 1e3 / loops._time(step, device, 2, steps)


def run_lrn(cfg, device, prof) -> dict:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    shape = tuple(prof["lrn_shape"])
    result = bench_lrn(
        shape,
        dtype=dtype,
        channels_last=True,
        device=str(device),
        compiled=cfg.compile,
        warmup=2,
        iters=prof["steps"],
    )
    result["relu_ms"] = _relu_ms(shape, dtype, device, prof["steps"])
    result["roofline_ms"] = _roofline_ms(result["bytes_fwd_bwd"], device)
    return result


def _roofline_ms(nbytes: int, device: torch.device) -> float | None:
    """Time to move `nbytes` at the GPU's DRAM bandwidth (from its name), or None."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    bandwidth = next(
        (
            bw
            for key, bw in (
                ("H200", 4.8e12),
                ("H100 PCIe", 2.0e12),
                ("H100", 3.35e12),
                ("A100", 2.0e12),
            )
            if key in name
        ),
        None,
    )
    return None if bandwidth is None else 1e3 * nbytes / bandwidth


def run_input(cfg, device, prof) -> list[dict]:
    spec = cfg.input
    rows = inputs.bench_cifar(
        device,
        prof["cifar_batch_size"],
        prof["cifar_images"],
        list(prof["workers"]),
        hydra.utils.instantiate(spec.cifar_aug),
        batches=None,
    )
    batch = prof["imagenet_batch_size"]
    with tempfile.TemporaryDirectory() as tmp:
        root = (
            Path(spec.imagenet_root)
            if spec.imagenet_root
            else inputs.synthetic_imagenet(
                Path(tmp), prof["imagenet_images"], workers=max(prof["workers"])
            )
        )
        rows += inputs.bench_imagenet(
            root,
            device,
            batch,
            list(prof["workers"]),
            prof["input_batches"],
            hydra.utils.instantiate(spec.imagenet_aug),
            threads=spec.store_threads,
        )
    for row in rows:
        row["batch_size"] = prof["cifar_batch_size"] if row["name"].startswith("cifar") else batch
    return rows


def matmul_gflops(
    device: torch.device, dtype: torch.dtype, n: int = 2048, steps: int = 10
) -> float:
    """GFLOP/s of an n x n matrix product: what this device's BLAS reaches in `dtype`."""
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=gen).to(device, dtype) for _ in range(2))
    return 2 * n**3 / seconds_per_call(lambda _i: a @ b, device, 1, steps) / 1e9


def run_cpu_train(cfg, device, prof) -> dict[str, Any]:
    """The CPU's own workload (32x32 images at the recipes' batch): each model's training step
    on the path training took before (fp32, NCHW, torch's F.local_response_norm) and on the one
    `trainer.precision: auto` picks here (bf16 autocast, channels_last, the band-matrix LRN),
    side by side in this process, with the GFLOP/s reached against this machine's matmul."""
    spec = OmegaConf.to_container(cfg.cpu_train, resolve=True)
    rates = {
        "fp32": matmul_gflops(device, torch.float32),
        "bf16": matmul_gflops(device, torch.bfloat16),
    }
    rows = []
    for model_name, model in spec["models"].items():
        flops = flops_per_image(model)["train"]
        for path_name, path in spec["paths"].items():
            net = {**model, "lrn_impl": path["lrn_impl"]}

            def measure(net=net, path=path, flops=flops):
                batches = loops.synthetic_batches(
                    2, spec["batch_size"], 32, net["num_classes"], device, path["channels_last"]
                )
                img_s = loops.raw_loop(
                    net,
                    batches,
                    device,
                    path["precision"],
                    path["channels_last"],
                    False,
                    spec["warmup"],
                    spec["steps"],
                )
                gflops = img_s * flops / 1e9
                return {
                    "img_per_s": img_s,
                    "gflops_per_s": gflops,
                    "of_matmul": gflops / rates[path["precision"]],
                }

            row = {
                "name": f"{model_name} {path_name}",
                "model": model_name,
                "path": path_name,
                **path,
                "gflops_per_image": flops / 1e9,
            }
            rows.append(_attempt(row, measure))
            log.info("cpu_train %s", row)
    for row in rows:
        base = next(r for r in rows if r["model"] == row["model"])
        if "img_per_s" in row and "img_per_s" in base:
            row["vs_first"] = row["img_per_s"] / base["img_per_s"]
    return {"batch_size": spec["batch_size"], "matmul_gflops": rates, "rows": rows}


# ---- the whole bench -----------------------------------------------------------------------------


def bench(cfg: DictConfig) -> dict[str, Any]:
    """Run the chosen sections; returns (and writes) the JSON-able result."""
    unknown = sorted(set(cfg.sections) - set(SECTIONS))
    if unknown:
        raise ValueError(f"sections {unknown} are unknown; choose from {', '.join(SECTIONS)}")
    device = resolve_device(cfg.device)
    prof = resolve_profile(cfg, device)
    torch.manual_seed(0)
    torch.set_float32_matmul_precision("high")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    result: dict[str, Any] = {
        "device": describe(device.type),
        "torch": torch.__version__,
        "provenance": record.provenance(describe(device.type), prof["precision"]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "profile": prof,
        "peak_tflops": (peak_flops(device) or 0) / 1e12 or None,
        "model": OmegaConf.to_container(cfg.model, resolve=True),
    }
    runners = {
        "train_step": run_train_step,
        "loop": run_loop,
        "lrn": run_lrn,
        "input": run_input,
        "cpu_train": run_cpu_train,
    }
    for section in cfg.sections:
        start = time.perf_counter()
        result[section] = runners[section](cfg, device, prof)
        log.info("%s done in %.1f s", section, time.perf_counter() - start)
    output = Path(cfg.output) if cfg.output else Path(cfg.paths.output_dir) / "bench.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2, default=str))
    result["json_path"] = str(output)
    return result


def _fmt(value, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def format_report(result: dict[str, Any]) -> str:
    """The tables `main` prints."""
    prof = result["profile"]
    lines = [
        f"device: {result['device']}   torch {result['torch']}   profile {prof['name']}: "
        f"batch {prof['batch_size']}, {prof['precision']}, channels_last "
        f"{prof['channels_last']}, {prof['steps']} timed steps"
    ]
    if "train_step" in result:
        lines += [
            "",
            f"{'training step':<24}{'img/s':>10}{'ms/step':>10}{'GFLOP/img':>11}"
            f"{'TFLOP/s':>9}{'MFU':>7}",
        ]
        for r in result["train_step"]:
            if "error" in r:
                lines.append(f"{r['name']:<24} failed: {r['error']}")
                continue
            mfu_text = "n/a" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
            lines.append(
                f"{r['name']:<24}{_fmt(r['img_per_s']):>10}{_fmt(r['ms_per_step'], 1):>10}"
                f"{_fmt(r['gflops_per_image'], 2):>11}{_fmt(r['tflops_per_s'], 1):>9}"
                f"{mfu_text:>7}"
            )
    if "loop" in result:
        lp = result["loop"]
        lines += ["", f"loop ({lp['name']}, same batches)      img/s   vs raw"]
        for key in ("raw", "lightning", "lightning_naive"):
            if f"{key}_img_per_s" in lp:
                over = lp.get(f"{key}_overhead_pct")
                note = "" if over is None else f"{-over:+.1f}%"
                lines.append(f"  {key:<34}{_fmt(lp[f'{key}_img_per_s']):>8}   {note}")
        if "error" in lp:
            lines.append(f"  failed: {lp['error']}")
        host = lp.get("host") or {}
        if "error" in host:
            lines.append(f"  host time per step: failed: {host['error']}")
        elif host:
            raw_ms = host["raw_ms_per_step"]
            parts = [f"raw {raw_ms:.2f}"] + [
                f"{key} {host[f'{key}_ms_per_step']:.2f} "
                f"({host[f'{key}_ms_per_step'] - raw_ms:+.2f})"
                for key in ("lightning", "lightning_naive")
                if f"{key}_ms_per_step" in host
            ]
            lines.append(
                f"  host time per step, ms ({host['model']['name']}, batch "
                f"{host['batch_size']}, {host['steps']} steps): {', '.join(parts)}"
            )
    if "lrn" in result:
        lrn = result["lrn"]
        lines += [
            "",
            f"LRN fwd+bwd {tuple(lrn['shape'])} {lrn['dtype']} channels_last (ms): "
            f"eager {_fmt(lrn['eager_ms'], 2)}, compiled {_fmt(lrn['compiled_ms'], 2)}, "
            f"fused {_fmt(lrn['fused_ms'], 2)}, ReLU {_fmt(lrn['relu_ms'], 2)}, "
            f"memory-bound limit {_fmt(lrn['roofline_ms'], 2)}",
        ]
    if "input" in result:
        lines += ["", f"{'input pipeline':<34}{'batch':>6}{'img/s':>10}"]
        for r in result["input"]:
            text = f"failed: {r['error']}" if "error" in r else f"{_fmt(r['img_per_s']):>10}"
            lines.append(f"{r['name']:<34}{r['batch_size']:>6}{text}")
    if "cpu_train" in result:
        ct = result["cpu_train"]
        rates = ct["matmul_gflops"]
        lines += [
            "",
            f"CPU training step, batch {ct['batch_size']} of 32x32 (matmul 2048: fp32 "
            f"{rates['fp32']:.0f}, bf16 {rates['bf16']:.0f} GFLOP/s)",
            f"{'model / path':<26}{'img/s':>8}{'vs first':>10}{'GFLOP/s':>9}{'of matmul':>11}",
        ]
        for r in ct["rows"]:
            if "error" in r:
                lines.append(f"{r['name']:<26} failed: {r['error']}")
                continue
            lines.append(
                f"{r['name']:<26}{_fmt(r['img_per_s']):>8}{r['vs_first']:>9.2f}x"
                f"{r['gflops_per_s']:>9.0f}{100 * r['of_matmul']:>10.0f}%"
            )
    lines += ["", f"written to {result.get('json_path')}"]
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="bench")
def main(cfg: DictConfig) -> None:
    with one_line_errors():
        print(format_report(bench(cfg)))


if __name__ == "__main__":
    main()
