"""Paths of the files shipped inside the vrat_ros package (default clip, policy, marker sets).

The rat's defaults are the constants below; other robots name theirs in their robot file
(`defaults`, see vrat_ros/robots.py), resolved by the `robot_*` functions at the end.
"""

import importlib.resources

DEFAULT_CLIP = 'rat23_dannce_1000f.npz'
DEFAULT_POLICY = 'rat_inverse_dynamics.onnx'
# The shipped rat training clips: the DANNCE clip and the Rat7M frames 1000-2999 that lie at
# least 30 frames away from the held-out Rat7M walk (2010-2310) and rear (2460-2600).
# `vrat train`'s default config uses the DANNCE clip alone (the quick recipe); the shipped
# policy's config, config/train_rat.json, lists all of them.
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


def defaults_file(value: str) -> str:
    """A path from a robot file's `defaults`: absolute as given, else under vrat_ros/data/."""
    import os
    path = os.path.expanduser(str(value))
    return path if os.path.isabs(path) else data_path(*path.split('/'))


def robot_default_clip(spec, value: str | None = None) -> str | None:
    """The path of a robot's default clip (`defaults.clip`), or of `value` from its defaults.

    A value is a path under vrat_ros/data/ (or absolute) or a clip name that `vrat clips`
    lists; None when the robot file names no clip.
    """
    import os
    value = spec.default_clip if value is None else value
    if value is None:
        return None
    path = defaults_file(value)
    return path if os.path.exists(path) else resolve_clip_path(str(value))


def robot_default_policy(spec) -> str | None:
    """The path of a robot's default policy (`defaults.policy`; it may not exist), or None."""
    return None if spec.default_policy is None else defaults_file(spec.default_policy)


def robot_eval_clips(spec) -> list[str]:
    """The paths of a robot's held-out clips (`defaults.eval_clips`), as `vrat eval` takes."""
    return [robot_default_clip(spec, value) for value in spec.eval_clips]


def robot_policy_path(spec, given: str | None = None, hint: str = '') -> str:
    """The policy to run on a robot: `given`, else its `defaults.policy`; the file must exist.

    Args:
        spec: the robot's `vrat_ros.robots.RobotSpec`.
        given: a policy path the user gave (--policy), or None.
        hint: more ways out, appended to the message of a missing default policy.

    Raises:
        PolicyLoadError: (one line) the file is missing, or the robot names no default; the
            message says how to make one (`vrat train --robot NAME`).
    """
    import os
    from vrat_ros.errors import PolicyLoadError
    if given is not None:
        if not os.path.isfile(given):
            raise PolicyLoadError(f"policy file '{given}' does not exist")
        return given
    path = robot_default_policy(spec)
    train = f'`vrat train --robot {spec.name}`'
    if path is None:
        raise PolicyLoadError(f"robot '{spec.name}' names no default policy (defaults.policy "
                              f"in '{spec.path}'); give --policy FILE, e.g. a policy.onnx "
                              f'made by {train}{hint}')
    if not os.path.isfile(path):
        raise PolicyLoadError(f"robot '{spec.name}' has no trained policy yet: '{path}' does "
                              f'not exist; make one with {train} and copy its policy.onnx '
                              f'there, or give --policy FILE{hint}')
    return path


def launch_files(robot: str, clip_file: str = '', policy_file: str = '') -> tuple[str, str]:
    """The (clip, policy) files launch/sim.launch.py hands its nodes for a robot.

    A file given (non-empty) is kept (a clip name that `vrat clips` lists becomes its path);
    one left empty comes from the robot: the rat's shipped clip and policy for 'rat' (or the
    rat's robot file), else the robot file's `defaults.clip` and `defaults.policy`.

    Args:
        robot: the launch file's `robot` argument: a robot name or a robot YAML path.
        clip_file: the `clip_file` argument ('' when not given).
        policy_file: the `policy_file` argument ('' when not given).

    Raises:
        RobotSpecError: (one line) an unknown robot or a bad robot file.
        PolicyLoadError, ValueError: (one line) the robot names no default, or its default
            policy file does not exist; the message names the argument to give.
    """
    import os
    from vrat_ros.errors import PolicyLoadError
    from vrat_ros.robots import is_rat
    from vrat_ros.robots import load_robot_spec
    clip_file, policy_file = str(clip_file).strip(), str(policy_file).strip()
    if is_rat(robot):
        return (resolve_clip_path(clip_file) if clip_file else default_clip_path(),
                policy_file or default_policy_path())
    spec = load_robot_spec(robot)
    if clip_file:
        clip = resolve_clip_path(clip_file)
    else:
        clip = robot_default_clip(spec)
        if clip is None:
            raise ValueError(f"robot '{spec.name}' names no default clip (defaults.clip in "
                             f"'{spec.path}'); give clip_file:=FILE")
    if policy_file:
        return clip, policy_file
    policy = robot_default_policy(spec)
    if policy is None:
        raise PolicyLoadError(f"robot '{spec.name}' names no default policy (defaults.policy "
                              f"in '{spec.path}'); give policy_file:=FILE")
    if not os.path.isfile(policy):
        raise PolicyLoadError(f"robot '{spec.name}' has no trained policy yet: '{policy}' does "
                              f'not exist; make one with `vrat train --robot {spec.name}` and '
                              'copy its policy.onnx there, or give policy_file:=FILE')
    return clip, policy
