"""``deconfound data check``: validate a copy of a data set before training on it.

Every split is read with ``skip_bad`` (so that all problems are listed, not only the first),
every image file is decoded in full (a truncated file passes a header check but not this) and
every box is checked against the decoded size; on request every sample's sidecar files (pose,
depth, objects, masks) are read too. The report counts samples and class labels per split and
lists each problem on one line.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deconfound.config import construct
from deconfound.data.datamodule import READERS, dataset_info
from deconfound.data.sample import DatasetInfo, Sample
from deconfound.data.sidecars import KINDS, VIEW_OF
from deconfound.data.views import VIEWS, Source, load_image
from deconfound.errors import DataError


@dataclass
class CheckReport:
    """What ``check_dataset`` found."""

    info: DatasetInfo
    root: Path
    samples: dict[str, int] = field(default_factory=dict)
    class_counts: dict[str, list[int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def table(self) -> str:
        """Samples and class frequencies (labels per class) per split, as aligned text."""
        splits = list(self.samples)
        width = max(len(c) for c in (*self.info.classes, "samples"))
        head = f"{'':<{width}}" + "".join(f"{s:>14}" for s in splits)
        lines = [head, f"{'samples':<{width}}" + "".join(f"{self.samples[s]:>14}" for s in splits)]
        for i, name in enumerate(self.info.classes):
            cells = []
            for s in splits:
                n, total = self.class_counts[s][i], max(self.samples[s], 1)
                cells.append(f"{n:>7} {100 * n / total:5.1f}%")
            lines.append(f"{name:<{width}}" + "".join(f"{c:>14}" for c in cells))
        return "\n".join(lines)


def check_dataset(
    dataset: str,
    root: str | Path,
    splits: list[str] | None = None,
    args: dict[str, Any] | None = None,
    decode: bool = True,
    workers: int = 4,
    sidecars: Sequence[str] = (),
    keypoints: int = 25,
) -> CheckReport:
    """Read ``splits`` (default: all) of ``dataset`` under ``root`` with reader ``args``, decode
    every image, read the ``sidecars`` kinds of files (pose files with ``keypoints`` keypoints)
    of every sample, and report counts and problems."""
    unknown = sorted(set(sidecars) - set(KINDS))
    if unknown:
        raise DataError(f"unknown sidecar kind '{unknown[0]}'; choose from {', '.join(KINDS)}")
    info = dataset_info(dataset)
    if not Path(root).exists():
        raise DataError(f"{root}: not found; give the folder holding your copy of {dataset}")
    reader = construct(READERS[dataset], {"root": root, "skip_bad": True, **(args or {})}, dataset)
    report = CheckReport(info, Path(root))
    for split in splits or list(info.splits):
        before = len(reader.problems.messages)
        try:
            samples = reader.samples(split)
        except DataError as e:  # a whole split unreadable: missing file, folder, ...
            report.problems.append(f"split '{split}': {e}")
            continue
        report.problems += reader.problems.messages[before:]
        if decode:
            report.problems += _decode_all(samples, workers)
        if sidecars:
            sizes = {"pose": keypoints, "depth": 8, "objects": 16, "masks": 8}
            report.problems += _read_sidecars(samples, Path(root), sidecars, sizes, workers)
        report.samples[split] = len(samples)
        counts = Counter(label for s in samples for label in s.labels)
        report.class_counts[split] = [counts[i] for i in range(info.num_classes)]
        if not samples:
            report.problems.append(f"split '{split}': no usable samples")
    for attr, what in (("dropped", "people left out for lack of labels"),
                       ("fallbacks", "frames without a detected face (fallback box)")):  # fmt: skip
        per_split = {s: n for s, n in getattr(reader, attr, {}).items() if n}
        if per_split:
            report.notes.append(f"{what}: {per_split}")
    return report


def _decode_all(samples: list[Sample], workers: int) -> list[str]:
    """One problem per image file that does not decode, or whose boxes do not fit it."""
    by_image: dict[Path, list[Sample]] = {}
    for s in samples:
        if isinstance(s.image, Path):
            by_image.setdefault(s.image, []).append(s)
    with ThreadPoolExecutor(workers) as pool:
        found = pool.map(lambda item: _decode(*item), by_image.items())
        return [p for problems in found for p in problems]


def _read_sidecars(
    samples: list[Sample], root: Path, kinds: Sequence[str], sizes: dict[str, int], workers: int
) -> list[str]:
    """One problem per sidecar file that is missing or does not parse."""

    def read(sample: Sample) -> list[str]:
        problems = []
        for kind in kinds:
            try:
                VIEWS[VIEW_OF[kind]](Source(sample, root), sizes[kind])
            except DataError as e:
                problems.append(str(e))
        return problems

    with ThreadPoolExecutor(workers) as pool:
        return [p for problems in pool.map(read, samples) for p in problems]


def _decode(path: Path, samples: list[Sample]) -> list[str]:
    try:  # decoded as training decodes it (orientation, bit depth, size limit)
        size = load_image(path).size
    except DataError as e:
        return [str(e)]
    problems = []
    for s in samples:
        for what, box in (("person box", s.person), ("face box", s.face)):
            if box is not None and (problem := box.problem(size)):
                problems.append(f"{path}: {what} {problem}")
    return problems
