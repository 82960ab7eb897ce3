"""Hidden activations, virtual lesions and activation recordings of the policy.

The policy here is a tiny two-layer network (fixtures_layers.make_layered_policy) whose
contract names 'hidden_0' and 'hidden_1'; the ROS tests run it through the real node and
the in-process loop.
"""

import hashlib
import json

from fixtures_layers import make_layered_policy
import numpy as np
import pytest

from vrat_ros.introspection import insert_lesion_points
from vrat_ros.introspection import LayerLesion
from vrat_ros.introspection import LesionablePolicy
from vrat_ros.introspection import lesions_to_parameters
from vrat_ros.introspection import parse_lesion_specs
from vrat_ros.introspection import tracking_change
from vrat_ros.policy import OnnxPolicy


@pytest.fixture(scope='module')
def layered_policy_path(tmp_path_factory, rat_body):
    path = tmp_path_factory.mktemp('layered') / 'layered.onnx'
    return make_layered_policy(str(path), rat_body)


@pytest.fixture(scope='module', params=[False, True], ids=['direct', 'identity'])
def any_layered_policy(request, tmp_path_factory, rat_body):
    """Both graph shapes: layers read directly, or exposed through Identity nodes."""
    path = tmp_path_factory.mktemp('layered') / f'layered_{request.param}.onnx'
    return make_layered_policy(str(path), rat_body, identity_outputs=request.param)


def observations(policy, n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, policy.observation_size))


# The lesion graph.

def test_identity_masks_give_exactly_the_original_outputs(any_layered_policy):
    original = OnnxPolicy(any_layered_policy)
    policy = LesionablePolicy(any_layered_policy)
    assert policy.layer_sizes == {'hidden_0': 24, 'hidden_1': 16}
    for obs in observations(policy, 20):
        action, layers = original.run(obs, with_layers=True)
        ones = {n: (np.ones(k), np.zeros(k)) for n, k in policy.layer_sizes.items()}
        lesion_action, lesion_layers = policy.run_with_masks(obs, ones, with_layers=True)
        np.testing.assert_array_equal(lesion_action, action)
        for name in layers:
            np.testing.assert_array_equal(lesion_layers[name], layers[name])
        np.testing.assert_array_equal(policy.run(obs), action)  # no lesion: the first graph


def test_silenced_units_change_the_next_layer_and_the_action(any_layered_policy):
    original = OnnxPolicy(any_layered_policy)
    policy = LesionablePolicy(any_layered_policy)
    policy.set_lesions({'hidden_0': {'silence': [0, 1, 2, 3]}})
    for obs in observations(policy, 5):
        action, layers = original.run(obs, with_layers=True)
        lesioned, lesioned_layers = policy.run(obs, with_layers=True)
        assert np.all(lesioned_layers['hidden_0'][:4] == 0.0)
        np.testing.assert_array_equal(lesioned_layers['hidden_0'][4:], layers['hidden_0'][4:])
        assert np.abs(lesioned_layers['hidden_1'] - layers['hidden_1']).max() > 1e-3
        assert np.abs(lesioned - action).max() > 1e-5
    policy.clear_lesions()
    assert not policy.lesioned
    np.testing.assert_array_equal(policy.run(obs), action)


def test_clamp_sets_units_and_noise_is_seeded(layered_policy_path):
    policy = LesionablePolicy(layered_policy_path, seed=3)
    twin = LesionablePolicy(layered_policy_path, seed=3)
    lesion = {'hidden_1': LayerLesion(clamp=(0, 5), clamp_value=0.75, noise=(2, 3),
                                      noise_std=0.5)}
    policy.set_lesions(lesion)
    twin.set_lesions(lesion)
    obs = observations(policy, 1)[0]
    intact = OnnxPolicy(layered_policy_path).run(obs, with_layers=True)[1]['hidden_1']
    runs = [policy.run(obs, with_layers=True)[1]['hidden_1'] for _ in range(400)]
    again = [twin.run(obs, with_layers=True)[1]['hidden_1'] for _ in range(3)]
    runs = np.array(runs)
    np.testing.assert_array_equal(runs[:3], np.array(again))
    assert np.all(runs[:, [0, 5]] == np.float32(0.75))
    np.testing.assert_array_equal(runs[:, 4], np.full(400, intact[4]))
    noise = runs[:, [2, 3]] - intact[[2, 3]]
    assert np.std(noise, axis=0) == pytest.approx([0.5, 0.5], rel=0.15)
    assert np.all(np.abs(noise.mean(axis=0)) < 0.1)


@pytest.mark.parametrize('lesions, match', [
    ({'hidden_7': {'silence': [0]}}, "no layer 'hidden_7'"),
    ({'hidden_0': {'silence': [24]}}, r'units \[24\] are outside layer .hidden_0.'),
    ({'hidden_0': {'noise': [-1], 'noise_std': 1.0}}, 'outside layer'),
    ({'hidden_0': {'noise_std': -0.1}}, 'noise_std should be >= 0'),
    ({'hidden_0': {'clamp_value': float('nan'), 'clamp': [1]}}, 'clamp_value should be finite'),
    ({'hidden_0': {'silence': [1, 2], 'clamp': [2]}}, 'both silenced and clamped'),
    ({'hidden_0': {'mute': [1]}}, 'unknown lesion fields'),
], ids=['layer', 'unit', 'negative unit', 'std', 'nan', 'overlap', 'field'])
def test_bad_lesions_are_refused_and_change_nothing(layered_policy_path, lesions, match):
    policy = LesionablePolicy(layered_policy_path)
    policy.set_lesions({'hidden_1': {'silence': [1]}})
    with pytest.raises(ValueError, match=match):
        policy.set_lesions(lesions)
    assert set(policy.lesions) == {'hidden_1'}


def test_layer_that_no_node_computes_is_refused():
    from onnx import helper
    from onnx import TensorProto
    from vrat_ros.errors import PolicyLoadError
    graph = helper.make_graph(
        [helper.make_node('Relu', ['x'], ['y'])], 'g',
        [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info('y', TensorProto.FLOAT, [1, 3])])
    model = helper.make_model(graph)
    with pytest.raises(PolicyLoadError, match="layer 'x' is not computed"):
        insert_lesion_points(model, {'x': TensorProto.FLOAT})


def test_lesion_specs_parse_into_node_parameters():
    lesions = parse_lesion_specs(['hidden_0.silence=0,3,8:11', 'hidden_0.noise_std=0.2',
                                  'hidden_1.clamp=2', 'hidden_1.clamp_value=-1'])
    assert lesions == {'hidden_0': {'silence': [0, 3, 8, 9, 10], 'noise_std': 0.2},
                       'hidden_1': {'clamp': [2], 'clamp_value': -1.0}}
    params = lesions_to_parameters(lesions)
    assert params['lesion.hidden_0.silence'] == [0, 3, 8, 9, 10]
    assert 'lesion.hidden_0.clamp' not in params  # empty lists have no ROS type
    with pytest.raises(ValueError, match='LAYER.FIELD=VALUE'):
        parse_lesion_specs(['hidden_0=1'])
    with pytest.raises(ValueError, match="unknown field 'mute'"):
        parse_lesion_specs(['hidden_0.mute=1'])
    with pytest.raises(ValueError, match='bad value'):
        parse_lesion_specs(['hidden_0.silence=a'])
    assert tracking_change({'a': 1.0, 'b': 'x', 'c': True}, {'a': 3.0, 'b': 'y', 'c': False}) \
        == {'a': 2.0}


# The policy node.

@pytest.mark.ros
def test_node_publishes_activations_only_when_asked(ros, layered_policy_path,
                                                    synthetic_clip_path):
    from rclpy.parameter import Parameter
    from std_msgs.msg import Float32MultiArray
    from test_nodes import PolicyRig
    rig = PolicyRig(ros, layered_policy_path, synthetic_clip_path)
    assert rig.node.publish_activations is False
    received = {name: ros.collect(Float32MultiArray, f'policy/activations/{name}')
                for name in ('hidden_0', 'hidden_1')}
    observed = ros.collect(Float32MultiArray, 'policy/observation')
    for pub in list(rig.node.activation_pubs.values()) + [rig.node.observation_pub]:
        ros.connect(pub)

    rig.send(0, clip_t=0.3)
    assert rig.command_at(0) is not None
    ros.spin_for(0.2)
    assert not observed and not any(received.values())

    result = rig.node.set_parameters([Parameter('publish_activations', value=True)])
    assert result[0].successful
    rig.send(20_000_000, clip_t=0.32)
    torques = rig.command_at(20_000_000)
    assert ros.spin_until(lambda: observed and all(received.values()))
    obs = np.array(observed[0].data, dtype=np.float32)
    assert observed[0].layout.dim[0].label == 'observation'
    action, layers = rig.policy.run(obs, with_layers=True)
    np.testing.assert_allclose(torques, action * rig.policy.action_scale, rtol=0, atol=1e-12)
    for name, msgs in received.items():
        assert msgs[0].layout.dim[0].label == name
        assert msgs[0].layout.dim[0].size == layers[name].size
        np.testing.assert_array_equal(np.array(msgs[0].data, dtype=np.float32), layers[name])


@pytest.mark.ros
def test_node_lesion_parameters_are_checked_applied_and_cleared(ros, layered_policy_path,
                                                                synthetic_clip_path):
    from rclpy.parameter import Parameter
    from std_srvs.srv import Trigger
    from test_nodes import PolicyRig
    rig = PolicyRig(ros, layered_policy_path, synthetic_clip_path)
    node = rig.node
    rig.send(0, clip_t=0.3)
    intact = rig.command_at(0)

    # Refused: the reason names the problem and nothing changes.
    result = node.set_parameters([Parameter('lesion.hidden_0.silence', value=[3, 99])])[0]
    assert not result.successful and 'units [99] are outside layer' in result.reason
    result = node.set_parameters([Parameter('lesion.hidden_1.noise_std', value=-1.0)])[0]
    assert not result.successful and 'noise_std should be >= 0' in result.reason
    assert not node.policy.lesioned

    # Accepted: silencing changes the next command for the same state.
    result = node.set_parameters_atomically([
        Parameter('lesion.hidden_0.silence', value=list(range(12))),
        Parameter('lesion.hidden_1.clamp', value=[0]),
        Parameter('lesion.hidden_1.clamp_value', value=0.5)])
    assert result.successful, result.reason
    assert node.policy.lesions['hidden_0'].silence == tuple(range(12))
    rig.send(20_000_000, clip_t=0.3)
    lesioned = rig.command_at(20_000_000)
    assert np.abs(lesioned - intact).max() > 1e-3

    # The service clears every lesion parameter.
    client = ros.probe.create_client(Trigger, 'policy/clear_lesions')
    assert client.wait_for_service(timeout_sec=5.0)
    future = client.call_async(Trigger.Request())
    assert ros.spin_until(future.done)
    assert future.result().success, future.result().message
    assert not node.policy.lesioned
    assert node.get_parameter('lesion.hidden_0.silence').value == []
    rig.send(40_000_000, clip_t=0.3)
    np.testing.assert_array_equal(rig.command_at(40_000_000), intact)


@pytest.mark.ros
def test_node_refuses_bad_lesion_overrides_at_start(ros, layered_policy_path):
    from vrat_ros.policy_node import PolicyNode
    with pytest.raises(ValueError, match='outside layer'):
        PolicyNode(**ros.node_kwargs(policy_file=layered_policy_path,
                                     **{'lesion.hidden_1.silence': [16]}))


# Recordings from the loop.

@pytest.mark.ros
def test_recorded_activations_open_with_h5py_and_match_onnxruntime(
        tmp_path, layered_policy_path, synthetic_clip_path):
    import h5py
    import onnxruntime as ort
    from vrat_ros.loop import run_ros_loop
    path = str(tmp_path / 'run.h5')
    result = run_ros_loop(synthetic_clip_path, layered_policy_path, seconds=0.4,
                          activations_path=path)
    assert result.activations_path == path

    # Read with h5py alone, recompute with onnxruntime alone.
    with h5py.File(path, 'r') as f:
        assert f.attrs['format'] == 'vrat_activations'
        with open(layered_policy_path, 'rb') as policy_file:
            assert f.attrs['policy_sha256'] == hashlib.sha256(policy_file.read()).hexdigest()
        assert json.loads(f.attrs['policy_contract'])['layers'] == ['hidden_0', 'hidden_1']
        assert f.attrs['clip_fps'] == 30.0
        assert json.loads(f.attrs['parameters'])['seconds'] == pytest.approx(0.4)
        obs = f['observation'][()]
        action = f['action'][()]
        torque = f['torque'][()]
        hidden = {name: f['activations'][name][()] for name in ('hidden_0', 'hidden_1')}
        np.testing.assert_allclose(f['time_s'][()], np.arange(20) * 0.02, atol=1e-12)
        np.testing.assert_allclose(f['clip_frame'][()], np.arange(20) * 0.02 * 30.0)
        assert f['reference/joint_pos'].shape == (20, 5, 43)
        assert f['state/qpos'].shape == (20, 74)
    assert obs.shape == (20, 346) and obs.dtype == np.float32
    session = ort.InferenceSession(layered_policy_path, providers=['CPUExecutionProvider'])
    ort_action, ort_h0, ort_h1 = session.run(['action', 'hidden_0', 'hidden_1'],
                                             {'observation': obs})
    np.testing.assert_allclose(hidden['hidden_0'], ort_h0, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(hidden['hidden_1'], ort_h1, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(action, np.clip(ort_action, -1, 1), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(torque, result.torques)


@pytest.mark.ros
def test_lesioned_run_is_recorded_and_its_tracking_compared(
        tmp_path, layered_policy_path, synthetic_clip_path):
    from vrat_ros.activations import load_activations
    from vrat_ros.introspection import lesion_effect
    from vrat_ros.loop import run_ros_loop
    lesions = {'hidden_0': {'silence': list(range(24))}}
    path = str(tmp_path / 'lesioned.h5')
    run_ros_loop(synthetic_clip_path, layered_policy_path, seconds=0.4,
                 activations_path=path, lesions=lesions)
    rec = load_activations(path)
    assert np.all(rec.layers['hidden_0'] == 0.0)
    assert rec.parameters['lesions']['hidden_0']['silence'] == list(range(24))

    effect = lesion_effect(synthetic_clip_path, layered_policy_path, lesions, seconds=0.4)
    assert effect['lesions'] == {'hidden_0': LayerLesion(silence=range(24)).to_dict()}
    assert effect['change']['joint_rmse_rad'] == pytest.approx(
        effect['lesioned']['joint_rmse_rad'] - effect['intact']['joint_rmse_rad'])
    assert effect['change']['joint_rmse_rad'] != 0.0


@pytest.mark.ros
def test_failed_run_writes_no_activation_file(tmp_path, layered_policy_path,
                                              synthetic_clip_path):
    from vrat_ros.loop import run_ros_loop
    path = tmp_path / 'never.h5'
    with pytest.raises(ValueError, match="layers \\['hidden_9'\\] that the policy lacks"):
        run_ros_loop(synthetic_clip_path, layered_policy_path, seconds=0.2,
                     activations_path=str(path), lesions={'hidden_9': {'silence': [0]}})
    with pytest.raises(ValueError, match='outside layer'):
        run_ros_loop(synthetic_clip_path, layered_policy_path, seconds=0.2,
                     activations_path=str(path), lesions={'hidden_0': {'silence': [99]}})
    assert list(tmp_path.iterdir()) == []


def test_onnxruntime_options_reach_both_the_plain_and_the_lesion_graph(layered_policy_path):
    from vrat_ros.policy import SessionSettings
    settings = SessionSettings(intra_op_threads=2, execution_mode='parallel')
    policy = LesionablePolicy(layered_policy_path, session_settings=settings)
    assert policy.session_settings == settings
    for session in (policy.session, policy.lesion_session):
        assert session.get_session_options().intra_op_num_threads == 2
    obs = np.linspace(-1.0, 1.0, policy.observation_size)
    plain = LesionablePolicy(layered_policy_path)
    np.testing.assert_array_equal(policy.run(obs), plain.run(obs))
