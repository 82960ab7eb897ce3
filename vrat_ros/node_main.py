"""The shared `main()` body of the vrat_ros node executables.

Every executable takes the parameter `executor`: 'events' (the default) spins the node on
rclpy's EventsExecutor, which handles messages and timers in C++ and costs a fraction of the
Python executor per callback; 'single_threaded' is rclpy's usual SingleThreadedExecutor.
NOTE: rclpy still files the EventsExecutor under `rclpy.experimental`; where it is missing
(older rclpy) the node falls back to 'single_threaded' with a warning.
"""

from typing import Callable

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from vrat_ros.errors import VratError

EXECUTORS = ('events', 'single_threaded')


def events_executor(context, logger=None):
    """Returns rclpy's EventsExecutor for `context`, or a SingleThreadedExecutor where it fails.

    It fails in an older rclpy (no EventsExecutor) and where sys.stderr has no file
    descriptor (pytest's capsys, Jupyter): it enables faulthandler on sys.stderr.
    `logger`, if given, gets a warning when the fallback is used.
    """
    try:
        from rclpy.experimental import EventsExecutor
        return EventsExecutor(context=context)
    except (ImportError, OSError, ValueError, AttributeError) as exc:
        if logger is not None:
            logger.warning(f'no EventsExecutor here ({exc}); using the SingleThreadedExecutor')
        return SingleThreadedExecutor(context=context)


def make_executor(node: Node):
    """Returns the executor named by the node's `executor` parameter (declared here).

    Raises:
        ValueError: the parameter names no known executor.
    """
    kind = node.declare_parameter('executor', EXECUTORS[0], ParameterDescriptor(
        description="Executor of this process: 'events' (rclpy's EventsExecutor, callbacks "
                    "dispatched in C++) or 'single_threaded' (rclpy's Python executor)",
        read_only=True)).value
    if kind not in EXECUTORS:
        raise ValueError(f"executor should be one of {EXECUTORS}: got '{kind}'")
    if kind == 'events':
        return events_executor(node.context, node.get_logger())
    return SingleThreadedExecutor(context=node.context)


def spin_node(make_node: Callable[[], Node], name: str, args=None) -> int:
    """Initialises rclpy, builds a node and spins it until Ctrl-C or launch shutdown.

    Args:
        make_node: builds the node (after rclpy.init).
        name: logger name used when the node cannot be built.
        args: command line arguments for rclpy.init.

    Returns:
        0 after a normal or interrupted run, 1 when the node could not start (a parameter of
        the wrong type or out of range, a missing or malformed file); the reason is logged.
    """
    rclpy.init(args=args)
    node = executor = None
    try:
        node = make_node()
        executor = make_executor(node)
        executor.add_node(node)
        # NOTE: spin_once in a loop, not spin(): this rclpy's EventsExecutor.spin() never
        # fires timers on the steady clock (the sim's), while spin_once does.
        while rclpy.ok(context=node.context):
            executor.spin_once(timeout_sec=0.5)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as exc:
        if executor is None and isinstance(exc, (VratError, ValueError, OSError,
                                                 ParameterException)):
            rclpy.logging.get_logger(name).error(f'cannot start: {exc}')
            return 1
        if isinstance(exc, VratError):  # e.g. the driver does not fit the policy's contract
            rclpy.logging.get_logger(name).error(f'stopped: {exc}')
            return 1
        if rclpy.ok():
            raise
        # Ctrl-C shut the context down under a running callback (a timer publishing, say):
        # that is a normal exit, not a crash.
    finally:
        if executor is not None:
            executor.shutdown()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
