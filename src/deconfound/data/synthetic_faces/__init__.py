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
``S{subject}_{sequence}_{frame}``, sequence = emotion index + 1). A ``test_subjects`` share of
each source's people is held out: no person appears in both a training and a test list.

The folds tie emotions to sources. In fold version f (1, 2, 3) emotion e has the home source
(e + f) mod 3, so each source is home to two emotions and the three versions rotate the pairing.

- ``bias100v{f}``: training holds only home pairs (every emotion is seen from one source only);
  testing holds only the other pairs, from the held-out people. Every test picture pairs an
  emotion with a source it was never trained with, so a model that relies on the source fails.
- ``bias90v{f}``: training also holds some pictures of the non-home pairs, so that per emotion
  a ``bias`` share (0.9 by default, up to rounding) comes from the home source and the rest is
  split evenly over the other two; the test list is bias100v{f}'s.

On disk the set follows IERN's mixed-data-set layout: ``<Source>/images/<stem>.png``, a pickled
``emotion_labels.pkl`` dict from ``"<source lower-case>_<stem>"`` to the emotion's name,
``train_ids_<fold>.csv`` and ``test_ids_<fold>.csv`` with one id a line
(``SyntheticFaces/<Source>/images/<stem>.png``), and ``meta.json``. The same config always gives
byte-identical files, whatever the number of worker processes. ``SyntheticFacesReader`` reads
it (IERN's mixed-set reader with the three style folders as sources).
"""

from deconfound.data.synthetic_faces.generate import (
    DATASET,
    FOLDS,
    FORMAT,
    LABELS_FILE,
    FaceImage,
    FaceSynthConfig,
    generate,
    held_out_subjects,
    home_source,
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
    "plan_folds",
    "plan_pool",
    "sample_identity",
]
