"""The `vrat import` and `vrat clips` subcommands (argparse only; heavy modules load on use)."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

from vrat_ros.errors import VratError

# Mirrors vrat_ros.importers.FORMATS (a test keeps them equal), so `vrat --help` stays fast.
FORMATS = ('auto', 'stac', 'dannce', 'nwb', 'rat7m', 'npz')
UNITS = ('auto', 'mm', 'cm', 'm')


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a finite number > 0: got {text!r}') from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f'expected a finite number > 0: got {text!r}')
    return value


def _frame_rate(text: str) -> float:
    from vrat_ros.clip import check_fps  # the bounds every clip is held to
    try:
        return check_fps(_positive_float(text), 'the frame rate')
    except VratError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a finite number >= 0: got {text!r}') from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f'expected a finite number >= 0: got {text!r}')
    return value


def _scale(text: str) -> float | str:
    return 'fit' if text == 'fit' else _positive_float(text)


def _frame_range(text: str) -> tuple[int, int]:
    try:
        start, stop = (int(v) for v in text.split(':'))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'expected START:STOP frame indices (stop exclusive): got {text!r}') from None
    if not 0 <= start < stop:
        raise argparse.ArgumentTypeError(f'expected 0 <= START < STOP: got {text!r}')
    return start, stop


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Adds `import` and `clips` to the `vrat` command's subparsers."""
    p = subparsers.add_parser(
        'import', help='Import a real rat recording (STAC, DANNCE, NWB, Rat7M) as a clip.',
        description='Import a real rat recording as a reference clip. Joint angles (STAC) '
                    'are checked against the body; keypoints are fitted to it by inverse '
                    'kinematics, frame by frame. Prints a summary; the clip goes to --out or '
                    'to the clip library (see `vrat clips`).')
    p.add_argument('path', help='The recording: .p/.h5 (STAC qpos), .mat (DANNCE `pred` or '
                                'Rat7M `data_3d`), .nwb (ndx-pose) or .npz (keypoints).')
    p.add_argument('--format', choices=FORMATS, default='auto',
                   help='File format (default auto: detected from the content).')
    p.add_argument('--fps', type=_frame_rate,
                   help='Frame rate of the recording in Hz (default: the rate the file '
                        'stores; else 30 for Rat7M and 50 otherwise, reported as assumed).')
    p.add_argument('--units', choices=UNITS, default='auto',
                   help='Length unit of keypoints (default auto: detected and reported).')
    p.add_argument('--scale', type=_scale,
                   help="Body scale of the clip, or 'fit' to estimate it from the keypoints "
                        '(default: the file\'s for joint angles, else 0.9).')
    p.add_argument('--animal-scale', type=_scale,
                   help="Size of the recorded animal on the body's scale, or 'fit'; the "
                        'motion is scaled by scale/animal-scale about the floor before the '
                        'fit (default: no scaling).')
    p.add_argument('--marker-set',
                   help='Keypoint-to-body mapping: a shipped name (rat23, rat7m20) or a YAML '
                        'file in the same layout (default: the shipped set that fits).')
    p.add_argument('--frames', type=_frame_range, metavar='START:STOP',
                   help='Import only these frames (stop exclusive).')
    p.add_argument('--resample', type=_positive_float, metavar='HZ',
                   help='Resample the clip by time to this rate (default: keep the source '
                        'rate).')
    p.add_argument('--smooth', type=_non_negative_float, default=0.0, metavar='SECONDS',
                   help='Low-pass the fitted poses with a zero-phase Gaussian of this '
                        'standard deviation (default 0: off; 0.033 is one Rat7M frame; at '
                        'most 1 s and no longer than the clip).')
    p.add_argument('--no-fill-gaps', action='store_true',
                   help='Keep the solver\'s joint angles where markers are missing instead of '
                        'interpolating the joints they observe across the gap.')
    p.add_argument('--support-weight', type=_non_negative_float, default=0.0, metavar='W',
                   help='Make fitted poses physically supportable where no keypoint observes '
                        'a paw: pull the soles of paws that can reach the floor down to it '
                        'and the centre of mass over them, with this weight against the '
                        'keypoints (default 0: off; 3 was measured on the Rat7M clips, see '
                        'vrat_ros.keypoint_fit.KeypointFitter).')
    p.add_argument('--gait', action='store_true',
                   help='With --support-weight: step the paws instead of dragging them '
                        'along the floor: stance and swing of each paw from the speed of a '
                        "marker on its limb (the marker set's `gait` entry; rat7m20 has "
                        'one); standing paws stay where they land, swinging ones are lifted '
                        '(vrat_ros.marker_sets.GaitFitter). --smooth, applied after the fit, '
                        'lets planted paws creep again.')
    p.add_argument('--out', help='Clip file to write (.npz); default: the clip library.')
    p.add_argument('--report', help='Also write the summary as JSON to this file.')
    p.add_argument('--no-progress', action='store_true', help='Hide the progress bar.')
    p.set_defaults(func=run_import)

    p = subparsers.add_parser(
        'clips', help='List the shipped and imported clips with duration and source.')
    p.add_argument('--json', action='store_true', help='Print the list as JSON.')
    p.set_defaults(func=run_clips)


def _write_json_atomic(path: str, obj: dict) -> None:
    from vrat_ros.clip import atomic_write

    def write(tmp):
        with open(tmp, 'w', encoding='utf-8') as f:
            json.dump(obj, f, indent=2)
            f.write('\n')
    atomic_write(path, write)


def _summary(report: dict) -> str:
    frames = report['source_frames'] if report.get('source_frames') else None
    span = f', frames {frames[0]}:{frames[1]}' if frames else ''
    lines = [f"imported {report['source']} ({report['format']}{span}) -> {report['out']}"]
    fps_note = 'assumed' if report['fps_assumed'] else report.get('fps_source', '')
    if report.get('resampled_from_fps'):
        fps_note = f"resampled from {report['resampled_from_fps']:g} Hz, {fps_note}"
    lines.append(f"  {report['frames']} frames at {report['fps']:g} Hz ({fps_note})"
                 f" = {report['duration_s']:.2f} s; body scale {report['body_scale']:g}")
    if report['residual_mm_mean'] is None:
        lines.append(f"  joint angles checked against the body; "
                     f"{report.get('hinge_values_outside_range', 0)} hinge values lie "
                     'outside the joint ranges')
    else:
        how = 'detected' if report['units_detected'] else 'given'
        lines.append(f"  units {report['units_assumed']} ({how}); marker set "
                     f"{report['marker_set']}; animal scale {report['animal_scale']:g} "
                     f"(motion scaled by {report['retarget_factor']:.3g})")
        rejected = report.get('keypoints_rejected_frames') or {}
        if rejected:
            lines.append('  keypoints dropped as mislabelled (frames): ' + ', '.join(
                f'{k} {v}' for k, v in rejected.items()))
        # With --resample the fit ran on the source frames, not the written ones.
        fitted = report.get('fitted_frames', report['frames'])
        of = (f'{fitted} source frames' if report.get('resampled_from_fps')
              else f'{fitted} frames')
        lines.append(f"  keypoint residual: mean {report['residual_mm_mean']:.2f} mm, p95 "
                     f"{report['residual_mm_p95']:.2f} mm; failed frames "
                     f"{len(report['failed_frames'])} of {of}; fit "
                     f"{report['fit_seconds']:.1f} s")
        if 'support_frames' in report:
            n = report['support_frames']
            lines.append(f"  support terms acted in {n} of {of}" + (
                ' (no effect: every paw has a marker, or no unobserved paw could reach the '
                'floor)' if n == 0 else ''))
    if report.get('gait'):
        lines.append('  gait: ' + ', '.join(
            f"{paw} {g['swings']} swing{'' if g['swings'] == 1 else 's'} "
            f"({g['swing_fraction']:.0%} of the source frames)"
            for paw, g in report['gait'].items()))
    slip = report.get('paw_slip')
    if slip and slip['slip_mm_s_median'] is not None:
        # The worst paw among those on the floor in at least a tenth of the frames: a paw
        # that touches down for a frame or two says little.
        often = [p['slip_mm_s_median'] for p in slip['paws'].values()
                 if p['slip_mm_s_median'] is not None and p['contact_fraction'] >= 0.1]
        worst = f'worst paw {max(often):.0f}; ' if often else ''
        lines.append(f"  paws on the floor slide at a median {slip['slip_mm_s_median']:.0f} "
                     f"mm/s ({worst}the root moves at a median "
                     f"{slip['root_speed_mm_s_median']:.0f} mm/s)")
        if slip.get('carried_ratio') is not None:
            lines.append(f"  while the root moves, paws on the floor go along with it at "
                         f"{slip['carried_ratio']:.2f} of its speed (0: planted, as a "
                         'walking paw is; 1: carried along)')
    elif slip:
        from vrat_ros.keypoint_fit import PAW_CONTACT_M
        lines.append(f'  no paw touches the floor (within {PAW_CONTACT_M * 1e3:g} mm) in two '
                     'frames running: no paw slip to measure')
    return '\n'.join(lines)


def run_import(args: argparse.Namespace) -> int:
    """Runs `vrat import`; returns 0 on success, 1 on failure (message on stderr)."""
    try:
        from vrat_ros import importers
        from vrat_ros.keypoint_fit import FitOptions
        from vrat_ros.keypoint_fit import MAX_SMOOTH_S
        out = args.out or importers.library_clip_path(args.path, args.frames)
        if args.smooth > MAX_SMOOTH_S:  # before any work; the fit also refuses > clip length
            raise ValueError(f'--smooth {args.smooth:g} s is too long: it should be at most '
                             f'{MAX_SMOOTH_S:g} s')
        if args.gait and not args.support_weight > 0:  # before any work
            raise ValueError('--gait needs --support-weight > 0 (it changes which paws the '
                             'support terms put on the floor)')
        options = FitOptions(fill_gaps=not args.no_fill_gaps, smooth_s=args.smooth,
                             support_weight=args.support_weight, gait=args.gait)
        if 'fit' in (args.scale, args.animal_scale):
            print('vrat import: estimating the body scale from the keypoints ...',
                  file=sys.stderr)
        clip, report = importers.import_clip(
            args.path, fmt=args.format, fps=args.fps, units=args.units, scale=args.scale,
            animal_scale=args.animal_scale, marker_set=args.marker_set, frames=args.frames,
            resample=args.resample, out=out, progress=not args.no_progress, options=options)
        from vrat_ros.keypoint_fit import paw_slip
        report['paw_slip'] = paw_slip(clip)
        for warning in report.get('warnings', []):
            print(f'vrat import: warning: {warning}', file=sys.stderr)
        print(_summary(report))
        if args.report:
            _write_json_atomic(args.report, report)
    except (VratError, ValueError, OSError) as exc:
        print(f'vrat import: {exc}', file=sys.stderr)
        return 1
    return 0


def run_clips(args: argparse.Namespace) -> int:
    """Runs `vrat clips`; returns 0 (1 if the library cannot be read)."""
    try:
        from vrat_ros import importers
        entries = importers.list_clips()
    except (VratError, OSError) as exc:
        print(f'vrat clips: {exc}', file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    print(f"{'name':32} {'kind':8} {'robot':10} {'frames':>6} {'fps':>5} {'seconds':>8}  "
          'source')
    for e in entries:
        if 'error' in e:
            print(f"{e['name']:32} {e['kind']:8} unreadable: {e['error']}")
            continue
        print(f"{e['name']:32} {e['kind']:8} {e['robot']:10} {e['frames']:>6} {e['fps']:>5g} "
              f"{e['duration_s']:>8.2f}  {e['source']}")
    print(f'imported clips are kept in {os.fspath(importers.clips_dir())}')
    return 0
