"""Exports a trained policy to ONNX with the vrat contract, and checks it against torch.

The graph takes raw observations ('observation', [batch, obs_size] float32) and returns
the action ('action', [batch, nu], already clamped to [-1, 1]) plus one output per hidden
layer ('hidden_0', 'hidden_1', ...). Normalisation lives inside the graph.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings

import numpy as np
import numpy.typing as npt

from vrat_ros.clip import atomic_write
from vrat_ros.errors import VratError
from vrat_ros.policy import CONTRACT_KEY
from vrat_ros.policy import CONTRACT_VERSION
from vrat_ros.policy import validate_contract

INPUT_NAME = 'observation'
OUTPUT_NAME = 'action'
PARITY_TOLERANCE = 1e-5
ONNX_OPSET = 17


class ExportParityError(VratError):
    """The exported ONNX graph and the torch model disagree beyond the tolerance."""


def _training_block(ckpt: dict) -> dict:
    """Summarises how a checkpoint was trained (no dates, so exports are reproducible)."""
    config = ckpt['config']
    clips = []
    for path in config['clips']:
        entry = {'file': os.path.basename(path)}
        if os.path.isfile(path):
            from vrat_ros.clip import file_sha256
            entry['sha256'] = file_sha256(path)
        clips.append(entry)
    best = ckpt.get('best')
    return {
        'seed': int(config['seed']),
        'steps': int(ckpt['step']),
        'clips': clips,
        'data': dict(ckpt.get('data', {})),
        'selected_step': None if best is None else int(best['step']),
        'selected_by': 'closed-loop tracking on the training clip(s)',
        # RL fine-tuning (vrat_ros.rl): iterations run, and the one whose weights were kept
        # (None: the imitation weights were kept).
        'rl_iterations': int((ckpt.get('rl') or {}).get('iteration', 0)),
        'selected_rl_iteration': None if best is None else best.get('rl_iteration'),
        'config': {**config, 'clips': [c['file'] for c in clips]},
    }


def build_contract(interface: dict, n_hidden: int, extra: dict | None = None) -> dict:
    """Assembles and validates the full contract for a network with `n_hidden` layers."""
    contract = {
        'format_version': CONTRACT_VERSION,
        **interface,
        'input_name': INPUT_NAME,
        'output_name': OUTPUT_NAME,
        'layers': [f'hidden_{i}' for i in range(n_hidden)],
    }
    contract.update(extra or {})
    return validate_contract(contract)


def export_onnx(
    checkpoint_or_model,
    path: str,
    contract_extra: dict | None = None,
    parity_observations: npt.ArrayLike | None = None,
    interface: dict | None = None,
    which: str = 'best',
) -> dict:
    """Writes the policy as ONNX with its contract, after checking parity with torch.

    Args:
        checkpoint_or_model: a checkpoint path written by `train.train`, or a model from
            `train.make_model` (then `interface` is required).
        path: destination .onnx file; written atomically.
        contract_extra: entries merged into the contract (they override the defaults).
        parity_observations: (N, obs_size) raw observations to compare torch and
            onnxruntime on; None uses random observations around the model's normaliser.
        interface: the body-facing contract fields (`train.policy_interface`), when a
            model is given instead of a checkpoint.
        which: 'best' or 'latest' weights of a checkpoint.

    Returns:
        The contract written into the file.

    Raises:
        ExportParityError: torch and onnxruntime differ by more than 1e-5.
        ValueError: a model was given without an interface.
    """
    import torch

    from vrat_ros.train import load_checkpoint

    extra = {}
    if isinstance(checkpoint_or_model, (str, os.PathLike)):
        model, ckpt = load_checkpoint(str(checkpoint_or_model), which=which)
        interface = ckpt['interface']
        extra['training'] = _training_block(ckpt)
    else:
        model = checkpoint_or_model
        if interface is None:
            raise ValueError('export_onnx needs `interface` when given a model')
    extra.update(contract_extra or {})
    n_hidden = len(model.hidden)
    contract = build_contract(interface, n_hidden, extra)
    obs_size = int(contract['observation']['size'])
    model.eval()

    class _Graph(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, observation):
            action, hiddens = self.inner(observation)
            return (action, *hiddens)

    graph = _Graph(model)
    output_names = [OUTPUT_NAME] + list(contract['layers'])
    dynamic = {INPUT_NAME: {0: 'batch'}}
    dynamic.update({n: {0: 'batch'} for n in output_names})
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, 'raw.onnx')
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            torch.onnx.export(
                graph, (torch.zeros(2, obs_size),), raw, dynamo=False,
                input_names=[INPUT_NAME], output_names=output_names,
                dynamic_axes=dynamic, opset_version=ONNX_OPSET)
        import onnx
        proto = onnx.load(raw)
    entry = proto.metadata_props.add()
    entry.key = CONTRACT_KEY
    entry.value = json.dumps(contract, sort_keys=True)
    proto.producer_name = 'vrat_ros'
    onnx.checker.check_model(proto)

    # Parity: the serialised graph against the torch model, before the file is published.
    if parity_observations is None:
        rng = np.random.default_rng(0)
        mean = model.obs_mean.numpy()
        std = model.obs_std.numpy()
        parity_observations = mean + std * rng.standard_normal((64, obs_size))
    obs = np.asarray(parity_observations, dtype=np.float32).reshape(-1, obs_size)
    report = check_parity(model, proto.SerializeToString(), obs)
    if report['max_abs_diff'] > PARITY_TOLERANCE:
        raise ExportParityError(
            f"ONNX and torch outputs differ by {report['max_abs_diff']:.3g} on "
            f"'{report['worst_output']}' (tolerance {PARITY_TOLERANCE}); file not written")

    def write(tmp_path):
        onnx.save(proto, tmp_path)
    atomic_write(path, write)
    return contract


def check_parity(model, onnx_bytes: bytes, observations: np.ndarray) -> dict:
    """Compares torch and onnxruntime on `observations` (N, obs_size) float32.

    Returns:
        {'max_abs_diff': over the action and every hidden output, 'worst_output': name}.
    """
    import onnxruntime as ort
    import torch
    session = ort.InferenceSession(onnx_bytes, providers=['CPUExecutionProvider'])
    names = [o.name for o in session.get_outputs()]
    onnx_out = session.run(names, {INPUT_NAME: observations})
    with torch.no_grad():
        action, hiddens = model(torch.from_numpy(observations))
    torch_out = [action.numpy()] + [h.numpy() for h in hiddens]
    diffs = [float(np.max(np.abs(a - b))) if a.size else 0.0
             for a, b in zip(onnx_out, torch_out)]
    worst = int(np.argmax(diffs))
    return {'max_abs_diff': diffs[worst], 'worst_output': names[worst]}
