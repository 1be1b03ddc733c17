"""Pipelines: what runs over data, backbones, training and clustering to make an artifact or a
table — the confounder dictionary build (:mod:`.dictionary`), each split's context strata
(:mod:`.strata`), the demo (:mod:`.demo`) and the method benchmark (:mod:`.benchmark`). The
building blocks they use (data, models, methods) never import them; the engine's ``train``
reads strata through :mod:`.strata` when a method or the re-weighted metric needs them."""
