"""Image preprocessing: the model directory's own HF image processor, or an explicit resize / centre crop /
mean-std pipeline. Both run on PIL and numpy (transformers' PIL processors): no torchvision needed."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from shards.errors import ActlakeError

log = logging.getLogger("actlake.ingest")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PreprocessError(ActlakeError, ValueError):
    """Images cannot be turned into one batch of pixels as configured."""


@dataclass
class Preprocessor:
    """Turns PIL images into a (B, 3, H, W) float32 batch; ``describe()`` goes to the manifest."""

    processor: object | None  #: an HF image processor, or None for "as is" (rescale and normalise only)
    source: str  #: "model" (the model directory's processor) or "explicit"
    settings: dict

    def __call__(self, images: list, ids: list[str]):
        import numpy as np
        import torch

        if not self.settings.get("resize") and not self.settings.get("crop"):
            sizes = {im.size for im in images}
            expected = self.settings.get("expected_size")
            if len(sizes) > 1 or (expected and tuple(expected) not in sizes):
                first = tuple(expected) if expected else images[0].size
                odd = [i for i, im in zip(ids, images, strict=True) if im.size != first][:5]
                raise PreprocessError(
                    f"images differ in size ({sorted(sizes)[:4]}, e.g. {odd} differ from {first[0]}x{first[1]}) "
                    "and no resize is set: give --resize N (and --crop N) so that every image becomes the same size")
        if self.processor is None:
            mean = np.asarray(self.settings["mean"], np.float32)
            std = np.asarray(self.settings["std"], np.float32)
            arr = np.stack([np.asarray(im, np.float32) / 255.0 for im in images])
            return torch.from_numpy(((arr - mean) / std).transpose(0, 3, 1, 2).copy())
        out = self.processor(images=images, return_tensors="pt")["pixel_values"]
        return out.to(torch.float32)

    def describe(self) -> dict:
        return {"source": self.source, **{k: v for k, v in self.settings.items() if k != "expected_size"}}


def _model_processor(model_path: str | None):
    if not model_path or not (Path(model_path) / "preprocessor_config.json").is_file():
        return None
    import warnings

    from transformers import AutoImageProcessor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AutoImageProcessor.from_pretrained(model_path)


def build_preprocessor(model_path: str | None, mode: str = "auto", resize: str = "auto", crop: str = "auto",
                       mean: list[float] | None = None, std: list[float] | None = None,
                       resample: str = "bicubic", image_size: int | None = None) -> Preprocessor:
    """The preprocessing for a job.

    ``mode``: ``auto`` (the model directory's processor when it has one, else explicit),
    ``model`` (require it) or ``explicit``. Explicit: ``resize`` = shorter side in pixels,
    ``none``, or ``auto`` (the model's ``image_size`` when its config has one); ``crop`` =
    square centre crop in pixels, ``none``, or ``auto`` (the resize size); then /255 and
    (x - mean) / std.

    Example::

        pre = build_preprocessor(None, resize="224", crop="224")
        pixels = pre([pil_image], ["img0"])   # (1, 3, 224, 224)
    """
    if mode not in ("auto", "model", "explicit"):
        raise PreprocessError(f"--preprocess {mode!r}: use auto, model or explicit")
    if mode in ("auto", "model"):
        proc = _model_processor(model_path)
        if proc is not None:
            settings = {k: v for k, v in proc.to_dict().items()
                        if k in ("size", "crop_size", "do_resize", "do_center_crop", "image_mean", "image_std",
                                 "resample", "rescale_factor", "do_normalize")}
            settings["processor"] = type(proc).__name__
            settings["resize"] = True  # the processor fixes the size
            return Preprocessor(proc, "model", settings)
        if mode == "model":
            raise PreprocessError(f"--preprocess model: no preprocessor_config.json in {model_path!r}")
    size = _pixels(resize, image_size, "resize")
    crop_px = size if crop == "auto" else _pixels(crop, None, "crop")
    mean = list(mean or IMAGENET_MEAN)
    std = list(std or IMAGENET_STD)
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise PreprocessError(f"--mean and --std need three values each (std > 0); got {mean}, {std}")
    settings = {"resize": size, "crop": crop_px, "mean": mean, "std": std, "resample": resample}
    if not size and not crop_px:
        return Preprocessor(None, "explicit", settings)
    from PIL import Image
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    resamples = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST,
                 "lanczos": Image.LANCZOS}
    if resample not in resamples:
        raise PreprocessError(f"--resample {resample!r}: use one of {sorted(resamples)}")
    proc = CLIPImageProcessorPil(
        do_resize=bool(size), size={"shortest_edge": size or 1}, resample=resamples[resample],
        do_center_crop=bool(crop_px), crop_size={"height": crop_px or 1, "width": crop_px or 1},
        do_rescale=True, rescale_factor=1 / 255, do_normalize=True, image_mean=mean, image_std=std,
        do_convert_rgb=True)
    return Preprocessor(proc, "explicit", settings)


def _pixels(value, auto: int | None, flag: str) -> int | None:
    value = str(value).strip().lower()
    if value == "auto":
        return auto
    if value in ("none", "0", ""):
        return None
    if not value.isdigit():
        raise PreprocessError(f"--{flag} {value!r}: give a size in pixels, 'none' or 'auto'")
    return int(value)
