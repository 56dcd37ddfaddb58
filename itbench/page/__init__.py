"""The leaderboard: a static page, Markdown tables and figures from records alone.

``leaderboard.render`` reads the stored result records (through
:mod:`itbench.harness.record`), never runs a model or imports torch, and writes
a self-contained ``index.html``, per-submission pages, ``README.md`` and
machine-readable results; ``figures`` draws the SVGs with matplotlib.
"""
