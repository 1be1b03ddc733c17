"""A trained checkpoint on the user's own images: :class:`Predictor` and ``deconfound predict``.

Where the person is comes from, in order: a box given with the image (``box_source``
``given``); the bundled face detector, one prediction per face found (``detected``), the body
box derived from the face by :data:`BODY_RULE` for a model trained on body boxes, the face box
itself for one trained on faces; or, when no face is found (or detection is off), the whole
image (``whole-image``). Each person is then cut into the model's views by the training data
path's own code (:func:`deconfound.data.views.make_views`), with the view sizes and mask fill
of the checkpoint's config and the boxes its data set annotates (``DatasetInfo.boxes``), so
a prediction sees what training saw.

Example::

    from deconfound.predict import Predictor

    predictor = Predictor("runs/emotnet/checkpoints/best.ckpt", top_k=3)
    for p in predictor.predict(["party.jpg", "office.png"]):
        print(p.file, p.box, p.box_source, p.top_k)
"""

from deconfound.predict.files import (
    annotate,
    check_output,
    collect_inputs,
    drawing_paths,
    read_box_csv,
    to_csv,
    to_jsonl,
    write_drawings,
    write_predictions,
)
from deconfound.predict.predictor import (
    BODY_RULE,
    Prediction,
    Predictor,
    body_from_face,
    face_from_body,
)

__all__ = [
    "BODY_RULE",
    "Prediction",
    "Predictor",
    "annotate",
    "body_from_face",
    "check_output",
    "collect_inputs",
    "drawing_paths",
    "face_from_body",
    "read_box_csv",
    "to_csv",
    "to_jsonl",
    "write_drawings",
    "write_predictions",
]
