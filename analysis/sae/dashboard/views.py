"""What a latent page shows of an example, by kind of dataset (one class each, chosen by ``VIEWS``): a text row
is a token shown in its context, an image row a stimulus thumbnail (a patch row: the thumbnail with the latent's
activation over the patch grid as a heat map). Each view picks the rows a latent shows, names the rows whose
activation it needs, and fills the latent's page; the thumbnails come through ``ImageLookup`` (no I/O here)."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from analysis.sae.dashboard.collect import LatentTable
from analysis.sae.dashboard.site import Context, LatentPage, Stimulus
from shards.columns import CONTEXT_ID

#: a stimulus id -> its image (PIL, RGB), from the image source the dataset was extracted from
ImageLookup = Callable[[str], object]
THUMB = 128  #: thumbnail side in pixels
EMPTY = "(empty)"  #: what a quantile band holding no active value is labelled with
NONE = "—"  #: the index' promoted tokens where the dataset stores no unembedding


def thumbnail_jpeg(img, side: int = THUMB) -> bytes:
    """The image centre-cropped to a square and resized to ``side``: what the usual resize-then-centre-crop
    preprocessing shows the model, so a patch grid laid over it lines up."""
    w, h = img.size
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    buf = io.BytesIO()
    img.crop(box).resize((side, side)).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


@dataclass
class TextView:
    """A token row shown with up to ``context`` tokens on each side: the window stops where its example ends, and
    for a packed dataset (``extract --pack``: ``context_id`` per row) where its packed context ends, so that it
    shows only tokens of the row's own example that the model ran with it."""

    example_id: np.ndarray
    token_id: np.ndarray
    tokens: Callable[[int], str]
    context: int
    context_id: np.ndarray | None = None  #: the packed context of each row (None: not packed)

    collect_factor = 1  #: top rows kept per latent, per example shown
    terms_label = "tokens (promoted | top)"

    def _together(self, q: int, r: int) -> bool:
        return bool(self.example_id[q] == self.example_id[r]
                    and (self.context_id is None or self.context_id[q] == self.context_id[r]))

    def span(self, r: int) -> list[int]:
        """The rows shown around row ``r``: a contiguous run (an example's rows elsewhere are never joined)."""
        lo, hi = r, r
        while lo > max(r - self.context, 0) and self._together(lo - 1, r):
            lo -= 1
        while hi < min(r + self.context, len(self.example_id) - 1) and self._together(hi + 1, r):
            hi += 1
        return list(range(lo, hi + 1))

    def pick_top(self, rows: np.ndarray, top: int) -> list[int]:
        return [int(r) for r in rows if r >= 0][:top]

    def fill(self, page: LatentPage, picks: list[tuple[str, int]], values: dict, n_top: int) -> None:
        ctxs = []
        for label, r in ordered_bands(picks, n_top, values, page.latent):
            if r < 0:
                ctxs.append(Context(f"{label} {EMPTY}", 0.0, [], [], -1))
                continue
            span = self.span(r)
            ctxs.append(Context(label, values[(r, page.latent)], [self.tokens(int(self.token_id[q])) for q in span],
                                [values[(q, page.latent)] for q in span], span.index(r)))
        page.top, page.quantiles = ctxs[:n_top], ctxs[n_top:]

    def terms(self, page: LatentPage) -> str:
        """What the index's search matches besides the id: promoted tokens | top tokens (a dash where the dataset
        stores no unembedding to promote any)."""
        promoted = " ".join(t for t, _ in page.promoted[:5]) or NONE
        return promoted + " | " + " ".join(sorted({c.tokens[c.own] for c in page.top if c.tokens})[:8])

    def write(self, put: Callable[[str, bytes], None]) -> int:
        return 0


def with_packing(view: TextView, ds) -> TextView:
    """``view`` with the packed contexts of ``ds`` (rows of ``extract --pack`` carry ``context_id``), so that its
    windows stop at their boundaries too; ``view`` itself when it has them or ``ds`` is not packed."""
    import dataclasses

    import pyarrow.compute as pc

    if view.context_id is not None or CONTEXT_ID not in ds.columns:
        return view
    ctx = pc.fill_null(ds.metadata_table([CONTEXT_ID]).column(CONTEXT_ID), -1).to_numpy()
    return dataclasses.replace(view, context_id=ctx)


@dataclass
class ImageView:
    """An image row (pooled) or a patch row: shown as its stimulus' thumbnail, patches as a heat map."""

    example_id: np.ndarray
    stimulus_id: np.ndarray
    images: ImageLookup
    patch_row: np.ndarray | None = None  #: per row, -1 for CLS/register tokens; None: a row per image
    patch_col: np.ndarray | None = None
    shown: set[int] = field(default_factory=set)  #: examples whose thumbnail the pages use
    terms_label = "top stimuli"

    @property
    def collect_factor(self) -> int:
        return 1 if self.patch_row is None else 8  # several top patches fall in one image

    def __post_init__(self) -> None:
        starts = np.flatnonzero(np.r_[True, self.example_id[1:] != self.example_id[:-1]])
        self._first = dict(zip(self.example_id[starts].tolist(), starts.tolist(), strict=True))
        self._stop = dict(zip(self.example_id[starts].tolist(), [*starts[1:].tolist(), len(self.example_id)],
                              strict=True))

    def span(self, r: int) -> list[int]:
        if self.patch_row is None:
            return [r]
        e = int(self.example_id[r])
        return [q for q in range(self._first[e], self._stop[e]) if self.patch_row[q] >= 0]

    def pick_top(self, rows: np.ndarray, top: int) -> list[int]:
        """The top rows, one per image (its most active patch)."""
        seen, out = set(), []
        for r in (int(r) for r in rows if r >= 0):
            if int(self.example_id[r]) not in seen:
                seen.add(int(self.example_id[r]))
                out.append(r)
        return out[:top]

    def _grid(self, r: int, latent: int, values: dict) -> list[list[float]] | None:
        if self.patch_row is None:
            return None
        span = self.span(r)
        grid = np.zeros((int(self.patch_row[span].max()) + 1, int(self.patch_col[span].max()) + 1))
        for q in span:
            grid[self.patch_row[q], self.patch_col[q]] = values[(q, latent)]
        return grid.tolist()

    def fill(self, page: LatentPage, picks: list[tuple[str, int]], values: dict, n_top: int) -> None:
        out = []
        for label, r in ordered_bands(picks, n_top, values, page.latent):
            if r < 0:
                out.append(Stimulus(f"{label} {EMPTY}", 0.0, "", -1))
                continue
            e = int(self.example_id[r])
            self.shown.add(e)
            out.append(Stimulus(label, values[(r, page.latent)], str(self.stimulus_id[r]), e,
                                self._grid(r, page.latent, values)))
        page.stimuli, page.stimulus_quantiles = out[:n_top], out[n_top:]

    def terms(self, page: LatentPage) -> str:
        return " ".join(s.stimulus_id for s in page.stimuli[:8])

    def write(self, put: Callable[[str, bytes], None]) -> int:
        """``thumbs/E.jpg`` for every example a page shows (one file each, shared by all pages)."""
        size = 0
        for e in sorted(self.shown):
            data = thumbnail_jpeg(self.images(str(self.stimulus_id[self._first[e]])))
            put(f"thumbs/{e}.jpg", data)
            size += len(data)
        return size


def picks_for(view, table: LatentTable, latent: int, top: int) -> list[tuple[str, int]]:
    """The rows a latent's page shows: its top rows ("#1"...), then one row per activation quantile band (-1 for
    a band holding no value)."""
    return ([(f"#{i + 1}", r) for i, r in enumerate(view.pick_top(table.top_rows[latent], top))]
            + list(table.quantile_rows(latent)))


def ordered_bands(picks: list[tuple[str, int]], n_top: int, values: dict, latent: int) -> list[tuple[str, int]]:
    """``picks`` with the quantile bands' rows in rising activation: bands whose rows came from one histogram bin
    (``LatentTable.quantile_rows``) got them in no order; rows of different bins are in order already."""
    bands = picks[n_top:]
    rows = iter(sorted((r for _, r in bands if r >= 0), key=lambda r: values[(r, latent)]))
    return picks[:n_top] + [(label, r if r < 0 else next(rows)) for label, r in bands]


def pair_rows(view, picks: dict[int, list[tuple[str, int]]]) -> tuple[np.ndarray, np.ndarray]:
    """(row, latent) pairs whose activation the pages show, sorted by row (for one ordered pass)."""
    rows, lats = [], []
    for lat, chosen in picks.items():
        for _label, r in chosen:
            if r < 0:  # an empty band: nothing to read
                continue
            span = [r, *view.span(r)]  # the row itself too: a CLS row is not in its image's patch grid
            rows += span
            lats += [lat] * len(span)
    rows_a, lats_a = np.asarray(rows, dtype=np.int64), np.asarray(lats, dtype=np.int64)
    order = np.argsort(rows_a, kind="stable")
    return rows_a[order], lats_a[order]
