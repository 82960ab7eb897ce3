"""First analyses of recorded network activity, an encoding-model fit, and `vrat analyze`.

Everything works on an activation file from `vrat run --activations FILE`
(`vrat_ros.activations`) and needs numpy, scipy and matplotlib only.

Representations: the observation, each hidden layer named in the contract, and the action.
Each is a (T, n) matrix over control steps.

  dimensionality   PCA (SVD of the centred matrix): variance explained per component, the
                   components needed for 90 % and 95 %, and the participation ratio
                   (sum lambda)^2 / sum lambda^2.
  embedding        the first two principal components, coloured by behaviour label.
  RSA              per behaviour condition, the mean of each unit (units z-scored over time,
                   then centred across conditions); the dissimilarity of two conditions is
                   1 - Pearson r of their mean patterns; two representations are compared by
                   the Spearman correlation of their dissimilarities (upper triangles).
Behaviour labels, per step: 'speed' (default) clusters the reference joint speed (rad/s,
smoothed over 0.2 s) into k classes, speed1 the slowest, with 1-D k-means; 'chunks' cuts the
run into k equal pieces of the clip; a labels CSV of `frame,label` rows (clip frame
indices; each label holds from its frame until the next row) gives the user's own.

Encoding model (`fit_encoding_model`): ridge regression from a layer's activations to a
neural recording aligned to the control steps, scored by held-out R^2 per recorded unit with
blocked (contiguous) cross-validation; the ridge penalty is chosen per unit by an inner
blocked cross-validation on the training blocks only. `shuffle_null` gives the chance level
by circularly shifting the recording against the activations.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from typing import Sequence

import numpy as np
import numpy.typing as npt

DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-2, 5, 8))
SEGMENT_METHODS = ('speed', 'chunks')
_DEFAULT_SEGMENTS = {'speed': 4, 'chunks': 8}
_SPEED_SMOOTH_S = 0.2
_DPI = 100


# Dimensionality and embedding.

def variance_explained(x: npt.ArrayLike) -> np.ndarray:
    """Returns the fraction of variance of each principal component of x (T, n), descending.

    A matrix without variance returns zeros.
    """
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=0)
    s = np.linalg.svd(x, compute_uv=False)
    power = s ** 2
    total = power.sum()
    return power / total if total > 0 else np.zeros_like(power)


def participation_ratio(ratios: npt.ArrayLike) -> float:
    """Returns (sum lambda)^2 / sum lambda^2 of variance fractions (an effective dimension)."""
    ratios = np.asarray(ratios, dtype=np.float64)
    denom = float(np.sum(ratios ** 2))
    return float(np.sum(ratios) ** 2 / denom) if denom > 0 else 0.0


def components_for(ratios: npt.ArrayLike, fraction: float) -> int:
    """Returns how many leading components explain at least `fraction` of the variance."""
    cumulative = np.cumsum(np.asarray(ratios, dtype=np.float64))
    if cumulative.size == 0 or cumulative[-1] <= 0:
        return 0
    return int(np.searchsorted(cumulative, fraction - 1e-12) + 1)


def pca_scores(x: npt.ArrayLike, k: int = 2) -> np.ndarray:
    """Returns the (T, k) scores of x (T, n) on its first k principal components."""
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    scores = u[:, :k] * s[:k]
    if scores.shape[1] < k:
        scores = np.pad(scores, ((0, 0), (0, k - scores.shape[1])))
    return scores


# Behaviour labels.

def _kmeans_1d(values: np.ndarray, k: int, iterations: int = 100) -> np.ndarray:
    """Returns the class (0 = smallest centre) of each value; deterministic quantile start."""
    centres = np.unique(np.quantile(values, (np.arange(k) + 0.5) / k))
    for _ in range(iterations):
        classes = np.argmin(np.abs(values[:, None] - centres[None, :]), axis=1)
        updated = np.array([values[classes == c].mean() if np.any(classes == c) else centres[c]
                            for c in range(len(centres))])
        if np.allclose(updated, centres):
            break
        centres = updated
    order = np.argsort(centres)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[np.argmin(np.abs(values[:, None] - centres[None, :]), axis=1)]


def reference_speed(time_s: npt.ArrayLike, ref_joint_pos: npt.ArrayLike,
                    smooth_s: float = _SPEED_SMOOTH_S) -> np.ndarray:
    """Returns the reference joint speed |dq/dt| (rad/s) per step, smoothed over smooth_s.

    Args:
        time_s: (T,) step times (s).
        ref_joint_pos: (T, K, J) reference windows, or (T, J) joint angles (rad).
        smooth_s: width of the moving average (s).
    """
    time_s = np.asarray(time_s, dtype=np.float64)
    q = np.asarray(ref_joint_pos, dtype=np.float64)
    if q.ndim == 3:
        q = q[:, 0, :]
    if len(time_s) < 2:
        return np.zeros(len(time_s))
    dt = np.maximum(np.diff(time_s), 1e-9)
    speed = np.linalg.norm(np.diff(q, axis=0), axis=1) / dt
    speed = np.concatenate([speed[:1], speed])
    width = max(1, int(round(smooth_s / float(np.median(dt)))))
    if width > 1:
        kernel = np.ones(width) / width
        padded = np.pad(speed, (width // 2, width - 1 - width // 2), mode='edge')
        speed = np.convolve(padded, kernel, mode='valid')
    return speed


def speed_labels(time_s: npt.ArrayLike, ref_joint_pos: npt.ArrayLike,
                 n_classes: int = 4) -> tuple[list[str], dict]:
    """Labels each step by its reference joint speed class (speed1 the slowest).

    Returns:
        (labels, {label: mean speed in rad/s}).
    """
    speed = reference_speed(time_s, ref_joint_pos)
    classes = _kmeans_1d(speed, n_classes)
    labels = [f'speed{c + 1}' for c in classes]
    means = {f'speed{c + 1}': float(speed[classes == c].mean()) for c in np.unique(classes)}
    return labels, means


def chunk_labels(n_steps: int, n_chunks: int) -> list[str]:
    """Labels steps by equal-length chunks of the run: chunk1, chunk2, ..."""
    labels = [''] * n_steps
    for i, idx in enumerate(np.array_split(np.arange(n_steps), max(1, n_chunks))):
        for j in idx:
            labels[j] = f'chunk{i + 1}'
    return labels


def read_label_file(path: str) -> list[tuple[int, str]]:
    """Reads a CSV of `frame,label` rows (an optional header row is skipped), sorted by frame.

    Raises:
        ValueError: a row without two fields, or a frame that is not an integer.
    """
    import csv
    rows = []
    with open(path, newline='') as f:
        for line_no, row in enumerate(csv.reader(f), start=1):
            if not row or not ''.join(row).strip() or row[0].lstrip().startswith('#'):
                continue
            if len(row) < 2:
                raise ValueError(f'{path}:{line_no}: expected frame,label; got {row}')
            try:
                frame = int(float(row[0]))
            except ValueError:
                if not rows and line_no == 1:
                    continue  # a header
                raise ValueError(f'{path}:{line_no}: frame {row[0]!r} is not a number')
            rows.append((frame, row[1].strip()))
    if not rows:
        raise ValueError(f"labels file '{path}' has no frame,label rows")
    return sorted(rows)


def labels_at_frames(rows: Sequence[tuple[int, str]], clip_frame: npt.ArrayLike
                     ) -> list[str | None]:
    """Returns each step's label: the last row at or before its clip frame (None before all)."""
    frames = np.array([r[0] for r in rows], dtype=np.float64)
    idx = np.searchsorted(frames, np.asarray(clip_frame, dtype=np.float64) + 1e-9,
                          side='right') - 1
    return [rows[i][1] if i >= 0 else None for i in idx]


# Representational similarity.

def _zscore(x: np.ndarray) -> np.ndarray:
    sd = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def condition_rdm(x: npt.ArrayLike, labels: Sequence, conditions: Sequence[str]) -> np.ndarray:
    """Returns the (C, C) correlation-distance matrix of per-condition mean patterns.

    Units are z-scored over time and the condition means centred across conditions before
    1 - Pearson r is taken; a pattern without variance gives NaN distances.
    """
    x = _zscore(np.asarray(x, dtype=np.float64))
    labels = np.asarray([str(v) if v is not None else '' for v in labels])
    means = np.stack([x[labels == c].mean(axis=0) for c in conditions])
    means = means - means.mean(axis=0)
    means = means - means.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(means, axis=1)
    with np.errstate(invalid='ignore', divide='ignore'):
        corr = (means @ means.T) / np.outer(norms, norms)
    rdm = 1.0 - corr
    np.fill_diagonal(rdm, 0.0)
    return rdm


def compare_rdms(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation of two RDMs' upper triangles (NaN if either has NaNs or no spread)."""
    from scipy.stats import spearmanr
    iu = np.triu_indices(a.shape[0], k=1)
    va, vb = a[iu], b[iu]
    if not (np.all(np.isfinite(va)) and np.all(np.isfinite(vb))) or len(va) < 3 \
            or np.ptp(va) == 0 or np.ptp(vb) == 0:
        return float('nan')
    return float(spearmanr(va, vb).statistic)


def representational_similarity(representations: dict[str, np.ndarray], labels: Sequence,
                                min_steps: int = 2) -> dict:
    """RSA across behaviour conditions (see the module docstring).

    Args:
        representations: {name: (T, n) matrix}.
        labels: (T,) behaviour label per step (None: unlabelled, left out).
        min_steps: conditions with fewer steps are left out.

    Returns:
        {'conditions': [...], 'names': [...], 'rdms': {name: (C, C)}, 'similarity': (R, R)
        Spearman matrix}, or {'skipped': reason} when fewer than 3 conditions remain.
    """
    counts = {}
    for label in labels:
        if label is not None:
            counts[str(label)] = counts.get(str(label), 0) + 1
    conditions = sorted(c for c, n in counts.items() if n >= min_steps)
    if len(conditions) < 3:
        return {'skipped': f'RSA needs at least 3 behaviour conditions with {min_steps}+ '
                           f'steps; found {conditions}'}
    names = list(representations)
    rdms = {name: condition_rdm(representations[name], labels, conditions) for name in names}
    similarity = np.array([[compare_rdms(rdms[a], rdms[b]) for b in names] for a in names])
    return {'conditions': conditions, 'names': names, 'rdms': rdms, 'similarity': similarity}


# Encoding model.

@dataclasses.dataclass
class EncodingFit:
    """Held-out fit of a neural recording from network activations.

    Attributes:
        r2: (m,) held-out R^2 per recorded unit (pooled over the test blocks; NaN for a unit
            without variance).
        alpha: (m,) ridge penalty chosen per unit (geometric mean over the outer folds).
        predictions: (T', m) out-of-fold predictions of the lag-aligned recording.
        target: (T', m) the lag-aligned recording they predict.
        lag_steps: the lag used.
        n_folds: outer folds.
    """

    r2: np.ndarray
    alpha: np.ndarray
    predictions: np.ndarray
    target: np.ndarray
    lag_steps: int
    n_folds: int


def _apply_lag(x: np.ndarray, y: np.ndarray, lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs y[t] with x[t - lag] (lag > 0: the recording follows the network)."""
    if lag > 0:
        return x[:-lag], y[lag:]
    if lag < 0:
        return x[-lag:], y[:lag]
    return x, y


def _ridge_predictions(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                       alphas: np.ndarray) -> np.ndarray:
    """Returns (A, t, m) ridge predictions of the test rows for every alpha (closed form)."""
    mu = x_train.mean(axis=0)
    sd = x_train.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    xs = (x_train - mu) / sd
    y_mean = y_train.mean(axis=0)
    u, s, vt = np.linalg.svd(xs, full_matrices=False)
    uty = u.T @ (y_train - y_mean)
    xv = ((x_test - mu) / sd) @ vt.T
    return np.stack([(xv * (s / (s ** 2 + a))) @ uty + y_mean for a in alphas])


def _train_rows(n: int, test: np.ndarray, gap: int) -> np.ndarray:
    keep = np.ones(n, dtype=bool)
    keep[max(0, test[0] - gap):min(n, test[-1] + 1 + gap)] = False
    return np.flatnonzero(keep)


def fit_encoding_model(
    activations: npt.ArrayLike,
    neural: npt.ArrayLike,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    n_folds: int = 5,
    lag_steps: int = 0,
    gap_steps: int = 0,
    inner_folds: int = 3,
) -> EncodingFit:
    """Fits ridge regressions from activations to each recorded unit; held-out R^2 per unit.

    Args:
        activations: (T, n) one layer's activations per control step.
        neural: (T, m) the recording, already aligned to the same steps (`align_recording`).
        alphas: ridge penalties to choose from (on z-scored activations).
        n_folds: contiguous outer folds; each is predicted by a model fitted on the others.
        lag_steps: neural[t] is predicted from activations[t - lag_steps] (may be negative).
        gap_steps: steps on each side of a test block left out of its training set, against
            leakage through slow autocorrelation.
        inner_folds: contiguous folds of each training set used to choose alpha per unit.

    Returns:
        An `EncodingFit`.

    Raises:
        ValueError: shapes that disagree, non-finite values, or too few samples.
    """
    x = np.asarray(activations, dtype=np.float64)
    y = np.asarray(neural, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f'activations (T, n) and neural (T, m) should have the same T: got '
                         f'{x.shape} and {y.shape}')
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError('activations and neural data should be finite')
    if n_folds < 2 or inner_folds < 2:
        raise ValueError(f'n_folds and inner_folds should be >= 2: got {n_folds}, '
                         f'{inner_folds}')
    alphas = np.asarray(alphas, dtype=np.float64)
    if alphas.size == 0 or np.any(alphas <= 0):
        raise ValueError(f'alphas should be positive: got {alphas}')
    x, y = _apply_lag(x, y, int(lag_steps))
    n = x.shape[0]
    if n < 2 * n_folds * inner_folds:
        raise ValueError(f'{n} aligned samples are too few for {n_folds} x {inner_folds} folds')

    predictions = np.empty_like(y)
    log_alpha = np.zeros(y.shape[1])
    columns = np.arange(y.shape[1])
    for test in np.array_split(np.arange(n), n_folds):
        train = _train_rows(n, test, gap_steps)
        # Choose alpha per unit on the training rows alone.
        sse = np.zeros((alphas.size, y.shape[1]))
        for val in np.array_split(np.arange(len(train)), inner_folds):
            inner = _train_rows(len(train), val, gap_steps)
            pred = _ridge_predictions(x[train[inner]], y[train[inner]], x[train[val]], alphas)
            sse += ((pred - y[train[val]][None]) ** 2).sum(axis=1)
        best = np.argmin(sse, axis=0)
        pred = _ridge_predictions(x[train], y[train], x[test], alphas)
        predictions[test] = pred[best, :, columns].T
        log_alpha += np.log(alphas[best])
    sst = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    sse = ((y - predictions) ** 2).sum(axis=0)
    with np.errstate(invalid='ignore', divide='ignore'):
        r2 = np.where(sst > 0, 1.0 - sse / np.where(sst > 0, sst, 1.0), np.nan)
    return EncodingFit(r2=r2, alpha=np.exp(log_alpha / n_folds), predictions=predictions,
                       target=y, lag_steps=int(lag_steps), n_folds=n_folds)


def shuffle_null(activations: npt.ArrayLike, neural: npt.ArrayLike, n_shuffles: int = 20,
                 seed: int = 0, min_shift_fraction: float = 0.1, **fit_kwargs) -> np.ndarray:
    """Held-out R^2 when the recording is circularly shifted against the activations.

    A circular shift keeps each signal's own time structure but breaks their alignment, so
    the R^2 it gives is the chance level of this fit on these data. All shifts are fitted in
    one pass (the activations' decompositions are shared).

    Args:
        activations: (T, n) activations.
        neural: (T, m) aligned recording.
        n_shuffles: shifts to try.
        seed: seed of the random shifts.
        min_shift_fraction: shifts are at least this fraction of T from 0 (mod T).
        **fit_kwargs: passed to `fit_encoding_model`.

    Returns:
        (n_shuffles, m) held-out R^2 under the null.
    """
    y = np.asarray(neural, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    n, m = y.shape
    lo = max(1, int(min_shift_fraction * n))
    if n - 2 * lo < 1:
        raise ValueError(f'{n} samples are too few for shifts of at least {lo}')
    rng = np.random.default_rng(seed)
    shifts = rng.integers(lo, n - lo + 1, size=n_shuffles)
    shifted = np.concatenate([np.roll(y, int(s), axis=0) for s in shifts], axis=1)
    fit = fit_encoding_model(activations, shifted, **fit_kwargs)
    return fit.r2.reshape(n_shuffles, m)


def align_recording(step_times_s: npt.ArrayLike, recording_times_s: npt.ArrayLike,
                    values: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Resamples a recording at the control-step times by linear interpolation.

    Args:
        step_times_s: (T,) times of the control steps (s, clip time).
        recording_times_s: (N,) increasing sample times of the recording (s, clip time).
        values: (N, m) or (N,) recorded values (rates, fluorescence, ...).

    Returns:
        (aligned (T', m) values, (T,) bool mask of the steps inside the recording's span);
        T' = mask.sum().

    Raises:
        ValueError: shapes that disagree, times that do not increase, or no overlap.
    """
    steps = np.asarray(step_times_s, dtype=np.float64)
    times = np.asarray(recording_times_s, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    if times.ndim != 1 or values.shape[0] != times.shape[0]:
        raise ValueError(f'recording times (N,) and values (N, m) disagree: {times.shape}, '
                         f'{values.shape}')
    if np.any(np.diff(times) <= 0):
        raise ValueError('recording times should increase')
    inside = (steps >= times[0] - 1e-9) & (steps <= times[-1] + 1e-9)
    if not inside.any():
        raise ValueError(f'the recording ({times[0]:.3f}..{times[-1]:.3f} s) does not overlap '
                         f'the run ({steps[0]:.3f}..{steps[-1]:.3f} s)')
    aligned = np.stack([np.interp(steps[inside], times, values[:, j])
                        for j in range(values.shape[1])], axis=1)
    return aligned, inside


# The analysis of one file.

def _save(fig, path: str) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=_DPI)
    return path


def _natural_key(text: str) -> list:
    """Sort key that puts 'speed2' before 'speed10'."""
    import re
    return [int(part) if part.isdigit() else part for part in re.split(r'(\d+)', text)]


def _colours(order: Sequence[str]) -> dict:
    from matplotlib import colormaps
    cmap = colormaps['tab10' if len(order) <= 10 else 'tab20']
    return {label: cmap(i % cmap.N) for i, label in enumerate(order)}


def _plot_variance(stats: dict, path: str, title: str) -> str:
    from matplotlib.figure import Figure
    fig = Figure(figsize=(7, 4.5), layout='constrained')
    ax = fig.subplots()
    for name, ratios in stats.items():
        k = np.arange(1, len(ratios) + 1)
        ax.plot(k, np.cumsum(ratios), marker='.', label=f'{name} (n={len(ratios)})')
    ax.axhline(0.9, color='0.6', lw=0.8, ls='--')
    ax.set_xscale('log')
    ax.set_ylim(0, 1.02)
    ax.set_xlabel('principal components')
    ax.set_ylabel('cumulative variance explained')
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _plot_embedding(representations: dict, labels: list, order: list[str], path: str,
                    title: str) -> str:
    from matplotlib.figure import Figure
    names = list(representations)
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.8 * rows), layout='constrained')
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    colours = _colours(order)
    keys = np.array([str(v) if v is not None else '' for v in labels])
    for ax, name in zip(axes, names):
        scores = pca_scores(representations[name], 2)
        ax.plot(scores[:, 0], scores[:, 1], color='0.85', lw=0.5, zorder=1)
        unlabelled = keys == ''
        if unlabelled.any():
            ax.scatter(scores[unlabelled, 0], scores[unlabelled, 1], s=5, color='0.6',
                       label='unlabelled', zorder=2)
        for label in order:
            sel = keys == label
            ax.scatter(scores[sel, 0], scores[sel, 1], s=6, color=colours[label],
                       label=label, zorder=2)
        ax.set_title(name)
        ax.set_xlabel('PC1')
        ax.set_ylabel('PC2')
    for ax in axes[len(names):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7, markerscale=2)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def _plot_rsa(rsa: dict, path: str, title: str) -> str:
    from matplotlib.figure import Figure
    names = rsa['names']
    panels = len(names) + 1
    cols = min(4, panels)
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=(3.6 * cols, 3.4 * rows), layout='constrained')
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    conditions = rsa['conditions']
    ticks = np.arange(len(conditions))
    for ax, name in zip(axes, names):
        image = ax.imshow(rsa['rdms'][name], cmap='viridis', vmin=0.0, vmax=2.0)
        ax.set_title(f'{name} RDM', fontsize=9)
        ax.set_xticks(ticks, conditions, rotation=90, fontsize=6)
        ax.set_yticks(ticks, conditions, fontsize=6)
    fig.colorbar(image, ax=axes[len(names) - 1], shrink=0.8, label='1 - r')
    ax = axes[len(names)]
    sim = rsa['similarity']
    ax.imshow(sim, cmap='RdBu_r', vmin=-1.0, vmax=1.0)
    ax.set_xticks(np.arange(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(np.arange(len(names)), names, fontsize=7)
    for i in range(len(names)):
        for j in range(len(names)):
            text = 'n/a' if not np.isfinite(sim[i, j]) else f'{sim[i, j]:.2f}'
            ax.text(j, i, text, ha='center', va='center', fontsize=7)
    ax.set_title('RDM similarity (Spearman)', fontsize=9)
    for ax in axes[panels:]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def _plot_encoding(results: dict, path: str, title: str) -> str:
    from matplotlib.figure import Figure
    fig = Figure(figsize=(7, 4.5), layout='constrained')
    ax = fig.subplots()
    names = list(results)
    for i, name in enumerate(names):
        r2 = np.asarray(results[name]['r2'], dtype=np.float64)
        jitter = np.linspace(-0.15, 0.15, len(r2)) if len(r2) > 1 else np.zeros(1)
        ax.scatter(i + jitter, r2, s=10, label=None)
        chance = results[name].get('chance_r2_95')
        if chance is not None:
            ax.plot([i - 0.3, i + 0.3], [np.nanmax(chance)] * 2, color='k', lw=1.0)
    ax.axhline(0.0, color='0.6', lw=0.8)
    ax.set_xticks(np.arange(len(names)), names)
    ax.set_ylabel('held-out R² per recorded unit')
    ax.set_title(f'{title}\n(black: 95th percentile of shifted-recording R²)', fontsize=9)
    return _save(fig, path)


def _finite_or_none(value: float):
    return float(value) if np.isfinite(value) else None


def analyze_file(path: str, out_dir: str | None = None, labels_path: str | None = None,
                 segments: str = 'speed', n_segments: int | None = None,
                 neural_path: str | None = None, n_shuffles: int = 20) -> dict:
    """Runs the analyses of the module docstring on an activation file; writes PNGs + JSON.

    Args:
        path: activation file from `vrat run --activations`.
        out_dir: folder for the outputs; default: next to the file, '<name>_analysis'.
        labels_path: CSV of frame,label rows; overrides `segments`.
        segments: 'speed' or 'chunks' (see the module docstring).
        n_segments: classes or chunks; default 4 for speed, 8 for chunks.
        neural_path: optional .npz with 'time_s' (N,) clip times (s) and 'data' (N, m): fit
            every hidden layer to it (`fit_encoding_model`) with a shuffle control.
        n_shuffles: circular shifts for the chance level of the encoding fits.

    Returns:
        The summary also written to <out_dir>/summary.json.

    Raises:
        ActivationFileError: the file is not a vrat activation file.
        ValueError: a bad option, labels file or neural file.
    """
    from vrat_ros.activations import load_activations
    from vrat_ros.clip import atomic_write

    rec = load_activations(path)
    if out_dir is None:
        out_dir = os.path.splitext(os.path.abspath(path))[0] + '_analysis'
    os.makedirs(out_dir, exist_ok=True)
    if rec.n_steps < 3:
        raise ValueError(f"'{path}' has {rec.n_steps} control steps; analysis needs 3 or more")

    # Behaviour labels per step.
    if labels_path is not None:
        labels = labels_at_frames(read_label_file(labels_path), rec.clip_frame)
        segment_info = {'method': 'labels file', 'file': os.path.abspath(labels_path)}
    elif segments == 'speed':
        k = n_segments or _DEFAULT_SEGMENTS['speed']
        labels, means = speed_labels(rec.time_s, rec.reference_joint_pos, k)
        segment_info = {'method': 'speed', 'classes': k, 'mean_speed_rad_s': means,
                        'smoothing_s': _SPEED_SMOOTH_S}
    elif segments == 'chunks':
        k = n_segments or _DEFAULT_SEGMENTS['chunks']
        labels = chunk_labels(rec.n_steps, k)
        segment_info = {'method': 'chunks', 'chunks': k}
    else:
        raise ValueError(f"segments should be one of {list(SEGMENT_METHODS)}: got '{segments}'")
    order = sorted({v for v in labels if v is not None}, key=_natural_key)
    segment_info['steps_per_label'] = {v: sum(1 for x in labels if x == v) for v in order}
    segment_info['unlabelled_steps'] = sum(1 for x in labels if x is None)

    # Representations, input to output.
    representations = {'observation': rec.observation}
    representations.update(rec.layers)
    representations['action'] = rec.action
    hidden = dict(rec.layers) or {'observation': rec.observation, 'action': rec.action}
    title = f"{os.path.basename(path)}: {rec.attrs.get('clip_title', '')}"
    title = title if len(title) <= 80 else title[:77] + '...'

    layer_stats, ratios_by_name = {}, {}
    for name, x in representations.items():
        ratios = variance_explained(x)
        ratios_by_name[name] = ratios
        layer_stats[name] = {
            'units': int(x.shape[1]),
            'constant_units': int(np.sum(np.asarray(x).std(axis=0) == 0)),
            'components_for_90pct': components_for(ratios, 0.9),
            'components_for_95pct': components_for(ratios, 0.95),
            'participation_ratio': round(participation_ratio(ratios), 4),
            'variance_explained_first10': [round(float(r), 5) for r in ratios[:10]],
        }
    plots = {
        'pca_variance': _plot_variance(ratios_by_name, os.path.join(out_dir, 'pca_variance.png'),
                                       f'{title}\nPCA variance explained'),
        'embedding': _plot_embedding(hidden, labels, order,
                                     os.path.join(out_dir, 'embedding.png'),
                                     f'{title}\nPC1-PC2 by behaviour label'),
    }
    rsa = representational_similarity(representations, labels)
    if 'skipped' in rsa:
        rsa_summary = rsa
    else:
        plots['rsa'] = _plot_rsa(rsa, os.path.join(out_dir, 'rsa.png'),
                                 f'{title}\nrepresentational similarity across behaviours')
        rsa_summary = {
            'conditions': rsa['conditions'], 'names': rsa['names'],
            'similarity': [[_finite_or_none(v) for v in row] for row in rsa['similarity']],
            'rdms': {n: [[_finite_or_none(v) for v in row] for row in m]
                     for n, m in rsa['rdms'].items()},
        }

    summary = {
        'file': os.path.abspath(path),
        'policy_file': rec.attrs.get('policy_file'),
        'policy_sha256': rec.attrs.get('policy_sha256'),
        'clip_file': rec.attrs.get('clip_file'),
        'clip_title': rec.attrs.get('clip_title'),
        'parameters': rec.parameters,
        'n_steps': rec.n_steps,
        'time_span_s': [float(rec.time_s[0]), float(rec.time_s[-1])],
        'segments': segment_info,
        'representations': layer_stats,
        'rsa': rsa_summary,
    }
    if neural_path is not None:
        summary['encoding'] = _encode_layers(rec, neural_path, n_shuffles)
        plots['encoding'] = _plot_encoding(summary['encoding']['layers'],
                                           os.path.join(out_dir, 'encoding.png'),
                                           f'{title}\nencoding models')
    summary['plots'] = plots
    summary_path = os.path.join(out_dir, 'summary.json')

    def write(tmp: str) -> None:
        with open(tmp, 'w') as f:
            json.dump(summary, f, indent=2)
            f.write('\n')
    atomic_write(summary_path, write)
    summary['summary'] = summary_path
    return summary


def _encode_layers(rec, neural_path: str, n_shuffles: int) -> dict:
    """Fits every hidden layer to the recording in `neural_path` (see `analyze_file`)."""
    with np.load(neural_path, allow_pickle=False) as z:
        missing = [k for k in ('time_s', 'data') if k not in z.files]
        if missing:
            raise ValueError(f"'{neural_path}' lacks arrays {missing}; expected time_s (N,) "
                             'and data (N, m)')
        times, data = z['time_s'], z['data']
    aligned, inside = align_recording(rec.time_s, times, data)
    layers = dict(rec.layers) or {'observation': rec.observation}
    results = {}
    for name, x in layers.items():
        fit = fit_encoding_model(x[inside], aligned)
        null = shuffle_null(x[inside], aligned, n_shuffles=n_shuffles) if n_shuffles else None
        chance = None if null is None else np.nanpercentile(null, 95, axis=0)
        results[name] = {
            'r2': [_finite_or_none(v) for v in fit.r2],
            'mean_r2': _finite_or_none(np.nanmean(fit.r2)),
            'alpha': [float(a) for a in fit.alpha],
            'chance_r2_95': None if chance is None else [_finite_or_none(v) for v in chance],
        }
    return {'file': os.path.abspath(neural_path), 'aligned_steps': int(inside.sum()),
            'units': int(aligned.shape[1]), 'n_shuffles': n_shuffles, 'layers': results}


def _cmd_analyze(args: argparse.Namespace) -> int:
    import sys
    summary = analyze_file(args.file, out_dir=args.out, labels_path=args.labels,
                           segments=args.segments, n_segments=args.n_segments,
                           neural_path=args.neural, n_shuffles=args.shuffles)
    lines = [f"{summary['n_steps']} control steps; labels by {summary['segments']['method']}"]
    for name, stats in summary['representations'].items():
        lines.append(f"  {name:>12}: {stats['units']} units, "
                     f"{stats['components_for_90pct']} PCs for 90 %, "
                     f"participation ratio {stats['participation_ratio']:.2f}")
    if 'encoding' in summary:
        for name, res in summary['encoding']['layers'].items():
            lines.append(f'  encoding {name}: mean held-out R2 {res["mean_r2"]}')
    lines.append(f"plots: {', '.join(sorted(summary['plots'].values()))}")
    lines.append(f"summary: {summary['summary']}")
    sys.stdout.write('\n'.join(lines) + '\n')
    return 0


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Registers `vrat analyze` on the `vrat` command's subparsers."""
    p = subparsers.add_parser(
        'analyze', help='Analyse an activation file from `vrat run --activations`: PCA '
                        'dimensionality, a 2-D embedding by behaviour, representational '
                        'similarity between layers, and optionally encoding models of a '
                        'neural recording. Writes PNGs and summary.json.')
    p.add_argument('file', help='Activation file (.h5) written by vrat run --activations.')
    p.add_argument('--out', metavar='DIR',
                   help="Output folder (default: '<file name>_analysis' beside the file).")
    p.add_argument('--labels', metavar='CSV',
                   help='Behaviour labels: rows of frame,label (clip frame index; a label '
                        'holds until the next row). Overrides --segments.')
    p.add_argument('--segments', choices=SEGMENT_METHODS, default='speed',
                   help='Default behaviour labels: reference joint speed classes (k-means) or '
                        'equal chunks of the run (default speed).')
    p.add_argument('--n-segments', type=int, default=None,
                   help='Speed classes (default 4) or chunks (default 8).')
    p.add_argument('--neural', metavar='NPZ',
                   help='Neural recording to fit: .npz with time_s (N,) in clip seconds and '
                        'data (N, units); each hidden layer gets a ridge encoding model.')
    p.add_argument('--shuffles', type=int, default=20,
                   help='Circular shifts for the chance level of the encoding fits '
                        '(default 20; 0 skips).')
    p.set_defaults(func=_cmd_analyze)
