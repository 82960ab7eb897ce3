"""The `vrat` command: inspect the body, run the closed loop, fit clips, train and export."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile

from vrat_ros.errors import VratError


def _check_output_path(path: str | None, make_folders: bool = False) -> None:
    """Refuses, before any work, an output path that cannot be written.

    That is a path that is a folder, in a missing folder, or in a folder that does not
    accept a new file (read-only, no permission): a uniquely named empty file is created
    there and deleted again.

    Args:
        path: the output file (None: nothing to check).
        make_folders: the writer creates missing folders (and `path` may be a folder that
            receives files): then the nearest existing folder is the one probed.

    Raises:
        ValueError: the path cannot be written; the message names `path`.
    """
    if path is None:
        return
    if os.path.isdir(path) and not make_folders:
        raise ValueError(f"output '{path}' is a folder; give a file name")
    if os.path.exists(path) and not os.path.isdir(path) and not os.path.isfile(path):
        raise ValueError(f"output '{path}' exists and is not a regular file (a device or a "
                         'pipe); give a file path')
    path = os.path.realpath(path)  # a link's target is what gets written
    folder = os.path.abspath(path) if os.path.isdir(path) else \
        os.path.dirname(os.path.abspath(path))
    if make_folders:
        while not os.path.exists(folder) and os.path.dirname(folder) != folder:
            folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise ValueError(f"output folder '{folder}' does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix='.vrat-probe-', dir=folder)
    except OSError as exc:
        raise ValueError(f"cannot write output '{path}': its folder '{folder}' does not "
                         f'accept new files ({exc.strerror or exc})') from None
    os.close(fd)
    os.unlink(probe)


def _write_json_atomic(path: str, obj: dict) -> None:
    from vrat_ros.clip import atomic_write

    def write(tmp):
        with open(tmp, 'w') as f:
            json.dump(obj, f, indent=2, sort_keys=False)
            f.write('\n')
    atomic_write(path, write)


def _cmd_model(args: argparse.Namespace) -> int:
    from vrat_ros.rat_model import RatBody
    body = RatBody(scale=args.scale, actuators=args.actuators)
    info = body.describe()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"rat body: nq={info['nq']} nv={info['nv']} nu={info['nu']} "
              f"mass={info['mass_kg']:.4f} kg scale={info['scale']} "
              f"actuators={info['actuators_variant']} timestep={info['timestep_s']} s")
        print('actuators: ' + ', '.join(info['actuator_names']))
    return 0


def _metrics_subset(metrics: dict) -> dict:
    keys = ('joint_rmse_rad', 'actuated_joint_rmse_rad', 'body_pos_error_mm',
            'root_pos_error_mm', 'tracked_fraction', 'first_failure_frame', 'failure_reason')
    return {k: metrics[k] for k in keys if k in metrics}


# The baselines of `vrat run`: (report key, controller, note) per kind of body.
_RAT_BASELINES = (('zero_torque', 'zero', None), ('pd', 'pd', None))
_POSITION_BASELINES = (
    ('zero_action', 'zero', 'holds the standing pose: its joint angles as position targets, '
                            'the zero action of a position policy'),
    ('pd', 'pd', 'the reference joint angles of the next control step as position targets, '
                 "tracked by the robot's PD loop at physics rate"))
_EFFORT_BASELINES = (
    ('zero_torque', 'zero', None),
    ('pd', 'pd', "kp (q_ref - q) + kd (qd_ref - qd) with the robot file's pd gains"))


def _run_inputs(args: argparse.Namespace):
    """(robot spec or None for the rat, clip path, policy path) of `vrat run`.

    Raises:
        VratError, ValueError: (one line) an unknown robot, or a robot without a default clip
            or policy file; the missing policy's message says how to make one.
    """
    from vrat_ros import resources
    from vrat_ros.robots import is_rat
    from vrat_ros.robots import load_robot_spec
    if args.robot is None or is_rat(args.robot):
        clip_path = resources.resolve_clip_path(args.clip) if args.clip else \
            resources.default_clip_path()
        return None, clip_path, args.policy or resources.default_policy_path()
    spec = load_robot_spec(args.robot)
    clip_path = resources.resolve_clip_path(args.clip) if args.clip else \
        resources.robot_default_clip(spec)
    if clip_path is None:
        raise ValueError(f"robot '{spec.name}' names no default clip (defaults.clip in "
                         f"'{spec.path}'); give --clip")
    if args.plots:
        # NOTE: vrat_ros/plots.py groups joints by the rat's names; not drawn for robots yet.
        raise ValueError("--plots draws the rat's joint groups; it is not available with "
                         '--robot yet')
    return spec, clip_path, resources.robot_policy_path(spec, args.policy)


def _cmd_run(args: argparse.Namespace) -> int:
    from vrat_ros import rat_constants as rc
    from vrat_ros.clip import Clip
    from vrat_ros.rat_model import RatBody
    from vrat_ros.tracking import tracking_limits
    from vrat_ros.tracking import tracking_metrics

    spec, clip_path, policy_path = _run_inputs(args)
    for path in (args.report, args.record, args.activations):
        _check_output_path(path)
    if not re.fullmatch(r'/|(/?[A-Za-z][A-Za-z0-9_]*)(/[A-Za-z][A-Za-z0-9_]*)*', args.namespace):
        raise ValueError(f"namespace should look like '/' or '/my_ns': got '{args.namespace}'")
    clip = Clip.load(clip_path)
    body_name = 'rat' if spec is None else spec.name
    if clip.meta.get('robot', body_name) != body_name:
        hint = f" (give --robot {clip.meta['robot']})" if spec is None else ''
        raise ValueError(f"clip '{clip_path}' was made for robot '{clip.meta['robot']}', not "
                         f"for '{body_name}'{hint}")
    try:
        from vrat_ros.loop import run_ros_loop
        import rclpy  # noqa: F401
    except ImportError as exc:
        print(f'vrat run: needs the ROS 2 Python runtime ({exc}); install it with '
              "pip install -e '.[ros]' in a vrat_ros checkout or source a ROS 2 install",
              file=sys.stderr)
        return 1

    from vrat_ros.introspection import parse_lesion_specs
    from vrat_ros.introspection import tracking_change
    lesions = parse_lesion_specs(args.lesion)
    if spec is None:
        body = RatBody(scale=clip.body_scale)
        body_kwargs = {'body_scale': clip.body_scale}
        rate_hz = rc.CONTROL_RATE_HZ
        baselines = _RAT_BASELINES
    else:
        from vrat_ros.policy import read_contract
        from vrat_ros.robots import Robot
        body = Robot(args.robot)
        body_kwargs = {'body_scale': None, 'robot': args.robot}
        rate_hz = float(read_contract(policy_path)['control_rate_hz'])
        baselines = (_POSITION_BASELINES if spec.command_interface == 'position'
                     else _EFFORT_BASELINES)
    result = run_ros_loop(clip_path, policy_path, seconds=args.seconds,
                          start_time_s=args.start, progress=not args.no_progress,
                          namespace=args.namespace, record_path=args.record,
                          activations_path=args.activations, lesions=lesions or None,
                          lesion_seed=args.lesion_seed, **body_kwargs)
    metrics = tracking_metrics(body, result.qpos, result.ref_qpos)
    report = {
        'clip': os.path.abspath(clip_path),
        'clip_title': clip.meta.get('title', clip.meta.get('source_file', '')),
        'policy': os.path.abspath(policy_path),
        'frames': int(result.qpos.shape[0]),
        'start_time_s': args.start,
        'control_rate_hz': rate_hz,
        'sim_seconds': round(float(result.sim_seconds), 6),
        'wall_seconds': round(float(result.wall_seconds), 3),
        'realtime_factor': round(float(result.sim_seconds / max(result.wall_seconds, 1e-9)), 3),
        'tracking': _metrics_subset(metrics),
        'saturated_actuator_steps': int(result.n_saturated),
        'rejected_commands': int(result.rejected_commands),
        'sim_halted': bool(result.halted),
        'tracked_threshold': {
            **tracking_limits(body),  # the rat's constants, or the robot file's limits
            'note': 'tracked_fraction is the share of frames before the first frame that '
                    'breaks any of these; the error figures average over all frames',
        },
    }
    if spec is not None:
        report = {'robot': {'name': spec.name, 'file': os.path.abspath(spec.path),
                            'command_interface': spec.command_interface}, **report}
    if not args.no_baselines:
        from vrat_ros.controllers import ControllerError
        from vrat_ros.evaluate import make_controller
        from vrat_ros.rollout import run_inline
        report['baselines'] = {}
        for name, kind, note in baselines:
            try:
                base = run_inline(body, clip, make_controller(kind), seconds=result.sim_seconds,
                                  start_time_s=args.start)
            except ControllerError as exc:  # e.g. an effort robot without pd gains
                report['baselines'][name] = {'skipped': str(exc)}
                continue
            report['baselines'][name] = _metrics_subset(base.metrics)
            if note:
                report['baselines'][name]['note'] = note
    if args.record:
        report['recording'] = os.path.abspath(args.record)
    if args.activations:
        report['activations'] = os.path.abspath(args.activations)
    if lesions:  # the effect of the lesion: the same span without it
        report['lesions'] = result.lesions
        intact = run_ros_loop(clip_path, policy_path, seconds=args.seconds,
                              start_time_s=args.start, namespace=args.namespace,
                              **body_kwargs)
        intact_metrics = _metrics_subset(tracking_metrics(body, intact.qpos, intact.ref_qpos))
        report['lesion_effect'] = {
            'intact': intact_metrics,
            'change': tracking_change(intact_metrics, report['tracking'])}
    if args.plots:
        from vrat_ros.plots import write_tracking_plots
        report['plots'] = write_tracking_plots(
            args.plots, result.times, result.qpos, result.ref_qpos, body,
            torques=result.torques, torque_times=result.times[:-1])
    print(json.dumps(report, indent=2))
    if args.report:
        _write_json_atomic(args.report, report)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from vrat_ros import resources
    from vrat_ros.train import default_config
    from vrat_ros.train import require_torch
    from vrat_ros.train import train
    from vrat_ros.train import validate_config
    from vrat_ros.robots import load_robot_spec
    require_torch()  # before any work: a missing extra is one line, not a traceback
    update = _read_train_config(args.config) if args.config else {}
    robot = args.robot
    if 'robot' in update:  # the body is chosen before the defaults it brings
        if robot is not None and _robot_key(update['robot']) != _robot_key(robot):
            raise ValueError(f"config '{args.config}' trains robot {update['robot']!r} but "
                             f'--robot says {robot!r}; give one of them')
        robot = update['robot']
    robot = 'rat' if robot is None else robot
    if not isinstance(robot, str) or not robot:
        raise ValueError(f"config '{args.config}': setting 'robot' should be 'rat' or a robot "
                         f'name: got {robot!r}')
    spec = load_robot_spec(robot)  # an unknown robot is named here, before any work
    robot = 'rat' if spec.name == 'rat' else robot
    config = default_config(small=args.small, robot=robot)
    if args.clips:  # before the file is checked: a robot without shipped clips needs them
        config['clips'] = list(args.clips)
    if args.config:
        config = _load_train_config(args.config, config, update)
    config['robot'] = robot
    if args.seed is not None:
        config['seed'] = args.seed
    if args.clips:  # the command line wins over the file
        config['clips'] = list(args.clips)
    if not config['clips']:
        raise ValueError(f"robot '{spec.name}' has no shipped training clips; give some "
                         'with --clips (make them with vrat retarget)')
    validate_config(config)
    # Clip names that `vrat clips` lists work as well as paths, as in run and eval.
    config['clips'] = [os.path.abspath(resources.resolve_clip_path(c)) for c in config['clips']]
    held_out = set(resources.HELD_OUT_CLIPS) | {
        os.path.splitext(os.path.basename(c))[0] for c in resources.robot_eval_clips(spec)}
    used = sorted({os.path.splitext(os.path.basename(c))[0] for c in config['clips']} & held_out)
    if used and not args.allow_held_out:
        raise ValueError(f'training clips {used} are held out for evaluation (vrat eval scores '
                         'policies on them); train on others, or give --allow-held-out')
    if args.workers is not None and args.workers < 1:
        raise ValueError(f'--workers should be at least 1: got {args.workers}')
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ValueError(f"--out '{args.out}' is a file; give a folder for the run")
    has_run = os.path.isfile(os.path.join(args.out, 'checkpoint.pt'))
    if not args.resume and has_run:
        raise ValueError(f"'{args.out}' already holds a training run; give --resume to go on "
                         'with it, or another --out')
    if args.resume and not has_run:
        print(f"vrat train: no checkpoint in '{args.out}' to resume; starting a new run",
              file=sys.stderr)
    summary = train(config, args.out, resume=args.resume, progress=not args.no_progress,
                    export=not args.no_export, workers=args.workers,
                    ray_address=args.ray_address)
    keep = ('out_dir', 'checkpoint', 'policy', 'step', 'total_steps', 'complete', 'seed',
            'n_transitions', 'initial_loss', 'final_loss', 'val_loss', 'best_step',
            'rl_iterations', 'best_rl_iteration', 'rl_s', 'total_s', 'best_eval')
    print(json.dumps({k: summary[k] for k in keep if k in summary}, indent=2))
    return 0


def _robot_key(name) -> str:
    """What a robot name or YAML path refers to, for comparing two of them."""
    from vrat_ros.robots import load_robot_spec
    try:
        return load_robot_spec(name).name
    except Exception:  # unknown or broken: compare the text; load_robot_spec names it later
        return str(name)


# Longest integer a --config file may spell out; Python refuses to convert ones of over
# 4300 digits with a message about its own internals, and no setting needs more than this.
_MAX_CONFIG_DIGITS = 30


def _config_int(text: str) -> int:
    digits = len(text.lstrip('-'))
    if digits > _MAX_CONFIG_DIGITS:
        raise ValueError(f'an integer of {digits} digits (at most {_MAX_CONFIG_DIGITS})')
    return int(text)


def _read_train_config(path: str) -> dict:
    """Reads a --config JSON object; errors name the file."""
    with open(path, encoding='utf-8') as f:
        try:
            update = json.load(f, parse_int=_config_int)
        except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
            raise ValueError(f"config '{path}' is not valid JSON: {exc}") from None
    if not isinstance(update, dict):
        raise ValueError(f"config '{path}' should hold a JSON object of settings: got "
                         f'{type(update).__name__}')
    return update


def _load_train_config(path: str, config: dict, update: dict | None = None) -> dict:
    """Merges the settings of the JSON file `path` into `config`; errors name the file."""
    from vrat_ros.train import validate_config
    if update is None:
        update = _read_train_config(path)
    try:
        _merge(config, update)
        validate_config(config)
    except ValueError as exc:
        raise ValueError(f"config '{path}': {exc}") from None
    return config


def _merge(base: dict, update: dict, prefix: str = '') -> None:
    """Merges `update` into `base` recursively; unknown keys are refused.

    'rounds.data' takes any of the 'data' settings (validate_config checks them).
    """
    for key, value in update.items():
        name = f'{prefix}.{key}' if prefix else key
        if key not in base:
            raise ValueError(f"unknown training setting '{name}'; known: {sorted(base)}")
        if name == 'rl' and isinstance(value, dict) and isinstance(base[key], dict):
            # A default 'rl' section names only what differs from vrat_ros.rl.DEFAULT_RL;
            # a file may set any of those settings (validate_config checks them).
            merged = {**base[key], **value}
            rewards = (base[key].get('reward'), value.get('reward'))
            if all(isinstance(r, dict) for r in rewards):
                merged['reward'] = {**rewards[0], **rewards[1]}
            base[key] = merged
        elif name == 'rounds.data' and isinstance(value, dict):
            base[key].update(value)
        elif isinstance(base[key], dict) and isinstance(value, dict):
            _merge(base[key], value, name)
        else:
            base[key] = value


def _cmd_export(args: argparse.Namespace) -> int:
    from vrat_ros.export import export_onnx
    if not os.path.isfile(args.checkpoint):
        raise ValueError(f"checkpoint '{args.checkpoint}' does not exist; give the "
                         'checkpoint.pt that vrat train wrote')
    _check_output_path(args.out)
    contract = export_onnx(args.checkpoint, args.out, which=args.which)
    print(f"wrote {args.out}: {len(contract['joint_names'])} joints, "
          f"{len(contract['actuator_names'])} actuators, observation "
          f"{contract['observation']['size']}, layers {contract.get('layers', [])}; "
          'torch and onnxruntime agree within 1e-5')
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='vrat', description='Virtual rat tools: body, closed loop, clips and policies.')
    sub = parser.add_subparsers(dest='command', required=True)

    p = sub.add_parser('model',
                       help='Print the body model: sizes, mass, joint and actuator names.')
    p.add_argument('--json', action='store_true', help='Print the summary as JSON.')
    p.add_argument('--scale', type=float, default=0.9,
                   help='Body length scale (default 0.9, as published fits of real rats).')
    p.add_argument('--actuators', choices=['torque', 'servo'], default='torque',
                   help='Actuator variant (default torque).')
    p.set_defaults(func=_cmd_model)

    p = sub.add_parser(
        'run', help='Run the closed loop through the three ROS 2 nodes in one process '
                    '(lockstep) and print a tracking report with zero-torque and PD baselines.')
    p.add_argument('--robot', metavar='NAME_OR_YAML',
                   help='The body: a robot name in config/robots (e.g. quadruped) or a robot '
                        "YAML path (default: the rat); its file's defaults give the clip and "
                        'the policy.')
    p.add_argument('--clip', help='Reference clip: a .npz path or a name from vrat clips; '
                                  "default: the shipped real rat clip (for --robot, the robot "
                                  "file's defaults.clip).")
    p.add_argument('--policy', help="ONNX policy; default: the shipped policy (for --robot, the "
                                    "robot file's defaults.policy).")
    p.add_argument('--seconds', type=float, default=None,
                   help='Simulated seconds to run (default: the whole clip).')
    p.add_argument('--start', type=float, default=0.0,
                   help='Clip time (s) to start from (default 0).')
    p.add_argument('--report', help='Also write the JSON report to this file.')
    p.add_argument('--no-baselines', action='store_true',
                   help='Skip the zero-torque (a position robot: hold the standing pose) and '
                        'PD baselines.')
    p.add_argument('--no-progress', action='store_true', help='Hide the progress bar.')
    p.add_argument('--record', metavar='FILE.mcap',
                   help='Record every topic of the run to an MCAP file (ROS 2 encoding).')
    p.add_argument('--plots', metavar='DIR',
                   help='Write PNG plots (joint tracking, body error, saturation) to DIR.')
    p.add_argument('--activations', metavar='FILE.h5',
                   help='Record per control step: time, clip frame, reference window, '
                        'observation, action, torques and every hidden layer (HDF5, opens '
                        'with h5py alone).')
    p.add_argument('--lesion', action='append', metavar='LAYER.FIELD=VALUE',
                   help="Perturb hidden units while the loop runs, e.g. "
                        "'hidden_0.silence=0,3,8:16', 'hidden_1.noise=0:64', "
                        "'hidden_1.noise_std=0.2' (repeatable); the report then compares "
                        'tracking with an intact run of the same span.')
    p.add_argument('--lesion-seed', type=int, default=0,
                   help='Seed of noise lesions (default 0).')
    p.add_argument('--namespace', default='/',
                   help="ROS namespace of the run's nodes and topics (default '/').")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser(
        'train', help='Train the inverse-dynamics policy on CPU and export it to ONNX '
                      '(generated PD rollouts around the clips, hindsight relabelling, one '
                      'round on its own rollouts; see vrat_ros/train.py).')
    p.add_argument('--out', default='runs/train',
                   help='Output folder: data, checkpoint.pt, policy.onnx, summary.json '
                        '(default runs/train).')
    p.add_argument('--small', action='store_true',
                   help='A quick configuration (seconds; for CI and smoke tests).')
    p.add_argument('--robot', default=None,
                   help="Body to train: 'rat' (default), or a robot name in config/robots "
                        '(e.g. quadruped) or a robot YAML file; a robot trains on its '
                        "shipped retargeted clips unless --clips is given (a --config file's "
                        "'robot' setting does the same).")
    p.add_argument('--allow-held-out', action='store_true',
                   help='Allow training on the held-out evaluation clips (refused by '
                        'default: vrat eval scores policies on them).')
    p.add_argument('--config', help='JSON file whose settings override the defaults (its '
                   "'clips' may be files or names that `vrat clips` lists).")
    p.add_argument('--seed', type=int, help='Random seed (default 0).')
    p.add_argument('--clips', nargs='+', metavar='CLIP',
                   help='Training clips: files, or names that `vrat clips` lists (default: '
                        'the shipped real rat clip).')
    p.add_argument('--resume', action='store_true',
                   help='Continue from OUT/checkpoint.pt; gives the same result as one run.')
    p.add_argument('--no-export', action='store_true', help='Skip the ONNX export.')
    p.add_argument('--no-progress', action='store_true', help='Hide the progress bars.')
    p.add_argument('--workers', type=int, metavar='N',
                   help="Episode-collection processes, or Ray actors with --ray-address "
                        "(default: the config's data.n_workers, 2; with --ray-address, "
                        'every CPU of the cluster). The results do not depend on it.')
    p.add_argument('--ray-address', metavar='ADDRESS',
                   help="Collect episodes on Ray: 'local' (a private Ray on this machine), "
                        "or HOST:PORT of a cluster started with 'ray start --head' (needs "
                        "pip install -e '.[scale]' in a vrat_ros checkout).")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser('export', help='Export a training checkpoint to ONNX with its contract.')
    p.add_argument('checkpoint', help='checkpoint.pt written by vrat train.')
    p.add_argument('--out', required=True, help='Destination .onnx file.')
    p.add_argument('--which', choices=['best', 'latest'], default='best',
                   help="'best' (chosen by closed-loop tracking, default) or 'latest' weights.")
    p.set_defaults(func=_cmd_export)

    # Subcommands that live beside the code they drive.
    from vrat_ros import analysis
    from vrat_ros import bench
    from vrat_ros import cli_import
    from vrat_ros import evaluate
    from vrat_ros import render
    from vrat_ros import retarget
    from vrat_ros import scaling
    cli_import.add_subcommands(sub)
    render.add_subcommands(sub)
    analysis.add_subcommands(sub)
    bench.add_subcommands(sub)
    scaling.add_subcommands(sub)
    evaluate.add_subcommands(sub)
    retarget.add_subcommands(sub)
    try:
        from vrat_ros import recorder
    except ImportError as exc:  # no rclpy: say so when these commands are asked for
        for name in ('record', 'replay'):
            p = sub.add_parser(name, help=f'(unavailable: {exc})')
            p.set_defaults(func=lambda args, why=str(exc): _needs_ros(args, why))
    else:
        recorder.add_subcommands(sub)
    return parser


def _needs_ros(args: argparse.Namespace, why: str) -> int:
    print(f'vrat {args.command}: needs the ROS 2 Python runtime ({why}); install it with '
          "pip install -e '.[ros]' in a vrat_ros checkout or source a ROS 2 install",
          file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of `vrat`; returns 0 on success, 1 on failure, 2 on usage errors."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        from rclpy.utilities import remove_ros_args
        argv = remove_ros_args(['vrat'] + list(argv))[1:]
    except ImportError:
        pass
    try:
        import mujoco  # noqa: F401  (fails at import when MUJOCO_GL names a missing library)
    except Exception as exc:  # mujoco raises several kinds here; all mean the same to a user
        print(f"vrat: cannot load MuJoCo with MUJOCO_GL={os.environ.get('MUJOCO_GL', '')!r}: "
              f'{type(exc).__name__}: {exc}. Unset MUJOCO_GL, or install the library it names '
              '(e.g. libosmesa6 for osmesa), or use MUJOCO_GL=egl.', file=sys.stderr)
        return 1
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (VratError, ValueError, OSError) as exc:
        print(f'vrat {args.command}: {exc}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f'vrat {args.command}: interrupted; no report was written', file=sys.stderr)
        return 130


if __name__ == '__main__':
    sys.exit(main())
