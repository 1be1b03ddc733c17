"""Synthetic faces: a facial-expression benchmark confounded by the source data set.

IERN (Chen et al., ACM MM 2022) studies a bias that appears when posed-expression data sets
(CK+, MMI, Oulu-CASIA) are mixed: each set has its own people, lighting, colour, framing and
image quality, and when an emotion is seen in training mostly from one set, a model can learn
"which set is this picture from" instead of the expression. This package draws a small stand-in
for that mix, so the pipeline can be run end to end without downloading anything.

What is drawn. Cartoon frontal faces, one per image (48×48 RGB by default). The emotion, one of
the six basic emotions (``BASIC_EMOTIONS``: Anger, Disgust, Fear, Happiness, Sadness, Surprise),
is carried only by the expression: brow height and slant, eye openness, mouth curvature, opening
and width, plus a few secondary cues (a raised upper lip and wrinkled nose for disgust, pressed
lips and a furrowed brow for anger, raised cheeks for happiness, forehead lines under raised
brows). Every face is a random-intensity, noisy version of its emotion's prototype, with small
jitter of position, size and roll, so the task takes some learning.

The confounder. Three sources (``STYLES``: Studio, Archive, Webcam) play the three data sets.
Each has its own capture set-up (background, framing, blur, sensor noise, colour tint, contrast
and brightness) and its own people. The source can be told from the mean colour of a picture
alone; it says nothing about the expression by itself. Each source has ``subjects`` people; each
person shows every emotion in one sequence of ``frames`` peak frames (names as in CK+:
``S{subject}_{sequence}_{frame}``, sequence = emotion index + 1).

The folds tie emotions to sources, in one of two designs (``FaceSynthConfig.design``).

- ``release`` (the default; the IERN authors' folds): in fold version f (1, 2, 3) the pictures
  of emotion e from source (e + f) mod 3 are held out, so each source misses two emotions and
  every emotion is trained from the other two sources. ``bias100v{f}`` tests on exactly the
  held-out (source, emotion) pairs; ``bias90v{f}`` moves 10 % (``1 − bias``) of each held-out
  pair's sequences into training, every frame of each, and tests on the rest (no sequence on
  both sides, as in the release's folds). People are not held out.
- ``home``: emotion e has the home source (e + f) mod 3. ``bias100v{f}`` trains only on home
  pairs (every emotion seen from one source) and tests on the other pairs, from held-out
  people (a ``test_subjects`` share of each source's); ``bias90v{f}`` also trains on some
  non-home pictures, so that per emotion a ``bias`` share comes from the home source. Emotion
  and source are then almost the same signal in training.

On disk the set follows IERN's mixed-data-set layout: ``<Source>/images/<stem>.png``, a pickled
``emotion_labels.pkl`` dict from ``"<source lower-case>_<stem>"`` to the emotion's name,
``train_ids_<fold>.csv`` and ``test_ids_<fold>.csv`` with one id a line
(``SyntheticFaces/<Source>/images/<stem>.png``), and ``meta.json``. The same config always gives
byte-identical files, whatever the number of worker processes. ``SyntheticFacesReader`` reads
it (IERN's mixed-set reader with the three style folders as sources).
"""

from deconfound.data.synthetic_faces.generate import (
    DATASET,
    DESIGNS,
    FOLDS,
    FORMAT,
    LABELS_FILE,
    FaceImage,
    FaceSynthConfig,
    generate,
    held_out_subjects,
    home_source,
    missing_source,
    plan_folds,
    plan_pool,
)
from deconfound.data.synthetic_faces.reader import INFO, SOURCES, SyntheticFacesReader
from deconfound.data.synthetic_faces.render import (
    STYLES,
    Identity,
    Style,
    draw_face,
    sample_identity,
)

__all__ = [
    "DATASET",
    "DESIGNS",
    "FOLDS",
    "FORMAT",
    "INFO",
    "LABELS_FILE",
    "SOURCES",
    "STYLES",
    "FaceImage",
    "FaceSynthConfig",
    "Identity",
    "Style",
    "SyntheticFacesReader",
    "draw_face",
    "generate",
    "held_out_subjects",
    "home_source",
    "missing_source",
    "plan_folds",
    "plan_pool",
    "sample_identity",
]
