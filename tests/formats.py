"""Writers of tiny copies of the real data sets, in their real on-disk formats (for the tests and
the reading benchmark): EMOTIC's ``Annotations.mat`` and its pre-processed CSV + NumPy layout,
CAER-S's folder tree, GroupWalk's manifest."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import savemat


def picture(width: int, height: int, seed: int) -> Image.Image:
    """A smooth random RGB picture (JPEG/PNG compress it like a photo, unlike noise)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(
        0, 256, size=(max(height // 16, 2), max(width // 16, 2), 3), dtype=np.uint8
    )
    return Image.fromarray(small).resize((width, height), Image.BILINEAR)


@dataclass
class Person:
    """One annotated EMOTIC person; ``categories`` per annotator for val/test."""

    box: tuple[float, float, float, float]
    categories: list[list[str]]
    continuous: list[tuple[float, float, float]]
    combined: list[str] | None = None
    combined_continuous: tuple[float, float, float] | None = None
    gender: str = "Female"
    age: str = "Adult"


@dataclass
class Record:
    """One EMOTIC image with its people."""

    folder: str
    filename: str
    size: tuple[int, int]  # (width, height)
    people: list[Person] = field(default_factory=list)
    database: str = "mscoco"


def _cell(strings: list[str]) -> np.ndarray:
    out = np.empty((1, len(strings)), dtype=object)
    for i, s in enumerate(strings):
        out[0, i] = s
    return out


def _vad(values: tuple[float, float, float]) -> dict[str, float]:
    return dict(zip(("valence", "arousal", "dominance"), values, strict=True))


def _person_array(people: list[Person], split: str) -> np.ndarray:
    if split == "train":
        names = ["body_bbox", "annotations_categories", "annotations_continuous", "gender", "age"]
    else:
        names = [
            "body_bbox", "annotations_categories", "combined_categories",
            "annotations_continuous", "combined_continuous", "gender", "age",
        ]  # fmt: skip
    out = np.zeros((1, len(people)), dtype=[(n, object) for n in names])
    for j, p in enumerate(people):
        cats = np.zeros((1, len(p.categories)), dtype=[("categories", object)])
        for a, c in enumerate(p.categories):
            cats[0, a]["categories"] = _cell(c)
        conts = np.zeros((1, len(p.continuous)), dtype=[(d, object) for d in _vad((0, 0, 0))])
        for a, c in enumerate(p.continuous):
            for d, v in _vad(c).items():
                conts[0, a][d] = float(v)
        row = out[0, j]
        row["body_bbox"] = np.array([p.box], dtype=float)
        row["annotations_categories"] = cats
        row["annotations_continuous"] = conts
        row["gender"], row["age"] = p.gender, p.age
        if split != "train":
            row["combined_categories"] = _cell(p.combined or [])
            cc = p.combined_continuous
            row["combined_continuous"] = _vad(cc) if cc is not None else np.zeros((0, 0))
    return out


def write_emotic_mat(root: Path, splits: dict[str, list[Record]], seed: int = 0) -> Path:
    """The official release layout under ``root``: ``Annotations/Annotations.mat`` and the
    images (JPEG) under ``emotic/<folder>/<filename>``."""
    mat: dict[str, np.ndarray] = {}
    names = ["filename", "folder", "image_size", "original_database", "person"]
    for split, records in splits.items():
        arr = np.zeros((1, len(records)), dtype=[(n, object) for n in names])
        for i, r in enumerate(records):
            image = root / "emotic" / r.folder / r.filename
            if not image.exists():
                image.parent.mkdir(parents=True, exist_ok=True)
                picture(*r.size, seed=seed + i).save(image, quality=90)
            row = arr[0, i]
            row["filename"], row["folder"] = r.filename, r.folder
            row["image_size"] = {"n_col": float(r.size[0]), "n_row": float(r.size[1])}
            row["original_database"] = {"name": r.database, "info": {"image_id": float(i)}}
            row["person"] = _person_array(r.people, split)
        mat[split] = arr
    path = root / "Annotations" / "Annotations.mat"
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, mat)
    return path


def write_emotic_npy(
    root: Path, split: str, records: list[Record], context: int = 224, body: int = 128
) -> list[dict]:
    """The pre-processed layout for ``split``: ``{split}.csv`` and the four arrays; returns the
    rows written (one per person with its combined labels), pictures drawn from the same seed
    as :func:`write_emotic_mat` would use."""
    from deconfound.data.emotic import CATEGORIES

    rows, ctx, bod, cat, cont = [], [], [], [], []
    for i, r in enumerate(records):
        image = picture(*r.size, seed=i)
        for p in r.people:
            labels = p.combined if split != "train" else p.categories[0]
            vad = p.combined_continuous if split != "train" else p.continuous[0]
            w, h = r.size  # the pipeline clips the box to the image before cropping
            x1, y1 = int(min(max(p.box[0], 0), w)), int(min(max(p.box[1], 0), h))
            x2, y2 = int(min(max(p.box[2], 0), w)), int(min(max(p.box[3], 0), h))
            ctx.append(np.asarray(image.resize((context, context))))
            bod.append(np.asarray(image.crop((x1, y1, x2, y2)).resize((body, body))))
            cat.append([1.0 if c in labels else 0.0 for c in CATEGORIES])
            cont.append(list(vad))
            rows.append(
                {
                    "Index": len(rows),
                    "Folder": r.folder,
                    "Filename": r.filename,
                    "Image Size": list(r.size),
                    "BBox": [x1, y1, x2, y2],
                    "Categorical_Labels": list(labels),
                    "Continuous_Labels": list(vad),
                    "Gender": p.gender,
                    "Age": p.age,
                }
            )
    root.mkdir(parents=True, exist_ok=True)
    with (root / f"{split}.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(rows[0]))
        for row in rows:
            w.writerow([str(v) if isinstance(v, list) else v for v in row.values()])
    for name, values, dtype in (
        ("context", ctx, np.uint8), ("body", bod, np.uint8),
        ("cat", cat, np.float64), ("cont", cont, np.float64),
    ):  # fmt: skip
        np.save(root / f"{split}_{name}_arr.npy", np.array(values, dtype=dtype))
    return rows


def face_photo() -> Image.Image:
    """A real photograph of a face (matplotlib's sample of Grace Hopper, 512 × 600)."""
    import matplotlib.cbook as cbook

    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as im:
        return im.convert("RGB")


def write_caer_s(
    root: Path, frames: dict[str, dict[str, list[bool]]], size: tuple[int, int] = (200, 150)
) -> dict[str, Path]:
    """A CAER-S tree: ``frames[split folder][class folder]`` lists frames, True for a frame with
    a face (the photo, shrunk into a random frame), False for one without. Returns relpath →
    path of every frame written (PNG, as CAER-S ships)."""
    face = face_photo().resize((size[1] * 512 // 600, size[1]))
    out = {}
    n = 0
    for split, classes in frames.items():
        for cls, faces in classes.items():
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for has_face in faces:
                image = picture(*size, seed=n)
                if has_face:
                    image.paste(face, ((size[0] - face.width) // 2, 0))
                path = folder / f"{n:04d}.png"
                image.save(path)
                out[path.relative_to(root).as_posix()] = path
                n += 1
    return out


GROUPWALK_COLUMNS = ("frame", "video", "person", "x1", "y1", "x2", "y2", "emotion", "split")


def write_groupwalk(root: Path, rows: list[dict], size: tuple[int, int] = (96, 64)) -> Path:
    """GroupWalk's manifest (``annotations.csv``) and the frames it names (JPEG)."""
    for i, row in enumerate(rows):
        path = root / row["frame"]
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            picture(*size, seed=100 + i).save(path, quality=90)
    manifest = root / "annotations.csv"
    with manifest.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(GROUPWALK_COLUMNS))
        w.writeheader()
        w.writerows(rows)
    return manifest


def write_mixbasic(
    root: Path,
    train: list[str],
    test: list[str],
    labels: dict,
    fold: str = "bias100v1",
    labels_file: str = "emotion_labels.pkl",
    prefix: str = "MixBasic/",
    size: tuple[int, int] = (40, 48),
) -> Path:
    """IERN's mixed-protocol layout: a face crop for every id (``<Source>/images/<file>``, PNG
    or JPEG by its suffix), the labels (pickled dict, or a ``key,emotion`` CSV by the file's
    suffix) and the fold's two id lists, each line prefixed by ``prefix`` as the release does."""
    import pickle

    for i, image_id in enumerate(dict.fromkeys(train + test)):
        path = root / image_id
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            picture(*size, seed=200 + i).save(path)
    labels_path = root / labels_file
    if labels_path.suffix == ".csv":
        with labels_path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["key", "emotion"])
            w.writerows(labels.items())
    else:
        labels_path.write_bytes(pickle.dumps(labels))
    for which, ids in (("train", train), ("test", test)):
        (root / f"{which}_ids_{fold}.csv").write_text("".join(f"{prefix}{i}\n" for i in ids))
    return root


def write_rafdb(
    root: Path, entries: list[tuple[str, int]], folder: str = "aligned", size: int = 100
) -> Path:
    """RAF-DB's basic part: ``EmoLabel/list_patition_label.txt`` and the faces (JPEG) under
    ``Image/aligned/<stem>_aligned.jpg`` (or ``Image/original/<name>``)."""
    for i, (name, _) in enumerate(entries):
        stem = name.rsplit(".", 1)[0]
        file = f"{stem}_aligned.jpg" if folder == "aligned" else name
        path = root / "Image" / folder / file
        path.parent.mkdir(parents=True, exist_ok=True)
        picture(size, size, seed=300 + i).save(path, quality=90)
    labels = root / "EmoLabel" / "list_patition_label.txt"
    labels.parent.mkdir(parents=True, exist_ok=True)
    labels.write_text("".join(f"{name} {label}\n" for name, label in entries))
    return labels


AFFECTNET_COLUMNS = (
    "subDirectory_filePath", "face_x", "face_y", "face_width", "face_height",
    "facial_landmarks", "expression", "valence", "arousal",
)  # fmt: skip


def write_affectnet(
    root: Path, files: dict[str, list[dict]], size: tuple[int, int] = (80, 64)
) -> None:
    """AffectNet's layout: ``files[name]`` (``training.csv``, ``validation.csv``) lists rows
    (``subDirectory_filePath``, ``face_*``, ``expression``, ``valence``, ``arousal``), the
    landmarks are filled in, and each image is written (JPEG) under
    ``Manually_Annotated_Images/``."""
    n = 0
    for name, rows in files.items():
        with (root / name).open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(AFFECTNET_COLUMNS))
            w.writeheader()
            for row in rows:
                path = root / "Manually_Annotated_Images" / row["subDirectory_filePath"]
                if not path.exists():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    picture(*size, seed=400 + n).save(path, quality=90)
                    n += 1
                landmarks = ";".join(f"{10.0 + k:.2f}" for k in range(136))
                w.writerow({"facial_landmarks": landmarks, **row})


def write_fer2013(root: Path, rows: list[tuple[object, object, str]]) -> Path:
    """FER2013's ``fer2013.csv``: one ``(emotion, pixels, Usage)`` per row, pixels a list of
    2304 grey values (written space-separated) or a string written as it is."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "fer2013.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["emotion", "pixels", "Usage"])
        for emotion, pixels, usage in rows:
            text = pixels if isinstance(pixels, str) else " ".join(str(int(v)) for v in pixels)
            w.writerow([emotion, text, usage])
    return path
