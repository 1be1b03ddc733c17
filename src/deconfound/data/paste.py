"""do(context) as data: a training person cut out with its mask and pasted onto another scene.

The ``paste`` training method shows the model each training person, where it stands, in front
of a background drawn at random, so that the label no longer tells anything about the scene.
The person is cut out with the image's person mask (the ``masks`` sidecar files,
:mod:`deconfound.data.sidecars`): with an instance mask (``deconfound annotate``'s) the
sample's own person only, matched to its box (the whole actor for a face box, as on CAER-S);
with a union mask the mask inside the box (or, for a face box, the mask's regions that reach
into it); see :mod:`deconfound.data.silhouettes`. The backgrounds (see
:meth:`PersonPaste.from_reader`) are by default the other training images, each with all its
people hidden with the mask fill (each grown by a share of its own height); or another split of
the data set, hidden alike; or person-free pictures: the synthetic set's ``scenes``, or any
folder of images.

Everything random comes from the ``numpy.random.Generator`` the caller passes: the result is a
pure function of (sample, generator state).
"""

from __future__ import annotations

import logging
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from PIL import Image, ImageFilter

from deconfound.data import sidecars
from deconfound.data.cut_quality import CUT_QUALITIES, CutQuality, degrade
from deconfound.data.sample import Box, DatasetInfo, ImageRef, Sample
from deconfound.data.silhouettes import GROWTH, grow, own_person
from deconfound.data.synthetic import SyntheticReader, SyntheticScenesReader
from deconfound.data.views import FILLS, Fill, load_image
from deconfound.errors import ConfigError, DataError

log = logging.getLogger(__name__)

MissingMask = Literal["error", "box"]
MISSING_MASKS: tuple[str, ...] = typing.get_args(MissingMask)

SCENES = "scenes"
"""The ``backgrounds`` name of the synthetic set's person-free pictures (its ``train`` part)."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
"""The files a folder of backgrounds is searched for (in any case, in every subfolder)."""

CACHE_BYTES = 512 * 2**20
"""How much decoded pictures and masks a :class:`PersonPaste` keeps in memory, per process."""


def composite(image: Image.Image, mask: np.ndarray, background: Image.Image) -> Image.Image:
    """An RGB picture of ``image``'s size: ``image``'s pixels where ``mask`` (a bool (H, W)
    array) is True, ``background``'s (resized bilinearly to the image's size) elsewhere."""
    picture = np.asarray(image.convert("RGB"))
    if mask.shape != picture.shape[:2]:
        raise ValueError(f"a mask of shape {mask.shape} for a {image.width}x{image.height} image")
    scene = background.convert("RGB")
    if scene.size != image.size:
        scene = scene.resize(image.size, Image.BILINEAR)
    return Image.fromarray(np.where(mask[..., None], picture, np.asarray(scene)))


def hide(picture: np.ndarray, mask: np.ndarray, fill: Fill) -> np.ndarray:
    """A copy of the (H, W, 3) uint8 ``picture`` with the pixels of the bool ``mask`` hidden
    as :func:`deconfound.data.views.mask_box` hides a box: black, the picture's mean colour, or
    a heavily blurred copy (radius half the longer side of the mask's bounding box)."""
    if fill not in FILLS:
        raise DataError(f"unknown mask fill '{fill}'; choose {', '.join(FILLS)}")
    out = picture.copy()
    if not mask.any():
        return out
    if fill == "zeros":
        out[mask] = 0
    elif fill == "mean":
        out[mask] = picture.reshape(-1, 3).mean(axis=0).astype(np.uint8)
    else:
        ys, xs = np.nonzero(mask)
        radius = float(max(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)) / 2
        blurred = Image.fromarray(picture).filter(ImageFilter.GaussianBlur(radius))
        out[mask] = np.asarray(blurred)[mask]
    return out


def box_mask(box: Box, shape: tuple[int, int]) -> np.ndarray:
    """A bool array of ``shape`` (H, W), True inside ``box`` (clipped to the array)."""
    h, w = shape
    b = box.clip((w, h))
    out = np.zeros(shape, dtype=bool)
    out[b.y1 : b.y2, b.x1 : b.x2] = True
    return out


class _Reader(Protocol):
    info: DatasetInfo
    root: Path

    def samples(self, split: str) -> list[Sample]: ...


class _Pool:
    """Pictures of samples under ``root``, with their mask files (None: none found; looked for
    only for samples with a box, and for all of them with ``people``); each picture is decoded
    on first use and kept, with its people's label map, as numpy arrays while the cache has
    room (per process; a pickled pool, as sent to DataLoader workers, starts empty)."""

    def __init__(
        self, samples: Sequence[Sample], root: Path, people: bool, cache_bytes: int, fix: str
    ) -> None:
        self.samples, self.root, self.cache_bytes, self.fix = list(samples), root, cache_bytes, fix
        self.masks = [
            self._locate(s.image) if people or s.hidden is not None else None for s in self.samples
        ]
        self._cache: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
        self._used = 0

    def _locate(self, image: ImageRef) -> Path | None:
        try:
            return sidecars.locate("masks", image, self.root)
        except DataError:
            return None

    def mask_path(self, k: int) -> Path:
        """Where sample ``k``'s mask file is, or would be."""
        image = self.samples[k].image
        return sidecars.candidates("masks", self.root, sidecars.stem(image, self.root))[0]

    def __len__(self) -> int:
        return len(self.samples)

    def get(self, k: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Sample ``k``'s (H, W, 3) uint8 picture and uint8 (H, W) label map of its people
        (:func:`~deconfound.data.sidecars.read_people`; None: no mask file)."""
        if k in self._cache:
            return self._cache[k]
        picture = np.asarray(load_image(self.samples[k].image, self.fix))
        path = self.masks[k]
        mask = None if path is None else sidecars.read_people(path, picture.shape[1::-1])
        if self.room(picture.nbytes + picture.shape[0] * picture.shape[1]):
            self._cache[k] = picture, mask
        return picture, mask

    def room(self, cost: int) -> bool:
        """Whether ``cost`` more bytes fit in the cache (they are then counted as kept)."""
        if self._used + cost > self.cache_bytes:
            return False
        self._used += cost
        return True

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cache": {}, "_used": 0}


class PersonPaste:
    """Training people pasted onto random backgrounds: ``paste(i, rng)`` is sample ``i``'s
    picture with everything but its person replaced by a background drawn with ``rng``.

    The person (the cut) is the sample's own person in its mask file, matched to its
    :attr:`~Sample.hidden` box (:func:`~deconfound.data.silhouettes.own_person`; the whole
    mask for a sample without boxes); where no person of the mask fits the box, the box. The
    person stays where it stands; the background is resized to the picture's size.

    Args:
        samples: the training samples.
        root: the data set's root, under which ``masks/`` holds the mask files.
        backgrounds: None: the other samples' pictures (never sample ``i``'s own picture),
            each with its people (grown by ``growth`` of their height) hidden with ``fill``;
            otherwise the background pictures: samples, whose people are hidden alike (a
            sample without a box is a person-free picture, used as it is), or image files and
            array pictures, person-free.
        fill: how a background's people are hidden (zeros, mean, blur; as ``data.mask_fill``).
        missing_mask: a sample (or background) with people but no mask file is an error
            (``error``, raised here), or (``box``) cut out, or hidden, by its whole person box,
            with one warning for all (the cut then keeps the background inside the box).
        growth: the share of each person's height by which a background's people are grown
            before they are hidden (:func:`~deconfound.data.silhouettes.grow`).
        cut: the cut as a worse segmenter would give it (:mod:`deconfound.data.cut_quality`:
            ``exact``, ``eroded``, ``dilated``, ``ellipse``, ``keypoints``, ``box``), to measure
            how much ``paste`` owes to exact masks; ``keypoints`` reads the pose files.
        cut_share: the share of the person's height by which ``cut`` shrinks, grows or
            widens the keypoints' hull.
        cache_bytes: how much decoded pictures and masks to keep in memory, per process.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        root: str | Path,
        backgrounds: Sequence[Sample | ImageRef] | None = None,
        fill: Fill = "zeros",
        missing_mask: MissingMask = "error",
        *,
        growth: float = GROWTH,
        cut: CutQuality = "exact",
        cut_share: float = 0.05,
        cache_bytes: int = CACHE_BYTES,
    ) -> None:
        if cut not in CUT_QUALITIES:
            raise ConfigError(f"unknown cut '{cut}'; choose {', '.join(CUT_QUALITIES)}")
        if not 0 <= cut_share < 1:
            raise ConfigError(f"cut_share must lie in [0, 1), got {cut_share}")
        self.quality, self.quality_share = cut, cut_share
        if fill not in FILLS:
            raise ConfigError(f"unknown mask fill '{fill}'; choose {', '.join(FILLS)}")
        if missing_mask not in MISSING_MASKS:
            raise ConfigError(
                f"unknown missing_mask '{missing_mask}'; choose {', '.join(MISSING_MASKS)}"
            )
        self.root, self.fill, self.missing_mask = Path(root), fill, missing_mask
        self.growth = growth
        fix = "restore the file or remove its annotation"
        self.people = _Pool(samples, self.root, True, cache_bytes, fix)
        if not self.people.samples:
            raise DataError(f"{self.root}: no samples to paste")
        if backgrounds is None:
            self.scenes = self.people
        else:
            pictures = [
                b if isinstance(b, Sample) else Sample(b, None, None, ()) for b in backgrounds
            ]
            if not pictures:
                raise DataError(f"{self.root}: no background pictures to paste the people onto")
            fix = "remove it from the backgrounds"
            self.scenes = _Pool(pictures, self.root, False, cache_bytes, fix)
        self._hidden: dict[int, np.ndarray] = {}
        self._warned = False
        self._order, self._groups, self._group_of = _image_groups(self.people.samples)
        if backgrounds is None and len(self._groups) < 2:
            raise DataError(
                f"{self.root}: pasting onto the other training images needs at least two "
                "images; give other backgrounds"
            )
        self._check_masks()

    @classmethod
    def from_reader(
        cls,
        reader: _Reader,
        split: str,
        backgrounds: str | None = None,
        fill: Fill = "zeros",
        missing_mask: MissingMask = "error",
        **kwargs: Any,
    ) -> PersonPaste:
        """The paste of ``reader``'s ``split`` samples onto ``backgrounds``: None (or
        ``split``): the split's own other pictures, people hidden; another split's name: that
        split's pictures, people hidden; ``scenes`` (a synthetic set): its person-free scene
        pictures; otherwise a folder of person-free images (:data:`IMAGE_SUFFIXES`, searched
        recursively). ``kwargs`` go to the constructor."""
        pictures = background_pictures(reader, split, backgrounds)
        return cls(reader.samples(split), reader.root, pictures, fill, missing_mask, **kwargs)

    def __len__(self) -> int:
        return len(self.people)

    def __call__(self, i: int, rng: np.random.Generator) -> Image.Image:
        """Sample ``i``'s picture (RGB, its size) with its person pasted, where it stands, onto
        a background drawn with ``rng`` (one integer drawn)."""
        return self.onto(i, self._draw(i, rng))

    def onto(self, i: int, k: int) -> Image.Image:
        """Sample ``i``'s picture with its person pasted, where it stands, onto background
        ``k`` (with the other samples as backgrounds, ``k = i`` is its own picture with its
        people hidden: the person back on its own scene)."""
        picture, mask = self.people.get(i)
        cut = self._cut(i, picture.shape[:2], mask)
        scene = self.background(k)
        if scene.shape != picture.shape:
            resized = Image.fromarray(scene).resize(picture.shape[1::-1], Image.BILINEAR)
            scene = np.asarray(resized)
        return Image.fromarray(np.where(cut[..., None], picture, scene))

    @property
    def pictures(self) -> np.ndarray:
        """Each sample's picture number (EMOTIC's rows of one picture share one)."""
        return self._group_of

    def cut(self, i: int) -> np.ndarray:
        """Sample ``i``'s person, the pixels pasted, as a bool (H, W) array at its size."""
        picture, mask = self.people.get(i)
        return self._cut(i, picture.shape[:2], mask)

    def _cut(self, i: int, shape: tuple[int, int], mask: np.ndarray | None) -> np.ndarray:
        cut = self._exact_cut(i, shape, mask)
        if self.quality == "exact":
            return cut
        box = self.people.samples[i].hidden
        points = self._keypoints(i) if self.quality == "keypoints" else None
        out = degrade(cut, self.quality, self.quality_share, box, points)
        if points is not None and not out.any():
            raise DataError(
                f"{self.people.samples[i].image}: its person's keypoints lie on a line, so a "
                "'keypoints' cut would paste nothing; use another cut"
            )
        return out

    def _keypoints(self, i: int) -> np.ndarray:
        """Sample ``i``'s detected pose keypoints ((K, 2) pixels) from its OpenPose file."""
        sample = self.people.samples[i]
        path = sidecars.locate("pose", sample.image, self.root)
        box = sample.hidden
        if box is None:
            raise DataError(f"{path}: a 'keypoints' cut needs the sample's person box")
        k = sidecars.read_pose(path, box).numpy()  # (K, 3), the box's skeleton
        found = k[:, 2] > 0
        if found.sum() < 3:
            raise DataError(
                f"{path}: {int(found.sum())} keypoints of the person in box {box.as_tuple()} "
                "were found, too few for a 'keypoints' cut (3 at least); use another cut"
            )
        return np.stack([k[found, 0] * box.width + box.x1, k[found, 1] * box.height + box.y1], 1)

    def _exact_cut(self, i: int, shape: tuple[int, int], mask: np.ndarray | None) -> np.ndarray:
        sample = self.people.samples[i]
        box = sample.hidden
        if box is None:
            assert mask is not None  # checked when made
            return mask > 0
        own = None if mask is None else own_person(mask, box, face=sample.person is None)
        if own is None and mask is not None and not self._warned:
            self._warned = True  # (once a process: a DataLoader worker warns for itself)
            log.warning(
                "%s: no person of the mask fits the person box of %s; the whole box is cut "
                "(as for every such sample; `deconfound annotate` counts them)",
                self.people.mask_path(i), sample.image,
            )  # fmt: skip
        return own if own is not None else box_mask(box, shape)

    def background(self, k: int) -> np.ndarray:
        """Background ``k``'s picture, (H, W, 3) uint8, with its people hidden (kept in the
        cache while it has room)."""
        if k in self._hidden:
            return self._hidden[k]
        picture, mask = self.scenes.get(k)
        box = self.scenes.samples[k].hidden
        if mask is None and box is None:
            return picture
        if mask is None:
            people = np.zeros(picture.shape[:2], dtype=bool)
        else:
            people = grow(mask, self.growth)
        if box is not None and not (people & box_mask(box, people.shape)).any():
            people = people | box_mask(box, people.shape)  # a person the mask misses
        hidden = hide(picture, people, self.fill)
        if self.scenes.room(hidden.nbytes):
            self._hidden[k] = hidden
        return hidden

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_hidden": {}}

    def _draw(self, i: int, rng: np.random.Generator) -> int:
        """A background index: uniform over the backgrounds, or over the samples of images
        other than sample ``i``'s when the backgrounds are the samples themselves."""
        if self.scenes is not self.people:
            return int(rng.integers(len(self.scenes)))
        start, stop = self._groups[self._group_of[i]]
        r = int(rng.integers(len(self._order) - (stop - start)))
        return int(self._order[r if r < start else r + stop - start])

    def _check_masks(self) -> None:
        """Raise for a sample that cannot be cut; with ``missing_mask='error'`` for the first
        sample or background with people but no mask file, else warn once about them all."""
        for k, (sample, path) in enumerate(
            zip(self.people.samples, self.people.masks, strict=True)
        ):
            if sample.hidden is None and path is None:
                raise DataError(
                    f"{self.people.mask_path(k)}: mask file for {sample.image} not found, and the "
                    "sample has no box to cut instead; make it with a person segmenter"
                )
        pools = [self.people] if self.scenes is self.people else [self.people, self.scenes]
        missing = [
            (pool, k)
            for pool in pools
            for k, (s, path) in enumerate(zip(pool.samples, pool.masks, strict=True))
            if path is None and s.hidden is not None
        ]
        if not missing:
            return
        total = sum(len(pool) for pool in pools)
        pool, k = missing[0]
        if self.missing_mask == "error":
            raise DataError(
                f"{pool.mask_path(k)}: mask file for {pool.samples[k].image} not found "
                f"({len(missing)} of {total} pictures lack one); make them with a person "
                "segmenter (see deconfound.data.sidecars), or cut out the whole person box "
                "where one is missing (missing_mask: box)"
            )
        log.warning(
            "%d of %d pictures have no person mask (first: %s): their whole person box is cut "
            "out (or hidden in a background), which keeps the background inside the box",
            len(missing),
            total,
            pool.mask_path(k),
        )


def _image_groups(
    samples: Sequence[Sample],
) -> tuple[np.ndarray, list[tuple[int, int]], np.ndarray]:
    """The sample indices ordered by picture (:attr:`Sample.scene`), each picture's (start,
    stop) range in that order, and each sample's picture number (people of one picture share
    its background)."""
    keys: dict[ImageRef | str, int] = {}
    group = np.array([keys.setdefault(s.scene, len(keys)) for s in samples], dtype=np.int64)
    order = np.argsort(group, kind="stable")
    counts = np.bincount(group, minlength=len(keys))
    stops = np.cumsum(counts)
    ranges = [(int(b - c), int(b)) for b, c in zip(stops, counts, strict=True)]
    return order, ranges, group


def background_pictures(
    reader: _Reader, split: str, backgrounds: str | None
) -> Sequence[Sample | ImageRef] | None:
    """The pictures ``backgrounds`` names (see :meth:`PersonPaste.from_reader`); None for the
    training split's own."""
    if backgrounds is None or backgrounds == split:
        return None
    if backgrounds in reader.info.splits:
        return reader.samples(backgrounds)
    if backgrounds == SCENES and isinstance(reader, SyntheticReader):
        return SyntheticScenesReader(reader.root).samples("train")
    folder = Path(backgrounds)
    if not folder.is_dir():
        scenes = f", '{SCENES}'" if isinstance(reader, SyntheticReader) else ""
        raise DataError(
            f"{folder}: backgrounds must name a split of {reader.info.name} "
            f"({', '.join(reader.info.splits)}){scenes} or a folder of images; no such folder"
        )
    images = sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )
    if not images:
        raise DataError(
            f"{folder}: no background images ({', '.join(IMAGE_SUFFIXES)}) in this folder; "
            "put person-free pictures there"
        )
    return list(images)
