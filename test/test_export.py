"""Tests of the ONNX export: parity with torch, the contract, and what OnnxPolicy refuses."""

import json
import pathlib

import numpy as np
import pytest

from vrat_ros.clip import Clip
from vrat_ros.controllers import PolicyController
from vrat_ros.errors import PolicyShapeError
from vrat_ros.export import check_parity
from vrat_ros.export import export_onnx
from vrat_ros.export import ExportParityError
from vrat_ros.policy import CONTRACT_KEY
from vrat_ros.policy import OnnxPolicy
from vrat_ros.policy import read_contract
from vrat_ros.train import batch_observations
from vrat_ros.train import make_model
from vrat_ros.train import policy_interface
from vrat_ros.train import TorchPolicy

torch = pytest.importorskip('torch')
onnx = pytest.importorskip('onnx')

DEFAULT_CLIP = (pathlib.Path(__file__).resolve().parents[1]
                / 'vrat_ros' / 'data' / 'clips' / 'rat23_dannce_1000f.npz')


@pytest.fixture(scope='module')
def real_clip(rat_body):
    if not DEFAULT_CLIP.is_file():
        pytest.skip(f'default clip {DEFAULT_CLIP} is missing')
    return Clip.load(str(DEFAULT_CLIP)).reorder_to(rat_body.hinge_names)


@pytest.fixture(scope='module')
def real_observations(rat_body, real_clip):
    """(200, 346) observations of real poses: each clip state and its next 5 frames."""
    times = np.arange(200) * 0.09
    qpos = np.stack([real_clip.sample(t) for t in times])
    qvel = np.stack([real_clip.velocity(t) for t in times])
    windows = np.stack([real_clip.window(t + 0.02, 5, 0.02) for t in times])
    return batch_observations(qpos, qvel, windows, rat_body.tracked_hinge_idx)


@pytest.fixture(scope='module')
def model_and_interface(rat_body, real_observations):
    interface = policy_interface(rat_body)
    torch.manual_seed(0)
    model = make_model(interface['observation']['size'], rat_body.nu,
                       {'hidden': [64, 32], 'activation': 'elu'})
    with torch.no_grad():
        model.obs_mean.copy_(torch.from_numpy(real_observations.mean(0)))
        model.obs_std.copy_(torch.from_numpy(np.maximum(real_observations.std(0), 1e-3)))
        model.act_std.fill_(0.3)
    model.eval()
    return model, interface


@pytest.fixture(scope='module')
def exported(tmp_path_factory, model_and_interface, real_observations):
    model, interface = model_and_interface
    path = tmp_path_factory.mktemp('export') / 'policy.onnx'
    contract = export_onnx(model, str(path), interface=interface,
                           parity_observations=real_observations,
                           contract_extra={'training': {'seed': 0, 'note': 'test'}})
    return str(path), contract


def test_export_matches_torch_on_real_observations(exported, model_and_interface,
                                                   real_observations):
    path, _ = exported
    model, _ = model_and_interface
    report = check_parity(model, pathlib.Path(path).read_bytes(), real_observations)
    assert report['max_abs_diff'] <= 1e-5


def test_contract_round_trips_through_onnx_policy(exported, rat_body, model_and_interface,
                                                  real_observations):
    path, contract = exported
    policy = OnnxPolicy(path, expected_observation_size=346)
    assert policy.contract == json.loads(json.dumps(contract))
    assert read_contract(path) == policy.contract
    assert policy.joint_names == [rat_body.hinge_names[i] for i in rat_body.tracked_hinge_idx]
    assert policy.actuator_names == rat_body.actuator_names
    np.testing.assert_array_equal(policy.action_scale, rat_body.actuator_gain)
    assert policy.contract['command_interface'] == 'effort'
    assert policy.contract['action_clip'] == [-1.0, 1.0]
    assert policy.contract['reference'] == {'frames': 5, 'dt_s': 0.02}
    assert policy.contract['body'] == {'name': 'rat', 'scale': 0.9, 'actuators': 'torque'}
    assert policy.contract['training']['seed'] == 0
    assert policy.layer_names == ['hidden_0', 'hidden_1']

    model, _ = model_and_interface
    action, layers = policy.run(real_observations[3], with_layers=True)
    with torch.no_grad():
        expected, hiddens = model(torch.from_numpy(real_observations[3:4]))
    np.testing.assert_allclose(action, expected.numpy()[0], atol=1e-5)
    assert layers['hidden_0'].shape == (64,)
    np.testing.assert_allclose(layers['hidden_1'], hiddens[1].numpy()[0], atol=1e-5)


def test_onnx_and_torch_controllers_agree(exported, model_and_interface, rat_body, real_clip):
    path, _ = exported
    model, interface = model_and_interface
    onnx_ctrl = PolicyController(path)
    torch_ctrl = PolicyController(TorchPolicy(model, interface))
    rat_body.reset(real_clip.sample(1.0), real_clip.velocity(1.0))
    for ctrl in (onnx_ctrl, torch_ctrl):
        ctrl.reset(rat_body, real_clip, 1.0)
    np.testing.assert_allclose(onnx_ctrl.torques(rat_body, 1.0), torch_ctrl.torques(rat_body, 1.0),
                               atol=1e-5 * rat_body.actuator_gain.max())


def test_float64_observation_is_accepted(exported, real_observations):
    policy = OnnxPolicy(exported[0])
    a32 = policy.run(real_observations[0])
    a64 = policy.run(real_observations[0].astype(np.float64))
    np.testing.assert_array_equal(a32, a64)


def _write_manual(path, module, contract, width, dynamic=True):
    """Exports `module` with a hand-made contract (for shape and dtype edge cases)."""
    dummy = torch.zeros(1, width, dtype=next(module.parameters()).dtype)
    axes = {'observation': {0: 'batch'}, 'action': {0: 'batch'}} if dynamic else None
    torch.onnx.export(module, (dummy,), str(path), dynamo=False, input_names=['observation'],
                      output_names=['action'], dynamic_axes=axes, opset_version=17)
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key = CONTRACT_KEY
    entry.value = json.dumps(contract)
    onnx.save(proto, str(path))


@pytest.mark.filterwarnings('ignore::DeprecationWarning')
def test_input_width_mismatch_is_refused_with_both_shapes(tmp_path, exported, rat_body):
    contract = dict(exported[1], layers=[])
    path = tmp_path / 'narrow.onnx'
    _write_manual(path, torch.nn.Linear(340, rat_body.nu), contract, 340)
    with pytest.raises(PolicyShapeError, match=r"\['batch', 340\].*346"):
        OnnxPolicy(str(path))


@pytest.mark.filterwarnings('ignore::DeprecationWarning')
def test_fixed_batch_dimension_is_handled(tmp_path, exported, rat_body, real_observations):
    contract = dict(exported[1], layers=[])
    path = tmp_path / 'fixed_batch.onnx'
    torch.manual_seed(1)
    _write_manual(path, torch.nn.Linear(346, rat_body.nu), contract, 346, dynamic=False)
    policy = OnnxPolicy(str(path))
    action = policy.run(real_observations[0].astype(np.float64))
    assert action.shape == (rat_body.nu,)
    assert np.all(np.abs(action) <= 1.0)


@pytest.mark.filterwarnings('ignore::DeprecationWarning')
def test_float64_graph_input_is_handled(tmp_path, exported, rat_body, real_observations):
    contract = dict(exported[1], layers=[])
    path = tmp_path / 'double.onnx'
    torch.manual_seed(2)
    _write_manual(path, torch.nn.Linear(346, rat_body.nu).double(), contract, 346)
    policy = OnnxPolicy(str(path))
    assert policy.run(real_observations[0]).shape == (rat_body.nu,)


def test_export_refuses_when_parity_fails(tmp_path, model_and_interface, real_observations,
                                          monkeypatch):
    import vrat_ros.export as export_module
    model, interface = model_and_interface
    monkeypatch.setattr(export_module, 'check_parity',
                        lambda *a: {'max_abs_diff': 1.0, 'worst_output': 'action'})
    path = tmp_path / 'never.onnx'
    with pytest.raises(ExportParityError, match='differ'):
        export_onnx(model, str(path), interface=interface,
                    parity_observations=real_observations[:4])
    assert not path.exists()
