"""--device / --precision: resolution on machines with and without CUDA, and the CLI's one-line errors.

CUDA is simulated by patching ``torch.cuda`` queries (``torch.device("cuda")`` needs no GPU to
exist); nothing here needs a GPU.
"""

from __future__ import annotations

import dataclasses
import importlib

import pytest
import torch

from models import device as dev
from models.reference import ReferenceConfig


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_auto_is_cpu_without_cuda_and_cuda_with_it(no_cuda, monkeypatch):
    assert dev.resolve_device("auto") == torch.device("cpu")
    assert dev.resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert dev.resolve_device("auto") == torch.device("cuda")


def test_cuda_without_a_gpu_names_the_flag(no_cuda):
    with pytest.raises(ValueError, match=r"--device cuda: .*no CUDA GPU.*--device cpu"):
        dev.resolve_device("cuda")


def test_gpu_index_must_exist(two_gpus):
    assert dev.resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match=r"--device cuda:2: this machine has 2 CUDA GPU\(s\), cuda:0 to cuda:1"):
        dev.resolve_device("cuda:2")


@pytest.mark.parametrize("spec", ["gpu", "CUDA", "cuda:", "cuda:x", "mps", ""])
def test_misspelt_devices_are_refused(spec):
    with pytest.raises(ValueError, match="--device"):
        dev.resolve_device(spec)
    with pytest.raises(ValueError, match="--device"):
        dev.check_spelling(spec)


def test_precision_on_cpu():
    cpu = torch.device("cpu")
    assert dev.Precision.resolve("auto", cpu).dtype is None
    assert dev.Precision.resolve("fp32", cpu).dtype is None
    bf16 = dev.Precision.resolve("bf16", cpu)
    assert bf16.dtype == torch.bfloat16 and not bf16.needs_scaler and not bf16.scaler().is_enabled()
    with bf16.autocast():
        assert torch.nn.Linear(4, 4)(torch.ones(2, 4)).dtype == torch.bfloat16
    with dev.Precision.resolve("auto", cpu).autocast():
        assert torch.nn.Linear(4, 4)(torch.ones(2, 4)).dtype == torch.float32
    with pytest.raises(ValueError, match="--precision fp16 needs a CUDA device"):
        dev.Precision.resolve("fp16", cpu)
    with pytest.raises(ValueError, match="--precision: unknown 'half'; valid: auto"):
        dev.Precision.resolve("half", cpu)


@pytest.mark.parametrize("bf16_supported, dtype, scaled", [(True, torch.bfloat16, False), (False, torch.float16, True)])
def test_auto_precision_on_cuda(monkeypatch, bf16_supported, dtype, scaled):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16_supported)
    precision = dev.Precision.resolve("auto", torch.device("cuda"))
    assert precision.dtype == dtype and precision.needs_scaler == scaled


def test_loader_options_pin_memory_for_gpus_only():
    assert dev.loader_options(torch.device("cpu")) == {"num_workers": 0, "pin_memory": False,
                                                       "persistent_workers": False}
    assert dev.loader_options(torch.device("cuda"), workers=4) == {"num_workers": 4, "pin_memory": True,
                                                                   "persistent_workers": True}


def test_module_device_and_cpu_batches_untouched():
    assert dev.module_device(torch.nn.Linear(2, 2)) == torch.device("cpu")
    assert dev.module_device(torch.nn.ReLU()) == torch.device("cpu")
    batch = {"image": torch.ones(1), "image_id": ["a"]}
    assert dev.to_device(batch, torch.device("cpu")) is batch


def test_a_config_saved_on_a_gpu_machine_loads_on_a_cpu_one(no_cuda):
    """Configs check spelling only (a reference checkpoint stores its config); the machine is the CLI's check."""
    config = ReferenceConfig(device="cuda", precision="fp16")
    with pytest.raises(ValueError, match="--device cuda"):
        dev.check_machine(config)
    with pytest.raises(ValueError, match="--device"):
        ReferenceConfig(device="gpu")


ENTRY_POINTS = ["mammo_interp.factor", "mammo_interp.zeroshot", "mammo_interp.embeddings", "mammo_interp.report",
                "mammo_interp.saliency", "models.pretrain", "models.finetune", "models.reference",
                "models.default_model", "analyses.prompt_ablation", "analyses.localization_table",
                "analyses.per_view_saliency", "analyses.recipe_ablation"]


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_every_model_command_refuses_cuda_without_a_gpu_while_parsing(module, no_cuda, capsys):
    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as stop:  # while parsing: before any folder, data or model is touched
        main(["--device", "cuda"])
    assert stop.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "error: --device cuda: torch" in error and "no CUDA GPU" in error


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_every_model_command_takes_device_and_precision(module):
    source = importlib.import_module(module)
    configs = [value for value in vars(source).values()
               if dataclasses.is_dataclass(value) and isinstance(value, type) and value.__module__ == module]
    assert any({"device", "precision"} <= {f.name for f in dataclasses.fields(c)} for c in configs), module


IMAGE_READERS = ["mammo_interp.factor", "mammo_interp.zeroshot", "mammo_interp.embeddings", "mammo_interp.report",
                 "analyses.prompt_ablation", "models.pretrain", "models.finetune", "models.reference"]


@pytest.mark.parametrize("module", IMAGE_READERS)
def test_every_command_that_decodes_images_takes_workers_and_refuses_negative_ones(module, capsys):
    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as stop:
        main(["--workers", "-1"])
    assert stop.value.code == 2
    assert "error: --workers must be 0" in capsys.readouterr().err.strip().splitlines()[-1]


def test_precision_cache_key_is_empty_at_float32():
    cpu = torch.device("cpu")
    assert dev.Precision(cpu, None).cache_key() == {}
    assert dev.Precision(cpu, torch.bfloat16).cache_key() == {"precision": "torch.bfloat16"}


def test_float32_on_a_gpu_turns_tf32_convolutions_off_inside_the_block_only():
    """cuDNN's TF32 default moved the shipped model's maps by up to 4.6 % on an H200 (measured)."""
    conv = torch.backends.cudnn.conv
    assert conv.fp32_precision == "tf32"  # PyTorch's default, which the block must restore
    with dev.Precision(torch.device("cuda"), None).autocast():
        assert conv.fp32_precision == "ieee"
    assert conv.fp32_precision == "tf32"
    with dev.Precision(torch.device("cpu"), None).autocast():
        assert conv.fp32_precision == "tf32"
