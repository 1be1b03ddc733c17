"""The files around predictions: the inputs a command line names (images, folders, globs, box
files), predictions written as JSON lines or CSV, and annotated copies of the images."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase
from glob import glob, has_magic
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from deconfound.data.sample import Box
from deconfound.data.views import displayed_size, open_image
from deconfound.errors import ConfigError, DataError
from deconfound.io import atomic_write, atomic_write_text
from deconfound.predict.predictor import Prediction, read_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
"""The files that a folder or a glob pattern of inputs contributes."""

CSV_COLUMNS = ("file", "x1", "y1", "x2", "y2")
"""The header of a box file: an image (relative to the file's folder) and a person box."""

OUTPUT_SUFFIXES = (".jsonl", ".csv")

PALETTE = ((200, 30, 60), (0, 100, 180), (0, 130, 90), (120, 60, 160), (150, 80, 20))
"""Box colours, one per person of an image in turn (labels are white on them)."""


def collect_inputs(
    items: Sequence[str | os.PathLike[str]], skip: Iterable[str | os.PathLike[str]] = ()
) -> tuple[list[Path], list[Box | None]]:
    """The images that ``items`` name, in order, each with its box (None: find the people).

    An item is a folder (its images, sub-folders included, sorted by path), a box file
    (``.csv``, see :func:`read_box_csv`), a glob pattern (``photos/**/*.jpg``, sorted) or an
    image. A path that names nothing is kept: predicting on it is the missing-image error.
    Folders and patterns are searched without going into the folders ``skip`` names (the
    drawings of an earlier run, ``--draw``, when they lie among the inputs), and a folder
    reached again through a symbolic link (a link loop) is searched once.
    """
    files: list[Path] = []
    boxes: list[Box | None] = []
    skipped = {Path(folder).resolve() for folder in skip}
    for item in items:
        path = Path(item)
        if path.suffix.lower() == ".csv":
            more, more_boxes = read_box_csv(path)
            files += more
            boxes += more_boxes
            continue
        if path.is_dir():
            found = _walk(path, skipped)
            empty = f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder"
        elif not path.exists() and any(c in str(item) for c in "*?["):
            found = _glob(str(item), skipped)
            empty = f"{item}: no image matches this pattern"
        else:
            found, empty = [path], ""
        if not found:
            raise DataError(empty)
        files += found
        boxes += [None] * len(found)
    return files, boxes


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def _walk(folder: Path, skip: set[Path]) -> list[Path]:
    """The image files under ``folder``, sub-folders included, sorted by path: symbolic links
    to folders are followed, but each folder is searched once (so a link loop ends), and the
    folders in ``skip`` (resolved paths) are left out."""
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()
    for top, dirs, names in os.walk(folder, followlinks=True):
        try:
            st = os.stat(top)
        except OSError:  # a link that points nowhere
            dirs[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen or Path(top).resolve() in skip:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs.sort(key=lambda d: (os.path.islink(os.path.join(top, d)), d))  # real ones first
        found += [p for p in (Path(top) / n for n in names) if _is_image(p)]
    return sorted(found)


def _glob(pattern: str, skip: set[Path]) -> list[Path]:
    """The image files that the glob ``pattern`` matches, sorted; ``**`` matches any number of
    folders, searched as :func:`_walk` searches (each folder once, ``skip`` left out)."""
    parts = Path(pattern).parts
    if "**" not in parts:
        matches = (Path(p) for p in glob(pattern))
        return sorted(p for p in matches if _is_image(p) and not _inside(p, skip))
    fixed = next(i for i, part in enumerate(parts) if has_magic(part))
    base = Path(*parts[:fixed]) if fixed else Path()
    return [p for p in _walk(base, skip) if _matches(p.relative_to(base).parts, parts[fixed:])]


def _inside(path: Path, folders: set[Path]) -> bool:
    return bool(folders) and any(f in folders for f in path.resolve().parents)


def _matches(names: Sequence[str], pattern: Sequence[str]) -> bool:
    """Whether the path ``names`` matches the glob ``pattern``, part by part (``**``: any
    number of parts); as in ``glob``, a wildcard does not match a name that starts with a dot."""
    if not pattern:
        return not names
    if pattern[0] == "**":
        rest = pattern[1:]
        return _matches(names, rest) or (
            bool(names) and not names[0].startswith(".") and _matches(names[1:], pattern)
        )
    if not names or (names[0].startswith(".") and not pattern[0].startswith(".")):
        return False
    return fnmatchcase(names[0], pattern[0]) and _matches(names[1:], pattern[1:])


def read_box_csv(path: Path) -> tuple[list[Path], list[Box | None]]:
    """Images and person boxes from a CSV file whose header names ``file,x1,y1,x2,y2`` (other
    columns are ignored): paths relative to the file's folder, boxes in pixels (``x2``/``y2``
    exclusive); a row whose four box cells are empty leaves the box to the detector. A row may
    repeat an image, once per person."""
    if not path.is_file():
        raise DataError(f"{path}: box file not found; check the path")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the box file ({e}); save it as UTF-8 CSV") from None
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise DataError(
            f"{path}: line 1: no column {', '.join(missing)}; the header must name "
            f"{','.join(CSV_COLUMNS)}"
        )
    files: list[Path] = []
    boxes: list[Box | None] = []
    for row in reader:
        where = f"{path}: line {reader.line_num}"
        name = (row["file"] or "").strip()
        if not name:
            raise DataError(f"{where}: the file cell is empty; name an image")
        files.append(path.parent / name)
        boxes.append(_row_box(row, where, files[-1]))
    if not files:
        raise DataError(f"{path}: no rows below the header; add {','.join(CSV_COLUMNS)} rows")
    return files, boxes


def _row_box(row: dict[str, str | None], where: str, image: Path) -> Box | None:
    cells = [(row[c] or "").strip() for c in CSV_COLUMNS[1:]]
    if not any(cells):
        return None
    try:
        box = Box(*(int(float(c)) for c in cells))
    except (ValueError, OverflowError):
        raise DataError(
            f"{where}: the box must be four pixel numbers x1,y1,x2,y2 (or four empty cells to "
            f"detect the person), got {','.join(cells)!r}"
        ) from None
    try:
        with open_image(image) as im:
            size = displayed_size(im)  # boxes refer to the picture as displayed
    except (OSError, ValueError, DataError):  # a bad image is reported (or skipped) when predicting
        size = (sys.maxsize, sys.maxsize)
    problem = box.problem(size)
    if problem:
        raise DataError(f"{where}: box {problem} of {image}; fix the row or empty its box cells")
    return box


def check_output(path: str | os.PathLike[str]) -> Path:
    """``path`` if predictions can be written there (a ``.jsonl`` or ``.csv`` file name)."""
    out = Path(path)
    if out.suffix.lower() not in OUTPUT_SUFFIXES or out.is_dir():
        raise ConfigError(f"--out {out}: name a file ending in {' or '.join(OUTPUT_SUFFIXES)}")
    return out


def write_predictions(predictions: Sequence[Prediction], path: str | os.PathLike[str]) -> Path:
    """Write ``predictions`` atomically to ``path``: JSON lines (``.jsonl``, one
    :meth:`Prediction.record` a line) or CSV (``.csv``, :func:`to_csv`), by its suffix."""
    out = check_output(path)
    jsonl = out.suffix.lower() == ".jsonl"
    return atomic_write_text(out, to_jsonl(predictions) if jsonl else to_csv(predictions))


def to_jsonl(predictions: Sequence[Prediction]) -> str:
    """One JSON object (:meth:`Prediction.record`) per line."""
    return "".join(json.dumps(p.record()) + "\n" for p in predictions)


def to_csv(predictions: Sequence[Prediction]) -> str:
    """A CSV table, a row per prediction: ``file,x1,y1,x2,y2,box_source``, the detected face
    as ``face_x1,face_y1,face_x2,face_y2`` (empty without one), the top k as
    ``emotion_1,probability_1,...``, every class's probability as ``p_<class>``, ``error``."""
    k = max((len(p.top_k) for p in predictions), default=0)
    classes = next((list(p.probabilities) for p in predictions if p.probabilities), [])
    top = [f"{what}_{n}" for n in range(1, k + 1) for what in ("emotion", "probability")]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    face = [f"face_{c}" for c in CSV_COLUMNS[1:]]
    writer.writerow(
        [*CSV_COLUMNS, "box_source", *face, *top, *(f"p_{c}" for c in classes), "error"]
    )
    for p in predictions:
        r = p.record()
        best = [v for t in r["top_k"] for v in (t["emotion"], t["probability"])]
        writer.writerow(
            [r["file"], *(r["box"] or [""] * 4), r["box_source"] or "", *(r["face"] or [""] * 4)]
            + best + [""] * (len(top) - len(best))
            + [r["probabilities"].get(c, "") for c in classes] + [r["error"] or ""]
        )  # fmt: skip
    return buffer.getvalue()


def annotate(image: Image.Image, predictions: Sequence[Prediction]) -> Image.Image:
    """A copy of ``image`` in RGB with each prediction's box, where the box came from
    (``box_source``: given, detected, whole-image), the face the detector found (a thinner
    box, where the body box was grown from it) and its top-k emotions drawn on it."""
    out = image.convert("RGB")
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default(size=max(10, min(out.size) // 30))
    width = max(1, min(out.size) // 150)
    for n, p in enumerate(q for q in predictions if q.box is not None):
        x1, y1, x2, y2 = p.box  # type: ignore[misc]
        colour = PALETTE[n % len(PALETTE)]
        draw.rectangle((x1, y1, x2 - 1, y2 - 1), outline=colour, width=width)
        if p.face is not None and p.face != p.box:
            f1, g1, f2, g2 = p.face
            draw.rectangle((f1, g1, f2 - 1, g2 - 1), outline=colour, width=max(1, width // 2))
        lines = [f"{emotion} {prob:.2f}" for emotion, prob in p.top_k]
        text = "\n".join([f"box: {p.box_source}", *lines] if p.box_source else lines)
        at = (x1 + 3 * width, y1 + 3 * width)
        *_, right, bottom = draw.multiline_textbbox(at, text, font=font)
        draw.rectangle((x1, y1, right + 2 * width, bottom + 2 * width), fill=colour)
        draw.multiline_text(at, text, fill=(255, 255, 255), font=font)
    return out


def drawing_paths(
    files: Iterable[str | os.PathLike[str]], folder: str | os.PathLike[str]
) -> dict[str, Path]:
    """Where :func:`write_drawings` puts each image's annotated copy: under ``folder``, at the
    image's path relative to the folder that holds all ``files``. A ``folder`` that is a file,
    or where a copy would overwrite its original, is a ConfigError."""
    if Path(folder).exists() and not Path(folder).is_dir():
        raise ConfigError(f"--draw {folder} is a file; give a folder for the drawings")
    names = list(dict.fromkeys(str(f) for f in files))
    if not names:
        return {}
    sources = [Path(name).resolve() for name in names]
    base = Path(os.path.commonpath([s.parent for s in sources]))
    paths = {}
    for name, source in zip(names, sources, strict=True):
        paths[name] = Path(folder) / source.relative_to(base)
        if paths[name].resolve() == source:
            raise ConfigError(f"--draw {folder} would overwrite {source}; choose another folder")
    return paths


def write_drawings(predictions: Sequence[Prediction], folder: str | os.PathLike[str]) -> list[Path]:
    """Write an annotated copy (:func:`annotate`) of each image file that has predictions,
    atomically, to its :func:`drawing_paths` place under ``folder``; returns the files
    written."""
    paths = drawing_paths((p.file for p in predictions), folder)
    by_file: dict[str, list[Prediction]] = {}
    for p in predictions:
        if p.error is None:
            by_file.setdefault(p.file, []).append(p)
    formats = Image.registered_extensions()
    for name, preds in by_file.items():
        drawn = annotate(read_image(name, name), preds)
        fmt = formats.get(paths[name].suffix.lower(), "PNG")
        atomic_write(paths[name], lambda tmp, im=drawn, f=fmt: im.save(tmp, format=f))
    return [paths[name] for name in by_file]
