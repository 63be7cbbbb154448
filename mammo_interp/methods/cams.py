"""Class activation maps at a feature layer, of any score a target module gives.

Grad-CAM (captum ``LayerGradCam``: ReLU of the channel sum weighted by mean gradients), LayerCAM
(Jiang et al., TIP 2021: ``ReLU(sum_c ReLU(dS/dA_c) * A_c)``, gradients taken down to the layer
only), Grad-CAM++ (pytorch-grad-cam) and gScoreCAM (Chen et al., ACCV 2022: Score-CAM over the
channels of largest gradient, the CAM designed for CLIP; pytorch-grad-cam's plumbing, our channel
scoring; :mod:`.gscorecam`). Grad-CAM and LayerCAM give one map per row the layer sees, so they also run per view
of an exam; the pytorch-grad-cam methods give one map per image at the input size.
The supervised reference is Grad-CAM of the reference classifier's finding logit at its own layer.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from mammo_interp.methods import Method, MethodContext


def grad_cam_maps(target: nn.Module, layer: nn.Module, images: torch.Tensor, *extra: torch.Tensor,
                  relu: bool = True) -> torch.Tensor:
    """Grad-CAM ``(rows, h, w)`` at ``layer`` of ``target(images, *extra)``, before the ReLU
    with ``relu=False`` (per-view saliency sums views before it)."""
    from captum.attr import LayerGradCam  # captum imports pyplot: on first use, not with the registry

    method = LayerGradCam(target, layer)
    return method.attribute(images.detach().requires_grad_(True), additional_forward_args=extra or None,
                            relu_attributions=relu)[:, 0]


def layer_activations_and_gradients(target: nn.Module, layer: nn.Module, *inputs: torch.Tensor
                                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """``layer``'s output and the gradient of ``target(*inputs).sum()`` with respect to it, both
    ``(N, C, h, w)``. The gradient is taken down to the layer only (``torch.autograd.grad``), not
    through the layers below it or into the weights, which a full ``backward()`` would also do."""
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda module, args, output: seen.append(output))
    try:
        with torch.enable_grad():
            score = target(*inputs).sum()
            gradients, = torch.autograd.grad(score, seen[-1])
    finally:
        handle.remove()
    return seen[-1].detach(), gradients.detach()


def layer_cam_maps(target: nn.Module, layer: nn.Module, *inputs: torch.Tensor) -> torch.Tensor:
    """LayerCAM at ``layer``'s resolution, not normalized, ``(rows, h, w)``. Equal to
    pytorch-grad-cam's ``LayerCAM`` (tested), at the cost of one forward and a backward down to
    ``layer`` where pytorch-grad-cam backpropagates through the whole network."""
    activations, gradients = layer_activations_and_gradients(target, layer, *inputs)
    return (gradients.clamp(min=0) * activations).sum(dim=1).clamp(min=0).float()


def _score(output: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's per-image target: the wrapped model's output already is the score."""
    return output


def library_cam_maps(cam: Callable[..., nn.Module], target: nn.Module, layer: nn.Module, images: torch.Tensor,
                     **options: object) -> torch.Tensor:
    """A pytorch-grad-cam CAM of ``target``'s ``(B,)`` output at ``layer``: ``(B, H, W)`` at the input
    size (ReLU of the channel-weighted activations, upsampled and scaled to [0, 1] per image)."""
    with torch.enable_grad():  # gradients even where the caller turned them off
        method = cam(model=target, target_layers=[layer], **options)
        try:  # not its context manager, which swallows an IndexError
            return torch.from_numpy(method(input_tensor=images, targets=[_score] * len(images)))
        finally:
            method.activations_and_grads.release()


def _grad_cam(context: MethodContext, target: nn.Module, layer: nn.Module, *inputs: torch.Tensor) -> torch.Tensor:
    return grad_cam_maps(target, layer, *inputs)


def _layer_cam(context: MethodContext, target: nn.Module, layer: nn.Module, *inputs: torch.Tensor) -> torch.Tensor:
    return layer_cam_maps(target, layer, *inputs)


def _grad_cam_plus_plus(context: MethodContext, target: nn.Module, layer: nn.Module,
                        images: torch.Tensor) -> torch.Tensor:
    from pytorch_grad_cam import GradCAMPlusPlus  # imports pyplot: on first use

    return library_cam_maps(GradCAMPlusPlus, target, layer, images)


def _gscorecam(context: MethodContext, target: nn.Module, layer: nn.Module, images: torch.Tensor) -> torch.Tensor:
    from mammo_interp.methods.gscorecam import GScoreCAM  # pytorch-grad-cam imports pyplot: on first use

    return library_cam_maps(GScoreCAM, target, layer, images, top_k=context.cam_channels,
                            logit_scale=context.logit_scale)


GRADCAM = (Method("gradcam", "Grad-CAM", "CAM", "Grad-CAM at the feature layer (captum)",
                          maps=_grad_cam, per_view=True))
GRADCAM_PLUS_PLUS = (Method("gradcam_plus_plus", "Grad-CAM++", "CAM", "Grad-CAM++ (pytorch-grad-cam)",
                                    maps=_grad_cam_plus_plus, resolution="input"))
LAYERCAM = (Method("layercam", "LayerCAM", "CAM", "LayerCAM: positive gradients times activations, "
                           "gradients down to the layer only", maps=_layer_cam, per_view=True))
GSCORECAM = (Method("gscorecam", "gScoreCAM", "CAM", "Score-CAM over the --cam-channels channels of largest "
                            "gradient (one forward each per image)", maps=_gscorecam, resolution="input"))
SUPERVISED_REFERENCE = (Method(
    "supervised_reference", "supervised reference (Grad-CAM)", "reference", "Grad-CAM of a supervised "
    "classifier's finding logit at its own layer: a ceiling, not a method of the CLIP model", maps=_grad_cam,
    explains="reference", needs=frozenset({"reference"}), timed=False))

METHODS = (GRADCAM, GRADCAM_PLUS_PLUS, LAYERCAM, GSCORECAM, SUPERVISED_REFERENCE)  # registered in this order
