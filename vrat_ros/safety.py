"""The safety layer between a policy and a body: limits, watchdog, e-stop, delays. No ROS.

`SafetyFilter` turns each command of the policy (named torques with a stamp) into the torque
that goes to the body:

  1. non-finite torques are rejected (nothing goes out; the watchdog sees no valid command);
  2. a command whose stamp repeats the previous one gets the previous output again, and one
     whose stamp went back is rejected, so a lockstep driver that re-sends its state is safe;
  3. the action delay line shifts commands by `action_delay_steps` commands (zero torque
     while it fills);
  4. while the e-stop is latched, the safe output (zero torque or damping) replaces it;
  5. otherwise: clamp to the per-actuator torque limits, scale by the soft-start ramp, then
     limit the change from the previous output to `rate_limit * dt`.

Every step is a function of the command stamps alone (never of the wall clock), so a lockstep
run stays deterministic. `Watchdog` is the wall-clock part: the node feeds it on each valid
command and asks it whether the command stream has timed out. `DelayLine` and `StampOrder`
are the building blocks of the delays and of the out-of-order stamp checks.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any
from typing import Sequence

import numpy as np
import numpy.typing as npt

SAFE_OUTPUTS = ('zero', 'damping')


class DelayLine:
    """Delays items by a fixed number of distinct stamps.

    `push(stamp, item)` returns the item pushed `steps` distinct stamps earlier. While the line
    fills, it returns `fill`, or when `fill` is None the first item ever pushed. A stamp equal
    to the previous one returns the previous answer again (a re-sent message is not a new
    step); a stamp older than the previous one is refused with None.

    Args:
        steps: delay in pushes (0: each item comes straight back).
        fill: what to return while fewer than `steps` earlier items exist.
    """

    def __init__(self, steps: int, fill: Any = None):
        if int(steps) != steps or steps < 0:
            raise ValueError(f'delay steps should be a whole number >= 0: got {steps}')
        self.steps = int(steps)
        self.fill = fill
        self._items = collections.deque(maxlen=self.steps + 1)
        self._first = None
        self._last_stamp = None
        self._last_out = None

    def push(self, stamp_ns: int, item: Any) -> Any:
        """Adds the item at `stamp_ns`; returns the delayed item (None: stamp went back)."""
        if self._last_stamp is not None:
            if stamp_ns == self._last_stamp:
                return self._last_out
            if stamp_ns < self._last_stamp:
                return None
        if self._first is None:
            self._first = item
        self._items.append(item)
        if len(self._items) > self.steps:
            out = self._items[0]
        else:
            out = self._first if self.fill is None else self.fill
        self._last_stamp, self._last_out = stamp_ns, out
        return out

    def clear(self) -> None:
        """Forgets every item: the line fills again from the next push."""
        self._items.clear()
        self._first = self._last_stamp = self._last_out = None


class StampOrder:
    """Classifies message stamps as new, repeated or going back in time.

    A stamp older than the newest one seen is 'backwards' (reject it). After `restart_after`
    backwards stamps in a row, the source is taken to have restarted (a relaunched sim counts
    from 0 again): that stamp is 'restart' and becomes the new reference.

    Args:
        restart_after: backwards stamps in a row that mean a restart (>= 1).
    """

    def __init__(self, restart_after: int = 10):
        if restart_after < 1:
            raise ValueError(f'restart_after should be >= 1: got {restart_after}')
        self.restart_after = int(restart_after)
        self.newest_ns = None
        self.backwards_in_row = 0
        self.rejected = 0

    def check(self, stamp_ns: int) -> str:
        """Returns 'new', 'repeat', 'backwards' or 'restart' for a stamp (ns)."""
        if self.newest_ns is None or stamp_ns > self.newest_ns:
            self.newest_ns = stamp_ns
            self.backwards_in_row = 0
            return 'new'
        if stamp_ns == self.newest_ns:
            self.backwards_in_row = 0
            return 'repeat'
        self.backwards_in_row += 1
        if self.backwards_in_row >= self.restart_after:
            self.newest_ns = stamp_ns
            self.backwards_in_row = 0
            return 'restart'
        self.rejected += 1
        return 'backwards'


class Watchdog:
    """Tells whether a stream of commands stopped for longer than `timeout_s` (wall time).

    Times are plain floats in seconds from any monotonic clock. An 'episode' is one stretch of
    silence: it starts when `expired` first turns true and ends at the next `feed`.

    Args:
        timeout_s: longest gap (s) between valid commands; <= 0 turns the watchdog off.
    """

    def __init__(self, timeout_s: float):
        self.timeout_s = float(timeout_s)
        self.last_feed_s = None
        self.timed_out = False
        self.episodes = 0

    @property
    def enabled(self) -> bool:
        return self.timeout_s > 0.0

    def feed(self, now_s: float) -> bool:
        """Records a valid command; returns True when it ends a timeout episode."""
        recovered = self.timed_out
        self.last_feed_s = now_s
        self.timed_out = False
        return recovered

    def expired(self, now_s: float) -> bool:
        """True once more than timeout_s passed since the last feed (or since `arm`)."""
        if not self.enabled or self.last_feed_s is None:
            return False
        if now_s - self.last_feed_s > self.timeout_s and not self.timed_out:
            self.timed_out = True
            self.episodes += 1
        return self.timed_out

    def arm(self, now_s: float) -> None:
        """Starts the timeout without a command (e.g. when the first joint state arrives)."""
        if self.last_feed_s is None:
            self.last_feed_s = now_s


@dataclasses.dataclass
class SafetyLimits:
    """Per-actuator limits of the safety filter.

    Attributes:
        actuator_names: (nu,) names, in the order of every array here.
        torque_nm: (nu,) largest |torque| (N m) let through.
        rate_nm_s: (nu,) largest change of torque per second (N m/s); None: no rate limit.
        soft_start_s: time (s, by command stamps) over which the output ramps from 0 to full
            after activation; 0: no ramp.
        damping: (nu,) damping gains kd (N m s/rad) of the 'damping' safe output.
    """

    actuator_names: list[str]
    torque_nm: np.ndarray
    rate_nm_s: np.ndarray | None = None
    soft_start_s: float = 0.0
    damping: np.ndarray | None = None

    def __post_init__(self):
        nu = len(self.actuator_names)
        self.actuator_names = list(self.actuator_names)
        self.torque_nm = _per_actuator(self.torque_nm, nu, 'torque limits')
        if np.any(self.torque_nm < 0.0):
            raise ValueError('torque limits should be >= 0 N m')
        if self.rate_nm_s is not None:
            self.rate_nm_s = _per_actuator(self.rate_nm_s, nu, 'rate limits')
            if np.any(self.rate_nm_s <= 0.0):
                raise ValueError('rate limits should be > 0 N m/s (leave them out for none)')
        self.damping = (np.zeros(nu) if self.damping is None
                        else _per_actuator(self.damping, nu, 'damping gains'))
        if not self.soft_start_s >= 0.0:
            raise ValueError(f'soft_start_s should be >= 0: got {self.soft_start_s}')


def _per_actuator(values: npt.ArrayLike, nu: int, what: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 1:
        values = np.full(nu, float(values[0]))
    if values.shape != (nu,):
        raise ValueError(f'{what} should have 1 or {nu} values (one per actuator): '
                         f'got {values.size}')
    if not np.all(np.isfinite(values)):
        raise ValueError(f'{what} should be finite')
    return values


def limits_from_contract(contract: dict, torque_limits_nm: Sequence[float] = (),
                         torque_limit_scale: float = 1.0,
                         rate_limit_nm_s: Sequence[float] = (),
                         rate_limit_per_s: float = 0.0, soft_start_s: float = 0.0,
                         damping_gain_s: float = 0.0) -> SafetyLimits:
    """Builds the limits of a policy's actuators from its vrat contract and overrides.

    Args:
        contract: the policy's vrat contract (actuator_names, action_scale, action_clip).
        torque_limits_nm: explicit limits (N m), one value or one per actuator; empty: the
            largest torque the policy can ask for, action_scale * max(|action_clip|).
        torque_limit_scale: factor applied to the limits (e.g. 0.5 for a first hardware run).
        rate_limit_nm_s: explicit rate limits (N m/s), one value or one per actuator.
        rate_limit_per_s: when rate_limit_nm_s is empty, rate = this * torque limit per
            second (e.g. 10: zero to full torque in 0.1 s); 0: no rate limit.
        soft_start_s: ramp time (s) after activation.
        damping_gain_s: kd of the damping safe output as a multiple of the torque limit
            (s/rad): the damping torque reaches the limit at 1 / damping_gain_s rad/s.

    Returns:
        The `SafetyLimits`.
    """
    names = list(contract['actuator_names'])
    if len(torque_limits_nm) > 0:
        torque = _per_actuator(torque_limits_nm, len(names), 'torque_limits_nm')
    else:
        reach = max(abs(float(v)) for v in contract['action_clip'])
        torque = np.abs(np.asarray(contract['action_scale'], dtype=np.float64)) * reach
    if not torque_limit_scale > 0.0:
        raise ValueError(f'torque_limit_scale should be > 0: got {torque_limit_scale}')
    torque = torque * float(torque_limit_scale)
    rate = None
    if len(rate_limit_nm_s) > 0:
        rate = _per_actuator(rate_limit_nm_s, len(names), 'rate_limit_nm_s')
    elif rate_limit_per_s > 0.0:
        rate = torque * float(rate_limit_per_s)
        rate[rate <= 0.0] = np.inf
    if damping_gain_s < 0.0:
        raise ValueError(f'damping_gain_s should be >= 0: got {damping_gain_s}')
    return SafetyLimits(actuator_names=names, torque_nm=torque, rate_nm_s=rate,
                        soft_start_s=float(soft_start_s), damping=torque * damping_gain_s)


class SafetyFilter:
    """Checks and shapes each command on its way from the policy to the body.

    Args:
        limits: per-actuator limits, ramp and damping gains.
        safe_output: 'zero' (no torque) or 'damping' (-kd * joint velocity, clamped).
        action_delay_steps: commands to delay each command by (sensorimotor latency).

    Attributes:
        estopped: the e-stop is latched (until `reset`).
        rejected: commands refused (non-finite values or a stamp that went back).
        last_problem: why the last command was refused.
        clamped: actuator-commands cut to the torque limit.
        rate_limited: actuator-commands cut by the rate limit.
    """

    def __init__(self, limits: SafetyLimits, safe_output: str = 'zero',
                 action_delay_steps: int = 0):
        if safe_output not in SAFE_OUTPUTS:
            raise ValueError(f"safe_output should be one of {SAFE_OUTPUTS}: got '{safe_output}'")
        self.limits = limits
        self.safe_mode = safe_output
        self.nu = len(limits.actuator_names)
        self._delay = DelayLine(action_delay_steps, fill=np.zeros(self.nu))
        self.estopped = False
        self.rejected = 0
        self.clamped = 0
        self.rate_limited = 0
        self.last_problem = ''
        self._last_stamp_ns = None
        self._last_output = np.zeros(self.nu)
        self._activation_ns = None
        self._period_ns = None      # the last gap between command stamps
        self._resuming = False      # the next command follows a safe stop

    @property
    def last_output(self) -> np.ndarray:
        """The torque (N m) most recently sent out."""
        return self._last_output.copy()

    def safe_output(self, joint_velocity: npt.ArrayLike | None = None) -> np.ndarray:
        """The torque (N m) sent while stopped: zero, or damping of the given velocities.

        Args:
            joint_velocity: (nu,) velocity (rad/s) of the joint each actuator drives; NaN
                where unknown (no damping there). None: no damping at all.
        """
        if self.safe_mode == 'zero' or joint_velocity is None:
            return np.zeros(self.nu)
        vel = np.asarray(joint_velocity, dtype=np.float64)
        vel = np.where(np.isfinite(vel), vel, 0.0)
        return np.clip(-self.limits.damping * vel, -self.limits.torque_nm, self.limits.torque_nm)

    def command(self, stamp_ns: int, torque: npt.ArrayLike,
                joint_velocity: npt.ArrayLike | None = None) -> np.ndarray | None:
        """One policy command in, the torque for the body out.

        Args:
            stamp_ns: the command's stamp (ns); it sets dt of the rate limit and the ramp.
            torque: (nu,) torques (N m) in `limits.actuator_names` order.
            joint_velocity: (nu,) joint velocities for the damping safe output, or None.

        Returns:
            (nu,) torques (N m), or None when the command is refused (see `last_problem`).
        """
        torque = np.asarray(torque, dtype=np.float64)
        if torque.shape != (self.nu,):
            return self._refuse(f'command has {torque.size} torques; expected {self.nu}')
        bad = ~np.isfinite(torque)
        if bad.any():
            names = [n for n, b in zip(self.limits.actuator_names, bad) if b]
            return self._refuse(f'non-finite torques for {names[:5]}')
        if self._last_stamp_ns is not None:
            if stamp_ns == self._last_stamp_ns:
                return self.last_output
            if stamp_ns < self._last_stamp_ns:
                return self._refuse(f'stamp {stamp_ns * 1e-9:.6f} s is older than the last '
                                    f'command at {self._last_stamp_ns * 1e-9:.6f} s')
        delayed = self._delay.push(stamp_ns, torque)
        if self.estopped:
            out = self.safe_output(joint_velocity)
        else:
            out = self._shape(stamp_ns, delayed)
        self._last_stamp_ns = stamp_ns
        self._last_output = out
        return out.copy()

    def _shape(self, stamp_ns: int, torque: np.ndarray) -> np.ndarray:
        limit = self.limits.torque_nm
        out = np.clip(torque, -limit, limit)
        self.clamped += int(np.count_nonzero(out != torque))
        if self._activation_ns is None:
            self._activation_ns = stamp_ns
        if self.limits.soft_start_s > 0.0:
            ramp = (stamp_ns - self._activation_ns) * 1e-9 / self.limits.soft_start_s
            out = out * min(max(ramp, 0.0), 1.0)
        gap_ns = None if self._last_stamp_ns is None else stamp_ns - self._last_stamp_ns
        if self._resuming:
            # After a stop the stamp gap can be long; one usual period is what a step may do.
            gap_ns, self._resuming = self._period_ns, False
        elif gap_ns is not None:
            self._period_ns = gap_ns
        if self.limits.rate_nm_s is not None and gap_ns is not None:
            step = self.limits.rate_nm_s * gap_ns * 1e-9
            limited = np.clip(out, self._last_output - step, self._last_output + step)
            self.rate_limited += int(np.count_nonzero(limited != out))
            out = limited
        return out

    def _refuse(self, problem: str) -> None:
        self.rejected += 1
        self.last_problem = problem
        return None

    def stop(self, torque: npt.ArrayLike | None = None) -> None:
        """Marks a safe stop after a timeout: the delay refills, the output ramps up from `torque`.

        Args:
            torque: what the body gets now (default zero); rate limits start from it.
        """
        self._activation_ns = None
        self._resuming = True
        self._delay.clear()
        self._last_output = (np.zeros(self.nu) if torque is None
                             else np.asarray(torque, dtype=np.float64).copy())

    def estop(self) -> None:
        """Latches the e-stop: every command becomes the safe output until `reset`."""
        self.estopped = True
        self._activation_ns = None
        self._resuming = True

    def reset(self) -> bool:
        """Releases the e-stop; the delay refills, the ramp restarts from the safe output.

        Returns:
            True if the e-stop was latched.
        """
        was = self.estopped
        self.estopped = False
        if was:
            self._delay.clear()
        return was
