"""Error types raised by vrat_ros's core modules."""


class VratError(Exception):
    """Base class of every vrat_ros error."""


class ModelLoadError(VratError):
    """A body model could not be found, composed or compiled."""


class PolicyLoadError(VratError):
    """A policy file is missing, is not ONNX, or carries no usable vrat contract."""


class PolicyShapeError(PolicyLoadError):
    """A policy's input or output shape disagrees with its contract or with the body."""


class ClipError(VratError):
    """A reference clip file is missing, malformed or does not fit the body."""
