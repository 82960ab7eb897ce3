"""PNG plots of a run: joint tracking per joint group, body position error, torque saturation.

Drawn with matplotlib's Agg canvas directly (no pyplot), so no display or global state is used.
"""

from __future__ import annotations

import os
import re

import mujoco
import numpy as np
import numpy.typing as npt

from vrat_ros.tracking import body_distances

# Joint groups by hinge name. The tail is not tracked and has no group.
JOINT_GROUPS: dict[str, str] = {
    'spine': r'^vertebra_\d+_',
    'neck and head': r'^(vertebra_(cervical_\d+|axis|atlant)_|atlas$|mandible$)',
    'left arm': r'^(scapula|shoulder|elbow|wrist|finger)(_\w+)?_L(_|$)',
    'right arm': r'^(scapula|shoulder|elbow|wrist|finger)(_\w+)?_R(_|$)',
    'left leg': r'^(hip|knee|ankle|toe)(_\w+)?_L(_|$)',
    'right leg': r'^(hip|knee|ankle|toe)(_\w+)?_R(_|$)',
}
_DPI = 100


def joint_groups(hinge_names: list[str]) -> dict[str, list[int]]:
    """Returns {group: indices into hinge_names} for the groups of JOINT_GROUPS."""
    return {group: [i for i, n in enumerate(hinge_names) if re.search(pattern, n)]
            for group, pattern in JOINT_GROUPS.items()}


def _short(name: str) -> str:
    return name.replace('vertebra_', 'v_').replace('cervical_', 'c')


def _check(times: npt.ArrayLike, sim_qpos: npt.ArrayLike,
           ref_qpos: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    times = np.asarray(times, dtype=np.float64)
    sim = np.asarray(sim_qpos, dtype=np.float64)
    ref = np.asarray(ref_qpos, dtype=np.float64)
    if sim.ndim != 2 or sim.shape != ref.shape or times.shape != (sim.shape[0],):
        raise ValueError(f'times (T,), sim_qpos and ref_qpos (T, nq) should agree: got '
                         f'{times.shape}, {sim.shape}, {ref.shape}')
    return times, sim, ref


def _save(fig, out: str) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    FigureCanvasAgg(fig)
    directory = os.path.dirname(os.path.abspath(out))
    os.makedirs(directory, exist_ok=True)
    fig.savefig(out, dpi=_DPI)
    return out


def plot_joint_tracking(times: npt.ArrayLike, sim_qpos: npt.ArrayLike, ref_qpos: npt.ArrayLike,
                        hinge_names: list[str], out: str, title: str = '') -> str:
    """Plots sim (solid) and reference (dashed) joint angles, one panel per joint group.

    Args:
        times: (T,) times (s).
        sim_qpos: (T, 7 + n_hinges) simulated states.
        ref_qpos: (T, 7 + n_hinges) reference states.
        hinge_names: names of qpos[7:].
        out: PNG path to write.
        title: figure title.

    Returns:
        `out`.
    """
    from matplotlib.figure import Figure
    times, sim, ref = _check(times, sim_qpos, ref_qpos)
    fig = Figure(figsize=(11, 8.5), layout='constrained')
    axes = fig.subplots(3, 2, sharex=True).ravel()
    for ax, (group, idx) in zip(axes, joint_groups(hinge_names).items()):
        for k, i in enumerate(idx):
            color = f'C{k % 10}'
            ax.plot(times, np.degrees(sim[:, 7 + i]), color=color, lw=1.0,
                    label=_short(hinge_names[i]))
            ax.plot(times, np.degrees(ref[:, 7 + i]), color=color, lw=1.0, ls='--')
        ax.set_title(group, fontsize=10)
        ax.set_ylabel('angle (deg)')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2, loc='upper right')
    for ax in axes[-2:]:
        ax.set_xlabel('time (s)')
    fig.suptitle(title or 'Joint angles: sim (solid) and reference (dashed)')
    return _save(fig, out)


def body_position_errors(model: mujoco.MjModel, sim_qpos: np.ndarray, ref_qpos: np.ndarray,
                         body_ids: npt.ArrayLike) -> np.ndarray:
    """Returns (T, len(body_ids)) distances (m) between sim and reference body positions."""
    return body_distances(model, sim_qpos, ref_qpos, body_ids)


def plot_body_error(times: npt.ArrayLike, sim_qpos: npt.ArrayLike, ref_qpos: npt.ArrayLike,
                    model: mujoco.MjModel, body_ids: npt.ArrayLike, hinge_names: list[str],
                    out: str, title: str = '') -> str:
    """Plots body position error (mean, max, root) and joint RMS error per group over time.

    Args:
        times: (T,) times (s).
        sim_qpos: (T, nq) simulated states.
        ref_qpos: (T, nq) reference states.
        model: the rat model (for body positions).
        body_ids: the tracked bodies.
        hinge_names: names of qpos[7:].
        out: PNG path to write.
        title: figure title.

    Returns:
        `out`.
    """
    from matplotlib.figure import Figure
    times, sim, ref = _check(times, sim_qpos, ref_qpos)
    errors_mm = 1e3 * body_position_errors(model, sim, ref, body_ids)
    root_mm = 1e3 * np.linalg.norm(sim[:, :3] - ref[:, :3], axis=1)
    fig = Figure(figsize=(10, 6.5), layout='constrained')
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.plot(times, errors_mm.mean(axis=1), lw=1.5, label='mean over tracked bodies')
    top.plot(times, errors_mm.max(axis=1), lw=1.0, label='worst body')
    top.plot(times, root_mm, lw=1.0, ls='--', label='root')
    top.set_ylabel('position error (mm)')
    top.grid(alpha=0.3)
    top.legend(fontsize=8)
    for group, idx in joint_groups(hinge_names).items():
        if idx:
            diff = sim[:, 7 + np.array(idx)] - ref[:, 7 + np.array(idx)]
            bottom.plot(times, np.degrees(np.sqrt(np.mean(diff ** 2, axis=1))), lw=1.0,
                        label=group)
    bottom.set_ylabel('joint RMS error (deg)')
    bottom.set_xlabel('time (s)')
    bottom.grid(alpha=0.3)
    bottom.legend(fontsize=8, ncol=3)
    fig.suptitle(title or 'Tracking error')
    return _save(fig, out)


def plot_torque_saturation(times: npt.ArrayLike, torques: npt.ArrayLike, gains: npt.ArrayLike,
                           actuator_names: list[str], out: str, title: str = '') -> str:
    """Plots commanded torque relative to each actuator's limit, and how often it saturates.

    Args:
        times: (T,) times (s) of the commands.
        torques: (T, nu) commanded torques before clamping (N m).
        gains: (nu,) force limits (N m at ctrl = 1).
        actuator_names: (nu,) names.
        out: PNG path to write.
        title: figure title.

    Returns:
        `out`.
    """
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure
    times = np.asarray(times, dtype=np.float64)
    torques = np.asarray(torques, dtype=np.float64)
    gains = np.asarray(gains, dtype=np.float64)
    nu = len(actuator_names)
    if torques.shape != (times.shape[0], nu) or gains.shape != (nu,) or np.any(gains <= 0):
        raise ValueError(f'torques should be (T={times.shape[0]}, nu={nu}) and gains ({nu},) '
                         f'positive: got {torques.shape} and {gains.shape}')
    ratio = torques / gains
    saturated_pct = 100.0 * np.mean(np.abs(ratio) >= 1.0, axis=0)
    fig = Figure(figsize=(11, 8), layout='constrained')
    top, bottom = fig.subplots(2, 1, height_ratios=[1.4, 1.0])
    extent = (times[0], times[-1] if len(times) > 1 else times[0] + 1.0, nu - 0.5, -0.5)
    image = top.imshow(ratio.T, aspect='auto', cmap='coolwarm', interpolation='nearest',
                       norm=TwoSlopeNorm(0.0, -1.0, 1.0), extent=extent)
    top.set_yticks(range(nu), actuator_names, fontsize=6)
    top.set_xlabel('time (s)')
    fig.colorbar(image, ax=top, label='torque / limit (clipped to +-1)')
    bottom.bar(range(nu), saturated_pct, color='C3')
    bottom.set_xticks(range(nu), actuator_names, rotation=90, fontsize=6)
    bottom.set_ylabel('saturated steps (%)')
    bottom.set_ylim(0, max(5.0, float(saturated_pct.max()) * 1.1))
    bottom.grid(alpha=0.3, axis='y')
    fig.suptitle(title or 'Torque saturation (|torque| >= limit)')
    return _save(fig, out)


def write_tracking_plots(out_dir: str, times: npt.ArrayLike, sim_qpos: npt.ArrayLike,
                         ref_qpos: npt.ArrayLike, body, torques: npt.ArrayLike | None = None,
                         torque_times: npt.ArrayLike | None = None,
                         prefix: str = '') -> list[str]:
    """Writes joint_tracking.png, body_error.png and (with torques) torque_saturation.png.

    Args:
        out_dir: folder for the PNG files (created if needed).
        times: (T,) times (s) of the states.
        sim_qpos: (T, nq) simulated states.
        ref_qpos: (T, nq) reference states.
        body: a `RatBody` (names, tracked bodies, actuator limits).
        torques: (T', nu) commanded torques (N m), if any.
        torque_times: (T',) times of the torques; default `times` (then T' must be T).
        prefix: put before each file name.

    Returns:
        The paths written.
    """
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, prefix + '{}.png').format
    paths = [
        plot_joint_tracking(times, sim_qpos, ref_qpos, body.hinge_names, path('joint_tracking')),
        plot_body_error(times, sim_qpos, ref_qpos, body.model, body.tracked_body_ids,
                        body.hinge_names, path('body_error')),
    ]
    if torques is not None:
        paths.append(plot_torque_saturation(
            times if torque_times is None else torque_times, torques, body.actuator_gain,
            body.actuator_names, path('torque_saturation')))
    return paths
