"""Write the synthetic facial-expression benchmark to disk in the layout of IERN's mixed set.

Layout under ``root``::

    <Source>/images/<stem>.png   one RGB face a file, size×size; stem S{subject}_{sequence}_{frame}
    emotion_labels.pkl           a pickled dict {"<source lower-case>_<stem>": "<Emotion>"}
    train_ids_<fold>.csv         one id a line, "SyntheticFaces/<Source>/images/<stem>.png"
    test_ids_<fold>.csv
    meta.json                    format, config, sources, emotions, folds, each emotion's
                                 held-out source (release design) or home source and the
                                 held-out subjects (home design), image count, per-fold counts

Every picture is drawn from its own random stream, seeded by (seed, source, subject, emotion,
frame); a subject's looks come from a stream seeded by (seed, source, subject) and a sequence's
peak intensity from one seeded by (seed, source, subject, emotion). The output is byte-identical
for a given config whatever the number of worker processes.
"""

from __future__ import annotations

import json
import os
import pickle
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from deconfound.data.sample import BASIC_EMOTIONS
from deconfound.data.synthetic_faces.render import STYLES, Identity, draw_face, sample_identity
from deconfound.errors import DataError
from deconfound.io import read_meta, staged_folder

FORMAT = "deconfound-synthetic-faces/2"
"""/2: bias90 folds move whole sequences (in /1, single pictures: a test face's sibling frames
could be in training)."""
DATASET = "SyntheticFaces"
"""The data-set name every id starts with."""
FOLDS: tuple[str, ...] = (
    "bias100v1",
    "bias100v2",
    "bias100v3",
    "bias90v1",
    "bias90v2",
    "bias90v3",
)
LABELS_FILE = "emotion_labels.pkl"
DESIGNS = ("release", "home")
"""Fold designs: the IERN release's, and one home source per emotion (:func:`plan_folds`)."""

# Tags that keep the random streams of the different kinds of draw apart.
_IDENTITY, _SEQUENCE, _FRAME, _HELD_OUT, _MIX = range(5)


@dataclass(frozen=True)
class FaceSynthConfig:
    """What a synthetic face set is made from; two sets with equal configs are identical.

    Args:
        size: side of the square images, in pixels.
        subjects: people per source (every source has its own people).
        frames: peak frames per sequence (one sequence per subject and emotion).
        test_subjects: share of each source's subjects held out for testing.
        bias: in the ``bias90`` folds: with ``design="release"``, 1 − the share of each
            held-out (source, emotion) pair's pictures moved into training (0.9: 10 %); with
            ``design="home"``, the share of each emotion's training pictures that come from its
            home source (at least 1/3: 1/3 is an even mix, 1 is ``bias100``).
        seed: seed of every random draw.
        design: how folds tie emotions to sources (see :func:`plan_folds`): ``release``, as
            the IERN authors' folds (each source misses two emotions, all people in both
            lists) or ``home`` (each emotion trained from one source, tested on unseen people
            of the other two).
    """

    size: int = 48
    subjects: int = 40
    frames: int = 3
    test_subjects: float = 0.3
    bias: float = 0.9
    seed: int = 0
    design: str = "release"

    def __post_init__(self) -> None:
        if self.design not in DESIGNS:
            raise DataError(f"unknown fold design '{self.design}'; choose {', '.join(DESIGNS)}")
        if self.size < 24:
            raise DataError(f"size must be at least 24 pixels, got {self.size}")
        if self.subjects < 2:
            raise DataError(
                f"subjects must be at least 2 (for training and test), got {self.subjects}"
            )
        if self.frames < 1:
            raise DataError(f"frames must be at least 1, got {self.frames}")
        if not 0.0 < self.test_subjects < 1.0:
            raise DataError(f"test_subjects must lie in (0, 1), got {self.test_subjects}")
        if not 1 / 3 <= self.bias <= 1.0:
            raise DataError(f"bias must lie in [1/3, 1], got {self.bias}")

    @property
    def n_test_subjects(self) -> int:
        """Subjects held out per source: ``test_subjects`` of them, rounded, at least one and
        leaving at least one for training."""
        return min(self.subjects - 1, max(1, _round(self.test_subjects * self.subjects)))


def _round(x: float) -> int:
    """Round half up (Python's ``round`` rounds half to even)."""
    return int(np.floor(x + 0.5))


@dataclass(frozen=True, order=True)
class FaceImage:
    """One picture of the pool: ``frame`` (from 1) of subject ``subject`` (from 1) of
    source ``source`` (an index into :data:`STYLES`) showing emotion ``emotion`` (an index into
    :data:`BASIC_EMOTIONS`); the sequence number is ``emotion + 1``."""

    source: int
    subject: int
    emotion: int
    frame: int

    @property
    def stem(self) -> str:
        return f"S{self.subject:03d}_{self.emotion + 1:03d}_{self.frame:08d}"

    @property
    def path(self) -> str:
        """The file, relative to the set's root."""
        return f"{STYLES[self.source].name}/images/{self.stem}.png"

    @property
    def id(self) -> str:
        """The line naming this picture in a fold's id list."""
        return f"{DATASET}/{self.path}"

    @property
    def key(self) -> str:
        """This picture's key in the labels file."""
        return f"{STYLES[self.source].name.lower()}_{self.stem}"


def home_source(emotion: int, fold: str | int) -> int:
    """The source that emotion ``emotion`` is trained on in ``fold`` (a fold name, or its
    version 1, 2 or 3): ``(emotion + version) % 3``. Each source is home to two emotions."""
    version = fold if isinstance(fold, int) else int(fold.rsplit("v", 1)[1])
    return (emotion + version) % len(STYLES)


def held_out_subjects(cfg: FaceSynthConfig, source: int) -> tuple[int, ...]:
    """The subjects (numbered from 1) of ``source`` held out for testing."""
    rng = np.random.default_rng([cfg.seed, _HELD_OUT, source])
    chosen = rng.permutation(cfg.subjects)[: cfg.n_test_subjects] + 1
    return tuple(sorted(int(s) for s in chosen))


def plan_pool(cfg: FaceSynthConfig) -> list[FaceImage]:
    """Every picture of the set, in (source, subject, emotion, frame) order."""
    return [
        FaceImage(s, subject, e, frame)
        for s in range(len(STYLES))
        for subject in range(1, cfg.subjects + 1)
        for e in range(len(BASIC_EMOTIONS))
        for frame in range(1, cfg.frames + 1)
    ]


def missing_source(emotion: int, fold: str | int) -> int:
    """The source whose pictures of ``emotion`` are held out in a ``release``-design ``fold``
    (a fold name, or its version 1, 2 or 3): ``(emotion + version) % 3``. Each source misses
    two emotions; every emotion is trained from the other two sources."""
    return home_source(emotion, fold)


def plan_folds(cfg: FaceSynthConfig) -> dict[str, tuple[list[FaceImage], list[FaceImage]]]:
    """The (train, test) pictures of every fold in :data:`FOLDS`, each in pool order.

    ``design="release"`` (the IERN authors' folds): ``bias100v{f}`` trains on every picture
    except those of the held-out pairs (emotion, :func:`missing_source`) and tests on those;
    ``bias90v{f}`` moves ``round((1 - bias) n)`` of each held-out pair's ``n`` sequences (a
    seeded choice; a sequence is one person's frames of the emotion) into training, every
    frame of each, and tests on the rest, as the release's folds move whole sequences: no
    sequence has frames on both sides. People are not held out: a person's other emotions are
    in training.

    ``design="home"``: ``bias100v{f}`` trains on every training-subject picture of (emotion,
    its home source) and tests on every test-subject picture of (emotion, another source).
    ``bias90v{f}`` adds to that training set, per emotion, ``round(n_home (1 - bias) / (2
    bias))`` training-subject pictures from each of the two other sources (a seeded choice),
    so that the home source's share is ``bias`` up to rounding; its test set is bias100v{f}'s.
    """
    pool = plan_pool(cfg)
    if cfg.design == "release":
        return {fold: _release_fold(cfg, fold, pool) for fold in FOLDS}
    held_out = {s: set(held_out_subjects(cfg, s)) for s in range(len(STYLES))}
    train_pool = [im for im in pool if im.subject not in held_out[im.source]]
    test_pool = [im for im in pool if im.subject in held_out[im.source]]
    folds: dict[str, tuple[list[FaceImage], list[FaceImage]]] = {}
    for fold in FOLDS:
        version = int(fold.rsplit("v", 1)[1])
        train = [im for im in train_pool if im.source == home_source(im.emotion, version)]
        test = [im for im in test_pool if im.source != home_source(im.emotion, version)]
        if fold.startswith("bias90"):
            train = sorted(train + _mixed_in(cfg, version, train_pool))
        folds[fold] = (train, test)
    return folds


def _release_fold(
    cfg: FaceSynthConfig, fold: str, pool: list[FaceImage]
) -> tuple[list[FaceImage], list[FaceImage]]:
    version = int(fold.rsplit("v", 1)[1])
    held = [im for im in pool if im.source == missing_source(im.emotion, version)]
    moved: set[FaceImage] = set()
    if fold.startswith("bias90"):
        for e in range(len(BASIC_EMOTIONS)):
            pair = [im for im in held if im.emotion == e]
            subjects = sorted({im.subject for im in pair})  # one sequence each
            rng = np.random.default_rng([cfg.seed, _MIX, version, e])
            n = _round((1 - cfg.bias) * len(subjects))
            chosen = {subjects[i] for i in rng.choice(len(subjects), n, replace=False)}
            moved.update(im for im in pair if im.subject in chosen)
    held_set = set(held)
    train = [im for im in pool if im not in held_set or im in moved]
    test = [im for im in held if im not in moved]
    return train, test


def _mixed_in(cfg: FaceSynthConfig, version: int, train_pool: list[FaceImage]) -> list[FaceImage]:
    """The non-home training pictures a bias90 fold of ``version`` adds."""
    out: list[FaceImage] = []
    for e in range(len(BASIC_EMOTIONS)):
        home = home_source(e, version)
        n_home = sum(im.emotion == e and im.source == home for im in train_pool)
        n_each = _round(n_home * (1 - cfg.bias) / (2 * cfg.bias))
        for s in range(len(STYLES)):
            if s == home:
                continue
            candidates = [im for im in train_pool if im.emotion == e and im.source == s]
            rng = np.random.default_rng([cfg.seed, _MIX, version, e, s])
            n = min(n_each, len(candidates))
            out += [candidates[i] for i in rng.choice(len(candidates), n, replace=False)]
    return out


def subject_identity(cfg: FaceSynthConfig, source: int, subject: int) -> Identity:
    """The looks of subject ``subject`` of ``source``."""
    return sample_identity(np.random.default_rng([cfg.seed, _IDENTITY, source, subject]))


def render_image(cfg: FaceSynthConfig, im: FaceImage) -> Image.Image:
    """The picture ``im`` as a PIL image: the sequence's peak intensity, lower in earlier
    frames, with a little per-frame noise."""
    peak = np.random.default_rng([cfg.seed, _SEQUENCE, im.source, im.subject, im.emotion]).uniform(
        0.65, 1.0
    )
    rng = np.random.default_rng([cfg.seed, _FRAME, im.source, im.subject, im.emotion, im.frame])
    intensity = peak - 0.04 * (cfg.frames - im.frame) + 0.03 * rng.standard_normal()
    return draw_face(
        im.emotion,
        im.source,
        subject_identity(cfg, im.source, im.subject),
        rng,
        cfg.size,
        intensity=float(np.clip(intensity, 0.5, 1.0)),
    )


def _render(job: tuple[Path, FaceSynthConfig, FaceImage]) -> None:
    root, cfg, im = job
    render_image(cfg, im).save(root / im.path, format="PNG", compress_level=1)


def generate(
    root: str | Path,
    cfg: FaceSynthConfig | None = None,
    *,
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Write the benchmark under ``root`` and return it (cached: an existing set made with the
    same config and format is returned untouched).

    The set is written to ``<root>.partial`` and renamed into place when complete, so an
    interrupted run (or a full disk, said in one line) leaves no half-written set behind; the
    next call starts it again.
    """
    cfg = cfg or FaceSynthConfig()
    root = Path(root)
    if _is_cached(root, cfg):
        return root
    with staged_folder(root) as tmp:
        _write(tmp, cfg, workers or min(4, os.cpu_count() or 1), progress)
    return root


def _is_cached(root: Path, cfg: FaceSynthConfig) -> bool:
    """Whether ``root`` already holds this set; raises if it holds anything else."""
    meta_path = root / "meta.json"
    if meta_path.exists():
        meta = read_meta(meta_path)
        if meta.get("format") != FORMAT:
            raise DataError(
                f"{root} holds a set in format {meta.get('format')!r}, not {FORMAT!r} (an earlier "
                "version's, whose bias90 folds split sequences between train and test); delete "
                "it to have it drawn again, or use another root"
            )
        if meta.get("config") != asdict(cfg):
            raise DataError(
                f"{root} holds synthetic faces made with other settings ({meta.get('config')}); "
                "use another root or delete it"
            )
        return True
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DataError(f"{root} exists and is not a synthetic face set; use an empty directory")
    return False


def _write(tmp: Path, cfg: FaceSynthConfig, workers: int, progress: bool) -> None:
    pool = plan_pool(cfg)
    for style in STYLES:
        (tmp / style.name / "images").mkdir(parents=True)
    jobs = [(tmp, cfg, im) for im in pool]
    bar = tqdm(total=len(jobs), desc="drawing faces", disable=not progress)
    if workers == 1:
        for job in jobs:
            _render(job)
            bar.update()
    else:
        with ProcessPoolExecutor(workers) as executor:
            chunk = max(1, min(64, len(jobs) // (8 * workers)))
            for _ in executor.map(_render, jobs, chunksize=chunk):
                bar.update()
    bar.close()
    labels = {im.key: BASIC_EMOTIONS[im.emotion] for im in pool}
    with (tmp / LABELS_FILE).open("wb") as f:
        pickle.dump(labels, f, protocol=4)
    folds = plan_folds(cfg)
    counts: dict[str, dict[str, float]] = {}
    for fold, (train, test) in folds.items():
        for split, images in (("train", train), ("test", test)):
            text = "".join(im.id + "\n" for im in images)
            (tmp / f"{split}_ids_{fold}.csv").write_bytes(text.encode())
        # the home source is the missing one in the release design: (emotion + version) % 3
        tied = sum(im.source == home_source(im.emotion, fold) for im in train)
        share = "train_held_out_share" if cfg.design == "release" else "train_home_share"
        counts[fold] = {"train": len(train), "test": len(test), share: round(tied / len(train), 4)}
    tie = "held_out_sources" if cfg.design == "release" else "home_sources"
    meta = {
        "format": FORMAT,
        "config": asdict(cfg),
        "sources": [s.name for s in STYLES],
        "emotions": list(BASIC_EMOTIONS),
        "folds": list(FOLDS),
        tie: {
            fold: {e: STYLES[home_source(i, fold)].name for i, e in enumerate(BASIC_EMOTIONS)}
            for fold in FOLDS
        },
        "images": len(pool),
        "counts": counts,
    }
    if cfg.design == "home":
        meta["test_subjects"] = {
            s.name: list(held_out_subjects(cfg, i)) for i, s in enumerate(STYLES)
        }
    (tmp / "meta.json").write_bytes((json.dumps(meta, indent=2) + "\n").encode())
