"""Paths of the files shipped inside the vrat_ros package (default clip, policy, marker sets)."""

import importlib.resources

DEFAULT_CLIP = 'rat23_dannce_1000f.npz'
DEFAULT_POLICY = 'rat_inverse_dynamics.onnx'


def data_path(*parts: str) -> str:
    """Returns the path of a file under vrat_ros/data/ (it may not exist)."""
    return str(importlib.resources.files('vrat_ros').joinpath('data', *parts))


def default_clip_path() -> str:
    """The shipped real-rat reference clip (IK fit of a DANNCE recording; see its meta)."""
    return data_path('clips', DEFAULT_CLIP)


def default_policy_path() -> str:
    """The shipped inverse-dynamics policy (ONNX with a vrat contract)."""
    return data_path('policies', DEFAULT_POLICY)
