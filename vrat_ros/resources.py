"""Paths of the files shipped inside the vrat_ros package (default clip, policy, marker sets)."""

import importlib.resources

DEFAULT_CLIP = 'rat23_dannce_1000f.npz'
DEFAULT_POLICY = 'rat_inverse_dynamics.onnx'
# The shipped rat training clips: the DANNCE clip and the Rat7M frames 1000-2999 that lie at
# least 30 frames away from the held-out Rat7M walk (2010-2310) and rear (2460-2600).
# `vrat train`'s default config uses the DANNCE clip alone (it reproduces the shipped policy);
# list these in a --config to train on all of them.
TRAINING_CLIPS = ('rat23_dannce_1000f', 'rat7m_train_1000_1980', 'rat7m_train_2340_2430',
                  'rat7m_train_2630_3000')

# The held-out split: real Rat7M walking and rearing (20-marker motion capture, imported from
# spoonsso/dannce's demo_indices.mat; see each clip's meta). These clips are never used for
# training; `vrat eval` scores on them by default.
HELD_OUT_CLIPS = ('rat7m_walk_2010_2310', 'rat7m_rear_2460_2600')


# Folders of shipped clips under vrat_ros/data/: the rat's, then those of other robots.
SHIPPED_CLIP_FOLDERS = (('clips',), ('clips', 'quadruped'))


def data_path(*parts: str) -> str:
    """Returns the path of a file under vrat_ros/data/ (it may not exist)."""
    return str(importlib.resources.files('vrat_ros').joinpath('data', *parts))


def default_clip_path() -> str:
    """The shipped real-rat reference clip (IK fit of a DANNCE recording; see its meta)."""
    return data_path('clips', DEFAULT_CLIP)


def resolve_clip_path(name_or_path: str) -> str:
    """Returns a clip path for a file path, or for a name that `vrat clips` lists.

    A path that exists wins; otherwise `name` (with or without .npz) is looked up among the
    shipped clips, then in the imported-clips library. An unknown name is returned as given,
    so that loading it reports the missing file.
    """
    import os
    if os.path.exists(name_or_path):
        return name_or_path
    file_name = name_or_path if name_or_path.endswith('.npz') else name_or_path + '.npz'
    if os.sep in file_name:
        return name_or_path
    from vrat_ros.importers import clips_dir
    for folder in [data_path(*f) for f in SHIPPED_CLIP_FOLDERS] + [clips_dir()]:
        candidate = os.path.join(folder, file_name)
        if os.path.isfile(candidate):
            return candidate
    return name_or_path


def default_policy_path() -> str:
    """The shipped inverse-dynamics policy (ONNX with a vrat contract)."""
    return data_path('policies', DEFAULT_POLICY)
