"""Running submissions and recording what happened.

``submission`` finds and validates plugin folders; ``runner`` scores one
submission on one benchmark split: it runs ``worker`` in the ``sandbox`` (a
separate process that sees the train split and images only), validates the
predictions, scores them and writes a ``record`` atomically. ``device`` picks
CPU or CUDA, ``sweep`` scores every layer of a network (Fig. 1), ``scaffold``
creates a new submission folder from a template.
"""
