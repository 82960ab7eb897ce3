"""Analyses of recorded activations: encoding models, PCA, RSA, labels and `vrat analyze`.

Encoding models are checked on synthetic data with a known answer; `vrat analyze` runs on a
short closed-loop run of the shipped real-rat clip.
"""

import argparse
import json
import os

from fixtures_layers import make_layered_policy
import numpy as np
import pytest

from vrat_ros.analysis import add_subcommands
from vrat_ros.analysis import align_recording
from vrat_ros.analysis import components_for
from vrat_ros.analysis import fit_encoding_model
from vrat_ros.analysis import labels_at_frames
from vrat_ros.analysis import participation_ratio
from vrat_ros.analysis import read_label_file
from vrat_ros.analysis import representational_similarity
from vrat_ros.analysis import shuffle_null
from vrat_ros.analysis import variance_explained

# Held-out R^2 of a planted relation may fall short of the true value by the cost of
# estimating 12 weights from ~1600 samples (about 0.005 here) plus sampling noise.
R2_TOLERANCE = 0.04
TRUE_R2 = np.array([0.1, 0.3, 0.5, 0.7, 0.9])


def planted(seed=0, n_steps=2000, n_units=12, lag=0):
    """Activations x (T, n) and a recording y = x B + noise with known R^2 per column."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_steps, n_units))
    weights = rng.standard_normal((n_units, TRUE_R2.size))
    signal = x @ weights
    noise_sd = np.sqrt((weights ** 2).sum(axis=0) * (1 - TRUE_R2) / TRUE_R2)
    y = np.roll(signal, lag, axis=0) + noise_sd * rng.standard_normal((n_steps, TRUE_R2.size))
    return x, y


def test_encoding_model_recovers_a_planted_linear_relation():
    x, y = planted()
    fit = fit_encoding_model(x, y, n_folds=5)
    assert fit.r2.shape == (5,) and fit.predictions.shape == y.shape
    np.testing.assert_allclose(fit.r2, TRUE_R2, atol=R2_TOLERANCE)
    assert np.all(fit.r2 <= TRUE_R2 + 0.02)  # held out: no optimistic bias to speak of


def test_encoding_model_reports_chance_on_shuffled_data():
    x, y = planted(seed=1)
    rng = np.random.default_rng(2)
    blocks = np.array_split(np.arange(len(y)), 40)
    shuffled = y[np.concatenate([blocks[i] for i in rng.permutation(len(blocks))])]
    fit = fit_encoding_model(x, shuffled)
    assert np.all(fit.r2 < 0.02) and np.all(fit.r2 > -0.05)

    null = shuffle_null(x, y, n_shuffles=10, seed=0)
    assert null.shape == (10, 5)
    assert np.all(np.percentile(null, 95, axis=0) < 0.03)
    assert np.all(fit_encoding_model(x, y).r2 > np.max(null, axis=0) + 0.05)


def test_encoding_model_finds_the_lag_it_is_told():
    x, y = planted(seed=3, lag=3)
    np.testing.assert_allclose(fit_encoding_model(x, y, lag_steps=3).r2, TRUE_R2,
                               atol=R2_TOLERANCE)
    assert np.all(fit_encoding_model(x, y, lag_steps=0).r2 < 0.03)


def test_encoding_model_checks_its_inputs():
    with pytest.raises(ValueError, match='same T'):
        fit_encoding_model(np.zeros((50, 2)), np.zeros((40, 1)))
    with pytest.raises(ValueError, match='too few'):
        fit_encoding_model(np.zeros((20, 2)), np.zeros((20, 1)))
    with pytest.raises(ValueError, match='finite'):
        fit_encoding_model(np.full((50, 2), np.nan), np.zeros((50, 1)))


def test_recording_is_aligned_to_the_step_times():
    steps = np.arange(10) * 0.02
    times = np.arange(0.05, 1.0, 0.01)
    values = np.stack([times, 2 * times], axis=1)
    aligned, inside = align_recording(steps, times, values)
    np.testing.assert_array_equal(inside, steps >= 0.05 - 1e-12)
    np.testing.assert_allclose(aligned, np.stack([steps[inside], 2 * steps[inside]], axis=1))
    with pytest.raises(ValueError, match='does not overlap'):
        align_recording(steps, times + 5.0, values)


def test_pca_dimensionality_of_known_spectra():
    rng = np.random.default_rng(0)
    centred = rng.standard_normal((400, 3))
    basis, _ = np.linalg.qr(centred - centred.mean(axis=0))  # orthonormal, zero-mean columns
    rotation, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    x = 5.0 + (basis * np.array([3.0, 2.0, 1.0])) @ rotation
    ratios = variance_explained(x)
    np.testing.assert_allclose(ratios, np.array([9.0, 4.0, 1.0]) / 14.0, atol=1e-12)
    assert components_for(ratios, 0.9) == 2 and components_for(ratios, 0.95) == 3
    assert participation_ratio(ratios) == pytest.approx(14.0 ** 2 / 98.0)
    assert participation_ratio(variance_explained(rng.standard_normal((4000, 5)))) \
        == pytest.approx(5.0, rel=0.05)


def test_rsa_sees_shared_structure_and_not_noise():
    rng = np.random.default_rng(0)
    labels = [f'b{i}' for i in rng.integers(0, 6, size=600)]
    codes = {f'b{i}': rng.standard_normal(20) for i in range(6)}
    a = np.stack([codes[v] for v in labels]) + 0.1 * rng.standard_normal((600, 20))
    same = 3.0 * a + 1.0   # z-scoring per unit makes this the same representation
    noise = rng.standard_normal((600, 20))
    rsa = representational_similarity({'a': a, 'same': same, 'noise': noise}, labels)
    assert rsa['conditions'] == [f'b{i}' for i in range(6)]
    assert rsa['similarity'][0, 1] == pytest.approx(1.0)
    assert abs(rsa['similarity'][0, 2]) < 0.6
    assert 'skipped' in representational_similarity({'a': a}, ['x', 'y'] * 300)


def test_label_file_rows_hold_until_the_next(tmp_path):
    path = tmp_path / 'labels.csv'
    path.write_text('frame,label\n10,rear\n0,groom\n25,walk\n')
    rows = read_label_file(str(path))
    assert rows == [(0, 'groom'), (10, 'rear'), (25, 'walk')]
    assert labels_at_frames(rows, [0.0, 9.5, 10.0, 24.9, 30.0]) \
        == ['groom', 'groom', 'rear', 'rear', 'walk']
    path.write_text('3,a\nnot-a-frame,b\n')
    with pytest.raises(ValueError, match='is not a number'):
        read_label_file(str(path))


@pytest.mark.ros
def test_vrat_analyze_writes_plots_for_a_real_clip_run(tmp_path, rat_body):
    from vrat_ros import resources
    from vrat_ros.loop import run_ros_loop
    policy = make_layered_policy(str(tmp_path / 'layered.onnx'), rat_body)
    recording = str(tmp_path / 'run.h5')
    run_ros_loop(resources.default_clip_path(), policy, seconds=2.0,
                 activations_path=recording)

    # A neural recording made of one layer's units, sampled at 100 Hz with noise.
    from vrat_ros.activations import load_activations
    rec = load_activations(recording)
    times = np.arange(0.0, 2.0, 0.01)
    hidden = rec.layers['hidden_1'][:, :3]
    data = np.stack([np.interp(times, rec.time_s, hidden[:, j]) for j in range(3)], axis=1)
    data += 0.05 * np.random.default_rng(0).standard_normal(data.shape)
    np.savez(tmp_path / 'neural.npz', time_s=times, data=data)
    (tmp_path / 'labels.csv').write_text('frame,label\n0,a\n20,b\n45,c\n70,d\n')

    parser = argparse.ArgumentParser(prog='vrat')
    add_subcommands(parser.add_subparsers(dest='command'))
    out = tmp_path / 'analysis'
    args = parser.parse_args(['analyze', recording, '--out', str(out), '--neural',
                              str(tmp_path / 'neural.npz'), '--shuffles', '5'])
    assert args.func(args) == 0
    summary = json.loads((out / 'summary.json').read_text())
    for name in ('pca_variance', 'embedding', 'rsa', 'encoding'):
        assert os.path.getsize(summary['plots'][name]) > 10_000
    assert summary['n_steps'] == 100
    assert set(summary['representations']) == {'observation', 'hidden_0', 'hidden_1', 'action'}
    assert summary['segments']['method'] == 'speed'
    assert summary['rsa']['names'] == ['observation', 'hidden_0', 'hidden_1', 'action']
    encoding = summary['encoding']['layers']
    assert min(encoding['hidden_1']['r2']) > 0.8  # the recording is made of hidden_1
    assert max(encoding['hidden_1']['chance_r2_95']) < min(encoding['hidden_1']['r2'])

    args = parser.parse_args(['analyze', recording, '--out', str(tmp_path / 'by_label'),
                              '--labels', str(tmp_path / 'labels.csv')])
    assert args.func(args) == 0
    summary = json.loads((tmp_path / 'by_label' / 'summary.json').read_text())
    assert summary['rsa']['conditions'] == ['a', 'b', 'c', 'd']
    assert summary['segments']['steps_per_label'] == {'a': 20, 'b': 25, 'c': 25, 'd': 30}
