"""Per-step recordings of the policy's inputs, outputs and hidden activations, in HDF5.

`vrat run --activations FILE` writes one file per run. It is plain HDF5, so h5py (or any
HDF5 reader: MATLAB's h5read, HDFView, ...) opens it without vrat_ros. T counts control
steps; step i is the command computed for the sim state at time_s[i]:

  /time_s                       (T,)        clip time of the state the command answers (s)
  /stamp_ns                     (T,)        the same as a sim-time stamp from the run's start
  /clip_frame                   (T,)        fractional clip frame index at time_s
  /observation                  (T, N)      the network's input (attribute layout_json)
  /action                       (T, nu)     clipped network output (attribute actuator_names)
  /torque                       (T, nu)     torques sent to the sim (N m)
  /reference/root_pos           (T, K, 3)   reference window: root position (m, world)
  /reference/root_quat_wxyz     (T, K, 4)   root orientation
  /reference/joint_pos          (T, K, J)   joint angles (rad, attribute joint_names)
  /reference/offsets_s          (K,)        times of the window frames after time_s (s)
  /state/qpos                   (T, nq)     sim pose the command answered (attribute
                                            hinge_names: joint order after the 7 root values)
  /activations/<layer>          (T, n)      each hidden layer named in the policy's contract,
                                            as the (possibly lesioned) network computed it
Root attributes say what produced the file: format, format_version, policy_file,
policy_sha256, policy_contract (JSON), clip_file, clip_sha256, clip_title, clip_fps,
parameters (JSON: seconds, start time, body scale, lesions, ...), layers, vrat_ros_version.

The writer gets its steps from `PolicyNode.on_step` inside the run's process, rather than
from the node's activation topics: Float32MultiArray carries no stamp, so topic messages
could only be paired by arrival order, which a lost or late message would silently shift.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Sequence

import numpy as np
import numpy.typing as npt

from vrat_ros.clip import file_sha256
from vrat_ros.errors import VratError

FORMAT = 'vrat_activations'
FORMAT_VERSION = 1


class ActivationFileError(VratError):
    """An activation recording is missing, unreadable or not in the vrat format."""


def write_activations(
    path: str,
    steps: Sequence,
    *,
    start_time_s: float,
    clip,
    clip_path: str,
    policy_path: str,
    contract: dict,
    parameters: dict,
    qpos: npt.ArrayLike | None = None,
    hinge_names: Sequence[str] | None = None,
) -> None:
    """Writes a recording atomically (a temporary file renamed at the end; no half files).

    Args:
        path: destination .h5 file.
        steps: `introspection.PolicyStep`s in time order, one per control step.
        start_time_s: clip time of stamp 0 (s).
        clip: the `Clip` the run followed (for frame indices and provenance).
        clip_path: its file.
        policy_path: the ONNX policy file.
        contract: the policy's contract.
        parameters: run settings to store (JSON-serialisable).
        qpos: (T, nq) sim states the commands answered, or None.
        hinge_names: joint names of qpos[:, 7:].

    Raises:
        ValueError: no steps, or steps and qpos disagree.
    """
    import h5py

    from vrat_ros import __version__
    from vrat_ros.clip import atomic_write

    if not steps:
        raise ValueError('no control steps to write')
    layers = list(contract.get('layers', []))
    stamps = np.array([s.stamp_ns for s in steps], dtype=np.int64)
    time_s = start_time_s + stamps * 1e-9
    if qpos is not None:
        qpos = np.asarray(qpos, dtype=np.float64)
        if qpos.shape[0] != len(steps):
            raise ValueError(f'qpos has {qpos.shape[0]} rows for {len(steps)} steps')
    n_frames = int(contract['reference']['frames'])
    dt_s = float(contract['reference']['dt_s'])
    strings = h5py.string_dtype()

    def write(tmp: str) -> None:
        with h5py.File(tmp, 'w') as f:
            f.attrs['format'] = FORMAT
            f.attrs['format_version'] = FORMAT_VERSION
            f.attrs['vrat_ros_version'] = __version__
            f.attrs['description'] = (
                'Virtual rat closed-loop run: per control step, the observation, reference '
                'window, action, torques and hidden-layer activations of the inverse-dynamics '
                'network (see the vrat_ros.activations module docstring for the layout).')
            f.attrs['policy_file'] = os.path.abspath(policy_path)
            f.attrs['policy_sha256'] = file_sha256(policy_path)
            f.attrs['policy_contract'] = json.dumps(contract, sort_keys=True)
            f.attrs['clip_file'] = os.path.abspath(clip_path)
            f.attrs['clip_sha256'] = file_sha256(clip_path)
            f.attrs['clip_title'] = str(clip.meta.get('title', clip.meta.get('source_file', '')))
            f.attrs['clip_fps'] = float(clip.fps)
            f.attrs['clip_meta'] = json.dumps(clip.meta, sort_keys=True, default=str)
            f.attrs['parameters'] = json.dumps(parameters, sort_keys=True)
            f.attrs['layers'] = np.array(layers, dtype=strings)

            d = f.create_dataset('time_s', data=time_s)
            d.attrs['units'] = 's'
            d.attrs['description'] = 'clip time of the sim state each command answers'
            f.create_dataset('stamp_ns', data=stamps).attrs['units'] = 'ns'
            d = f.create_dataset('clip_frame', data=[clip.frame_position(t) for t in time_s])
            d.attrs['description'] = 'fractional clip frame index (frame i at i / clip_fps)'
            d = f.create_dataset('observation', data=np.stack([s.observation for s in steps]))
            d.attrs['layout_json'] = json.dumps(contract['observation']['layout'])
            d = f.create_dataset('action', data=np.stack([s.action for s in steps]))
            d.attrs['actuator_names'] = np.array(contract['actuator_names'], dtype=strings)
            d.attrs['description'] = 'network output clipped to the contract action_clip'
            d = f.create_dataset('torque', data=np.stack([s.torques for s in steps]))
            d.attrs['units'] = 'N m'
            d.attrs['actuator_names'] = np.array(contract['actuator_names'], dtype=strings)

            ref = f.create_group('reference')
            ref.attrs['description'] = 'reference window the observation was built from'
            ref.create_dataset('root_pos', data=np.stack([s.ref_root_pos for s in steps]))
            ref.create_dataset('root_quat_wxyz',
                               data=np.stack([s.ref_root_quat for s in steps]))
            d = ref.create_dataset('joint_pos', data=np.stack([s.ref_joint_pos for s in steps]))
            d.attrs['units'] = 'rad'
            d.attrs['joint_names'] = np.array(contract['joint_names'], dtype=strings)
            ref.create_dataset('offsets_s', data=dt_s * np.arange(1, n_frames + 1))

            if qpos is not None:
                d = f.create_group('state').create_dataset('qpos', data=qpos)
                d.attrs['hinge_names'] = np.array(list(hinge_names or []), dtype=strings)
                d.attrs['description'] = ('sim pose: root position (m), quaternion (w, x, y, '
                                          'z), then hinge angles (rad) in hinge_names order')

            group = f.create_group('activations')
            group.attrs['description'] = 'hidden-layer activations, one dataset per layer'
            for layer in layers:
                values = np.stack([np.asarray(s.layers[layer], dtype=np.float32)
                                   for s in steps])
                group.create_dataset(layer, data=values, compression='gzip', compression_opts=4)

    atomic_write(path, write)


@dataclasses.dataclass
class ActivationRecording:
    """An activation file read back (see the module docstring for each array)."""

    path: str
    time_s: np.ndarray
    clip_frame: np.ndarray
    observation: np.ndarray
    action: np.ndarray
    torque: np.ndarray
    reference_root_pos: np.ndarray
    reference_root_quat: np.ndarray
    reference_joint_pos: np.ndarray
    reference_offsets_s: np.ndarray
    joint_names: list[str]
    actuator_names: list[str]
    layers: dict[str, np.ndarray]
    attrs: dict
    qpos: np.ndarray | None = None
    hinge_names: list[str] | None = None

    @property
    def n_steps(self) -> int:
        return int(self.time_s.shape[0])

    @property
    def parameters(self) -> dict:
        return json.loads(self.attrs.get('parameters', '{}'))

    @property
    def contract(self) -> dict:
        return json.loads(self.attrs.get('policy_contract', '{}'))


def _names(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def load_activations(path: str) -> ActivationRecording:
    """Reads a file written by `write_activations`.

    Raises:
        ActivationFileError: the file is missing, not HDF5, or not a vrat activation file.
    """
    import h5py
    if not os.path.isfile(path):
        raise ActivationFileError(f"activation file '{path}' does not exist")
    try:
        f = h5py.File(path, 'r')
    except OSError as exc:
        raise ActivationFileError(f"'{path}' is not a readable HDF5 file: {exc}") from exc
    with f:
        if f.attrs.get('format') != FORMAT:
            raise ActivationFileError(
                f"'{path}' is not a vrat activation file (format attribute "
                f"{f.attrs.get('format')!r}, expected '{FORMAT}')")
        attrs = {k: (v.tolist() if isinstance(v, np.ndarray) else v)
                 for k, v in f.attrs.items()}
        layer_names = _names(f.attrs['layers'])
        state = f.get('state/qpos')
        return ActivationRecording(
            path=path, time_s=f['time_s'][()], clip_frame=f['clip_frame'][()],
            observation=f['observation'][()], action=f['action'][()], torque=f['torque'][()],
            reference_root_pos=f['reference/root_pos'][()],
            reference_root_quat=f['reference/root_quat_wxyz'][()],
            reference_joint_pos=f['reference/joint_pos'][()],
            reference_offsets_s=f['reference/offsets_s'][()],
            joint_names=_names(f['reference/joint_pos'].attrs['joint_names']),
            actuator_names=_names(f['action'].attrs['actuator_names']),
            layers={name: f['activations'][name][()] for name in layer_names},
            attrs=attrs,
            qpos=None if state is None else state[()],
            hinge_names=None if state is None else _names(state.attrs['hinge_names']))
