"""Tests of the keypoint readers, the marker set and the inverse-kinematics fit (real rat data)."""

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io

from vrat_ros import keypoint_fit as kf
from vrat_ros.clip import Clip
from vrat_ros.errors import ClipError
from vrat_ros.rat_model import RatBody

RAT_DATA = Path(__file__).resolve().parents[1].parent / 'shared' / 'data' / 'rat'
MOCAP_MAT = RAT_DATA / 'test_rodent_mocap_1000_frames.mat'
MOCAP_NWB = RAT_DATA / 'test_rodent_mocap_1000_frames.nwb'
DANNCE_MAT = RAT_DATA / 'test_mocap_1000_frames_dannce.mat'
STAC_PICKLE = RAT_DATA / 'demo_viz.p'
SHIPPED_CLIP = (Path(__file__).resolve().parents[1] / 'vrat_ros' / 'data' / 'clips'
                / 'rat23_dannce_1000f.npz')

needs_rat_data = pytest.mark.skipif(
    not MOCAP_MAT.is_file(), reason=f'real rat data not found at {RAT_DATA}')

# Measured on frames 0-19 (see the keypoint-fit report): residual mean 0.49 mm; body positions
# vs the STAC fit mean 0.61 mm, max 3.4 mm. The limits leave about a factor of two.
FIT_RESIDUAL_MEAN_MM = 1.0
STAC_BODY_MEAN_MM = 1.5
STAC_BODY_MAX_MM = 6.0
N_FIT_FRAMES = 20


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Loads demo_viz.p without jax and without running arbitrary code."""

    _ALLOWED = {('numpy._core.multiarray', '_reconstruct'), ('numpy', 'ndarray'),
                ('numpy', 'dtype'), ('_codecs', 'encode')}

    def find_class(self, module, name):
        if (module, name) == ('jax._src.array', '_reconstruct_array'):
            return _rebuild_jax_array
        if module == 'numpy.core.multiarray':  # pickled under numpy 1
            module = 'numpy._core.multiarray'
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f'refusing to load {module}.{name}')


def _rebuild_jax_array(fn, args, state, *_):
    array = fn(*args)
    array.__setstate__(state)
    return array


@pytest.fixture(scope='module')
def stac():
    with open(STAC_PICKLE, 'rb') as f:
        return _NumpyOnlyUnpickler(f).load()


@pytest.fixture(scope='module')
def mocap():
    return kf.read_keypoints_mat(str(MOCAP_MAT))


@pytest.fixture(scope='module')
def first_frames_fit(mocap):
    xyz, names = mocap
    fitter = kf.KeypointFitter(kf.load_marker_set(), names)
    qpos, residual, failed = fitter.fit(xyz[:N_FIT_FRAMES] * 1e-3)
    return fitter, qpos, residual, failed


# -- marker set ---------------------------------------------------------------------------------

def test_default_marker_set_has_the_rat23_keypoints_on_model_bodies():
    assert Path(kf.default_marker_set_path()).is_file()
    marker_set = kf.load_marker_set()
    assert marker_set.name == 'rat23'
    assert marker_set.keypoint_names == kf.RAT23_KEYPOINTS
    assert marker_set.offsets.shape == (23, 3)
    assert set(marker_set.bodies) <= set(RatBody().body_names)
    np.testing.assert_allclose(marker_set.offsets_at(1.0), marker_set.offsets / 0.9)


def test_marker_set_with_bad_entry_is_rejected(tmp_path):
    path = tmp_path / 'bad.yaml'
    path.write_text('marker_set: x\nkeypoints:\n  Snout: {body: skull}\n')
    with pytest.raises(ClipError, match=r"bad\.yaml.*Snout"):
        kf.load_marker_set(str(path))


# -- readers ------------------------------------------------------------------------------------

@needs_rat_data
def test_mat_reader_gives_frames_keypoints_xyz_in_mm(mocap):
    xyz, names = mocap
    assert xyz.shape == (1000, 23, 3) and xyz.dtype == np.float64
    assert names == list(kf.RAT23_KEYPOINTS)
    assert 0.0 < np.min(xyz[..., 2]) and np.max(xyz[..., 2]) < 200.0  # mm, floor near 0


@needs_rat_data
def test_nwb_and_mat_readers_give_identical_keypoints(mocap):
    xyz_mat, names_mat = mocap
    xyz_nwb, names_nwb, confidence = kf.read_keypoints_nwb(str(MOCAP_NWB),
                                                           return_confidence=True)
    assert names_nwb == names_mat
    np.testing.assert_array_equal(xyz_nwb, xyz_mat)
    assert confidence.shape == (1000, 23)


@needs_rat_data
def test_truncated_dannce_mat_is_read_by_loading_only_pred(mocap):
    # The file's `metadata` struct is cut off upstream; a full loadmat() fails on it.
    xyz, names = kf.read_keypoints_mat(str(DANNCE_MAT))
    assert xyz.shape == (999, 23, 3)
    np.testing.assert_array_equal(xyz, mocap[0][:999])


def test_mat_v73_hdf5_is_read_with_matlab_axis_order(tmp_path):
    pred = np.arange(4 * 3 * 23, dtype=np.float64).reshape(4, 3, 23)
    path = tmp_path / 'v73.mat'
    with h5py.File(path, 'w', userblock_size=512) as f:  # MATLAB v7.3 layout
        f['pred'] = pred.T  # MATLAB writes column-major, so HDF5 sees the axes reversed
    xyz, _ = kf.read_keypoints_mat(str(path))
    np.testing.assert_array_equal(xyz, pred.transpose(0, 2, 1))


@needs_rat_data
def test_mat_cut_inside_pred_raises_clip_error_naming_the_file(tmp_path):
    path = tmp_path / 'cut_short.mat'
    path.write_bytes(MOCAP_MAT.read_bytes()[:20000])
    with pytest.raises(ClipError, match='cut_short.mat'):
        kf.read_keypoints_mat(str(path))


def test_text_file_named_mat_raises_clip_error_naming_the_file(tmp_path):
    path = tmp_path / 'notes.mat'
    path.write_text('these are not keypoints\n')
    with pytest.raises(ClipError, match='notes.mat'):
        kf.read_keypoints_mat(str(path))
    with pytest.raises(ClipError, match='notes.mat'):
        kf.read_keypoints_nwb(str(path))


def test_mat_without_pred_raises_clip_error_listing_what_it_holds(tmp_path):
    path = tmp_path / 'other.mat'
    scipy.io.savemat(str(path), {'positions': np.zeros((4, 3, 23))})
    with pytest.raises(ClipError, match=r"other\.mat.*no variable `pred`.*positions"):
        kf.read_keypoints_mat(str(path))


def test_mat_with_wrongly_shaped_pred_raises_clip_error(tmp_path):
    path = tmp_path / 'wrong.mat'
    scipy.io.savemat(str(path), {'pred': np.zeros((4, 5, 23))})
    with pytest.raises(ClipError, match=r"wrong\.mat.*\(frames, 3, keypoints\)"):
        kf.read_keypoints_mat(str(path))
    scipy.io.savemat(str(path), {'pred': np.zeros((4, 3, 20))})
    with pytest.raises(ClipError, match=r'20 keypoints but 23 names'):
        kf.read_keypoints_mat(str(path))


def test_missing_file_and_unknown_extension_raise_clip_error(tmp_path):
    with pytest.raises(ClipError, match='absent.nwb'):
        kf.read_keypoints_nwb(str(tmp_path / 'absent.nwb'))
    with pytest.raises(ClipError, match=r"points\.csv.*\.mat.*\.nwb"):
        kf.read_keypoints(str(tmp_path / 'points.csv'))


# -- units --------------------------------------------------------------------------------------

@needs_rat_data
def test_units_are_guessed_from_keypoint_spacing_and_can_be_overridden(mocap):
    xyz = mocap[0]
    assert kf.guess_units(xyz) == 'mm'
    assert kf.guess_units(xyz * 1e-3) == 'm'
    assert kf.resolve_units(xyz, 'auto') == ('mm', True)
    assert kf.resolve_units(xyz, 'cm') == ('cm', False)
    with pytest.raises(ValueError, match='inch'):
        kf.resolve_units(xyz, 'inch')


# -- fit ----------------------------------------------------------------------------------------

@needs_rat_data
def test_fit_puts_markers_on_the_keypoints(first_frames_fit):
    _, _, residual, failed = first_frames_fit
    assert not failed.any()
    assert np.all(np.isfinite(residual))
    assert np.mean(residual) < FIT_RESIDUAL_MEAN_MM


@needs_rat_data
def test_fit_keeps_joints_inside_their_limits_and_the_tail_straight(first_frames_fit):
    fitter, qpos, _, _ = first_frames_fit
    model = fitter.model
    hinges = qpos[:, 7:]
    limited = model.jnt_limited[1:].astype(bool)
    lo, hi = model.jnt_range[1:, 0], model.jnt_range[1:, 1]
    assert np.all((hinges >= lo - 1e-9) | ~limited)
    assert np.all((hinges <= hi + 1e-9) | ~limited)
    tail = [i for i, n in enumerate(fitter.body.hinge_names) if n.startswith('vertebra_C')]
    assert np.all(hinges[:, tail] == 0.0)
    np.testing.assert_allclose(np.linalg.norm(qpos[:, 3:7], axis=1), 1.0, atol=1e-9)


@needs_rat_data
def test_fit_body_positions_match_the_published_stac_fit(first_frames_fit, stac):
    fitter, qpos, _, _ = first_frames_fit
    tracked = fitter.body.tracked_body_ids
    dist_mm = np.stack([
        np.linalg.norm(fitter.body.body_positions(q)[tracked] - stac['xpos'][t][tracked], axis=1)
        for t, q in enumerate(qpos)]) * 1e3
    assert dist_mm.mean() < STAC_BODY_MEAN_MM
    assert dist_mm.max() < STAC_BODY_MAX_MM


@needs_rat_data
def test_missing_keypoints_are_masked_not_zero_filled(mocap, first_frames_fit):
    xyz, names = mocap
    fitter, qpos_full, _, _ = first_frames_fit
    xyz_m = xyz[:6] * 1e-3
    hidden = [names.index(n) for n in ('HandL', 'KneeR', 'EarL')]
    xyz_m[3, hidden] = np.nan
    qpos, residual, failed = fitter.fit(xyz_m)

    assert not failed.any()
    assert np.all(np.isnan(residual[3, hidden]))
    assert np.nanmean(residual[3]) < FIT_RESIDUAL_MEAN_MM
    # The hidden markers stay near where the keypoints really were (a zero-filled keypoint would
    # drag them ~0.35 m towards the origin).
    markers = fitter.marker_positions(qpos[3])
    truth = xyz[3] * 1e-3
    assert np.max(np.linalg.norm(markers[hidden] - truth[hidden], axis=1)) < 0.01
    np.testing.assert_allclose(qpos[3, :3], qpos_full[3, :3], atol=2e-3)


@needs_rat_data
def test_frame_with_too_few_keypoints_holds_the_previous_pose(mocap):
    xyz, names = mocap
    xyz_m = xyz[:4] * 1e-3
    xyz_m[2, 3:] = np.nan  # only 3 keypoints left
    qpos, residual, failed = kf.fit_keypoints(xyz_m, names)
    assert failed.tolist() == [False, False, True, False]
    np.testing.assert_array_equal(qpos[2], qpos[1])
    assert np.all(np.isnan(residual[2]))


@needs_rat_data
def test_a_turn_the_warm_start_cannot_follow_is_refitted_from_scratch(mocap):
    xyz, names = mocap
    xyz_m = xyz[:5] * 1e-3
    centre = xyz_m[3:].mean(axis=(0, 1))
    half_turn = np.diag([-1.0, -1.0, 1.0])
    xyz_m[3:] = (xyz_m[3:] - centre) @ half_turn.T + centre  # the rat turns 180 deg at once
    options = kf.FitOptions(iterations=1, fail_residual_mm=2.0)
    _, residual, failed = kf.fit_keypoints(xyz_m, names, options=options)
    assert not failed.any()
    assert np.all(np.mean(residual, axis=1) < FIT_RESIDUAL_MEAN_MM)


@needs_rat_data
def test_fit_keypoint_file_records_provenance(tmp_path, mocap):
    path = tmp_path / 'short.mat'
    scipy.io.savemat(str(path), {'pred': mocap[0][:8].transpose(0, 2, 1)})
    clip, report = kf.fit_keypoint_file(str(path), meta={'licence': 'BSD-3-Clause'})

    assert report['frames'] == 8 and report['fps'] == 50.0
    assert report['units_assumed'] == 'mm' and report['failed_frames'] == []
    assert report['residual_mm_mean'] < FIT_RESIDUAL_MEAN_MM
    assert report['duration_s'] == pytest.approx(7 / 50.0)
    meta = clip.meta
    assert meta['source_file'] == 'short.mat' and meta['source_format'] == 'mat'
    assert meta['fps_assumed'] is True and meta['units_guessed'] is True
    assert meta['marker_set'] == 'rat23' and meta['body_scale'] == 0.9
    assert meta['licence'] == 'BSD-3-Clause' and 'fit_options' in meta
    np.testing.assert_allclose(clip.keypoints, mocap[0][:8] * 1e-3)

    clip.save(str(tmp_path / 'short.npz'))
    assert Clip.load(str(tmp_path / 'short.npz')).n_frames == 8


# -- shipped clip -------------------------------------------------------------------------------

def test_shipped_clip_loads_with_its_licence_and_rate():
    clip = Clip.load(str(SHIPPED_CLIP))
    assert clip.n_frames == 1000 and clip.fps == 50.0
    assert clip.joint_names == RatBody().hinge_names
    assert clip.meta['licence'] == 'BSD-3-Clause'
    assert 'Talmo Lab' in clip.meta['copyright']
    assert clip.meta['origin_repository'] == 'talmolab/stac-mjx'
    assert clip.meta['fps_assumed'] is True
    assert clip.keypoints.shape == (1000, 23, 3)
    assert SHIPPED_CLIP.stat().st_size < 1.5e6


# -- marker gaps, label checks and smoothing ----------------------------------------------------

def _arm_gap_case(fill_gaps):
    """Fits 24 frames of a left arm moving at constant joint rates, its keypoints hidden in 6-17.

    The keypoints are the model's own markers along that motion, so the truth is known.
    """
    marker_set = kf.load_marker_set()
    names = list(marker_set.keypoint_names)
    fitter = kf.KeypointFitter(marker_set, names,
                               options=kf.FitOptions(fill_gaps=fill_gaps))
    hinges = fitter.body.hinge_names
    truth_q = np.repeat(Clip.load(str(SHIPPED_CLIP)).qpos[:1], 24, axis=0)
    truth_q[:, 7 + hinges.index('shoulder_L')] += 0.03 * np.arange(24)
    truth_q[:, 7 + hinges.index('elbow_L')] -= 0.04 * np.arange(24)
    truth = np.stack([fitter.marker_positions(q) for q in truth_q])
    hidden = [names.index(n) for n in ('ElbowL', 'WristL', 'HandL')]
    xyz = truth.copy()
    xyz[6:18, hidden] = np.nan
    qpos, residual, failed = fitter.fit(xyz)
    fitted = np.stack([fitter.marker_positions(q) for q in qpos])
    hidden_error_mm = np.linalg.norm(fitted[6:18, hidden] - truth[6:18, hidden], axis=2) * 1e3
    arm = [7 + i for i, n in enumerate(hinges)
           if n.endswith('_L') and n.split('_')[0] in ('shoulder', 'elbow', 'wrist', 'finger')]
    max_jump = float(np.max(np.abs(np.diff(qpos[:, arm], axis=0))))
    return hidden_error_mm, max_jump, residual, failed


def test_joints_without_markers_are_interpolated_across_the_gap():
    # Measured: the hidden markers stay within 3.0 mm of the truth across the gap with gap
    # filling and drift up to 9.4 mm without; the largest per-frame arm-joint step is 0.12 rad
    # with it (the fit of the full frames alone) and 0.40 rad without (the snap at the end).
    filled_error, filled_jump, filled_residual, filled_failed = _arm_gap_case(True)
    held_error, held_jump, held_residual, _ = _arm_gap_case(False)
    assert not filled_failed.any()
    assert filled_error.max() < 4.5 and held_error.max() > 8.0
    assert filled_jump < 0.2 and held_jump > 0.3
    # Only unobserved joints change, so the keypoints that were present fit exactly as well.
    np.testing.assert_allclose(filled_residual, held_residual, atol=1e-6, equal_nan=True)


def test_keypoints_nearer_the_other_side_are_dropped_as_mislabelled():
    marker_set = kf.MarkerSet(
        name='pair', body_scale=0.9, keypoint_names=('ElbowL', 'ShoulderL', 'ShoulderR'),
        bodies=('upper_arm_L', 'scapula_L', 'scapula_R'), offsets=np.zeros((3, 3)),
        weights=np.ones(3), label_checks=(('ElbowL', 'ShoulderL', 'ShoulderR'),))
    xyz = np.array([[[0.0, 0.03, 0.0], [0.0, 0.02, 0.03], [0.0, -0.02, 0.03]],    # own side
                    [[0.0, -0.025, 0.0], [0.0, 0.02, 0.03], [0.0, -0.02, 0.03]],  # wrong side
                    [[0.0, -0.025, 0.0], [np.nan] * 3, [0.0, -0.02, 0.03]]])     # no reference
    out, rejected = kf.reject_mislabelled(xyz, ['ElbowL', 'ShoulderL', 'ShoulderR'], marker_set)
    assert rejected == {'ElbowL': 1}
    assert np.all(np.isfinite(out[0])) and np.all(np.isnan(out[1, 0]))
    np.testing.assert_array_equal(out[1, 1:], xyz[1, 1:])
    np.testing.assert_array_equal(out[2, 0], xyz[2, 0])


def test_label_checks_in_a_marker_set_must_name_its_keypoints(tmp_path):
    path = tmp_path / 'bad.yaml'
    path.write_text('marker_set: bad\nbody_scale: 0.9\nunits: m\nlabel_checks: {A: [A, C]}\n'
                    'keypoints:\n  A: {body: skull, offset: [0, 0, 0]}\n')
    with pytest.raises(ClipError, match='label_checks'):
        kf.load_marker_set(str(path))


def test_smoothing_removes_a_one_frame_spike_and_keeps_a_constant_pose():
    body = RatBody()
    qpos = np.repeat(Clip.load(str(SHIPPED_CLIP)).qpos[:1], 9, axis=0)
    spiked = qpos.copy()
    column = 7 + body.hinge_names.index('elbow_L')
    spiked[4, column] += 0.6
    lo, hi = body.model.jnt_range[1:, 0], body.model.jnt_range[1:, 1]
    hinges = np.arange(7, body.nq)
    out = kf.smooth_poses(spiked, 1.0, hinges, lo, hi)
    # A unit Gaussian keeps 0.40 of a one-frame spike at its centre.
    assert out[4, column] - qpos[4, column] == pytest.approx(0.6 * 0.399, abs=0.01)
    same = kf.smooth_poses(qpos, 1.0, hinges, lo, hi)
    np.testing.assert_allclose(same, qpos, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(out[:, 3:7], axis=1), 1.0, atol=1e-12)


def test_smoothing_needs_the_frame_rate():
    fitter = kf.KeypointFitter(kf.load_marker_set(), ['Snout'],
                               options=kf.FitOptions(smooth_s=0.03))
    with pytest.raises(ValueError, match='frame rate'):
        fitter.fit(np.zeros((3, 1, 3)))


def test_smoothing_longer_than_the_cap_or_the_clip_is_refused_before_fitting(monkeypatch):
    fitter = kf.KeypointFitter(kf.load_marker_set(), ['Snout'],
                               options=kf.FitOptions(smooth_s=100.0))
    monkeypatch.setattr(fitter, 'solve_frame', None)  # any fitting would fail differently
    # 140 frames at 30 Hz last 4.63 s: 100 s was accepted and failed every frame.
    with pytest.raises(ValueError, match='at most 1 s'):
        fitter.fit(np.zeros((140, 1, 3)), fps=30.0)
    fitter.options = kf.FitOptions(smooth_s=0.5)  # under the cap but longer than the clip
    with pytest.raises(ValueError, match=r'clip \(0.1 s\)'):
        fitter.fit(np.zeros((4, 1, 3)), fps=30.0)
    assert kf.MAX_SMOOTH_S == 1.0


# -- physical support ---------------------------------------------------------------------------

RAT7M_MAT = RAT_DATA / 'demo_indices.mat'
needs_rat7m = pytest.mark.skipif(not RAT7M_MAT.is_file(),
                                 reason=f'Rat7M recording not found at {RAT7M_MAT}')
# Rat7M frames 2225-2234, a walk. Measured: without the option a forepaw hangs 21-40 mm
# above the floor in every frame and PD holds 1 of the 10 poses for 1 s; with support_weight
# 3 the lowest sole point of every paw lies within 6.5 mm of the floor (2.2 mm above it at
# most; a forepaw tilted into it, 6.5 mm below, at worst), PD holds all 10, and the mean
# keypoint residual grows from 2.2 to 5.0 mm.
SUPPORT_FRAMES = (2225, 2235)
SUPPORT_WEIGHT = 3.0


def _lowest_sole_mm(fitter, clip):
    """(T, paws) lowest sole point of each paw above the floor (mm)."""
    qpos = clip.reorder_to(fitter.body.hinge_names).qpos
    out = []
    for q in qpos:
        fitter._forward(q)
        out.append([np.min(fitter._paw_points(p)[0][:, 2]) * 1e3 for p in fitter.paws])
    return np.array(out)


@pytest.fixture(scope='module')
def rat7m_support_fits():
    from vrat_ros import importers
    fits = {}
    for weight in (0.0, SUPPORT_WEIGHT):
        clip, report = importers.import_clip(
            RAT7M_MAT, frames=SUPPORT_FRAMES, scale=0.9, animal_scale=1.013,
            options=kf.FitOptions(support_weight=weight))
        fits[weight] = clip, report, kf.pose_holdability(clip, frames=range(clip.n_frames))
    return fits


def test_paws_of_the_body_and_their_reach():
    fitter = kf.KeypointFitter(kf.load_marker_set(), list(kf.RAT23_KEYPOINTS))
    assert [p.name for p in fitter.paws] == ['hand_L', 'hand_R', 'foot_L', 'foot_R']
    reach = {p.name: p.reach * 1e3 for p in fitter.paws}
    # Stretched limb lengths of the 0.9 body (mm): the hind legs are the longer ones.
    assert reach['hand_L'] == pytest.approx(70.7, abs=0.5) == reach['hand_R']
    assert reach['foot_L'] == pytest.approx(103.7, abs=0.5) == reach['foot_R']
    # rat23 observes every paw (HandL on hand_L, FootL on foot_L, ...).
    assert all(p.markers.size == 1 for p in fitter.paws)
    assert fitter.support_sqrt_w == 0.0  # off by default


def test_support_polygon_distance():
    square = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    assert kf._nearest_on_support(np.array([0.5, 0.5]), square)[0] == 0.0
    dist, normal, i, j, t = kf._nearest_on_support(np.array([0.5, -2.0]), square)
    assert dist == pytest.approx(2.0)
    np.testing.assert_allclose(normal, [0.0, -1.0])
    nearest = (1 - t) * square[i] + t * square[j]
    np.testing.assert_allclose(nearest, [0.5, 0.0])
    # Two points (no area): the distance to the segment between them.
    assert kf._nearest_on_support(np.array([0.5, 1.0]), square[:2])[0] == pytest.approx(1.0)


def test_pose_holdability_holds_dannce_poses_and_not_a_pose_in_the_air():
    clip = Clip.load(str(SHIPPED_CLIP))
    held = kf.pose_holdability(clip, frames=[0, 500, 999])
    assert held['held'] == [True, True, True] and held['held_fraction'] == 1.0
    lifted = Clip(qpos=clip.qpos[:2] + np.r_[0.0, 0.0, 0.3, np.zeros(clip.qpos.shape[1] - 3)],
                  fps=clip.fps, joint_names=clip.joint_names, body_scale=clip.body_scale,
                  meta={})
    dropped = kf.pose_holdability(lifted, frames=[0])
    assert dropped['held'] == [False] and dropped['failure_reason'] == ['root']
    assert 0.0 < dropped['failure_time_s'][0] < kf.HOLD_SECONDS


@needs_rat7m
def test_support_puts_unobserved_paws_down_and_makes_rat7m_poses_holdable(rat7m_support_fits):
    fitter = kf.KeypointFitter(kf.load_marker_set(), list(kf.RAT23_KEYPOINTS))
    plain, plain_report, plain_held = rat7m_support_fits[0.0]
    fitted, report, held = rat7m_support_fits[SUPPORT_WEIGHT]
    assert fitted.meta['fit_options']['support_weight'] == SUPPORT_WEIGHT
    low, plain_low = _lowest_sole_mm(fitter, fitted), _lowest_sole_mm(fitter, plain)
    # Without the option a forepaw hangs in every frame; with it every paw is on the floor.
    assert np.min(np.max(plain_low[:, :2], axis=1)) > 15.0
    assert np.all(np.abs(low) < 8.0) and np.all(low < 3.0)
    # PD holds every pose for 1 s with the option, and at most one without it.
    assert held['held'] == [True] * 10
    assert sum(plain_held['held']) <= 1
    # The keypoints pay for it, within reason.
    assert plain_report['residual_mm_mean'] < 2.5
    assert 3.5 < report['residual_mm_mean'] < 6.0


@needs_rat7m
def test_cli_import_support_weight_reaches_the_fit(tmp_path):
    import argparse

    from vrat_ros import cli_import
    parser = argparse.ArgumentParser(prog='vrat')
    cli_import.add_subcommands(parser.add_subparsers(dest='command', required=True))
    out = tmp_path / 'walk.npz'
    args = parser.parse_args(['import', str(RAT7M_MAT), '--frames', '2230:2233',
                              '--animal-scale', '1.013', '--support-weight', '3',
                              '--out', str(out), '--no-progress'])
    assert args.func(args) == 0
    assert Clip.load(str(out)).meta['fit_options']['support_weight'] == 3.0
    assert parser.parse_args(['import', 'x.mat']).support_weight == 0.0
    with pytest.raises(SystemExit):
        parser.parse_args(['import', 'x.mat', '--support-weight', '-1'])


@needs_rat_data
def test_import_report_counts_the_frames_where_support_acted(tmp_path):
    """No paw marker in Rat7M: support acts in every fitted frame; DANNCE sees every paw."""
    from vrat_ros import importers
    if not RAT7M_MAT.is_file():
        pytest.skip(f'{RAT7M_MAT} not found')
    options = kf.FitOptions(support_weight=3.0)
    _, report = importers.import_clip(str(RAT7M_MAT), out=str(tmp_path / 'walk.npz'),
                                      frames=(2230, 2234), options=options)
    assert report['support_frames'] == 4
    _, report = importers.import_clip(str(MOCAP_MAT), out=str(tmp_path / 'dannce.npz'),
                                      frames=(0, 4), options=options)
    assert report['support_frames'] == 0
    _, report = importers.import_clip(str(RAT7M_MAT), out=str(tmp_path / 'off.npz'),
                                      frames=(2230, 2234))
    assert 'support_frames' not in report


# -- gait (stepping paws) ------------------------------------------------------------------------

def _gait(**kw):
    """Gait settings for one paw; slow steps (max_drift_mm) off unless asked for."""
    from vrat_ros import marker_sets
    kw.setdefault('max_drift_mm', 0.0)
    return marker_sets.GaitSettings(paws=(('foot_L', 'ShinL'),), reference='SpineM', **kw)


def test_swing_schedule_reads_steps_from_the_limb_marker_speed():
    from vrat_ros import marker_sets
    fps, n = 30.0, 24
    xyz = np.zeros((n, 2, 3))  # SpineM still, ShinL moves in x
    x = np.zeros(n)
    x[5] = 0.02  # one fast frame (600 mm/s) and back (600 mm/s): a 2-frame run
    x[12:] = 0.02 * np.arange(1, n - 11)  # 600 mm/s from frame 12 to the end (12 frames)
    xyz[:, 1, 0] = x
    names = ['SpineM', 'ShinL']
    swing = marker_sets.swing_schedule(xyz, names, fps, _gait(lead_frames=0))['foot_L']
    # Frames 5-6 swing; the long run from 12 is cut at 8 frames (12-19); the rest is stance.
    assert np.flatnonzero(swing).tolist() == [5, 6] + list(range(12, 20))
    # By default the paw lifts a frame before its marker moves.
    swing = marker_sets.swing_schedule(xyz, names, fps, _gait())['foot_L']
    assert np.flatnonzero(swing).tolist() == [4, 5, 6] + list(range(11, 20))
    # A lone fast frame is lengthened to min_frames.
    lone = xyz.copy()
    lone[:, 1, 0] = 0.0
    lone[8:, 1, 0] = 0.02  # one step of 600 mm/s into frame 8
    swing = marker_sets.swing_schedule(lone, names, fps,
                                       _gait(min_frames=3, lead_frames=0))['foot_L']
    assert np.flatnonzero(swing).tolist() == [8, 9, 10]
    # A paw carried along by a body that moves as fast is not stepping.
    carried = xyz.copy()
    carried[:, 0, 0] = carried[:, 1, 0]
    assert not marker_sets.swing_schedule(carried, names, fps, _gait())['foot_L'].any()
    # Slower than min_speed_mm_s (0.005 m a frame = 150 mm/s) is stance; a missing marker too.
    slow = xyz.copy()
    slow[:, 1, 0] = 0.005 * np.arange(n)
    assert not marker_sets.swing_schedule(slow, names, fps, _gait())['foot_L'].any()
    gone = xyz.copy()
    gone[:, 1] = np.nan
    assert not marker_sets.swing_schedule(gone, names, fps, _gait())['foot_L'].any()
    # A marker that reappears elsewhere after a gap moved across it: 0.04 m in frames 3-6
    # (4 steps of 10 mm, 300 mm/s), then still; with the gap at the ends, it is held.
    gap = np.zeros((n, 2, 3))
    gap[6:, 1, 0] = 0.04
    gap[3:6, 1] = np.nan
    swing = marker_sets.swing_schedule(gap, names, fps, _gait(lead_frames=0))['foot_L']
    assert np.flatnonzero(swing).tolist() == [3, 4, 5, 6]
    gap[:6, 1] = np.nan
    assert not marker_sets.swing_schedule(gap, names, fps, _gait())['foot_L'].any()
    # A slow drift (3 mm a frame, 90 mm/s) is a step once it passes max_drift_mm: 33 mm
    # from the stance's start in frame 11 (lead frame 10, 2-frame step 11-12); the next
    # stance starts at 13 and has drifted exactly 30 mm, not more, by the last frame.
    slow_steps = xyz.copy()
    slow_steps[:, 1, 0] = 0.003 * np.arange(n)
    swing = marker_sets.swing_schedule(slow_steps, names, fps,
                                       _gait(max_drift_mm=30.0))['foot_L']
    assert np.flatnonzero(swing).tolist() == [10, 11, 12]
    # A missing reference marker leaves the speed floor alone as the test.
    no_ref = xyz.copy()
    no_ref[:, 0] = np.nan
    assert marker_sets.swing_schedule(no_ref, names, fps, _gait())['foot_L'].sum() == 12
    for bad_fps in (0.0, -30.0, float('nan'), float('inf')):
        with pytest.raises(ValueError, match='fps'):
            marker_sets.swing_schedule(xyz, names, bad_fps, _gait())
    with pytest.raises(ValueError, match='shape'):
        marker_sets.swing_schedule(xyz[:0], names, fps, _gait())


def test_gait_settings_are_read_and_checked(tmp_path):
    from vrat_ros import marker_sets
    rat7m = marker_sets.resolve_marker_set('rat7m20')
    settings = marker_sets.gait_settings(rat7m)
    assert dict(settings.paws) == {'foot_L': 'ShinL', 'foot_R': 'ShinR', 'hand_L': 'ArmL',
                                   'hand_R': 'ArmR'}
    assert settings.reference == 'SpineM' and settings.max_frames == 8
    assert marker_sets.gait_settings(marker_sets.resolve_marker_set('rat23')) is None
    text = Path(rat7m.source).read_text(encoding='utf-8')
    good = '  paws: {foot_L: ShinL, foot_R: ShinR, hand_L: ArmL, hand_R: ArmR}\n'
    assert good in text
    for bad, says in [('  paws: {foot_L: NoSuchMarker}\n', 'lacks'),
                      (good + '  lift_mm: -3\n', 'lift_mm'),
                      (good + '  lift_mm: 1000000.0\n', r'lift_mm .* in \[0, 50\]'),
                      (good + '  max_frames: 2.5\n', 'whole number'),
                      (good + '  max_frames: 100000000000000000000000\n', 'max_frames'),
                      (good + '  min_frames: 0\n', 'min_frames'),
                      (good + '  min_frames: 9\n', 'at most max_frames'),
                      (good + '  lead_frames: 9\n', 'at most max_frames'),
                      (good + '  anchor_weight: .nan\n', 'anchor_weight'),
                      (good + '  speed_ratio: true\n', 'speed_ratio'),
                      (good + '  min_speed_mm_s: 2e2\n', 'YAML wants'),
                      (good + '  lift_m: 3\n', 'unknown keys'),
                      ('  paws: []\n', 'should be')]:
        path = tmp_path / 'set.yaml'
        path.write_text(text.replace(good, bad), encoding='utf-8')
        with pytest.raises(ClipError, match=says):
            marker_sets.gait_settings(kf.load_marker_set(path))
    # Whole numbers written as floats are whole numbers; settings built in code are checked.
    path.write_text(text.replace(good, good + '  max_frames: 6.0\n'), encoding='utf-8')
    assert marker_sets.gait_settings(kf.load_marker_set(path)).max_frames == 6
    with pytest.raises(ValueError, match='lead_frames'):
        _gait(lead_frames=-5)
    with pytest.raises(ValueError, match='min_frames'):
        _gait(min_frames=2.0)


def test_a_gait_fit_needs_support_and_a_gait_entry():
    from vrat_ros import marker_sets
    rat7m = marker_sets.resolve_marker_set('rat7m20')
    names = list(rat7m.keypoint_names)
    with pytest.raises(ClipError, match='support'):
        marker_sets.make_fitter(rat7m, names, options=kf.FitOptions(gait=True))
    rat23 = marker_sets.resolve_marker_set('rat23')
    with pytest.raises(ClipError, match='no `gait` entry'):
        marker_sets.make_fitter(rat23, list(rat23.keypoint_names),
                                options=kf.FitOptions(gait=True, support_weight=3.0))
    with pytest.raises(ClipError, match='ShinL'):  # the markers it reads must be given
        marker_sets.make_fitter(rat7m, [n for n in names if n != 'ShinL'],
                                options=kf.FitOptions(gait=True, support_weight=3.0))
    fitter = marker_sets.make_fitter(rat7m, names,
                                     options=kf.FitOptions(gait=True, support_weight=3.0))
    assert isinstance(fitter, marker_sets.GaitFitter)
    with pytest.raises(ValueError, match='frame rate'):
        fitter.fit(np.zeros((3, len(names), 3)))
    # The plain fits do not step paws: asking them to is refused, not ignored.
    with pytest.raises(ValueError, match='gait'):
        kf.fit_keypoints(np.zeros((3, len(names), 3)), names, rat7m,
                         options=kf.FitOptions(gait=True, support_weight=3.0), fps=30.0)
    with pytest.raises(ValueError, match='gait'):
        kf.fit_keypoint_file('no_such_file.mat', options=kf.FitOptions(gait=True))


# Rat7M frames 2010-2060, the start of the held-out walk: every paw's limb marker shows one
# to three steps there (swing_schedule). Measured: the support fit carries the paws on the
# floor along at 0.99 of the root's speed, the gait fit at 0.53 (edges of swings, where a
# paw is within 5 mm of the floor and already moving, weigh heavily in 50 frames); the
# highest sole point of each paw's swings is 9-11 mm (feet) and 48-54 mm (forepaws, which
# the forearm markers lift) above the floor; the support fit keeps every paw within 3 mm.
GAIT_FRAMES = (2010, 2060)


@pytest.fixture(scope='module')
def rat7m_gait_fits():
    from vrat_ros import importers
    fits = {}
    for gait in (False, True):
        fits[gait] = importers.import_clip(
            RAT7M_MAT, frames=GAIT_FRAMES, scale=0.9, animal_scale=1.013,
            options=kf.FitOptions(smooth_s=0.033, support_weight=3.0, gait=gait))
    return fits


@needs_rat7m
def test_a_gait_fit_plants_standing_paws_and_lifts_swinging_ones(rat7m_gait_fits):
    from vrat_ros import marker_sets
    (plain, plain_report), (stepped, report) = rat7m_gait_fits[False], rat7m_gait_fits[True]
    assert 'gait' not in plain_report and 'gait' not in plain.meta
    assert stepped.meta['fit_options']['gait'] is True
    assert stepped.meta['gait']['settings']['reference'] == 'SpineM'
    gait = report['gait']
    assert set(gait) == {'foot_L', 'foot_R', 'hand_L', 'hand_R'}
    assert all(g['swings'] >= 1 for g in gait.values())
    # Paws on the floor go along with the root far less.
    assert kf.paw_slip(plain)['carried_ratio'] > 0.6
    assert kf.paw_slip(stepped)['carried_ratio'] < 0.7
    # In a swing the sole leaves the floor; without the gait every paw stays down.
    fitter = marker_sets.make_fitter(
        marker_sets.resolve_marker_set('rat7m20'), list(stepped.keypoint_names),
        options=kf.FitOptions(support_weight=3.0, gait=True))
    # The schedule the fit used: from the keypoints after the label checks.
    kept, _ = kf.reject_mislabelled(stepped.keypoints, stepped.keypoint_names,
                                    fitter.marker_set)
    schedule = marker_sets.swing_schedule(kept, stepped.keypoint_names, stepped.fps,
                                          fitter.settings)
    low, plain_low = _lowest_sole_mm(fitter, stepped), _lowest_sole_mm(fitter, plain)
    paws = [p.name for p in fitter.paws]
    peaks = []
    for paw, swing in schedule.items():
        # The clip's meta says where each swing was (it used to give only counts).
        runs = [[a, b] for a, b in marker_sets._runs(swing)]
        assert stepped.meta['gait']['paws'][paw]['swing_frames'] == runs
        assert len(runs) == gait[paw]['swings']
        if swing.any():
            peaks.append(float(np.max(low[swing, paws.index(paw)])))
    assert len(peaks) == 4 and min(peaks) > 5.0
    assert np.all(plain_low < 5.0)
    # The keypoints pay for it, within reason.
    assert report['residual_mm_mean'] < plain_report['residual_mm_mean'] + 8.0


@needs_rat7m
def test_a_gait_fit_warns_of_a_paw_whose_marker_it_never_sees(tmp_path):
    # Frames 2010-2012 of the Rat7M recording have no ArmL or ArmR point (measured): those
    # forepaws get no swing, and the report says so.
    from vrat_ros import importers
    _, report = importers.import_clip(
        RAT7M_MAT, frames=(2010, 2013), animal_scale=1.013, out=str(tmp_path / 'x.npz'),
        options=kf.FitOptions(support_weight=3.0, gait=True))
    said = [w for w in report['warnings'] if w.startswith('gait:')]
    assert len(said) == 2 and 'ArmL' in said[0] and 'hand_L' in said[0]
    assert report['gait']['hand_L']['swings'] == 0


@needs_rat7m
def test_cli_import_gait(tmp_path, capsys):
    import argparse

    from vrat_ros import cli_import
    parser = argparse.ArgumentParser(prog='vrat')
    cli_import.add_subcommands(parser.add_subparsers(dest='command', required=True))
    assert parser.parse_args(['import', 'x.mat']).gait is False
    out = tmp_path / 'walk.npz'
    args = parser.parse_args(['import', str(RAT7M_MAT), '--frames', '2010:2020', '--gait',
                              '--out', str(out), '--no-progress'])
    assert args.func(args) == 1 and not out.exists()
    assert '--gait needs --support-weight' in capsys.readouterr().err
    args = parser.parse_args(['import', str(RAT7M_MAT), '--frames', '2010:2020', '--gait',
                              '--support-weight', '3', '--out', str(out), '--no-progress'])
    assert args.func(args) == 0
    assert Clip.load(str(out)).meta['fit_options']['gait'] is True
    assert 'gait: foot_L' in capsys.readouterr().out


def test_paw_slip_is_the_speed_of_paws_dragged_along_the_floor():
    # One DANNCE pose (both feet on the floor) held still, then the same pose slid forward
    # at 0.1 m/s: the feet on the floor slide at 100 mm/s, like the root; held still, 0.
    clip = Clip.load(str(SHIPPED_CLIP))
    pose = clip.qpos[0]
    still = Clip(qpos=np.repeat(pose[None], 11, axis=0), fps=50.0,
                 joint_names=clip.joint_names, body_scale=clip.body_scale, meta={})
    slid = still.qpos.copy()
    slid[:, 0] += 0.1 * np.arange(11) / 50.0
    sliding = Clip(qpos=slid, fps=50.0, joint_names=clip.joint_names,
                   body_scale=clip.body_scale, meta={})
    body = RatBody(scale=clip.body_scale)
    at_rest, moving = kf.paw_slip(still, body=body), kf.paw_slip(sliding, body=body)
    feet = ('foot_L', 'foot_R')
    assert all(at_rest['paws'][f]['contact_fraction'] == 1.0 for f in feet)
    assert at_rest['slip_mm_s_median'] == 0.0 and at_rest['root_speed_mm_s_median'] == 0.0
    for f in feet:
        assert moving['paws'][f]['slip_mm_s_median'] == pytest.approx(100.0, rel=1e-6)
    assert moving['root_speed_mm_s_median'] == pytest.approx(100.0, rel=1e-6)
    # Carried with the root, forwards or backwards: a carried ratio of 1 (a planted paw: 0).
    back = Clip(qpos=slid[::-1], fps=50.0, joint_names=clip.joint_names,
                body_scale=clip.body_scale, meta={})
    for result in (moving, kf.paw_slip(back, body=body)):
        assert result['carried_ratio'] == pytest.approx(1.0, abs=1e-9)
        for f in feet:
            assert result['paws'][f]['carried_ratio'] == pytest.approx(1.0, abs=1e-9)
    # Held still, the root never moves: no ratio to give.
    assert at_rest['carried_ratio'] is None
    assert all(p['carried_ratio'] is None for p in at_rest['paws'].values())
    # Lifted 0.3 m, no paw is on the floor: no slip to measure.
    lifted = Clip(qpos=slid + np.r_[0.0, 0.0, 0.3, np.zeros(len(pose) - 3)], fps=50.0,
                  joint_names=clip.joint_names, body_scale=clip.body_scale, meta={})
    up = kf.paw_slip(lifted, body=body)
    assert up['slip_mm_s_median'] is None
    assert all(p['contact_fraction'] == 0.0 for p in up['paws'].values())
    for bad in (float('nan'), -1.0, '5', None):
        with pytest.raises(ValueError, match='contact_m should be a number >= 0'):
            kf.paw_slip(still, contact_m=bad, body=body)
    with pytest.raises(ValueError, match='the body has scale 1.2 but the clip was made for 0.9'):
        kf.paw_slip(still, body=RatBody(scale=1.2))


def test_the_floor_pull_skips_a_swinging_foot():
    # The marker set's weak floor_contact pull (foot and toe of each hind leg) used to act on
    # a swinging foot too, against the lift that holds it up.
    from vrat_ros import marker_sets
    marker_set = marker_sets.resolve_marker_set('rat7m20')
    fitter = marker_sets.make_fitter(marker_set, list(marker_set.keypoint_names),
                                     options=kf.FitOptions(support_weight=3.0, gait=True))
    paws = [p.name for p in fitter.paws]
    bodies = fitter.model.geom_bodyid[fitter.floor_geoms]
    names = fitter.body.body_names

    def pulled():
        return sorted(names[int(bodies[g[0]])] for g in fitter._contact_groups_now())

    assert pulled() == ['foot_L', 'foot_R', 'toe_L', 'toe_R']
    fitter._phase[paws.index('foot_L')] = 0.5  # mid-swing
    assert pulled() == ['foot_R', 'toe_R']
    fitter._phase[paws.index('hand_R')] = 0.5  # a forepaw has no pull to skip
    assert pulled() == ['foot_R', 'toe_R']
