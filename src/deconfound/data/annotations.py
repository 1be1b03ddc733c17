"""Validated reading of annotation tables: every problem is one line naming file, row and fix."""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from PIL import UnidentifiedImageError

from deconfound.data.sample import Box, Sample
from deconfound.errors import DataError

log = logging.getLogger(__name__)
Row = TypeVar("Row")


class Problems:
    """Where a reader sends a bad sample: raised at once (the default), or, with ``skip=True``
    (``data.skip_bad``, ``deconfound data check``), recorded and the sample left out."""

    def __init__(self, skip: bool = False) -> None:
        self.skip = skip
        self.messages: list[str] = []

    def report(self, error: DataError) -> None:
        """Raise ``error``, or record it when skipping."""
        if not self.skip:
            raise error
        self.messages.append(str(error))

    def parse_all(
        self,
        rows: Iterable[tuple[Row, str]],
        parse: Callable[[Row, str], Sample | None],
        split: str,
    ) -> list[Sample]:
        """``parse(row, where)`` for every row, each bad one reported; ``parse`` returns None
        for a row the data set's own rules leave out. A row that gives the same image and the
        same boxes as an earlier one is bad (it would count one person twice, perhaps with two
        labels), naming both rows. Logs how many bad rows were skipped."""
        samples, before = [], len(self.messages)
        first: dict[tuple, str] = {}
        for row, where in rows:
            try:
                sample = parse(row, where)
                if sample is not None:
                    _check_unique(sample, where, first)
            except DataError as e:
                self.report(e)
                continue
            if sample is not None:
                samples.append(sample)
        if len(self.messages) > before:
            log.warning(
                "%s: skipped %d bad sample(s) (first: %s)",
                split, len(self.messages) - before, self.messages[before],
            )  # fmt: skip
        return samples


def _check_unique(sample: Sample, where: str, first: dict[tuple, str]) -> None:
    """Raise if ``sample`` repeats the image and boxes of one seen before (``first``: where
    each was seen)."""
    key = (sample.image, sample.body_image, sample.person, sample.face)
    seen = first.setdefault(key, where)
    if seen is where:
        return
    file, sep, row = seen.partition(": ")
    earlier = row if sep and where.startswith(f"{file}: ") else seen
    raise DataError(
        f"{where}: the same image and box as {earlier} ({sample.image}); remove one of the two rows"
    )


def read_rows(path: Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(row number, row)`` from a CSV file after checking that its header has ``required``.

    Row numbers count the header as row 1, as a spreadsheet shows them. A row with fewer cells
    than the header has empty strings in the missing ones. A UTF-8 byte-order mark (which
    spreadsheet programs write) is not part of the first column's name.
    """
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found; check the data set root")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, restval="")
        try:
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{path}: missing column(s) {', '.join(missing)} in the header")
            yield from enumerate(reader, start=2)
        except (UnicodeDecodeError, csv.Error) as e:
            raise DataError(f"{path}: not a readable CSV file ({e}); restore it") from None


def parse_int(row: dict[str, str], column: str, where: str) -> int:
    """The integer in ``row[column]``; ``where`` (file and row) prefixes any error."""
    value = row.get(column)
    try:
        return int(str(value).strip())
    except ValueError:
        raise DataError(f"{where}: column '{column}' must be an integer, got {value!r}") from None


def parse_box(row: dict[str, str], prefix: str, where: str) -> Box:
    """The box in columns ``{prefix}_x1 … {prefix}_y2`` (``x1 … y2`` when ``prefix`` is empty)."""
    names = [f"{prefix}_{c}" if prefix else c for c in ("x1", "y1", "x2", "y2")]
    return Box(*(parse_int(row, name, where) for name in names))


def image_size(path: Path, where: str) -> tuple[int, int]:
    """(width, height) of the image at ``path`` as displayed (its EXIF orientation applied, as
    boxes are given), from its header, without decoding the pixels."""
    from deconfound.data.views import displayed_size, open_image  # (views imports the readers)

    if not path.is_file():
        raise DataError(f"{where}: image {path} not found; restore the file or remove the row")
    try:
        with open_image(path) as im:
            return displayed_size(im)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"{where}: image {path} is not a readable image ({e})") from None


def check_box(box: Box, size: tuple[int, int], what: str, where: str, path: Path) -> None:
    """Raise if ``box`` cannot be used on the image of ``size`` at ``path``."""
    problem = box.problem(size)
    if problem:
        raise DataError(f"{where}: {what} {problem} ({path}); fix the box or remove the row")
