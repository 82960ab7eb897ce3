"""vrat_ros: a ROS 2 bridge for an inverse-dynamics controlled virtual rat in MuJoCo."""

__version__ = '0.1.0'
