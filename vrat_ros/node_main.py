"""The shared `main()` body of the vrat_ros node executables."""

from typing import Callable

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

from vrat_ros.errors import VratError


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
    node = None
    try:
        node = make_node()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as exc:
        if node is None and isinstance(exc, (VratError, ValueError, OSError,
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
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
