"""Open-vocabulary 3D semantics for ROS 2: a ROS-free core with thin rclpy nodes around it."""

__version__ = "0.1.0"
