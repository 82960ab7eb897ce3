"""Names and default rates of the virtual rat, shared by the core modules and the nodes."""

# Body composition.
ROOT_BODY = 'walker'          # carries the free joint, as dm_control's walkers do
ROOT_JOINT = 'root'
TORSO_BODY = 'torso'
TAIL_BODY_PREFIX = 'vertebra_C'
TAIL_JOINT_PREFIX = 'vertebra_C'
DEFAULT_BODY_SCALE = 0.9      # the scale published STAC fits of real rats used

# Timing (the published virtual rodent: 50 Hz control over 2 ms physics steps).
PHYSICS_TIMESTEP_S = 0.002
CONTROL_RATE_HZ = 50.0
REFERENCE_WINDOW_FRAMES = 5

# "Tracked" (Aldarondo et al.-style termination): an episode ends at the first failing frame.
TRACK_ROOT_DIST_M = 0.1
TRACK_JOINT_SQ_ERR_RAD2 = 20.0
TRACK_TORSO_Z_RANGE_M = (0.0325, 0.5)

# Command interface of the torque body (ros2_control's effort interface).
COMMAND_INTERFACE = 'effort'
