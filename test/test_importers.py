"""Tests of `vrat import` and the clip library on real rat recordings and on bad input."""

import argparse
import dataclasses
import json
import os
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from vrat_ros import cli_import
from vrat_ros import importers
from vrat_ros import keypoint_fit as kf
from vrat_ros import marker_sets
from vrat_ros.clip import Clip
from vrat_ros.errors import ClipError
from vrat_ros.rat_model import RatBody

RAT_DATA = Path(__file__).resolve().parents[1].parent / 'shared' / 'data' / 'rat'
MOCAP_MAT = RAT_DATA / 'test_rodent_mocap_1000_frames.mat'
MOCAP_NWB = RAT_DATA / 'test_rodent_mocap_1000_frames.nwb'
DANNCE_MAT = RAT_DATA / 'test_mocap_1000_frames_dannce.mat'
STAC_PICKLE = RAT_DATA / 'demo_viz.p'
SKELETON_MAT = RAT_DATA / 'rat23.mat'
RAT7M_MAT = RAT_DATA / 'demo_indices.mat'
GIMBAL_NPZ = RAT_DATA / 'mock_data.npz'

needs_rat_data = pytest.mark.skipif(
    not (MOCAP_MAT.is_file() and RAT7M_MAT.is_file()),
    reason=f'real rat data not found at {RAT_DATA}')

# Measured: frames 2010-2040 of the Rat7M walk, retargeted to the 0.9 body with the animal
# scale 1.013 of the shipped clips, fit with a 2.9 mm mean and 6.6 mm p95 residual.
RAT7M_ANIMAL_SCALE = 1.013
RAT7M_RESIDUAL_MEAN_MM = 4.5
RAT7M_RESIDUAL_P95_MM = 11.0
SHIPPED_RAT7M = ('rat7m_walk_2010_2310', 'rat7m_rear_2460_2600')
# The shipped Rat7M clips are fitted with --support-weight 3 (unobserved paws on the floor,
# centre of mass over them), which trades marker error for poses the body can hold: measured
# 6.3 mm (walk) and 5.4 mm (rear) mean residual instead of 2.9 mm.
SHIPPED_RAT7M_RESIDUAL_MEAN_MM = 7.0


@pytest.fixture(autouse=True)
def private_library(tmp_path, monkeypatch):
    """Every test gets its own empty clip library."""
    monkeypatch.setenv('VRAT_CLIPS_DIR', str(tmp_path / 'library'))


@pytest.fixture(scope='module')
def stac_dict():
    with open(STAC_PICKLE, 'rb') as f:
        return importers.ArrayOnlyUnpickler(f).load()


@pytest.fixture(scope='module')
def mocap_mm():
    xyz, names = kf.read_keypoints_mat(str(MOCAP_MAT))
    return xyz, names


def _write_keypoint_npz(path, xyz, names, fps=None):
    arrays = {'keypoints': xyz, 'keypoint_names': np.array(names)}
    if fps is not None:
        arrays['fps'] = np.float64(fps)
    np.savez(path, **arrays)
    return str(path)


def _assert_nothing_written(folder, out):
    assert not os.path.exists(out)
    assert [p for p in os.listdir(folder) if p.startswith('.tmp-')] == []


# -- format detection ---------------------------------------------------------------------------

@needs_rat_data
@pytest.mark.parametrize('path, fmt', [
    (STAC_PICKLE, 'stac'), (MOCAP_MAT, 'dannce'), (DANNCE_MAT, 'dannce'), (MOCAP_NWB, 'nwb'),
    (RAT7M_MAT, 'rat7m'), (GIMBAL_NPZ, 'npz'), (SKELETON_MAT, None),
], ids=['stac-pickle', 'dannce-mat', 'dannce-truncated', 'nwb', 'rat7m', 'gimbal-npz',
        'skeleton-only'])
def test_format_is_detected_from_content(path, fmt):
    assert importers.sniff_format(str(path))[0] == fmt


def test_cli_format_choices_match_the_importer():
    assert cli_import.FORMATS == importers.FORMATS


@needs_rat_data
@pytest.mark.parametrize('claimed, path, expected', [
    ('nwb', MOCAP_MAT, 'NWB'), ('dannce', MOCAP_NWB, 'DANNCE'), ('stac', MOCAP_MAT, 'STAC'),
    ('rat7m', STAC_PICKLE, 'Rat7M'),
], ids=['nwb-claimed-on-mat', 'dannce-claimed-on-nwb', 'stac-claimed-on-mat',
        'rat7m-claimed-on-pickle'])
def test_file_that_is_not_the_claimed_format_is_refused(tmp_path, claimed, path, expected):
    out = tmp_path / 'clip.npz'
    with pytest.raises(ClipError, match=rf"'{path}' is not a {expected}"):
        importers.import_clip(path, fmt=claimed, out=out)
    _assert_nothing_written(tmp_path, out)


@needs_rat_data
def test_file_of_no_supported_format_names_what_was_expected(tmp_path):
    with pytest.raises(ClipError, match=r"rat23\.mat.*MATLAB v5 file with variables.*expected"):
        importers.import_clip(SKELETON_MAT, out=tmp_path / 'clip.npz')


# -- damaged files ------------------------------------------------------------------------------

@needs_rat_data
@pytest.mark.parametrize('fmt', ['auto', 'nwb'])
def test_truncated_hdf5_is_refused_and_leaves_no_clip(tmp_path, fmt):
    cut = tmp_path / 'cut.nwb'
    data = MOCAP_NWB.read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    out = tmp_path / 'clip.npz'
    with pytest.raises(ClipError, match=r"cut\.nwb.*truncated"):
        importers.import_clip(cut, fmt=fmt, out=out)
    _assert_nothing_written(tmp_path, out)


@needs_rat_data
def test_mat_cut_inside_the_keypoints_is_refused_and_leaves_no_clip(tmp_path):
    cut = tmp_path / 'cut.mat'
    cut.write_bytes(MOCAP_MAT.read_bytes()[:300_000])
    out = tmp_path / 'clip.npz'
    with pytest.raises(ClipError, match=r"cut\.mat.*`pred`"):
        importers.import_clip(cut, out=out)
    _assert_nothing_written(tmp_path, out)


@needs_rat_data
def test_upstream_truncated_dannce_file_imports_its_intact_keypoints_with_a_warning():
    # Its `metadata` struct is cut off upstream, after the complete `pred`.
    assert 'truncated' in importers.mat5_truncation(str(DANNCE_MAT))
    assert importers.mat5_truncation(str(MOCAP_MAT)) is None
    clip, report = importers.import_clip(DANNCE_MAT, frames=(0, 5))
    assert report['format'] == 'dannce' and report['frames'] == 5
    assert any('truncated' in w for w in report['warnings'])


# -- joint-angle input (STAC) -------------------------------------------------------------------

@needs_rat_data
def test_stac_pickle_keeps_its_joint_angles_and_frame_rate(stac_dict):
    clip, report = importers.import_clip(STAC_PICKLE)
    assert report['format'] == 'stac' and report['frames'] == 50
    assert clip.fps == 50.0 and report['fps_source'] == 'stored in the file'
    assert not report['fps_assumed'] and clip.body_scale == 0.9
    np.testing.assert_allclose(clip.qpos, stac_dict['qpos'], atol=1e-6)
    assert clip.joint_names == RatBody().hinge_names
    assert clip.keypoints.shape == (50, 23, 3) and clip.keypoint_names[0] == 'AnkleL'
    assert clip.meta['source_file'] == 'demo_viz.p' and clip.meta['source_format'] == 'stac'


class _RunsAShellCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


def test_pickle_referencing_any_other_global_is_refused_unrun(tmp_path):
    marker = tmp_path / 'was_run'
    path = tmp_path / 'evil.p'
    path.write_bytes(pickle.dumps({'qpos': _RunsAShellCommand(marker)}, protocol=2))
    with pytest.raises(ClipError, match=r"evil\.p.*refusing to load (posix|os|nt)\.system"):
        importers.import_clip(path, out=tmp_path / 'clip.npz')
    assert not marker.exists()
    assert not (tmp_path / 'clip.npz').exists()


@needs_rat_data
def test_truncated_pickle_is_refused_as_damaged(tmp_path):
    cut = tmp_path / 'cut.p'
    cut.write_bytes(STAC_PICKLE.read_bytes()[:60_000])
    out = tmp_path / 'clip.npz'
    with pytest.raises(ClipError, match=r"cut\.p' is not a readable pickle \(damaged"):
        importers.import_clip(cut, out=out)
    _assert_nothing_written(tmp_path, out)


@needs_rat_data
def test_hdf5_qpos_file_is_read_with_the_rate_from_its_config(tmp_path, stac_dict):
    path = tmp_path / 'track.h5'
    with h5py.File(path, 'w') as f:
        f['qpos'] = stac_dict['qpos']
        f['config'] = 'mocap_hz: 100\nwalker:\n  rescale_factor: 0.9\n'
    clip, report = importers.import_clip(path)
    assert report['format'] == 'stac' and clip.fps == 100.0 and clip.body_scale == 0.9
    np.testing.assert_allclose(clip.qpos, stac_dict['qpos'], atol=1e-6)


@pytest.mark.parametrize('width, hint', [(60, ''), (67, 'without the free root')],
                         ids=['width-60', 'hinges-only'])
def test_qpos_width_that_matches_no_body_is_refused(tmp_path, width, hint):
    path = tmp_path / 'odd.h5'
    with h5py.File(path, 'w') as f:
        f['qpos'] = np.zeros((10, width))
    out = tmp_path / 'clip.npz'
    with pytest.raises(ClipError, match=rf"odd\.h5.*width {width} matches no body: expected "
                                        rf'74.*{hint}'):
        importers.import_clip(path, out=out)
    _assert_nothing_written(tmp_path, out)


@needs_rat_data
def test_qpos_whose_columns_do_not_follow_the_body_layout_is_refused(tmp_path, stac_dict):
    shuffled = np.array(stac_dict['qpos'])[:, ::-1]  # 74 wide, but no root quaternion at 3:7
    path = tmp_path / 'shuffled.h5'
    with h5py.File(path, 'w') as f:
        f['qpos'] = shuffled
    with pytest.raises(ClipError, match=r'shuffled\.h5.*unit quaternion'):
        importers.import_clip(path)


@needs_rat_data
def test_qpos_names_in_another_order_are_matched_by_name(stac_dict):
    body = RatBody()
    names = ['root'] * 7 + [f'walker/{n}' for n in body.hinge_names[::-1]]
    qpos = np.concatenate([stac_dict['qpos'][:, :7], stac_dict['qpos'][:, 7:][:, ::-1]], 1)
    fixed, info = importers.check_qpos(qpos, 'x', body, names)
    assert info['reordered']
    np.testing.assert_array_equal(fixed, np.asarray(stac_dict['qpos'], dtype=np.float64))


# -- keypoint input -----------------------------------------------------------------------------

@needs_rat_data
def test_nan_keypoints_are_masked_not_zero_filled(tmp_path, mocap_mm):
    xyz, names = mocap_mm
    xyz = xyz[:12].copy()
    spine_m = names.index('SpineM')
    xyz[3:6, spine_m] = np.nan
    xyz[7, :4] = np.nan
    path = _write_keypoint_npz(tmp_path / 'gaps.npz', xyz, names, fps=50)
    clip, report = importers.import_clip(path)
    assert report['format'] == 'npz' and report['failed_frames'] == []
    assert report['residual_mm_by_keypoint']['SpineM']['present_fraction'] == 0.75
    assert report['residual_mm_mean'] < 2.0  # zero-filled keypoints would sit ~0.3 m away
    assert np.all(np.isnan(clip.keypoints[3:6, spine_m]))
    # The pose where SpineM is missing is close to the pose fitted with it.
    full, _ = importers.import_clip(_write_keypoint_npz(tmp_path / 'full.npz', mocap_mm[0][:12],
                                                        names, fps=50))
    body = RatBody()
    gap = np.linalg.norm(body.body_positions(clip.qpos[4]) - body.body_positions(full.qpos[4]),
                         axis=1)
    assert np.max(gap[body.tracked_body_ids]) < 0.01


@needs_rat_data
def test_unmapped_and_missing_keypoint_names_are_warned_on_stderr(tmp_path, mocap_mm, capsys):
    xyz, names = mocap_mm
    tail = names.index('TailBase')
    keep = [i for i in range(len(names)) if i != tail]
    extra = xyz[:4, names.index('SpineL')] + 5.0
    xyz = np.concatenate([xyz[:4, keep], extra[:, None]], axis=1)
    new_names = [names[i] for i in keep] + ['TailTip']
    xyz[:, new_names.index('KneeL')] = np.nan
    path = _write_keypoint_npz(tmp_path / 'renamed.npz', xyz, new_names, fps=50)
    report_path = tmp_path / 'report.json'
    args = _parser().parse_args(['import', path, '--out', str(tmp_path / 'clip.npz'),
                                 '--report', str(report_path), '--no-progress'])
    assert args.func(args) == 0
    assert json.loads(report_path.read_text())['warnings'] == [
        "keypoints not in marker set 'rat23' are ignored: ['TailTip']",
        "marker set 'rat23' keypoints missing from the data: ['TailBase']",
        "keypoints missing in every frame: ['KneeL']",
    ]
    err = capsys.readouterr().err
    assert err.count('vrat import: warning: ') == 3 and "['TailTip']" in err


@needs_rat_data
def test_too_few_mapped_keypoints_are_refused_naming_the_file(tmp_path, mocap_mm):
    xyz, names = mocap_mm
    five = [names.index(n) for n in ('Snout', 'EarL', 'EarR', 'SpineF', 'SpineM')]
    xyz = np.concatenate([xyz[:4, five], xyz[:4, :3] + 1.0], axis=1)
    path = _write_keypoint_npz(tmp_path / 'few.npz', xyz,
                               [names[i] for i in five] + ['a', 'b', 'c'], fps=50)
    out = tmp_path / 'clip.npz'
    with pytest.raises(ClipError, match=r"few\.npz.*only 5 keypoints.*at least 6 "
                                        r"\(ignored: \['a', 'b', 'c'\]\)"):
        importers.import_clip(path, out=out)
    _assert_nothing_written(tmp_path, out)


@needs_rat_data
@pytest.mark.parametrize('kind', ['keypoints', 'qpos'])
def test_single_frame_is_refused_and_leaves_no_clip(tmp_path, mocap_mm, stac_dict, kind):
    if kind == 'keypoints':
        path = _write_keypoint_npz(tmp_path / 'one.npz', mocap_mm[0][:1], mocap_mm[1], fps=50)
    else:
        path = tmp_path / 'one.p'
        with open(path, 'wb') as f:
            pickle.dump({'qpos': np.asarray(stac_dict['qpos'])[:1]}, f)
    out = tmp_path / 'clip.npz'
    with pytest.raises(ClipError, match=r"one\.(npz|p).* 1 frame\(s\); a clip needs at least 2"):
        importers.import_clip(path, out=out)
    _assert_nothing_written(tmp_path, out)


@needs_rat_data
@pytest.mark.parametrize('index, stamp', [(10, 'repeat'), (500, 'back')])
def test_nwb_with_timestamps_not_increasing_is_refused_at_the_first_bad_frame(
        tmp_path, index, stamp):
    path = tmp_path / 'stamps.nwb'
    path.write_bytes(MOCAP_NWB.read_bytes())
    with h5py.File(path, 'r+') as f:
        pose = f['processing/behavior/PoseEstimation']
        for name in pose:
            if isinstance(pose[name], h5py.Group) and 'timestamps' in pose[name]:
                stamps = pose[name]['timestamps']
                stamps[index] = stamps[index - 1] - (0.01 if stamp == 'back' else 0.0)
    out = tmp_path / 'clip.npz'
    with pytest.raises(ClipError, match=rf"stamps\.nwb.*not strictly increasing: frame "
                                        rf"{index} is at .* after frame {index - 1}"):
        importers.import_clip(path, frames=(0, 4), out=out)
    _assert_nothing_written(tmp_path, out)


@needs_rat_data
def test_units_are_detected_and_said(tmp_path, mocap_mm):
    xyz, names = mocap_mm
    path = _write_keypoint_npz(tmp_path / 'metres.npz', xyz[:4] * 1e-3, names, fps=50)
    _, report = importers.import_clip(path)
    assert report['units_assumed'] == 'm' and report['units_detected'] is True
    _, report = importers.import_clip(path, units='m')
    assert report['units_assumed'] == 'm' and report['units_detected'] is False


@needs_rat_data
def test_file_in_metres_given_millimetres_is_refused(tmp_path, mocap_mm):
    xyz, names = mocap_mm
    path = _write_keypoint_npz(tmp_path / 'metres.npz', xyz[:4] * 1e-3, names, fps=50)
    out = tmp_path / 'clip.npz'
    with pytest.raises(ClipError, match=r"metres\.npz.*read as 'mm'.*looks like 'm'"):
        importers.import_clip(path, units='mm', out=out)
    _assert_nothing_written(tmp_path, out)


@needs_rat_data
def test_user_marker_set_file_is_used_without_code_changes(tmp_path, mocap_mm):
    shipped = kf.load_marker_set()
    keep = ['Snout', 'EarL', 'EarR', 'SpineF', 'SpineM', 'SpineL', 'HipL', 'HipR']
    lines = ['marker_set: my_trunk', 'body_scale: 0.9', 'units: m', 'keypoints:']
    for name in keep:
        i = shipped.keypoint_names.index(name)
        lines.append(f'  {name}: {{body: {shipped.bodies[i]}, offset: '
                     f'{[float(v) for v in shipped.offsets[i]]}}}')
    path = tmp_path / 'my_trunk.yaml'
    path.write_text('\n'.join(lines) + '\n')
    clip, report = importers.import_clip(MOCAP_MAT, frames=(0, 4), marker_set=str(path))
    assert report['marker_set'] == 'my_trunk'
    assert sorted(report['residual_mm_by_keypoint']) == sorted(keep)
    assert 'WristL' in report['keypoints_ignored']


@needs_rat_data
def test_nwb_keeps_the_rate_its_timestamps_give(mocap_mm):
    clip, report = importers.import_clip(MOCAP_NWB, frames=(0, 6))
    assert report['format'] == 'nwb' and report['marker_set'] == 'rat23'
    assert clip.fps == pytest.approx(30.0) and not report['fps_assumed']
    np.testing.assert_allclose(clip.keypoints, mocap_mm[0][:6] * 1e-3)


@needs_rat_data
def test_rat7m_segment_fits_the_body_with_missing_markers_masked():
    clip, report = importers.import_clip(RAT7M_MAT, frames=(2010, 2040),
                                         animal_scale=RAT7M_ANIMAL_SCALE)
    assert report['format'] == 'rat7m' and report['marker_set'] == 'rat7m20'
    assert clip.fps == 30.0 and report['fps_assumed']
    assert report['retarget_factor'] == pytest.approx(0.9 / RAT7M_ANIMAL_SCALE)
    assert report['residual_mm_mean'] < RAT7M_RESIDUAL_MEAN_MM
    assert report['residual_mm_p95'] < RAT7M_RESIDUAL_P95_MM
    assert report['failed_frames'] == []
    # Rat7M stores missing markers as zeros: they must come through as NaN, not as 0.
    missing = np.isnan(clip.keypoints[..., 0])
    assert missing.any() and not np.any(clip.keypoints[~missing] == 0.0)


@needs_rat_data
def test_gimbal_npz_picks_the_rat7m_marker_set_by_name():
    _, report = importers.import_clip(GIMBAL_NPZ, fps=30, frames=(0, 5),
                                      animal_scale=RAT7M_ANIMAL_SCALE)
    assert report['marker_set'] == 'rat7m20' and report['frames'] == 5
    assert np.isfinite(report['residual_mm_mean'])


@needs_rat_data
def test_body_scale_fit_recovers_the_stac_scale_of_the_dannce_rat(mocap_mm):
    xyz, names = mocap_mm
    scale, scores = marker_sets.estimate_body_scale(
        xyz * 1e-3, names, kf.load_marker_set(), max_frames=3, bounds=(0.75, 1.05),
        tolerance=0.03)
    assert scale == pytest.approx(0.9, abs=0.04)
    assert min(scores.values()) == scores[min(scores, key=scores.get)]


def test_shipped_rat7m_marker_set_names_bodies_of_the_rat():
    marker_set = marker_sets.resolve_marker_set('rat7m20')
    assert marker_set.keypoint_names == importers.RAT7M_MARKERS
    assert set(marker_set.bodies) <= set(RatBody().body_names)
    bodies, weight = marker_sets.floor_contact_settings(marker_set)
    assert bodies == ['foot_L', 'toe_L', 'foot_R', 'toe_R'] and weight > 0


# -- time ---------------------------------------------------------------------------------------

@needs_rat_data
def test_resampling_is_by_time(stac_dict):
    clip = Clip(qpos=stac_dict['qpos'], fps=30.0, joint_names=RatBody().hinge_names,
                body_scale=0.9, meta={})
    fast = importers.resample_clip(clip, 50.0)
    assert fast.fps == 50.0 and fast.meta['resampled_from_fps'] == 30.0
    assert fast.n_frames == int(np.floor(clip.duration_s * 50)) + 1
    np.testing.assert_allclose(fast.qpos[50], clip.qpos[30], atol=1e-12)  # t = 1.0 s
    np.testing.assert_allclose(fast.qpos[7], clip.sample(7 / 50), atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(fast.qpos[:, 3:7], axis=1), 1.0, atol=1e-12)


def test_resampled_keypoints_stay_missing_next_to_a_gap():
    qpos = np.zeros((4, 74))
    qpos[:, 3] = 1.0
    keypoints = np.arange(4 * 2 * 3, dtype=float).reshape(4, 2, 3)
    keypoints[2, 0] = np.nan
    clip = Clip(qpos=qpos, fps=10.0, joint_names=RatBody().hinge_names, body_scale=0.9,
                meta={}, keypoints=keypoints, keypoint_names=['a', 'b'])
    fast = importers.resample_clip(clip, 20.0)
    assert np.all(np.isnan(fast.keypoints[3:6, 0])) and np.all(np.isfinite(fast.keypoints[:, 1]))
    np.testing.assert_allclose(fast.keypoints[1, 1], (keypoints[0, 1] + keypoints[1, 1]) / 2)


# -- library and provenance ---------------------------------------------------------------------

def test_list_clips_shows_the_shipped_clips():
    entries = {e['name']: e for e in importers.list_clips()}
    assert {'rat23_dannce_1000f', *SHIPPED_RAT7M} <= set(entries)
    walk = entries['rat7m_walk_2010_2310']
    assert walk['kind'] == 'shipped' and walk['frames'] == 300 and walk['fps'] == 30.0
    assert walk['duration_s'] == pytest.approx(299 / 30, abs=1e-3)
    assert 'spoonsso/dannce' in walk['source']
    assert walk['robot'] == 'rat'
    assert entries['quadruped_eval_2010_2310']['robot'] == 'quadruped'


@pytest.mark.parametrize('name', SHIPPED_RAT7M)
def test_shipped_rat7m_clips_are_small_and_say_where_they_came_from(name):
    entry = {e['name']: e for e in importers.list_clips(include_imported=False)}[name]
    assert os.path.getsize(entry['path']) < 500_000
    meta = Clip.load(entry['path']).meta
    assert meta['origin_commit'] == 'ba95087c735e439efd7302cfb8b9ef09a4002f04'
    assert meta['origin_path'] == 'demo/markerless_rat/data/demo_indices.mat'
    assert meta['licence'] == 'MIT' and 'Dunn et al' in meta['citation']
    assert meta['source_format'] == 'rat7m' and meta['fps_assumed'] is True
    assert meta['fit_residual_mm_mean'] < SHIPPED_RAT7M_RESIDUAL_MEAN_MM
    assert meta['fit_options']['support_weight'] == 3.0
    assert meta['import_command'].endswith('--support-weight 3')


# -- command line -------------------------------------------------------------------------------

def _parser():
    parser = argparse.ArgumentParser(prog='vrat')
    cli_import.add_subcommands(parser.add_subparsers(dest='command', required=True))
    return parser


@needs_rat_data
def test_cli_import_writes_the_clip_and_a_json_report(tmp_path, capsys):
    out, report_path = tmp_path / 'short.npz', tmp_path / 'report.json'
    args = _parser().parse_args(['import', str(MOCAP_MAT), '--frames', '0:10', '--out',
                                 str(out), '--report', str(report_path), '--no-progress'])
    assert args.func(args) == 0
    report = json.loads(report_path.read_text())
    assert report['frames'] == 10 and report['fps'] == 50.0
    assert report['duration_s'] == pytest.approx(0.18)
    assert report['residual_mm_mean'] < report['residual_mm_p95'] < 10.0
    assert report['failed_frames'] == [] and report['units_assumed'] == 'mm'
    assert Clip.load(str(out)).n_frames == 10
    assert 'keypoint residual' in capsys.readouterr().out
    # The report says how fast the fitted paws slide on the floor (the written clip's).
    from vrat_ros.keypoint_fit import paw_slip
    again = paw_slip(Clip.load(str(out)))
    assert report['paw_slip']['slip_mm_s_median'] == pytest.approx(again['slip_mm_s_median'],
                                                                   rel=1e-6)
    assert set(report['paw_slip']['paws']) == {'hand_L', 'hand_R', 'foot_L', 'foot_R'}


@needs_rat_data
def test_cli_import_without_out_goes_to_the_library_and_is_listed(tmp_path, capsys):
    args = _parser().parse_args(['import', str(STAC_PICKLE), '--no-progress'])
    assert args.func(args) == 0
    assert (tmp_path / 'library' / 'demo_viz.npz').is_file()
    args = _parser().parse_args(['clips', '--json'])
    capsys.readouterr()
    assert args.func(args) == 0
    listed = {e['name']: e['kind'] for e in json.loads(capsys.readouterr().out)}
    assert listed['demo_viz'] == 'imported' and listed['rat23_dannce_1000f'] == 'shipped'


@needs_rat_data
def test_cli_import_failure_is_one_line_on_stderr(tmp_path, capsys):
    args = _parser().parse_args(['import', str(SKELETON_MAT), '--out', str(tmp_path / 'x.npz')])
    assert args.func(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith('vrat import: ') and 'rat23.mat' in err and '\n' not in err


def test_cli_infinite_numbers_are_named_as_such(capsys):
    # 'inf' is greater than zero; the message used to say only 'positive number'.
    for option, text in (('--fps', 'inf'), ('--smooth', 'inf'), ('--resample', 'inf')):
        with pytest.raises(SystemExit):
            _parser().parse_args(['import', 'x.mat', option, text])
        err = capsys.readouterr().err
        assert 'finite number' in err and "'inf'" in err, (option, err)


def test_cli_usage_errors_exit_2():
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(['import', 'x.mat', '--fps', '-5'])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:  # was accepted, and made inf velocities
        _parser().parse_args(['import', 'x.mat', '--fps', '1e308'])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:  # was accepted, and made a clip of inf seconds
        _parser().parse_args(['import', 'x.mat', '--fps', '5e-324'])
    assert exc.value.code == 2
    assert _parser().parse_args(['import', 'x.mat', '--fps', '1e5']).fps == 1e5
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(['import', 'x.mat', '--frames', '9:3'])
    assert exc.value.code == 2


@needs_rat_data
@pytest.mark.ros
def test_imported_dannce_segment_plays_in_the_closed_loop(tmp_path):
    pytest.importorskip('rclpy', reason='rclpy is not installed')
    from vrat_ros import resources
    from vrat_ros.loop import run_ros_loop
    out = tmp_path / 'dannce_0_60.npz'
    args = _parser().parse_args(['import', str(MOCAP_MAT), '--frames', '0:60', '--out',
                                 str(out), '--no-progress'])
    assert args.func(args) == 0
    result = run_ros_loop(str(out), resources.default_policy_path(), seconds=0.5)
    assert result.qpos.shape == (26, 74) and not result.halted


@needs_rat_data
def test_rat7m_mislabelled_and_missing_forelimb_markers_no_longer_make_the_arms_jump():
    # Frames 2640-2700 (a training stretch): the right elbow and forearm points sit nearer the
    # left shoulder in 18 frames and are missing in others. Measured: with the label checks and
    # gap filling the largest per-frame step of a shoulder, scapula or elbow hinge is 0.29 rad
    # and the mean residual 2.0 mm; without them, 0.85 rad and 2.8 mm.
    marker_set = marker_sets.resolve_marker_set('rat7m20')
    plain = dataclasses.replace(marker_set, label_checks=())

    def arm_jump(clip):
        arm = [7 + i for i, n in enumerate(clip.joint_names)
               if n.split('_')[0] in ('shoulder', 'elbow', 'scapula')]
        return float(np.max(np.abs(np.diff(clip.qpos[:, arm], axis=0))))

    clip, report = importers.import_clip(RAT7M_MAT, frames=(2640, 2700),
                                         animal_scale=RAT7M_ANIMAL_SCALE)
    old, old_report = importers.import_clip(RAT7M_MAT, frames=(2640, 2700),
                                            animal_scale=RAT7M_ANIMAL_SCALE, marker_set=plain,
                                            options=kf.FitOptions(fill_gaps=False))
    assert report['keypoints_rejected_frames'] == {'ElbowR': 18, 'ArmR': 18}
    assert clip.meta['fit_keypoints_rejected_frames'] == {'ElbowR': 18, 'ArmR': 18}
    assert old_report['keypoints_rejected_frames'] == {}
    assert arm_jump(clip) < 0.4 < 0.7 < arm_jump(old)
    assert report['residual_mm_mean'] < 2.5 < old_report['residual_mm_mean']


@needs_rat_data
def test_cli_import_smooth_low_passes_the_fit_and_records_it(tmp_path):
    out = tmp_path / 'walk.npz'
    args = _parser().parse_args(['import', str(RAT7M_MAT), '--frames', '2640:2700',
                                 '--animal-scale', str(RAT7M_ANIMAL_SCALE), '--smooth', '0.033',
                                 '--out', str(out), '--no-progress'])
    assert args.func(args) == 0
    clip = Clip.load(str(out))
    assert clip.meta['fit_options']['smooth_s'] == 0.033
    assert clip.meta['fit_options']['fill_gaps'] is True
    # Measured: one 33 ms Gaussian takes the largest hinge step from 0.29 rad down to 0.17 rad.
    assert np.max(np.abs(np.diff(clip.qpos[:, 7:], axis=0))) < 0.22
    with pytest.raises(SystemExit):
        _parser().parse_args(['import', str(RAT7M_MAT), '--smooth', '-1'])


def test_cli_import_refuses_a_smoothing_longer_than_one_second(tmp_path, capsys):
    out = tmp_path / 'never.npz'
    args = _parser().parse_args(['import', str(tmp_path / 'missing.npz'), '--smooth', '1e9',
                                 '--out', str(out), '--no-progress'])
    assert args.func(args) == 1  # refused before the (missing) file is even read
    err = capsys.readouterr().err
    assert err.strip() == ('vrat import: --smooth 1e+09 s is too long: it should be at '
                           'most 1 s')
    assert not out.exists()


@needs_rat_data
def test_cli_import_writes_no_clip_when_every_frame_failed(tmp_path, capsys, mocap_mm):
    xyz, names = mocap_mm
    # Keypoints scattered at random over half a metre: no pose of the body fits any frame.
    scattered = np.random.default_rng(0).uniform(-250.0, 250.0, xyz[:3].shape) + [0, 0, 300]
    path = _write_keypoint_npz(tmp_path / 'scattered.npz', scattered, names, fps=50)
    out = tmp_path / 'scattered_clip.npz'
    args = _parser().parse_args(['import', path, '--units', 'mm', '--out', str(out),
                                 '--no-progress'])
    assert args.func(args) == 1
    err = capsys.readouterr().err
    assert 'every frame failed to fit (3 of 3' in err and 'no clip was written' in err
    assert not out.exists()
    # The library call refuses too, so no caller of import_clip gets a clip of failed frames.
    with pytest.raises(ClipError, match=r'every frame failed to fit \(3 of 3'):
        importers.import_clip(path, units='mm', out=str(out))
    assert not out.exists()


def test_import_summary_says_how_far_the_paws_are_carried():
    from vrat_ros.cli_import import _summary
    report = {'source': 'x.p', 'format': 'stac', 'out': 'x.npz', 'fps_assumed': False,
              'fps_source': 'file', 'frames': 10, 'fps': 50.0, 'duration_s': 0.18,
              'body_scale': 0.9, 'residual_mm_mean': None,
              'paw_slip': {'paws': {'foot_L': {'contact_fraction': 1.0,
                                               'slip_mm_s_median': 80.0,
                                               'slip_mm_s_p90': 90.0,
                                               'carried_ratio': 0.8}},
                           'slip_mm_s_median': 80.0, 'carried_ratio': 0.8,
                           'root_speed_mm_s_median': 100.0}}
    text = _summary(report)
    assert 'slide at a median 80 mm/s (worst paw 80; the root moves at a median 100' in text
    assert 'go along with it at 0.80 of its speed' in text
    report['paw_slip']['carried_ratio'] = None  # the root never moved
    assert 'go along with it' not in _summary(report)


def test_a_bad_frame_rate_stored_in_a_keypoint_file_is_refused_before_the_fit(tmp_path):
    # It was found only after fitting every frame (a 2-element fps array: a TypeError).
    from vrat_ros.importers import import_clip
    from vrat_ros.keypoint_fit import load_marker_set
    names = list(load_marker_set().keypoint_names)
    xyz = np.random.default_rng(0).normal(size=(5, len(names), 3)) * 0.01 + [0.0, 0.0, 0.05]
    for stored in (np.float64(1e6), np.array([30.0, 40.0]), np.float64(np.nan)):
        path = tmp_path / 'kp.npz'
        np.savez(path, keypoints=xyz, keypoint_names=np.array(names), fps=stored)
        with pytest.raises(ClipError, match=r"kp.npz': the frame rate the file gives .*--fps"
                                            r'.* should be a number >= 0.001'):
            import_clip(str(path), out=str(tmp_path / 'x.npz'))
        assert not (tmp_path / 'x.npz').exists()


def test_summary_counts_fitted_frames_when_resampled():
    # A 20-frame fit written at 50 Hz from 30 Hz has 33 frames; the summary used to count
    # failed and support frames of the fit "of 33 frames", the written clip's length.
    report = {
        'source': 'x.mat', 'format': 'rat7m', 'source_frames': [0, 20], 'out': 'x.npz',
        'fps_assumed': False, 'fps_source': 'file', 'resampled_from_fps': 30.0,
        'frames': 33, 'fitted_frames': 20, 'fps': 50.0, 'duration_s': 0.64,
        'body_scale': 0.9, 'residual_mm_mean': 7.0, 'residual_mm_p95': 12.0,
        'units_detected': True, 'units_assumed': 'mm', 'marker_set': 'rat7m20',
        'animal_scale': 1.0, 'retarget_factor': 0.9, 'keypoints_rejected_frames': {},
        'failed_frames': [3], 'fit_seconds': 1.0, 'support_frames': 12,
    }
    text = cli_import._summary(report)
    assert 'failed frames 1 of 20 source frames' in text
    assert 'support terms acted in 12 of 20 source frames' in text
    assert '33 frames at 50 Hz (resampled from 30 Hz' in text
    del report['resampled_from_fps']
    report['frames'] = 20
    assert 'support terms acted in 12 of 20 frames' in cli_import._summary(report)
