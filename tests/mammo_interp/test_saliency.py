"""Per-view saliency: Shapley/leave-one-out algebra, missing views, a toy exam model with a planted
lesion view, and the CLI on a tiny dataset."""

from __future__ import annotations

import functools
import itertools
import math
import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mammo_interp import methods, per_view, saliency, view_evaluation
from mammo_interp.methods import MethodContext
from models.clip import MultiViewClipModel

SIZE = 32


class ToyEncoder(nn.Module):
    """conv -> ReLU (the Grad-CAM layer) -> global max: ``(B, 1, H, W)`` -> ``(B, 4)``."""

    out_dim = 4

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 5, padding=2)
        self.act = nn.ReLU()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.adaptive_max_pool2d(self.act(self.conv(images)), 1).flatten(1)

    def feature_module(self, layer: str | None = None) -> nn.Module:
        return self.act


class ToyClip(nn.Module):
    """The parts of a ClipModel that MultiViewClipModel and the saliency code use."""

    def __init__(self, pooling: str = "mean") -> None:
        super().__init__()
        self.config = SimpleNamespace(view_pooling=pooling)
        self.image_encoder = ToyEncoder()
        self.projection = nn.Linear(4, 3)

    def project_image_features(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projection(features), dim=-1)


def _exams(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noise exams; half get a bright blob in one random view. Returns images, label, blob view."""
    images = 0.3 + 0.1 * torch.rand(n, 4, 1, SIZE, SIZE, generator=generator)
    label = torch.arange(n) % 2
    view = torch.randint(0, 4, (n,), generator=generator)
    for i in range(n):
        if label[i]:
            y, x = torch.randint(4, SIZE - 12, (2,), generator=generator).tolist()
            images[i, view[i], 0, y:y + 8, x:x + 8] = 1.0
    return images, label, view


@pytest.fixture(scope="module")
def toy() -> per_view.ExamTarget:
    """A toy exam model (mean pooling) trained 40 steps so the text direction means "has a blob"."""
    torch.manual_seed(0)
    model = MultiViewClipModel(ToyClip())
    text = F.normalize(torch.tensor([1.0, -0.5, 0.3]), dim=0)
    target = per_view.ExamTarget(model, text)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    generator = torch.Generator().manual_seed(0)
    for _ in range(40):
        images, label, _ = _exams(16, generator)
        mask = torch.ones(16, 4, dtype=torch.bool)
        loss = F.binary_cross_entropy_with_logits(10 * target(images, mask), label.float())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return target.eval()


def test_shapley_is_efficient_and_matches_brute_force_over_permutations(toy):
    images, _, _ = _exams(3, torch.Generator().manual_seed(1))
    mask = torch.tensor([[True] * 4, [True, False, True, True], [False, True, False, False]])
    values = per_view.subset_values(toy, images, mask, empty="zero")
    phi = per_view.shapley_values(values, mask)
    for b in range(3):
        players = [v for v in range(4) if mask[b, v]]

        @functools.cache
        def value(subset: tuple[int, ...]) -> float:  # straight from the model, no cached features
            if not subset:
                return 0.0
            sub = torch.zeros(1, 4, dtype=torch.bool)
            sub[0, list(subset)] = True
            return float(toy(images[b:b + 1], sub).detach())

        brute = dict.fromkeys(players, 0.0)  # mean marginal contribution over all orderings
        orders = list(itertools.permutations(players))
        for order in orders:
            for k, player in enumerate(order):
                brute[player] += (value(tuple(sorted(order[:k + 1]))) - value(tuple(sorted(order[:k])))) / len(orders)
        for player in players:
            assert phi[b, player].item() == pytest.approx(brute[player], abs=1e-5)
        assert phi[b].sum().item() == pytest.approx(value(tuple(players)) - 0.0, abs=1e-5)


def test_blank_empty_value_shifts_shapley_uniformly(toy):
    images, _, _ = _exams(1, torch.Generator().manual_seed(2))
    mask = torch.ones(1, 4, dtype=torch.bool)
    zero = per_view.shapley_values(per_view.subset_values(toy, images, mask, "zero"), mask)
    blank_values = per_view.subset_values(toy, images, mask, "blank")
    blank = per_view.shapley_values(blank_values, mask)
    assert torch.allclose(zero - blank, torch.full_like(zero, blank_values[0, 0].item() / 4), atol=1e-9)
    assert blank.sum().item() == pytest.approx((blank_values[0, -1] - blank_values[0, 0]).item(), abs=1e-9)


def test_leave_one_out_on_hand_built_values():
    # v(S) = sum of per-view weights + 1 if views 0 and 2 are together (an interaction).
    weights = [0.1, 0.2, 0.3, 0.4]
    values = torch.tensor([[sum(w for v, w in enumerate(weights) if s >> v & 1) + (s & 5 == 5)
                            for s in range(16)]], dtype=torch.float64)
    mask = torch.tensor([[True, True, True, False]])
    loo = per_view.leave_one_out(values, mask)
    assert loo[0].tolist() == pytest.approx([1.1, 0.2, 1.3, 0.0])
    phi = per_view.shapley_values(values, mask)
    assert phi[0].tolist() == pytest.approx([0.6, 0.2, 0.8, 0.0])  # the interaction split evenly
    single = per_view.leave_one_out(values, torch.tensor([[False, True, False, False]]))
    assert single[0].tolist() == pytest.approx([0.0, 0.2, 0.0, 0.0])  # falls back to v(empty) = 0


@pytest.mark.parametrize("pooling", ["mean", "attention"])
def test_missing_view_gets_exactly_zero_from_every_method(pooling):
    torch.manual_seed(0)
    target = per_view.ExamTarget(MultiViewClipModel(ToyClip(pooling)).eval(), torch.tensor([1.0, 0.0, 0.0]))
    images = torch.rand(2, 4, 1, SIZE, SIZE)  # the missing slot holds content that must be ignored
    mask = torch.tensor([[True, False, True, True], [False, True, True, False]])
    missing = ~mask
    cams = per_view.view_grad_cam(target, images, mask, target.model.clip.image_encoder.feature_module())
    assert (cams[missing] == 0).all() and cams[mask].abs().sum() > 0
    layer = target.model.clip.image_encoder.feature_module()
    context = MethodContext(ig_steps=3, ig_internal_batch=1, occlusion_window=16, occlusion_stride=16)
    layer_cams = per_view.view_maps(methods.get("layercam"), context, target, images, mask, layer)
    assert (layer_cams[missing] == 0).all() and layer_cams.shape == cams.shape
    ig = per_view.view_maps(methods.get("integrated_gradients"), context, target, images, mask, layer)
    occlusion = per_view.view_maps(methods.get("occlusion"), context, target, images, mask, layer)
    for maps in (ig, occlusion):
        assert (maps[missing] == 0).all() and maps.shape == (2, 4, SIZE, SIZE)
    attributions = per_view.view_attributions(target, images, mask)
    for name in per_view.ATTRIBUTION_NAMES:
        assert (attributions[name][missing] == 0).all(), name
    assert not (attributions["pooling_weight"][mask] == 0).any()
    present = torch.ones(4, dtype=torch.bool)
    present[1] = False
    maps = per_view.normalize_views(torch.rand(4, SIZE, SIZE), torch.ones(4, SIZE, SIZE, dtype=torch.bool), present)
    assert (maps[1] == 0).all() and maps.max() == 1


def test_joint_normalization_keeps_views_comparable():
    maps = torch.stack([torch.full((4, 4), 1.0), torch.full((4, 4), 3.0)])
    maps[0, 0, 0], maps[1, 0, 0] = 0.0, 4.0
    masks = torch.ones(2, 4, 4, dtype=torch.bool)
    joint = per_view.normalize_views(maps, masks, torch.ones(2, dtype=torch.bool))
    assert joint[0].max() == pytest.approx(0.25) and joint[1].max() == 1.0
    separate = per_view.normalize_views(maps, masks, torch.ones(2, dtype=torch.bool), joint=False)
    assert separate[0].max() == separate[1].max() == 1.0


def test_planted_view_gets_the_largest_attribution(toy):
    images, label, view = _exams(24, torch.Generator().manual_seed(3))
    positive = label.bool()
    images, view = images[positive], view[positive]
    mask = torch.ones(len(images), 4, dtype=torch.bool)
    assert toy(images, mask).mean() > toy(_exams(24, torch.Generator().manual_seed(3))[0][~positive],
                                         torch.ones(12, 4, dtype=torch.bool)).mean()
    attributions = per_view.view_attributions(toy, images, mask)
    for name in ("gradient_x_input", "leave_one_out", "shapley"):
        assert (attributions[name].argmax(dim=1) == view).all(), name
    cams = per_view.view_grad_cam(toy, images, mask, toy.model.clip.image_encoder.feature_module())
    peaks = cams.clamp(min=0).flatten(2).amax(dim=2)
    assert (peaks.argmax(dim=1) == view).float().mean() >= 0.9
    # The baseline map is one map for all views: its per-view peaks tie.
    averaged = per_view.view_averaged_cam(cams, mask)
    assert averaged.shape == (len(images), SIZE, SIZE)


def test_layercam_of_a_one_view_exam_is_pytorch_grad_cams_layercam_of_that_image(toy):
    """With one present view, mean pooling is that view's features, so the exam target is an image
    model and the per-view LayerCAM must equal the library's LayerCAM of the image."""
    from pytorch_grad_cam import LayerCAM

    from mammo_interp.heatmaps import normalize_in_mask, upsample

    class ImageTarget(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.clip = toy.model.clip

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.clip.project_image_features(self.clip.image_encoder(images)) @ toy.text_embedding

    images = _exams(6, torch.Generator().manual_seed(5))[0]
    mask = torch.zeros(6, 4, dtype=torch.bool)
    mask[:, 1] = True
    layer = toy.model.clip.image_encoder.feature_module()
    view_maps = per_view.view_maps(methods.get("layercam"), MethodContext(), toy, images, mask, layer)[:, 1]
    whole = torch.ones(6, SIZE, SIZE, dtype=torch.bool)
    library = LayerCAM(model=ImageTarget().eval(), target_layers=[layer])
    expected = library(input_tensor=images[:, 1], targets=[lambda output: output] * 6)
    library.activations_and_grads.release()
    assert torch.allclose(normalize_in_mask(upsample(view_maps, (SIZE, SIZE)), whole),
                          normalize_in_mask(torch.from_numpy(expected), whole), atol=1e-4)


def test_top_index_breaks_ties_at_random_and_skips_nan():
    rng = np.random.default_rng(0)
    assert per_view.top_index(np.array([0.1, math.nan, 0.3, 0.2]), rng) == 2
    picks = {per_view.top_index(np.array([1.0, 1.0, math.nan, 1.0]), rng) for _ in range(50)}
    assert picks == {0, 1, 3}


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MAMMO_INTERP_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_cli_exam_figure_and_evaluation_on_a_tiny_dataset(tiny_masses, tiny_checkpoint, cache, capsys):
    args = ["--data", str(tiny_masses), "--checkpoint", str(tiny_checkpoint), "--image-size", "128", "80",
            "--report-dir", str(cache / "reports"), "--no-progress", "--n-boot", "20",
            "--validation-fraction", "0.2", "--seed", "1", "--max-exams", "3", "--figure-cases", "1"]
    table = pd.read_csv(tiny_masses / "finding_annotations.csv")
    with_mass = table["finding_categories"].str.contains("Mass") & (table["split"] == "test")
    study = str(table.loc[with_mass, "study_id"].iloc[0])
    result = saliency.main(["--exam", study, "--evaluate", "--methods", "gradcam", "layercam", *args])
    exam = result["exam"]
    assert list(exam["views"]["slot"]) == list(per_view.SLOTS)
    printed = capsys.readouterr().out  # scores as a reader reads them, not a dict of long floats
    assert re.search(rf"study {study}: exam score -?\d\.\d{{3}}; breast scores R -?\d\.\d{{3}}, L -?\d\.\d{{3}}\n",
                     printed)
    for suffix in (".png", ".pdf", "_views.csv"):
        assert (cache / "reports" / f"exam_{study}_mass{suffix}").is_file()
    evaluation = result["evaluation"]
    assert evaluation["exams"] > 0
    for name in ("view_identification", "localization", "detection"):
        for suffix in (".md", ".csv", ".tex"):
            assert (cache / "reports" / f"mass_{name}{suffix}").is_file()
    localization = pd.read_csv(cache / "reports" / "mass_localization.csv")
    assert {saliency.AVERAGED, "LayerCAM per view, joint norm"} <= set(localization["method"])
    assert {"IoU-hit@0.25", "AP@0.25", "AP@0.5", "pointing game"} <= set(localization.columns)
    views = pd.read_csv(cache / "reports" / "mass_views.csv")
    assert (views.loc[~views["present"], "Shapley"].isna()).all()
    with pytest.raises(SystemExit):
        saliency.main(args)  # neither --exam nor --evaluate


def test_exam_model_restores_trained_attention_pooling_and_refuses_untrained(tmp_path):
    from models.checkpoints import load_checkpoint, save_checkpoint
    from models.clip import ClipConfig, ClipModel

    clip = ClipModel(ClipConfig(embed_dim=32, view_pooling="attention"))
    trained = MultiViewClipModel(clip)
    for parameter in trained.pooling.parameters():
        torch.nn.init.normal_(parameter)
    path = save_checkpoint(tmp_path / "exam.pt", clip, extra_modules={"multiview": trained.state_dict()})
    restored = per_view.exam_model(load_checkpoint(path), str(path))
    for name, value in trained.pooling.state_dict().items():
        assert torch.equal(restored.pooling.state_dict()[name], value), name
    bare = save_checkpoint(tmp_path / "image_level.pt", clip)
    with pytest.raises(ValueError, match="image_level.pt: attention view pooling without trained pooling weights"):
        per_view.exam_model(load_checkpoint(bare), str(bare))


@pytest.mark.parametrize("method", ["gradcam", "layercam"])
def test_per_view_saliency_class_finds_the_planted_view_and_spot(toy, method):
    """The public class on a user's exam model: maps peak in the blob's view and inside the blob,
    Shapley picks that view, a missing view is 0 everywhere."""
    images, label, view = _exams(16, torch.Generator().manual_seed(4))
    images, view = images[label.bool()], view[label.bool()]
    explain = per_view.PerViewSaliency(toy.model, toy.model.clip.image_encoder.feature_module(), method)
    masks = torch.ones(len(images), 4, SIZE, SIZE, dtype=torch.bool)
    maps = explain.attribute(images, toy.text_embedding, masks=masks)
    assert maps.shape == (len(images), 4, SIZE, SIZE) and maps.min() >= 0 and maps.max() <= 1
    assert (maps.flatten(2).amax(dim=2).argmax(dim=1) == view).float().mean() >= 0.9
    for b in range(len(images)):  # the hottest pixel of the blob's view lies on the blob (8 px, +-4 for the CAM)
        y, x = divmod(int(maps[b, view[b]].argmax()), SIZE)
        blob = (images[b, view[b], 0] == 1.0).nonzero()
        assert (blob - torch.tensor([y, x])).abs().max(dim=1).values.min() <= 4
    assert (explain.views(images, toy.text_embedding)["shapley"].argmax(dim=1) == view).all()
    mask = torch.ones(len(images), 4, dtype=torch.bool)
    mask[:, 2] = False
    partial = explain.attribute(images, toy.text_embedding, mask, masks)
    assert (partial[:, 2] == 0).all() and (explain.views(images, toy.text_embedding, mask)["shapley"][:, 2] == 0).all()
    with pytest.raises(ValueError, match="exams must be"):
        explain.attribute(images[0], toy.text_embedding)
    with pytest.raises(ValueError, match="method"):
        per_view.PerViewSaliency(toy.model, None, method="lime")


def _explanation(views: dict[str, np.ndarray], lesion_view: int) -> view_evaluation.ExamExplanation:
    labels = [np.array([1]) if v == lesion_view else np.zeros(0, int) for v in range(4)]
    return view_evaluation.ExamExplanation("s", np.zeros((4, 8, 8)), np.ones(4, bool), np.ones((4, 8, 8), bool),
                                    [np.zeros((len(b), 4)) for b in labels], labels, list("abcd"), [None] * 4, 0.5,
                                    {}, views, np.array([0.5, 0.5]))


def test_a_methods_tie_breaking_does_not_depend_on_the_other_methods():
    rng = np.random.default_rng(0)
    lesions = rng.integers(0, 4, 60)
    tied = [_explanation({"tied map": np.ones(4)}, int(v)) for v in lesions]
    with_other = [_explanation({"other": rng.random(4), "tied map": np.ones(4)}, int(v)) for v in lesions]
    alone, _ = view_evaluation.identification_results(tied, 1, n_boot=10)
    beside, _ = view_evaluation.identification_results(with_other, 1, n_boot=10)
    assert alone["tied map"]["top view"] == beside["tied map"]["top view"]
    assert 0.1 < alone["tied map"]["top view"].value < 0.45  # random among 4 views: chance, 0.25
