"""The oracle at 2, 4, 8 and 50 repetitions: old and new normalised r (issue 19).

Planted responses: per image and neuroid a signal (sd 1) plus trial noise (sd
1.06, so the ceiling at 4 repetitions is about 0.78, as in the issue). The
oracle predicts the signal. Scored by ``itbench.scoring.metrics.summarize``,
the code ``itbench score`` runs. Run: ``python docs/ceiling_oracle.py``.
"""

from __future__ import annotations

import numpy as np

from itbench.scoring.metrics import summarize


def oracle_scores(n_reps: int, n_images: int = 100, n_neuroids: int = 30, seed: int = 19) -> dict:
    """Scores of the noise-free-signal model on one planted assembly."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(0.0, 1.0, (n_images, n_neuroids))
    trials = signal[:, None, :] + rng.normal(0.0, 1.06, (n_images, n_reps, n_neuroids))
    return summarize(signal, trials.mean(axis=1), trials, n_boot=1000)["scores"]


def main() -> None:
    print("reps  mean r  ceiling  r/ceiling (old)  r/sqrt(ceiling) (new) [95% CI]  FEVE [95% CI]")
    for n_reps in (2, 4, 8, 50):
        s = oracle_scores(n_reps)
        lo, hi = s["ci"]["normalized_r"]
        flo, fhi = s["ci"]["feve"]
        print(
            f"{n_reps:>4}  {s['mean_r']:.3f}   {s['ceiling']:.3f}    {s['r_over_ceiling']:.3f}"
            f"            {s['normalized_r']:.3f} [{lo:.3f}, {hi:.3f}]"
            f"           {s['feve']:.3f} [{flo:.3f}, {fhi:.3f}]"
        )


if __name__ == "__main__":
    main()
