"""Does a driver fit a policy's contract? Joint names, command interface and rate. No rclpy.

`check_driver` compares what a driver shows (the joint names of its joint_states, the command
interfaces it takes, its rate) with the ONNX contract and returns the problems in words.
`DriverCheck` gathers that evidence from the first joint states a policy node receives and
raises `DriverMismatchError` at the first certain mismatch; `command_interfaces` reads the
interfaces from the ROS graph (who subscribes to which command topic) through a node.

Which command topics mean which interface (ros2_control's forward controllers are named
`<interface>_controller/commands`; the sim and the safety node take named efforts):
  effort     policy/effort, safety/effort, effort_controller/commands
  position   position_controller/commands, joint_trajectory_controller/joint_trajectory
  velocity   velocity_controller/commands
"""

from __future__ import annotations

from typing import Iterable
from typing import Mapping
from typing import Sequence

import numpy as np

from vrat_ros.errors import VratError

INTERFACE_TOPICS = {
    'effort': ('policy/effort', 'safety/effort', 'effort_controller/commands'),
    'position': ('position_controller/commands',
                 'joint_trajectory_controller/joint_trajectory'),
    'velocity': ('velocity_controller/commands',),
}
RATE_TOLERANCE = 0.1      # relative: 45..55 Hz passes for a 50 Hz contract
RATE_INTERVALS = 5        # distinct stamp intervals measured before the rate is judged


class DriverMismatchError(VratError):
    """A driver's joint names, command interface or rate disagree with the policy contract."""


def _preview(names, limit: int = 6) -> str:
    names = list(names)
    more = f' (+{len(names) - limit} more)' if len(names) > limit else ''
    return ', '.join(names[:limit]) + more


def measured_rate_hz(stamps_ns: Sequence[int]) -> float | None:
    """Rate (Hz) from message stamps: 1 / the median gap between distinct increasing stamps.

    Returns:
        The rate, or None with fewer than two distinct stamps.
    """
    stamps = np.unique(np.asarray(list(stamps_ns), dtype=np.int64))
    if stamps.size < 2:
        return None
    return 1e9 / float(np.median(np.diff(stamps)))


def check_joint_names(contract: Mapping, joint_names: Sequence[str]) -> list[str]:
    """Problems with the joint names a driver publishes (every contract joint, once)."""
    names = list(joint_names)
    problems = []
    wanted = list(contract['joint_names'])
    missing = [n for n in wanted if n not in set(names)]
    if missing:
        problems.append(
            f'joint_states lacks {len(missing)} of the {len(wanted)} joints the policy '
            f'reads: {_preview(missing)}; the driver publishes {_preview(names)}')
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        problems.append(f'joint_states repeats joint names: {_preview(repeated)}')
    return problems


def check_interfaces(contract: Mapping, interfaces: Iterable[str]) -> list[str]:
    """Problems with the command interfaces a driver takes (empty: nothing known yet)."""
    wanted = contract.get('command_interface', 'effort')
    seen = set(interfaces)
    if not seen or wanted in seen:
        return []
    return [f"the driver takes {sorted(seen)} commands; the policy's contract needs "
            f"'{wanted}' ({', '.join(INTERFACE_TOPICS.get(wanted, ()))})"]


def check_rate(contract: Mapping, rate_hz: float | None,
               tolerance: float = RATE_TOLERANCE) -> list[str]:
    """Problems with a driver's measured rate (None: not measured yet)."""
    if rate_hz is None:
        return []
    wanted = float(contract['control_rate_hz'])
    if abs(rate_hz - wanted) <= tolerance * wanted:
        return []
    return [f'the driver publishes joint_states at {rate_hz:.4g} Hz; the policy was trained '
            f'for {wanted:g} Hz (tolerance {tolerance:.0%})']


def check_driver(contract: Mapping, joint_names: Sequence[str] | None = None,
                 interfaces: Iterable[str] | None = None, rate_hz: float | None = None,
                 tolerance: float = RATE_TOLERANCE) -> list[str]:
    """Compares a driver with a policy contract; returns the mismatches in words.

    Args:
        contract: the policy's vrat contract (joint_names, command_interface,
            control_rate_hz).
        joint_names: names in the driver's joint_states (None: not checked).
        interfaces: command interfaces the driver takes, e.g. {'effort'} (None or empty:
            not checked).
        rate_hz: the driver's joint_states rate (None: not checked), e.g. from
            `measured_rate_hz`.
        tolerance: relative rate tolerance.

    Returns:
        One sentence per problem, naming what was expected and what was found; empty when
        the driver fits.
    """
    problems = []
    if joint_names is not None:
        problems += check_joint_names(contract, joint_names)
    if interfaces is not None:
        problems += check_interfaces(contract, interfaces)
    problems += check_rate(contract, rate_hz, tolerance)
    return problems


def command_interfaces(node, topics: Mapping[str, Sequence[str]] = INTERFACE_TOPICS) -> set:
    """Interfaces whose command topics have a subscriber in `node`'s namespace.

    Args:
        node: an rclpy Node (only `count_subscribers` is used); relative topic names resolve
            in its namespace, as the policy node's own topics do.
        topics: interface -> command topics.

    Returns:
        The set of interface names, e.g. {'effort'}.
    """
    return {interface for interface, names in topics.items()
            if any(node.count_subscribers(name) > 0 for name in names)}


class DriverCheck:
    """Watches the first joint states of a driver and raises at the first certain mismatch.

    The joint names are judged on the first message (later messages with missing joints are
    the policy node's usual input errors, not a different driver); the interfaces on every
    message until the check is over; the rate once `intervals` distinct stamp gaps were seen.
    A lockstep driver only advances when it gets commands, so commands flow while the rate is
    measured: a driver at the wrong rate is refused after `intervals` steps, not before.

    Args:
        contract: the policy's vrat contract.
        tolerance: relative rate tolerance.
        intervals: distinct stamp gaps to measure the rate from.
    """

    def __init__(self, contract: Mapping, tolerance: float = RATE_TOLERANCE,
                 intervals: int = RATE_INTERVALS):
        self.contract = contract
        self.tolerance = float(tolerance)
        self.intervals = int(intervals)
        self.names_checked = False
        self.rate_hz = None
        self.pending = True
        self._stamps = []

    def observe(self, joint_names: Sequence[str], stamp_ns: int,
                interfaces: Iterable[str] | None = None) -> None:
        """Takes one joint state's names and stamp and the interfaces seen now.

        Raises:
            DriverMismatchError: the driver does not fit; the message lists every problem.
        """
        if not self.pending:
            return
        problems = []
        if not self.names_checked:
            problems += check_joint_names(self.contract, joint_names)
            self.names_checked = True
        if interfaces is not None:
            problems += check_interfaces(self.contract, interfaces)
        if self._stamps and stamp_ns < self._stamps[-1]:
            self._stamps = []  # the driver restarted: measure again
        if not self._stamps or stamp_ns > self._stamps[-1]:
            self._stamps.append(int(stamp_ns))
        if len(self._stamps) > self.intervals:
            self.rate_hz = measured_rate_hz(self._stamps)
            problems += check_rate(self.contract, self.rate_hz, self.tolerance)
            self.pending = False
        if problems:
            self.pending = False
            raise DriverMismatchError(
                'the driver does not fit the policy contract: ' + '; '.join(problems))
