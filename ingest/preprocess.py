"""Image preprocessing: the model directory's own HF image processor, or an explicit resize / centre crop /
mean-std pipeline. Both run on PIL and numpy (transformers' PIL processors): no torchvision needed.

The driver resolves the job's options into a ``PreprocessSpec``; every actor builds the same
``Preprocessor`` from it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from shards.errors import ActlakeError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESAMPLES = ("bicubic", "bilinear", "nearest", "lanczos")
_PROCESSOR_KEYS = ("size", "crop_size", "do_resize", "do_center_crop", "image_mean", "image_std", "resample",
                   "rescale_factor", "do_normalize")


class PreprocessError(ActlakeError, ValueError):
    """Images cannot be turned into one batch of pixels as configured."""


@dataclass(frozen=True, kw_only=True)
class PreprocessSpec:
    """Resolved preprocessing: the model directory's processor, or explicit sizes and normalisation."""

    source: Literal["model", "explicit"]
    model_dir: str | None = None
    resize: int | None = None  #: shorter side in pixels (explicit)
    crop: int | None = None  #: square centre crop in pixels (explicit)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    resample: str = "bicubic"
    expected_size: tuple[int, int] | None = None  #: (W, H) every image must have when nothing resizes them

    @property
    def fixes_size(self) -> bool:
        return self.source == "model" or bool(self.resize or self.crop)


def _model_processor(model_dir: str | None):
    if not model_dir or not (Path(model_dir) / "preprocessor_config.json").is_file():
        return None
    import warnings

    from transformers import AutoImageProcessor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AutoImageProcessor.from_pretrained(model_dir, local_files_only=True)


def _pixels(value, auto: int | None, flag: str) -> int | None:
    value = str(value).strip().lower()
    if value == "auto":
        return auto
    if value in ("none", "0", ""):
        return None
    if not value.isdigit():
        raise PreprocessError(f"--{flag} {value!r}: give a size in pixels, 'none' or 'auto'")
    return int(value)


def resolve_preprocess(model_dir: str | None, mode: str = "auto", resize: str = "auto", crop: str = "auto",
                       mean: list[float] | None = None, std: list[float] | None = None, resample: str = "bicubic",
                       image_size: int | None = None) -> PreprocessSpec:
    """The preprocessing a job's options ask for, checked.

    ``mode``: ``auto`` (the model directory's processor when it has one, else explicit), ``model``
    (require it) or ``explicit``. Explicit: ``resize`` = shorter side in pixels, ``none``, or ``auto``
    (the model's ``image_size``); ``crop`` = square centre crop, ``none``, or ``auto`` (the resize size);
    then /255 and (x - mean) / std.
    """
    if mode not in ("auto", "model", "explicit"):
        raise PreprocessError(f"--preprocess {mode!r}: use auto, model or explicit")
    has_processor = bool(model_dir) and (Path(model_dir) / "preprocessor_config.json").is_file()
    if mode == "model" and not has_processor:
        raise PreprocessError(f"--preprocess model: no preprocessor_config.json in {model_dir!r}")
    if mode != "explicit" and has_processor:
        return PreprocessSpec(source="model", model_dir=str(model_dir))
    size = _pixels(resize, image_size, "resize")
    crop_px = size if crop == "auto" else _pixels(crop, None, "crop")
    mean, std = tuple(mean or IMAGENET_MEAN), tuple(std or IMAGENET_STD)
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise PreprocessError(f"--mean and --std need three values each (std > 0); got {list(mean)}, {list(std)}")
    if resample not in RESAMPLES:
        raise PreprocessError(f"--resample {resample!r}: use one of {RESAMPLES}")
    return PreprocessSpec(source="explicit", model_dir=None, resize=size, crop=crop_px, mean=mean, std=std,
                          resample=resample)


class Preprocessor:
    """Turns PIL images into a (B, 3, H, W) float32 batch as its spec says; ``describe()`` goes to the manifest."""

    def __init__(self, spec: PreprocessSpec) -> None:
        self.spec = spec
        self.processor = _model_processor(spec.model_dir) if spec.source == "model" else self._explicit(spec)

    @staticmethod
    def _explicit(spec: PreprocessSpec):
        if not spec.fixes_size:
            return None  # as is: rescale and normalise only
        from PIL import Image
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        filters = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST,
                   "lanczos": Image.LANCZOS}
        return CLIPImageProcessorPil(
            do_resize=bool(spec.resize), size={"shortest_edge": spec.resize or 1}, resample=filters[spec.resample],
            do_center_crop=bool(spec.crop), crop_size={"height": spec.crop or 1, "width": spec.crop or 1},
            do_rescale=True, rescale_factor=1 / 255, do_normalize=True, image_mean=list(spec.mean),
            image_std=list(spec.std), do_convert_rgb=True)

    def expecting(self, size: tuple[int, int]) -> Preprocessor:
        """This preprocessing, requiring every image to be ``size`` (W, H) when nothing resizes them."""
        if self.spec.fixes_size:
            return self
        return Preprocessor(dataclasses.replace(self.spec, expected_size=tuple(size)))

    def _check_sizes(self, images: list, ids: list[str]) -> None:
        sizes = {im.size for im in images}
        expected = self.spec.expected_size
        if len(sizes) > 1 or (expected and tuple(expected) not in sizes):
            first = tuple(expected) if expected else images[0].size
            odd = [i for i, im in zip(ids, images, strict=True) if im.size != first][:5]
            raise PreprocessError(
                f"images differ in size ({sorted(sizes)[:4]}, e.g. {odd} differ from {first[0]}x{first[1]}) "
                "and no resize is set: give --resize N (and --crop N) so that every image becomes the same size")

    def __call__(self, images: list, ids: list[str]):
        import numpy as np
        import torch

        if not self.spec.fixes_size:
            self._check_sizes(images, ids)
        if self.processor is None:
            arr = np.stack([np.asarray(im, np.float32) / 255.0 for im in images])
            mean, std = np.asarray(self.spec.mean, np.float32), np.asarray(self.spec.std, np.float32)
            return torch.from_numpy(((arr - mean) / std).transpose(0, 3, 1, 2).copy())
        return self.processor(images=images, return_tensors="pt")["pixel_values"].to(torch.float32)

    def describe(self) -> dict:
        if self.spec.source == "model":
            settings = {k: v for k, v in self.processor.to_dict().items() if k in _PROCESSOR_KEYS}
            return {"source": "model", **settings, "processor": type(self.processor).__name__, "resize": True}
        s = self.spec
        return {"source": "explicit", "resize": s.resize, "crop": s.crop, "mean": list(s.mean), "std": list(s.std),
                "resample": s.resample}


def build_preprocessor(model_dir: str | None, mode: str = "auto", resize: str = "auto", crop: str = "auto",
                       mean: list[float] | None = None, std: list[float] | None = None, resample: str = "bicubic",
                       image_size: int | None = None) -> Preprocessor:
    """The preprocessing for a job's options (see ``resolve_preprocess``).

    Example::

        pre = build_preprocessor(None, resize="224", crop="224")
        pixels = pre([pil_image], ["img0"])   # (1, 3, 224, 224)
    """
    return Preprocessor(resolve_preprocess(model_dir, mode, resize, crop, mean, std, resample, image_size))
