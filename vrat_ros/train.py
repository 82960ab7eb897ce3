"""Training the inverse-dynamics policy: rollouts, hindsight relabelling and an MLP fit.

Pipeline (all deterministic for a seed):
  1. Data, round 0: episodes in which a PD controller with per-actuator action noise
     tracks smooth random targets built around poses of the training clip(s) (time-warped
     playback plus low-frequency joint offsets).
  2. Hindsight relabelling: the states actually reached in the next K control steps form
     the reference window of each applied action. Extra examples teach the network to
     deal with accumulated error: windows offset by a constant root heading and horizontal
     position (no action can undo those within K steps, and the physics does not depend
     on them, so the label is kept) and by a constant joint-angle error, whose label adds
     a PD-like correction toward the offset (see `relabel`).
  3. Model: an MLP on standardised observations predicting standardised actions (MSE),
     with each action clamped to the range its training labels used.
  4. Closed-loop rounds: the best policy so far (chosen by tracking the clip(s) in closed
     loop, not by the loss) collects more episodes on perturbed targets, with action noise;
     these are relabelled the same way and added to the data, and training goes on. This
     fills the data with the states the policy itself visits.

Training clips: by default the DANNCE clip alone (the quick recipe, which made the earlier
shipped policy). Three Rat7M training clips ship beside it (frames 1000-2999 of the Rat7M
recording, at least 30 frames from the held-out walk and rear; resources.TRAINING_CLIPS,
`DEFAULT_TRAINING_CLIPS` here); list them under 'clips' in a --config file to train on them
too (an episode picks one clip at random). The shipped policy comes from
config/train_rat.json: those clips (the DANNCE clip twice) and, with 'mirror', their
left-right mirror images (vrat_ros.mirror), then the RL stage (see below).

Measured on this project's 2-core machine (shared with other jobs), held-out numbers from
`vrat eval` (2 Rat7M clips x 5 starts), default clip from start 0 to the end:
  * the shipped policy was trained on the DANNCE clip alone (the earlier default, 500 + 300
    episodes, 8000 steps, about 4.5 minutes): held-out tracked fraction 0.13, body error
    36.7 mm; default clip 1.00, 13.5 mm.
  * the default config with the Rat7M clips added, seed 0: 505 s; held-out 0.12, 33.0 mm;
    default clip 0.28, 69.8 mm (the chosen checkpoint, step 2000, fails there at 5.5 s).
  * 1200 PD episodes of 150 steps with PD wn 40-200 rad/s, 3 closed-loop rounds of 400
    episodes, 18000 steps: 1987 s; held-out 0.13, 35.1 mm; default clip 0.27, 62.6 mm.
  Neither replaced the shipped policy. Those Rat7M clips were kinematic fits whose poses mostly
  fall even when held still (see keypoint_fit), so PD data on them were mostly falls.
  * after the Rat7M clips were re-fitted with support (--support-weight 3; held-out tracked
    fraction of the shipped policy 0.13 -> 0.26, PD 0.30): the default config with the three
    re-fitted training clips added, seed 0: 258 s; held-out 0.31, 33.4 mm; default clip 0.94
    (fails at 18.7 s on torso height). Not shipped: it loses the end of the default clip for
    a held-out gain within the spread between checkpoints. With the DANNCE clip listed twice
    (half the episodes on it): 365 s; held-out 0.27; default clip 1.00 but 15.7 mm (shipped:
    13.5 mm). Not shipped either.
  * RL fine-tuning on the rat (`rl`, vrat_ros/rl.py; 32 environments, reward.root_m 0.05 for
    its 0.1 m limit, 4 s episodes) from the imitation run on the four training clips
    (8 s eval windows): with noise 0.3 x each actuator's label std (`init_std_of_labels`)
    the held-out tracked fraction went 0.29 -> 0.30, 0.32, 0.33, 0.36, 0.34 after 50, 100,
    150, 200, 250 iterations (about 2.5 s each; PD 0.30), training windows 0.47 -> 0.51;
    with the quadruped's flat 0.05 of the range the training windows fell to 0.24 in 300
    iterations (the noise drowns the spine motors' small commands).
  * the previous shipped policy (config/train_rat.json before the motor-joint reward): the
    default imitation recipe on the DANNCE clip (listed twice) and the three Rat7M training
    clips, then 1000 RL iterations as above (32 environments, 4 s episodes, reward.root_m
    0.05, init_std_of_labels 0.3; 8 s eval windows every 100 iterations): 6008 s in all
    (RL 5091 s, at 4.3-5.5 s an iteration while other jobs ran). Training-window tracked
    fraction 0.61 after imitation, 0.63-0.67 through iteration 900, 0.70 at 1000 (the one
    selected). Held-out tracked fraction (latest
    weights): 0.30 after 125 iterations, 0.36 after 225, 0.40 after 400 and 625; the selected
    iteration-1000 weights 0.36 (PD 0.30), the iteration-700 ones 0.37. Default clip: 1.00
    from 5 starts, body error 13.3 mm; but the joints with their own motor are tracked no
    better than PD (0.071 rad in `vrat run`, PD 0.069, the imitation-only policy 0.025): the
    joint reward (joints_rad2 0.05 on the mean squared error) is loose.
  * the previous shipped policy (config/train_rat.json without "mirror"): the same plus the
    RL reward term on the 30 joints with a motor of their own (weights.motor_joints 0.5,
    motor_joints_rad2 0.0025): 3048 s in all (data 80 s, imitation 87 s, RL 2642 s at
    about 2.5 s an iteration on an otherwise idle machine, evals 233 s). Training-window
    tracked fraction 0.60-0.64 from iteration 100 on, score best at 500 (selected). Held-out
    (latest weights): 0.34 after 275, 375 and 550 iterations, 0.36 after 775; the selected
    weights 0.34 with joint RMSE 0.130 rad and body error 38.1 mm (the previous policy 0.36,
    0.155, 46.7; PD 0.30, 0.114, 31.7). Default clip in `vrat run`: motor joints 0.028 rad
    (PD 0.069), body 14.0 mm, tracked 1.00 (also from 5 starts).
  * the same with rl.end_root_m 0.2 (RL episodes end 0.2 m from the reference root instead
    of 0.1 m, so they go on after the root falls behind): 2996 s; training windows 0.655 at
    iteration 400 (selected), then 0.63-0.64; held-out 0.35, joint RMSE 0.156 rad, body
    46.8 mm: no better. Not shipped.
  * the same config on the three Rat7M training clips re-fitted with `vrat import --gait`
    (paws that step instead of sliding; marker_sets.GaitFitter), stopped after about 450 of
    the 1000 RL iterations (~30 min): training windows (of the gait fits) 0.58-0.60; at
    iteration 400 the best / latest weights tracked 0.26 / 0.27 of the held-out clips
    re-fitted the same way and 0.30 / 0.32 of the shipped ones, where the previous shipped
    policy tracks 0.33 / 0.34 (the shipped run: 0.34 at 275). Not shipped. (A first run on gait
    fits whose feet could rise off the floor in stance: 0.28 / 0.29 at iteration 400.)
    On gait fits made without --smooth (paws carried at 0.13 of the root's speed instead
    of 0.35), stopped at iteration 375: the best weights (from iteration 100) / the
    latest 0.21 / 0.21 of the unsmoothed gait held-out clips, 0.26 / 0.28 of the shipped
    ones. Not shipped.
  * the shipped policy (config/train_rat.json): the previous shipped policy's config plus
    `mirror` (data collection and RL also on each training clip's left-right mirror image,
    vrat_ros.mirror): 2952 s in all (data 75 s, imitation 93 s, RL 2556 s, evals 223 s).
    Training-window tracked fraction 0.53 after imitation, 0.60-0.64 from RL iteration 100
    on, score best at 800 (selected). Held-out (latest weights, 5 starts): 0.33 after 335
    iterations, 0.34 after 575; the selected weights 0.39 with joint RMSE 0.127 rad, body
    error 38.4 mm, root 32.3 mm. With 20 starts per clip: 0.47 against the previous
    policy's 0.43 (walk 0.40 both, rear 0.53 and 0.45; PD 0.35), joint RMSE 0.122 both,
    body 41.4 and 39.1 mm. Default clip in `vrat run`: motor joints 0.029 rad, body
    13.8 mm, tracked 1.00.
  * the sampling MPC (vrat_ros.mpc, `RAT_SETTINGS`), which a rat config may name as `expert`,
    tracks 0.51 of the held-out clips (PD 0.30): it keeps the rat upright but loses the root
    where the reference walks or rears. At about 1 s per control step on two threads it
    labels about 3,600 steps an hour here. A policy started from it, as the shipped
    quadruped one is (config/train_rat.json without "mirror", plus "expert": {"kind":
    "mpc", "mpc": {"threads": 1}}, 48 round-0 episodes of 100 steps (39 min of MPC on 2
    workers), no DAgger round, relabel.expert_hindsight): after imitation the training windows were
    tracked 0.49-0.54 but with joint RMSE 0.38-0.42 rad and validation loss 2.2-2.4 (the
    PD-data imitation: 0.61), held-out 0.22 with action change 0.18; RL made it worse
    (training windows 0.47 at iteration 100, 0.43 at 200; held-out 0.21 at 250), so the run
    was stopped. 4,800 MPC steps are too few to imitate, and RL does not repair that start.

Robots (`--robot`, vrat_ros.robots): the same steps on a robot's shipped training clips, with
the robot's own command interface (`RobotActions`: a position robot's actions are targets about
its standing pose, collected in round 0 by its own PD law) and larger root offsets in the
relabelled windows (`_robot_overrides`), then an RL stage (`rl`, vrat_ros/rl.py: PPO on the
tracking task, 600 iterations). Imitation alone tracks no better than PD on the quadruped
(held-out 0.11 both): following the reference joints, the body walks and turns far less than
the reference trunk and loses it within seconds, and data collected around PD cannot teach it
to walk better. The RL stage rewards keeping the trunk on the reference, and episodes end where
`vrat eval` stops counting; from the PD-data start it lifts the held-out tracked fraction to
0.37 (about 15 minutes in all here).

The shipped quadruped policy starts from an expert instead (`--config
config/train_quadruped.json`): the sampling MPC of vrat_ros.mpc, which keeps the trunk on the
reference (4 of 5 held-out starts tracked to the end), drives 200 round-0 episodes; each step
gives its own label (the MPC's command for the reference window) and, with
`relabel.expert_hindsight`, a hindsight example (the states it reached, the command applied),
on a 10-frame window; then 1000 RL iterations. See README.md, "Training a robot", for the
numbers and the time.

Expert imitation without RL (the opt-in `expert`, e.g. `config/train_mpc_expert.json` with
DAgger rounds and a residual action, `model.residual`) did not beat PD. Measured here (2 cores,
round 0 unless said; tracked fraction on the training clips' 8 s windows / on the held-out
clip; PD 0.52 / 0.11): warm-started MPC labels, 5 frames, 64 + 2 x 64 episodes: 0.65 / 0.16;
200 episodes and 10 frames: 0.64 / 0.13, with the residual action 0.66 / 0.13; cold-started
labels (4 iterations from the reference): 0.55 / 0.11, with fixed noise 0.55 / 0.12. The MPC's
command is a sharp, noisy function of the state (validation loss 0.8-1.3 of the label
variance), so imitation averages it into a controller that loses the root like PD; the RL stage
is what closes that gap.
See README.md, "Training a robot".

Every episode has its own seed derived from the main seed, its round and its index, so the
data do not depend on how the worker processes share the work. Torch is imported inside
the functions that need it; the data-generation workers never use it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import time

import mujoco
import numpy as np
import numpy.typing as npt

from vrat_ros import rat_constants as rc
from vrat_ros.clip import atomic_write
from vrat_ros.clip import Clip
from vrat_ros.clip import file_sha256
from vrat_ros.controllers import ActuatorKinematics
from vrat_ros.controllers import effective_inertia
from vrat_ros.controllers import observation_from_state
from vrat_ros.controllers import pd_gains
from vrat_ros.controllers import PolicyController
from vrat_ros.errors import ClipError
from vrat_ros.errors import VratError
from vrat_ros.kinematics import quat_conj
from vrat_ros.kinematics import quat_mul
from vrat_ros.kinematics import quat_to_mat
from vrat_ros.observation import observation_layout
from vrat_ros.observation import observation_size
from vrat_ros.rat_model import RatBody
from vrat_ros.rollout import run_inline
from vrat_ros.resources import data_path
from vrat_ros.resources import default_clip_path
from vrat_ros.resources import TRAINING_CLIPS
from vrat_ros.tracking import tracking_limits

_LOG = logging.getLogger(__name__)

DEFAULT_CLIP = default_clip_path()
# The shipped training clips (never the held-out ones, see resources.HELD_OUT_CLIPS).
DEFAULT_TRAINING_CLIPS = [data_path('clips', name + '.npz') for name in TRAINING_CLIPS]
CHECKPOINT_NAME = 'checkpoint.pt'
POLICY_NAME = 'policy.onnx'
SUMMARY_NAME = 'summary.json'

# Frequency at which the action noise is expressed as an equivalent joint-angle error.
_NOISE_WN_RAD_S = 150.0
# Episodes stop once the torso is this low: the rat has fallen and the data would be useless.
_FALLEN_TORSO_Z_M = 0.025
# Episodes handed to a worker process at a time.
_CHUNK = 4
# Longest episode accepted (control steps; 2000 s at 50 Hz): the generator builds the whole
# target trajectory up front, so a mistyped length would run silently for hours.
MAX_EPISODE_STEPS = 100_000
# Settings whose default is a number but that also accept None (see default_config).
_NULLABLE = {'model.action_bound_quantile', 'train.ema_decay', 'eval.seconds'}
# Settings added later, which older configuration files lack (their default then applies).
_OPTIONAL = {'model.residual', 'relabel.expert_hindsight', 'mirror'}


def default_config(small: bool = False, robot: str = 'rat') -> dict:
    """Returns the training configuration (a JSON-friendly dict).

    Args:
        small: a quick configuration for CI (well under 2 minutes on 2 cores); the
            default one takes about 5-10 minutes.
        robot: 'rat' (the torque rat, `RatBody`), or a robot name or YAML path of
            vrat_ros.robots; for those the clips default to the robot's shipped training
            clips and the settings to `_robot_overrides`.

    Returns:
        {'seed', 'robot', 'clips', 'body', 'data', 'rounds', 'relabel', 'model', 'train',
        'eval'}; the comments in the code describe each setting.
    """
    config = {
        'seed': 0,
        'robot': 'rat',                   # 'rat', or a robot of vrat_ros.robots
        'clips': [DEFAULT_CLIP],          # training clips (.npz, see clip.py)
        # Also train on each clip's left-right mirror image (vrat_ros.mirror): data
        # collection and RL use both; the closed-loop evaluations the originals only.
        'mirror': False,
        'body': {'scale': rc.DEFAULT_BODY_SCALE},
        'data': {                         # round 0: PD data collection
            'n_episodes': 500,
            'episode_steps': 250,          # control steps per episode (50 Hz)
            'n_workers': 2,                # processes; the data do not depend on it
            'speed_range': [0.5, 1.5],     # playback speed of the clip in an episode
            'reverse_prob': 0.3,           # share of episodes that play the clip backwards
            'target_noise_rad': 0.2,       # max amplitude of the smooth joint offsets
            'target_noise_smooth_s': 0.15,  # Gaussian smoothing width of those offsets
            'init_joint_noise_rad': 0.03,  # start pose perturbation
            'pd_wn_range': [100.0, 200.0],  # PD natural frequency, drawn per episode
            'pd_zeta': 0.25,
            'action_noise_rad': 0.1,       # max per-episode action noise (equivalent rad)
            'action_noise_corr': 0.7,      # step-to-step correlation of that noise
        },
        'rounds': {                       # closed-loop rounds after round 0
            'count': 1,
            'n_episodes': 300,
            'steps': 4000,                 # training steps after each round
            # Collection settings that differ from 'data' (the policy replaces the PD).
            'data': {'speed_range': [0.7, 1.3], 'reverse_prob': 0.0,
                     'target_noise_rad': 0.1, 'action_noise_rad': 0.05},
        },
        'relabel': {
            'frames': rc.REFERENCE_WINDOW_FRAMES,
            'offset_fraction': 1.0,        # extra examples with an offset window, per example
            'offset_pos_m': [0.02, 0.02, 0.0],  # std of the root offset (x, y, z)
            'offset_yaw_rad': 0.1,         # std of the heading offset
            'offset_joint_rad': 0.2,       # max std of the joint offsets
            'offset_feedback_wn_rad_s': 225.0,  # PD frequency of the label's correction
            'val_fraction': 0.05,          # share of each round's episodes held out
            # With an expert: also relabel its episodes in hindsight (the states it reached
            # as the window, the action applied), beside its own labels.
            'expert_hindsight': False,
        },
        'model': {
            'hidden': [512, 512, 512],
            'activation': 'elu',
            'std_floor': 1e-3,             # smallest standard deviation of the normalisers
            # Clamp each action to the [q, 1 - q] quantiles of its round-0 training labels,
            # widened by `margin` times that range (None: only [-1, 1]).
            'action_bound_quantile': 0.0005,
            'action_bound_margin': 0.25,
            # Position robots: learn the departure from the next reference frame's joint
            # angles instead of the whole target (see make_model).
            'residual': False,
        },
        'train': {
            'steps': 4000,                 # round-0 steps; each round adds rounds.steps
            'batch_size': 256,
            'lr': 1e-3,
            'lr_final': 2e-5,              # cosine decay to this within each round
            'weight_decay': 0.0,
            'ema_decay': None,             # e.g. 0.999: evaluate an average of the weights
            'threads': 2,
            'checkpoint_every': 1000,
            'log_every': 200,
        },
        # A controller whose actions label the data instead of hindsight (None: hindsight
        # relabelling only), e.g. {'kind': 'mpc', 'mpc': {...}} for a position robot: see
        # `expert_settings`.
        'expert': None,
        # PPO fine-tuning after imitation (None: none), e.g. {'iterations': 600}. Settings
        # and defaults: vrat_ros.rl.DEFAULT_RL.
        'rl': None,
        'eval': {
            'every': 1000,                 # closed-loop evaluation period (0: end of rounds)
            'starts_s': [0.0, 5.0, 10.0, 15.0],
            'seconds': None,               # None: run to the end of the clip
        },
    }
    if small:
        config['data'].update({'n_episodes': 24, 'episode_steps': 100})
        config['rounds'].update({'count': 1, 'n_episodes': 8, 'steps': 200})
        config['model']['hidden'] = [128, 128]
        config['train'].update({'steps': 400, 'batch_size': 128, 'checkpoint_every': 200,
                                'log_every': 100})
        config['eval'].update({'every': 200, 'starts_s': [0.0], 'seconds': 2.0})
    if robot != 'rat':
        _robot_overrides(config, str(robot), small)
    return config


def robot_training_clips(robot: str) -> list[str]:
    """The shipped training clips of a robot: data/clips/<name>/<name>_train_*.npz."""
    import glob
    from vrat_ros.robots import load_robot_spec
    try:
        name = load_robot_spec(robot).name  # a YAML path of a known robot finds its clips
    except VratError:
        name = os.path.splitext(os.path.basename(str(robot)))[0]
    return sorted(glob.glob(data_path('clips', name, f'{name}_train_*.npz')))


def _robot_overrides(config: dict, robot: str, small: bool) -> None:
    """Settings for a robot of vrat_ros.robots (see the quadruped numbers in the docstring).

    Position-interface robots take joint targets, so the PD that collects round 0 is the
    robot's own (pd_wn_range and pd_zeta are not used) and the action noise is in radians of
    target. The root offsets of the relabelled windows are larger than the rat's (a bigger
    body, and a floating base that drifts further).
    """
    config['robot'] = robot
    config['clips'] = robot_training_clips(robot)
    config['body'] = {'scale': 1.0}   # not used: the robot file's own scale
    config['data'].update({
        'n_episodes': 400, 'episode_steps': 150, 'speed_range': [0.7, 1.3],
        'reverse_prob': 0.0, 'target_noise_rad': 0.15, 'target_noise_smooth_s': 0.3,
        'init_joint_noise_rad': 0.02, 'action_noise_rad': 0.15, 'action_noise_corr': 0.9})
    config['rounds'].update({'count': 1, 'n_episodes': 200, 'steps': 3000})
    config['rounds']['data'] = {'target_noise_rad': 0.1, 'action_noise_rad': 0.05}
    config['relabel'].update({'offset_fraction': 2.0, 'offset_pos_m': [0.2, 0.2, 0.0],
                              'offset_yaw_rad': 0.3, 'offset_joint_rad': 0.05})
    config['train'].update({'steps': 4000, 'batch_size': 1024})
    config['eval'].update({'every': 1000, 'starts_s': [0.0, 4.0, 8.0, 12.0],
                           'seconds': 8.0})
    if _rl_supported(robot):
        # Imitation follows the reference joints and loses the trunk like PD; PPO on the
        # tracking task itself teaches the policy to keep it (see vrat_ros/rl.py).
        config['rl'] = {'iterations': 600}
    if small:
        config['data'].update({'n_episodes': 16, 'episode_steps': 60})
        config['rounds'].update({'count': 1, 'n_episodes': 4, 'steps': 100})
        config['train'].update({'steps': 200, 'batch_size': 128})
        config['eval'].update({'every': 100, 'starts_s': [0.0], 'seconds': 1.0})
        if config['rl'] is not None:
            config['rl'] = {'iterations': 2, 'envs': 8, 'steps_per_iteration': 16,
                            'value_warmup': 1, 'eval_every': 2, 'log_every': 1}


def _rl_supported(robot: str) -> bool:
    """Whether RL fine-tuning can step a robot (False if its file or model is unusable)."""
    from vrat_ros.rl import unsupported_reason
    from vrat_ros.robots import Robot
    try:
        return unsupported_reason(Robot(robot)) is None
    except VratError:
        return False


def _fill_later_settings(config: dict) -> None:
    """Gives a configuration from an older version the defaults of settings added since."""
    config.setdefault('robot', 'rat')     # robots became trainable
    config.setdefault('expert', None)     # experts
    config.setdefault('rl', None)         # RL fine-tuning
    config['model'].setdefault('residual', False)  # residual models (see _OPTIONAL)
    config['relabel'].setdefault('expert_hindsight', False)
    config.setdefault('mirror', False)    # mirrored clips


def _takes_positions(robot: str) -> bool:
    """Whether a robot's file gives the 'position' command interface (False if unreadable)."""
    from vrat_ros.robots import load_robot_spec
    try:
        return load_robot_spec(robot).command_interface == 'position'
    except VratError:
        return False


def expert_settings(config: dict):
    """The `vrat_ros.mpc.MPCSettings` of a configuration's expert, or None without one.

    config['expert'] is None or {'kind': 'mpc', 'mpc': {MPCSettings fields}}; an expert
    needs the rat or a robot with the 'position' interface. Fields left out (and weights
    left out of 'weights') take the `MPCSettings` defaults or, on the rat, those of
    `vrat_ros.mpc.RAT_SETTINGS`.

    Raises:
        ValueError: a malformed expert section, or an expert for a body it cannot drive.
    """
    expert = config.get('expert')
    if expert is None:
        return None
    if isinstance(expert, dict) and 'kind' in expert and expert['kind'] != 'mpc':
        raise ValueError(f"setting 'expert.kind': unknown expert {expert['kind']!r}; known: mpc")
    if not isinstance(expert, dict) or expert.get('kind') != 'mpc' or set(expert) != {
            'kind', 'mpc'} or not isinstance(expert['mpc'], dict):
        raise ValueError("setting 'expert' should be null or {kind: mpc, mpc: {settings}}: "
                         f'got {expert!r}')
    from vrat_ros.mpc import MPCSettings
    from vrat_ros.mpc import RAT_SETTINGS
    values = dict(expert['mpc'])
    where = "setting 'expert.mpc'"
    defaults = MPCSettings().as_dict()
    if robot_of(config) == 'rat':
        defaults = RAT_SETTINGS.as_dict()
        where += ' (with vrat_ros.mpc.RAT_SETTINGS for the fields it leaves out)'
    if isinstance(values.get('weights'), dict):  # weights merge key by key too
        values['weights'] = {**defaults['weights'], **values['weights']}
    values = {**defaults, **values}
    try:
        settings = MPCSettings.from_dict(values)
    except (TypeError, ValueError) as exc:
        raise ValueError(f'{where}: {exc}') from None
    if robot_of(config) != 'rat' and not _takes_positions(robot_of(config)):
        raise ValueError("setting 'expert' (the sampling MPC) needs the rat or a robot with "
                         f"the 'position' interface; '{robot_of(config)}' has none")
    return settings


def _record_expert(config: dict) -> None:
    """Writes every field of a rat expert's settings into config['expert'], in place.

    The rat's expert fills what a config leaves out from `RAT_SETTINGS`, which is code:
    with every field recorded, the checkpoint, the data hash and the policy's contract say
    what ran, and a resume after RAT_SETTINGS changed is refused as a different config.
    A robot's expert is kept as written (the shipped quadruped policy records it so).
    """
    if robot_of(config) == 'rat' and config.get('expert') is not None:
        config['expert'] = {'kind': 'mpc', 'mpc': expert_settings(config).as_dict()}


def _family(value) -> str:
    """The type family of a configuration value: number, int, str, list, dict or None."""
    if value is None:
        return 'null'
    if isinstance(value, bool):
        return 'bool'
    if isinstance(value, int):
        return 'int'
    if isinstance(value, float):
        return 'float'
    return {str: 'str', list: 'list', dict: 'dict'}.get(type(value), type(value).__name__)


_FAMILY_WORDS = {'int': 'an integer', 'float': 'a number', 'str': 'a string', 'list': 'a list',
                 'dict': 'a mapping of settings', 'null': 'null', 'bool': 'true or false'}


def _check_value(name: str, value, default) -> None:
    """Refuses `value` unless its type family matches `default`'s (ints pass as floats)."""
    want, got = _family(default), _family(value)
    if want == 'null' or (got == 'null' and name in _NULLABLE):
        if got not in ('null', 'int', 'float'):
            raise ValueError(f"setting '{name}' should be a number or null: got {value!r}")
        return
    if got == want or (want == 'float' and got == 'int'):
        if want == 'list' and default:
            for i, item in enumerate(value):
                _check_value(f'{name}[{i}]', item, default[0])
        return
    raise ValueError(f"setting '{name}' should be {_FAMILY_WORDS.get(want, want)}: got "
                     f'{value!r} ({type(value).__name__})')


def _check_section(prefix: str, section, template: dict, data_template: dict,
                   partial: bool = False) -> None:
    if not isinstance(section, dict):
        raise ValueError(f"setting '{prefix or 'config'}' should be a mapping of settings: "
                         f'got {section!r} ({type(section).__name__})')
    for key in section:
        if key not in template:
            where = f" in '{prefix}'" if prefix else ''
            raise ValueError(f"unknown training setting '{key}'{where}; known: "
                             f'{sorted(template)}')
    for key in template:
        name = f'{prefix}.{key}' if prefix else key
        if key not in section:
            if partial or name in _OPTIONAL:
                continue
            raise ValueError(f"setting '{name}' is missing")
        if name == 'rounds.data':  # overrides of any of data's settings
            _check_section(name, section[key], data_template, data_template, partial=True)
        elif isinstance(template[key], dict):
            _check_section(name, section[key], template[key], data_template)
        else:
            _check_value(name, section[key], template[key])


def _check_episode_settings(cfg: dict, section: str) -> None:
    steps = cfg['episode_steps']
    if not isinstance(steps, int) or isinstance(steps, bool) or not \
            1 <= steps <= MAX_EPISODE_STEPS:
        raise ValueError(f"setting '{section}.episode_steps' should be an integer from 1 to "
                         f'{MAX_EPISODE_STEPS}: got {steps!r}')


def validate_config(config: dict) -> None:
    """Checks a training configuration before any work is done.

    Every setting of `default_config()` must be present with a value of the same type
    family (int, float, str, list, dict; an int passes where a float is expected, and the
    settings documented as optional may be null), the episode length must lie within
    1..MAX_EPISODE_STEPS and numbers within their ranges (`_RANGES`: counts positive,
    probabilities and fractions in [0, 1], noise levels not negative, rates above 0).

    Args:
        config: a configuration shaped like `default_config()`.

    Raises:
        ValueError: naming the first setting that is wrong.
    """
    robot = config.get('robot', 'rat') if isinstance(config, dict) else 'rat'
    if not isinstance(robot, str) or not robot:
        raise ValueError(f"setting 'robot' should be 'rat' or a robot name: got {robot!r}")
    template = default_config()
    template['robot'] = robot
    if not isinstance(config, dict):
        raise ValueError(f'the configuration should be a mapping of settings: got {config!r}')
    expert, rl_section = config.get('expert'), config.get('rl')
    config = {k: v for k, v in config.items() if k not in ('expert', 'rl')}
    template.pop('expert')
    template.pop('rl')
    _check_section('', config, template, template['data'])
    expert_settings({**config, 'expert': expert})
    from vrat_ros.rl import validate_section
    validate_section(rl_section)
    if config['model'].get('residual') and (robot == 'rat' or not _takes_positions(robot)):
        raise ValueError("setting 'model.residual' needs a robot with the 'position' "
                         f"interface; '{robot}' has none")
    _check_episode_settings(config['data'], 'data')
    if 'episode_steps' in config['rounds']['data']:
        _check_episode_settings(config['rounds']['data'], 'rounds.data')
    _check_ranges(config)
    if not config['clips']:
        raise ValueError("setting 'clips' should name at least one training clip")
    if not config['model']['hidden']:
        raise ValueError("setting 'model.hidden' should give at least one hidden layer size")


# Allowed ranges of numeric settings: (low, high, low inclusive). Settings of 'rounds.data'
# follow those of 'data'. A list setting applies the range to each item.
_RANGES = {
    'data.n_episodes': (1, None, True), 'data.n_workers': (1, None, True),
    'data.speed_range': (0.0, None, False), 'data.reverse_prob': (0.0, 1.0, True),
    'data.target_noise_rad': (0.0, None, True), 'data.target_noise_smooth_s': (0.0, None, True),
    'data.init_joint_noise_rad': (0.0, None, True), 'data.pd_wn_range': (0.0, None, False),
    'data.pd_zeta': (0.0, None, True), 'data.action_noise_rad': (0.0, None, True),
    'data.action_noise_corr': (0.0, 1.0, True),
    'rounds.count': (0, None, True), 'rounds.n_episodes': (1, None, True),
    'rounds.steps': (0, None, True),
    'relabel.frames': (1, None, True), 'relabel.offset_fraction': (0.0, None, True),
    'relabel.offset_pos_m': (0.0, None, True), 'relabel.offset_yaw_rad': (0.0, None, True),
    'relabel.offset_joint_rad': (0.0, None, True),
    'relabel.offset_feedback_wn_rad_s': (0.0, None, True),
    'relabel.val_fraction': (0.0, 1.0, True),
    'model.hidden': (1, None, True), 'model.std_floor': (0.0, None, False),
    'model.action_bound_quantile': (0.0, 0.5, True),
    'model.action_bound_margin': (0.0, None, True),
    'train.steps': (1, None, True), 'train.batch_size': (1, None, True),
    'train.lr': (0.0, None, False), 'train.lr_final': (0.0, None, True),
    'train.weight_decay': (0.0, None, True), 'train.ema_decay': (0.0, 1.0, True),
    'train.threads': (1, None, True), 'train.checkpoint_every': (1, None, True),
    'train.log_every': (1, None, True), 'eval.every': (0, None, True),
    'eval.starts_s': (0.0, None, True), 'eval.seconds': (0.0, None, False),
}


def _check_ranges(config: dict) -> None:
    """Refuses numeric settings outside `_RANGES` (e.g. a negative learning rate)."""
    values = []
    for name in _RANGES:
        section, key = name.split('.')
        values.append((name, config[section][key]))
        if section == 'data' and key in config['rounds']['data']:
            values.append((f'rounds.data.{key}', config['rounds']['data'][key]))
    for name, value in values:
        low, high, inclusive = _RANGES[name.replace('rounds.data.', 'data.')]
        for item in (value if isinstance(value, list) else [value]):
            if item is None:
                continue
            bad = (not np.isfinite(item) or (inclusive and item < low)
                   or (not inclusive and item <= low) or (high is not None and item > high))
            if bad:
                span = (f"{'>=' if inclusive else '>'} {low}" if high is None
                        else f'in [{low}, {high}]')
                raise ValueError(f"setting '{name}' should be {span}: got {value!r}")
    for name in ('data.speed_range', 'data.pd_wn_range'):
        section, key = name.split('.')
        if len(config[section][key]) != 2 or config[section][key][0] > config[section][key][1]:
            raise ValueError(f"setting '{name}' should be [low, high] with low <= high: got "
                             f'{config[section][key]!r}')


def robot_of(config: dict) -> str:
    """The body a configuration trains: 'rat' or a robot of vrat_ros.robots."""
    return str(config.get('robot', 'rat'))


def make_body(config: dict):
    """The body of a configuration: a `RatBody`, or a `vrat_ros.robots.Robot`."""
    if robot_of(config) == 'rat':
        return RatBody(scale=config['body']['scale'])
    from vrat_ros.robots import Robot
    return Robot(robot_of(config))


def observed_joints(body) -> np.ndarray:
    """Hinge indices the policy observes: the rat's tracked ones, every joint of a robot."""
    if isinstance(body, RatBody):
        return np.asarray(body.tracked_hinge_idx)
    return np.arange(len(body.joint_names))


def require_torch() -> None:
    """Raises a one-line VratError when PyTorch (the `train` extra) is not importable."""
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise VratError(f"training needs PyTorch, which is not installed ({exc}); install "
                        "it with pip install -e '.[train]'") from None


def _config_hash(section) -> str:
    return hashlib.sha256(json.dumps(section, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Observations in batches.


def batch_observations(
    qpos: np.ndarray,
    qvel: np.ndarray,
    windows: np.ndarray,
    joint_idx: npt.ArrayLike,
) -> np.ndarray:
    """Vectorised `build_observation` for many states at once.

    Args:
        qpos: (N, nq) states; qvel: (N, nv) velocities (MuJoCo conventions).
        windows: (N, K, nq) reference poses of the next K control steps.
        joint_idx: (J,) hinge indices the observation reads.

    Returns:
        (N, observation_size(J, K)) float32, equal to `build_observation` row by row.
    """
    idx = 7 + np.asarray(joint_idx)
    rot = quat_to_mat(qpos[:, 3:7])                                  # (N, 3, 3) world from root
    pos_err = np.einsum('nki,nij->nkj', windows[:, :, :3] - qpos[:, None, :3], rot)
    rel = quat_mul(quat_conj(qpos[:, None, 3:7]), windows[:, :, 3:7])
    rel = np.where(rel[..., :1] < 0, -rel, rel)
    joint_err = windows[:, :, idx] - qpos[:, None, idx]
    per_frame = np.concatenate([pos_err, rel, joint_err], axis=2).reshape(len(qpos), -1)
    return np.concatenate([
        qpos[:, 2:3],
        -rot[:, 2, :],                                               # R^T (0, 0, -1)
        qpos[:, idx],
        qvel[:, 6 + np.asarray(joint_idx)],
        np.einsum('nij,ni->nj', rot, qvel[:, :3]),                   # R^T v
        qvel[:, 3:6],
        per_frame,
    ], axis=1).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# A numpy copy of the network, for the data-collection workers.


def numpy_policy(state: dict, activation: str):
    """Returns f(obs (N, D)) -> actions (N, nu) computing the model of `state` in numpy.

    Args:
        state: the model's state dict as numpy arrays.
        activation: the model's activation name.
    """
    n_hidden = len([k for k in state if k.startswith('hidden.') and k.endswith('.weight')])
    layers = [(state[f'hidden.{i}.weight'], state[f'hidden.{i}.bias']) for i in range(n_hidden)]
    acts = {'elu': lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
            'relu': lambda x: np.maximum(x, 0.0), 'tanh': np.tanh,
            'silu': lambda x: x / (1.0 + np.exp(-x))}
    act = acts[activation]

    residual = float(np.asarray(state.get('residual_on', 0.0))) > 0.5

    def forward(obs: np.ndarray) -> np.ndarray:
        x = (obs - state['obs_mean']) / state['obs_std']
        for w, b in layers:
            x = act(x @ w.T + b)
        y = (x @ state['head.weight'].T + state['head.bias']) * state['act_std']
        y = y + state['act_mean']
        if residual:
            pos = state['base_pos_idx'].astype(np.int64)
            err = state['base_err_idx'].astype(np.int64)
            y = y + (obs[:, pos] + obs[:, err] - state['base_offset']) / state['base_scale']
        return np.clip(y, state['act_lo'], state['act_hi'])
    return forward


# ---------------------------------------------------------------------------------------------
# Data generation.


def _reflect(t: np.ndarray, duration: float) -> np.ndarray:
    """Folds times into [0, duration] by bouncing off both ends (ping-pong playback)."""
    period = 2.0 * duration
    t = np.mod(t, period)
    return np.where(t > duration, period - t, t)


def _smooth_noise(rng: np.random.Generator, n: int, width: int,
                  sigma_steps: float) -> np.ndarray:
    """Returns (n, width) low-pass Gaussian noise with unit standard deviation per column."""
    from scipy.ndimage import gaussian_filter1d
    pad = int(4 * sigma_steps) + 1
    white = rng.standard_normal((n + 2 * pad, width))
    smooth = gaussian_filter1d(white, sigma_steps, axis=0, mode='wrap')[pad:pad + n]
    radius = int(4.0 * sigma_steps + 0.5)
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (x / sigma_steps) ** 2)
    kernel /= kernel.sum()
    return smooth / np.sqrt(np.sum(kernel ** 2))


def _collect(body, rng: np.random.Generator, cfg: dict, target: np.ndarray, n_steps: int,
             k: int, joint_idx, policy, pd, noise_gain: np.ndarray, apply, fallen,
             expert=None) -> dict:
    """Runs one collection episode on any body (the loop shared by the rat and the robots).

    Each control step takes the policy's action on the next k targets (or `pd(step, q, v)`
    without a policy; or, with an `expert(step)` and no policy, the expert's action), adds
    correlated noise (`noise_gain` x a per-episode level drawn up to
    cfg['action_noise_rad'], correlation cfg['action_noise_corr']), clips it to [-1, 1] and
    `apply`s it; the episode ends early when MuJoCo flags bad accelerations, the state is no
    longer finite, or `fallen()`. With an expert, its action at each state (before any noise)
    is kept as that step's label, with the k targets it was asked for, and the episode also
    ends once the root is twice the body's tracking limit from its target (an expert's
    labels far from its targets teach little).

    Returns:
        {'qpos': (T+1, nq), 'qvel': (T+1, nv), 'ctrl': (T, nu)}: the states and the actions;
        with an expert also 'label' (T, nu) and 'window' (T, k, nq).
    """
    root_limit = tracking_limits(body)['root_dist_m']
    noise_std = rng.uniform(0.0, cfg['action_noise_rad'])
    rho = cfg['action_noise_corr']
    noise = noise_std * rng.standard_normal(body.nu)
    states_q, states_v, ctrls, labels = [body.data.qpos.copy()], [body.data.qvel.copy()], [], []
    for step in range(n_steps):
        q, v = body.data.qpos, body.data.qvel
        label = None if expert is None else expert(step)
        if policy is not None:
            obs = observation_from_state(q, v, target[step + 1:step + 1 + k], joint_idx)
            ctrl = policy(obs[None, :].astype(np.float64))[0]
        else:
            ctrl = pd(step, q, v) if label is None else label
        ctrl = np.clip(ctrl + noise_gain * noise, -1.0, 1.0)
        noise = rho * noise + np.sqrt(1.0 - rho ** 2) * noise_std * rng.standard_normal(body.nu)
        apply(ctrl)
        if (body.data.warning[mujoco.mjtWarning.mjWARN_BADQACC].number > 0
                or not np.all(np.isfinite(body.data.qpos))
                or not np.all(np.isfinite(body.data.qvel))):
            break
        states_q.append(body.data.qpos.copy())
        states_v.append(body.data.qvel.copy())
        ctrls.append(ctrl)
        if label is not None:
            labels.append(label)
        if fallen():
            break
        if expert is not None and np.linalg.norm(
                body.data.qpos[:2] - target[step + 1, :2]) > 2.0 * root_limit:
            break
    episode = {'qpos': np.array(states_q), 'qvel': np.array(states_v),
               'ctrl': np.array(ctrls).reshape(-1, body.nu)}
    if expert is not None:
        n = len(episode['ctrl'])
        episode['label'] = np.array(labels[:n]).reshape(-1, body.nu)
        episode['window'] = np.stack([target[t + 1:t + 1 + k] for t in range(n)]).reshape(
            n, k, target.shape[1])
    return episode


def _episode_plan(rng: np.random.Generator, cfg: dict, clips: list[Clip], dt: float, k: int,
                  lo: np.ndarray, hi: np.ndarray, lookahead: int | None = None) -> tuple:
    """Draws one episode's targets and start state (the same draws for every body).

    Target: time-warped playback of a random clip (speed_range, reverse_prob, a random start)
    plus smooth joint offsets (amplitude up to target_noise_rad, at most a quarter of each
    joint's range; pi for an unlimited joint), clipped to the joint limits `lo`, `hi`.
    Start: the clip's state at the first target time, its joints perturbed by
    init_joint_noise_rad, its velocity scaled by the playback speed.

    Returns:
        target (episode_steps + max(k, lookahead) + 1, nq), target joint velocities (same
        length, nq - 7), start qpos (nq,) and qvel (nv,).
    """
    n_steps = int(cfg['episode_steps'])
    k = max(k, lookahead or 0)  # an expert plans further ahead than the policy sees
    clip = clips[int(rng.integers(len(clips)))]
    speed = rng.uniform(*cfg['speed_range'])
    if rng.random() < cfg['reverse_prob']:
        speed = -speed
    t0 = rng.uniform(0.0, clip.duration_s)
    taus = _reflect(t0 + speed * dt * np.arange(n_steps + k + 1), clip.duration_s)
    target = np.stack([clip.sample(t) for t in taus])
    n_hinge = target.shape[1] - 7
    span = np.where(np.isfinite(hi - lo), 0.25 * (hi - lo), np.pi)
    amp = np.minimum(rng.uniform(0.0, cfg['target_noise_rad']), span)
    sigma_steps = max(cfg['target_noise_smooth_s'] / dt, 0.5)
    offsets = amp * _smooth_noise(rng, len(taus), n_hinge, sigma_steps)
    target[:, 7:] = np.clip(target[:, 7:] + offsets, lo, hi)
    target_vel = np.gradient(target[:, 7:], dt, axis=0)

    qpos = clip.sample(taus[0])
    qpos[7:] = np.clip(qpos[7:] + cfg['init_joint_noise_rad'] * rng.standard_normal(n_hinge),
                       lo, hi)
    return target, target_vel, qpos, clip.velocity(taus[0]) * speed


class _EpisodeGenerator:
    """Runs data-collection episodes on one body; one instance per worker process."""

    def __init__(self, clips: list[Clip], scale: float, frames: int,
                 policy_state: dict | None = None, activation: str = 'elu', expert=None):
        self.body = RatBody(scale=scale)
        self.clips = clips
        self.frames = frames
        pose = clips[0].qpos[0]
        self.kin = ActuatorKinematics(self.body, pose)
        self.inertia_over_f = effective_inertia(self.body, pose) / self.body.actuator_gain
        self.n_sub = int(round(1.0 / (rc.CONTROL_RATE_HZ * self.body.timestep)))
        self.dt = self.n_sub * self.body.timestep
        ranges = self.body.model.jnt_range[1:]
        self.lo, self.hi = ranges[:, 0], ranges[:, 1]
        self.policy = None if policy_state is None else numpy_policy(policy_state, activation)
        self.mpc = None
        if expert is not None:  # the 'mpc' expert: its PD gains from the same pose
            from vrat_ros.mpc import SamplingMPC
            self.mpc = SamplingMPC(self.body, expert, inertia_qpos=pose)

    def run(self, rng: np.random.Generator, cfg: dict) -> dict:
        """Runs one episode; returns {'qpos': (T+1, nq), 'qvel': (T+1, nv), 'ctrl': (T, nu)}.

        The controller is the policy when the generator has one, else the expert (the
        sampling MPC) when it has one, else a PD with a gain drawn from cfg['pd_wn_range'];
        all get correlated per-actuator action noise. With an expert, 'label' and 'window'
        hold its actions and the targets it was given (see `_collect`).
        """
        body, k = self.body, self.frames
        n_steps = int(cfg['episode_steps'])
        horizon = None if self.mpc is None else self.mpc.settings.horizon_steps
        target, target_vel, qpos, qvel = _episode_plan(
            rng, cfg, self.clips, self.dt, k, self.lo, self.hi, lookahead=horizon)
        body.reset(qpos, qvel)
        if self.mpc is not None:
            self.mpc.reset(rng.integers(2 ** 63))

        wn = rng.uniform(*cfg['pd_wn_range'])
        kp = wn ** 2 * self.inertia_over_f
        kd = 2.0 * cfg['pd_zeta'] * wn * self.inertia_over_f
        noise_gain = _NOISE_WN_RAD_S ** 2 * self.inertia_over_f
        matrix = self.kin.matrix

        def pd(step, q, v):
            return (kp * (matrix @ (target[step + 1, 7:] - q[7:]))
                    + kd * (matrix @ (target_vel[step + 1] - v[6:])))

        def expert_action(step):
            torque = self.mpc.plan(target[step + 1:step + 1 + horizon])
            return torque / body.actuator_gain  # within [-1, 1]

        def apply(ctrl):
            body.data.ctrl[:] = ctrl
            body.step(self.n_sub)

        def fallen():
            return body.data.xpos[body.torso_id, 2] < _FALLEN_TORSO_Z_M

        return _collect(body, rng, cfg, target, n_steps, k, body.tracked_hinge_idx,
                        self.policy, pd, noise_gain, apply, fallen,
                        None if self.mpc is None else expert_action)


class RobotActions:
    """How a robot of vrat_ros.robots turns policy actions in [-1, 1] into commands.

    command = action_offset + action_scale x action, per actuator:
      position: targets; offset = the standing pose (`Robot.stand_qpos`, so the zero action
                holds it), scale = the farthest joint limit from it (the whole range is
                reachable; pi for an unlimited joint).
      effort:   torques; no offset, scale = the torque at ctrl 1.
    `pd_action` gives the action of the robot's PD law on a reference (the collection
    controller of round 0); `per_rad` the action per radian of joint error (relabelling and
    action noise). Effort robots need `pd` gains in their file for that.
    """

    def __init__(self, robot):
        m = robot.model
        self.interface = robot.spec.command_interface
        self.qpos_idx = robot.actuator_qposadr.copy()
        self.dof_idx = robot.actuator_dofadr.copy()
        self.hinge_idx = self.qpos_idx - 7
        if self.interface == 'position':
            self.offset = robot.stand_targets()
            jids = m.actuator_trnid[:, 0]
            lo, hi = m.jnt_range[jids, 0], m.jnt_range[jids, 1]
            limited = m.jnt_limited[jids].astype(bool)
            self.scale = np.where(limited, np.maximum(hi - self.offset, self.offset - lo),
                                  np.pi)
            self.per_rad = 1.0 / self.scale
            self.kp = self.kd = None
        else:
            # Training needs the file's PD gains for the PD that collects the first data;
            # pd_gains names what is missing.
            self.offset = None
            self.scale = np.asarray(robot.actuator_gain, dtype=np.float64)
            self.kp, self.kd = robot.pd_gains()
            self.per_rad = self.kp / self.scale

    def command(self, action: np.ndarray) -> np.ndarray:
        command = np.asarray(action, dtype=np.float64) * self.scale
        return command if self.offset is None else command + self.offset

    def action_of(self, command: np.ndarray) -> np.ndarray:
        """The action (unclipped) whose `command` is `command`: the inverse of `command`."""
        command = np.asarray(command, dtype=np.float64)
        return (command if self.offset is None else command - self.offset) / self.scale

    def pd_action(self, ref_qpos: np.ndarray, ref_hinge_vel: np.ndarray, qpos: np.ndarray,
                  qvel: np.ndarray) -> np.ndarray:
        """The action that sends the robot's PD law towards `ref_qpos` (unclipped)."""
        if self.offset is not None:
            return (ref_qpos[self.qpos_idx] - self.offset) / self.scale
        torque = (self.kp * (ref_qpos[self.qpos_idx] - qpos[self.qpos_idx])
                  + self.kd * (ref_hinge_vel[self.hinge_idx] - qvel[self.dof_idx]))
        return torque / self.scale

    def feedback(self, n_joints: int) -> np.ndarray:
        """(nu, J) action per radian of a constant error on each observed joint."""
        gains = np.zeros((len(self.scale), n_joints))
        gains[np.arange(len(self.scale)), self.hinge_idx] = self.per_rad
        return gains


def _robot_joint_range(robot) -> tuple[np.ndarray, np.ndarray]:
    """Per joint after the root: its limits, or +-inf for an unlimited one."""
    m = robot.model
    limited = m.jnt_limited[1:].astype(bool)
    return (np.where(limited, m.jnt_range[1:, 0], -np.inf),
            np.where(limited, m.jnt_range[1:, 1], np.inf))


class _RobotEpisodeGenerator:
    """`_EpisodeGenerator` for a robot of vrat_ros.robots (any command interface).

    The same episodes as the rat's (time-warped clip playback plus smooth joint offsets,
    correlated action noise), collected by the robot's own PD law (position targets at the
    reference, or PD torques with the file's gains) or by the policy, and stopped when the
    torso leaves the file's healthy height range or turns over. With an expert (`expert`:
    `vrat_ros.mpc.MPCSettings`) the sampling MPC replaces the PD law in round 0 and labels
    every state in all rounds.
    """

    def __init__(self, robot_name: str, clips: list[Clip], frames: int,
                 policy_state: dict | None = None, activation: str = 'elu', expert=None):
        from vrat_ros.robots import Robot
        self.body = Robot(robot_name)
        self.actions = RobotActions(self.body)
        self.clips = clips
        self.frames = frames
        self.n_sub = self.body.n_substeps
        self.dt = self.body.spec.control_dt
        self.lo, self.hi = _robot_joint_range(self.body)
        self.joint_idx = np.arange(len(self.body.joint_names))
        self.z_range = self.body.spec.healthy_z_range
        self.policy = None if policy_state is None else numpy_policy(policy_state, activation)
        self.mpc = None
        if expert is not None:
            from vrat_ros.mpc import SamplingMPC
            self.mpc = SamplingMPC(self.body, expert)

    def run(self, rng: np.random.Generator, cfg: dict) -> dict:
        """Runs one episode; returns {'qpos': (T+1, nq), 'qvel': (T+1, nv), 'ctrl': (T, nu)}.

        'ctrl' holds the actions (in [-1, 1]) that were applied; with an expert, 'label' and
        'window' hold its actions and the targets it was given (see `_collect`).
        """
        body, k, acts = self.body, self.frames, self.actions
        n_steps = int(cfg['episode_steps'])
        horizon = None if self.mpc is None else self.mpc.settings.horizon_steps
        target, target_vel, qpos, qvel = _episode_plan(
            rng, cfg, self.clips, self.dt, k, self.lo, self.hi, lookahead=horizon)
        body.reset(qpos, qvel)
        if self.mpc is not None:
            self.mpc.reset(rng.integers(2 ** 63))

        def expert_action(step):
            command = self.mpc.plan(target[step + 1:step + 1 + horizon])
            return np.clip(acts.action_of(command), -1.0, 1.0)

        def pd(step, q, v):
            return acts.pd_action(target[step + 1], target_vel[step + 1], q, v)

        def apply(action):
            body.set_command(acts.command(action))
            body.step(self.n_sub)

        def fallen():
            torso = body.data.xpos[body.torso_id, 2]
            upright = body.data.xmat[body.torso_id][8]
            return not self.z_range[0] <= torso <= self.z_range[1] or upright < 0.0

        return _collect(body, rng, cfg, target, n_steps, k, self.joint_idx, self.policy, pd,
                        acts.per_rad, apply, fallen,
                        None if self.mpc is None else expert_action)


_WORKER_GENERATOR = None


def _init_worker(clips: list[Clip], scale: float, frames: int, policy_state: dict | None,
                 activation: str, robot: str = 'rat', expert=None) -> None:
    global _WORKER_GENERATOR
    if robot == 'rat':
        _WORKER_GENERATOR = _EpisodeGenerator(clips, scale, frames, policy_state, activation,
                                              expert)
    else:
        _WORKER_GENERATOR = _RobotEpisodeGenerator(robot, clips, frames, policy_state,
                                                   activation, expert)


def _run_task(task: tuple) -> list[dict]:
    cfg, seed, round_index, indices = task
    return [_WORKER_GENERATOR.run(np.random.default_rng([seed, 1, round_index, int(i)]), cfg)
            for i in indices]


def round_settings(config: dict, round_index: int) -> dict:
    """Returns the collection settings of a round (round 0 is config['data']).

    Raises:
        ValueError: the episode length is not an integer in 1..MAX_EPISODE_STEPS.
    """
    cfg = dict(config['data'])
    if round_index > 0:
        cfg.update(config['rounds']['data'])
        cfg['n_episodes'] = config['rounds']['n_episodes']
    _check_episode_settings(cfg, 'data' if round_index == 0 or 'episode_steps' not in
                            config['rounds']['data'] else 'rounds.data')
    return cfg


def collection_job(config: dict, round_index: int = 0,
                   policy_state: dict | None = None) -> tuple[tuple, list[tuple]]:
    """Returns what the workers of one collection round need: (init_args, tasks).

    Each worker runs `_init_worker(*init_args)` once (the clips travel as data, so cluster
    nodes need no copy of the clip files), then `_run_task(task)` per task; a task is a
    chunk of episode indices and holds everything that decides its episodes.
    """
    cfg = round_settings(config, round_index)
    n_episodes = int(cfg['n_episodes'])
    scale = config['body']['scale']
    body = make_body(config)
    clips = training_clips(config, body)
    init_args = (clips, scale, int(config['relabel']['frames']), policy_state,
                 config['model']['activation'], robot_of(config), expert_settings(config))
    tasks = [(cfg, int(config['seed']), round_index,
              list(range(i, min(i + _CHUNK, n_episodes))))
             for i in range(0, n_episodes, _CHUNK)]
    return init_args, tasks


def training_clips(config: dict, body) -> list[Clip]:
    """The clips that data collection and RL draw from.

    config['clips'] in the body's hinge order, followed by their mirror images
    (vrat_ros.mirror) when config['mirror'] is set.
    """
    clips = [Clip.load(p).reorder_to(body.hinge_names) for p in config['clips']]
    if config.get('mirror'):
        from vrat_ros.mirror import mirror_clip
        clips += [mirror_clip(clip, body.model) for clip in clips]
    return clips


def generate_episodes(config: dict, round_index: int = 0, policy_state: dict | None = None,
                      progress: bool = False, workers: int | None = None,
                      ray_address: str | None = None) -> list[dict]:
    """Generates one round of data-collection episodes (deterministic for the seed).

    Episode i of round r always uses the random stream derived from (seed, r, i), whichever
    worker runs it, and the list comes back in index order, so the episodes are the same
    for any number of workers, with or without Ray.

    Args:
        config: the training configuration.
        round_index: 0 for the PD round, r > 0 for the closed-loop rounds.
        policy_state: the collecting policy's state dict as numpy arrays (rounds > 0).
        progress: show a tqdm bar.
        workers: worker processes or Ray actors; None: config['data']['n_workers'], or
            every CPU of the Ray cluster when ray_address is given.
        ray_address: None for local processes, else a Ray address (see
            `vrat_ros.workers.map_ordered`).

    Returns:
        A list of {'qpos': (T_i + 1, nq), 'qvel': (T_i + 1, nv), 'ctrl': (T_i, nu)}.
    """
    from vrat_ros.workers import map_ordered
    init_args, tasks = collection_job(config, round_index, policy_state)
    if workers is None and ray_address is None:
        workers = int(round_settings(config, round_index)['n_workers'])
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=sum(len(t[3]) for t in tasks),
                   desc=f'round {round_index} episodes', unit='ep')
    try:
        chunks = map_ordered(
            _run_task, tasks, workers, initializer=_init_worker, initargs=init_args,
            on_result=None if bar is None else (lambda i, chunk: bar.update(len(chunk))),
            ray_address=ray_address)
    finally:
        if bar is not None:
            bar.close()
    return [episode for chunk in chunks for episode in chunk]


def _save_episodes(path: str, episodes: list[dict], data_hash: str) -> None:
    lengths = np.array([len(e['ctrl']) for e in episodes])

    extra = {}
    if episodes and 'label' in episodes[0]:  # expert-labelled rounds
        extra = {name: np.concatenate([e[name] for e in episodes])
                 for name in ('label', 'window')}

    def write(tmp):
        with open(tmp, 'wb') as f:
            np.savez(f, lengths=lengths, data_hash=np.array(data_hash),
                     qpos=np.concatenate([e['qpos'] for e in episodes]),
                     qvel=np.concatenate([e['qvel'] for e in episodes]),
                     ctrl=np.concatenate([e['ctrl'] for e in episodes]), **extra)
    atomic_write(path, write)


def _load_episodes(path: str, data_hash: str) -> list[dict] | None:
    if not os.path.isfile(path):
        return None
    with np.load(path, allow_pickle=False) as z:
        if str(z['data_hash']) != data_hash:
            return None
        lengths, qpos, qvel, ctrl = z['lengths'], z['qpos'], z['qvel'], z['ctrl']
        extra = {name: z[name] for name in ('label', 'window') if name in z.files}
    episodes, s, a = [], 0, 0
    for n in lengths:
        episodes.append({'qpos': qpos[s:s + n + 1], 'qvel': qvel[s:s + n + 1],
                         'ctrl': ctrl[a:a + n],
                         **{name: value[a:a + n] for name, value in extra.items()}})
        s += n + 1
        a += n
    return episodes


# ---------------------------------------------------------------------------------------------
# Hindsight relabelling.


def _yaw_quat(yaw: np.ndarray) -> np.ndarray:
    half = 0.5 * np.asarray(yaw)
    return np.stack([np.cos(half), np.zeros_like(half), np.zeros_like(half), np.sin(half)], -1)


def joint_feedback_gains(body: RatBody, qpos: npt.ArrayLike, wn_rad_s: float) -> np.ndarray:
    """Returns (nu, J) ctrl per rad of error on the observed joints: kp A, as in the PD."""
    kp, _ = pd_gains(body, qpos, wn_rad_s, 0.0)
    trans = ActuatorKinematics(body, qpos).matrix[:, np.asarray(body.tracked_hinge_idx)]
    return kp[:, None] * trans


def relabel(
    episodes: list[dict],
    config: dict,
    joint_idx: npt.ArrayLike,
    seed: int,
    joint_feedback: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Turns episodes into (observation, action) examples by hindsight relabelling.

    An episode with an expert's labels ('label', 'window': see `_collect`) gives one example
    per step instead: the state, the targets the expert was given, its action; with
    'expert_hindsight' also the hindsight examples below (without offsets). Otherwise
    two kinds of examples come out:
      * hindsight: the state at step t, the states reached at t+1 .. t+K, the action taken;
      * offset: a hindsight window shifted by a constant root offset (horizontal position
        and heading, which leave the physics unchanged, so the label is kept) and a
        constant joint-angle offset d, whose label adds `joint_feedback @ d` (clipped to
        [-1, 1]): the part of the window that was not reached is answered with a PD-like
        correction, as accumulated tracking error must be.

    Args:
        episodes: output of `generate_episodes`.
        config: the full training configuration (uses its 'relabel' section).
        joint_idx: (J,) hinge indices the observation reads.
        seed: seed of the augmentation draws.
        joint_feedback: (nu, J) ctrl per rad of constant joint offset; None leaves the
            joint offsets out.

    Returns:
        obs (N, obs_size) float32, actions (N, nu) float32 in [-1, 1] and episode (N,)
        int32, the index of each example's episode.
    """
    cfg = config['relabel']
    k = int(cfg['frames'])
    idx = 7 + np.asarray(joint_idx)
    rng = np.random.default_rng([seed, 2])
    obs, act, eps = [], [], []
    for e, ep in enumerate(episodes):
        q, v, a = ep['qpos'], ep['qvel'], ep['ctrl']
        if 'label' in ep:  # an expert's episode: its actions on the targets it was given
            n = len(ep['label'])
            if n == 0:
                continue
            obs.append(batch_observations(q[:n], v[:n], ep['window'], joint_idx))
            act.append(ep['label'].astype(np.float32))
            eps.append(np.full(n, e, dtype=np.int32))
            n = len(a) - k + 1
            if cfg.get('expert_hindsight') and n > 0:
                t = np.arange(n)
                obs.append(batch_observations(q[t], v[t], q[t[:, None] + 1 + np.arange(k)],
                                              joint_idx))
                act.append(a[t].astype(np.float32))
                eps.append(np.full(n, e, dtype=np.int32))
            continue
        n = len(a) - k + 1  # steps t whose states t+1 .. t+k exist
        if n <= 0:
            continue
        t = np.arange(n)
        windows = [q[t[:, None] + 1 + np.arange(k)[None, :]]]
        states = [t]
        labels = [a[t]]

        n_off = int(round(cfg['offset_fraction'] * n))
        if n_off > 0:
            start = rng.integers(0, n, n_off)
            w = q[start[:, None] + 1 + np.arange(k)[None, :]].copy()
            w[:, :, :3] += rng.standard_normal((n_off, 1, 3)) * np.asarray(cfg['offset_pos_m'])
            yaw = _yaw_quat(cfg['offset_yaw_rad'] * rng.standard_normal(n_off))
            w[:, :, 3:7] = quat_mul(yaw[:, None, :], w[:, :, 3:7])
            label = a[start].copy()
            if joint_feedback is not None and cfg['offset_joint_rad'] > 0:
                scale = cfg['offset_joint_rad'] * rng.uniform(0.0, 1.0, (n_off, 1))
                offset = scale * rng.standard_normal((n_off, len(idx)))
                w[:, :, idx] += offset[:, None, :]
                label = np.clip(label + offset @ joint_feedback.T, -1.0, 1.0)
            windows.append(w)
            states.append(start)
            labels.append(label)

        windows = np.concatenate(windows)
        states = np.concatenate(states)
        obs.append(batch_observations(q[states], v[states], windows, joint_idx))
        act.append(np.concatenate(labels).astype(np.float32))
        eps.append(np.full(len(states), e, dtype=np.int32))
    if not obs:
        raise ValueError(f'no episode is longer than the {k}-frame reference window')
    return np.concatenate(obs), np.concatenate(act), np.concatenate(eps)


# ---------------------------------------------------------------------------------------------
# Model.


def _activation(name: str):
    import torch
    table = {'elu': torch.nn.ELU, 'relu': torch.nn.ReLU, 'tanh': torch.nn.Tanh,
             'silu': torch.nn.SiLU}
    if name not in table:
        raise ValueError(f"activation should be one of {sorted(table)}: got '{name}'")
    return table[name]()


def make_model(obs_size: int, act_size: int, model_cfg: dict):
    """Builds the `InverseDynamicsMLP` described by `model_cfg` (normalisers at identity)."""
    import torch

    class InverseDynamicsMLP(torch.nn.Module):
        """MLP with its normalisers and action bounds stored as buffers.

        action = clamp(act_mean + act_std * mlp((obs - obs_mean) / obs_std) [+ base(obs)],
                       act_lo, act_hi)
        where [act_lo, act_hi] (within [-1, 1]) is the range each actuator's training labels
        used: the network never asks for more than the data showed. With
        model_cfg['residual'] (position robots), base(obs) is the action that commands the
        next reference frame's joint angles (joint angle + its reference error, read from
        the observation, minus the action offset, over the action scale), so the network
        learns only the departure from following the reference: the part that keeps the
        trunk on its path, which would otherwise be a small share of the label variance.
        The label bounds matter most for the rat's 20 N m spine motors, whose labels stay
        within a few percent of their range.
        forward(obs) takes raw observations (B, obs_size) and returns the action
        (B, act_size) and the list of hidden activations.
        """

        def __init__(self):
            super().__init__()
            sizes = [obs_size] + list(model_cfg['hidden'])
            self.hidden = torch.nn.ModuleList(
                torch.nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
            self.act = _activation(model_cfg['activation'])
            self.head = torch.nn.Linear(sizes[-1], act_size)
            self.register_buffer('obs_mean', torch.zeros(obs_size))
            self.register_buffer('obs_std', torch.ones(obs_size))
            self.register_buffer('act_mean', torch.zeros(act_size))
            self.register_buffer('act_std', torch.ones(act_size))
            self.register_buffer('act_lo', -torch.ones(act_size))
            self.register_buffer('act_hi', torch.ones(act_size))
            # base(obs) of a residual model (see `set_residual_base`); unused otherwise.
            self.residual = bool(model_cfg.get('residual', False))
            self.register_buffer('residual_on', torch.tensor(float(self.residual)))
            self.register_buffer('base_pos_idx', torch.zeros(act_size, dtype=torch.long))
            self.register_buffer('base_err_idx', torch.zeros(act_size, dtype=torch.long))
            self.register_buffer('base_offset', torch.zeros(act_size))
            self.register_buffer('base_scale', torch.ones(act_size))

        def set_residual_base(self, pos_idx, err_idx, offset, scale):
            """Sets base(obs) = (obs[pos_idx] + obs[err_idx] - offset) / scale."""
            with torch.no_grad():
                self.base_pos_idx.copy_(torch.as_tensor(np.asarray(pos_idx), dtype=torch.long))
                self.base_err_idx.copy_(torch.as_tensor(np.asarray(err_idx), dtype=torch.long))
                self.base_offset.copy_(torch.as_tensor(np.asarray(offset), dtype=torch.float32))
                self.base_scale.copy_(torch.as_tensor(np.asarray(scale), dtype=torch.float32))

        def base(self, obs):
            """The action that commands the next reference frame's joint angles."""
            return ((obs[:, self.base_pos_idx] + obs[:, self.base_err_idx] - self.base_offset)
                    / self.base_scale)

        def forward_normalised(self, x):
            hiddens = []
            for layer in self.hidden:
                x = self.act(layer(x))
                hiddens.append(x)
            return self.head(x), hiddens

        def forward(self, obs):
            y, hiddens = self.forward_normalised((obs - self.obs_mean) / self.obs_std)
            action = y * self.act_std + self.act_mean
            if self.residual:
                action = action + self.base(obs)
            action = torch.minimum(torch.maximum(action, self.act_lo), self.act_hi)
            return action, hiddens

    return InverseDynamicsMLP()


class TorchPolicy:
    """Adapter that lets `PolicyController` run a torch model in-process (for evaluation)."""

    def __init__(self, model, interface: dict):
        import torch
        self._torch = torch
        self.model = model
        self.joint_names = list(interface['joint_names'])
        self.actuator_names = list(interface['actuator_names'])
        self.command_interface = str(interface['command_interface'])
        self.action_scale = np.asarray(interface['action_scale'], dtype=np.float64)
        self.action_offset = (np.asarray(interface['action_offset'], dtype=np.float64)
                              if 'action_offset' in interface else None)
        self.reference_frames = int(interface['reference']['frames'])
        self.reference_dt = float(interface['reference']['dt_s'])
        # A robot's contract names its root joint; the rat's is the default.
        self.root_joint = str(interface.get('root_joint', rc.ROOT_JOINT))
        self.observation_size = observation_size(len(self.joint_names), self.reference_frames)

    def run(self, observation: npt.ArrayLike) -> np.ndarray:
        """Returns the (nu,) action for one raw observation."""
        with self._torch.no_grad():
            x = self._torch.as_tensor(np.asarray(observation, dtype=np.float32)[None, :])
            return self.model(x)[0].numpy()[0].astype(np.float64)

    def torques(self, observation: npt.ArrayLike) -> np.ndarray:
        """Returns the (nu,) command for one raw observation.

        Torques (N m), or joint targets for a position contract (action x action_scale +
        action_offset).
        """
        command = self.run(observation) * self.action_scale
        return command if self.action_offset is None else command + self.action_offset


def policy_interface(body: RatBody, frames: int = rc.REFERENCE_WINDOW_FRAMES) -> dict:
    """Returns the body-facing part of the policy contract for `body`."""
    joint_names = [body.hinge_names[i] for i in body.tracked_hinge_idx]
    return {
        'joint_names': joint_names,
        'actuator_names': list(body.actuator_names),
        'command_interface': rc.COMMAND_INTERFACE,
        'action_scale': [float(g) for g in body.actuator_gain],
        'action_clip': [-1.0, 1.0],
        'control_rate_hz': float(rc.CONTROL_RATE_HZ),
        'reference': {'frames': int(frames), 'dt_s': 1.0 / rc.CONTROL_RATE_HZ},
        'observation': {'size': observation_size(len(joint_names), frames),
                        'layout': observation_layout(len(joint_names), frames)},
        'body': {'name': 'rat', 'scale': float(body.scale),
                 'actuators': body.actuator_variant},
    }


def robot_policy_interface(robot, frames: int = rc.REFERENCE_WINDOW_FRAMES) -> dict:
    """Returns the body-facing part of the policy contract for a vrat_ros.robots.Robot.

    It reads every joint, names the root joint and, for a position robot, the offset of its
    targets (`RobotActions`).
    """
    spec = robot.spec
    actions = RobotActions(robot)
    joint_names = list(robot.joint_names)
    interface = {
        'joint_names': joint_names,
        'actuator_names': list(robot.actuator_names),
        'command_interface': spec.command_interface,
        'action_scale': [float(g) for g in actions.scale],
        'action_clip': [-1.0, 1.0],
        'control_rate_hz': float(spec.control_rate_hz),
        'reference': {'frames': int(frames), 'dt_s': float(spec.control_dt)},
        'observation': {'size': observation_size(len(joint_names), frames),
                        'layout': observation_layout(len(joint_names), frames)},
        'body': {'name': spec.name, 'scale': float(robot.scale)},
        'root_joint': spec.root_joint,
        'body_joints': joint_names,
    }
    if actions.offset is not None:
        interface['action_offset'] = [float(v) for v in actions.offset]
    return interface


def residual_base(robot, interface: dict) -> tuple:
    """(pos_idx, err_idx, offset, scale) of a residual model's base(obs) on a position robot.

    pos_idx and err_idx locate each actuated joint's angle and its first reference frame's
    error in the observation; offset and scale are the action's (`RobotActions`).

    Raises:
        ValueError: the robot does not take positions, or an actuator drives no observed joint.
    """
    actions = RobotActions(robot)
    if actions.offset is None:
        raise ValueError("setting 'model.residual' needs a robot with the 'position' interface")
    names = list(interface['joint_names'])
    hinge_names = list(robot.joint_names)
    try:
        joints = [names.index(hinge_names[h]) for h in actions.hinge_idx]
    except (ValueError, IndexError):
        raise ValueError("setting 'model.residual' needs every actuator on an observed "
                         'joint') from None
    start, where = 0, {}
    for segment in interface['observation']['layout']:
        where[segment['name']] = start
        start += segment['size']
    joints = np.asarray(joints)
    return (where['joint_pos_rad'] + joints, where['ref1_joint_pos_err_rad'] + joints,
            actions.offset, actions.scale)


def _first_sentence(text: str, limit: int = 160) -> str:
    """The first line of an error text, cut after its first sentence and at `limit`."""
    line = text.strip().splitlines()[0] if text.strip() else ''
    line = line.strip(' \'"')
    end = line.find('. ')
    if end > 0:
        line = line[:end + 1]
    return line if len(line) <= limit else line[:limit - 3] + '...'


def load_checkpoint(path: str, which: str = 'best'):
    """Loads a training checkpoint.

    Args:
        path: checkpoint file written by `train`.
        which: 'best' (the weights chosen by closed-loop evaluation, or the latest ones
            when there was no evaluation) or 'latest'.

    Returns:
        (model in eval mode, checkpoint dict).
    """
    import torch
    if which not in ('best', 'latest'):
        raise ValueError(f"which should be 'best' or 'latest': got '{which}'")
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
        interface = ckpt['interface']
        ckpt['config']['model'], ckpt['model']
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch raises many types for foreign or damaged files
        raise ValueError(
            f"'{path}' is not a vrat training checkpoint (checkpoint.pt written by vrat train): "
            f'{type(exc).__name__}: {_first_sentence(str(exc)) or repr(exc)}') from None
    model = make_model(int(interface['observation']['size']),
                       len(interface['actuator_names']), ckpt['config']['model'])
    state = ckpt['model']
    if which == 'best' and ckpt.get('best') is not None:
        state = ckpt['best']['model']
    # Checkpoints from before residual models lack its buffers: the defaults stand.
    model.load_state_dict({**model.state_dict(), **state})
    model.eval()
    return model, ckpt


# ---------------------------------------------------------------------------------------------
# Closed-loop evaluation.


def evaluate_policy(policy, body, clips: list[Clip], eval_cfg: dict) -> dict:
    """Runs `policy` on each clip from each start time and summarises the tracking.

    Returns:
        {'score': lower is better, 'runs': [metrics per run], and the means of
        joint_rmse_rad, body_pos_error_mm, root_pos_error_mm and tracked_fraction}.
    """
    runs = []
    for c, clip in enumerate(clips):
        for start in eval_cfg['starts_s']:
            if start >= clip.duration_s:
                continue
            seconds = eval_cfg['seconds']
            if seconds is not None:
                seconds = min(seconds, clip.duration_s - start)
            rate = (rc.CONTROL_RATE_HZ if isinstance(body, RatBody)
                    else body.spec.control_rate_hz)
            result = run_inline(body, clip, PolicyController(policy), seconds=seconds,
                                start_time_s=start, control_rate_hz=rate)
            runs.append({'clip': c, 'start_s': float(start), **result.metrics})
    keys = ('joint_rmse_rad', 'body_pos_error_mm', 'root_pos_error_mm', 'tracked_fraction')
    summary = {k: float(np.mean([r[k] for r in runs])) for k in keys}
    # Tracking to the end matters most; then body and joint errors.
    summary['score'] = (1000.0 * (1.0 - summary['tracked_fraction'])
                        + summary['body_pos_error_mm'] + 100.0 * summary['joint_rmse_rad'])
    if not np.isfinite(summary['score']):
        summary['score'] = float('inf')
    summary['runs'] = runs
    return summary


# ---------------------------------------------------------------------------------------------
# Training.


def _phase_bounds(config: dict) -> list[tuple[int, int]]:
    """Returns [(first step, end step)] of round 0 and of each closed-loop round."""
    bounds = [(0, int(config['train']['steps']))]
    for _ in range(int(config['rounds']['count'])):
        start = bounds[-1][1]
        bounds.append((start, start + int(config['rounds']['steps'])))
    return bounds


def _lr_at(step: int, phase: tuple[int, int], cfg: dict) -> float:
    """Cosine decay from lr to lr_final within one round."""
    frac = min((step - phase[0]) / max(phase[1] - phase[0], 1), 1.0)
    return cfg['lr_final'] + 0.5 * (cfg['lr'] - cfg['lr_final']) * (1.0 + np.cos(np.pi * frac))


def _save_checkpoint(path: str, payload: dict) -> None:
    import torch

    def write(tmp):
        torch.save(payload, tmp)
    atomic_write(path, write)


def _clone_state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _resume_view(config: dict) -> dict:
    """A configuration as `--resume` compares it.

    The 'rl' section has its defaults filled in, so that a file spelling out a default
    resumes a run whose file left it out.
    """
    from vrat_ros.rl import rl_settings
    view = dict(config)
    if view.get('rl') is not None:
        view['rl'] = rl_settings(view)
    return _json_ready(view)


def _json_ready(value):
    """Converts numpy scalars and arrays inside nested dicts/lists to plain Python types."""
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_ready(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_json_ready(v) for v in value)
    if isinstance(value, np.ndarray):
        return _json_ready(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def rl_iterations_done(rl_run: dict) -> int:
    """How many RL iterations a run has done (its tuner's count, or its saved state's)."""
    if rl_run['tuner'] is not None:
        return int(rl_run['tuner'].iteration)
    return 0 if rl_run['state'] is None else int(rl_run['state']['iteration'])


class _Dataset:
    """Relabelled examples of all rounds collected so far, split into train and val."""

    def __init__(self):
        self.obs_train, self.act_train, self.obs_val, self.act_val = [], [], [], []
        self.n_episodes = 0
        self.n_transitions = 0

    def add(self, episodes: list[dict], config: dict, joint_idx: np.ndarray, seed: int,
            joint_feedback: np.ndarray) -> None:
        obs, act, eps = relabel(episodes, config, joint_idx, seed, joint_feedback)
        n_val = int(round(config['relabel']['val_fraction'] * len(episodes)))
        is_val = eps >= len(episodes) - n_val
        self.obs_train.append(obs[~is_val])
        self.act_train.append(act[~is_val])
        self.obs_val.append(obs[is_val])
        self.act_val.append(act[is_val])
        self.n_episodes += len(episodes)
        self.n_transitions += sum(len(e['ctrl']) for e in episodes)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return (np.concatenate(self.obs_train), np.concatenate(self.act_train),
                np.concatenate(self.obs_val), np.concatenate(self.act_val))


def train(config: dict, out_dir: str, resume: bool = False, progress: bool = True,
          stop_after_steps: int | None = None, export: bool = True,
          workers: int | None = None, ray_address: str | None = None,
          stop_after_rl_iterations: int | None = None) -> dict:
    """Generates data, trains the policy in rounds and (at the end) exports it to ONNX.

    Files in `out_dir`: episodes_r<k>.npz (the data of round k, reused on resume),
    checkpoint.pt (model, optimiser, normaliser, step, config, the best weights by
    closed-loop evaluation and the policies that collected each round), policy.onnx
    (the best weights, with the vrat contract) and summary.json.

    Args:
        config: a configuration shaped like `default_config()`.
        out_dir: output folder (created if needed; removed again, with the parents this
            call created, when the run fails before writing anything into it).
        resume: continue from out_dir/checkpoint.pt if it exists; the result equals an
            uninterrupted run. The configuration must be the one the checkpoint has.
        progress: show tqdm bars.
        stop_after_steps: stop (after checkpointing) once this many steps are done in
            total, as an interruption would; None trains to the end.
        stop_after_rl_iterations: the same for the iterations of the RL stage ('rl').
        export: write policy.onnx once training is complete.
        workers, ray_address: where the episodes are collected (see `generate_episodes`);
            the data, and so the result, do not depend on them.

    Returns:
        A JSON-friendly summary: losses, closed-loop evaluations, timings, paths, sizes.

    Raises:
        ValueError: the configuration is unusable or differs from the checkpoint's.
        VratError: PyTorch is not installed, or a clip cannot be loaded.
    """
    require_torch()
    t_start = time.perf_counter()
    config = copy.deepcopy(config)
    _fill_later_settings(config)
    validate_config(config)
    _record_expert(config)
    for path in config['clips']:
        if not os.path.isfile(path):
            raise ClipError(f"training clip '{path}' does not exist; give a clip file or a "
                            'name that `vrat clips` lists')
    # Folders this call creates; a run that fails before writing into them removes them.
    created, folder = [], os.path.abspath(out_dir)
    while not os.path.exists(folder):
        created.append(folder)
        folder = os.path.dirname(folder)
    os.makedirs(out_dir, exist_ok=True)
    try:
        return _train(config, out_dir, resume, progress, stop_after_steps, export, workers,
                      ray_address, t_start, stop_after_rl_iterations)
    except BaseException:
        for folder in created:  # deepest first; never one that holds anything
            try:
                os.rmdir(folder)
            except OSError:
                break
        raise


def _train(config: dict, out_dir: str, resume: bool, progress: bool,
           stop_after_steps: int | None, export: bool, workers: int | None,
           ray_address: str | None, t_start: float,
           stop_after_rl_iterations: int | None = None) -> dict:
    """The body of `train`, once the configuration is checked and out_dir exists."""
    import torch
    from vrat_ros.rl import rl_settings
    rl_cfg = rl_settings(config)
    rl_total = int(rl_cfg['iterations'])
    rl_stop = rl_total if stop_after_rl_iterations is None else min(
        rl_total, int(stop_after_rl_iterations))
    ckpt_path = os.path.join(out_dir, CHECKPOINT_NAME)
    seed = int(config['seed'])
    tcfg = config['train']
    phases = _phase_bounds(config)
    total = phases[-1][1]
    stop = total if stop_after_steps is None else min(total, int(stop_after_steps))

    resumed = None
    if resume and os.path.isfile(ckpt_path):
        resumed = torch.load(ckpt_path, map_location='cpu', weights_only=True)
        _fill_later_settings(resumed['config'])
        mine, theirs = _resume_view(config), _resume_view(resumed['config'])
        if mine != theirs:
            diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            hint = ''
            if 'rl' in diff and resumed['config'].get('rl') is None:
                hint = ('; a run from before the RL stage existed resumes with "rl": null '
                        'in --config')
            raise ValueError(
                f'config differs from the checkpoint in {ckpt_path} (sections {diff}); '
                f'resume needs the same configuration{hint}')

    body = make_body(config)
    rl_clips = training_clips(config, body)
    clips = rl_clips[:len(config['clips'])]  # the originals: the evaluations use these
    if not any(start < clip.duration_s for start in config['eval']['starts_s']
               for clip in clips):
        raise ValueError(f"setting 'eval.starts_s' {config['eval']['starts_s']} has no start "
                         f'within the training clips (the longest lasts '
                         f'{max(c.duration_s for c in clips):.2f} s)')
    joint_idx = observed_joints(body)
    if rl_total > 0:
        from vrat_ros.rl import unsupported_reason
        reason = unsupported_reason(body)
        if reason is not None:
            raise ValueError(f"setting 'rl': {reason}; give \"rl\": null in --config")
    if isinstance(body, RatBody):
        interface = policy_interface(body, int(config['relabel']['frames']))
        joint_fb = joint_feedback_gains(body, clips[0].qpos[0],
                                        config['relabel']['offset_feedback_wn_rad_s'])
    else:
        interface = robot_policy_interface(body, int(config['relabel']['frames']))
        joint_fb = RobotActions(body).feedback(len(joint_idx))
    base_hash = {'seed': seed, 'clips': [file_sha256(p) for p in config['clips']],
                 'body': config['body'], 'frames': config['relabel']['frames'],
                 'activation': config['model']['activation']}
    if robot_of(config) != 'rat':  # the rat's data hashes stay as they were
        base_hash['robot'] = robot_of(config)
    if config.get('expert') is not None:
        base_hash['expert'] = config['expert']
    if config.get('mirror'):
        base_hash['mirror'] = True
    dataset = _Dataset()
    timings = {'data_s': 0.0, 'train_s': 0.0, 'eval_s': 0.0, 'rl_s': 0.0}

    def round_data(r: int, collector: dict | None) -> None:
        """Loads or generates round r's episodes and adds them to the dataset."""
        t0 = time.perf_counter()
        key = {**base_hash, 'round': r, 'data': round_settings(config, r)}
        if collector is not None:
            digest = hashlib.sha256()
            for name in sorted(collector):
                digest.update(collector[name].numpy().tobytes())
            key['collector'] = digest.hexdigest()[:16]
        data_hash = _config_hash(key)
        path = os.path.join(out_dir, f'episodes_r{r}.npz')
        episodes = _load_episodes(path, data_hash)
        if episodes is None:
            state = None if collector is None else {
                k: v.numpy().astype(np.float64) for k, v in collector.items()}
            episodes = generate_episodes(config, r, state, progress=progress,
                                         workers=workers, ray_address=ray_address)
            _save_episodes(path, episodes, data_hash)
        dataset.add(episodes, config, joint_idx, seed + 1000 * r, joint_fb)
        timings['data_s'] += time.perf_counter() - t0

    round_data(0, None)
    obs_train, act_train, obs_val, act_val = dataset.arrays()
    if len(obs_train) == 0:
        raise ValueError('no training examples; increase n_episodes or episode_steps')

    # Torch state: threads, determinism and the seed, restored on exit.
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(int(tcfg['threads']))
    torch.use_deterministic_algorithms(True)
    try:
        torch.manual_seed(seed)
        model = make_model(obs_train.shape[1], act_train.shape[1], config['model'])
        floor = float(config['model']['std_floor'])
        label_train = act_train
        if model.residual:
            model.set_residual_base(*residual_base(body, interface))
            with torch.no_grad():
                base = model.base(torch.from_numpy(obs_train)).numpy()
            label_train = act_train - base
        with torch.no_grad():
            # Normalisers and bounds come from round 0 and stay fixed afterwards.
            model.obs_mean.copy_(torch.from_numpy(
                obs_train.mean(0, dtype=np.float64).astype(np.float32)))
            model.obs_std.copy_(torch.from_numpy(np.maximum(
                obs_train.std(0, dtype=np.float64), floor).astype(np.float32)))
            model.act_mean.copy_(torch.from_numpy(
                label_train.mean(0, dtype=np.float64).astype(np.float32)))
            model.act_std.copy_(torch.from_numpy(np.maximum(
                label_train.std(0, dtype=np.float64), floor).astype(np.float32)))
            bound_q = config['model'].get('action_bound_quantile')
            if bound_q is not None:
                lo = np.quantile(act_train, bound_q, axis=0)
                hi = np.quantile(act_train, 1.0 - bound_q, axis=0)
                margin = config['model']['action_bound_margin'] * (hi - lo)
                model.act_lo.copy_(torch.from_numpy(
                    np.clip(lo - margin, -1.0, 1.0).astype(np.float32)))
                model.act_hi.copy_(torch.from_numpy(
                    np.clip(hi + margin, -1.0, 1.0).astype(np.float32)))
        optimizer = torch.optim.Adam(model.parameters(), lr=tcfg['lr'],
                                     weight_decay=tcfg['weight_decay'])
        step, history, evals, best, running, collectors = 0, [], [], None, [], {}
        rl_run = {'tuner': None, 'history': [], 'state': None}
        ema_decay = tcfg.get('ema_decay')
        ema = _clone_state(model) if ema_decay else None
        if resumed is not None:
            model.load_state_dict(resumed['model'])
            optimizer.load_state_dict(resumed['optimizer'])
            step = int(resumed['step'])
            history = list(resumed['history'])
            evals = list(resumed['evals'])
            best = resumed['best']
            running = list(resumed['running'])
            collectors = dict(resumed['collectors'])
            ema = resumed['ema']
            rl_run['history'] = list(resumed.get('rl_history', []))
            rl_run['state'] = resumed.get('rl')

        eval_body = make_body(config)
        policy = TorchPolicy(model, interface)
        tensors = {}

        def load_tensors() -> None:
            arrays = dataset.arrays()
            for name, value in zip(('x_train', 'y_train', 'x_val', 'y_val'), arrays):
                tensors[name] = torch.from_numpy(value)

        def normalised(x, y):
            if model.residual:
                y = y - model.base(x)
            return (x - model.obs_mean) / model.obs_std, (y - model.act_mean) / model.act_std

        def val_loss() -> float | None:
            if len(tensors['x_val']) == 0:
                return None
            with torch.no_grad():
                xn, yn = normalised(tensors['x_val'], tensors['y_val'])
                return float(torch.mean((model.forward_normalised(xn)[0] - yn) ** 2))

        def run_eval(at_step: int, rl_iteration: int | None = None) -> None:
            nonlocal best
            t0 = time.perf_counter()
            raw = _clone_state(model)
            if ema is not None and rl_iteration is None:  # RL tunes the weights themselves
                model.load_state_dict(ema)
            model.eval()
            result = evaluate_policy(policy, eval_body, clips, config['eval'])
            result['step'] = at_step
            result['val_loss'] = val_loss()
            if rl_iteration is not None:
                result['rl_iteration'] = rl_iteration
            evals.append(_json_ready(result))
            if best is None or result['score'] < best['score']:
                best = {'score': result['score'], 'step': at_step, 'model': _clone_state(model)}
                if rl_iteration is not None:
                    best['rl_iteration'] = rl_iteration
            model.load_state_dict(raw)
            model.train()
            timings['eval_s'] += time.perf_counter() - t0

        def checkpoint() -> None:
            _save_checkpoint(ckpt_path, _json_ready({
                'model': model.state_dict(), 'optimizer': optimizer.state_dict(),
                'step': step, 'config': config, 'interface': interface,
                'history': history, 'running': running, 'evals': evals, 'best': best,
                'collectors': collectors, 'ema': ema,
                'rl': (rl_run['tuner'].state_dict() if rl_run['tuner'] is not None
                       else rl_run['state']),
                'rl_history': rl_run['history'],
                'data': {'n_episodes': dataset.n_episodes,
                         'n_transitions': dataset.n_transitions,
                         'n_train': int(len(tensors['x_train'])),
                         'n_val': int(len(tensors['x_val']))}}))

        def run_rl() -> None:
            """The RL stage (vrat_ros.rl): PPO from the best imitation weights."""
            from vrat_ros.rl import PPOFineTuner
            from vrat_ros.rl import TrackingEnvs
            t0 = time.perf_counter()
            if rl_run['state'] is None and best is not None:
                model.load_state_dict(best['model'])
            envs = TrackingEnvs(body, rl_clips, int(config['relabel']['frames']), joint_idx,
                                rl_cfg)
            tuner = PPOFineTuner(model, envs, rl_cfg, seed)
            if rl_run['state'] is not None:
                tuner.load_state_dict(rl_run['state'])
            rl_run['tuner'] = tuner
            rl_bar = None
            if progress:
                from tqdm import tqdm
                rl_bar = tqdm(total=rl_total, initial=tuner.iteration, desc='RL fine-tuning',
                              unit='it')
            while tuner.iteration < rl_stop:
                stats = tuner.iterate()
                it = stats['iteration']
                if it % int(rl_cfg['log_every']) == 0 or it == rl_total:
                    rl_run['history'].append(stats)
                    if rl_bar is not None:
                        ended = stats['episode_s']
                        rl_bar.set_postfix(reward=f"{stats['reward']:.3f}",
                                           episode_s='-' if ended is None else f'{ended:.2f}')
                if it % int(rl_cfg['eval_every']) == 0 or it == rl_total:
                    timings['rl_s'] += time.perf_counter() - t0
                    run_eval(step, rl_iteration=it)
                    t0 = time.perf_counter()
                    if rl_bar is not None:
                        rl_bar.set_postfix(reward=f"{stats['reward']:.3f}",
                                           score=f"{evals[-1]['score']:.1f}")
                if it % int(rl_cfg['checkpoint_every']) == 0 or it in (rl_total, rl_stop):
                    checkpoint()
                if rl_bar is not None:
                    rl_bar.update(1)
            if rl_bar is not None:
                rl_bar.close()
            rl_run['state'] = tuner.state_dict()
            timings['rl_s'] += time.perf_counter() - t0

        load_tensors()
        eval_every = int(config['eval']['every'])
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=total, initial=step, desc='training', unit='step')
        model.train()
        for r, phase in enumerate(phases):
            if r > 0:
                # A round not begun (an interruption at its start stops here) adds no data;
                # one begun, or done before a resume, adds its data again (from its file).
                if step < phase[0] or (step == phase[0] and step >= stop):
                    break
                # The best policy so far collects this round's data.
                if str(r) not in collectors:
                    source = best['model'] if best is not None else model.state_dict()
                    collectors[str(r)] = {k: v.detach().clone() for k, v in source.items()}
                round_data(r, collectors[str(r)])
                load_tensors()
            if step >= min(phase[1], stop):
                continue
            t_train = time.perf_counter()
            x_train, y_train = tensors['x_train'], tensors['y_train']
            while step < min(phase[1], stop):
                for group in optimizer.param_groups:
                    group['lr'] = _lr_at(step, phase, tcfg)
                batch = np.random.default_rng([seed, 3, step]).integers(
                    0, len(x_train), int(tcfg['batch_size']))
                index = torch.from_numpy(batch)
                xn, yn = normalised(x_train[index], y_train[index])
                loss = torch.mean((model.forward_normalised(xn)[0] - yn) ** 2)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if ema is not None:
                    # Shorter memory early on, so the average does not hold the init.
                    decay = min(ema_decay, (1.0 + step) / (10.0 + step))
                    with torch.no_grad():
                        for name, value in model.state_dict().items():
                            if value.is_floating_point():
                                ema[name].mul_(decay).add_(value, alpha=1.0 - decay)
                            else:  # index buffers (a residual model's base) stay as they are
                                ema[name].copy_(value)
                step += 1
                running.append(float(loss.detach()))
                if step % int(tcfg['log_every']) == 0 or step == phase[1]:
                    history.append({'step': step, 'loss': float(np.mean(running))})
                    running = []
                    if bar is not None:
                        bar.set_postfix(loss=f"{history[-1]['loss']:.4f}")
                if (eval_every > 0 and step % eval_every == 0) or step == phase[1]:
                    timings['train_s'] += time.perf_counter() - t_train
                    run_eval(step)
                    t_train = time.perf_counter()
                    if bar is not None:
                        bar.set_postfix(loss=f"{history[-1]['loss']:.4f}",
                                        score=f"{evals[-1]['score']:.1f}")
                if step % int(tcfg['checkpoint_every']) == 0 or step in (phase[1], stop):
                    checkpoint()
                if bar is not None:
                    bar.update(1)
            timings['train_s'] += time.perf_counter() - t_train
        if bar is not None:
            bar.close()
        if rl_total > 0 and step >= total:
            run_rl()
        final_val_loss = val_loss()
    finally:
        torch.set_num_threads(prev_threads)
        torch.use_deterministic_algorithms(prev_det)

    summary = {
        'out_dir': os.path.abspath(out_dir),
        'checkpoint': ckpt_path,
        'step': step,
        'total_steps': total,
        'complete': step >= total and rl_iterations_done(rl_run) >= rl_total,
        'rl_iterations': rl_iterations_done(rl_run),
        'rl_history': rl_run['history'],
        'seed': seed,
        **timings,
        'n_episodes': dataset.n_episodes,
        'n_transitions': dataset.n_transitions,
        'n_examples': int(len(tensors['x_train']) + len(tensors['x_val'])),
        'initial_loss': history[0]['loss'] if history else None,
        'final_loss': history[-1]['loss'] if history else None,
        'val_loss': final_val_loss,
        'best_step': None if best is None else best['step'],
        'best_score': None if best is None else best['score'],
        'evals': [{k: v for k, v in e.items() if k != 'runs'} for e in evals],
        'best_rl_iteration': None if best is None else best.get('rl_iteration'),
        'best_eval': next((e for e in evals if best and e['step'] == best['step']
                           and e.get('rl_iteration') == best.get('rl_iteration')), None),
    }
    if export and summary['complete']:
        from vrat_ros.export import export_onnx
        path = os.path.join(out_dir, POLICY_NAME)
        parity = tensors['x_val'] if len(tensors['x_val']) else tensors['x_train']
        export_onnx(ckpt_path, path, parity_observations=parity[:256].numpy())
        summary['policy'] = path
    summary['total_s'] = time.perf_counter() - t_start
    summary = _json_ready(summary)

    def write(tmp):
        with open(tmp, 'w') as f:
            json.dump(summary, f, indent=1, sort_keys=True)
    atomic_write(os.path.join(out_dir, SUMMARY_NAME), write)
    return summary
