"""Marker sets: the shipped keypoint-to-body mappings, body-scale estimation, offset refinement.

A marker set is a YAML file (layout in `keypoint_fit.load_marker_set`) that puts each
keypoint of a tracking skeleton on one body of the rat at an offset in that body's frame.
Two are shipped under vrat_ros/data/marker_sets/: `rat23` (the 23-keypoint DANNCE skeleton)
and `rat7m20` (the 20-marker Rat7M motion-capture set). A user's own set is a YAML file in
the same layout, passed by path; no code changes are needed.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from collections.abc import Callable
from collections.abc import Sequence

import mujoco
import numpy as np
import numpy.typing as npt
import yaml

from vrat_ros import rat_constants as rc
from vrat_ros import resources
from vrat_ros.errors import ClipError
from vrat_ros.keypoint_fit import FitOptions
from vrat_ros.keypoint_fit import KeypointFitter
from vrat_ros.keypoint_fit import load_marker_set
from vrat_ros.keypoint_fit import MarkerSet

# Golden-section ratio for the 1-D scale search.
_INV_PHI = (np.sqrt(5.0) - 1.0) / 2.0


def _progress_callback(progress: bool | Callable[[int, int], None], total: int,
                       desc: str) -> Callable[[int], None]:
    """Returns `tick(done)`: a tqdm bar on stderr, the caller's callback, or nothing."""
    if callable(progress):
        return lambda done: progress(done, total)
    if not progress:
        return lambda done: None
    from tqdm import tqdm
    bar = tqdm(total=total, desc=desc, unit='step')

    def tick(done: int) -> None:
        bar.update(max(done - bar.n, 0))
        if done >= total:
            bar.close()
    return tick


def shipped_marker_set_names() -> list[str]:
    """Returns the names of the marker sets shipped inside the package, sorted."""
    folder = resources.data_path('marker_sets')
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.splitext(f)[0] for f in os.listdir(folder) if f.endswith('.yaml'))


def marker_set_path(name_or_path: str | os.PathLike) -> str:
    """Returns the YAML path for a shipped marker-set name ('rat23') or a user file path.

    Raises:
        ClipError: it is neither a shipped name nor an existing file.
    """
    text = str(name_or_path)
    if os.path.isfile(text):
        return text
    if text in shipped_marker_set_names():
        return resources.data_path('marker_sets', text + '.yaml')
    raise ClipError(
        f"marker set '{text}' is neither a file nor a shipped set: expected a YAML path or "
        f'one of {shipped_marker_set_names()}')


def resolve_marker_set(marker_set: MarkerSet | str | os.PathLike | None,
                       default: str = 'rat23') -> MarkerSet:
    """Returns a MarkerSet from an instance, a shipped name, a YAML path, or None (`default`)."""
    if isinstance(marker_set, MarkerSet):
        return marker_set
    return load_marker_set(marker_set_path(default if marker_set is None else marker_set))


def best_marker_set_for(names: Sequence[str]) -> str:
    """Returns the shipped marker set that covers most of `names` (ties: the first, sorted)."""
    wanted = set(names)
    best, best_hits = 'rat23', -1
    for name in shipped_marker_set_names():
        hits = len(wanted & set(load_marker_set(marker_set_path(name)).keypoint_names))
        if hits > best_hits:
            best, best_hits = name, hits
    return best


def _sample_frames(xyz_m: np.ndarray, used: np.ndarray, max_frames: int,
                   min_present: int) -> np.ndarray:
    """Returns up to `max_frames` evenly spaced frame indices with enough keypoints present."""
    present = np.all(np.isfinite(xyz_m[:, used]), axis=2).sum(axis=1)
    good = np.flatnonzero(present >= min_present)
    if good.size == 0:
        raise ClipError(
            f'no frame has {min_present} or more of the marker-set keypoints present; '
            'cannot calibrate')
    pick = np.unique(np.linspace(0, good.size - 1, min(max_frames, good.size)).astype(int))
    return good[pick]


def _solve_frames(fitter: KeypointFitter, xyz_m: np.ndarray, frames: np.ndarray,
                  qpos_init: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fits each frame on its own (cold start, or from `qpos_init`).

    Returns:
        qpos: (F, nq) poses; residual_mm: (F, K_used) distances, NaN where missing.
    """
    opt = fitter.options
    qpos_all = np.zeros((frames.size, fitter.model.nq))
    residual = np.full((frames.size, fitter.used.size), np.nan)
    for i, t in enumerate(frames):
        target = xyz_m[t, fitter.used]
        valid = np.all(np.isfinite(target), axis=1)
        if qpos_init is None:
            start, iterations = fitter.initial_pose(target, valid), opt.first_frame_iterations
        else:
            start, iterations = qpos_init[i], opt.iterations * 5
        qpos = fitter.solve_frame(target, valid, start, None, iterations)
        dist = np.linalg.norm(fitter.marker_positions(qpos) - target, axis=1) * 1e3
        residual[i, valid] = dist[valid]
        qpos_all[i] = qpos
    return qpos_all, residual


def estimate_body_scale(
    xyz_m: npt.ArrayLike,
    names: Sequence[str],
    marker_set: MarkerSet,
    max_frames: int = 16,
    bounds: tuple[float, float] = (0.6, 1.5),
    tolerance: float = 0.01,
    options: FitOptions | None = None,
    progress: bool | Callable[[int, int], None] = False,
) -> tuple[float, dict[float, float]]:
    """Finds the body scale at which the marker set fits the keypoints best.

    A golden-section search over the scale: at each candidate the body and the marker
    offsets are scaled together and up to `max_frames` evenly spaced frames are fitted, each
    from scratch and from the previous candidate's pose (the better fit counts, which keeps
    local minima from making the score noisy); the score is the mean over frames of each
    frame's mean keypoint residual. Deterministic for given inputs.

    Args:
        xyz_m: (T, K, 3) keypoints in metres; NaN marks a missing keypoint.
        names: (K,) keypoint names.
        marker_set: the mapping of keypoints to bodies.
        max_frames: frames used per candidate scale.
        bounds: (low, high) scales searched.
        tolerance: the search stops when the bracket is narrower than this.
        options: solver settings.
        progress: True for a progress bar on stderr, or a callback `fn(done, total)` called
            after each candidate scale.

    Returns:
        scale: the best scale, rounded to 0.001.
        scores: {scale: mean residual (mm)} for every scale tried.

    Raises:
        ClipError: no frame has enough keypoints present.
    """
    xyz_m = np.asarray(xyz_m, dtype=np.float64)
    options = FitOptions() if options is None else options
    probe = KeypointFitter(marker_set, names, options=options)
    frames = _sample_frames(xyz_m, probe.used, max_frames,
                            max(options.min_keypoints, (probe.used.size + 1) // 2))
    scores: dict[float, float] = {}
    last: list[np.ndarray] = []

    def score(scale: float) -> float:
        scale = round(float(scale), 4)
        if scale not in scores:
            fitter = KeypointFitter(marker_set, names, scale=scale, options=options)
            qpos, residual = _solve_frames(fitter, xyz_m, frames)
            per_frame = np.nanmean(residual, axis=1)
            if last:  # also start from the previous candidate's poses; keep the better fit
                warm_qpos, warm_residual = _solve_frames(fitter, xyz_m, frames, last[0])
                warm = np.nanmean(warm_residual, axis=1)
                better = warm < per_frame
                qpos[better], per_frame[better] = warm_qpos[better], warm[better]
            last[:] = [qpos]
            scores[scale] = float(np.mean(per_frame))
            tick(min(len(scores), total))
        return scores[scale]

    lo, hi = float(bounds[0]), float(bounds[1])
    # Each bracket step costs one new candidate, plus the first two.
    total = int(np.ceil(np.log(tolerance / (hi - lo)) / np.log(_INV_PHI))) + 2
    tick = _progress_callback(progress, total, 'body scale')
    a, b = hi - _INV_PHI * (hi - lo), lo + _INV_PHI * (hi - lo)
    while hi - lo > tolerance:
        if score(a) <= score(b):
            hi, b = b, a
            a = hi - _INV_PHI * (hi - lo)
        else:
            lo, a = a, b
            b = lo + _INV_PHI * (hi - lo)
    tick(total)
    best = min(scores, key=scores.get)
    return round(best, 3), scores


def refine_marker_offsets(
    marker_set: MarkerSet,
    xyz_m: npt.ArrayLike,
    names: Sequence[str],
    scale: float = rc.DEFAULT_BODY_SCALE,
    max_frames: int = 60,
    rounds: int = 6,
    prior_frames: float = 10.0,
    options: FitOptions | None = None,
) -> tuple[MarkerSet, dict]:
    """Improves a marker set's offsets on real data by alternating pose and offset fits.

    Each round fits the poses of up to `max_frames` evenly spaced frames (all the marker set's
    keypoints present where possible) with the current offsets, then sets each offset to the
    least-squares average of its keypoint seen from its body,
    `(sum_t R_t^T (x_t - p_t) + prior_frames * o_0) / (n_t + prior_frames)`, which pulls it
    towards the starting offset `o_0` as if that were `prior_frames` extra observations.
    The pull keeps the pose/offset trade-off (e.g. neck angle against head-marker height)
    anchored to the anatomical guess. Deterministic for given inputs.

    Args:
        marker_set: the starting mapping (its bodies are kept).
        xyz_m: (T, K, 3) keypoints in metres; NaN marks a missing keypoint.
        names: (K,) keypoint names.
        scale: body scale to fit at; the result's `body_scale` is this scale.
        max_frames: frames used.
        rounds: pose/offset alternations.
        prior_frames: strength of the pull towards the starting offsets (frames).
        options: solver settings.

    Returns:
        marker_set: a copy with refined offsets (m, at `scale`); keypoints the data lacks keep
            their starting offsets.
        stats: frames (indices used), residual_mm_mean per round, offset_change_mm per keypoint.
    """
    xyz_m = np.asarray(xyz_m, dtype=np.float64)
    options = FitOptions() if options is None else options
    fitter = KeypointFitter(marker_set, names, scale=scale, options=options)
    try:  # frames with every keypoint present, else frames with at least half of them
        frames = _sample_frames(xyz_m, fitter.used, max_frames, fitter.used.size)
    except ClipError:
        frames = _sample_frames(xyz_m, fitter.used, max_frames,
                                max(options.min_keypoints, (fitter.used.size + 1) // 2))
    prior = fitter.marker_offset.copy()
    qpos, history = None, []
    for _ in range(rounds):
        qpos, residual = _solve_frames(fitter, xyz_m, frames, qpos)
        history.append(float(np.nanmean(residual)))
        total = prior_frames * prior
        count = np.full(fitter.used.size, prior_frames)
        for i, t in enumerate(frames):
            fitter._forward(qpos[i])
            rot = fitter.data.xmat[fitter.marker_body].reshape(-1, 3, 3)
            local = np.einsum('kji,kj->ki', rot, xyz_m[t, fitter.used]
                              - fitter.data.xpos[fitter.marker_body])
            seen = np.all(np.isfinite(local), axis=1)
            total[seen] += local[seen]
            count[seen] += 1.0
        fitter.marker_offset = total / count[:, None]
    _, residual = _solve_frames(fitter, xyz_m, frames, qpos)
    history.append(float(np.nanmean(residual)))

    offsets = marker_set.offsets_at(scale).copy()
    index = {n: i for i, n in enumerate(marker_set.keypoint_names)}
    used_names = [fitter.keypoint_names[i] for i in fitter.used]
    change = {}
    for k, name in enumerate(used_names):
        change[name] = float(np.linalg.norm(fitter.marker_offset[k] - prior[k]) * 1e3)
        offsets[index[name]] = fitter.marker_offset[k]
    refined = dataclasses.replace(marker_set, offsets=offsets, body_scale=float(scale))
    return refined, {'frames': [int(t) for t in frames], 'residual_mm_mean': history,
                     'offset_change_mm': change}


def floor_contact_settings(marker_set: MarkerSet) -> tuple[list[str], float]:
    """Returns (bodies, weight) of a marker set's optional `floor_contact` entry.

    YAML: `floor_contact: {bodies: [foot_L, toe_L, ...], weight: 0.05}`. Sets without
    paw keypoints (Rat7M) use it to keep the unobserved paws on the floor instead of
    letting them hang; weight is mm^2 of cost per mm^2 of height above the floor.

    Raises:
        ClipError: the entry is malformed.
    """
    if not marker_set.source or not os.path.isfile(marker_set.source):
        return [], 0.0
    with open(marker_set.source, encoding='utf-8') as f:
        doc = yaml.safe_load(f)
    entry = doc.get('floor_contact') if isinstance(doc, dict) else None
    if entry is None:
        return [], 0.0
    try:
        bodies = [str(b) for b in entry['bodies']]
        weight = float(entry.get('weight', 0.05))
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        raise ClipError(f"marker set '{marker_set.source}': floor_contact should be "
                        f'{{bodies: [<body>, ...], weight: <number>}}: got {entry!r}') from exc
    if not weight >= 0:
        raise ClipError(f"marker set '{marker_set.source}': floor_contact weight should be "
                        f'>= 0: got {weight}')
    return bodies, weight


class FloorContactFitter(KeypointFitter):
    """A KeypointFitter that also pulls the lowest point of chosen bodies down to the floor.

    The pull is one-sided (the base fitter already pushes geoms out of the floor) and weak:
    it moves joints no keypoint observes (ankles, toes) and barely disturbs the keypoints.
    """

    def __init__(self, marker_set: MarkerSet, keypoint_names: Sequence[str],
                 scale: float = rc.DEFAULT_BODY_SCALE, options: FitOptions | None = None,
                 contact_bodies: Sequence[str] = (), contact_weight: float = 0.05):
        """Builds the fitter; `contact_bodies` must be bodies of the rat with collision geoms.

        Raises:
            ClipError: a contact body is unknown or has no collision geom.
        """
        super().__init__(marker_set, keypoint_names, scale=scale, options=options)
        names = self.body.body_names
        unknown = [b for b in contact_bodies if b not in names]
        if unknown:
            raise ClipError(f"marker set '{marker_set.name}': floor_contact bodies {unknown} "
                            'are not bodies of the rat')
        geom_body = self.model.geom_bodyid[self.floor_geoms]
        self.contact_groups = []
        for b in contact_bodies:
            group = np.flatnonzero(geom_body == names.index(b))
            if group.size == 0:
                raise ClipError(f"marker set '{marker_set.name}': floor_contact body '{b}' "
                                'has no collision geom')
            self.contact_groups.append(group)
        self.contact_sqrt_w = float(np.sqrt(contact_weight))

    def _contact_groups_now(self) -> list[np.ndarray]:
        """The contact bodies' geom rows that the pull acts on in the current frame."""
        return self.contact_groups

    def _contact_points(self) -> list[tuple[int, np.ndarray]]:
        """Returns (geom row, lowest point) per contact body that floats above the floor."""
        low = self._floor_points()
        out = []
        for group in self._contact_groups_now():
            g = group[np.argmin(low[group, 2])]
            if low[g, 2] > 0.0:
                out.append((int(g), low[g]))
        return out

    def _cost(self, qpos, target, valid, qpos_prev):
        cost = super()._cost(qpos, target, valid, qpos_prev)
        heights = np.array([p[2] for _, p in self._contact_points()]) * 1e3
        return cost + self.contact_sqrt_w ** 2 * float(heights @ heights)

    def _linearise(self, qpos, target, valid):
        r, jac = super()._linearise(qpos, target, valid)
        m, d = self.model, self.data
        rows_r, rows_j = [r], [jac]
        col_scale = self.var_scale * 1e3
        for g, point in self._contact_points():
            body = int(m.geom_bodyid[self.floor_geoms[g]])
            mujoco.mj_jac(m, d, self._jacp, None, point, body)
            rows_r.append(np.array([point[2] * 1e3 * self.contact_sqrt_w]))
            rows_j.append(self._jacp[2:3, self.dofs] * col_scale * self.contact_sqrt_w)
        return np.concatenate(rows_r), np.concatenate(rows_j)


@dataclasses.dataclass(frozen=True)
class GaitSettings:
    """How a marker set's `gait` entry tells stance from swing (`GaitFitter`).

    YAML: `gait: {paws: {<paw body>: <marker>, ...}, reference: <marker>, ...}` with the
    optional keys below. A paw swings in a frame where its marker moves horizontally faster
    than both `min_speed_mm_s` and `speed_ratio` times the reference marker (on the trunk),
    so that a paw carried along by a turning or rearing body is not taken for a step.

    Attributes:
        paws: (paw body, marker) pairs, e.g. ('foot_L', 'ShinL').
        reference: the trunk marker whose speed the paws' is compared with.
        min_speed_mm_s: the slowest marker speed that counts as a swing.
        speed_ratio: how much faster than the reference marker a swinging paw's moves.
        min_frames, max_frames: swings shorter than `min_frames` are lengthened to it (a
            real step lasts a few frames at 30 Hz even when its marker is fast in one);
            runs longer than `max_frames` are cut to it (a forelimb waving in a rear is not
            one long step; the rest is stance).
        lead_frames: frames added before each swing. A marker's speed in frame t is its
            move from frame t-1, so the paw must already be off the floor in frame t-1
            (with 0, the move into the first swing frame starts from a planted paw).
        max_drift_mm: a standing paw whose marker drifts farther than this from where it
            was when the stance began takes a step there (`min_frames` long): slow steps,
            such as a forepaw moved in a rear, are not fast enough to be seen by speed; 0
            is off. Shin and forearm markers move some 20-40 mm over a stance as the limb
            turns over a planted paw.
        lift_mm: peak height of the sole in a swing (a half sine over the swing).
        lift_weight: weight (mm^2 per mm^2) of the lift.
        anchor_weight: weight (mm^2 per mm^2) that holds a standing paw where it landed.
    """

    paws: tuple[tuple[str, str], ...]
    reference: str
    min_speed_mm_s: float = 200.0
    speed_ratio: float = 1.3
    min_frames: int = 2
    max_frames: int = 8
    lead_frames: int = 1
    max_drift_mm: float = 40.0
    lift_mm: float = 10.0
    lift_weight: float = 30.0
    anchor_weight: float = 100.0

    def __post_init__(self):
        """Checks every number against `GAIT_LIMITS` (ValueError naming the first bad one)."""
        for key, (lo, hi) in GAIT_LIMITS.items():
            value = getattr(self, key)
            whole = key.endswith('_frames')
            ok = (isinstance(value, int) if whole else isinstance(value, (int, float)))
            if isinstance(value, bool) or not ok or not lo <= value <= hi:
                kind = 'a whole number' if whole else 'a number'
                raise ValueError(f'{key} should be {kind} in [{lo:g}, {hi:g}]: got {value!r}')
        if self.min_frames > self.max_frames or self.lead_frames > self.max_frames:
            raise ValueError(f'min_frames and lead_frames should be at most max_frames: got '
                             f'{self.min_frames}, {self.lead_frames} and {self.max_frames}')


# Allowed range of each number of `GaitSettings`: wide, but enough to catch a slip of units
# (a lift of metres written as mm) and weights that would swamp the keypoints' mm^2.
GAIT_LIMITS = {
    'min_speed_mm_s': (0.0, 1e4),
    'speed_ratio': (0.0, 100.0),
    'min_frames': (1, 1000),
    'max_frames': (1, 1000),
    'lead_frames': (0, 1000),
    'max_drift_mm': (0.0, 1000.0),
    'lift_mm': (0.0, 50.0),
    'lift_weight': (0.0, 1e4),
    'anchor_weight': (0.0, 1e4),
}


def gait_settings(marker_set: MarkerSet) -> GaitSettings | None:
    """Returns a marker set's optional `gait` entry (see `GaitSettings`), or None.

    Raises:
        ClipError: the entry is malformed or names a marker the set lacks.
    """
    if not marker_set.source or not os.path.isfile(marker_set.source):
        return None
    with open(marker_set.source, encoding='utf-8') as f:
        doc = yaml.safe_load(f)
    entry = doc.get('gait') if isinstance(doc, dict) else None
    if entry is None:
        return None
    where = f"marker set '{marker_set.source}': gait"
    if not isinstance(entry, dict) or not isinstance(entry.get('paws'), dict) \
            or not entry['paws'] or 'reference' not in entry:
        raise ClipError(f'{where} should be {{paws: {{<paw body>: <marker>, ...}}, reference: '
                        f'<marker>, ...}}: got {entry!r}')
    fields = {f.name for f in dataclasses.fields(GaitSettings)}
    unknown = sorted(set(entry) - fields)
    if unknown:
        raise ClipError(f'{where}: unknown keys {unknown}; known: {sorted(fields)}')
    paws = tuple((str(k), str(v)) for k, v in entry['paws'].items())
    names = set(marker_set.keypoint_names)
    missing = sorted(({m for _, m in paws} | {str(entry['reference'])}) - names)
    if missing:
        raise ClipError(f'{where} names markers the set lacks: {missing}')
    values = {}
    for key in GAIT_LIMITS:
        if key not in entry:
            continue
        value = entry[key]
        if isinstance(value, str):  # YAML reads 2e2 (no dot, no exponent sign) as text
            raise ClipError(f'{where}: {key} should be a number: got the text {value!r} '
                            '(YAML wants 200 or 2.0e+2)')
        if key.endswith('_frames') and isinstance(value, float) and value.is_integer():
            value = int(value)  # 3.0 frames is 3 frames
        values[key] = value
    try:
        return GaitSettings(paws=paws, reference=str(entry['reference']), **values)
    except ValueError as exc:
        raise ClipError(f'{where}: {exc}') from exc


def swing_schedule(xyz_m: npt.ArrayLike, names: Sequence[str], fps: float,
                   settings: GaitSettings) -> dict[str, np.ndarray]:
    """Returns {paw body: (T,) bool, True where it swings} from the markers' speeds.

    Speeds are horizontal, from one frame to the next (the first frame has none and is
    stance). Across a gap in a marker its path is taken as the straight line between the
    frames on either side (held before the first and after the last frame it is seen): a
    paw whose marker reappears elsewhere has moved (Rat7M forelimb markers are missing or
    dropped as mislabelled in about a tenth of the frames). A marker seen in fewer than 2
    frames has no speed: its paw stands, and a reference marker like that leaves
    `min_speed_mm_s` alone as the test.

    Args:
        xyz_m: (T, K, 3) keypoints (m) in `names` order; NaN = missing.
        names: (K,) keypoint names; must include the markers of `settings`.
        fps: frame rate (Hz).
        settings: the marker set's gait settings.
    """
    xyz = np.asarray(xyz_m, dtype=np.float64)
    names = [str(n) for n in names]
    if xyz.ndim != 3 or xyz.shape[0] < 1 or xyz.shape[1:] != (len(names), 3):
        raise ValueError(f'keypoints should have shape (T >= 1, {len(names)}, 3): got '
                         f'{xyz.shape}')
    if not (np.isfinite(fps) and fps > 0):
        raise ValueError(f'fps should be a positive number: got {fps!r}')

    def path_mm(marker: str) -> np.ndarray:
        xy = xyz[:, names.index(marker), :2] * 1e3
        seen = np.all(np.isfinite(xy), axis=1)
        if 2 <= seen.sum() < len(xy):  # across a gap, the marker moves in a straight line
            frames = np.arange(len(xy))
            xy = np.stack([np.interp(frames, frames[seen], xy[seen, c]) for c in range(2)], 1)
        return xy

    def speed_mm_s(xy: np.ndarray) -> np.ndarray:
        return np.concatenate([[np.nan], np.linalg.norm(np.diff(xy, axis=0), axis=1) * fps])

    reference = speed_mm_s(path_mm(settings.reference))
    out = {}
    for paw, marker in settings.paws:
        path = path_mm(marker)
        with np.errstate(invalid='ignore'):
            fast = speed_mm_s(path) > np.fmax(settings.min_speed_mm_s,
                                              settings.speed_ratio * reference)
        swing = np.zeros(len(fast), dtype=bool)
        for start, end in _runs(fast):
            length = min(max(end - start, settings.min_frames), settings.max_frames)
            swing[max(0, start - settings.lead_frames):start + length] = True
        if settings.max_drift_mm > 0:
            _add_slow_steps(swing, path, settings)
        out[paw] = swing
    return out


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Returns the (start, stop) frame ranges of the runs of True in a (T,) bool array."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def _add_slow_steps(swing: np.ndarray, path_mm: np.ndarray, settings: GaitSettings) -> None:
    """Adds a step (in place) where a standing paw's marker drifts too far.

    Too far: more than `max_drift_mm` from where the marker was when the stance began.
    """
    start, t = None, 0
    while t < len(swing):
        if swing[t] or not np.all(np.isfinite(path_mm[t])):
            start, t = None, t + 1
            continue
        if start is None:
            start = path_mm[t]
        elif np.linalg.norm(path_mm[t] - start) > settings.max_drift_mm:
            swing[max(0, t - settings.lead_frames):t + settings.min_frames] = True
            start, t = None, t + settings.min_frames
            continue
        t += 1


class GaitFitter(FloorContactFitter):
    """A support fit (`FitOptions.support_weight`) whose paws step instead of sliding.

    With no paw markers, the support fit pulls every paw that can reach the floor onto it in
    every frame, so the paws are dragged along under the walking body (`keypoint_fit.
    paw_slip`: carried along at 0.6-1.0 of the root's speed on Rat7M walks); a simulated body
    with friction cannot move like that. Here each paw's stance and swing come from its limb
    marker (`swing_schedule`), and in each frame:

    - a standing paw is pulled to the floor as in the support fit and, from the first frame
      of its stance in which its sole is on the floor, its body's origin is held
      horizontally where that frame put it (`anchor_weight`); if the keypoints lift it off
      the floor anyway (a limb that cannot reach its anchor, a forepaw raised in a rear),
      the anchor is dropped and the paw is held again where it next touches down;
    - a swinging paw is neither pulled down nor part of the support polygon, and its lowest
      sole point is pushed up to at least `lift_mm` x sin(pi x phase) over the swing.

    The marker set's weak floor pull (`floor_contact`) skips the bodies of a swinging paw.
    Measured on the shipped Rat7M frames (walk 2010-2310, rear 2460-2600, training clips):
    paws on the floor are carried along at -0.06 to 0.26 of the root's speed (support fit
    0.5-0.8); the mean marker residual is 6.6-7.7 mm (support fit 5.4-6.3 mm). Before the
    floor pull skipped swinging feet: 0.22-0.36 and 6.5-8.1 mm. Known shortcomings:
    `FitOptions.smooth_s` filters the poses after the fit, so planted paws creep again
    (walk: carried at 0.26 with smooth_s 0.033, 0.12 without; the figures above are with
    it); a paw that slips in the data is still planted; a swing is only as good
    as its marker's speed (across a gap in a marker, a straight path is assumed); the legs'
    strength is not checked.
    """

    def __init__(self, marker_set: MarkerSet, keypoint_names: Sequence[str],
                 scale: float = rc.DEFAULT_BODY_SCALE, options: FitOptions | None = None,
                 contact_bodies: Sequence[str] = (), contact_weight: float = 0.0,
                 settings: GaitSettings | None = None):
        """Builds the fitter.

        Raises:
            ClipError: no settings, or a paw of the settings is not a paw of the body
                (`keypoint_fit.PAW_LIMBS`), or a marker of the settings is not among
                `keypoint_names`.
        """
        super().__init__(marker_set, keypoint_names, scale=scale, options=options,
                         contact_bodies=contact_bodies, contact_weight=contact_weight)
        if settings is None:
            raise ClipError(f"marker set '{marker_set.name}' has no gait entry")
        by_name = {p.name: i for i, p in enumerate(self.paws)}
        unknown = [p for p, _ in settings.paws if p not in by_name]
        if unknown:
            raise ClipError(f"marker set '{marker_set.name}': gait paws {unknown} are not "
                            f'paws of the body ({sorted(by_name)})')
        absent = sorted(({m for _, m in settings.paws} | {settings.reference})
                        - set(self.keypoint_names))
        if absent:
            raise ClipError(f'a gait fit needs the markers {absent}, which the keypoints lack')
        self.settings = settings
        self._paw_index = [by_name[p] for p, _ in settings.paws]
        names = self.body.body_names
        self._paw_body = [names.index(p.name) for p in self.paws]
        self._anchor_sqrt_w = float(np.sqrt(settings.anchor_weight))
        self._lift_sqrt_w = float(np.sqrt(settings.lift_weight))
        # Per floor_contact group, the paw whose bodies it lies on (None: no paw's).
        self._group_paw = [next((i for i, p in enumerate(self.paws)
                                 if np.isin(group, p.geoms).any()), None)
                           for group in self.contact_groups]
        self.schedule: dict[str, np.ndarray] = {}
        self._phases: dict[str, np.ndarray] = {}  # per frame: swing phase, NaN in stance
        self.gait_warnings: list[str] = []  # paws whose marker is (almost) never seen
        self._phase = [None] * len(self.paws)  # swing phase in (0, 1), None in stance
        self._anchor = [None] * len(self.paws)  # xy (m) a standing paw is held at

    def _begin_fit(self, xyz: np.ndarray, fps: float | None) -> None:
        if not (fps is not None and np.isfinite(fps) and fps > 0):
            raise ValueError(f'a gait fit needs the frame rate: got fps={fps}')
        self.schedule = swing_schedule(xyz, self.keypoint_names, float(fps), self.settings)
        self._phases = {}
        for paw, swing in self.schedule.items():
            phase = np.full(len(swing), np.nan)
            for start, end in _runs(swing):  # (k + 1) / (n + 1) at the k-th of n frames
                phase[start:end] = np.arange(1, end - start + 1) / (end - start + 1)
            self._phases[paw] = phase
        self.gait_warnings = []
        for paw, marker in self.settings.paws:
            seen = int(np.sum(np.all(np.isfinite(xyz[:, self.keypoint_names.index(marker)]),
                                     axis=1)))
            if seen < 2:
                self.gait_warnings.append(
                    f'gait: marker {marker} is seen in {seen} frame(s), so {paw} has no '
                    'swing and stands where it first touches down')
        self._phase = [None] * len(self.paws)
        self._anchor = [None] * len(self.paws)

    def _begin_frame(self, t: int) -> None:
        for (paw, _), i in zip(self.settings.paws, self._paw_index):
            phase = self._phases[paw][t]
            self._phase[i] = None if np.isnan(phase) else float(phase)
            if self._phase[i] is not None:
                self._anchor[i] = None  # lifted: it lands somewhere new

    def _end_frame(self, qpos: np.ndarray) -> None:
        self._forward(qpos)
        for i in self._paw_index:
            if self._phase[i] is not None:
                continue
            sole, _ = self._paw_points(self.paws[i])
            down = float(np.min(sole[:, 2])) <= self.paw_contact_m
            if not down:
                self._anchor[i] = None  # lifted by the keypoints: it lands anew
            elif self._anchor[i] is None:
                self._anchor[i] = self.data.xpos[self._paw_body[i], :2].copy()

    def _support_paws(self):
        return [p for i, p in enumerate(self.paws) if self._phase[i] is None]

    def _contact_groups_now(self) -> list[np.ndarray]:
        # The marker set's weak floor pull (floor_contact) skips the bodies of a swinging
        # paw, which the lift terms hold up.
        return [g for g, i in zip(self.contact_groups, self._group_paw)
                if i is None or self._phase[i] is None]

    def _lift_terms(self) -> list[tuple[int, np.ndarray, float]]:
        """Returns (body, lowest sole point, mm still to lift) per swinging paw too low."""
        out = []
        for i, paw in enumerate(self.paws):
            if self._phase[i] is None:
                continue
            height = self.settings.lift_mm * 1e-3 * np.sin(np.pi * self._phase[i])
            sole, on = self._paw_points(paw)
            j = int(np.argmin(sole[:, 2]))
            if sole[j, 2] < height:
                out.append((int(on[j]), sole[j].copy(), (height - sole[j, 2]) * 1e3))
        return out

    def _anchor_terms(self) -> list[tuple[int, np.ndarray]]:
        """Returns (body, xy offset from its anchor in mm) per anchored standing paw."""
        return [(self._paw_body[i], (self.data.xpos[self._paw_body[i], :2] - anchor) * 1e3)
                for i, anchor in enumerate(self._anchor)
                if anchor is not None]  # a swinging paw has none (`_begin_frame`)

    def _cost(self, qpos, target, valid, qpos_prev):
        cost = super()._cost(qpos, target, valid, qpos_prev)  # leaves the kinematics of qpos
        for _, _, gap in self._lift_terms():
            cost += self.settings.lift_weight * gap * gap
        for _, offset in self._anchor_terms():
            cost += self.settings.anchor_weight * float(offset @ offset)
        return cost

    def _linearise(self, qpos, target, valid):
        r, jac = super()._linearise(qpos, target, valid)  # leaves the kinematics of qpos
        m, d = self.model, self.data
        rows_r, rows_j = [r], [jac]
        col_scale = self.var_scale * 1e3
        for body, point, gap in self._lift_terms():
            mujoco.mj_jac(m, d, self._jacp, None, point, body)
            rows_r.append(np.array([-gap * self._lift_sqrt_w]))
            rows_j.append(self._jacp[2:3, self.dofs] * col_scale * self._lift_sqrt_w)
        for body, offset in self._anchor_terms():
            mujoco.mj_jac(m, d, self._jacp, None, d.xpos[body], body)
            rows_r.append(offset * self._anchor_sqrt_w)
            rows_j.append(self._jacp[:2, self.dofs] * col_scale * self._anchor_sqrt_w)
        return np.concatenate(rows_r), np.concatenate(rows_j)

    def gait_report(self) -> dict:
        """Returns per paw the share of frames in swing, the number of swings and each swing.

        'swing_frames' lists the swings as [start, stop) indices of the fitted frames (the
        source's frames, before any resampling).
        """
        out = {}
        for paw, s in self.schedule.items():
            runs = [[a, b] for a, b in _runs(s)]
            out[paw] = {'swing_fraction': round(float(s.mean()), 3) if s.size else 0.0,
                        'swings': len(runs), 'swing_frames': runs}
        return out


def checked_gait_settings(marker_set: MarkerSet, options: FitOptions) -> GaitSettings:
    """Returns the gait settings for a fit with `options.gait`, checked before any work.

    Raises:
        ClipError: no support weight, or the marker set has no (or a malformed) `gait`
            entry.
    """
    if not options.support_weight > 0:
        raise ClipError('a gait fit (--gait) needs the support terms: give a support '
                        'weight > 0 (--support-weight)')
    settings = gait_settings(marker_set)
    if settings is None:
        raise ClipError(f"marker set '{marker_set.source or marker_set.name}' has no `gait` "
                        'entry (which marker on each limb tells stance from swing), so '
                        '--gait cannot be used with it')
    return settings


def make_fitter(marker_set: MarkerSet, keypoint_names: Sequence[str],
                scale: float = rc.DEFAULT_BODY_SCALE,
                options: FitOptions | None = None) -> KeypointFitter:
    """Returns the fitter for a marker set and options.

    With floor contact if its YAML asks for it, and stepping paws (`GaitFitter`) if
    `options.gait`.

    Raises:
        ClipError: `options.gait` without `support_weight` > 0 or without a `gait` entry in
            the marker set.
    """
    bodies, weight = floor_contact_settings(marker_set)
    if options is not None and options.gait:
        settings = checked_gait_settings(marker_set, options)
        return GaitFitter(marker_set, keypoint_names, scale=scale, options=options,
                          contact_bodies=bodies, contact_weight=weight, settings=settings)
    if bodies and weight > 0:
        return FloorContactFitter(marker_set, keypoint_names, scale=scale, options=options,
                                  contact_bodies=bodies, contact_weight=weight)
    return KeypointFitter(marker_set, keypoint_names, scale=scale, options=options)


def save_marker_set(marker_set: MarkerSet, path: str, comment: str = '',
                    floor_contact: tuple[Sequence[str], float] | None = None) -> None:
    """Writes a marker set as YAML (offsets in mm, 0.1 mm precision) that `load` reads back.

    Args:
        marker_set: the set to write.
        path: the YAML file; written atomically.
        comment: text put at the top of the file as `#` comment lines.
        floor_contact: (bodies, weight) written as the `floor_contact` entry, if given.
    """
    from vrat_ros.clip import atomic_write

    lines = [f'# {line}'.rstrip() for line in comment.strip().splitlines()] if comment else []
    lines.append(f'# Written by vrat_ros.marker_sets.save_marker_set on '
                 f'{datetime.date.today().isoformat()}.')
    lines += ['', f'marker_set: {marker_set.name}',
              f'body_scale: {float(marker_set.body_scale)}', 'units: mm']
    if marker_set.heading_keypoints:
        lines.append('heading_keypoints: [{}, {}]'.format(*marker_set.heading_keypoints))
    if floor_contact is not None:
        lines.append('floor_contact: {{bodies: [{}], weight: {:g}}}'.format(
            ', '.join(floor_contact[0]), floor_contact[1]))
    lines.append('keypoints:')
    for k, name in enumerate(marker_set.keypoint_names):
        x, y, z = (float(v) * 1e3 for v in marker_set.offsets[k])
        weight = float(marker_set.weights[k])
        extra = '' if weight == 1.0 else f', weight: {weight:g}'
        lines.append(f'  {name}: {{body: {marker_set.bodies[k]}, '
                     f'offset: [{x:.1f}, {y:.1f}, {z:.1f}]{extra}}}')
    text = '\n'.join(lines) + '\n'

    def write(tmp):
        with open(tmp, 'w', encoding='utf-8') as f:
            f.write(text)
    atomic_write(path, write)
