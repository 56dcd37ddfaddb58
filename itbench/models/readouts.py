"""Linear readouts on torch: OLS, ridge with leave-one-out alpha choice, PCA.

The fitted quantities match scikit-learn's (``LinearRegression``,
``RidgeCV(alpha_per_target=True)``, ``Ridge``, ``PCA``); the point of having our
own is speed on the shapes this project meets (a few thousand images, up to a
few hundred thousand features, 168 targets) and running on a GPU when there is
one. The API is sklearn-like: ``fit(X, Y) -> self``, ``predict(X)``,
``transform(X)``; numpy in gives numpy out, a torch tensor in gives a tensor out
(on the input's device). Fitted attributes follow the kind of the ``fit`` input.

Design choices, and why:

* **One decomposition, every alpha.** Ridge's leave-one-out error has a closed
  form given the eigendecomposition of the smaller of ``Xc Xcᵀ`` (n <= p,
  "gram") and ``Xcᵀ Xc`` (n > p, "cov"; the right singular vectors of X, i.e.
  the SVD route without forming U). We decompose once and evaluate all alphas
  for all targets with a few matrix products, picking the alpha per target that
  minimises the LOO mean squared error, exactly sklearn's ``_RidgeGCV``
  criterion (ties go to the first alpha in the given order, as in sklearn). The
  intercept is fitted, unpenalised, by centring; its LOO correction is the
  ``- 1/n`` term in the leverage denominator.
* **Precision.** Linear models compute in float64 by default (``dtype=``): it
  is what makes predictions agree with sklearn to 1e-5, and float64 is cheap
  for the n x n problems here (and on data-centre GPUs). PCA computes in the
  input's float dtype (float32 stays float32, as in sklearn) and solves the
  small eigenproblem in float64.
* **No needless copies.** X is never centred or cast as a whole: every pass
  walks over blocks of rows or columns, centring and casting one block at a
  time, and accumulates into float64. A float32 feature matrix of 2 GB thus
  costs ~2 GB, not 6 GB.
* **CPU BLAS.** On CPU the large products and eigensolvers go through numpy
  (zero-copy views of the tensors). Its OpenBLAS computes ``A Aᵀ`` with a
  symmetric rank-k update (half the flops of a general product) and on the AMD
  CPUs we measured it was faster than torch's MKL; on CUDA everything is torch.
* **OLS** is the minimum-norm least-squares solution (what sklearn's
  ``LinearRegression`` returns through LAPACK ``gelsd``, also when p > n),
  computed as a pseudo-inverse from the same eigendecomposition. Eigenvalues
  below ``rcond * max eigenvalue`` are treated as zero (default
  ``rcond = max(n, p) * eps``): this is the resolution of a Gram matrix, so it
  agrees with sklearn for condition numbers of X up to ~1e6; ``solver="svd"``
  does a thin SVD of the centred X for worse-conditioned problems.
* **PCA** uses the exact eigendecomposition of the smaller Gram matrix when
  that is cheaper than randomized subspace iteration (always the case for
  n ~ 3000 images and ~1000 components: one pass to form ``Xc Xcᵀ``, one to
  form the components, against ten passes for sklearn's randomized solver),
  and randomized subspace iteration (LU- or QR-normalised power iterations, like
  ``sklearn.utils.extmath.randomized_svd``) otherwise. ``n_components`` larger
  than ``min(n, p)`` is clamped to it with a warning (the sweep asks for
  PCA(1000) even on small benchmarks). Components are the normalised rows
  of ``Qᵀ Xc`` and their norms the singular values, accurate far down the
  spectrum (pixel spectra span many decades); a component with a singular
  value of exactly zero is returned as zeros.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from itbench.errors import ItbenchError

__all__ = ["DEFAULT_ALPHAS", "OLS", "PCA", "ReadoutError", "Ridge", "RidgeGCV"]

#: The default ridge grid: 10 values, 1e-3 ... 1e6.
#: The alpha grid of every ridge readout in itbench (Table I rows, sweeps): 1e-2 ... 1e7.
DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-2, 7, 19))

_BLOCK_ELEMENTS = 1 << 23  # ~64 MB of float64 per centred block


class ReadoutError(ItbenchError, ValueError):
    """A readout was given inputs or settings it cannot fit."""


# --------------------------------------------------------------------------- backend


def _one_torch_thread(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run a public method with torch's CPU ops single-threaded, then restore the setting.

    The heavy CPU work goes through numpy's OpenBLAS (see ``_matmul``), whose
    idle threads spin for a while after each call; torch's OpenMP workers then
    wait for cores the spinning threads hold, and on a 2-core machine a fit
    took 10x longer (0.25 s instead of 0.025 s for 600 x 200, measured). With
    torch on one thread the two pools never compete; torch's remaining CPU
    work here is elementwise and memory-bound anyway.
    """

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        threads = torch.get_num_threads()
        if threads == 1:
            return method(*args, **kwargs)
        torch.set_num_threads(1)
        try:
            return method(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return wrapper


def _matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b``; through numpy's BLAS on CPU (syrk for ``A Aᵀ``, see module doc)."""
    if a.device.type != "cpu":
        return a @ b
    return torch.from_numpy(np.matmul(a.numpy(), b.numpy()))


def _idle_cores() -> int:
    """Cores not busy with other work (affinity minus the 1-minute load beyond our own process)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        load = os.getloadavg()[0]
    except OSError:  # no load average on this platform
        return cores
    return max(1, min(cores, int(cores - max(0.0, load - 1.0) + 0.5)))


@contextlib.contextmanager
def _blas_threads(limit: int) -> Iterator[None]:
    """Cap numpy's BLAS threads for a sync-heavy LAPACK call (no-op without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        yield
        return
    with threadpool_limits(limits=limit, user_api="blas"):
        yield


def _eigh_desc(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric eigendecomposition, eigenvalues in descending order.

    CPU: numpy (OpenBLAS) for large matrices, where it is fastest; torch (MKL)
    below 512. The tridiagonal reduction is a long series of small, memory-
    bound steps, each a thread synchronisation: when other processes hold the
    cores, threaded OpenBLAS collapses (2592 x 2592: 28 s on two threads vs
    7 s on one, measured on a loaded 2-core VM; 200 x 200: 0.4 s vs 7 ms). So
    it runs on as many threads as there are idle cores.
    """
    if m.device.type == "cpu" and m.shape[0] > 512:
        with _blas_threads(_idle_cores()):
            w_np, v_np = np.linalg.eigh(m.numpy())
        w, v = torch.from_numpy(w_np), torch.from_numpy(v_np)
    else:
        w, v = torch.linalg.eigh(m)
    return w.flip(0), v.flip(1)


def _spd_solve(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Solve ``a x = b`` for symmetric positive definite ``a`` (Cholesky)."""
    if a.device.type == "cpu":
        import scipy.linalg

        return torch.from_numpy(scipy.linalg.cho_solve(scipy.linalg.cho_factor(a.numpy()), b.numpy()))
    return torch.cholesky_solve(b, torch.linalg.cholesky(a))


def _blocks(size: int, other: int) -> Iterator[slice]:
    """Slices of ``range(size)`` whose blocks hold about ``_BLOCK_ELEMENTS`` values."""
    step = max(64, _BLOCK_ELEMENTS // max(other, 1))
    for start in range(0, size, step):
        yield slice(start, min(start + step, size))


def _centered(block: torch.Tensor, mean: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """A block of X cast to ``dtype`` and centred; a view when neither is needed (read-only use)."""
    out = block.to(dtype)
    return out if mean is None else out - mean.to(dtype)


def _column_mean(x: torch.Tensor) -> torch.Tensor:
    """Float64 column means, accumulated block by block (no full float64 copy)."""
    total = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    for rows in _blocks(x.shape[0], x.shape[1]):
        total += x[rows].to(torch.float64).sum(0)
    return total / x.shape[0]


def _gram(x: torch.Tensor, mean: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """``Xc Xcᵀ`` (n x n, float64), accumulated over blocks of columns."""
    n, p = x.shape
    k = torch.zeros(n, n, dtype=torch.float64, device=x.device)
    for cols in _blocks(p, n):
        c = _centered(x[:, cols], None if mean is None else mean[cols], dtype)
        k += _matmul(c, c.T)
    return k


def _cov(x: torch.Tensor, mean: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """``Xcᵀ Xc`` (p x p, float64), accumulated over blocks of rows."""
    n, p = x.shape
    s = torch.zeros(p, p, dtype=torch.float64, device=x.device)
    for rows in _blocks(n, p):
        c = _centered(x[rows], mean, dtype)
        s += _matmul(c.T, c)
    return s


def _x_dot(x: torch.Tensor, mean: torch.Tensor | None, m: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``Xc @ m`` (n x k), result in ``m``'s dtype.

    Wide X (p > n, so ``m`` is the big operand): blocks of columns, each
    slice of ``m`` read once and the small n x k result accumulated. Blocks of
    rows there would re-read all of ``m`` per block (33 GB of memory traffic
    per pass for 2592 x 200,000 @ 200,000 x 1010). Tall X: blocks of rows.
    """
    n, p = x.shape
    md = m.to(dtype)
    if p > n:
        acc = torch.zeros(n, m.shape[1], dtype=dtype, device=x.device)
        for cols in _blocks(p, n):
            acc += _matmul(_centered(x[:, cols], None if mean is None else mean[cols], dtype), md[cols])
        return acc.to(m.dtype)
    out = torch.empty(n, m.shape[1], dtype=m.dtype, device=x.device)
    for rows in _blocks(n, p):
        out[rows] = _matmul(_centered(x[rows], mean, dtype), md).to(m.dtype)
    return out


def _xt_dot(x: torch.Tensor, mean: torch.Tensor | None, m: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``Xcᵀ @ m`` (p x k) over blocks of columns, result in ``m``'s dtype."""
    out = torch.empty(x.shape[1], m.shape[1], dtype=m.dtype, device=x.device)
    md = m.to(dtype)
    for cols in _blocks(x.shape[1], x.shape[0]):
        c = _centered(x[:, cols], None if mean is None else mean[cols], dtype)
        out[cols] = _matmul(c.T, md).to(m.dtype)
    return out


# --------------------------------------------------------------------------- inputs


def _to_tensor(name: str, data: Any, device: str | torch.device | None) -> tuple[torch.Tensor, bool]:
    """Tensor view of numpy/torch input (no copy unless a device move is asked for)."""
    is_numpy = not isinstance(data, torch.Tensor)
    if is_numpy:
        arr = np.asarray(data)
        if arr.dtype.kind not in "fiub":
            raise ReadoutError(f"{name} must be numeric, got dtype {arr.dtype}", hint="pass a float array")
        if arr.dtype.kind == "b":
            arr = arr.astype(np.uint8)
        if not arr.dtype.isnative:
            arr = arr.astype(arr.dtype.newbyteorder("="))
        with warnings.catch_warnings():  # read-only arrays are fine: we never write into X
            warnings.simplefilter("ignore", UserWarning)
            t = torch.from_numpy(arr)
    else:
        t = data.detach()
        if t.is_complex() or t.dtype == torch.bool:
            raise ReadoutError(f"{name} must be real-valued, got {t.dtype}", hint="pass a float tensor")
    if device is not None and t.device != torch.device(device):
        t = t.to(device)
    return t, is_numpy


def _features(name: str, data: Any, device: str | torch.device | None) -> tuple[torch.Tensor, bool]:
    """A 2-D feature matrix (n_images, n_features) with at least one row and column."""
    x, is_numpy = _to_tensor(name, data, device)
    if x.ndim != 2:
        raise ReadoutError(
            f"{name} must be 2-D (n_images, n_features), got shape {tuple(x.shape)}",
            hint="flatten per-image features, e.g. feats.reshape(len(feats), -1)",
        )
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ReadoutError(
            f"{name} is empty: shape {tuple(x.shape)}", hint="pass at least one image and feature"
        )
    return x, is_numpy


def _checked_mean(name: str, x: torch.Tensor) -> torch.Tensor:
    """Column means, which double as the NaN/inf check (any non-finite value shows up here)."""
    mean = _column_mean(x)
    if not bool(torch.isfinite(mean).all()):
        bad = int((~torch.isfinite(mean)).sum())
        raise ReadoutError(
            f"{name} contains NaN or inf (in {bad} feature columns)",
            hint="check the feature extraction for overflow or missing values",
        )
    return mean


def _out(t: torch.Tensor, as_numpy: bool, device: torch.device | None = None) -> Any:
    """Return ``t`` as numpy (for numpy callers) or as a tensor on ``device``."""
    if as_numpy:
        return t.detach().cpu().numpy()
    return t if device is None else t.to(device)


def _float_dtype(x: torch.Tensor) -> torch.dtype:
    """The input's float dtype, or float32 for integer input (e.g. uint8 pixels)."""
    return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32


# --------------------------------------------------------------------------- linear models


class _Linear:
    """Shared plumbing for the linear readouts: input checks, centring, predict."""

    def __init__(self, fit_intercept: bool, device: str | torch.device | None, dtype: torch.dtype):
        self.fit_intercept = fit_intercept
        self.device = device
        self.dtype = dtype

    def _prepare(
        self, X: Any, Y: Any
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """Validate X, Y; return X, its column mean (None without intercept), centred Y, Y mean."""
        x, self._numpy_io = _features("X", X, self.device)
        y, _ = _to_tensor("Y", Y, x.device)
        self._y_1d = y.ndim == 1
        y = y.reshape(-1, 1) if self._y_1d else y
        if y.ndim != 2 or y.shape[0] != x.shape[0]:
            raise ReadoutError(
                f"Y has shape {tuple(Y.shape) if hasattr(Y, 'shape') else '?'} but X has {x.shape[0]} rows",
                hint="Y must be (n_images,) or (n_images, n_targets) for the same images as X",
            )
        if x.shape[0] < 2:
            raise ReadoutError("need at least 2 images to fit a readout", hint="pass more training images")
        y = y.to(torch.float64)
        if not bool(torch.isfinite(y).all()):
            raise ReadoutError(
                "Y contains NaN or inf", hint="drop or impute missing responses before fitting"
            )
        self._device = x.device
        self.n_features_in_ = x.shape[1]
        x_mean: torch.Tensor | None = _checked_mean("X", x)
        x_mean = x_mean if self.fit_intercept else None
        y_mean = (
            y.mean(0) if self.fit_intercept else torch.zeros(y.shape[1], dtype=torch.float64, device=x.device)
        )
        return x, x_mean, y - y_mean, y_mean

    def _set_coef(self, w: torch.Tensor, x_mean: torch.Tensor | None, y_mean: torch.Tensor) -> None:
        """Store weights (p x T, float64) and the intercept ``ȳ - x̄ᵀW``."""
        self._w = w
        self._b = y_mean - (x_mean @ w if x_mean is not None else 0.0)

    @property
    def coef_(self) -> Any:
        """Weights, ``(n_targets, n_features)`` (``(n_features,)`` for 1-D Y), as sklearn."""
        w = self._w.T
        return _out(w[0] if self._y_1d else w, self._numpy_io)

    @property
    def intercept_(self) -> Any:
        """Intercepts, ``(n_targets,)`` (a 0-d value for 1-D Y)."""
        return _out(self._b[0] if self._y_1d else self._b, self._numpy_io)

    @_one_torch_thread
    def predict(self, X: Any) -> Any:
        """Predictions ``X @ coef_ᵀ + intercept_`` (float64 unless ``dtype`` says otherwise)."""
        if not hasattr(self, "_w"):
            raise ReadoutError(f"this {type(self).__name__} is not fitted yet", hint="call fit(X, Y) first")
        x, is_numpy = _features("X", X, None)
        if x.shape[1] != self.n_features_in_:
            raise ReadoutError(
                f"X has {x.shape[1]} features but the readout was fitted on {self.n_features_in_}",
                hint="extract the same layer / PCA as for training",
            )
        origin = x.device
        x = x.to(self._device)
        pred = _x_dot(x, None, self._w.to(self.dtype), self.dtype) + self._b.to(self.dtype)
        pred = pred[:, 0] if self._y_1d else pred
        return _out(pred, is_numpy, origin)


def _default_rcond(n: int, p: int, dtype: torch.dtype) -> float:
    """Relative cutoff below which spectral values count as zero (numpy lstsq's rule)."""
    return max(n, p) * torch.finfo(dtype).eps


class OLS(_Linear):
    """Ordinary least squares, minimum-norm solution (sklearn ``LinearRegression``).

    ``solver="gram"`` (default) pseudo-inverts the eigendecomposition of the
    smaller Gram matrix (fast; condition numbers of X up to ~1e6);
    ``solver="svd"`` takes a thin SVD of the centred X in float64 (slower,
    robust to any conditioning; materialises the centred X). ``rcond`` is the
    relative cutoff on singular values (default ``max(n, p) * eps``).
    """

    def __init__(
        self,
        fit_intercept: bool = True,
        solver: str = "gram",
        rcond: float | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float64,
    ):
        super().__init__(fit_intercept, device, dtype)
        if solver not in ("gram", "svd"):
            raise ReadoutError(f"unknown OLS solver {solver!r}", hint="use 'gram' or 'svd'")
        self.solver = solver
        self.rcond = rcond

    @_one_torch_thread
    def fit(self, X: Any, Y: Any) -> OLS:
        """Fit the minimum-norm least-squares weights."""
        x, x_mean, yc, y_mean = self._prepare(X, Y)
        n, p = x.shape
        rcond = self.rcond if self.rcond is not None else _default_rcond(n, p, self.dtype)
        if self.solver == "svd":
            xc = _centered(x, x_mean, torch.float64)
            if xc.device.type == "cpu":
                u, s, vh = (torch.from_numpy(a) for a in np.linalg.svd(xc.numpy(), full_matrices=False))
            else:
                u, s, vh = torch.linalg.svd(xc, full_matrices=False)
            keep = s > s[0] * rcond
            self._rank = keep.sum()
            inv = torch.where(keep, 1.0 / torch.where(keep, s, torch.ones_like(s)), torch.zeros_like(s))
            w = _matmul(vh.T, inv[:, None] * _matmul(u.T, yc))
        else:
            w = self._gram_solve(x, x_mean, yc, rcond)
        self._set_coef(w, x_mean, y_mean)
        self.rank_ = int(self._rank)
        return self

    def _gram_solve(
        self, x: torch.Tensor, x_mean: torch.Tensor | None, yc: torch.Tensor, rcond: float
    ) -> torch.Tensor:
        """Pseudo-inverse through the eigendecomposition of Xc Xcᵀ or Xcᵀ Xc."""
        n, p = x.shape
        big = n <= p
        evals, vecs = _eigh_desc(_gram(x, x_mean, self.dtype) if big else _cov(x, x_mean, self.dtype))
        # eigenvalues are squared singular values: cut at (rcond * s_max)^2 ... but never
        # below what the Gram matrix itself resolves (eps * max(n, p) relative to λ_max)
        cut = evals[0] * max(rcond**2, _default_rcond(n, p, self.dtype))
        keep = evals > cut
        self._rank = keep.sum()
        inv = torch.where(
            keep, 1.0 / torch.where(keep, evals, torch.ones_like(evals)), torch.zeros_like(evals)
        )
        if big:  # W = Xcᵀ Q Λ⁺ Qᵀ Yc
            dual = _matmul(vecs, inv[:, None] * _matmul(vecs.T, yc))
            return _xt_dot(x, x_mean, dual, self.dtype)
        xty = _xt_dot(x, x_mean, yc, self.dtype)  # W = V Λ⁺ Vᵀ Xcᵀ Yc
        return _matmul(vecs, inv[:, None] * _matmul(vecs.T, xty))


class RidgeGCV(_Linear):
    """Ridge regression, alpha per target chosen by efficient leave-one-out.

    Equivalent to ``sklearn.linear_model.RidgeCV(alphas, alpha_per_target=True)``
    (its default GCV mode, mean squared LOO error). After ``fit``: ``alpha_``
    (numpy, one per target), ``best_score_`` (negative LOO MSE at ``alpha_``,
    as sklearn), ``loo_mse_`` (``(n_alphas, n_targets)``), ``mode_`` ("gram" or
    "cov"). With ``alpha_per_target=False`` one alpha (lowest mean LOO error
    over targets) is used for all. A single alpha (scalar or length-1) skips
    the LOO computation and solves that ridge directly (Cholesky), which is
    ``sklearn.linear_model.Ridge(alpha)``; see also :class:`Ridge`.
    """

    def __init__(
        self,
        alphas: float | Sequence[float] = DEFAULT_ALPHAS,
        alpha_per_target: bool = True,
        fit_intercept: bool = True,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float64,
    ):
        super().__init__(fit_intercept, device, dtype)
        a = np.atleast_1d(np.asarray(alphas, dtype=np.float64))
        if a.ndim != 1 or a.size == 0 or not np.all(np.isfinite(a)) or np.any(a <= 0):
            raise ReadoutError(
                f"alphas must be positive finite numbers, got {alphas!r}", hint="e.g. np.logspace(-3, 6, 10)"
            )
        self.alphas = a
        self.alpha_per_target = alpha_per_target

    @_one_torch_thread
    def fit(self, X: Any, Y: Any) -> RidgeGCV:
        """Decompose once, score every alpha by LOO error, keep the best per target."""
        x, x_mean, yc, y_mean = self._prepare(X, Y)
        n, p = x.shape
        self.mode_ = "gram" if n <= p else "cov"
        if len(self.alphas) == 1:
            self.alpha_ = np.full(yc.shape[1], self.alphas[0])
            self.best_score_ = self.loo_mse_ = None
            self._set_coef(self._solve_fixed(x, x_mean, yc, float(self.alphas[0])), x_mean, y_mean)
            return self
        if self.mode_ == "gram":
            evals, z = _eigh_desc(_gram(x, x_mean, self.dtype))
            vecs = z
        else:
            evals, vecs = _eigh_desc(_cov(x, x_mean, self.dtype))
            z = _x_dot(x, x_mean, vecs, self.dtype)  # Xc V: unnormalised left singular vectors
        evals = evals.clamp_min(0.0)
        zty = _matmul(z.T, yc)
        alphas = torch.as_tensor(self.alphas, dtype=torch.float64, device=x.device)
        mse = self._loo_mse(z, zty, yc, evals, alphas)
        self.loo_mse_ = mse.cpu().numpy()
        if self.alpha_per_target:
            best = np.argmin(self.loo_mse_, axis=0)  # first minimum, as sklearn's strict '>'
        else:
            best = np.full(yc.shape[1], int(np.argmin(self.loo_mse_.mean(axis=1))))
        self.alpha_ = self.alphas[best]
        self.best_score_ = -self.loo_mse_[best, np.arange(yc.shape[1])]
        a = torch.as_tensor(self.alpha_, dtype=torch.float64, device=x.device)
        d = 1.0 / (evals[:, None] + a[None, :])  # (r, T): one alpha per target
        if self.mode_ == "gram":  # W = Xcᵀ Q (Λ + α)⁻¹ Qᵀ Yc
            w = _xt_dot(x, x_mean, _matmul(vecs, d * zty), self.dtype)
        else:  # W = V (Λ + α)⁻¹ Vᵀ Xcᵀ Yc, and Vᵀ Xcᵀ Yc = Zᵀ Yc
            w = _matmul(vecs, d * zty)
        self._set_coef(w, x_mean, y_mean)
        return self

    def _loo_mse(
        self, z: torch.Tensor, zty: torch.Tensor, yc: torch.Tensor, evals: torch.Tensor, alphas: torch.Tensor
    ) -> torch.Tensor:
        """Mean squared leave-one-out error, ``(n_alphas, n_targets)``.

        LOO residual: ``(y - H y)_i / (1 - 1/n - H_ii)`` (``1/n``: the intercept
        is refitted without the left-out image). "cov": ``H = Σ z_k z_kᵀ/(λ_k+α)``
        with ``Z = Xc V``. "gram": Q is a complete orthonormal basis, so both
        the residual and the denominator are written with ``α/(λ+α)`` (as
        sklearn's ``c / diag(G⁻¹)``) instead of subtracting from 1: near
        interpolation (p >= n, small α) the subtraction would cancel to noise.
        For the same reason the intercept term is ``((I - H) 1)_i / n``
        computed through Q, not the exact ``1/n``.
        """
        n, t = yc.shape
        r = z.shape[1]
        gram = self.mode_ == "gram"
        zz = z * z
        ones_q = z.sum(0)  # Qᵀ 1 (gram mode)
        offset = 1.0 / n if self.fit_intercept else 0.0
        step = max(1, (1 << 23) // max(n * t, 1))
        out = []
        for start in range(0, len(alphas), step):
            a_chunk = alphas[start : start + step, None]
            # gram: weights of (I - H); cov: weights of H
            g = a_chunk / (evals[None, :] + a_chunk) if gram else 1.0 / (evals[None, :] + a_chunk)  # (a, r)
            a = g.shape[0]
            diag = _matmul(zz, g.T.contiguous())  # (n, a): diag of I - H (gram) or of H (cov)
            if gram and self.fit_intercept:
                # subtract ((I - H) 1)_i / n rather than exactly 1/n: the ones vector is an
                # eigenvector of eigenvalue ~0, and the rounding of that eigenvalue then cancels
                denom = diag - _matmul(z, (g * ones_q[None, :]).T.contiguous()) / n
            else:
                denom = diag if gram else (1.0 - offset) - diag
            coef = (g[:, :, None] * zty[None]).permute(1, 0, 2).reshape(r, a * t)
            loo = _matmul(z, coef.contiguous()).reshape(n, a, t)  # gram: residuals; cov: fitted values
            if not gram:
                loo.neg_().add_(yc[:, None, :])
            loo.div_(denom[:, :, None]).square_()
            out.append(loo.mean(0))
        return torch.cat(out)

    def _solve_fixed(
        self, x: torch.Tensor, x_mean: torch.Tensor | None, yc: torch.Tensor, alpha: float
    ) -> torch.Tensor:
        """Ridge weights for one alpha, by Cholesky on the smaller regularised Gram matrix."""
        if self.mode_ == "gram":
            k = _gram(x, x_mean, self.dtype)
            k.diagonal().add_(alpha)
            return _xt_dot(x, x_mean, _spd_solve(k, yc), self.dtype)
        c = _cov(x, x_mean, self.dtype)
        c.diagonal().add_(alpha)
        return _spd_solve(c, _xt_dot(x, x_mean, yc, self.dtype))


class Ridge(RidgeGCV):
    """Ridge with one fixed alpha (sklearn ``Ridge``), e.g. Table I row 2's alpha=0.1."""

    def __init__(
        self,
        alpha: float = 1.0,
        fit_intercept: bool = True,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float64,
    ):
        super().__init__(alphas=[alpha], fit_intercept=fit_intercept, device=device, dtype=dtype)
        self.alpha = alpha


# --------------------------------------------------------------------------- PCA


def _orthonormal(m: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis of the columns (thin QR): the final range basis."""
    if m.device.type == "cpu":
        return torch.from_numpy(np.linalg.qr(m.numpy())[0])
    return torch.linalg.qr(m)[0]


def _normalise(m: torch.Tensor) -> torch.Tensor:
    """Power-iteration normaliser: a well-conditioned basis of the same span.

    On CPU the permuted L factor of an LU decomposition, as sklearn's
    ``randomized_svd`` does for ``n_iter > 2``: for a 200,000 x 1010 block it
    costs a fraction of a Householder QR plus forming Q. On CUDA, QR.
    """
    if m.device.type == "cpu":
        import scipy.linalg

        return torch.from_numpy(
            np.ascontiguousarray(scipy.linalg.lu(m.numpy(), permute_l=True, check_finite=False)[0])
        )
    return torch.linalg.qr(m)[0]


def _unit_rows(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows scaled to unit norm (zero rows stay zero) and the float64 row norms."""
    norms = raw.to(torch.float64).norm(dim=1)
    scale = torch.where(
        norms > 0, 1.0 / torch.where(norms > 0, norms, torch.ones_like(norms)), torch.zeros_like(norms)
    )
    return (raw * scale[:, None].to(raw.dtype)).contiguous(), norms


class PCA:
    """Principal component analysis on torch (sklearn ``PCA`` conventions).

    ``svd_solver``: ``"eigh"`` (exact, via the eigendecomposition of the smaller
    Gram matrix), ``"randomized"`` (subspace iteration with ``n_iter`` LU- (CPU) or QR-
    normalised power iterations and ``n_oversamples`` extra vectors, seeded by
    ``random_state``) or ``"auto"`` (whichever costs fewer flops). Attributes
    after ``fit`` (numpy or torch, following the input): ``mean_``,
    ``components_`` (k x p), ``explained_variance_`` (``S²/(n-1)``),
    ``explained_variance_ratio_``, ``singular_values_``, ``n_components_``,
    ``n_samples_``, ``solver_``. Signs follow sklearn (the largest-magnitude
    entry of each component is positive). ``whiten`` scales the projections to
    unit variance.
    """

    def __init__(
        self,
        n_components: int,
        whiten: bool = False,
        random_state: int | None = 0,
        svd_solver: str = "auto",
        n_iter: int = 4,
        n_oversamples: int = 10,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ):
        if (
            isinstance(n_components, bool)
            or not isinstance(n_components, (int, np.integer))
            or n_components < 1
        ):
            raise ReadoutError(
                f"n_components must be a positive integer, got {n_components!r}", hint="e.g. PCA(1000)"
            )
        if svd_solver not in ("auto", "eigh", "randomized"):
            raise ReadoutError(
                f"unknown svd_solver {svd_solver!r}", hint="use 'auto', 'eigh' or 'randomized'"
            )
        self.n_components = int(n_components)
        self.whiten = whiten
        self.random_state = random_state
        self.svd_solver = svd_solver
        self.n_iter = n_iter
        self.n_oversamples = n_oversamples
        self.device = device
        self.dtype = dtype

    # ---- fitting

    @_one_torch_thread
    def fit(self, X: Any) -> PCA:
        """Fit the components (X is not copied; blocks are centred on the fly)."""
        self._fit(X, want_scores=False)
        return self

    @_one_torch_thread
    def fit_transform(self, X: Any) -> Any:
        """Fit and return the projections of X (from the decomposition, no extra pass)."""
        return self._fit(X, want_scores=True)

    def _fit(self, X: Any, want_scores: bool) -> Any:
        """Validate, choose a solver, decompose, store; optionally return scores."""
        x, self._numpy_io = _features("X", X, None)
        origin = x.device
        x = x.to(self.device) if self.device is not None else x
        n, p = x.shape
        if n < 2:
            raise ReadoutError("PCA needs at least 2 images", hint="pass more images")
        k = self.n_components
        if k > min(n, p):
            warnings.warn(
                f"PCA(n_components={k}) on {n} x {p} data: using {min(n, p)} components",
                UserWarning,
                stacklevel=3,
            )
            k = min(n, p)
        dtype = self.dtype or _float_dtype(x)
        self.solver_ = self._choose_solver(n, p, k) if self.svd_solver == "auto" else self.svd_solver
        self._dtype, self._device = dtype, x.device
        self._mean = _checked_mean("X", x)
        if self.solver_ == "eigh":
            s, comps, scores_u, total = self._fit_eigh(x, k, dtype, want_scores)
        else:
            s, comps, scores_u, total = self._fit_randomized(x, k, dtype, want_scores)
        # sklearn's sign convention: largest |entry| of each component positive
        signs = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True))[:, 0].to(torch.float64))
        signs[signs == 0] = 1.0
        self._components = comps * signs[:, None].to(comps.dtype)
        self._singular = s
        self._ev = s**2 / (n - 1)
        self._evr = self._ev / (total / (n - 1)) if total > 0 else torch.zeros_like(self._ev)
        self.n_components_, self.n_samples_, self.n_features_in_ = k, n, p
        if not want_scores:
            return None
        assert scores_u is not None  # _fit_* return U*S whenever want_scores
        scores = scores_u * signs[None, :]
        if self.whiten:
            scores = scores * math.sqrt(n - 1) / torch.where(s > 0, s, torch.ones_like(s)) * (s > 0)
        return _out(scores.to(dtype), self._numpy_io, origin)

    def _choose_solver(self, n: int, p: int, k: int) -> str:
        """Pick the cheaper solver by a flop count (exact Gram route vs subspace iteration)."""
        small, large = min(n, p), max(n, p)
        ell = min(k + self.n_oversamples, small)
        eigh_cost = small * small * large + 10.0 * small**3 + 2.0 * k * n * p
        randomized_cost = 2.0 * n * p * ell * (2 * self.n_iter + 2)
        return "eigh" if eigh_cost <= randomized_cost and small <= 20000 else "randomized"

    def _fit_eigh(
        self, x: torch.Tensor, k: int, dtype: torch.dtype, want_scores: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, float]:
        """Exact top-k from the smaller Gram matrix; returns S, components, U*S, total SS."""
        n, p = x.shape
        if n <= p:
            gram = _gram(x, self._mean, dtype)
            total = float(gram.diagonal().sum())
            _, q = _eigh_desc(gram)
            q = q[:, :k]
            # components are the normalised rows of Qᵀ Xc, and their norms the singular
            # values: accurate to working precision even for components far below the
            # largest (sqrt of a Gram eigenvalue is not), and no division by a tiny S
            comps, s = _unit_rows(_xt_dot(x, self._mean, q.to(dtype), dtype).T)
            scores = q * s[None, :] if want_scores else None
            return s, comps, scores, total
        cov = _cov(x, self._mean, dtype)
        total = float(cov.diagonal().sum())
        evals, v = _eigh_desc(cov)
        s = evals[:k].clamp_min(0.0).sqrt()
        comps = v[:, :k].T.to(dtype).contiguous()
        scores = _x_dot(x, self._mean, v[:, :k], dtype) if want_scores else None
        return s, comps, scores, total

    def _fit_randomized(
        self, x: torch.Tensor, k: int, dtype: torch.dtype, want_scores: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, float]:
        """Randomized subspace iteration (Halko et al. 2011, as sklearn's randomized_svd)."""
        n, p = x.shape
        ell = min(k + self.n_oversamples, min(n, p))
        gen = torch.Generator(device=x.device)
        gen.manual_seed(0 if self.random_state is None else int(self.random_state))
        omega = torch.randn(p, ell, generator=gen, device=x.device, dtype=dtype)
        q = _x_dot(x, self._mean, omega, dtype)
        for _ in range(self.n_iter):
            q = _normalise(_xt_dot(x, self._mean, _normalise(q), dtype))
            q = _x_dot(x, self._mean, q, dtype)
        q = _orthonormal(q)
        bt = _xt_dot(x, self._mean, q, dtype)  # Bᵀ = Xcᵀ Q, p x ell
        total = 0.0
        for rows in _blocks(n, p):
            total += float((_centered(x[rows], self._mean, dtype).to(torch.float64) ** 2).sum())
        small = _matmul(bt.T, bt).to(torch.float64)  # B Bᵀ, ell x ell
        _, ub = _eigh_desc(small)
        ub = ub[:, :k]
        comps, s = _unit_rows(_matmul(bt, ub.to(dtype)).T)  # rows of U_Bᵀ B, normalised
        scores = _matmul(q.to(torch.float64), ub) * s[None, :] if want_scores else None
        return s, comps, scores, total

    # ---- using a fitted PCA

    @_one_torch_thread
    def transform(self, X: Any) -> Any:
        """Project X onto the components (``(X - mean_) @ components_ᵀ``, whitened if asked)."""
        if not hasattr(self, "_components"):
            raise ReadoutError("this PCA is not fitted yet", hint="call fit(X) first")
        x, is_numpy = _features("X", X, None)
        if x.shape[1] != self.n_features_in_:
            raise ReadoutError(
                f"X has {x.shape[1]} features but the PCA was fitted on {self.n_features_in_}",
                hint="use the same layer and image size as for fitting",
            )
        origin = x.device
        out = _x_dot(x.to(self._device), self._mean, self._components.T.contiguous(), self._dtype)
        if self.whiten:
            ev = self._ev.to(out.dtype)
            out = out / torch.where(ev > 0, ev.sqrt(), torch.ones_like(ev))
        return _out(out, is_numpy, origin)

    def _attr(self, t: torch.Tensor) -> Any:
        """A fitted attribute in the kind (numpy/torch) of the fit input."""
        return _out(t, self._numpy_io)

    @property
    def mean_(self) -> Any:
        return self._attr(self._mean)

    @property
    def components_(self) -> Any:
        return self._attr(self._components)

    @property
    def explained_variance_(self) -> Any:
        return self._attr(self._ev)

    @property
    def explained_variance_ratio_(self) -> Any:
        return self._attr(self._evr)

    @property
    def singular_values_(self) -> Any:
        return self._attr(self._singular)
