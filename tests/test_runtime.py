"""The runtime: importing the packages changes nothing in the user's process, loading never goes
online, torchvision stays importable, CPU NMS is correct."""

import json
import os
import subprocess
import sys

import pytest
import torch

from models import runtime


ENTRY_MODULES = ("models", "mammo_interp", "models.pretrain", "models.finetune", "models.reference",
                 "mammo_interp.factor", "mammo_interp.saliency", "mammo_interp.zeroshot", "mammo_interp.embeddings",
                 "mammo_interp.report", "mammo_interp.channel_analysis", "mammo_interp.calibration",
                 "analyses.difficulty_sweep", "analyses.localization_table", "analyses.prompt_ablation")


# Dependencies that set environment variables when imported, whatever imports them: scikit-learn
# (KMP_DUPLICATE_LIB_OK, KMP_INIT_AT_FORK), timm, whose torchvision import reaches torch._dynamo
# (TORCHINDUCTOR_CACHE_DIR), and OpenCV, which pytorch-grad-cam imports (LD_LIBRARY_PATH). They are imported between two snapshots, so the test sees only what the
# project's own modules change, in a fresh process whatever the parent's environment holds. The
# torchvision guard (models.runtime) goes first, as `import models` does it, so that timm imports.
DEPENDENCIES_THAT_SET_ENVIRONMENT = ("sklearn", "timm", "cv2")


def test_importing_every_module_leaves_the_process_as_it_was():
    code = (
        "import importlib, json, os, sys, torch, numpy;"
        "before_guard = dict(os.environ); import models.runtime; guard_env = dict(os.environ) == before_guard;"
        f"import {', '.join(DEPENDENCIES_THAT_SET_ENVIRONMENT)};"
        "env = dict(os.environ); torch.manual_seed(7); rng = torch.get_rng_state(); np = numpy.random.get_state()[1].sum();"
        f"[importlib.import_module(m) for m in {ENTRY_MODULES!r}];"
        "import matplotlib;"
        "print(json.dumps({'env': guard_env and dict(os.environ) == env, 'backend': matplotlib.get_backend(),"
        " 'torch_rng': bool(torch.equal(torch.get_rng_state(), rng)), 'numpy_rng': bool(numpy.random.get_state()[1].sum() == np)}))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**env, "MPLBACKEND": "svg"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "env": True, "backend": "svg", "torch_rng": True, "numpy_rng": True}


def test_the_text_encoder_loads_without_any_network_access():
    code = (
        "import socket\n"
        "def refuse(*args, **kwargs): raise OSError('network access attempted')\n"
        "socket.socket.connect = refuse; socket.create_connection = refuse\n"
        "from models.encoders import TextEncoder, TextEncoderConfig\n"
        "encoder = TextEncoder(TextEncoderConfig())\n"
        "print(encoder(**encoder.tokenize(['a mass'])).shape[-1])\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.strip().splitlines()[-1]) > 0


def test_timm_and_torchvision_import_in_fresh_process():
    code = (
        "import models, timm, torchvision, transformers;"
        "from transformers import BertModel;"
        "m = timm.create_model('tf_efficientnet_lite0', pretrained=False, num_classes=0);"
        "print(m.num_features)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "1280"


def test_guard_is_needed_without_it():
    """Documents why the guard exists: on this torchvision build a bare import fails."""
    if runtime._torchvision_ops_loadable():
        pytest.skip("torchvision's own C ops load here; the guard stays inactive")
    out = subprocess.run(
        [sys.executable, "-c", "import torchvision"], capture_output=True, text=True, timeout=300
    )
    assert out.returncode != 0 and "torchvision::nms" in out.stderr


def test_nms_hand_computed():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 5.0]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    # IoU(3,0) = 50/100 = 0.5; IoU(3,1) = 36/114 = 0.32; IoU(0,1) = 81/119 = 0.68; box 2 disjoint.
    # At 0.5, box 0 survives box 3 (0.5 is not > 0.5) and then suppresses box 1.
    assert runtime.nms_cpu(boxes, scores, 0.5).tolist() == [3, 0, 2]
    # At 0.4, box 3 suppresses box 0, so box 1 is never suppressed.
    assert runtime.nms_cpu(boxes, scores, 0.4).tolist() == [3, 1, 2]
    assert runtime.nms_cpu(boxes[:0], scores[:0], 0.5).numel() == 0


def test_registered_op_matches_reference():
    import torchvision  # noqa: F401  (must import under the guard)

    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(200, 2, generator=gen) * 100
    wh = torch.rand(200, 2, generator=gen) * 30 + 1
    boxes = torch.cat([xy, xy + wh], 1)
    scores = torch.rand(200, generator=gen)
    keep = torch.ops.torchvision.nms(boxes, scores, 0.3)
    assert keep.tolist() == runtime.nms_cpu(boxes, scores, 0.3).tolist()
    # every pair of kept boxes overlaps at most the threshold
    kept = boxes[keep]
    lt = torch.maximum(kept[:, None, :2], kept[None, :, :2])
    rb = torch.minimum(kept[:, None, 2:], kept[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = (kept[:, 2:] - kept[:, :2]).prod(-1)
    iou = inter / (area[:, None] + area[None] - inter)
    iou.fill_diagonal_(0)
    assert iou.max() <= 0.3
