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

`PositionFilter` does the same for position contracts (joint targets, rad or m, that the body
tracks with its own PD loop), with what a position interface needs instead of torque limits:

  1. non-finite or wrongly sized targets are rejected (the body keeps the last safe target);
  2. stamps and the action delay as above (while the delay fills, the measured pose goes out);
  3. while the e-stop is latched or the watchdog has stopped the stream, the joint positions
     measured at the stop are held (never zero targets: those would slam every joint to 0);
  4. otherwise: clamp to the joint range (`PositionLimits`, from the robot model and optionally
     tightened), ramp from the measured pose to the target over the soft-start time, then
     limit the change from the previous output (or the measured pose) to `velocity * dt`.

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


class _Latching:
    """What the torque and the position filters share: refusals and the latching e-stop.

    Subclasses set `estopped`, `rejected`, `last_problem`, `_delay`, `_activation_ns` and
    `_resuming` in their __init__.
    """

    def _refuse(self, problem: str) -> None:
        self.rejected += 1
        self.last_problem = problem
        return None

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


class SafetyFilter(_Latching):
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


# Position commands.

_FILL = object()  # what the action delay line returns while it fills


@dataclasses.dataclass
class PositionLimits:
    """Per-actuator limits of the position filter (joint targets, rad for hinges, m for slides).

    Attributes:
        actuator_names: (nu,) names, in the order of every array here.
        lower: (nu,) smallest target let through; -inf: none.
        upper: (nu,) largest target let through; +inf: none.
        velocity: (nu,) largest change of the target per second (rad/s or m/s); None: no
            velocity limit.
        soft_start_s: time (s, by command stamps) over which the output ramps from the
            measured pose to the commanded targets after activation; 0: no ramp.
    """

    actuator_names: list[str]
    lower: np.ndarray
    upper: np.ndarray
    velocity: np.ndarray | None = None
    soft_start_s: float = 0.0

    def __post_init__(self):
        nu = len(self.actuator_names)
        self.actuator_names = list(self.actuator_names)
        self.lower = _per_actuator_bound(self.lower, nu, 'lower position limits')
        self.upper = _per_actuator_bound(self.upper, nu, 'upper position limits')
        inverted = [n for n, lo, hi in zip(self.actuator_names, self.lower, self.upper)
                    if not lo <= hi]
        if inverted:
            raise ValueError(f'lower position limits exceed the upper ones for {inverted[:5]}')
        if self.velocity is not None:
            self.velocity = _per_actuator(self.velocity, nu, 'velocity limits')
            if np.any(self.velocity <= 0.0):
                raise ValueError('velocity limits should be > 0 (leave them out for none)')
        if not self.soft_start_s >= 0.0:
            raise ValueError(f'soft_start_s should be >= 0: got {self.soft_start_s}')


def _per_actuator_bound(values: npt.ArrayLike, nu: int, what: str) -> np.ndarray:
    """Like `_per_actuator`, but +-inf (no bound) is allowed; NaN is not."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 1:
        values = np.full(nu, float(values[0]))
    if values.shape != (nu,):
        raise ValueError(f'{what} should have 1 or {nu} values (one per actuator): '
                         f'got {values.size}')
    if np.any(np.isnan(values)):
        raise ValueError(f'{what} should not be NaN')
    return values


def joint_ranges(model: Any, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The range of each named joint of a MuJoCo model; +-inf for a joint without limits.

    Args:
        model: a compiled mujoco.MjModel.
        names: joint names (matched by name, e.g. a position contract's actuator names).

    Returns:
        (lower, upper) arrays in `names` order (rad for hinges, m for slides).

    Raises:
        ValueError: a name that is no hinge or slide joint of the model.
    """
    import mujoco
    moving = (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE))
    lower, upper, missing = [], [], []
    for name in names:
        jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)
        if jid < 0 or int(model.jnt_type[jid]) not in moving:
            missing.append(name)
            continue
        if model.jnt_limited[jid]:
            lower.append(float(model.jnt_range[jid, 0]))
            upper.append(float(model.jnt_range[jid, 1]))
        else:
            lower.append(-np.inf)
            upper.append(np.inf)
    if missing:
        raise ValueError(f'the robot model has no hinge or slide joint named {missing[:5]}'
                         f'{f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""}: a '
                         'position contract names the joints its actuators drive')
    return np.array(lower), np.array(upper)


def robot_joint_ranges(robot: str, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """`joint_ranges` of a robot of vrat_ros.robots (a name in config/robots or a YAML path).

    Known shortcoming: the model is built at the robot file's own scale, so slide-joint
    ranges (m) do not follow a different `body_scale` of the sim; hinge ranges do not scale.
    """
    from vrat_ros.robots import load_robot
    model, _ = load_robot(robot)
    return joint_ranges(model, names)


def position_limits_from_contract(contract: dict, lower: npt.ArrayLike, upper: npt.ArrayLike,
                                  lower_override: Sequence[float] = (),
                                  upper_override: Sequence[float] = (),
                                  margin: float = 0.0,
                                  velocity_limit: Sequence[float] = (),
                                  soft_start_s: float = 0.0) -> PositionLimits:
    """Builds the limits of a position policy's actuators from the joint ranges and overrides.

    The overrides can only tighten the joint range: the result is the intersection.

    Args:
        contract: the policy's vrat contract (actuator_names).
        lower, upper: (nu,) the joint ranges of the body, in contract order (`joint_ranges`).
        lower_override, upper_override: tighter bounds, one value or one per actuator; empty:
            the joint range alone.
        margin: shrinks every range by this much at each end (rad or m; >= 0).
        velocity_limit: largest target velocity (rad/s or m/s), one value or one per
            actuator; empty: no velocity limit.
        soft_start_s: ramp time (s) from the measured pose after activation.

    Returns:
        The `PositionLimits`.

    Raises:
        ValueError: a bad value, or a range that the margin or overrides leave empty.
    """
    names = list(contract['actuator_names'])
    nu = len(names)
    lo = _per_actuator_bound(lower, nu, 'joint range lower bounds')
    hi = _per_actuator_bound(upper, nu, 'joint range upper bounds')
    if len(lower_override) > 0:
        lo = np.maximum(lo, _per_actuator_bound(lower_override, nu, 'position lower limits'))
    if len(upper_override) > 0:
        hi = np.minimum(hi, _per_actuator_bound(upper_override, nu, 'position upper limits'))
    if not margin >= 0.0:
        raise ValueError(f'the position margin should be >= 0: got {margin}')
    lo, hi = lo + margin, hi - margin
    empty = [n for n, a, b in zip(names, lo, hi) if not a <= b]
    if empty:
        raise ValueError(f'the margin and position limits leave no range for {empty[:5]}')
    velocity = (_per_actuator(velocity_limit, nu, 'velocity limits')
                if len(velocity_limit) > 0 else None)
    return PositionLimits(actuator_names=names, lower=lo, upper=hi, velocity=velocity,
                          soft_start_s=float(soft_start_s))


class PositionFilter(_Latching):
    """Checks and shapes each joint-target command on its way from the policy to the body.

    The node feeds it the measured joint positions (`observe`, from joint_states, in actuator
    order). Those are where the soft start begins, where the velocity limit starts when no
    target went out yet, and what is held while stopped (with no measurement yet: the last
    target sent). Until some pose is known, commands that need one (soft start, velocity
    limit, action delay, e-stop) are refused; the others pass.

    Stopped (e-stop latched, or the watchdog's `stop`): the output holds the joint positions
    measured when the stop began (when none had been measured: the last target sent, else the
    first measurement that arrives). Zero targets are never sent: they would slam every joint
    to 0 rad. A body that holds its pose stays stiff under its PD loop; one whose PD loop
    cannot hold it still sags (known shortcoming: there is no limp or damping mode for
    position bodies; a driver's own stop is the next line of defence).

    Args:
        limits: per-actuator target range, velocity limit and soft-start time.
        period_s: the usual time between commands (the contract's control period): the dt of
            the velocity limit for the first command and the first one after a stop.
        action_delay_steps: commands to delay each command by (sensorimotor latency).

    Attributes:
        safe_mode: 'hold' (for the node's log lines; the torque filter's are 'zero'/'damping').
        estopped: the e-stop is latched (until `reset`).
        rejected: commands refused (bad values, a stamp that went back, or no pose known where
            one is needed).
        last_problem: why the last command was refused.
        clamped: actuator-commands cut to the target range.
        rate_limited: actuator-commands cut by the velocity limit.
    """

    safe_mode = 'hold'

    def __init__(self, limits: PositionLimits, period_s: float, action_delay_steps: int = 0):
        if not period_s > 0.0:
            raise ValueError(f'period_s should be > 0: got {period_s}')
        self.limits = limits
        self.nu = len(limits.actuator_names)
        self._delay = DelayLine(action_delay_steps, fill=_FILL)
        self.estopped = False
        self.rejected = 0
        self.clamped = 0
        self.rate_limited = 0
        self.last_problem = ''
        self._period_ns = int(round(period_s * 1e9))  # the last gap between stamps
        self._last_stamp_ns = None
        self._last_output = None    # nothing sent yet
        self._measured = None       # the latest measured joint positions
        self._hold = None           # the pose held while stopped
        self._stopped = False       # the watchdog stopped the stream
        self._activation_ns = None
        self._anchor = None         # the measured pose at activation: the ramp's start
        self._resuming = False

    @property
    def last_output(self) -> np.ndarray | None:
        """The targets most recently sent out (None: none yet)."""
        return None if self._last_output is None else self._last_output.copy()

    @property
    def measured(self) -> np.ndarray | None:
        """The latest measured joint positions (None: none yet)."""
        return None if self._measured is None else self._measured.copy()

    def observe(self, position: npt.ArrayLike) -> bool:
        """Records the measured joint positions, (nu,) in actuator order.

        Returns:
            False (nothing recorded) when the shape is wrong or a value is not finite (e.g. a
            joint missing from joint_states).
        """
        position = np.asarray(position, dtype=np.float64)
        if position.shape != (self.nu,) or not np.all(np.isfinite(position)):
            return False
        self._measured = position.copy()
        if (self.estopped or self._stopped) and self._hold is None:
            self._hold = position.copy()
        return True

    def _pose_now(self) -> np.ndarray | None:
        for pose in (self._measured, self._last_output):
            if pose is not None:
                return pose.copy()
        return None

    def safe_output(self) -> np.ndarray | None:
        """The targets sent while stopped: the held pose (None: no pose known to hold)."""
        return self._hold.copy() if self._hold is not None else self._pose_now()

    def command(self, stamp_ns: int, target: npt.ArrayLike) -> np.ndarray | None:
        """One policy command in, the targets for the body out.

        Args:
            stamp_ns: the command's stamp (ns); it sets dt of the velocity limit and the ramp.
            target: (nu,) joint targets in `limits.actuator_names` order.

        Returns:
            (nu,) targets, or None when the command is refused (see `last_problem`); the body
            then keeps the last safe target.
        """
        target = np.asarray(target, dtype=np.float64)
        if target.shape != (self.nu,):
            return self._refuse(f'command has {target.size} targets; expected {self.nu}')
        bad = ~np.isfinite(target)
        if bad.any():
            names = [n for n, b in zip(self.limits.actuator_names, bad) if b]
            return self._refuse(f'non-finite targets for {names[:5]}')
        if self._last_stamp_ns is not None:
            if stamp_ns == self._last_stamp_ns:
                return self.last_output
            if stamp_ns < self._last_stamp_ns:
                return self._refuse(f'stamp {stamp_ns * 1e-9:.6f} s is older than the last '
                                    f'command at {self._last_stamp_ns * 1e-9:.6f} s')
        needs_pose = (self.estopped or self.limits.soft_start_s > 0.0 or self._delay.steps > 0
                      or self.limits.velocity is not None)
        if needs_pose and self.safe_output() is None:
            what = ('the e-stop holds' if self.estopped else
                    'the soft start, velocity limit and action delay start from')
            return self._refuse(f'no joint_states yet (and no target sent): {what} the '
                                'measured pose')
        delayed = self._delay.push(stamp_ns, target)
        out = self.safe_output() if self.estopped else self._shape(stamp_ns, delayed)
        self._last_stamp_ns = stamp_ns
        self._last_output = out
        return out.copy()

    def _shape(self, stamp_ns: int, target) -> np.ndarray:
        # `command` made sure that a pose is known where one is needed.
        activating = self._activation_ns is None
        anchor = self._pose_now() if activating else self._anchor
        if target is _FILL:  # the action delay fills: hold the pose
            out, clamped = anchor.copy(), 0
        else:
            out = np.clip(target, self.limits.lower, self.limits.upper)
            clamped = int(np.count_nonzero(out != target))
        activation_ns = stamp_ns if activating else self._activation_ns
        if self.limits.soft_start_s > 0.0:
            ramp = (stamp_ns - activation_ns) * 1e-9 / self.limits.soft_start_s
            out = anchor + min(max(ramp, 0.0), 1.0) * (out - anchor)
        if self._resuming or self._last_stamp_ns is None:
            # After a stop the stamp gap can be long; one usual period is what a step may do.
            gap_ns, period_ns = self._period_ns, self._period_ns
        else:
            gap_ns = period_ns = stamp_ns - self._last_stamp_ns
        previous = self._last_output if self._last_output is not None else self._measured
        limited = 0
        if self.limits.velocity is not None:
            step = self.limits.velocity * gap_ns * 1e-9
            slowed = np.clip(out, previous - step, previous + step)
            limited = int(np.count_nonzero(slowed != out))
            out = slowed
        self._activation_ns, self._anchor = activation_ns, anchor
        self._period_ns, self._resuming = period_ns, False
        self._hold, self._stopped = None, False
        self.clamped += clamped
        self.rate_limited += limited
        return out

    def stop(self, position: npt.ArrayLike | None = None) -> None:
        """Marks a safe stop after a timeout: hold a pose; the output ramps up again after it.

        Args:
            position: the pose to hold (default: the latest measured one, else the last
                target sent); the velocity limit starts from it when commands resume.
        """
        self._stopped = True
        if position is not None:
            self._hold = np.asarray(position, dtype=np.float64).copy()
        elif not self.estopped or self._hold is None:
            self._hold = self._pose_now()
        self._activation_ns = None
        self._resuming = True
        self._delay.clear()
        if self._hold is not None:
            self._last_output = self._hold.copy()

    def estop(self) -> None:
        """Latches the e-stop: every command becomes the pose measured now, until `reset`."""
        if not (self.estopped or self._stopped) or self._hold is None:
            self._hold = self._pose_now()
        super().estop()

    def reset(self) -> bool:
        """Releases the e-stop; the delay refills, the ramp restarts from the measured pose.

        Returns:
            True if the e-stop was latched.
        """
        was = super().reset()
        if was and not self._stopped:
            self._hold = None  # a new e-stop holds the pose of its own moment
        return was
