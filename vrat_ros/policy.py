"""ONNX policy runtime and the vrat contract stored inside the model file.

The contract is JSON in the ONNX model's metadata_props under the key 'vrat_contract':
  format_version     1
  joint_names        joints the observation reads, in order (matched by name to joint states)
  actuator_names     actuators the action drives, in order (the command's joint names)
  command_interface  'effort' (torque commands, N m) or 'position' (joint targets, rad or m,
                     that the driver tracks with its own PD loop at physics rate)
  action_scale       per actuator, command = clip(action, action_clip) * action_scale
                     (+ action_offset)
  action_clip        [lo, hi] bounds of the raw action
  control_rate_hz    rate the network was trained for
  reference          {'frames': K, 'dt_s': seconds between frames}
  observation        {'size': N, 'layout': [{'name', 'size'}, ...]} (see observation.py)
  input_name, output_name   graph tensor names
  layers             names of extra graph outputs that expose hidden activations
  body               {'name', 'scale', 'actuators'} the body it was trained on
Optional fields (absent in older files; the defaults are what those files meant):
  root_joint         name of the body's free root joint, the joint of the reference's root
                     trajectory (default 'root')
  action_offset      per actuator, added to the scaled action (default none): e.g. the
                     standing pose, so that a position policy outputs offsets from it
  body_joints        every joint the body's driver publishes, read by the policy or not;
                     names outside it are reported as unknown (default: the joint_names,
                     plus the rat's tail joints for format-1 rat contracts, which left the
                     tail out on purpose)
Observation normalisation is part of the graph; callers feed raw observations.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import numpy.typing as npt

from vrat_ros.errors import PolicyLoadError
from vrat_ros.errors import PolicyShapeError
from vrat_ros.observation import observation_size

CONTRACT_KEY = 'vrat_contract'
CONTRACT_VERSION = 1
_REQUIRED_KEYS = ('joint_names', 'actuator_names', 'command_interface', 'action_scale',
                  'action_clip', 'control_rate_hz', 'reference', 'observation',
                  'input_name', 'output_name')
COMMAND_INTERFACES = ('effort', 'position')
DEFAULT_ROOT_JOINT = 'root'
# Format-1 rat contracts read 43 of the rat's 67 hinges: the tail joints, which the rat's
# driver publishes, were left out on purpose and are not unknown to them.
_LEGACY_UNREAD_PREFIXES = {'rat': 'vertebra_C'}


def root_joint(contract: dict) -> str:
    """The name of the free root joint a contract's body moves on ('root' when absent)."""
    return str(contract.get('root_joint', DEFAULT_ROOT_JOINT))


def is_body_joint(contract: dict, name: str) -> bool:
    """Whether `name` is a joint of the contract's body (read by the policy or not)."""
    if name in contract['joint_names']:
        return True
    if 'body_joints' in contract:
        return name in contract['body_joints']
    prefix = _LEGACY_UNREAD_PREFIXES.get(str((contract.get('body') or {}).get('name', '')))
    return prefix is not None and name.startswith(prefix)


def validate_contract(contract: dict) -> dict:
    """Checks a contract's keys and internal consistency; returns it.

    Raises:
        PolicyLoadError: a key is missing or two fields disagree.
    """
    missing = [k for k in _REQUIRED_KEYS if k not in contract]
    if missing:
        raise PolicyLoadError(f'vrat contract lacks keys {missing}')
    if contract['command_interface'] not in COMMAND_INTERFACES:
        raise PolicyLoadError(
            f"contract command_interface {contract['command_interface']!r} should be one of "
            f'{list(COMMAND_INTERFACES)}')
    n_act = len(contract['actuator_names'])
    for key in ('action_scale', 'action_offset'):
        if key in contract and len(contract[key]) != n_act:
            raise PolicyLoadError(
                f'contract {key} has {len(contract[key])} entries for {n_act} actuators')
    root = contract.get('root_joint', DEFAULT_ROOT_JOINT)
    if not isinstance(root, str) or not root:
        raise PolicyLoadError(f'contract root_joint should be a joint name: got {root!r}')
    if root_joint(contract) in contract['joint_names']:
        raise PolicyLoadError(f"contract root_joint {root_joint(contract)!r} is also one of "
                              'its joint_names')
    missing = [n for n in contract['joint_names'] if n not in contract.get('body_joints', [n])]
    if missing:
        raise PolicyLoadError(f'contract body_joints lacks joints the policy reads: '
                              f'{missing[:5]}')
    expected = observation_size(len(contract['joint_names']), int(contract['reference']['frames']))
    if int(contract['observation']['size']) != expected:
        raise PolicyLoadError(
            f"contract observation size {contract['observation']['size']} does not match its "
            f"{len(contract['joint_names'])} joints and {contract['reference']['frames']} "
            f'reference frames (expected {expected})')
    contract.setdefault('layers', [])
    return contract


def read_contract(path: str) -> dict:
    """Reads the vrat contract stored in an ONNX file, without running it."""
    import onnx  # only needed here; the runtime path uses onnxruntime alone
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others for non-ONNX bytes
        raise PolicyLoadError(f"'{path}' is not an ONNX model: {exc}") from exc
    props = {p.key: p.value for p in model.metadata_props}
    if CONTRACT_KEY not in props:
        raise PolicyLoadError(f"'{path}' has no '{CONTRACT_KEY}' metadata; not a vrat policy")
    try:
        return validate_contract(json.loads(props[CONTRACT_KEY]))
    except json.JSONDecodeError as exc:
        raise PolicyLoadError(f"'{path}': its vrat contract is not valid JSON: {exc}") from exc


EXECUTION_MODES = ('sequential', 'parallel')


@dataclasses.dataclass(frozen=True)
class SessionSettings:
    """onnxruntime session options for a control loop.

    The defaults suit one small network evaluated once per control step on a busy machine:
    one thread, which never spins waiting for work, and the graph's nodes run in order.

    Attributes:
        intra_op_threads: threads inside one operator (onnxruntime's intra_op_num_threads).
        inter_op_threads: threads across operators, used only in 'parallel' mode.
        allow_spinning: let idle pool threads spin (session.intra_op.allow_spinning and
            session.inter_op.allow_spinning); spinning burns a core between steps.
        execution_mode: 'sequential' or 'parallel'.
    """

    intra_op_threads: int = 1
    inter_op_threads: int = 1
    allow_spinning: bool = False
    execution_mode: str = 'sequential'

    def __post_init__(self):
        if self.intra_op_threads < 1 or self.inter_op_threads < 1:
            raise ValueError(
                f'onnxruntime thread counts should be >= 1: got intra_op_threads '
                f'{self.intra_op_threads}, inter_op_threads {self.inter_op_threads}')
        if self.execution_mode not in EXECUTION_MODES:
            raise ValueError(f'execution_mode should be one of {EXECUTION_MODES}: got '
                             f"'{self.execution_mode}'")

    def options(self):
        """Returns them as an onnxruntime.SessionOptions."""
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(self.intra_op_threads)
        opts.inter_op_num_threads = int(self.inter_op_threads)
        opts.execution_mode = (ort.ExecutionMode.ORT_SEQUENTIAL
                               if self.execution_mode == 'sequential'
                               else ort.ExecutionMode.ORT_PARALLEL)
        spin = '1' if self.allow_spinning else '0'
        opts.add_session_config_entry('session.intra_op.allow_spinning', spin)
        opts.add_session_config_entry('session.inter_op.allow_spinning', spin)
        return opts


def load_session(path_or_bytes, settings: SessionSettings):
    """Returns an onnxruntime CPU InferenceSession of a model file (or its bytes)."""
    import onnxruntime as ort
    return ort.InferenceSession(path_or_bytes, sess_options=settings.options(),
                                providers=['CPUExecutionProvider'])


class OnnxPolicy:
    """Runs a vrat ONNX policy with onnxruntime on the CPU.

    Args:
        path: the .onnx file.
        expected_observation_size: if given, refuse a model whose input width differs.
        intra_op_threads: onnxruntime threads (1 keeps a control loop predictable); ignored
            when `session_settings` is given.
        session_settings: all the onnxruntime options (`SessionSettings`).
    """

    def __init__(self, path: str, expected_observation_size: int | None = None,
                 intra_op_threads: int = 1, session_settings: SessionSettings | None = None):
        if not os.path.isfile(path):
            raise PolicyLoadError(f"policy file '{path}' does not exist")
        if session_settings is None:
            session_settings = SessionSettings(intra_op_threads=intra_op_threads)
        self.session_settings = session_settings
        try:
            self.session = load_session(path, session_settings)
        except Exception as exc:
            raise PolicyLoadError(f"'{path}' could not be loaded by onnxruntime: {exc}") from exc
        meta = self.session.get_modelmeta().custom_metadata_map
        if CONTRACT_KEY not in meta:
            raise PolicyLoadError(f"'{path}' has no '{CONTRACT_KEY}' metadata; not a vrat policy")
        try:
            self.contract = validate_contract(json.loads(meta[CONTRACT_KEY]))
        except json.JSONDecodeError as exc:
            raise PolicyLoadError(f"'{path}': contract is not valid JSON: {exc}") from exc
        self.path = path

        inputs = {i.name: i for i in self.session.get_inputs()}
        name = self.contract['input_name']
        if name not in inputs:
            raise PolicyShapeError(
                f"model has no input '{name}'; inputs are {sorted(inputs)}")
        shape = list(inputs[name].shape)
        width = shape[-1]
        obs_size = int(self.contract['observation']['size'])
        if not isinstance(width, int) or width != obs_size:
            raise PolicyShapeError(
                f"model input '{name}' has shape {shape} but the contract's observation has "
                f'{obs_size} values')
        if expected_observation_size is not None and width != expected_observation_size:
            raise PolicyShapeError(
                f'model input width {width} does not match the observation size '
                f'{expected_observation_size} built for this body')
        self._input_name = name
        self._input_dtype = np.float64 if 'double' in inputs[name].type else np.float32
        self._batched = len(shape) == 2

        outputs = [o.name for o in self.session.get_outputs()]
        if self.contract['output_name'] not in outputs:
            raise PolicyShapeError(
                f"model has no output '{self.contract['output_name']}'; outputs are {outputs}")
        self.layer_names = [n for n in self.contract['layers'] if n in outputs]
        self._outputs = [self.contract['output_name']] + self.layer_names
        self.action_scale = np.asarray(self.contract['action_scale'], dtype=np.float64)
        self.action_offset = (np.asarray(self.contract['action_offset'], dtype=np.float64)
                              if 'action_offset' in self.contract else None)
        self.command_interface = str(self.contract['command_interface'])
        self.root_joint = root_joint(self.contract)
        self.action_clip = tuple(float(v) for v in self.contract['action_clip'])
        self.joint_names: list[str] = list(self.contract['joint_names'])
        self.actuator_names: list[str] = list(self.contract['actuator_names'])
        self.observation_size = obs_size
        self.reference_frames = int(self.contract['reference']['frames'])
        self.reference_dt = float(self.contract['reference']['dt_s'])
        self.control_rate_hz = float(self.contract['control_rate_hz'])

        out_shape = self.session.get_outputs()[outputs.index(self.contract['output_name'])].shape
        if isinstance(out_shape[-1], int) and out_shape[-1] != len(self.actuator_names):
            raise PolicyShapeError(
                f'model output has {out_shape[-1]} values for {len(self.actuator_names)} '
                'actuators in its contract')

    def run(self, observation: npt.ArrayLike, with_layers: bool = False):
        """Evaluates the network on one observation.

        Args:
            observation: (observation_size,) raw observation (float32 or float64).
            with_layers: also return the hidden activations named in the contract.

        Returns:
            action (nu,) float64 clipped to action_clip, and if with_layers a dict
            {layer name: (n,) float32 activations}.
        """
        obs = np.asarray(observation, dtype=self._input_dtype).reshape(-1)
        if obs.shape[0] != self.observation_size:
            raise PolicyShapeError(
                f'observation has {obs.shape[0]} values; the policy expects '
                f'{self.observation_size}')
        feed = obs[None, :] if self._batched else obs
        names = self._outputs if with_layers else self._outputs[:1]
        return self._unpack(self.session.run(names, {self._input_name: feed}), with_layers)

    def _unpack(self, results: list, with_layers: bool):
        """Turns session outputs [action, *layers] into run()'s return value."""
        action = np.clip(np.asarray(results[0], dtype=np.float64).reshape(-1), *self.action_clip)
        if not with_layers:
            return action
        layers = {n: np.asarray(r, dtype=np.float32).reshape(-1)
                  for n, r in zip(self.layer_names, results[1:])}
        return action, layers

    def command_from_action(self, action: np.ndarray) -> np.ndarray:
        """Returns the command of a clipped action: action * action_scale (+ action_offset).

        Torques (N m) for an 'effort' contract, joint targets for a 'position' one.
        """
        command = action * self.action_scale
        if self.action_offset is not None:
            command = command + self.action_offset
        return command

    def torques(self, observation: npt.ArrayLike) -> np.ndarray:
        """Returns the command for one observation (`command_from_action` of `run`).

        The name is older than position contracts: for those the values are joint targets.
        """
        return self.command_from_action(self.run(observation))
